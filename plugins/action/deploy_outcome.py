# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vpsops.deploy.deploy_outcome: the decisions of a deploy across its hosts, on the controller.

`start` (once, before any host is touched): the deploy's options (vpsops_serial,
vpsops_max_fail_percentage) and the stack of every host checked, the waves, the deploy_started
lines of the audit log. `wave` (at the start of each wave) and `decide` (before the end step): which
hosts go on, whether a wave went over the failure budget, which hosts failed, which are
unreachable, which this run changed and must roll back. `report` (after the end step): per host what
happened and what was done, the event, the message and the audit log's lines. It reads what the
deploy playbook keeps per host (`deploy_phase_release`, `deploy_phase_finished`,
`deploy_phase_ended`, `__vpsops_wave`, `__vpsops_failed`), so that no Jinja over hostvars holds
the logic. The documentation is in plugins/modules/deploy_outcome.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.vpsops.deploy.plugins.module_utils._outcome import (
    OutcomeError,
    decide,
    parse_max_fail,
    parse_serial,
    plan_waves,
    report,
    started,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._stack import StackError, check_stack

BEGIN_KEYS = ("release", "live", "status", "owner", "recorded", "started_epoch", "failed", "msg")
STAGES = ("start", "wave", "decide", "report")
# The deploy_phase role's entry points deploy.yml includes after begin without validating their
# arguments again, and the variables deploy.yml passes them itself: the others are the operator's,
# checked here once per host before anything changes.
ROLE_SPECS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "roles", "deploy_phase", "meta",
                          "argument_specs.yml")
ENTRY_POINTS = ("main", "finish", "end")
PASSED = frozenset(("deploy_phase_stack", "deploy_phase_release", "deploy_phase_names", "deploy_phase_name",
                    "deploy_phase_release_lock", "deploy_phase_rollback", "deploy_phase_reason"))


def _get(found, name):
    try:
        return found.get(name)
    except Exception:  # noqa: BLE001 - an undefined or untemplatable fact counts as absent
        return None


def _ran(result):
    return isinstance(result, dict) and bool(result) and not result.get("skipped")


def host_state(hostvars, host, check_mode=False):
    """The state of one host as vpsops.deploy's _outcome reads it, from the results the deploy
    registered on it."""
    try:
        found = hostvars[host]
    except KeyError:
        return {}
    state = {}
    begin = _get(found, "deploy_phase_release")
    if _ran(begin):
        state["begin"] = dict((key, begin[key]) for key in BEGIN_KEYS if key in begin)
    failed = _get(found, "__vpsops_failed")
    if failed:
        state["failed"] = failed
    wave = _get(found, "__vpsops_wave")
    decision = ((wave or {}).get("hosts") or {}).get(host) if isinstance(wave, dict) else None
    if isinstance(decision, dict):
        if decision.get("go"):
            # The host entered the deploy block of its wave: from then on this run changes it.
            state["touched"] = not check_mode
        else:
            state["skipped"] = True
    finished = _get(found, "deploy_phase_finished")
    if _ran(finished) and not finished.get("failed"):
        state["promoted"] = finished.get("release") or (state.get("begin") or {}).get("release")
        state["unlocked"] = bool(finished.get("lock_released"))
    ended = _get(found, "deploy_phase_ended")
    if _ran(ended):
        state["end"] = ended
    return state


def _stack_key(stack):
    try:
        return json.dumps(stack, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(stack)


def check_stacks(hostvars, hosts, variable):
    """Each host's stack checked once per distinct stack (all hosts usually share one): the first
    problem, naming the hosts whose stack has it, or None. No value of a stack is shown."""
    groups, stacks = {}, {}
    for host in hosts:
        try:
            stack = hostvars[host][variable]
        except KeyError:
            return "%s is not defined for %s" % (variable, host)
        except Exception as exc:  # noqa: BLE001 - an undefined variable inside the stack
            return "%s of %s cannot be templated: %s" % (variable, host, str(exc).splitlines()[0][:500])
        key = _stack_key(stack)
        groups.setdefault(key, []).append(host)
        stacks[key] = stack
    for key, members in groups.items():
        try:
            check_stack(stacks[key], variable)
        except StackError as exc:
            return "%s (the stack of %s)" % (exc, ", ".join(members) if len(members) < len(hosts) else "every host")
    return None


def role_options(path=ROLE_SPECS):
    """The options of the role's entry points the operator sets (not those deploy.yml passes)."""
    import yaml

    with open(path) as handle:
        specs = (yaml.safe_load(handle) or {}).get("argument_specs") or {}
    options = {}
    for entry in ENTRY_POINTS:
        for name, spec in ((specs.get(entry) or {}).get("options") or {}).items():
            if name not in PASSED:
                options[name] = dict((k, v) for k, v in spec.items() if k not in ("description", "default", "required"))
    return options


def check_role_variables(hostvars, hosts, options):
    """The first host whose deploy_phase_* variables do not fit the role's argument specs, as a
    message naming the host and the variable, or None."""
    validator = ArgumentSpecValidator(options)
    for host in hosts:
        found = hostvars[host]
        provided = {}
        for name in options:
            try:
                if name in found:
                    provided[name] = found[name]
            except Exception as exc:  # noqa: BLE001 - a variable that cannot be templated
                return "%s of %s cannot be templated: %s" % (name, host, str(exc).splitlines()[0][:500])
        errors = validator.validate(provided).error_messages
        if errors:
            return "The deploy_phase role's variables of %s are not valid: %s" % (host, "; ".join(errors))
    return None


def stack_summaries(hostvars, hosts, variable):
    names, phases = {}, {}
    for host in hosts:
        stack = _get(hostvars[host], variable) or {}
        names[host] = stack.get("name")
        phases[host] = [p.get("name") for p in stack.get("phases") or [] if isinstance(p, dict)]
    return names, phases


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("stage", "hosts", "reachable", "batch", "stack", "serial", "max_fail_percentage",
                             "release_tag", "stack_variable"))

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        stage = args.get("stage")
        if stage not in STAGES:
            return dict(result, failed=True, msg="stage must be one of %s, got %r" % (", ".join(STAGES), stage))
        hosts = args.get("hosts")
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            return dict(result, failed=True, msg="hosts must be the list of the deploy's hosts")
        hostvars = task_vars.get("hostvars") or {}
        try:
            serial = parse_serial(args.get("serial"))
            max_fail = parse_max_fail(args.get("max_fail_percentage"))
        except OutcomeError as exc:
            return dict(result, failed=True, changed=False, msg=str(exc))
        result["changed"] = False
        if stage == "start":
            variable = args.get("stack_variable") or "vpsops_stack"
            problem = check_stacks(hostvars, hosts, variable) or check_role_variables(hostvars, hosts, role_options())
            if problem:
                return dict(result, failed=True, msg=problem)
            names, phases = stack_summaries(hostvars, hosts, variable)
            result.update(waves=plan_waves(hosts, serial), serial=serial, max_fail_percentage=max_fail,
                          audit=started(names, hosts, args.get("release_tag"), phases))
            return result
        reachable = args.get("reachable")
        reachable = list(hosts) if reachable is None else list(reachable)
        check_mode = bool(self._play_context.check_mode)
        states = dict((h, host_state(hostvars, h, check_mode)) for h in hosts)
        if stage in ("wave", "decide"):
            batch = args.get("batch") if stage == "wave" else None
            result.update(decide(hosts, reachable, states, serial=serial, max_fail=max_fail, batch=batch or None))
        else:
            result.update(report(args.get("stack") or "stack", hosts, reachable, states, check_mode=check_mode,
                                 serial=serial, max_fail=max_fail))
        return result
