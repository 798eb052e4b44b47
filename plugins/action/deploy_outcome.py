# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vpsops.deploy.deploy_outcome: the decisions of a deploy across its hosts, on the controller.

`decide` (before the end step): which hosts failed, which are unreachable, which this run changed
and must roll back. `report` (after it): per host what happened and what was done, the event, the
message of the audit log, the webhook and the play's failure. It reads the facts the deploy
playbook keeps per host (`__vpsops_begin`, `__vpsops_failed`, `__vpsops_touched`,
`__vpsops_promoted`, `__vpsops_end`), so that no Jinja over hostvars holds the logic.
The documentation is in plugins/modules/deploy_outcome.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.plugins.action import ActionBase

from ansible_collections.vpsops.deploy.plugins.module_utils._outcome import decide, report


def host_state(hostvars, host):
    try:
        found = hostvars[host]
    except KeyError:
        return {}
    state = {}
    for key in ("__vpsops_begin", "__vpsops_failed", "__vpsops_touched", "__vpsops_promoted", "__vpsops_end",
                "__vpsops_skipped"):
        try:
            value = found.get(key)
        except Exception:  # noqa: BLE001 - an undefined or untemplatable fact counts as absent
            value = None
        if value is not None:
            state[key.replace("__vpsops_", "")] = value
    return state


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("stage", "hosts", "reachable", "stack", "check_mode"))

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        stage = args.get("stage")
        if stage not in ("decide", "report"):
            return dict(result, failed=True, msg="stage must be decide or report, got %r" % (stage,))
        hosts = args.get("hosts")
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            return dict(result, failed=True, msg="hosts must be the list of the deploy's hosts")
        reachable = args.get("reachable")
        reachable = list(hosts) if reachable is None else list(reachable)
        hostvars = task_vars.get("hostvars") or {}
        states = dict((h, host_state(hostvars, h)) for h in hosts)
        check_mode = bool(self._play_context.check_mode)
        if stage == "decide":
            result.update(decide(hosts, reachable, states))
        else:
            result.update(report(args.get("stack") or "stack", hosts, reachable, states, check_mode=check_mode))
        result["changed"] = False
        return result
