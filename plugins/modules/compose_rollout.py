#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: compose_rollout
short_description: Update replicated Docker Compose services without downtime (new containers beside the old ones)
version_added: 0.1.0
description:
  - For each service in O(services), starts as many new containers as the service's replicas beside
    the old ones (C(docker compose up -d --no-deps --no-recreate --scale SERVICE=OLD+NEW SERVICE)),
    so the new ones get the current compose files, env files and image while the old ones keep serving.
  - Gates the new containers on their own state, for at most O(timeout) seconds, with the same
    container judging as M(vpsops.deploy.health_wait) - running, Docker healthcheck C(healthy) where the
    image or service defines one (running for O(wait_without_healthcheck) seconds where it does not).
    A new container that exits, is OOM-killed or restarts fails the gate at once.
    C(healthy) is Docker's own verdict, awaited even where a deploy's phase would run the healthcheck
    itself to know sooner - a proxy that follows Docker's health (Traefik) routes to no container
    Docker still calls C(starting), and the old containers are about to go.
  - When the gate passes, waits O(drain) seconds, so that a proxy re-resolving the service's DNS name
    sees the new containers, then stops the old containers with the service's stop timeout
    (C(stop_grace_period), else the containers' own, else 10 seconds) and removes them. Exactly the
    service's replicas remain, and a following C(docker compose up) considers them up to date.
  - When the gate fails, the new containers are stopped and removed, the old ones were never touched
    and keep serving, and the module fails naming the service and why.
  - A service whose running containers all carry the config hash of C(docker compose config --hash)
    and run the image ID its image reference names, as many as its replicas, is left alone
    (C(changed=false)). A service with no running container is started with a plain
    C(docker compose up -d --no-deps) and gated the same way.
  - Services are rolled out one after the other, in the order given. All of them are checked (they
    exist, the old and new containers can run side by side) before the first one changes.
  - Requests reach new containers as soon as they start, because Docker's DNS lists a container when
    it starts, not when it is healthy. The proxy in front of the service must retry the next upstream
    on a connection error or a 502/503 (nginx C(proxy_next_upstream)), or check its upstreams' health.
  - A service that publishes a fixed host port or sets C(container_name) cannot run two containers at
    once and is refused before anything changes; roll out the services behind its proxy instead.
  - Compose numbers containers upwards, so after a rollout the containers of C(auth) are named
    C(PROJECT-auth-3) and C(PROJECT-auth-4), then 5 and 6, and so on. Refer to such a service's
    containers by service label, not by name.
author:
  - vpsops.deploy contributors (@vpsops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.compose_project
  - vpsops.deploy.docker
attributes:
  check_mode:
    support: full
    details: Returns per service what would happen (which containers would be replaced, by what image) and changes nothing.
  diff_mode:
    support: full
    details: Per service, the containers and image before and after.
  platform:
    platforms: posix
options:
  services:
    description: The services to roll out, one after the other.
    type: list
    elements: str
    required: true
  timeout:
    description: Seconds the new containers of one service have to pass the gate.
    type: int
    default: 120
  drain:
    description:
      - Seconds to wait after the new containers passed the gate and before the old ones are
        stopped, so that a proxy re-resolving the service's DNS name (nginx C(resolver ... valid=1s))
        sends requests to the new containers first.
    type: float
    default: 1
  wait_without_healthcheck:
    description:
      - Seconds a new container without a Docker healthcheck must stay running to pass the gate.
    type: float
    default: 10
  pull:
    description: The image pull policy of C(docker compose up) (C(--pull)). The module never builds.
    type: str
    choices: [always, missing, never]
    default: missing
notes:
  - While a rollout runs, twice the service's replicas run; the host needs room for them.
  - Services that other containers refer to by container name (a C(log) check of
    M(vpsops.deploy.health_wait) for example) change names on every rollout.
seealso:
  - module: vpsops.deploy.health_wait
  - module: vpsops.deploy.compose_rollback
  - name: docker-rollout, the shell plugin this module follows
    description: Starts new containers beside the old ones with C(--scale) and C(--no-recreate), then removes the old ones.
    link: https://github.com/wowu/docker-rollout
"""

EXAMPLES = r"""
- name: Roll out the auth service without downtime
  vpsops.deploy.compose_rollout:
    project: platform
    project_dir: /opt/vpsops/platform
    files: [docker-compose.platform.yml]
    services: [auth]

- name: Show which containers a rollout would replace
  vpsops.deploy.compose_rollout:
    project: platform
    project_dir: /opt/vpsops/platform
    files: [docker-compose.platform.yml]
    env_files: [/opt/vpsops/platform/.env]
    services: [auth, api]
  check_mode: true
  diff: true
"""

RETURN = r"""
changed:
  description: Whether any service was rolled out, started or scaled.
  returned: always
  type: bool
services:
  description:
    - Per service, what was done. C(action) is C(none) (already up to date), C(rollout) (new
      containers replaced old ones), C(start) (no container ran) or C(scale) (the running containers
      were up to date, their number or stopped leftovers were not).
    - C(old) are the containers that were (in check mode, would be) replaced, C(new) the ones that
      replace them; C(image_before)/C(image_after) the image references, C(image_id_before)/C(image_id_after)
      the image IDs; C(seconds) the time the service took and C(timing) its parts (up, gate, drain, stop).
    - C(rejected) are new containers that failed the gate and were removed again, and C(logs) holds the last
      lines of each of them.
  returned: always
  type: dict
  sample:
    auth:
      changed: true
      action: rollout
      plan: "auth: start 2 new container(s) on vpsops-demo/auth:v2 beside platform-auth-1, platform-auth-2, ..."
      replicas: 2
      old: [platform-auth-1, platform-auth-2]
      new: [platform-auth-3, platform-auth-4]
      removed_stopped: []
      image_before: vpsops-demo/auth:v1
      image_after: vpsops-demo/auth:v2
      image_id_before: "sha256:ca62e8..."
      image_id_after: "sha256:5d01a7..."
      seconds: 5.41
      timing: {up: 0.9, gate: 3.2, drain: 1.0, stop: 0.3}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Compose, Docker, DockerError, resolve_files
from ansible_collections.vpsops.deploy.plugins.module_utils._rollout import (
    PULL_POLICIES, Rollout, RolloutError, check_options,
)


def diff_of(services):
    before, after = [], []
    for name, result in sorted(services.items()):
        old = ", ".join(result["old"]) or "no container"
        before.append("%s: %s on %s\n" % (name, old, result["image_before"] or "-"))
        if result["action"] == "none":
            containers = ", ".join(result["old"])
        else:
            containers = ", ".join(result["new"]) or "%d new container(s)" % result["replicas"]
        after.append("%s: %s on %s\n" % (name, containers, result["image_after"] or "-"))
    return {"before": "".join(before), "after": "".join(after)}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            project=dict(type="str", required=True),
            project_dir=dict(type="path", required=True),
            files=dict(type="list", elements="path", required=True),
            env_files=dict(type="list", elements="path", default=[]),
            services=dict(type="list", elements="str", required=True),
            timeout=dict(type="int", default=120),
            drain=dict(type="float", default=1.0),
            wait_without_healthcheck=dict(type="float", default=10.0),
            pull=dict(type="str", choices=list(PULL_POLICIES), default="missing"),
            docker_cli=dict(type="path", default="docker"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        services = check_options(params["services"], params["timeout"], params["drain"],
                                 params["wait_without_healthcheck"], params["pull"])
    except RolloutError as exc:
        module.fail_json(msg=str(exc), changed=False, services={})
    if not params["project"].strip():
        module.fail_json(msg="project must be a compose project name, got an empty string")
    project_dir = params["project_dir"]
    if not os.path.isdir(project_dir):
        module.fail_json(msg="project_dir %s is not a directory on the host" % project_dir)
    if not params["files"]:
        module.fail_json(msg="files must list at least one compose file")
    try:
        files = resolve_files(project_dir, params["files"], "files")
        env_files = resolve_files(project_dir, params["env_files"], "env_files")
    except ValueError as exc:
        module.fail_json(msg=str(exc))

    docker = Docker(params["docker_cli"])
    compose = Compose(docker, params["project"], files, project_dir=project_dir, env_files=env_files)
    rollout = Rollout(compose, timeout=params["timeout"], drain=params["drain"],
                      wait_without_healthcheck=params["wait_without_healthcheck"], pull=params["pull"])
    try:
        docker.ping()
        results = rollout.run(services, check_mode=module.check_mode)
    except RolloutError as exc:
        module.fail_json(msg=str(exc), changed=any(r.get("changed") for r in exc.services.values()),
                         services=exc.services)
    except DockerError as exc:
        module.fail_json(msg=str(exc), changed=False, services={})
    result = {"changed": any(r["changed"] for r in results.values()), "services": results}
    if module._diff:
        result["diff"] = diff_of(results)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
