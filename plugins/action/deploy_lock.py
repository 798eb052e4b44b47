# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Controller side of vpsops.deploy.deploy_lock: records which controller process holds the lock
and, when asked, takes over a lock whose holder was a run of this controller that no longer exists."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket

from ansible.plugins.action import ActionBase


def controller_pid():
    """The ansible-playbook process: tasks run in a worker forked from it."""
    return os.getppid()


def process_gone(pid):
    """True when no ansible process with this pid runs on this machine (a reused pid that now
    belongs to another program counts as gone)."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            cmdline = handle.read().replace(b"\0", b" ")
    except OSError:
        return False
    return b"ansible" not in cmdline


def dead_holder(lock, controller):
    """The owner of a lock held by a vanished run of this controller, else None."""
    if not isinstance(lock, dict) or not lock.get("owner"):
        return None
    if lock.get("controller") != controller or lock.get("pid") in (None, controller_pid()):
        return None
    return lock["owner"] if process_gone(lock["pid"]) else None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
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
                owner = dead_holder(result.get("lock"), controller)
                if owner:
                    args["takeover"] = owner
                    result = super(ActionModule, self).run(tmp, task_vars)
                    result.update(self._execute_module(module_name="vpsops.deploy.deploy_lock",
                                                       module_args=args, task_vars=task_vars))
        return result
