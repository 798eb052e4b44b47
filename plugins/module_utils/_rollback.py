# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The rollback of a stack, some of its phases or some of its services to a release of its store,
behind vpsops.deploy.compose_rollback and the deploy's rollback: scope, plan, images put back,
phases brought back last first, what runs proven, the gate run on the release's recorded checks.
Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Compose, DockerError
from ansible_collections.vpsops.deploy.plugins.module_utils._env import read_env_file
from ansible_collections.vpsops.deploy.plugins.module_utils._phase import (
    PhaseError,
    run_jobs,
    snapshot,
    up_in_steps,
    up_steps,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._plan import jobs_of, unchanged_services
from ansible_collections.vpsops.deploy.plugins.module_utils._project import publish
from ansible_collections.vpsops.deploy.plugins.module_utils._releases import (
    EXTRA_DIR,
    CorruptRelease,
    ReleaseError,
    new_release_id,
    pin_ref,
    unseal_checks,
    verify_files,
)


def running_images(docker, stack, containers=None):
    """{service: [image id of each container]} of the project as it runs now (or of `containers`,
    a docker.project_containers() listing)."""
    result = {}
    for c in docker.project_containers(stack) if containers is None else containers:
        result.setdefault(c["service"], []).append(c["image_id"])
    return result


def rollback_plan(store, target, scope_services, running):
    """Per service in scope: running image IDs -> target image ID."""
    plan = {}
    for name in scope_services:
        svc = target["services"][name]
        now = sorted(set(running.get(name, [])))
        plan[name] = {
            "before": now[0] if len(now) == 1 else (now or None),
            "after": svc["image_id"],
            "ref": svc["ref"],
            "changes": now != [svc["image_id"]],
        }
    return plan


def stale_services(store, docker, target, scope, containers, plan):
    """The services of `scope` that run the target's images but not as the target would: a
    container's compose config hash differs from the target's (its env or a file it uses changed),
    or a container that should run does not (a one-shot job that did not exit 0, a service without
    a container). A service whose images already differ is left out (it goes back anyway). Health
    is the rollback gate's to judge, not a reason to recreate."""
    candidates = [name for name in scope if not plan[name]["changes"]]
    if not candidates:
        return []
    compose = Compose(docker, store.stack, store.compose_files(target), project_dir=target.get("project_dir"),
                      env_file=store.env_path(target))
    try:
        same = unchanged_services(compose, candidates, containers, jobs=set(jobs_of(target)), healthy=False)
    except DockerError:
        # The target's files cannot be resolved here now: its `up` will say so in compose's words.
        return []
    return [name for name in candidates if name not in same]


def scope_of(target, phases=None, services=None):
    """The services a rollback touches: all, those of named phases, or named services."""
    all_services = sorted(target["services"])
    if not phases and not services:
        return all_services, True
    chosen = set()
    known_phases = dict((p["name"], p) for p in target.get("phases") or [])
    for name in phases or []:
        if name not in known_phases:
            raise ReleaseError("phases: %r is not a phase of release %s; its phases are %s"
                               % (name, target["id"], ", ".join(sorted(known_phases)) or "none recorded"))
        chosen.update(known_phases[name].get("services") or [])
    for name in services or []:
        if name not in target["services"]:
            raise ReleaseError("services: %r is not a service of release %s; its services are %s"
                               % (name, target["id"], ", ".join(all_services)))
        chosen.add(name)
    return sorted(chosen), chosen == set(all_services)


def missing_images(docker, target, scope):
    """Services of the scope whose pinned image is not on the host: [(service, ref, image id)]."""
    refs = [target["services"][n]["ref"] for n in scope]
    found = docker.images(refs + [target["services"][n]["image_id"] for n in scope])
    missing = []
    for name in scope:
        svc = target["services"][name]
        if svc["ref"] not in found and svc["image_id"] not in found:
            missing.append((name, svc["ref"], svc["image_id"]))
        elif svc["ref"] not in found:
            # The pin tag was removed but the image is still here: put the tag back.
            missing.append((name, svc["ref"], svc["image_id"], "retag"))
    return missing


def fail_pending_after(store, release, target_id):
    """A deploy that never finished (pending) is over once its stack is rolled back: mark every
    pending release newer than `release` failed. Returns their ids."""
    ended = []
    for m in store.releases()[0]:
        if m["status"] == "pending" and m["seq"] > release["seq"]:
            store.set_status(m, "failed", by="rollback", reason="rolled back to %s" % target_id)
            ended.append(m["id"])
    if ended:
        store.record("pending_failed", releases=ended, rolled_back_to=target_id)
    return ended


def reverse_phase_groups(target, scope, plan):
    """The services of the scope that change, grouped by the target's phases in reverse order:
    [(phase name, [services])]; services in no recorded phase come last under the name None."""
    changing = [name for name in scope if plan[name]["changes"]]
    groups, seen = [], set()
    for phase in reversed(target.get("phases") or []):
        names = [name for name in changing if name in (phase.get("services") or []) and name not in seen]
        if names:
            groups.append((phase["name"], names))
            seen.update(names)
    rest = [name for name in changing if name not in seen]
    if rest:
        groups.append((None, rest))
    return groups


def recorded_waits(release):
    """{service: {dependency: condition}} the release recorded with its phases (depends_on)."""
    waits = {}
    for phase in release.get("phases") or []:
        waits.update(phase.get("waits") or {})
    return waits


def bring_back(compose, names, steps, timeout, gate, target_id):
    """`up --no-deps` of `names` without `--wait`, then `gate` on their containers (each one's own
    healthcheck at once). In `steps` (_phase.up_steps) when one of them waits for another to be
    healthy and compose would wait for Docker's first healthcheck run, as a deploy's phase does."""
    docker = compose.docker
    if steps:
        _proven, failure = up_in_steps(compose, steps, timeout, "never", 1.0, 5.0, None)
        if failure:
            raise ReleaseError("rollback to %s: %s" % (target_id, failure))
    else:
        compose.up(names, wait_timeout=timeout, pull="never", no_deps=True, wait=False)
    back = [c["name"] for c in docker.project_containers(compose.project) if c["service"] in names]
    ok, message, _details = gate([], back, timeout)
    if not ok:
        raise ReleaseError("rollback to %s: %s did not come back healthy: %s" % (target_id, ", ".join(names), message))


def checks_for(target, scope, env_file=None):
    """The health checks recorded with the phases of a release that hold a service of the scope,
    their secrets read back from the release's env file copy."""
    checks = []
    for phase in target.get("phases") or []:
        if set(phase.get("services") or []) & set(scope):
            checks.extend(phase.get("checks") or [])
    return unseal_checks(checks, read_env_file(env_file))


def images_gone(docker, target, scope, pull_digests=False):
    """The services of the scope whose image cannot be put back (nothing is changed to find out):
    [(service, original image reference, pin reference, image ID)] of the images neither on the
    host (by their pin tag or their ID) nor to be pulled by digest."""
    gone = []
    for entry in missing_images(docker, target, scope):
        name, ref, image_id = entry[:3]
        if len(entry) == 4 or ("@sha256:" in ref and pull_digests):
            continue  # restore_images puts the pin tag back, or pulls the digest
        gone.append((name, target["services"][name].get("image") or ref, ref, image_id))
    return gone


def usable_releases(store, docker, exclude=()):
    """Ids of the releases (newest first) that went live once and whose every image is on the host."""
    usable = []
    for manifest in store.releases()[0]:
        if manifest["id"] in exclude or not store.ever_live(manifest):
            continue
        if not images_gone(docker, manifest, sorted(manifest["services"])):
            usable.append(manifest["id"])
    return usable


def refuse_missing_images(store, docker, target, scope, pull_digests=False, live=None):
    """The rollback's pre-check, before anything changes (and in check mode): every image the
    rollback will run is on the host. After `docker system prune -a` (or `docker image rm`) the
    images that no container uses are gone, those of the release to roll back to among them; `up`
    would then fail half way, with a later phase's services already replaced. Raises ReleaseError
    naming the missing images and what to do. `live`: the live release of a partial rollback, whose
    other services the new release pins too."""
    gone = [(entry, target["id"]) for entry in images_gone(docker, target, scope, pull_digests)]
    if live is not None:
        gone += [(entry, live["id"]) for entry in images_gone(docker, live, sorted(set(live["services"]) - set(scope)))]
    if not gone:
        return
    try:
        usable = usable_releases(store, docker, exclude=(target["id"],))
    except (ReleaseError, DockerError):
        usable = []
    # Short: the deploy's failure message keeps only the first few hundred characters of it.
    raise ReleaseError(
        "rollback to %s refused before any change: %s no longer on this host (docker system prune -a or docker "
        "image rm removes every image no container uses); nothing was stopped or recreated. Put these exact "
        "images back (docker load from a saved copy, or docker pull where the tag still names that image ID), "
        "then run the rollback again%s"
        % (target["id"],
           "; ".join("service %s's image %s (ID %s%s)" % (name, original, image_id.split(":")[-1][:12],
                                                          "" if rid == target["id"] else ", of the live release")
                     for (name, original, _ref, image_id), rid in gone) + (" is" if len(gone) == 1 else " are"),
           ("; or let it pull them by digest (pull: true)" if any("@sha256:" in e[2] for e, _r in gone) else "")
           + ("; or roll back to a release whose images are all here: %s" % ", ".join(usable[:5]) if usable
              else "")))


def restore_images(docker, target, scope, pull_digests):
    """Make sure every pinned image of the scope is on the host: re-tag when only the tag is gone,
    pull a digest when allowed. refuse_missing_images has checked that nothing else is missing."""
    problems = []
    for entry in missing_images(docker, target, scope):
        name, ref, image_id = entry[:3]
        if len(entry) == 4:
            docker.tag(image_id, ref)
            continue
        if "@sha256:" in ref and pull_digests:
            try:
                docker.pull(ref)
                continue
            except Exception as exc:  # reported with the others
                problems.append("service %s: image %s (id %s) is not on this host and pulling it failed: %s"
                                % (name, ref, image_id, exc))
                continue
        problems.append("service %s: image %s (id %s) is not on this host any more" % (name, ref, image_id))
    if problems:
        raise ReleaseError("rollback to %s refused before any change: %s" % (target["id"], "; ".join(problems)))


def prove(docker, stack, target, scope, containers=None):
    """Every container of every service in scope runs the recorded image ID; returns {service: ids}."""
    after = running_images(docker, stack, containers)
    wrong = []
    for name in scope:
        want = target["services"][name]["image_id"]
        ids = after.get(name) or []
        if not ids:
            wrong.append("service %s has no container" % name)
        elif any(i != want for i in ids):
            wrong.append("service %s runs %s, not the recorded %s" % (name, ", ".join(sorted(set(ids))), want))
    if wrong:
        raise ReleaseError("after the rollback to %s, what runs is not what was recorded: %s"
                           % (target["id"], "; ".join(wrong)))
    return after


def partial_release(store, docker, live, target, scope, user=None):
    """A new release: the live release with the services of `scope` pinned to the target's images."""
    release_id = new_release_id()
    services, pins = {}, {}
    for name, svc in live["services"].items():
        chosen = dict(target["services"][name] if name in scope and name in target["services"] else svc)
        chosen["pin_tag"] = pin_ref(store.stack, name, chosen["image_id"])
        docker.tag(chosen["image_id"], chosen["pin_tag"])
        chosen["ref"] = chosen.get("digest") or chosen["pin_tag"]
        services[name] = chosen
        pins[name] = chosen["ref"]
    base = store.release_dir(live["id"])
    files = [os.path.join(base, f["name"]) for f in live["files"]]
    env = store.env_path(live)
    # The live release's referenced files stay (a partial rollback moves images only).
    extra = [dict(e, source=os.path.join(base, EXTRA_DIR, e["path"])) for e in live.get("extra_files") or []]
    manifest = store.create(release_id, files, pins, services, live.get("phases"), live.get("project_dir"),
                            env_file=env, user=user, git_sha=live.get("git_sha"),
                            backups=live.get("backups"), extra_files=extra, file_refs=live.get("file_refs"),
                            meta={"partial_rollback_of": live["id"], "from_release": target["id"],
                                  "services": sorted(scope)})
    for entry in manifest["files"]:
        entry["source"] = None
    if manifest.get("env_file"):
        manifest["env_file"]["source"] = live["env_file"].get("source")
    manifest["project_dir"] = live.get("project_dir")
    store.save(manifest)
    return manifest


def rollback(store, docker, to="previous", phases=None, services=None, checks=None, timeout=120,
             pull_digests=False, check_mode=False, user=None, gate=None, recorded_checks=True):
    """Roll the stack, some phases or some services back to a release and prove what runs.

    gate(checks, containers, timeout) -> (ok, message, details) runs the health gate (health_wait's
    engine). Returns a result dict; raises ReleaseError (nothing changed when raised before `up`).
    """
    target_id = store.resolve(to)
    target = store.load(target_id)
    problem = verify_files(store, target)
    if problem:
        raise CorruptRelease("release %s is refused, nothing was changed: %s" % (target_id, problem))
    scope, whole = scope_of(target, phases, services)
    live_id = store.live_id()
    containers = docker.project_containers(store.stack)
    running = running_images(docker, store.stack, containers)
    plan = rollback_plan(store, target, scope, running)
    moves_pointer = whole and live_id != target_id
    partial = not whole and live_id and live_id != target_id
    if not partial:
        # The same images may run another configuration (a failed release that changed only the
        # env or a config file) or not run at all: those services go back too.
        for name in stale_services(store, docker, target, scope, containers, plan):
            plan[name]["changes"] = True
            plan[name]["config"] = "differs from the release's or the container is not running"
    changed = any(p["changes"] for p in plan.values()) or moves_pointer or bool(partial)
    result = {
        "changed": changed,
        "from": live_id,
        "to": target_id,
        "release": None,
        "scope": "stack" if whole else ("phases" if phases and not services else "services"),
        "services": plan,
        "diff": {"before": dict((n, p["before"]) for n, p in plan.items()),
                 "after": dict((n, p["after"]) for n, p in plan.items())},
    }
    live = store.load(live_id) if partial else None
    if changed:
        # Before anything changes, in check mode too: every image to run is on the host.
        refuse_missing_images(store, docker, target, scope, pull_digests, live)
    if check_mode:
        return result
    if not changed:
        # What runs is already the target (a deploy died before it changed anything): the
        # unfinished deploys after it are still over.
        result["failed_pending"] = fail_pending_after(store, target, target_id)
        return result
    started = time.monotonic()
    timings = result["seconds"] = {}
    store.ensure()
    restore_images(docker, target, scope, pull_digests)
    store.record("rollback_started", release=target_id, live=live_id, services=scope, user=user)
    new = None
    try:
        if partial:
            new = partial_release(store, docker, live, target, scope, user=user)
            deployed = new
        else:
            deployed = target
        compose = Compose(docker, store.stack, store.compose_files(deployed), project_dir=deployed.get("project_dir"),
                          env_file=store.env_path(deployed))
        project_dir = deployed.get("project_dir") or os.path.join(store.state_dir, "project")
        if os.path.isdir(project_dir):
            # The project directory shows the release that runs, and the files its compose files
            # reference (configs, secrets) are read from there when containers are created: the
            # release's own go back before its `up`.
            result["project_files"] = publish(store, deployed, project_dir)
        timings["prepare"] = round(time.monotonic() - started, 3)
        mark = time.monotonic()
        groups = reverse_phase_groups(deployed, scope, plan)
        result["order"] = [name for name, _names in groups]
        # One-shot services are not waited for as running containers: they run to completion after.
        jobs = [j for j in jobs_of(deployed) if j in scope]
        lasting = [name for name in scope if name not in jobs]
        waits = recorded_waits(deployed)
        changes = set(name for name in scope if plan[name]["changes"])

        def steps_for(names):
            return up_steps(names, waits, changes, snapshot(docker, store.stack))

        # With a gate and one phase to move, in steps when one service waits for another healthy.
        steps = steps_for(lasting) if len(groups) <= 1 and lasting and gate is not None and not jobs else None
        sweep = False  # remove what the target lacks by naming one service (below)
        up_epoch = time.time()
        if len(groups) > 1:
            # Several phases move: the last phase goes back first (consumers before the services
            # they consume), each back and healthy before the next moves, then one `up` of the whole
            # scope removes what the target lacks. With a gate, a group is waited for as a deploy's
            # phase waits (each container's own healthcheck at once, not Docker's first interval),
            # and so compose is not asked to wait for Docker's verdict on a dependency either.
            for _phase, names in groups:
                names = [name for name in names if name not in jobs]
                if names and gate is None:
                    compose.up(names, wait_timeout=timeout, pull="never", no_deps=True)
                elif names:
                    bring_back(compose, names, steps_for(names), timeout, gate, target_id)
            if whole and gate is None:
                compose.up(lasting, wait_timeout=timeout, remove_orphans=True, pull="never")
            sweep = whole and gate is not None
        elif steps:
            bring_back(compose, lasting, steps, timeout, gate, target_id)
            sweep = whole
        elif lasting:
            # With a gate after it and no job to start after the services are up, `up` does not
            # wait: the gate waits for the same containers first, running each one's own healthcheck
            # at once instead of waiting for Docker's first interval.
            compose.up(lasting, wait_timeout=timeout, remove_orphans=whole, pull="never", no_deps=not whole,
                       wait=gate is None or bool(jobs))
        if sweep and lasting:
            # Only what the target lacks goes: naming one service with --no-deps removes the
            # orphans, and compose has no dependency to wait for (naming them all, it would wait
            # for Docker's verdict on each dependency proven above by its own healthcheck).
            compose.up(lasting[:1], wait_timeout=timeout, remove_orphans=True, pull="never", no_deps=True, wait=False)
        if jobs:
            try:
                result["jobs"] = run_jobs(compose, jobs, timeout=timeout, since=up_epoch)
            except PhaseError as exc:
                raise ReleaseError("rollback to %s: %s" % (target_id, exc))
        timings["up"] = round(time.monotonic() - mark, 3)
        mark = time.monotonic()
        containers = docker.project_containers(store.stack)
        after = prove(docker, store.stack, deployed, scope, containers)
        timings["prove"] = round(time.monotonic() - mark, 3)
        mark = time.monotonic()
        gate_checks = list(checks or []) + (checks_for(target, scope, store.env_path(target))
                                            if recorded_checks else [])
        if gate is not None:
            names = [c["name"] for c in containers if c["service"] in scope and c["service"] not in jobs]
            ok, message, details = True, "", {}
            if names and gate_checks:
                # The containers first, as `up --wait` gave them: a check may presume what they
                # create as they start.
                ok, message, details = gate([], names, timeout)
            if ok:
                ok, message, details = gate(gate_checks, names, timeout)
            result["health"] = details
            timings["health"] = round(time.monotonic() - mark, 3)
            if not ok:
                raise ReleaseError("rollback to %s ran, but the health gate failed: %s" % (target_id, message))
    except Exception as exc:
        if new is not None:
            store.set_status(new, "failed", by="rollback", reason="the rollback did not pass")
        store.record("rollback_failed", release=target_id, new_release=new and new["id"], live=live_id,
                     services=scope, user=user, error=str(exc)[:2000])
        raise
    store.make_live(deployed, replaced_status="rolled_back", by="rollback")
    if partial:
        result["release"] = deployed["id"]
    fail_pending_after(store, deployed, target_id)
    for name in scope:
        result["services"][name]["after_running"] = sorted(set(after.get(name) or []))
    timings["total"] = round(time.monotonic() - started, 3)
    store.record("rolled_back", release=target_id, new_release=result["release"], live_before=live_id,
                 services=dict((n, {"before": p["before"], "after": p["after"]}) for n, p in plan.items()), user=user)
    return result
