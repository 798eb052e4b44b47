#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: compose_rollback
short_description: Roll a Docker Compose stack, phase or service back to a recorded release and prove what runs
version_added: 0.1.0
description:
  - Runs C(docker compose up -d --wait --no-build --pull never) with the files, env file and image
    lock override of a release recorded by M(vpsops.deploy.compose_release). It never builds and never
    pulls, except a digest-pinned image when O(pull) allows it. Images whose original tag was moved
    or pruned still run, because the release pins them by digest or by its own tag.
  - Before any change it checks that the target's manifest and files are intact and that every
    pinned image is on the host; a missing one fails naming the service, the image and how to get
    it back.
  - After C(up) it proves that every container of every service in scope runs the recorded image
    ID, waits on the health checks (the target's recorded checks for the phases in scope, or
    O(checks)) and on the scope's containers, then records the rollback in C(history.jsonl) and
    moves C(current).
  - A whole-stack rollback makes the target live (the release it replaces becomes C(rolled_back))
    and removes containers of services the target does not have. Rolling back some phases or
    services records a new live release made of the live one with those services taken from the
    target; the other services' containers are not touched.
  - Rolling back to what already runs is C(changed=false).
author:
  - vpsops.deploy contributors (@vpsops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.release_store
  - vpsops.deploy.release_store.lock_owner
  - vpsops.deploy.checks
  - vpsops.deploy.docker
attributes:
  check_mode:
    support: full
    details: Returns the plan, per service the running image ID and the target's.
  diff_mode:
    support: full
    details: Per service, the image ID before and after.
  platform:
    platforms: posix
options:
  to:
    description:
      - The target. V(previous) is the live release when a newer release is still pending (a
        deploy that did not finish), otherwise the release that was live before the live one.
      - V(live) is the live release (undo a deploy that died half way). C(-N) goes N good releases
        back from the live one. Anything else is a release id.
    type: str
    default: previous
  phases:
    description: Roll back only the services of these phases (as recorded with the target).
    type: list
    elements: str
    default: []
  services:
    description: Roll back only these services.
    type: list
    elements: str
    default: []
  checks:
    description:
      - More checks of M(vpsops.deploy.health_wait) to gate on after the rollback, besides the
        containers in scope (always checked) and, with O(recorded_checks), the checks recorded
        with the target release for the phases in scope.
  recorded_checks:
    description: Gate on the checks recorded with the target release for the phases in scope.
    type: bool
    default: true
  timeout:
    description: Seconds for C(up --wait) and, again, for the health gate.
    type: int
    default: 120
  pull:
    description: Pull an image pinned by digest when it is not on the host.
    type: bool
    default: false
  user:
    description: Who rolls back, recorded in the history.
    type: str
seealso:
  - module: vpsops.deploy.compose_release
  - module: vpsops.deploy.compose_release_info
  - module: vpsops.deploy.health_wait
"""

EXAMPLES = r"""
- name: Roll the whole stack back to the previous release
  vpsops.deploy.compose_rollback:
    stack: platform

- name: Roll one service back to a named release
  vpsops.deploy.compose_rollback:
    stack: platform
    to: 20261123T162900Z-4f1c
    services: [payments]

- name: Show what rolling back two releases would do
  vpsops.deploy.compose_rollback:
    stack: platform
    to: "-2"
  check_mode: true
  diff: true
"""

RETURN = r"""
from:
  description: The release that was live before.
  returned: always
  type: str
to:
  description: The target release.
  returned: always
  type: str
release:
  description: The new release a partial rollback recorded, or null.
  returned: always
  type: str
scope:
  description: stack, phases or services.
  returned: always
  type: str
services:
  description: Per service in scope, the running image ID before, the target image ID, and whether it changes.
  returned: always
  type: dict
  sample: {"payments": {"before": "sha256:9a...", "after": "sha256:5e...", "ref": "vpsops/platform/payments:20261123T162900Z-4f1c", "changes": true}}
failed_pending:
  description:
    - When what runs already was the target (a deploy died before it changed anything), the
      unfinished (pending) releases after the target, now marked failed.
  returned: when nothing had to change
  type: list
  elements: str
  sample: ["20261123T162900Z-4f1c"]
order:
  description:
    - The phases whose services moved, in the order they were rolled back (the last phase first);
      null stands for services in no recorded phase.
  returned: when the rollback ran
  type: list
  elements: str
  sample: ["modules", "platform"]
seconds:
  description: Seconds spent preparing (checks, images, release), in C(up), proving the image IDs, in the health gate, and in total.
  returned: when the rollback ran
  type: dict
  sample: {"prepare": 0.21, "up": 6.4, "prove": 0.08, "health": 0.12, "total": 6.9}
health:
  description: The health gate's outcome (elapsed seconds and per check whether it became ready).
  returned: when the rollback ran
  type: dict
"""


from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Docker, DockerError
from ansible_collections.vpsops.deploy.plugins.module_utils._probes import (
    CheckSpecError, check_argument_spec, rollback_gate, validate_checks,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._releases import (
    ReleaseError, Store, refuse_foreign_lock, store_argument_spec,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._rollback import rollback


def main():
    spec = store_argument_spec()
    spec.update(
        to=dict(type="str", default="previous"),
        phases=dict(type="list", elements="str", default=[]),
        services=dict(type="list", elements="str", default=[]),
        checks=dict(type="list", elements="dict", default=[], options=check_argument_spec()),
        recorded_checks=dict(type="bool", default=True),
        timeout=dict(type="int", default=120),
        pull=dict(type="bool", default=False),
        user=dict(type="str"),
        lock_owner=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = module.params
    if params["timeout"] < 1:
        module.fail_json(msg="timeout must be 1 second or more, got %d" % params["timeout"])
    try:
        # A bad check must fail before anything is rolled back, not in the health gate after `up`.
        validate_checks(params["checks"], params["docker_cli"])
    except CheckSpecError as exc:
        module.fail_json(msg="checks: %s; nothing was rolled back" % exc)
    try:
        store = Store(params["stack"], params["state_dir"])
        if not store.exists():
            module.fail_json(msg="stack %s has no release store in %s: nothing to roll back to"
                             % (params["stack"], store.state_dir))
        if not module.check_mode:
            refuse_foreign_lock(store, params["lock_owner"])
        docker = Docker(params["docker_cli"])
        docker.ping()
        result = rollback(store, docker, to=params["to"], phases=params["phases"], services=params["services"],
                          checks=params["checks"], recorded_checks=params["recorded_checks"],
                          timeout=params["timeout"], pull_digests=params["pull"],
                          check_mode=module.check_mode, user=params["user"], gate=rollback_gate(params["docker_cli"]))
        # The rollback put the release's files in the project directory before its `up`
        # (result["project_files"]): the project directory shows what runs now.
    except (ReleaseError, DockerError) as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="the rollback could not put the release's files in the project directory: %s" % exc)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
