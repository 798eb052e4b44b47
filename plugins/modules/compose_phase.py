#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: compose_phase
short_description: Bring up the services of a deploy phase and gate the phase on health, in one run
version_added: 0.1.0
description:
  - Runs C(docker compose up -d) for O(services), finds out what that changed (containers
    created, recreated, started or removed), then gates the phase as M(vpsops.deploy.health_wait)
    does, on O(checks) and on every container of O(gate_services) (running, Docker healthcheck
    C(healthy) where one is defined, failing at once on an exit or a restart), all under one deadline.
  - A container whose healthcheck Docker has not run yet (C(starting)) counts as healthy as soon as
    the same healthcheck command, run in it by the gate, exits 0; C(unhealthy) is never overruled.
    So C(up) does not wait (no C(--wait)); the gate does, sooner.
  - One module run per phase instead of two (C(community.docker.docker_compose_v2), then
    M(vpsops.deploy.health_wait)), and two C(docker) calls around C(up) instead of C(docker compose
    ps) runs before and after it.
  - The checks are validated before anything changes.
  - When C(up) or the gate fails, the module fails with what failed, and returns what C(up) changed.
author:
  - vpsops.deploy contributors (@vpsops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.checks
  - vpsops.deploy.compose_project
  - vpsops.deploy.release_store.lock_owner
  - vpsops.deploy.docker
attributes:
  check_mode:
    support: full
    details: >-
      Asks C(docker compose --dry-run up) which containers would be created, recreated or started,
      and changes nothing; the gate does not run. When O(files) are not on the host yet, reports a
      change.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  services:
    description:
      - The services to bring up (C(docker compose up -d SERVICES)); compose starts their
        dependencies too. Empty, nothing is brought up and only the gate runs.
    type: list
    elements: str
    default: []
  gate_services:
    description:
      - The services whose containers the gate judges, after C(up). Defaults to O(services).
    type: list
    elements: str
  gate_containers:
    description:
      - More containers for the gate, by name (the new containers of a rollout, for example).
    type: list
    elements: str
    default: []
  since:
    description:
      - The host's clock (epoch seconds) when the deploy started. A gated container created after it
        fails the gate on any restart since it was created, counted even before the gate's first probe.
    type: float
  timeout:
    description: Seconds C(up) may wait for the containers, and again seconds the gate may take.
    type: int
    default: 120
  interval:
    description: Seconds between two probes of a check that is passing.
    type: float
    default: 1
  max_interval:
    description: The longest wait between two probes of a check that keeps failing (it backs off to it).
    type: float
    default: 5
  consecutive:
    description: Successes in a row for a check to count as ready (a stability window).
    type: int
    default: 1
  state_dir:
    description: The stack's state directory, whose deploy lock O(lock_owner) is checked against. Default C(/var/lib/vpsops/<project>).
    type: path
  pull:
    description: The image pull policy of C(docker compose up) (C(--pull)).
    type: str
    choices: [always, missing, never]
    default: missing
notes:
  - C(up) builds a missing image of a service with a C(build) section, as compose does by default.
seealso:
  - module: vpsops.deploy.health_wait
  - module: vpsops.deploy.compose_rollout
"""

EXAMPLES = r"""
- name: Bring up the platform phase and gate it
  vpsops.deploy.compose_phase:
    project: platform
    project_dir: /var/lib/vpsops/platform/project
    files: [docker-compose.infrastructure.yml, docker-compose.platform.yml]
    services: [auth, api]
    consecutive: 2
    checks:
      - name: api
        type: http
        url: http://127.0.0.1:8080/api/health
"""

RETURN = r"""
actions:
  description: What C(up) did (in check mode, would do), per container.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The container name.
      type: str
    status:
      description: Created, Recreated, Started or Removed.
      type: str
    service:
      description: Its service (null in check mode).
      type: str
  sample: [{id: platform-api-1, status: Recreated, service: api}]
containers:
  description: The containers of O(gate_services) after C(up) (empty in check mode).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The container name.
      type: str
    service:
      description: Its service.
      type: str
    id:
      description: The container ID.
      type: str
    image_id:
      description: The image ID it runs.
      type: str
    state:
      description: Its state (running, exited, ...).
      type: str
    health:
      description: Its healthcheck status, or null without one.
      type: str
gate:
  description:
    - The health gate, as M(vpsops.deploy.health_wait) returns it (ready, elapsed, checks,
      not_ready); null when there was nothing to gate or in check mode.
  returned: always
  type: dict
seconds:
  description: Seconds taken by C(up) (with the two snapshots around it) and by the gate.
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Compose, Docker, DockerError, resolve_files
from ansible_collections.vpsops.deploy.plugins.module_utils._phase import PhaseError, run_phase
from ansible_collections.vpsops.deploy.plugins.module_utils._probes import CheckSpecError, check_argument_spec
from ansible_collections.vpsops.deploy.plugins.module_utils._releases import ReleaseError, Store, refuse_foreign_lock
from ansible_collections.vpsops.deploy.plugins.module_utils._rollout import PULL_POLICIES


def main():
    module = AnsibleModule(
        argument_spec=dict(
            project=dict(type="str", required=True),
            project_dir=dict(type="path", required=True),
            files=dict(type="list", elements="path", required=True),
            env_files=dict(type="list", elements="path", default=[]),
            services=dict(type="list", elements="str", default=[]),
            gate_services=dict(type="list", elements="str"),
            gate_containers=dict(type="list", elements="str", default=[]),
            checks=dict(type="list", elements="dict", default=[], options=check_argument_spec()),
            since=dict(type="float"),
            timeout=dict(type="int", default=120),
            interval=dict(type="float", default=1),
            max_interval=dict(type="float", default=5),
            consecutive=dict(type="int", default=1),
            pull=dict(type="str", choices=list(PULL_POLICIES), default="missing"),
            docker_cli=dict(type="path", default="docker"),
            lock_owner=dict(type="str"),
            state_dir=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not 1 <= params["timeout"] <= 86400:
        module.fail_json(msg="timeout must be between 1 and 86400 seconds, got %s" % params["timeout"])
    for key in ("interval", "max_interval"):
        if not 0.01 <= params[key] <= 3600:
            module.fail_json(msg="%s must be between 0.01 and 3600 seconds, got %s" % (key, params[key]))
    if params["consecutive"] < 1:
        module.fail_json(msg="consecutive must be 1 or more, got %s" % params["consecutive"])
    if not params["project"].strip():
        module.fail_json(msg="project must be a compose project name, got an empty string")
    if not params["files"]:
        module.fail_json(msg="files must list at least one compose file")
    try:
        files = resolve_files(params["project_dir"], params["files"], "files")
        env_files = resolve_files(params["project_dir"], params["env_files"], "env_files")
    except ValueError as exc:
        if module.check_mode:
            # The files of a release not deployed yet are not on the host: everything would change.
            module.exit_json(changed=True, actions=[], containers=[], gate=None,
                             msg="check mode: %s; the phase would be brought up from the new files" % exc)
        module.fail_json(msg=str(exc))
    if not module.check_mode:
        try:
            refuse_foreign_lock(Store(params["project"], params["state_dir"]), params["lock_owner"])
        except ReleaseError as exc:
            module.fail_json(msg=str(exc), changed=False, actions=[], containers=[], gate=None)
    compose = Compose(Docker(params["docker_cli"]), params["project"], files, project_dir=params["project_dir"],
                      env_files=env_files)
    try:
        result = run_phase(compose, params["services"], gate_services=params["gate_services"],
                           gate_containers=params["gate_containers"], checks=params["checks"],
                           since=params["since"], timeout=params["timeout"], interval=params["interval"],
                           max_interval=params["max_interval"], consecutive=params["consecutive"],
                           pull=params["pull"], check_mode=module.check_mode)
    except CheckSpecError as exc:
        module.fail_json(msg=str(exc), changed=False, actions=[], containers=[], gate=None)
    except PhaseError as exc:
        module.fail_json(msg=str(exc), **exc.result)
    except DockerError as exc:
        module.fail_json(msg=str(exc), changed=False, actions=[], containers=[], gate=None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
