# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vpsops.deploy.stack_check: the stack's keys and types checked on the controller, in one task and
no connection to the host. The documentation is in plugins/modules/stack_check.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.plugins.action import ActionBase

from ansible_collections.vpsops.deploy.plugins.module_utils._stack import StackError, check_stack


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("stack",))

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        try:
            check_stack(self._task.args.get("stack"))
        except StackError as exc:
            return dict(result, failed=True, changed=False, msg=str(exc))
        return dict(result, changed=False, msg="the stack is valid")
