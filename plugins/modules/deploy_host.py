#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: deploy_host
short_description: One step of a stack's deploy on a host (begin, a phase, finish, end) in one module run
version_added: "0.3.0"
description:
  - The deploy engine of C(playbooks/deploy.yml). Each step of one host's deploy is one module run, so
    a deploy of N phases costs N + 3 module runs per host.
  - C(begin) takes the stack's lock, stages the new compose files and C(.env), checks them (compose
    config, variables, image tags, ports), records the release (pending, every image pinned) and plans
    per phase what changes. The running stack and the project directory are left as they are.
  - C(phase) puts the release's files in the project directory, takes the phase's verified backups
    (concurrently), runs its migration, rolls out its replicated services, brings up the others and
    gates the phase. A phase whose containers already run the release takes no backup and no C(up);
    one probe round proves it.
  - C(finish) runs the smoke tests, the SLO gate, every check of every phase twice in a row and the
    watch window, then makes the release live (retention applies).
  - C(end) rolls back to the live release when told to (the project directory then shows the live
    release again), marks the release of this run failed unless it went live and stays, and releases
    the lock. It never fails on what it could not do; C(errors) says what that was.
  - Every step refreshes the lock while it runs and refuses to act when another run holds it.
  - Runs through its action plugin, which reads the compose files from the stack's C(source) on the
    controller, names the run as the lock's owner and reports a host that became unreachable as a
    failure of the step (so the deploy's rescue can handle it).
options:
  step:
    description: The step to run.
    type: str
    required: true
    choices: [begin, phase, finish, end]
  stack:
    description:
      - The stack (C(vpsops_stack), see C(docs/stack.md)). Holds secrets; never logged or returned.
    type: dict
    required: true
  state_dir:
    description: The stack's state directory on the host. Default C(/var/lib/vpsops/<stack name>).
    type: path
  project_dir:
    description: The project directory on the host. Default C(<state_dir>/project).
    type: path
  owner:
    description: The lock's owner (the action names the run when not given).
    type: str
    required: true
  ttl:
    description:
      - Seconds the lock stays valid after each refresh; refreshed every third of it while a step runs.
      - Between two steps of a host nothing refreshes it, so keep it longer than a host waits for the others
        (the canary waits for every later batch).
    type: int
    default: 1800
  controller:
    description: The controller's name, kept in the lock (set by the action).
    type: str
  pid:
    description: The controller's process id, kept in the lock (set by the action).
    type: int
  identity:
    description:
      - The identity of the controller's run kept in the lock (machine id, boot id, PID namespace, pid, start
        time, nonce), by which a later run proves this one dead (C(begin)); set by the action.
    type: dict
  takeover:
    description: The owner of a lock to take over (C(begin)); set by the action for a dead holder.
    type: str
  contents:
    description: "C({file name: text}) of the compose files (C(begin)); set by the action."
    type: dict
    default: {}
  files:
    description:
      - The files the compose files reference (bind-mount sources, C(env_file), C(configs) and
        C(secrets) files) by path relative to the stack's source, each with its C(content)
        (base64), C(mode) and C(kind) (C(begin)); set by the action from the stack's source on the
        controller. They travel with the release and are put in the project directory before C(up).
    type: dict
    default: {}
  file_refs:
    description:
      - The referenced files each service uses (C(begin)); set by the action. A changed file
        recreates exactly the services that use it.
    type: dict
    default: {}
  file_services:
    description:
      - The services each compose file defines, or null for a file whose services only compose can
        tell (C(include), C(extends) of another file) (C(begin)); set by the action. A phase's
        services are those its files define, so that a service may depend on one of an earlier
        phase.
    type: dict
    default: {}
  release:
    description: The release this run recorded (C(phase), C(finish), C(end)).
    type: str
  live:
    description: The release that was live before the deploy (C(end)).
    type: str
  phase:
    description: The phase to deploy (C(phase)).
    type: str
  since:
    description: Host time the deploy took its lock; a container created after it fails the gate on any restart.
    type: float
  timeout:
    description: Seconds a phase or the final gate may take to become healthy (a phase's own C(timeout) wins).
    type: int
    default: 120
  consecutive:
    description: Successes in a row every check needs in the final gate (C(finish)); a phase advances on its first.
    type: int
    default: 2
  pull:
    description: Image pull policy.
    type: str
    default: missing
    choices: [missing, always, never]
  keep:
    description: Releases kept on the host when the release goes live.
    type: int
    default: 5
  user:
    description: Who deploys, recorded with the release.
    type: str
  git_sha:
    description: The source revision, recorded with the release.
    type: str
  preflight:
    description:
      - The checks of C(begin) before it takes the lock, with the options of M(vpsops.deploy.compose_preflight)
        (C(allow_latest), C(check_ports), C(min_disk_free_mb), C(disk_paths), C(min_memory_mb), C(min_cores)),
        C(compose_min_version) and C(check_host) (false skips the host's Docker, Compose, disk, memory
        and cores). Omit to check nothing.
    type: dict
  gated:
    description: The containers the phases gated (C(finish)).
    type: list
    elements: str
    default: []
  watch:
    description: Seconds of the watch window after the final gate (C(finish)).
    type: float
    default: 0
  smoke_timeout:
    description: Seconds the smoke tests may take (C(finish)).
    type: int
    default: 60
  baseline:
    description: The SLO baseline C(begin) measured (C(finish)).
    type: dict
  unchanged:
    description:
      - The plan of C(begin) found every container of the phase already running the release (C(phase));
        the phase then takes no backup and no C(up), and its gate proves it in one probe round.
    type: bool
    default: false
  changes:
    description:
      - The services of the phase the plan of C(begin) found changed (C(phase)). Given, the phase
        trusts it (the stack is locked since) and does not compare config hashes again; C(up)
        recreates what differs either way. Omitted, the phase compares them itself.
    type: list
    elements: str
  rollback:
    description: Roll back to C(live) (C(end)).
    type: bool
    default: false
  release_lock:
    description:
      - Release the stack's lock once the release is live (C(finish)). For a deploy of this host
        alone, where nothing after the finish step can call for a rollback; the C(end) step then
        has nothing left to do.
    type: bool
    default: false
  reason:
    description: Why the deploy failed, kept with the failed release (C(end)).
    type: str
  host_name:
    description: The host's name in messages.
    type: str
  docker_cli:
    description: The Docker CLI on the host.
    type: path
    default: docker
attributes:
  check_mode:
    support: full
    details: C(begin) plans from the new files in a temporary directory and takes no lock; the other steps change nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
author:
  - vpsops.deploy contributors (@vpsops)
"""

EXAMPLES = r"""
- name: Begin the deploy on the host
  vpsops.deploy.deploy_host:
    step: begin
    stack: "{{ vpsops_stack }}"
  register: begun

- name: Deploy the phase modules
  vpsops.deploy.deploy_host:
    step: phase
    stack: "{{ vpsops_stack }}"
    release: "{{ begun.release }}"
    phase: modules
    since: "{{ begun.started_epoch }}"
"""

RETURN = r"""
release:
  description: The release of this deploy.
  returned: begin, phase, finish
  type: str
live:
  description: The release live before the deploy (C(begin)).
  returned: begin
  type: str
plan:
  description: Per phase its services, the services the release changes and whether it is unchanged (C(begin)).
  returned: begin
  type: list
  elements: dict
phases:
  description: "C({phase: [services]}) of the release (C(begin))."
  returned: begin
  type: dict
owner:
  description: The lock's owner.
  returned: always
  type: str
unchanged:
  description: The phase's containers already ran the release; no backup and no C(up) (C(phase)).
  returned: phase
  type: bool
gated:
  description: The containers the phase gated (C(phase)).
  returned: phase
  type: list
  elements: str
steps:
  description:
    - >-
      The phase's services in the steps they came up in, when one waits for another to be healthy
      (C(depends_on) with C(condition: service_healthy)) and C(up) would have waited for Docker's
      first healthcheck run (C(phase)).
    - Each step's dependencies were proven healthy by their own healthcheck before it.
  returned: phase, when the services came up in steps
  type: list
  elements: list
errors:
  description: What C(end) could not do.
  returned: end
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Docker, DockerError
from ansible_collections.vpsops.deploy.plugins.module_utils._deploy import (
    CheckSpecError,
    DeployError,
    begin,
    deploy_phase,
    end,
    finish,
    slo_baseline,
    secret_file_values,
    stack_secrets,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._probes import rollback_gate
from ansible_collections.vpsops.deploy.plugins.module_utils._releases import LockHeld, ReleaseError, Store


def main():
    module = AnsibleModule(
        argument_spec=dict(
            step=dict(type="str", required=True, choices=["begin", "phase", "finish", "end"]),
            # Not no_log: that would mask every name of the stack in the results. The module masks
            # the stack's secrets itself (stack_secrets), the action keeps the stack out of events.
            stack=dict(type="dict", required=True),
            state_dir=dict(type="path"),
            project_dir=dict(type="path"),
            owner=dict(type="str", required=True),
            ttl=dict(type="int", default=1800),
            controller=dict(type="str"),
            pid=dict(type="int"),
            takeover=dict(type="str"),
            identity=dict(type="dict"),
            contents=dict(type="dict", default={}),
            files=dict(type="dict", default={}),
            file_refs=dict(type="dict", default={}),
            file_services=dict(type="dict", default={}),
            release=dict(type="str"),
            live=dict(type="str"),
            phase=dict(type="str"),
            since=dict(type="float"),
            timeout=dict(type="int", default=120),
            consecutive=dict(type="int", default=2),
            pull=dict(type="str", default="missing", choices=["missing", "always", "never"]),
            keep=dict(type="int", default=5),
            user=dict(type="str"),
            git_sha=dict(type="str"),
            preflight=dict(type="dict"),
            gated=dict(type="list", elements="str", default=[]),
            watch=dict(type="float", default=0),
            smoke_timeout=dict(type="int", default=60),
            baseline=dict(type="dict"),
            rollback=dict(type="bool", default=False),
            release_lock=dict(type="bool", default=False),
            unchanged=dict(type="bool", default=False),
            changes=dict(type="list", elements="str"),
            reason=dict(type="str"),
            host_name=dict(type="str"),
            docker_cli=dict(type="path", default="docker"),
        ),
        supports_check_mode=True,
        required_if=[("step", "phase", ["release", "phase"]), ("step", "finish", ["release"])],
    )
    p = module.params
    stack = p["stack"]
    module.no_log_values.update(stack_secrets(stack))
    module.no_log_values.update(secret_file_values(p["files"]))
    # The secret and env files travel as base64: that form too, as the module's raw output (shown
    # by the connection at -vvv, before the action rewrites the invocation) holds it.
    module.no_log_values.update(spec["content"] for spec in p["files"].values()
                                if isinstance(spec, dict) and spec.get("kind") in ("secret", "env_file")
                                and isinstance(spec.get("content"), str) and len(spec["content"]) >= 8)
    if not 5 <= p["ttl"] <= 7 * 86400:
        module.fail_json(msg="ttl must be between 5 and 604800 seconds, got %d" % p["ttl"])
    if not 1 <= p["timeout"] <= 86400:
        module.fail_json(msg="timeout must be between 1 and 86400 seconds, got %d" % p["timeout"])
    if p["consecutive"] < 1:
        module.fail_json(msg="consecutive must be 1 or more, got %d" % p["consecutive"])
    if p["keep"] < 2:
        module.fail_json(msg="keep must be 2 or more (the live release and the one before it), got %d" % p["keep"])
    if not isinstance(stack.get("name"), str) or not isinstance(stack.get("phases"), list):
        module.fail_json(msg="stack must be vpsops_stack, with a 'name' and a list of 'phases'")
    docker = Docker(p["docker_cli"])
    result = dict(changed=False, owner=p["owner"], step=p["step"])
    try:
        store = Store(stack["name"], p["state_dir"])
        project_dir = p["project_dir"] or os.path.join(store.state_dir, "project")
        if p["step"] == "begin":
            preflight = None
            if p["preflight"] is not None:
                preflight = dict(p["preflight"], host=p["host_name"] or "this host")
            done = begin(store, docker, stack, p["contents"], p["owner"], ttl=p["ttl"], controller=p["controller"],
                         pid=p["pid"], takeover=p["takeover"], identity=p["identity"],
                         project_dir=project_dir, pull=p["pull"],
                         user=p["user"], git_sha=p["git_sha"],
                         preflight=preflight,
                         check_mode=module.check_mode, extra_files=p["files"], file_refs=p["file_refs"],
                         file_services=p["file_services"])
            for warning in done.pop("warnings", []):
                module.warn(warning)
            if stack.get("slo") and done.get("live") and not module.check_mode:
                done["baseline"] = slo_baseline(stack)
        elif module.check_mode:
            done = dict(changed=p["step"] != "end", msg="check mode: the %s step changes nothing" % p["step"])
        elif p["step"] == "phase":
            done = deploy_phase(store, docker, stack, p["release"], p["phase"], p["owner"], ttl=p["ttl"],
                                since=p["since"], timeout=p["timeout"], consecutive=1, pull=p["pull"],
                                project_dir=project_dir, planned_unchanged=p["unchanged"],
                                planned_changes=p["changes"])
        elif p["step"] == "finish":
            done = finish(store, docker, stack, p["release"], p["owner"], ttl=p["ttl"], since=p["since"],
                          gated=p["gated"], timeout=p["timeout"], consecutive=p["consecutive"],
                          watch_seconds=p["watch"], smoke_timeout=p["smoke_timeout"], baseline=p["baseline"],
                          keep=p["keep"], user=p["user"], host=p["host_name"] or "this host",
                          release_lock=p["release_lock"])
        else:
            done = end(store, docker, p["release"], p["owner"], live=p["live"], roll_back=p["rollback"],
                       reason=p["reason"], timeout=p["timeout"], project_dir=project_dir, user=p["user"],
                       gate_fn=rollback_gate(p["docker_cli"]), stack=stack)
    except LockHeld as exc:
        text = str(exc)
        module.fail_json(msg=text if text.startswith("cannot lock") else "cannot lock: %s" % text, lock=exc.lock,
                         **result)
    except DeployError as exc:
        result.update(exc.result)
        module.fail_json(msg=str(exc), **result)
    except CheckSpecError as exc:
        module.fail_json(msg="checks: %s" % exc, **result)
    except (ReleaseError, DockerError) as exc:
        module.fail_json(msg=str(exc), **result)
    except (IOError, OSError) as exc:
        module.fail_json(msg="the %s step failed on the host: %s" % (p["step"], exc), **result)
    for warning in done.pop("warnings", None) or []:
        module.warn(warning)
    result.update(done)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
