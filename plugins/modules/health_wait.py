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
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Probes only read, so they run in check mode as well.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
options:
  checks:
    description:
      - The checks. Each has a O(checks[].type), an optional O(checks[].name) (unique; defaults
        to a description of the target) and the keys of its type.
    type: list
    elements: dict
    default: []
    suboptions:
      type:
        description:
          - V(http) requests O(checks[].url) and compares status, body and JSON.
          - V(tcp) opens a TCP connection to O(checks[].host):O(checks[].port).
          - V(postgres) connects with the connection keys and runs C(SELECT 1).
          - V(redis) sends C(PING) (after C(AUTH) when O(checks[].password) is set) and expects C(PONG).
          - V(nats) asks the monitoring endpoint O(checks[].url) for C(/healthz) (JetStream
            enabled) and, with O(checks[].streams), that those JetStream streams exist.
          - V(nats_consumer) reads consumer O(checks[].consumer) of stream O(checks[].stream) from
            the monitoring endpoint O(checks[].url). It is ready when its pending and ack-pending counts
            are at most O(checks[].max_pending) and O(checks[].max_ack_pending); redeliveries
            growing by more than O(checks[].max_redelivered_growth) during the wait fail fast.
          - V(dlq) counts the failed events in O(checks[].table) of O(checks[].db) (in
            O(checks[].container) or at O(checks[].login_host)) added since O(checks[].baseline)
            (or since the first probe); more than O(checks[].max_new) fails fast.
          - V(container) inspects O(checks[].container) with the Docker CLI.
          - V(log) reads the log of O(checks[].container) since it last started.
          - V(command) runs O(checks[].argv) (never through a shell).
        type: str
        required: true
        choices: [command, container, dlq, http, log, nats, nats_consumer, postgres, redis, tcp]
      name:
        description: Name of the check in the result and in messages. Must be unique.
        type: str
      url:
        description:
          - For V(http) checks, the URL. Credentials in the URL are never shown.
          - For V(nats) and V(nats_consumer) checks, the monitoring base URL (default V(http://127.0.0.1:8222)).
        type: str
      method:
        description: HTTP method for V(http) checks.
        type: str
        default: GET
      status:
        description: Accepted HTTP status codes for V(http) checks.
        type: list
        elements: int
        default: [200]
      body:
        description: Regular expression the V(http) response body must match.
        type: str
      json:
        description:
          - "For V(http) checks, a subset the JSON body must contain, for example V({status: ok})."
        type: dict
      headers:
        description: Request headers for V(http) checks. Never shown in results or logs.
        type: dict
      validate_certs:
        description: Verify TLS certificates for V(https) URLs.
        type: bool
        default: true
      host:
        description: Host for V(tcp) and V(redis) checks.
        type: str
        default: 127.0.0.1
      port:
        description:
          - Port for V(tcp) (required), V(redis) (default 6379), V(postgres) and V(dlq) (default 5432) checks.
        type: int
        aliases: [login_port]
      db:
        description: Database for V(postgres) and V(dlq) checks.
        type: str
        aliases: [login_db]
      login_host:
        description: Server for V(postgres) and V(dlq) checks.
        type: str
      login_user:
        description: Role for V(postgres) and V(dlq) checks.
        type: str
      login_password:
        description: Password for V(postgres) and V(dlq) checks; never in argv or output.
        type: str
      ssl_mode:
        description: libpq C(sslmode) for V(postgres) checks.
        type: str
        choices: [allow, disable, prefer, require, verify-ca, verify-full]
      username:
        description: ACL user for V(redis) checks (Redis 6+), with O(checks[].password).
        type: str
      password:
        description: Password for V(redis) checks; never shown.
        type: str
      streams:
        description: For V(nats) checks, JetStream streams that must exist.
        type: list
        elements: str
      jetstream:
        description: For V(nats) checks, require JetStream to be enabled and healthy.
        type: bool
        default: true
      stream:
        description: For V(nats_consumer) checks, the JetStream stream.
        type: str
      consumer:
        description: For V(nats_consumer) checks, the consumer of O(checks[].stream).
        type: str
      account:
        description: For V(nats_consumer) checks, the account of the stream (all accounts when unset).
        type: str
      max_pending:
        description: For V(nats_consumer) checks, most messages not yet delivered (C(num_pending)).
        type: int
      max_ack_pending:
        description: For V(nats_consumer) checks, most messages delivered and not acknowledged.
        type: int
      max_redelivered_growth:
        description:
          - For V(nats_consumer) checks, most redeliveries added during the wait; more fails fast
            (a handler that keeps failing).
        type: int
      table:
        description: For V(dlq) checks, the dead-letter table (default V(failed_events)).
        type: str
      columns:
        description:
          - For V(dlq) checks, column names that differ from the defaults, as for
            M(vpsops.deploy.dlq_report) (only C(id) is used).
        type: dict
      baseline:
        description:
          - For V(dlq) checks, an earlier M(vpsops.deploy.dlq_report) result (its entry for
            O(checks[].db)) or one entry of its C(databases). Without it the first probe takes
            the baseline.
        type: dict
      max_new:
        description: For V(dlq) checks, most failed events allowed since the baseline.
        type: int
        default: 0
      container:
        description:
          - Container name or ID for V(container) and V(log) checks.
          - For V(dlq) checks, the database container to run C(psql) in (C(docker exec));
            without it the host's C(psql) connects to O(checks[].login_host):O(checks[].port).
        type: str
      running_for:
        description:
          - For V(container) checks, seconds the container must have been running.
        type: float
        default: 0
      pattern:
        description: For V(log) checks, a regular expression a log line must match, for example V(Subscribed to).
        type: str
      fail_pattern:
        description:
          - For V(log) checks, a regular expression that fails the call at once when the log
            matches it (with O(fail_fast)), for example V(panic|FATAL).
        type: str
      argv:
        description: For V(command) checks, the program and its arguments.
        type: list
        elements: str
      rc:
        description: For V(command) checks, the expected exit code.
        type: int
        default: 0
      stdout:
        description: For V(command) checks, a regular expression the output must match.
        type: str
      request_timeout:
        description:
          - Seconds one probe attempt may take (bounded by the remaining time to the deadline).
          - Defaults to 5, or 3 for V(tcp) and V(redis).
        type: float
      interval:
        description: Overrides O(interval) for this check.
        type: float
      consecutive:
        description: Overrides O(consecutive) for this check.
        type: int
  containers:
    description:
      - Container names or IDs, each checked as a V(container) check (running, healthy where it
        has a healthcheck, fail fast on exit or restart). A short form for a phase's containers.
    type: list
    elements: str
    default: []
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
extends_documentation_fragment:
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

- name: Show how long each check took
  ansible.builtin.debug:
    msg: "{{ gate.checks | dict2items | map(attribute='value.ready_after') | list }}"
"""

RETURN = r"""
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

from ansible_collections.vpsops.deploy.plugins.module_utils._postgres import postgres_argument_spec
from ansible_collections.vpsops.deploy.plugins.module_utils._probes import (
    CheckSpecError,
    build_probes,
    failure_message,
    probe_types,
    wait_for,
)


def check_options():
    """The keys a check may have. Defaults that differ per type are applied by the probes."""
    options = dict(
        type=dict(type="str", required=True, choices=probe_types()),
        name=dict(type="str"),
        url=dict(type="str"),
        method=dict(type="str", default="GET"),
        status=dict(type="list", elements="int", default=[200]),
        body=dict(type="str"),
        json=dict(type="dict"),
        headers=dict(type="dict", no_log=True),
        validate_certs=dict(type="bool", default=True),
        host=dict(type="str", default="127.0.0.1"),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        streams=dict(type="list", elements="str"),
        jetstream=dict(type="bool", default=True),
        stream=dict(type="str"),
        consumer=dict(type="str"),
        account=dict(type="str"),
        max_pending=dict(type="int"),
        max_ack_pending=dict(type="int"),
        max_redelivered_growth=dict(type="int"),
        table=dict(type="str"),
        columns=dict(type="dict"),
        baseline=dict(type="dict"),
        max_new=dict(type="int", default=0),
        container=dict(type="str"),
        running_for=dict(type="float", default=0),
        pattern=dict(type="str"),
        fail_pattern=dict(type="str"),
        argv=dict(type="list", elements="str"),
        rc=dict(type="int", default=0),
        stdout=dict(type="str"),
        request_timeout=dict(type="float"),
        interval=dict(type="float"),
        consecutive=dict(type="int"),
    )
    # The PostgreSQL connection keys are the collection's shared ones (port serves tcp and redis too).
    for key, spec in postgres_argument_spec().items():
        if key == "connect_timeout":
            continue
        spec = dict(spec)
        spec.pop("default", None)
        options[key] = spec
    return options


def main():
    module = AnsibleModule(
        argument_spec=dict(
            checks=dict(type="list", elements="dict", default=[], options=check_options()),
            containers=dict(type="list", elements="str", default=[]),
            timeout=dict(type="float", default=60),
            interval=dict(type="float", default=1),
            max_interval=dict(type="float", default=5),
            consecutive=dict(type="int", default=1),
            fail_fast=dict(type="bool", default=True),
            docker_cli=dict(type="path", default="docker"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    for key, low, high in (("timeout", 0.1, 86400), ("interval", 0.01, 3600), ("max_interval", 0.01, 3600)):
        if not low <= params[key] <= high:
            module.fail_json(msg="%s must be between %s and %s seconds, got %s" % (key, low, high, params[key]))
    if params["consecutive"] < 1:
        module.fail_json(msg="consecutive must be 1 or more, got %s" % params["consecutive"])

    checks = []
    for spec in params["checks"]:
        spec = dict(spec)
        spec.setdefault("docker_cli", params["docker_cli"])
        checks.append(spec)
    for name in params["containers"]:
        checks.append(dict(type="container", name="container %s" % name, container=name,
                           docker_cli=params["docker_cli"]))
    if not checks:
        module.fail_json(msg="give at least one check in 'checks' or one container in 'containers'")
    try:
        # Probes run programs (docker, command checks) through _probes.default_runner: argv lists,
        # never a shell, and each bounded by the time left to the deadline, which run_command
        # cannot do.
        probes = build_probes(checks)
    except CheckSpecError as exc:
        module.fail_json(msg=str(exc))

    ok, runs, elapsed = wait_for(probes, params["timeout"], params["interval"], params["max_interval"],
                                 params["consecutive"], params["fail_fast"])
    result = dict(
        changed=False,
        ready=ok,
        elapsed=elapsed,
        checks=dict((r.probe.name, r.result()) for r in runs),
        not_ready=[r.probe.name for r in runs if not r.ready],
    )
    if not ok:
        module.fail_json(msg=failure_message(runs, elapsed, params["timeout"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
