# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Controller side of vpsops.deploy.deploy_host: names the run as the lock's owner, reads the compose
files of `begin` and the files they reference (bind mounts, env_file, configs, secrets) from the
stack's source on the controller, takes over the lock of a dead run of this
controller when asked, and turns a host that became unreachable into a failure of the step. The
documentation is in plugins/modules/deploy_host.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible.utils.display import Display

from ansible_collections.vpsops.deploy.plugins.action.audit import (
    append_line,
    build_entry,
    entry_line,
    job_id_of,
    log_path,
    playbook_pid,
    user_of,
)
from ansible_collections.vpsops.deploy.plugins.action.deploy_lock import controller_pid, dead_holder, run_identity
from ansible_collections.vpsops.deploy.plugins.action.project_files import read_text
from ansible_collections.vpsops.deploy.plugins.module_utils._probes import CheckSpecError, build_probes
from ansible_collections.vpsops.deploy.plugins.module_utils._releases import run_owner_name
from ansible_collections.vpsops.deploy.plugins.module_utils._stack import StackError, file_references, file_services, read_referenced

display = Display()


def phase_of(stack, name):
    for phase in stack.get("phases") or []:
        if isinstance(phase, dict) and phase.get("name") == name:
            return phase
    return {}


def phase_start_line(stack, name, services):
    """What a phase is about to do, before its module runs (names only, never a check's secret)."""
    phase = phase_of(stack, name)
    try:
        # The names the gate will use (an unnamed check is named by what it probes, secrets masked).
        checks = [p.name for p in build_probes(phase["checks"])] if phase.get("checks") else []
    except (CheckSpecError, TypeError, ValueError):
        checks = [c.get("name") or "?" for c in phase.get("checks") or [] if isinstance(c, dict)]
    return "Phase %s: services %s; backups %s; migration %s; checks %s." % (
        name, ", ".join(services or []) or "(none)", ", ".join(phase.get("backup") or []) or "none",
        (phase.get("migration") or {}).get("service") or "none", ", ".join(checks) or "none")


def phase_end_line(name, result):
    """What a phase did, from its result."""
    seconds = (result.get("seconds") or {}).get("total", 0)
    gate = result.get("gate") or {}
    checks = ", ".join(gate.get("checks") or {}) or "no checks"
    if result.get("unchanged"):
        done = "unchanged (no backup, no up), one probe round"
    else:
        actions = result.get("actions") or []
        done = "%d container action(s) (%s)" % (len(actions), ", ".join(
            "%s %s" % (a.get("id"), a.get("status")) for a in actions) or "nothing recreated")
        rolled = [n for n, r in (result.get("rolled_out") or {}).items() if r.get("changed")]
        if rolled:
            done += "; rolled out " + ", ".join(rolled)
        if result.get("backups"):
            done += "; backed up " + ", ".join(b.get("name") or "?" for b in result["backups"])
        if result.get("skipped_backups"):
            done += ("; not backed up %s (no release is live yet and their containers do not run: there is no "
                     "data to lose)" % ", ".join(result["skipped_backups"]))
    return "Phase %s done in %s s: %s; healthy after %s s (%s)." % (name, seconds, done, gate.get("elapsed", 0),
                                                                    checks)


def run_owner(task_vars, identity=None):
    """The lock's owner for this run, the same for every host and every step: the operator's
    choice (lock_owner), else user@controller:AWX job id-nonce, else user@controller:run-<pid>-nonce
    (_releases.run_owner_name; the nonce tells apart two containers with one host name)."""
    chosen = task_vars.get("lock_owner")
    if isinstance(chosen, str) and chosen.strip():
        return chosen.strip()
    job = task_vars.get("awx_job_id") or task_vars.get("tower_job_id")
    return run_owner_name(os.environ.get("USER") or "ansible", socket.gethostname(),
                          identity or run_identity(), job)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def read_sources(self, stack):
        src = stack.get("source")
        names = []
        for phase in stack.get("phases") or []:
            for name in (phase.get("compose_files") or []) if isinstance(phase, dict) else []:
                if isinstance(name, str) and name not in names:
                    names.append(name)
        if not isinstance(src, str) or not src:
            raise AnsibleError("vpsops_stack.source must be the directory of the compose files on the controller")
        contents = {}
        for name in names:
            try:
                contents[name] = read_text(self._find_needle("files", os.path.join(src, name)), name)
            except (AnsibleError, OSError) as exc:
                raise AnsibleError("cannot read the compose file %s from vpsops_stack.source %s on the controller: %s"
                                   % (name, src, exc))
        return contents

    def read_referenced(self, stack, contents):
        """The files the compose files reference (bind mounts, env_file, configs and secrets files),
        read from the stack's source on the controller: ({path: {content, mode, kind}}, {service:
        [paths]}) for the module."""
        import base64

        try:
            kinds, by_service = file_references(contents, stack.get("env") or {})
            source = self._find_needle("files", stack["source"]) if kinds else stack.get("source")
            found = read_referenced(source, kinds) if kinds else {}
        except StackError as exc:
            raise AnsibleError(str(exc))
        files = dict((path, {"content": base64.b64encode(data).decode("ascii"), "mode": mode, "kind": kind})
                     for path, (data, mode, kind) in found.items())
        return files, by_service

    def execute(self, args, task_vars):
        try:
            return self._execute_module(module_name="vpsops.deploy.deploy_host", module_args=args,
                                        task_vars=task_vars)
        except AnsibleConnectionFailure as exc:
            # Reported as the step's failure, so that the deploy's rescue and its outcome handle it.
            return dict(failed=True, host_unreachable=True, changed=False,
                        msg="the host became unreachable during the %s step: %s" % (args.get("step"), exc))

    def audit_phase(self, stack, args, outcome, task_vars):
        """The phase_finished line of the controller's audit log (names and paths, no secret)."""
        data = dict(seconds=(outcome.get("seconds") or {}).get("total"), unchanged=bool(outcome.get("unchanged")),
                    recreated=[a.get("id") for a in outcome.get("actions") or []],
                    rolled_out=sorted(outcome.get("rolled_out") or {}),
                    backups=[b.get("path") for b in outcome.get("backups") or []],
                    checks=sorted((outcome.get("gate") or {}).get("checks") or {}))
        if outcome.get("steps"):
            data["steps"] = outcome["steps"]  # services brought up in steps (depends_on: service_healthy)
        entry = build_entry("phase_finished", stack=stack.get("name"), release=args.get("release"),
                            phase=args.get("phase"), status="ok", data=data, host=task_vars.get("inventory_hostname"),
                            controller=socket.gethostname(), user=user_of(task_vars), pid=playbook_pid(),
                            job_id=job_id_of(task_vars), check_mode=False)
        try:
            append_line(log_path(), entry_line(entry))
        except (IOError, OSError) as exc:
            outcome["warnings"].append("audit: cannot append to %s: %s (the phase is not recorded)"
                                       % (log_path(), exc.strerror or exc))

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        task_vars = task_vars or {}
        args = dict(self._task.args)
        stack = args.get("stack")
        if not isinstance(stack, dict):
            return dict(result, failed=True, msg="stack must be vpsops_stack (a mapping), got %s" % type(stack).__name__)
        identity = run_identity()
        args.setdefault("owner", run_owner(task_vars, identity))
        args.setdefault("host_name", task_vars.get("inventory_hostname"))
        takeover_dead = boolean(args.pop("takeover_dead", False), strict=False)
        if args.get("step") == "begin":
            try:
                args["contents"] = self.read_sources(stack)
                args["files"], args["file_refs"] = self.read_referenced(stack, args["contents"])
                args["file_services"] = file_services(args["contents"])
            except AnsibleError as exc:
                return dict(result, failed=True, msg=str(exc))
            if "controller" not in args and "pid" not in args:
                args.setdefault("identity", identity)  # not when the caller names another holder
            args.setdefault("controller", socket.gethostname())
            args.setdefault("pid", controller_pid())
        services = args.pop("services", None)
        phase_step = args.get("step") == "phase" and not self._play_context.check_mode
        host = task_vars.get("inventory_hostname")
        if phase_step and boolean(args.get("unchanged", False), strict=False):
            # begin found every container of the phase running the release, healthy, and nothing to
            # back up or migrate: the final gate of finish probes every check and container.
            display.display("%s: Phase %s: unchanged in the plan (no backup, no up); the final gate proves it."
                            % (host, args.get("phase")))
            result.update(changed=False, unchanged=True, phase=args.get("phase"), release=args.get("release"),
                          owner=args["owner"], step="phase", msg="unchanged in the plan of begin", warnings=[])
            self.audit_phase(stack, args, result, task_vars)
            return result
        if phase_step:
            display.display("%s: %s" % (host, phase_start_line(stack, args.get("phase"), services)))
        outcome = self.execute(args, task_vars)
        if outcome.get("failed") and args.get("step") == "begin" and takeover_dead and not args.get("takeover"):
            owner = dead_holder(outcome.get("lock"), identity)
            if owner:
                args["takeover"] = owner
                outcome = self.execute(args, task_vars)
        if phase_step and not outcome.get("failed"):
            display.display("%s: %s" % (host, phase_end_line(args.get("phase"), outcome)))
            outcome.setdefault("warnings", [])
            self.audit_phase(stack, args, outcome, task_vars)
        result.update(outcome)
        # The stack holds the secrets (its env, passwords, headers): no event, log or -vvv output
        # shows it, nor the text of the compose files again.
        invocation = result.get("invocation", {}).get("module_args")
        if isinstance(invocation, dict):
            if "stack" in invocation:
                invocation["stack"] = "(vpsops_stack %s, not shown)" % stack.get("name")
            if isinstance(invocation.get("contents"), dict):
                invocation["contents"] = dict((n, "(%d characters)" % len(t))
                                              for n, t in (args.get("contents") or {}).items())
            if isinstance(invocation.get("files"), dict):
                invocation["files"] = dict((n, "(%s, %d bytes of base64)" % (f.get("kind"), len(f.get("content") or "")))
                                           for n, f in (args.get("files") or {}).items())
        return result
