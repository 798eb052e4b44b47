# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Health checks as vpsops.deploy.health_wait runs them (plugins/module_utils/_probes.py
    check_argument_spec), and the deploy phases that carry them (PHASES); modules may override the
    description of O(checks) and of O(phases).

    The keys of a check appear twice: under O(checks) and, for the phases a release records, under
    O(phases[].checks). Documentation fragments must be literal strings, so both are written out;
    tests/unit/plugins/doc_fragments/test_checks.py fails when the two differ.
    """

    DOCUMENTATION = r"""
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
          - V(http) requests O(checks[].url) and compares status, body, JSON (O(checks[].json)) and
            numbers in the JSON (O(checks[].json_compare)). Gate a phase on a readiness endpoint
            (V(/readyz)) with an V(http) check; the container's own healthcheck (liveness, V(/healthz))
            is judged by the V(container) checks of the phase.
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
          - V(kafka_consumer) runs the Kafka CLI (C(kafka-consumer-groups --describe)) in
            O(checks[].container) for consumer group O(checks[].group). It is ready when the group has
            active members, is not rebalancing, has a committed offset on every partition that has
            messages, and lags at most O(checks[].max_lag) messages (summed over its partitions, or those
            of O(checks[].topic)); until then it is retried to the deadline.
          - V(container) inspects O(checks[].container) (Engine API, or the Docker CLI).
          - V(log) reads the log of O(checks[].container) since it last started.
          - V(command) runs O(checks[].argv) (never through a shell).
        type: str
        required: true
        choices: [command, container, dlq, http, kafka_consumer, log, nats, nats_consumer, postgres, redis, tcp]
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
      json_compare:
        description:
          - For V(http) checks, numeric comparisons of values of the JSON body; every one must hold.
          - Each item has C(path), dot-separated keys and list indexes such as V(data) or
            V(checks.db.latency_ms) (V(.) is the whole body), and one of C(value) (the number at the
            path) or C(length) (the number of items of the list, object or string at the path). Either
            is a mapping of comparisons (C(gt), C(ge), C(lt), C(le), C(eq), C(ne)) to numbers.
          - "For example V([{path: data, length: {gt: 10}}]) for more than 10 routes in Kong's C(/routes)."
        type: list
        elements: dict
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
      group:
        description: For V(kafka_consumer) checks, the consumer group (required).
        type: str
      topic:
        description: For V(kafka_consumer) checks, count only the partitions of this topic (all of the group's when unset).
        type: str
      max_lag:
        description:
          - For V(kafka_consumer) checks, the most messages the group may lag behind, summed over its
            partitions (required).
        type: int
      bootstrap_server:
        description:
          - For V(kafka_consumer) checks, the brokers as the CLI reaches them from inside
            O(checks[].container) (default V(localhost:9092)).
        type: str
      command_config:
        description:
          - For V(kafka_consumer) checks, the absolute path of a client properties file inside the
            container, passed as C(--command-config). SASL and TLS settings and their passwords belong
            there; they are never put on the command line.
        type: str
      kafka_cli:
        description:
          - For V(kafka_consumer) checks, the consumer-group tool in the container. By default the first
            that runs of V(kafka-consumer-groups.sh) on the PATH, V(/opt/kafka/bin/kafka-consumer-groups.sh)
            (the apache/kafka image) and V(kafka-consumer-groups) (Confluent images).
        type: str
      require_members:
        description:
          - For V(kafka_consumer) checks, whether the group must have active members (default V(true)).
            V(false) judges the committed offsets of a group whose consumers are stopped.
        type: bool
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
          - For V(kafka_consumer) checks, the container that has the Kafka CLI (usually the broker).
          - For V(dlq) checks, the database container to run C(psql) in (C(docker exec));
            without it the host's C(psql) connects to O(checks[].login_host):O(checks[].port).
        type: str
      running_for:
        description:
          - For V(container) checks, seconds the container must have been running.
        type: float
        default: 0
      own_health:
        description:
          - For V(container) checks, while Docker still says C(starting) (it runs the first
            healthcheck one interval after the start), run the container's own healthcheck
            command in it (over the Engine API, never on a command line) and count a zero exit
            as healthy. V(false) waits for Docker's own verdict. C(unhealthy) is never overruled.
        type: bool
        default: true
      since:
        description:
          - For V(container) checks, a time in epoch seconds on the host (such as the start of a
            deploy). A container created after it fails on any restart since its creation, also one
            that came and went before the first probe; an older container fails when its restart
            count grows while it is probed.
        type: float
      pattern:
        description: For V(log) checks, a regular expression a log line must match, for example V(Subscribed to).
        type: str
      fail_pattern:
        description:
          - For V(log) checks, a regular expression that fails the call at once when the log
            matches it (with C(fail_fast), the default), for example V(panic|FATAL).
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
          - Defaults to 5, or 3 for V(tcp) and V(redis), or 30 for V(kafka_consumer) (its CLI starts a JVM).
        type: float
      interval:
        description: Overrides the call's retry interval (C(interval)) for this check.
        type: float
      consecutive:
        description: Overrides the call's C(consecutive) for this check.
        type: int
"""

    # The deploy phases of a stack (the phases of the stack variable, taken as they are) with their
    # checks: _plan.phase_argument_spec. A module may override the description of O(phases).
    PHASES = r"""
options:
  phases:
    description:
      - The deploy phases of the stack, recorded with the release so that
        M(vpsops.deploy.compose_rollback) can roll back one phase and gate on its checks. The
        services of a phase are those its compose files define.
      - The checks are stored in the manifest (mode 0600); keys that hold secrets (passwords,
        headers) are never returned or logged.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The phase name.
        type: str
        required: true
      compose_files:
        description: The compose files of the phase (a subset of O(files)).
        type: list
        elements: str
        required: true
      backup:
        description:
          - Names of the stack's databases the deploy backs up before this phase changes.
          - M(vpsops.deploy.compose_plan) reports them; a release does not record them.
        type: list
        elements: str
        default: []
      migration:
        description:
          - The phase's one-off migration (C(service) is a compose service run with C(compose run --rm)).
          - M(vpsops.deploy.compose_plan) reports whether one runs, and its C(service) must be a service of
            the compose files (profiles included); a release does not record it.
        type: dict
      rollout:
        description:
          - Services the deploy updates without downtime; each must be a service of the phase.
          - M(vpsops.deploy.compose_plan) reports them; a release does not record them.
        type: list
        elements: str
        default: []
      checks:
        description: The phase's health checks (the checks of M(vpsops.deploy.health_wait)).
        type: list
        elements: dict
        default: []
        suboptions:
          type:
            description:
              - V(http) requests O(phases[].checks[].url) and compares status, body, JSON (O(phases[].checks[].json)) and
                numbers in the JSON (O(phases[].checks[].json_compare)). Gate a phase on a readiness endpoint
                (V(/readyz)) with an V(http) check; the container's own healthcheck (liveness, V(/healthz))
                is judged by the V(container) checks of the phase.
              - V(tcp) opens a TCP connection to O(phases[].checks[].host):O(phases[].checks[].port).
              - V(postgres) connects with the connection keys and runs C(SELECT 1).
              - V(redis) sends C(PING) (after C(AUTH) when O(phases[].checks[].password) is set) and expects C(PONG).
              - V(nats) asks the monitoring endpoint O(phases[].checks[].url) for C(/healthz) (JetStream
                enabled) and, with O(phases[].checks[].streams), that those JetStream streams exist.
              - V(nats_consumer) reads consumer O(phases[].checks[].consumer) of stream O(phases[].checks[].stream) from
                the monitoring endpoint O(phases[].checks[].url). It is ready when its pending and ack-pending counts
                are at most O(phases[].checks[].max_pending) and O(phases[].checks[].max_ack_pending); redeliveries
                growing by more than O(phases[].checks[].max_redelivered_growth) during the wait fail fast.
              - V(dlq) counts the failed events in O(phases[].checks[].table) of O(phases[].checks[].db) (in
                O(phases[].checks[].container) or at O(phases[].checks[].login_host)) added since O(phases[].checks[].baseline)
                (or since the first probe); more than O(phases[].checks[].max_new) fails fast.
              - V(kafka_consumer) runs the Kafka CLI (C(kafka-consumer-groups --describe)) in
                O(phases[].checks[].container) for consumer group O(phases[].checks[].group). It is ready when the group has
                active members, is not rebalancing, has a committed offset on every partition that has
                messages, and lags at most O(phases[].checks[].max_lag) messages (summed over its partitions, or those
                of O(phases[].checks[].topic)); until then it is retried to the deadline.
              - V(container) inspects O(phases[].checks[].container) (Engine API, or the Docker CLI).
              - V(log) reads the log of O(phases[].checks[].container) since it last started.
              - V(command) runs O(phases[].checks[].argv) (never through a shell).
            type: str
            required: true
            choices: [command, container, dlq, http, kafka_consumer, log, nats, nats_consumer, postgres, redis, tcp]
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
          json_compare:
            description:
              - For V(http) checks, numeric comparisons of values of the JSON body; every one must hold.
              - Each item has C(path), dot-separated keys and list indexes such as V(data) or
                V(checks.db.latency_ms) (V(.) is the whole body), and one of C(value) (the number at the
                path) or C(length) (the number of items of the list, object or string at the path). Either
                is a mapping of comparisons (C(gt), C(ge), C(lt), C(le), C(eq), C(ne)) to numbers.
              - "For example V([{path: data, length: {gt: 10}}]) for more than 10 routes in Kong's C(/routes)."
            type: list
            elements: dict
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
            description: ACL user for V(redis) checks (Redis 6+), with O(phases[].checks[].password).
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
            description: For V(nats_consumer) checks, the consumer of O(phases[].checks[].stream).
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
          group:
            description: For V(kafka_consumer) checks, the consumer group (required).
            type: str
          topic:
            description: For V(kafka_consumer) checks, count only the partitions of this topic (all of the group's when unset).
            type: str
          max_lag:
            description:
              - For V(kafka_consumer) checks, the most messages the group may lag behind, summed over its
                partitions (required).
            type: int
          bootstrap_server:
            description:
              - For V(kafka_consumer) checks, the brokers as the CLI reaches them from inside
                O(phases[].checks[].container) (default V(localhost:9092)).
            type: str
          command_config:
            description:
              - For V(kafka_consumer) checks, the absolute path of a client properties file inside the
                container, passed as C(--command-config). SASL and TLS settings and their passwords belong
                there; they are never put on the command line.
            type: str
          kafka_cli:
            description:
              - For V(kafka_consumer) checks, the consumer-group tool in the container. By default the first
                that runs of V(kafka-consumer-groups.sh) on the PATH, V(/opt/kafka/bin/kafka-consumer-groups.sh)
                (the apache/kafka image) and V(kafka-consumer-groups) (Confluent images).
            type: str
          require_members:
            description:
              - For V(kafka_consumer) checks, whether the group must have active members (default V(true)).
                V(false) judges the committed offsets of a group whose consumers are stopped.
            type: bool
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
                O(phases[].checks[].db)) or one entry of its C(databases). Without it the first probe takes
                the baseline.
            type: dict
          max_new:
            description: For V(dlq) checks, most failed events allowed since the baseline.
            type: int
            default: 0
          container:
            description:
              - Container name or ID for V(container) and V(log) checks.
              - For V(kafka_consumer) checks, the container that has the Kafka CLI (usually the broker).
              - For V(dlq) checks, the database container to run C(psql) in (C(docker exec));
                without it the host's C(psql) connects to O(phases[].checks[].login_host):O(phases[].checks[].port).
            type: str
          running_for:
            description:
              - For V(container) checks, seconds the container must have been running.
            type: float
            default: 0
          own_health:
            description:
              - For V(container) checks, while Docker still says C(starting) (it runs the first
                healthcheck one interval after the start), run the container's own healthcheck
                command in it (over the Engine API, never on a command line) and count a zero exit
                as healthy. V(false) waits for Docker's own verdict. C(unhealthy) is never overruled.
            type: bool
            default: true
          since:
            description:
              - For V(container) checks, a time in epoch seconds on the host (such as the start of a
                deploy). A container created after it fails on any restart since its creation, also one
                that came and went before the first probe; an older container fails when its restart
                count grows while it is probed.
            type: float
          pattern:
            description: For V(log) checks, a regular expression a log line must match, for example V(Subscribed to).
            type: str
          fail_pattern:
            description:
              - For V(log) checks, a regular expression that fails the call at once when the log
                matches it (with C(fail_fast), the default), for example V(panic|FATAL).
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
              - Defaults to 5, or 3 for V(tcp) and V(redis), or 30 for V(kafka_consumer) (its CLI starts a JVM).
            type: float
          interval:
            description: Overrides the call's retry interval (C(interval)) for this check.
            type: float
          consecutive:
            description: Overrides the call's C(consecutive) for this check.
            type: int
"""
