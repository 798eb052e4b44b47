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
from ansible_collections.vpsops.deploy.plugins.module_utils._probes import (
    parse_docker_time,
    proven_starts,
    run_gate,
    validate_checks,
    vouch_for,
)

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


def job_done(container, since):
    """A one-shot container that exited 0 (after `since`, epoch seconds, when given)."""
    if container.get("state") != "exited" or container.get("exit_code") != 0:
        return False
    if since is None:
        return True
    started = parse_docker_time(container.get("started_at") or "")
    return started is not None and started >= since - 1


def run_jobs(compose, jobs, timeout=600, since=None, pull="never", clock=time.monotonic, sleep=time.sleep,
             redact=None):
    """The one-shot services (jobs) of a phase, in order, each run to completion: a job that already
    ran to exit code 0 since `since` (compose started it as a dependency with
    service_completed_successfully) is not run again; any other is started with `up -d --no-deps`
    and waited for. Returns [{service, exit_code, seconds, ran}]; raises PhaseError naming the job,
    its exit code and its last log lines (masked by `redact`) when one fails or outlives `timeout`."""
    docker = compose.docker
    done = []
    for job in jobs:
        started = clock()
        mine = [c for c in docker.project_containers(compose.project) if c["service"] == job]
        if mine and all(job_done(c, since) for c in mine):
            done.append(dict(service=job, exit_code=0, seconds=0.0, ran=False))
            continue
        try:
            compose.up([job], wait_timeout=timeout, pull=pull, no_deps=True, wait=False)
        except DockerError as exc:
            raise PhaseError("one-shot service %s did not start: %s" % (job, exc), dict(jobs=done))
        delay = 0.1
        while True:
            mine = [c for c in docker.project_containers(compose.project) if c["service"] == job]
            if mine and all(c["state"] in ("exited", "dead") for c in mine):
                break
            if clock() - started > timeout:
                raise PhaseError("one-shot service %s did not finish within %ss" % (job, timeout),
                                 dict(jobs=done + [dict(service=job, exit_code=None, seconds=round(clock() - started, 3),
                                                        ran=True)]))
            sleep(delay)
            delay = min(delay * 1.5, 1.0)
        failed = [c for c in mine if c.get("exit_code") != 0]
        entry = dict(service=job, exit_code=failed[0].get("exit_code") if failed else 0,
                     seconds=round(clock() - started, 3), ran=True)
        done.append(entry)
        if failed:
            try:
                out, err = docker.container_logs(failed[0]["name"], tail=15)
                tail = ((out or "") + (err or "")).strip()
            except DockerError as exc:
                tail = "(its logs could not be read: %s)" % exc
            if redact:
                tail = redact(tail)
            raise PhaseError("one-shot service %s exited with exit code %s; its last log lines: %s"
                             % (job, entry["exit_code"], tail[-1500:] or "(none)"), dict(jobs=done))
    return done


HEALTHY = "service_healthy"


def up_steps(services, waits, changing, before):
    """How to bring `services` up when one waits for another to be healthy (`depends_on` with
    `condition: service_healthy`, `waits`: {service: {dependency: condition}}).

    One `up` of them all waits inside compose for Docker's verdict on each such dependency: Docker
    runs a healthcheck first one `interval` after the start (30 s by default), whatever the
    dependency's own check would say at once. Instead the services come up in steps, `up --no-deps`
    each, and before a step the dependencies it waits for are proven healthy as the phase proves
    its own containers (their own healthcheck run at once, Docker's `unhealthy` never overruled).
    Returns [(dependencies to prove, services to bring up)], or None for one plain `up` as compose
    would do it: when nothing would wait on Docker's clock (no such dependency is `changing`, or
    Docker already calls it healthy), or when compose must decide itself: a dependency on a one-shot
    service (`service_completed_successfully`: compose runs it), one outside `services` without a
    running container of its own or whose health Docker does not report as starting or healthy, or
    a cycle. `changing`: the services `up` will create or recreate (None: all of them); `before`:
    {container: container} of the project now (snapshot)."""
    services = list(services)
    edges = dict((s, dict((waits or {}).get(s) or {})) for s in services)
    changing = set(services if changing is None else changing)
    mine = set(services)

    def containers_of(dep):
        return [c for c in before.values() if c["service"] == dep]

    def waits_on_docker(dep):
        return (dep in mine and dep in changing) or any(c.get("health") == "starting" for c in containers_of(dep))

    if not any(cond == HEALTHY and waits_on_docker(dep) for deps in edges.values() for dep, cond in deps.items()):
        return None
    for deps in edges.values():
        for dep, cond in deps.items():
            if cond not in ("service_started", HEALTHY):
                return None
            if dep in mine:
                continue
            found = containers_of(dep)
            if not found or any(c.get("state") != "running" for c in found):
                return None
            if cond == HEALTHY and any(c.get("health") not in ("healthy", "starting") for c in found):
                return None
    # A service's step: one after each dependency it waits healthy for, the same as one it waits
    # started for (compose orders a step's services itself).
    step = {}
    for _round in range(len(services) + 1):
        for s in services:
            deps = [(d, c) for d, c in edges[s].items() if d in mine]
            if all(d in step for d, _c in deps):
                step[s] = max([step[d] + (1 if c == HEALTHY else 0) for d, c in deps] or [0])
        if len(step) == len(services):
            break
    else:
        return None  # a cycle: compose names it
    steps = []
    for number in range(max(step.values()) + 1):
        layer = [s for s in services if step[s] == number]
        if not layer:
            continue
        prove = sorted(set(d for s in layer for d, c in edges[s].items()
                           if c == HEALTHY and (d in mine or waits_on_docker(d))))
        steps.append((prove, layer))
    return steps


def gated_names(after, gate_services, gate_containers):
    """The containers the gate judges: every container of the gated services, then the given ones,
    each once."""
    names = [c["name"] for _name, c in sorted(after.items()) if c["service"] in set(gate_services)]
    for name in gate_containers or []:
        if name not in names:
            names.append(name)
    return names


def wait_started(docker, project, services, timeout, interval=1.0, max_interval=5.0, since=None, proven=None):
    """What `up --wait` waits for, sooner: every container of `services` running, and healthy where
    it has a healthcheck (its own healthcheck run at once while Docker says starting). The phase's
    jobs and checks come after it, as they came after `up --wait`: a check may presume what the
    containers create as they start. `proven`: starts already proven healthy (proven_starts), not
    run again. Returns the GateResult, or None when there is no container."""
    names = [c["name"] for c in docker.project_containers(project) if c["service"] in set(services)]
    return wait_running(docker, names, timeout, interval, max_interval, since, proven)


def wait_running(docker, names, timeout, interval=1.0, max_interval=5.0, since=None, proven=None):
    """wait_started of the containers `names`."""
    return run_gate([], names, timeout, interval, max_interval, 1, since, docker.cli,
                    adjust_probes=vouch_for(proven) if proven else None)


def up_in_steps(compose, steps, timeout, pull, interval, max_interval, since, clock=time.monotonic, no_deps=True):
    """Bring services up as up_steps says, under one deadline (`up` without --wait; --no-deps unless
    `no_deps` is false: one plain `up` is the single step [([], services)]). Returns
    ({container: StartedAt} of the dependencies proven on the way, None), or (proven, the failure's
    message)."""
    docker = compose.docker
    deadline = clock() + timeout
    proven = {}
    for prove, layer in steps:
        if prove:
            waiting = "%s %s for (depends_on: service_healthy)" % (", ".join(layer), "waits" if len(layer) == 1 else "wait")
            found = [c for c in docker.project_containers(compose.project) if c["service"] in set(prove)]
            blind = sorted(set(c["service"] for c in found if not c.get("health")))
            if blind:
                # compose refuses the same: a healthy dependency needs a healthcheck to say so
                return proven, "%s %s no healthcheck, which %s" % (
                    ", ".join(blind), "has" if len(blind) == 1 else "have", waiting)
            left = max(1, int(deadline - clock()))
            ready = wait_running(docker, [c["name"] for c in found], left, interval, max_interval, since, proven)
            if ready is not None:
                proven.update(proven_starts(ready))
                if not ready.ok:
                    return proven, "%s, which %s, did not become healthy: %s" % (", ".join(prove), waiting, ready.message)
        try:
            # The release's images are pinned and on the host (built when it was recorded): never built here.
            compose.up(layer, wait_timeout=max(1, int(deadline - clock())), pull=pull, build=False,
                       no_deps=no_deps, wait=False)
        except DockerError as exc:
            return proven, "docker compose up of %s failed: %s" % (", ".join(layer), exc)
    return proven, None


def run_phase(compose, services, gate_services=None, gate_containers=None, checks=None, since=None,
              timeout=120, interval=1.0, max_interval=5.0, consecutive=1, pull="missing", check_mode=False,
              clock=time.monotonic, jobs=(), redact=None, waits=None, changing=None):
    """Bring up `services` (in steps when one waits for another to be healthy: up_steps, with
    `waits` and `changing`), run the one-shot `jobs` to completion (run_jobs) and gate the phase.
    Returns the result; raises PhaseError (with what was done) when `up`, a job or the gate fails.
    The checks are validated before anything changes."""
    docker = compose.docker
    gate_services = list(services if gate_services is None else gate_services)
    validate_checks(checks, docker.cli)  # CheckSpecError before anything changes
    result = {"changed": False, "actions": [], "containers": [], "gate": None, "seconds": {}}
    jobs = list(jobs or [])
    if check_mode:
        if services or jobs:
            result["actions"] = dry_run_actions(compose.dry_run_up(list(services) + jobs, pull=pull))
        result["changed"] = bool(result["actions"])
        return result
    started = clock()
    up_epoch = time.time()
    before = snapshot(docker, compose.project)
    failure = None
    proven = {}
    steps = up_steps(services, waits, changing, before) if services and waits else None
    if steps:
        result["steps"] = [layer for _prove, layer in steps]
    if services:
        # Without --wait: wait_started below waits for the same containers, running each one's own
        # healthcheck as soon as it starts instead of waiting for Docker's first interval.
        proven, failure = up_in_steps(compose, steps or [([], list(services))], timeout, pull, interval,
                                      max_interval, since, clock, no_deps=bool(steps))
    if services and not failure:
        ready = wait_started(docker, compose.project, services, timeout, interval, max_interval, since, proven)
        if ready is not None and not ready.ok:
            result["gate"] = ready.summary()
            failure = ready.message
        proven.update(proven_starts(ready))
    if jobs and not failure:
        try:
            result["jobs"] = run_jobs(compose, jobs, timeout=timeout, since=up_epoch, pull=pull, redact=redact)
        except PhaseError as exc:
            result["jobs"] = exc.result.get("jobs")
            failure = str(exc)
    after = snapshot(docker, compose.project)
    result["actions"] = actions_between(before, after)
    result["changed"] = bool(result["actions"])
    result["containers"] = [after[name] for name in sorted(after) if after[name]["service"] in set(gate_services)]
    result["seconds"]["up"] = round(clock() - started, 3)
    if failure:
        raise PhaseError(failure, result)
    names = gated_names(after, gate_services, gate_containers)
    mark = clock()
    # A start whose own healthcheck wait_started ran and passed is not run again while Docker still
    # says starting; the gate still fails on an exit, a restart or Docker's unhealthy.
    gate = run_gate(checks, names, timeout, interval, max_interval, consecutive, since, docker.cli,
                    adjust_probes=vouch_for(proven))
    if gate is None:
        return result
    result["gate"] = gate.summary()
    result["seconds"]["gate"] = round(clock() - mark, 3)
    if not gate.ok:
        raise PhaseError(gate.message, result)
    return result
