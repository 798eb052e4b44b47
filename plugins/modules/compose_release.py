#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: compose_release
short_description: Record, pin, promote and retire releases of a Docker Compose stack
version_added: 0.1.0
description:
  - With O(state=present), snapshots the compose files (and env file) of a stack into a new release
    and pins every service to the image it resolves to now, by digest when the image came from a
    registry, otherwise by a tag the module puts on the image ID (C(vpsops/<stack>/<service>:<release>)).
    The pin tag also keeps the image through C(docker image prune) when its original tag moves.
  - Deploying a release is then any C(docker compose -p <stack> -f ...) with the returned RV(files),
    for example M(community.docker.docker_compose_v2).
  - When the live or pending release already has the same files and image IDs, it is returned and
    nothing is recorded (C(changed=false)).
  - O(state=live) promotes a release (the previous live one becomes C(superseded)), moves the
    C(current) pointer and applies retention. O(state=failed) marks a release failed.
    O(state=absent) retires a release (its directory and pin tags).
  - Retention keeps the newest O(keep) releases and never removes the live release, the one before
    it, or a pending one. Backups are never deleted here; M(vpsops.deploy.pg_backup) reads which
    backups kept releases reference.
author:
  - vpsops.deploy contributors (@vpsops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.release_store
  - vpsops.deploy.release_store.lock_owner
  - vpsops.deploy.checks.phases
  - vpsops.deploy.docker
attributes:
  check_mode:
    support: full
    details: Reads the compose model and images and returns the release it would record.
  diff_mode:
    support: full
    details: Shows the status change, or the services and images of a new release.
  platform:
    platforms: posix
options:
  state:
    description:
      - V(present) records a new pending release (or returns the identical live/pending one).
        With O(release) naming an existing release, adds O(backups) to it.
      - V(live), V(failed) and V(absent) act on O(release).
    type: str
    default: present
    choices: [present, live, failed, absent]
  release:
    description:
      - The release id. For O(state=present) an id for the new release (default a UTC time stamp with
        a random suffix). Required for the other states.
    type: str
  project_dir:
    description:
      - The compose project directory on the host; relative paths in the compose files resolve
        against it, and it holds the files of O(files) when those are relative.
      - Defaults to C(<state_dir>/project).
    type: path
  files:
    description:
      - The compose files, in the order compose loads them, relative to O(project_dir) or absolute.
      - Required for O(state=present) when O(release) does not name an existing release.
    type: list
    elements: str
    default: []
  env_file:
    description:
      - The env file compose reads. Defaults to C(<project_dir>/.env) when it exists. Its copy in the
        release has mode 0600 and is never returned.
    type: path
  pull:
    description:
      - V(missing) pulls images that are not on the host before pinning; V(never) fails instead.
    type: str
    default: missing
    choices: [missing, never]
  keep:
    description: How many releases retention keeps when a release goes live (at least 2).
    type: int
    default: 5
  user:
    description: Who deploys, recorded in the manifest and the history.
    type: str
  git_sha:
    description: The source revision, recorded in the manifest.
    type: str
  backups:
    description:
      - Backups to pin to the release (for example the results of M(vpsops.deploy.pg_backup)); each
        needs C(path) and may hold C(size), C(sha256), C(verified), C(database).
    type: list
    elements: dict
    default: []
seealso:
  - module: vpsops.deploy.compose_release_info
  - module: vpsops.deploy.compose_rollback
  - module: vpsops.deploy.deploy_lock
"""

EXAMPLES = r"""
- name: Record a release of what the compose files resolve to now
  vpsops.deploy.compose_release:
    stack: platform
    files: [docker-compose.infrastructure.yml, docker-compose.platform.yml]
    phases:
      - {name: infrastructure, compose_files: [docker-compose.infrastructure.yml]}
      - {name: platform, compose_files: [docker-compose.platform.yml]}
    git_sha: "{{ lookup('ansible.builtin.pipe', 'git rev-parse HEAD') }}"
  register: release

- name: Deploy exactly that release
  community.docker.docker_compose_v2:
    project_src: /var/lib/vpsops/platform/project
    project_name: platform
    files: "{{ release.files }}"
    pull: never
    wait: true

- name: Promote it
  vpsops.deploy.compose_release:
    stack: platform
    release: "{{ release.release }}"
    state: live
    keep: 5
"""

RETURN = r"""
release:
  description: The release id.
  returned: always
  type: str
  sample: 20261123T162900Z-4f1c
status:
  description: The release's status after the call (C(absent) once retired).
  returned: always
  type: str
  sample: pending
files:
  description: The absolute paths to give C(docker compose -f), in order, the lock override last.
  returned: when O(state=present)
  type: list
  elements: str
env_file:
  description: The release's copy of the env file, for C(docker compose --env-file).
  returned: when O(state=present)
  type: str
project_dir:
  description: The project directory to give C(docker compose --project-directory).
  returned: when O(state=present)
  type: str
release_dir:
  description: The release's directory.
  returned: always
  type: str
services:
  description: Per service, the image reference compose resolved, its image ID and the pinned reference.
  returned: when O(state=present)
  type: dict
  sample: {"ar": {"image": "vpsops-demo/ar:v2", "image_id": "sha256:5e1f...", "ref": "vpsops/platform/ar:20261123T162900Z-4f1c"}}
live:
  description: The live release of the stack when the call was made (null when none is live).
  returned: when O(state=present)
  type: str
phases:
  description: Per phase of O(phases), the services its compose files define (as recorded with the release).
  returned: when O(state=present)
  type: dict
  sample: {"infrastructure": ["ar-db", "nats", "payments-db"], "modules": ["ar", "payments"]}
replaced:
  description: The release that was live before, when O(state=live) moved the pointer.
  returned: when O(state=live)
  type: str
removed:
  description: Releases retention removed (or would remove, in check mode).
  returned: when O(state=live)
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Compose, Docker, DockerError
from ansible_collections.vpsops.deploy.plugins.module_utils._env import read_env_file
from ansible_collections.vpsops.deploy.plugins.module_utils._plan import add_waits, phase_argument_spec
from ansible_collections.vpsops.deploy.plugins.module_utils._probes import CheckSpecError, validate_checks
from ansible_collections.vpsops.deploy.plugins.module_utils._releases import (
    ReleaseError, Store, refuse_foreign_lock, snapshot, store_argument_spec, stored_checks,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._stack import file_services


def public_services(services):
    return dict((name, {"image": s.get("image"), "image_id": s.get("image_id"), "ref": s.get("ref")})
                for name, s in services.items())


def resolve_files(module, project_dir):
    files = []
    for name in module.params["files"]:
        path = name if os.path.isabs(name) else os.path.join(project_dir, name)
        if not os.path.isfile(path):
            module.fail_json(msg="files: %s does not exist on the host" % path)
        files.append(path)
    return files


def check_phases(module):
    """Duplicate phase names and bad checks fail before anything is recorded: a release is the
    record a deploy gates on and a rollback returns to, and a check that cannot run would only fail
    there, after its containers changed."""
    seen = set()
    for phase in module.params["phases"]:
        if phase["name"] in seen:
            module.fail_json(msg="phases: the name %r is used by more than one phase; phase names must be unique"
                             % phase["name"])
        seen.add(phase["name"])
        try:
            validate_checks(stored_checks(phase["checks"]), module.params["docker_cli"])
        except CheckSpecError as exc:
            module.fail_json(msg="phases[%s].checks: %s" % (phase["name"], exc))


def defined_services(paths):
    """{path: [services the file defines]} (_stack.file_services), {} when they cannot be read here."""
    texts = {}
    try:
        for path in paths:
            with open(path) as handle:
                texts[path] = handle.read()
        return file_services(texts)
    except (IOError, OSError, ImportError):  # no PyYAML on the host: compose lists each phase's files
        return {}


def phase_services(module, docker, stack, project_dir, env_file, files, model):
    """The phases as the release records them. A phase's services are those of the resolved model
    (`model`, every file) that its files define, so that a service may depend on one of an earlier
    phase's file; compose lists them from the phase's files alone when that cannot be told here."""
    phases = []
    env = read_env_file(env_file)
    known = set(os.path.basename(f) for f in files) | set(module.params["files"])
    every = sorted((model or {}).get("services") or {})
    for phase in module.params["phases"]:
        unknown = [f for f in phase["compose_files"] if f not in known]
        if unknown or not phase["compose_files"]:
            module.fail_json(msg="phases: phase %r names compose_files %s that are not in files (%s)"
                             % (phase["name"], unknown or "[]", ", ".join(module.params["files"])))
        paths = [f if os.path.isabs(f) else os.path.join(project_dir, f) for f in phase["compose_files"]]
        defined = defined_services(paths)
        if every and all(isinstance(defined.get(p), list) for p in paths):
            names = set(n for p in paths for n in defined[p])
            services = [n for n in every if n in names]
        else:
            services = Compose(docker, stack, paths, project_dir=project_dir, env_file=env_file).run(
                ["config", "--services", "--no-consistency"], what="docker compose config --services").split()
        phases.append(dict(name=phase["name"], files=[os.path.basename(p) for p in paths],
                           services=sorted(services), checks=stored_checks(phase["checks"], env)))
    return phases


def present(module, store, docker):
    params = module.params
    if params["release"] and os.path.isdir(store.release_dir(params["release"])):
        manifest = store.load(params["release"])
        known = set(b.get("path") for b in manifest.get("backups", []))
        new = []
        for backup in params["backups"]:
            if not backup.get("path"):
                module.fail_json(msg="backups: every backup needs a 'path'")
            if backup["path"] not in known:
                new.append(backup)
        if new and not module.check_mode:
            with store.guard():
                manifest = store.load(params["release"])
                manifest.setdefault("backups", []).extend(new)
                store.save(manifest)
                store.record("backups_pinned", release=manifest["id"], backups=[b["path"] for b in new])
        return dict(changed=bool(new), release=manifest["id"], status=manifest["status"],
                    release_dir=store.release_dir(manifest["id"]), files=store.compose_files(manifest),
                    env_file=store.env_path(manifest), project_dir=manifest.get("project_dir"),
                    services=public_services(manifest["services"]))
    if not params["files"]:
        module.fail_json(msg="files: give the compose files to record (state=present needs at least one)")
    check_phases(module)
    project_dir = params["project_dir"] or os.path.join(store.state_dir, "project")
    if not os.path.isdir(project_dir):
        module.fail_json(msg="project_dir %s does not exist on the host" % project_dir)
    files = resolve_files(module, project_dir)
    env_file = params["env_file"]
    if env_file is None and os.path.isfile(os.path.join(project_dir, ".env")):
        env_file = os.path.join(project_dir, ".env")
    if env_file and not os.path.isfile(env_file):
        module.fail_json(msg="env_file %s does not exist on the host" % env_file)
    compose = Compose(docker, store.stack, files, project_dir=project_dir, env_file=env_file)
    compose.model = compose.config()  # read once: the phases' services, what each waits for, the images
    phases = add_waits(phase_services(module, docker, store.stack, project_dir, env_file, files, compose.model),
                       compose.model)
    if not module.check_mode:
        store.ensure()
    manifest, changed = snapshot(store, docker, compose, params["release"], files, project_dir, env_file=env_file,
                                 phases=phases, pull=params["pull"], user=params["user"], git_sha=params["git_sha"],
                                 check_mode=module.check_mode)
    if params["backups"] and changed and not module.check_mode:
        manifest["backups"] = list(params["backups"])
        store.save(manifest)
    result = dict(changed=changed, release=manifest["id"], status=manifest["status"],
                  release_dir=store.release_dir(manifest["id"]), project_dir=project_dir,
                  services=public_services(manifest["services"]), live=store.live_id(),
                  phases=dict((p["name"], p["services"]) for p in manifest.get("phases") or []))
    if module.check_mode and changed:
        result.update(files=[], env_file=None)
    else:
        result.update(files=store.compose_files(manifest), env_file=store.env_path(manifest))
    if changed:
        result["diff"] = dict(before={}, after=dict((n, s["image_id"]) for n, s in manifest["services"].items()))
    return result


def promote(module, store, docker):
    params = module.params
    if params["keep"] < 2:
        module.fail_json(msg="keep must be 2 or more (the live release and the one before it), got %d" % params["keep"])
    manifest = store.load(params["release"])
    before = manifest["status"]
    if module.check_mode:
        live = store.live_id()
        changed = live != manifest["id"] or before != "live"
        return dict(changed=changed, release=manifest["id"], status="live", replaced=live if changed else None,
                    removed=store.retention_plan(params["keep"]), release_dir=store.release_dir(manifest["id"]),
                    diff=dict(before=dict(status=before), after=dict(status="live")))
    with store.guard():
        manifest = store.load(params["release"])
        replaced, changed = store.make_live(manifest, user=params["user"])
        if changed:
            store.record("release_live", release=manifest["id"], replaced=replaced, user=params["user"])
        removed = []
        for release_id in store.retention_plan(params["keep"]):
            store.retire(release_id, docker)
            store.record("release_retired", release=release_id, reason="retention keep=%d" % params["keep"])
            removed.append(release_id)
    return dict(changed=changed or bool(removed), release=manifest["id"], status="live", replaced=replaced,
                removed=removed, release_dir=store.release_dir(manifest["id"]),
                diff=dict(before=dict(status=before), after=dict(status="live")))


def mark_failed(module, store):
    manifest = store.load(module.params["release"])
    before = manifest["status"]
    if before == "live":
        module.fail_json(msg="release %s is live; roll back first (vpsops.deploy.compose_rollback), then mark it failed"
                         % manifest["id"])
    changed = before != "failed"
    if changed and not module.check_mode:
        with store.guard():
            store.set_status(manifest, "failed", user=module.params["user"])
            store.record("release_failed", release=manifest["id"], user=module.params["user"])
    return dict(changed=changed, release=manifest["id"], status="failed", release_dir=store.release_dir(manifest["id"]),
                diff=dict(before=dict(status=before), after=dict(status="failed")))


def retire(module, store, docker):
    release_id = module.params["release"]
    if not os.path.isdir(store.release_dir(release_id)):
        return dict(changed=False, release=release_id, status="absent", release_dir=store.release_dir(release_id))
    if release_id in store.protected():
        module.fail_json(msg="release %s is %s and cannot be removed" % (
            release_id, "live" if release_id == store.live_id() else "the release before the live one, or pending"))
    before = store.load(release_id)["status"]
    if not module.check_mode:
        with store.guard():
            store.retire(release_id, docker)
            store.record("release_retired", release=release_id, reason="state=absent", user=module.params["user"])
    return dict(changed=True, release=release_id, status="absent", release_dir=store.release_dir(release_id),
                diff=dict(before=dict(status=before), after=dict(status="absent")))


def main():
    spec = store_argument_spec()
    spec.update(
        state=dict(type="str", default="present", choices=["present", "live", "failed", "absent"]),
        release=dict(type="str"),
        project_dir=dict(type="path"),
        files=dict(type="list", elements="str", default=[]),
        env_file=dict(type="path"),
        phases=dict(type="list", elements="dict", default=[], options=phase_argument_spec()),
        pull=dict(type="str", default="missing", choices=["missing", "never"]),
        keep=dict(type="int", default=5),
        user=dict(type="str"),
        lock_owner=dict(type="str"),
        git_sha=dict(type="str"),
        backups=dict(type="list", elements="dict", default=[]),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           required_if=[("state", "live", ["release"]), ("state", "failed", ["release"]),
                                        ("state", "absent", ["release"])])
    try:
        store = Store(module.params["stack"], module.params["state_dir"])
        docker = Docker(module.params["docker_cli"])
        state = module.params["state"]
        if not module.check_mode:
            refuse_foreign_lock(store, module.params["lock_owner"])
        if state == "present":
            result = present(module, store, docker)
        elif state == "live":
            result = promote(module, store, docker)
        elif state == "failed":
            result = mark_failed(module, store)
        else:
            result = retire(module, store, docker)
    except (ReleaseError, DockerError) as exc:
        module.fail_json(msg=str(exc))
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
