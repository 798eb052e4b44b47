# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Controller side of vpsops.deploy.deploy_lock: records which controller run holds the lock (host
name, process id, and the run's identity: machine id, boot id, PID namespace, start time, nonce) and,
when asked, takes over a lock whose holder is provably a run of this controller that no longer exists."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket

from ansible.plugins.action import ActionBase

from ansible_collections.vpsops.deploy.plugins.module_utils._releases import controller_identity, dead_holder_here


def controller_pid():
    """The ansible-playbook process: tasks run in a worker forked from it."""
    return os.getppid()


def run_identity():
    """This run's identity (_releases.controller_identity of the ansible-playbook process)."""
    return controller_identity(controller_pid())


def dead_holder(lock, here=None):
    """The owner of a lock held by a run of this machine, boot and PID namespace whose process is
    gone, else None (the host name alone proves nothing: two containers may share it)."""
    return dead_holder_here(lock, run_identity() if here is None else here)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        here = run_identity()
        if "controller" not in args and "pid" not in args:
            # A holder named by the caller (another controller's pid) is not this run.
            args.setdefault("identity", here)
        controller = args.get("controller") or socket.gethostname()
        args.setdefault("controller", controller)
        args.setdefault("pid", controller_pid())
        takeover_dead = self._task.args.get("takeover_dead", False)
        args["takeover_dead"] = takeover_dead
        result.update(self._execute_module(module_name="vpsops.deploy.deploy_lock", module_args=args,
                                           task_vars=task_vars))
        state = args.get("state", "acquired")
        if result.get("failed") and state == "acquired" and takeover_dead and not args.get("takeover"):
            from ansible.module_utils.parsing.convert_bool import boolean

            if boolean(takeover_dead, strict=False):
                owner = dead_holder(result.get("lock"), here)
                if owner:
                    args["takeover"] = owner
                    result = super(ActionModule, self).run(tmp, task_vars)
                    result.update(self._execute_module(module_name="vpsops.deploy.deploy_lock",
                                                       module_args=args, task_vars=task_vars))
        return result
