# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The deploy plan of a stack on one host: per phase and service, what runs now, what the compose
files resolve to, and what `docker compose up` would do about it. Only reads; private to this
collection (vpsops.deploy.compose_plan).

The new side is computed the way the deploy runs compose: every compose file of the stack loaded,
every service pinned to the image it resolves to (the override compose_release writes), so the
configuration hash compares with the `com.docker.compose.config-hash` label of containers the deploy
created. Compose recreates a container exactly when that hash or its image changes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import tempfile

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Compose, DockerError, service_image
from ansible_collections.vpsops.deploy.plugins.module_utils._phase import job_done
from ansible_collections.vpsops.deploy.plugins.module_utils._probes import check_argument_spec
from ansible_collections.vpsops.deploy.plugins.module_utils._releases import (
    LOCK_OVERRIDE, ReleaseError, Store, lock_override_text, pin_ref, resolve_images,
)

ACTIONS = ("create", "recreate", "start", "scale", "unchanged", "remove")
CONFIG_HASH_LABEL = "com.docker.compose.config-hash"
RUNNING_STATES = ("running", "restarting")


class PlanError(Exception):
    """Bad input or a compose model that cannot be planned; nothing was changed."""


# input ------------------------------------------------------------------------------------------

def add_waits(phases, model):
    """Each phase's `waits`: {service: {dependency: condition}} of its services' `depends_on` in the
    resolved model, recorded with the release so that a phase can bring its services up in the
    order compose would while proving a dependency healthy itself (_phase.up_steps)."""
    services = (model or {}).get("services") or {}
    for phase in phases:
        waits = {}
        for name in phase["services"]:
            depends = (services.get(name) or {}).get("depends_on") or {}
            if isinstance(depends, list):
                depends = dict((dep, {}) for dep in depends)
            if isinstance(depends, dict) and depends:
                waits[name] = dict((dep, (spec or {}).get("condition") or "service_started")
                                   for dep, spec in sorted(depends.items()))
        if waits:
            phase["waits"] = waits
        else:
            phase.pop("waits", None)
    return phases


def phase_argument_spec():
    """A deploy phase as compose_plan and compose_release take it (doc fragment
    vpsops.deploy.checks.phases): the keys of a phase of the stack variable but its timeout."""
    return dict(
        name=dict(type="str", required=True),
        compose_files=dict(type="list", elements="str", required=True),
        backup=dict(type="list", elements="str", default=[]),
        migration=dict(type="dict"),
        rollout=dict(type="list", elements="str", default=[]),
        checks=dict(type="list", elements="dict", default=[], options=check_argument_spec()),
    )


def stack_files(phases, files):
    """The compose files the deploy loads: `files` as given, else every phase's files in phase order."""
    if files:
        return list(files)
    result = []
    for phase in phases:
        for name in phase.get("compose_files") or []:
            if name not in result:
                result.append(name)
    return result


def check_phases(phases, files):
    """Validate the phases against the stack's files; raise PlanError naming the option."""
    seen = set()
    known = set(files) | set(os.path.basename(f) for f in files)
    for index, phase in enumerate(phases):
        name = phase.get("name")
        where = "phases[%d] (%s)" % (index, name)
        if not name:
            raise PlanError("phases[%d]: every phase needs a name" % index)
        if name in seen:
            raise PlanError("%s: phase names must be unique; %r is used twice" % (where, name))
        seen.add(name)
        if not phase.get("compose_files"):
            raise PlanError("%s: compose_files must name at least one compose file" % where)
        unknown = [f for f in phase["compose_files"] if f not in known]
        if unknown:
            raise PlanError("%s: compose_files names %s, which is not among the stack's files (%s)"
                            % (where, ", ".join(unknown), ", ".join(files)))
        migration = phase.get("migration") or {}
        if migration and not migration.get("service"):
            raise PlanError("%s: migration needs a 'service' (the compose service run with `compose run --rm`)" % where)
    if not phases:
        raise PlanError("phases: give at least one phase ({name, compose_files})")


def absolute(project_dir, path):
    return path if os.path.isabs(path) else os.path.join(project_dir, path)


def phase_entry(phase):
    """The parts of a phase the plan reports whatever the files say."""
    migration = phase.get("migration") or {}
    return {
        "name": phase["name"],
        "compose_files": list(phase["compose_files"]),
        "backups": list(phase.get("backup") or []),
        "migration": bool(migration),
        "migration_service": migration.get("service") if migration else None,
        "rollout": list(phase.get("rollout") or []),
        "services": {},
        "changes": None,
    }


# parsing ----------------------------------------------------------------------------------------

def replicas_of(service):
    """How many containers compose runs for a service of the resolved model."""
    deploy = service.get("deploy") or {}
    for value in (deploy.get("replicas"), service.get("scale")):
        if value is not None:
            try:
                return int(value)
            except (TypeError, ValueError):
                pass
    return 1


def one_or_list(values):
    """A scalar when every container agrees, a sorted list when they differ, None when there are none."""
    values = sorted(set(v for v in values if v is not None))
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def group_current(containers, hashes):
    """{service: current} from docker.project_containers() and {container id: config hash}."""
    grouped = {}
    for c in containers:
        grouped.setdefault(c["service"], []).append(c)
    current = {}
    for service, items in grouped.items():
        current[service] = {
            "image": one_or_list(c.get("image") for c in items),
            "image_id": one_or_list(c.get("image_id") for c in items),
            "config_hash": one_or_list(hashes.get(c["id"]) for c in items),
            "containers": sorted(c["name"] for c in items),
            "running": sum(1 for c in items if c.get("state") in RUNNING_STATES),
            # kept for decide(); removed from the result
            "_items": [{"image_id": c.get("image_id"), "config_hash": hashes.get(c["id"]),
                        "state": c.get("state")} for c in items],
        }
    return current


# deciding ---------------------------------------------------------------------------------------

def decide(current, new):
    """What `docker compose up` does to one service: an action of ACTIONS (never `remove`)."""
    items = (current or {}).get("_items") or []
    if not items:
        return "create" if new.get("replicas", 1) > 0 else "unchanged"
    if not new.get("image_id"):
        return "recreate"  # the image has to be pulled: it is not what runs
    for item in items:
        if item["image_id"] != new["image_id"] or item["config_hash"] != new.get("config_hash"):
            return "recreate"
    if any(item["state"] not in RUNNING_STATES for item in items):
        return "start"
    if len(items) != new.get("replicas", 1):
        return "scale"
    return "unchanged"


def drift_of(live, current, live_image_id):
    """True when a live release exists and what runs is not what it pinned for the service."""
    if live is None:
        return False
    running = set(i["image_id"] for i in ((current or {}).get("_items") or []))
    pinned = set([live_image_id]) if live_image_id else set()
    return running != pinned


def public_current(current):
    if not current:
        return None
    return dict((k, v) for k, v in current.items() if not k.startswith("_"))


def build_plan(phases, phase_services, new, current, live=None):
    """The plan, pure: phases as phase_entry() made them, {phase: [services]}, {service: new},
    {service: current} and the live release's manifest (or None).

    Returns (phases with services, summary, drift)."""
    live_services = (live or {}).get("services") or {}
    planned = set()
    result = []
    for phase in phases:
        entry = dict(phase, services={})
        for name in phase_services.get(phase["name"], []):
            now = current.get(name)
            live_id = (live_services.get(name) or {}).get("image_id")
            entry["services"][name] = {
                "action": decide(now, new[name]),
                "current": public_current(now),
                "new": new[name],
                "live_image_id": live_id,
                "drift": drift_of(live, now, live_id),
                "rollout": name in phase["rollout"],
            }
            if now and live_services.get(name) and live_services[name].get("ref") in _as_list(now["image"]):
                entry["services"][name]["current"]["source_image"] = live_services[name].get("image")
            planned.add(name)
        result.append(entry)
    # Services that run but that no phase defines any more: in the phase the live release recorded
    # them in, when it still exists, else in the last phase.
    live_phase_of = {}
    for phase in (live or {}).get("phases") or []:
        for name in phase.get("services") or []:
            live_phase_of.setdefault(name, phase.get("name"))
    by_name = dict((e["name"], e) for e in result)
    for name in sorted(set(current) - planned):
        target = by_name.get(live_phase_of.get(name)) or (result[-1] if result else None)
        if target is None:
            continue
        live_id = (live_services.get(name) or {}).get("image_id")
        target["services"][name] = {
            "action": "remove",
            "current": public_current(current[name]),
            "new": None,
            "live_image_id": live_id,
            "drift": drift_of(live, current[name], live_id),
            "rollout": False,
        }
    summary = dict((action, 0) for action in ACTIONS)
    drift = []
    for entry in result:
        entry["changes"] = sum(1 for s in entry["services"].values() if s["action"] != "unchanged")
        for name, svc in entry["services"].items():
            summary[svc["action"]] += 1
            if svc["drift"] and name not in drift:
                drift.append(name)
    return result, summary, sorted(drift)


def _as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def short_id(image_id):
    if not image_id:
        return "not on this host"
    return image_id.split(":", 1)[-1][:12]


def diff_text(plan):
    """Before/after text, per phase, of service -> image (reference and short image ID)."""
    before, after = [], []
    for phase in plan:
        before.append("[%s]" % phase["name"])
        after.append("[%s]" % phase["name"])
        for name in sorted(phase["services"]):
            svc = phase["services"][name]
            now = svc["current"]
            if now:
                ref = now.get("source_image") or now["image"]
                ids = _as_list(now["image_id"])
                before.append("%s: %s (%s)" % (name, ", ".join(_as_list(ref)), ", ".join(short_id(i) for i in ids)))
            new = svc["new"]
            if new:
                after.append("%s: %s (%s)%s" % (name, new["image"], short_id(new["image_id"]),
                                                " [pull]" if new.get("pull") else ""))
    return "\n".join(before) + "\n", "\n".join(after) + "\n"


# reading the host -------------------------------------------------------------------------------

def container_hashes(docker, containers):
    """{container id: config hash label}: from the listing when it has them (project_containers
    reads every label), else in one `docker inspect`."""
    ids = [c["id"] for c in containers]
    if not ids:
        return {}
    if all("config_hash" in c for c in containers):
        return dict((c["id"], c["config_hash"]) for c in containers if c["config_hash"])
    out = docker.run(["inspect", "--type", "container", "--format",
                      '{{.Id}} {{index .Config.Labels "%s"}}' % CONFIG_HASH_LABEL] + ids, what="docker inspect")
    hashes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            hashes[parts[0]] = parts[1]
    return hashes


class _Model:
    """A resolved model standing in for a Compose, so resolve_images() reads it without a second
    `docker compose config`."""

    def __init__(self, model):
        self.model = model

    def config(self):
        return self.model


def resolve_new(docker, model, stack):
    """{service: {image, image_id, pull, replicas, pinned}} for every service of the model.
    Images present on the host are resolved (and pinned) exactly as compose_release does."""
    services = model.get("services") or {}
    refs = dict((name, service_image(stack, name, svc)) for name, svc in services.items())
    found = docker.images(refs.values())
    present = dict((n, s) for n, s in services.items() if refs[n] in found)
    resolved = resolve_images(docker, _Model({"services": present}), stack, pull="never") if present else {}
    new = {}
    for name in sorted(services):
        info = resolved.get(name)
        new[name] = {
            "image": refs[name],
            "image_id": info["image_id"] if info else None,
            "pull": info is None,
            "replicas": replicas_of(services[name]),
            "pinned": (info["digest"] or pin_ref(stack, name, info["image_id"])) if info else None,
            "config_hash": None,
        }
    return new


def live_release(store, warnings):
    """The live release's manifest, or None (no store, nothing live, or a manifest not to trust)."""
    live_id = store.live_id()
    if not live_id:
        return None
    try:
        return store.load(live_id)
    except ReleaseError as exc:
        warnings.append("the live release cannot be read, drift is not reported: %s" % exc)
        return None


def make_plan(docker, stack, phases, project_dir, files=None, env_files=None, state_dir=None, pin_images=True):
    """The plan of a stack on this host. Reads only: compose config, images, containers, the store.

    Returns a dict: plan, summary, project_missing, missing_files, live_release, drift, files,
    env_files, warnings, diff."""
    try:
        store = Store(stack, state_dir)
    except ReleaseError as exc:
        raise PlanError(str(exc))
    files = stack_files(phases, files or [])
    if not phases and files:
        phases = [{"name": "stack", "compose_files": list(files)}]
    check_phases(phases, files)
    entries = [phase_entry(p) for p in phases]
    paths = [absolute(project_dir, f) for f in files]
    env_paths = [absolute(project_dir, f) for f in env_files or []]
    if env_files is None and os.path.isfile(os.path.join(project_dir, ".env")):
        env_paths = [os.path.join(project_dir, ".env")]
    warnings = []
    result = {"project_dir": project_dir, "files": paths, "env_files": env_paths, "warnings": warnings,
              "live_release": store.live_id(), "drift": [], "project_missing": False, "missing_files": []}
    missing = [p for p in paths if not os.path.isfile(p)]
    if not os.path.isdir(project_dir) or missing:
        # A first deploy in check mode: the files are not on the host yet. Only the phases are known.
        result.update(project_missing=True, missing_files=missing if os.path.isdir(project_dir) else paths,
                      plan=entries, summary=dict((a, 0) for a in ACTIONS))
        result["diff"] = diff_text(entries)
        return result
    missing_env = [p for p in env_paths if not os.path.isfile(p)]
    if missing_env:
        raise PlanError("env_files: %s does not exist on the host" % ", ".join(missing_env))

    try:
        model = Compose(docker, stack, paths, project_dir=project_dir, env_files=env_paths).config()
    except DockerError as exc:
        raise PlanError("docker compose config of %s failed: %s" % (", ".join(files), exc))
    if not model.get("services"):
        raise PlanError("files: %s define no services" % ", ".join(files))

    phase_services = {}
    for phase, entry in zip(phases, entries):
        phase_paths = [absolute(project_dir, _match(f, files)) for f in phase["compose_files"]]
        try:
            out = Compose(docker, stack, phase_paths, project_dir=project_dir, env_files=env_paths).run(
                ["config", "--services", "--no-consistency"], what="docker compose config --services")
        except DockerError as exc:
            raise PlanError("phases (%s): docker compose config of %s failed: %s"
                            % (entry["name"], ", ".join(phase["compose_files"]), exc))
        names = sorted(set(out.split()))
        phase_services[entry["name"]] = names
        not_here = [s for s in entry["rollout"] if s not in names]
        if not_here:
            raise PlanError("phases (%s): rollout names %s, which %s not a service of the phase (%s)"
                            % (entry["name"], ", ".join(not_here), "is" if len(not_here) == 1 else "are",
                               ", ".join(names)))
        if entry["migration_service"] and entry["migration_service"] not in model["services"]:
            # A migration service usually sits in a profile that `config` leaves out: ask with every profile.
            everything = Compose(docker, stack, paths, project_dir=project_dir, env_files=env_paths).run(
                ["--profile", "*", "config", "--services"], what="docker compose config --services")
            if entry["migration_service"] not in everything.split():
                raise PlanError("phases (%s): migration service %r is not a service of the compose files (%s)"
                                % (entry["name"], entry["migration_service"], ", ".join(files)))

    new = resolve_new(docker, model, stack)
    tmp = None
    try:
        hash_files = paths
        if pin_images:
            pins = dict((n, s["pinned"]) for n, s in new.items() if s["pinned"])
            if pins:
                tmp = tempfile.mkdtemp(prefix="vpsops-plan-")
                override = os.path.join(tmp, LOCK_OVERRIDE)
                with open(override, "w") as handle:
                    handle.write(lock_override_text("plan", pins))
                hash_files = paths + [override]
        hashes = Compose(docker, stack, hash_files, project_dir=project_dir, env_files=env_paths).config_hashes(
            sorted(new))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    for name, svc in new.items():
        svc["config_hash"] = hashes.get(name)

    containers = docker.project_containers(stack)
    current = group_current(containers, container_hashes(docker, containers))
    live = live_release(store, warnings)
    plan, summary, drift = build_plan(entries, phase_services, new, current, live)
    result.update(plan=plan, summary=summary, drift=drift, live_release=live["id"] if live else None)
    result["diff"] = diff_text(plan)
    return result


def _match(name, files):
    """The entry of `files` a phase's compose file names (by path or by base name)."""
    for f in files:
        if f == name or os.path.basename(f) == name:
            return f
    return name


def jobs_of(manifest, phase_name=None):
    """The one-shot services the release records (of one phase, or of all)."""
    found = []
    for phase in manifest.get("phases") or []:
        if phase_name is None or phase.get("name") == phase_name:
            found += [j for j in phase.get("jobs") or [] if j not in found]
    return found


def unchanged_services(compose, services, containers, hashes=None, jobs=(), healthy=True):
    """The services whose containers all run the compose config of `compose` already: every
    container running, and not unhealthy where it has a healthcheck unless `healthy` is False (a
    one-shot service of `jobs`: exited with exit code 0), labelled with the wanted config hash. A
    container whose first healthcheck Docker has not run yet (`starting`) counts as running: `up`
    would not touch it, and the gate that follows (a phase's, the deploy's final one) runs its
    healthcheck itself. A service without a container is changed (it would be created). The
    deploy's plan and phases ask it of the release, a rollback of its target."""
    services = list(services)
    if not services:
        return set()
    wanted = compose.config_hashes(services)
    by_service = {}
    for c in containers:
        by_service.setdefault(c["service"], []).append(c)
    hashes = container_hashes(compose.docker, [c for c in containers if c["service"] in wanted]) \
        if hashes is None else hashes
    same = set()
    for name in services:
        found = by_service.get(name) or []
        if not found or name not in wanted:
            continue
        if name in jobs:
            settled = all(job_done(c, None) for c in found)
        else:
            settled = all(c["state"] == "running" and (not healthy or c.get("health") in (None, "", "healthy", "starting"))
                          for c in found)
        if settled and all(hashes.get(c["id"]) == wanted[name] for c in found):
            same.add(name)
    return same
