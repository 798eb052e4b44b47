#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: health_wait
short_description: Wait for many health checks at once under one deadline
version_added: 0.1.0
description:
  - Runs every check of a deploy phase concurrently and returns as soon as all are ready, or
    fails at the deadline naming each check that is not ready and its last error.
  - A check counts as ready after O(consecutive) successes in a row (a stability window).
  - With O(fail_fast), a container that exited, was OOM-killed or restarts fails the call at once
    instead of waiting for the deadline.
  - Probes only read; the module never changes anything and runs the probes in check mode too.
author:
  - vpsops.deploy contributors (@vpsops)
attributes:
  check_mode:
    support: full
    details: Probes only read, so they run in check mode as well.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  containers:
    description:
      - Container names or IDs, each checked as a V(container) check (running, healthy where it
        has a healthcheck, fail fast on exit or restart). A short form for a phase's containers.
      - While Docker still says C(starting), the container's own healthcheck command is run in it
        and a zero exit counts as healthy (Docker's first run waits one interval).
    type: list
    elements: str
    default: []
  since:
    description:
      - A time in epoch seconds on the host, such as the start of a deploy. A container of
        O(containers) created after it fails on any restart since its creation, so a crash that
        came and went before the gate's first probe is not missed. Without it, a container fails
        when its restart count grows while it is probed.
    type: float
  timeout:
    description:
      - One deadline in seconds for the whole call, not per check.
    type: float
    default: 60
  interval:
    description:
      - Seconds before a check is retried after a failure. The delay grows by half each failure
        in a row up to O(max_interval).
    type: float
    default: 1
  max_interval:
    description: Cap of the retry delay in seconds.
    type: float
    default: 5
  consecutive:
    description: Successes in a row a check needs before it counts as ready.
    type: int
    default: 1
  fail_fast:
    description:
      - Fail at once when a container exited, was OOM-killed or restarts, instead of waiting for
        the deadline.
    type: bool
    default: true
  watch:
    description:
      - Once every check is ready, keep probing them all for this many seconds (a watch window
        after a cutover). A container that exits or restarts ends the watch at once; any other
        check ends it after O(consecutive) failed probes in a row. Either fails the task.
      - 0 (the default) returns as soon as the checks are ready.
    type: float
    default: 0
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.checks
  - vpsops.deploy.docker
notes:
  - Probes use the Python standard library only; the managed host needs no extra package.
seealso:
  - module: ansible.builtin.uri
  - module: ansible.builtin.wait_for
"""

EXAMPLES = r"""
- name: Wait for the modules phase to be healthy
  vpsops.deploy.health_wait:
    timeout: 90
    consecutive: 2
    checks:
      - name: ar
        type: http
        url: http://127.0.0.1:8086/api/health
        json: {status: ok}
      - name: ar-db
        type: tcp
        port: 5434
      - type: container
        container: platform-ar-1
        running_for: 5

- name: Gate the infrastructure phase, failing at once if a module logs a panic
  vpsops.deploy.health_wait:
    timeout: 120
    checks:
      - name: ar-db
        type: postgres
        port: 5434
        db: ar_db
        login_user: ar_user
        login_password: "{{ vault_ar_db_password }}"
      - name: bus
        type: nats
        url: http://127.0.0.1:8222
        streams: [AR_EVENTS, PAYMENTS_EVENTS]
      - name: cache
        type: redis
        port: 6379
        password: "{{ vault_redis_password }}"
      - name: ar-subscribed
        type: log
        container: platform-ar-1
        pattern: Subscribed to
        fail_pattern: "panic|FATAL"
      - name: ar-consumer-keeps-up
        type: nats_consumer
        url: http://127.0.0.1:8222
        stream: AR_EVENTS
        consumer: ar
        max_pending: 100
        max_redelivered_growth: 10
      - name: no-new-failed-events
        type: dlq
        container: platform-ar-postgres-1
        db: ar_db
        login_user: ar_user
        baseline: "{{ dlq_before }}"
        max_new: 0
      - name: migrations-done
        type: command
        argv: [docker, exec, platform-ar-1, test, -f, /tmp/migrated]
  register: gate

- name: Gate on readiness, Kong's routes and a Kafka consumer group's lag
  vpsops.deploy.health_wait:
    timeout: 180
    containers: [platform-field-management-1]   # liveness: running, its healthcheck healthy
    checks:
      - name: field-management-ready              # readiness, apart from the healthcheck
        type: http
        url: http://127.0.0.1:8100/readyz
      - name: kong-routes
        type: http
        url: http://127.0.0.1:8001/routes
        json_compare:
          - {path: data, length: {gt: 10}}
      - name: deposit-watcher-lag
        type: kafka_consumer
        container: kafka
        group: cg-deposit-watcher
        topic: deposits
        max_lag: 1000
        command_config: /etc/kafka/admin.properties   # SASL settings stay in the container

- name: Show how long each check took
  ansible.builtin.debug:
    msg: "{{ gate.checks | dict2items | map(attribute='value.ready_after') | list }}"
"""

RETURN = r"""
watch:
  description: The watch window, when O(watch) was set and the checks became ready.
  returned: when O(watch) is above 0 and the gate passed
  type: dict
  contains:
    ok:
      description: Whether every check stayed healthy for the whole window.
      type: bool
    seconds:
      description: Seconds watched.
      type: float
    failure:
      description: The check that failed, after how many seconds of the window, and why (null when ok).
      type: dict
    probes:
      description: Probes made per check during the window.
      type: dict
  sample: {"ok": true, "seconds": 30.0, "failure": null, "probes": {"auth": 30}}
ready:
  description: Whether every check became ready before the deadline.
  returned: always
  type: bool
  sample: true
elapsed:
  description: Seconds the call waited.
  returned: always
  type: float
  sample: 4.213
checks:
  description: Per check, keyed by check name.
  returned: always
  type: dict
  contains:
    ready:
      description: Whether the check became ready.
      type: bool
    attempts:
      description: Probes made.
      type: int
    first_success_after:
      description: Seconds from the start to the first success, or null.
      type: float
    ready_after:
      description: Seconds from the start until the check counted as ready, or null.
      type: float
    last_error:
      description: Why the last failed probe failed (null when ready).
      type: str
    fatal:
      description: Whether the check failed fast.
      type: bool
    timeline:
      description: State changes as C({t, ok, detail}), at most 20.
      type: list
      elements: dict
  sample:
    ar:
      ready: true
      attempts: 3
      first_success_after: 2.1
      ready_after: 3.1
      last_error: null
      fatal: false
      timeline: [{t: 0.01, ok: false, detail: "HTTP 503"}, {t: 2.1, ok: true, detail: "HTTP 200"}]
not_ready:
  description: Names of the checks that are not ready.
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._probes import (
    CheckSpecError,
    check_argument_spec,
    run_gate,
    watch,
)


def invocation(params):
    """The arguments as the result's C(invocation) shows them (-vvv): each check with the keys it was
    given or has a default for. The check options of every type apply to each check, so a check
    would otherwise carry some 40 keys, most of them null, and a gate of hundreds of checks would
    return them all to the controller. Secrets are masked like every other value of the result."""
    args = dict((key, value) for key, value in params.items() if value is not None)
    args["checks"] = [dict((key, value) for key, value in check.items() if value is not None)
                      for check in params["checks"] or []]
    return dict(module_args=args)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            checks=dict(type="list", elements="dict", default=[], options=check_argument_spec()),
            containers=dict(type="list", elements="str", default=[]),
            since=dict(type="float"),
            timeout=dict(type="float", default=60),
            interval=dict(type="float", default=1),
            max_interval=dict(type="float", default=5),
            consecutive=dict(type="int", default=1),
            fail_fast=dict(type="bool", default=True),
            watch=dict(type="float", default=0),
            docker_cli=dict(type="path", default="docker"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    invoked = invocation(params)
    if not 0 <= params["watch"] <= 86400:
        module.fail_json(msg="watch must be between 0 and 86400 seconds, got %s" % params["watch"], invocation=invoked)
    for key, low, high in (("timeout", 0.1, 86400), ("interval", 0.01, 3600), ("max_interval", 0.01, 3600)):
        if not low <= params[key] <= high:
            module.fail_json(msg="%s must be between %s and %s seconds, got %s" % (key, low, high, params[key]),
                             invocation=invoked)
    if params["consecutive"] < 1:
        module.fail_json(msg="consecutive must be 1 or more, got %s" % params["consecutive"], invocation=invoked)

    try:
        # Probes run programs (docker, command checks) through _runner.default_runner: argv lists,
        # never a shell, and each bounded by the time left to the deadline, which run_command
        # cannot do.
        gate = run_gate(params["checks"], params["containers"], params["timeout"], params["interval"],
                        params["max_interval"], params["consecutive"], params["since"], params["docker_cli"],
                        params["fail_fast"])
    except CheckSpecError as exc:
        module.fail_json(msg=str(exc), invocation=invoked)
    if gate is None:
        module.fail_json(msg="give at least one check in 'checks' or one container in 'containers'", invocation=invoked)
    result = dict(changed=False, invocation=invoked, **gate.summary())
    if not gate.ok:
        module.fail_json(msg=gate.message, **result)
    probes = gate.probes
    if params["watch"] > 0:
        watched, failure, seconds, made = watch(probes, params["watch"], params["interval"], params["consecutive"])
        result["watch"] = dict(ok=watched, failure=failure, seconds=seconds, probes=made)
        if not watched:
            module.fail_json(msg="Watch window: check %s failed %.1fs into the %ss window: %s"
                             % (failure["check"], failure["after"], params["watch"], failure["error"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
