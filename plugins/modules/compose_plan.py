#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: compose_plan
short_description: Show what a deploy of a Docker Compose stack would change, phase by phase
version_added: 0.1.0
description:
  - Reads the compose files of a stack on the host, the images on the host, the running containers
    of the compose project and the stack's live release, and returns the deploy plan, per phase and
    per service, what runs now (RV(plan[].services.current)), what the files resolve to
    (RV(plan[].services.new)) and what C(docker compose up) would do (RV(plan[].services.action)).
  - It changes nothing, in check mode or not (RV(changed) is always false). The deploy playbook runs
    it in check mode to print the plan.
  - The new side is computed as the deploy runs compose, every file of the stack loaded and, with
    O(pin_images), every service pinned the way M(vpsops.deploy.compose_release) pins it (by digest,
    else by the tag named after its image ID). Its configuration hash (C(docker compose config --hash))
    is then the one the deploy's containers carry in their C(com.docker.compose.config-hash) label,
    and compose recreates a container exactly when that hash or its image ID differs.
  - Actions are V(create) (no container yet), V(recreate) (image ID or configuration hash differs, or
    the image has to be pulled), V(start) (same image and configuration, but a container is stopped),
    V(scale) (same image and configuration, another number of replicas), V(unchanged), and V(remove)
    (the project runs a service that no phase's files define any more; it is listed in the phase the
    live release recorded it in, else in the last phase).
  - For each service it also reports the image ID the live release (the store's C(current)) pinned,
    and RV(plan[].services.drift) when what runs is not that image (something changed outside the tool).
  - When the project directory or one of the files is not on the host (a first deploy in check mode,
    as the deploy copies no files in check mode), it returns RV(project_missing=true) and the phases with
    their backups and migrations, but no services.
  - Values of the environment (the env files, the process environment) are never returned; only image
    references, image IDs, hashes and container names are.
author:
  - vpsops.deploy contributors (@vpsops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.release_store
  - vpsops.deploy.checks.phases
  - vpsops.deploy.docker
attributes:
  check_mode:
    support: full
    details: Only reads; the result is the same in check mode.
  diff_mode:
    support: full
    details: Per phase, service and image (reference and short image ID) before and after.
  platform:
    platforms: posix
options:
  state_dir:
    description:
      - The stack's state directory on the host, where the live release is read from (never written).
      - Defaults to C(/var/lib/vpsops/<stack>).
  project_dir:
    description:
      - The compose project directory on the host; relative paths of O(files), O(env_files) and
        O(phases[].compose_files) resolve against it, as do relative paths inside the compose files.
      - Defaults to C(<state_dir>/project).
    type: path
  files:
    description:
      - The compose files as the deploy loads them, in order, relative to O(project_dir) or absolute.
      - Defaults to every O(phases[].compose_files) in phase order.
      - Files staged elsewhere (absolute paths) may be planned against the real O(project_dir).
    type: list
    elements: str
    default: []
  env_files:
    description:
      - The env files compose reads, relative to O(project_dir) or absolute.
      - Defaults to C(<project_dir>/.env) when it exists.
    type: list
    elements: path
  pin_images:
    description:
      - Compute the new configuration hash with every service pinned as the deploy pins it. Set
        V(false) for a stack that is brought up from its files directly.
    type: bool
    default: true
  phases:
    description:
      - The stack's phases, in deploy order (the C(phases) of the stack variable). The services of a
        phase are those its compose files define.
      - Without phases, the plan has one phase named C(stack) holding every service of O(files).
      - The checks of a phase are accepted so that the stack's phases can be passed as they are; the
        plan does not run them, and their secrets are never returned or logged.
seealso:
  - module: vpsops.deploy.compose_release
  - module: vpsops.deploy.compose_release_info
  - module: vpsops.deploy.compose_rollback
"""

EXAMPLES = r"""
- name: Show what deploying the stack would change
  vpsops.deploy.compose_plan:
    stack: platform
    phases: "{{ vpsops_stack.phases }}"
  check_mode: true
  diff: true
  register: plan

- name: Print the plan
  ansible.builtin.debug:
    msg: >-
      {{ item.name }}: {{ item.services | dict2items
         | map(attribute='key') | zip(item.services | dict2items | map(attribute='value.action')) | list }}
  loop: "{{ plan.plan }}"
  loop_control:
    label: "{{ item.name }}"

- name: Stop when something changed outside the tool
  ansible.builtin.assert:
    that: plan.drift | length == 0
    fail_msg: "Services run other images than the live release pinned: {{ plan.drift | join(', ') }}"
"""

RETURN = r"""
changed:
  description: Always false; the module only reads.
  returned: always
  type: bool
plan:
  description: The phases in deploy order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The phase name.
      type: str
    compose_files:
      description: The phase's compose files, as given.
      type: list
      elements: str
    services:
      description: Per service of the phase (and services to remove), what the deploy would do. Empty when RV(project_missing).
      type: dict
      contains:
        action:
          description: V(create), V(recreate), V(start), V(scale), V(unchanged) or V(remove).
          type: str
        current:
          description:
            - What runs now (null when no container exists). C(image) is the reference the containers
              were created from, C(source_image) the reference the live release pinned it from (when the
              containers run the live release's pin), C(image_id) and C(config_hash) their image ID and
              configuration hash (a list when containers differ, as after a rollout that stopped half way),
              C(containers) their names and C(running) how many run.
          type: dict
        new:
          description:
            - What the files resolve to (null for V(remove)). C(image) is the reference compose resolves,
              C(image_id) its ID on the host (null when it is not on the host, then C(pull=true)),
              C(pinned) the reference the release would pin, C(config_hash) the hash compose would label
              the containers with, C(replicas) how many containers compose runs.
          type: dict
        live_image_id:
          description: The image ID the live release pinned for the service (null when none is live or it has no such service).
          type: str
        drift:
          description: A release is live and what runs is not the image it pinned for the service.
          type: bool
        rollout:
          description: The service is in the phase's rollout list.
          type: bool
    backups:
      description: The databases the deploy backs up before this phase changes.
      type: list
      elements: str
    migration:
      description: Whether the phase runs a migration.
      type: bool
    migration_service:
      description: The migration's compose service, or null.
      type: str
    rollout:
      description: The services updated without downtime.
      type: list
      elements: str
    changes:
      description: How many services of the phase are not V(unchanged) (null when RV(project_missing)).
      type: int
  sample:
    - name: platform
      compose_files: [docker-compose.platform.yml]
      backups: []
      migration: false
      migration_service: null
      rollout: [auth]
      changes: 1
      services:
        auth:
          action: recreate
          current: {image: "vpsops/platform/auth:id-ca62e86197aa0e5a769cd6c1", source_image: "vpsops-demo/auth:v1",
                    image_id: "sha256:ca62e86197aa...", config_hash: "ea84b47d70e9...",
                    containers: [platform-auth-1, platform-auth-2], running: 2}
          new: {image: "vpsops-demo/auth:v2", image_id: "sha256:5e1f0c...", pull: false, replicas: 2,
                pinned: "vpsops/platform/auth:id-5e1f0c...", config_hash: "a2f8257b19c9..."}
          live_image_id: "sha256:ca62e86197aa..."
          drift: false
          rollout: true
summary:
  description: How many services (over all phases) get each action.
  returned: always
  type: dict
  sample: {"create": 0, "recreate": 1, "start": 0, "scale": 0, "unchanged": 6, "remove": 0}
project_missing:
  description: The project directory or a compose file is not on the host; only the phases are listed.
  returned: always
  type: bool
missing_files:
  description: The files that are not on the host when RV(project_missing).
  returned: always
  type: list
  elements: str
live_release:
  description: The live release of the stack on the host, or null.
  returned: always
  type: str
drift:
  description: The services whose running image is not the one the live release pinned.
  returned: always
  type: list
  elements: str
files:
  description: The absolute paths of the compose files planned with.
  returned: always
  type: list
  elements: str
env_files:
  description: The absolute paths of the env files planned with (their contents are never returned).
  returned: always
  type: list
  elements: str
project_dir:
  description: The compose project directory.
  returned: always
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Docker, DockerError
from ansible_collections.vpsops.deploy.plugins.module_utils._plan import PlanError, make_plan, phase_argument_spec
from ansible_collections.vpsops.deploy.plugins.module_utils._releases import (
    ReleaseError, check_stack, default_state_dir, store_argument_spec,
)


def main():
    spec = store_argument_spec()
    spec.update(
        project_dir=dict(type="path"),
        files=dict(type="list", elements="str", default=[]),
        env_files=dict(type="list", elements="path"),
        pin_images=dict(type="bool", default=True),
        phases=dict(type="list", elements="dict", default=[], options=phase_argument_spec()),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = module.params
    try:
        stack = check_stack(params["stack"])
        state_dir = params["state_dir"] or default_state_dir(stack)
        project_dir = params["project_dir"] or os.path.join(state_dir, "project")
        docker = Docker(params["docker_cli"])
        result = make_plan(docker, stack, params["phases"], project_dir, files=params["files"],
                           env_files=params["env_files"], state_dir=state_dir, pin_images=params["pin_images"])
    except (PlanError, ReleaseError, DockerError) as exc:
        module.fail_json(msg="compose_plan of stack %s: %s" % (params["stack"], exc))
    before, after = result.pop("diff")
    for text in result.pop("warnings"):
        module.warn(text)
    result["changed"] = False
    if module._diff:
        result["diff"] = dict(before=before, after=after, before_header="%s: running now" % params["stack"],
                              after_header="%s: after the deploy" % params["stack"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
