# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One phase of a deploy on the host: `docker compose up --wait` of its services, what that changed,
then the phase's health gate, in one process. Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import time

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import DockerError
from ansible_collections.vpsops.deploy.plugins.module_utils._probes import run_gate, validate_checks

# `docker compose --dry-run up` prints one line per container it would touch.
DRY_RUN_RE = re.compile(r"Container\s+(\S+)\s+(Recreat|Creat|Start)", re.IGNORECASE)
DRY_RUN_STATUS = {"recreat": "Recreated", "creat": "Created", "start": "Started"}


class PhaseError(Exception):
    """The phase failed; `result` holds what it did before (changed, actions, gate)."""

    def __init__(self, message, result):
        super(PhaseError, self).__init__(message)
        self.result = result


def snapshot(docker, project):
    """{container name: container} of the project (docker.project_containers)."""
    return dict((c["name"], c) for c in docker.project_containers(project))


def actions_between(before, after):
    """What `up` did, per container: Created, Recreated, Started or Removed (one per container)."""
    actions = []
    for name, now in sorted(after.items()):
        old = before.get(name)
        if old is None:
            status = "Created"
        elif old["id"] != now["id"]:
            status = "Recreated"
        elif old["state"] != "running" and now["state"] == "running":
            status = "Started"
        else:
            continue
        actions.append({"id": name, "status": status, "service": now["service"]})
    for name in sorted(set(before) - set(after)):
        actions.append({"id": name, "status": "Removed", "service": before[name]["service"]})
    return actions


def dry_run_actions(text):
    """The containers `docker compose --dry-run up` says it would create, recreate or start."""
    seen, actions = set(), []
    for match in DRY_RUN_RE.finditer(text or ""):
        # A recreated container shows under a temporary name too: <12 hex digits>_<name>.
        name, verb = re.sub(r"^[0-9a-f]{12}_", "", match.group(1)), DRY_RUN_STATUS[match.group(2).lower()]
        if name not in seen:
            seen.add(name)
            actions.append({"id": name, "status": verb, "service": None})
    return actions


def gated_names(after, gate_services, gate_containers):
    """The containers the gate judges: every container of the gated services, then the given ones,
    each once."""
    names = [c["name"] for _name, c in sorted(after.items()) if c["service"] in set(gate_services)]
    for name in gate_containers or []:
        if name not in names:
            names.append(name)
    return names


def run_phase(compose, services, gate_services=None, gate_containers=None, checks=None, since=None,
              timeout=120, interval=1.0, max_interval=5.0, consecutive=1, pull="missing", check_mode=False,
              clock=time.monotonic):
    """Bring up `services` and gate the phase. Returns the result; raises PhaseError (with what
    was done) when `up` or the gate fails. The checks are validated before anything changes."""
    docker = compose.docker
    gate_services = list(services if gate_services is None else gate_services)
    validate_checks(checks, docker.cli)  # CheckSpecError before anything changes
    result = {"changed": False, "actions": [], "containers": [], "gate": None, "seconds": {}}
    if check_mode:
        if services:
            result["actions"] = dry_run_actions(compose.dry_run_up(services, pull=pull))
        result["changed"] = bool(result["actions"])
        return result
    started = clock()
    before = snapshot(docker, compose.project)
    failure = None
    if services:
        try:
            compose.up(services, wait_timeout=timeout, pull=pull, build=None)
        except DockerError as exc:
            failure = "docker compose up of %s failed: %s" % (", ".join(services), exc)
    after = snapshot(docker, compose.project)
    result["actions"] = actions_between(before, after)
    result["changed"] = bool(result["actions"])
    result["containers"] = [after[name] for name in sorted(after) if after[name]["service"] in set(gate_services)]
    result["seconds"]["up"] = round(clock() - started, 3)
    if failure:
        raise PhaseError(failure, result)
    names = gated_names(after, gate_services, gate_containers)
    mark = clock()
    gate = run_gate(checks, names, timeout, interval, max_interval, consecutive, since, docker.cli)
    if gate is None:
        return result
    result["gate"] = gate.summary()
    result["seconds"]["gate"] = round(clock() - mark, 3)
    if not gate.ok:
        raise PhaseError(gate.message, result)
    return result
