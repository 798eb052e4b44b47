# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of the gates the seeds' runbooks use: numeric comparisons in an http check's JSON
(json_compare: Kong's routes > 10) and Kafka consumer-group lag (kafka_consumer: the output of
kafka-consumer-groups --describe, parsed and judged; the docker exec through a replaying runner)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _probes as probes

# --------------------------------------------------------------------------------------------
# json_compare
# --------------------------------------------------------------------------------------------
ROUTES = {"data": [{"name": "r%d" % i} for i in range(12)], "next": None,
          "health": {"db": {"latency_ms": 12.5, "status": "ok"}, "replicas": "3"}}


def compare(items, document=None):
    document = ROUTES if document is None else document
    probe = probes.build_probes([{"type": "http", "name": "kong", "url": "http://127.0.0.1:1/", "json_compare": items}])[0]
    seen = []
    return probes.json_compare_failures(document, probe.json_compare, seen), seen


@pytest.mark.parametrize("items, failures, seen", [
    ([{"path": "data", "length": {"gt": 10}}], [], ["length of data is 12"]),
    ([{"path": "data", "length": {"gt": 12}}], ["length of data is 12, expected > 12"], None),
    ([{"path": "data", "length": {"ge": 12, "lt": 12}}], ["length of data is 12, expected < 12"], None),
    ([{"path": "data", "length": {"gt": 20, "lt": 5}}], ["length of data is 12, expected > 20 and < 5"], None),
    ([{"path": "health.db.latency_ms", "value": {"lt": 250}}], [], ["health.db.latency_ms is 12.5"]),
    ([{"path": "health.db.latency_ms", "value": {"le": 10}}], ["health.db.latency_ms is 12.5, expected <= 10"], None),
    ([{"path": "data.0.name", "length": {"eq": 2}}], [], ["length of data.0.name is 2"]),
    ([{"path": "data.-1.name", "length": {"eq": 3}}], [], ["length of data.-1.name is 3"]),
    ([{"path": ["health", "db"], "length": {"eq": 2}}], [], ["length of health.db is 2"]),
    ([{"path": ".", "length": {"eq": 3}}], [], ["length of . is 3"]),
    ([{"path": "data.12.name", "value": {"gt": 0}}], ["JSON has no data.12"], None),
    ([{"path": "services", "length": {"gt": 0}}], ["JSON has no services"], None),
    ([{"path": "health.db.status", "value": {"gt": 0}}], ['health.db.status is "ok", not a number'], None),
    ([{"path": "health.replicas", "value": {"eq": 3}}], ['health.replicas is "3", not a number'], None),
    ([{"path": "next", "length": {"gt": 0}}], ["next is null, which has no length"], None),
    ([{"path": "data", "length": {"ne": 12}}, {"path": "health.db.latency_ms", "value": {"gt": 100}}],
     ["length of data is 12, expected != 12", "health.db.latency_ms is 12.5, expected > 100"], None),
])
def test_json_compare_judges_numbers_and_lengths(items, failures, seen):
    got, got_seen = compare(items)
    assert got == failures
    if seen is not None:
        assert got_seen == seen


def test_json_compare_counts_a_top_level_list_and_takes_numeric_strings_as_limits():
    assert compare([{"path": ".", "length": {"gt": "2"}}], [1, 2, 3]) == ([], ["length of . is 3"])


@pytest.mark.parametrize("items, message", [
    ("data>10", "check 'kong': 'json_compare' must be a list of comparisons"),
    (["data"], "'json_compare[0]' must be a mapping"),
    ([{"length": {"gt": 10}}], "'json_compare[0]' needs 'path'"),
    ([{"path": "data"}], "'json_compare[0]' needs exactly one of 'value' and 'length'"),
    ([{"path": "data", "value": {"gt": 1}, "length": {"gt": 1}}], "needs exactly one of 'value' and 'length'"),
    ([{"path": "data", "length": 10}], "'json_compare[0]': 'length' must be a mapping of comparisons such as {gt: 10}"),
    ([{"path": "data", "length": {}}], "'length' must be a mapping of comparisons"),
    ([{"path": "data", "length": {">": 10}}], "'length' has the comparison '>'; use gt, ge, lt, le, eq or ne"),
    ([{"path": "a", "value": {"gt": 1}}, {"path": "data", "length": {"gt": "ten"}}],
     "'json_compare[1]': 'length.gt' must be a number, got 'ten'"),
    ([{"path": "data", "length": {"gt": True}}], "'length.gt' must be a number, got True"),
    ([{"path": "data", "lenght": {"gt": 10}}], "'json_compare[0]' has unknown key(s) lenght"),
])
def test_bad_json_compare_is_named(items, message):
    with pytest.raises(probes.CheckSpecError) as err:
        probes.build_probes([{"type": "http", "name": "kong", "url": "http://127.0.0.1:1/", "json_compare": items}])
    assert message in str(err.value)


class Kong(BaseHTTPRequestHandler):
    routes = 10

    def do_GET(self):  # noqa: N802 - the http.server API
        body = json.dumps({"data": [{"id": i} for i in range(Kong.routes)], "next": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def kong():
    server = HTTPServer(("127.0.0.1", 0), Kong)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    Kong.routes = 10


def test_http_check_with_json_compare_waits_for_the_routes(kong):
    check = {"type": "http", "name": "kong-routes", "url": "http://127.0.0.1:%d/routes" % kong.server_port,
             "json_compare": [{"path": "data", "length": {"gt": 10}}]}
    ok, runs, elapsed = probes.wait_for(probes.build_probes([check]), 0.6, interval=0.1, max_interval=0.1)
    assert not ok
    assert runs[0].last_error == "HTTP 200 but length of data is 10, expected > 10"
    Kong.routes = 11
    ok, runs, elapsed = probes.wait_for(probes.build_probes([check]), 2, interval=0.1, max_interval=0.1)
    assert ok and runs[0].last_ok == "HTTP 200, length of data is 11"


# --------------------------------------------------------------------------------------------
# kafka_consumer
# --------------------------------------------------------------------------------------------
def describe_output(group, rows):
    """stdout of `kafka-consumer-groups --describe --group GROUP` as ConsumerGroupCommand prints it
    (Kafka 4.1, tools/src/main/java/org/apache/kafka/tools/consumer/group/ConsumerGroupCommand.java,
    printOffsets and printOffsetFormat): the header and each row through the same format, each
    starting with a newline, the widths of GROUP, TOPIC, CONSUMER-ID and HOST at least 15, then one
    println. rows: (topic, partition, current offset, log end offset, lag, consumer id, host, client id)."""
    widths = [max([15, len(group)])] + [max([15] + [len(r[i]) for r in rows]) for i in (0, 5, 6)]
    line = "\n%%-%ds %%-%ds %%-10s %%-15s %%-15s %%-15s %%-%ds %%-%ds %%s" % tuple(widths)
    out = line % ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST",
                  "CLIENT-ID")
    for row in rows:
        out += line % ((group,) + tuple(row))
    return out + "\n"


MEMBER = ("consumer-cg-deposit-watcher-1-3b9f0c4e-6d0a-4f8e-9a57-2c1d5e7f9b10", "/172.18.0.7",
          "consumer-cg-deposit-watcher-1")
NO_MEMBER = ("-", "-", "-")
CAUGHT_UP = describe_output("cg-deposit-watcher", [("deposits", "0", "1200", "1200", "0") + MEMBER,
                                                   ("deposits", "1", "2380", "2380", "0") + MEMBER,
                                                   ("payouts", "0", "40", "41", "1") + MEMBER])
LAGGING = describe_output("cg-deposit-watcher", [("deposits", "0", "1200", "1200", "0") + MEMBER,
                                                 ("deposits", "1", "880", "2380", "1500") + MEMBER,
                                                 ("payouts", "0", "40", "41", "1") + MEMBER])
STOPPED = describe_output("cg-deposit-watcher", [("deposits", "0", "1200", "1200", "0") + NO_MEMBER,
                                                 ("deposits", "1", "2380", "2380", "0") + NO_MEMBER])
NO_MEMBERS_ERR = "\nConsumer group 'cg-deposit-watcher' has no active members.\n"
REBALANCING_ERR = "\nWarning: Consumer group 'cg-deposit-watcher' is rebalancing.\n"
NEVER_COMMITTED = describe_output("cg-deposit-watcher", [("deposits", "0", "-", "0", "-") + MEMBER,
                                                         ("deposits", "1", "-", "2380", "-") + MEMBER])
FRESH_TOPIC = describe_output("cg-deposit-watcher", [("deposits", "0", "-", "0", "-") + MEMBER])
MISSING = "\nError: Consumer group 'cg-deposit-watcher' does not exist.\n"
MISSING_KAFKA4 = ("\nError: Executing consumer group command failed due to org.apache.kafka.common.errors."
                  "GroupIdNotFoundException: Group cg-deposit-watcher not found.\n")
UNREACHABLE = ("\nError: Executing consumer group command failed due to org.apache.kafka.common.errors."
               "TimeoutException: Timed out waiting for a node assignment. Call: describeGroups\n")
# Kafka 2.0's tool had no GROUP column (its documentation's example).
KAFKA_2_0 = ("TOPIC           PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG             CONSUMER-ID"
             "                                       HOST            CLIENT-ID\n"
             "my-topic        0          2               4               2               "
             "consumer-1-029af89c-873c-4751-a720-cefd41a669d6   /127.0.0.1      consumer-1\n"
             "my-topic        1          2               3               1               "
             "consumer-1-029af89c-873c-4751-a720-cefd41a669d6   /127.0.0.1      consumer-1\n")


def test_parse_consumer_group_reads_every_row():
    seen = probes.parse_consumer_group(LAGGING, "", "cg-deposit-watcher")
    assert seen["table"] and seen["members"] is True and not seen["missing"] and not seen["rebalancing"]
    assert [(r["topic"], r["partition"], r["current"], r["end"], r["lag"]) for r in seen["rows"]] == [
        ("deposits", "0", 1200, 1200, 0), ("deposits", "1", 880, 2380, 1500), ("payouts", "0", 40, 41, 1)]


def test_parse_consumer_group_without_group_column_and_with_blanks_in_the_group_id():
    seen = probes.parse_consumer_group(KAFKA_2_0, "", "my-group")
    assert [(r["partition"], r["lag"]) for r in seen["rows"]] == [("0", 2), ("1", 1)]
    text = describe_output("billing v2", [("invoices", "0", "5", "9", "4") + MEMBER])
    assert [(r["topic"], r["lag"]) for r in probes.parse_consumer_group(text, "", "billing v2")["rows"]] == [
        ("invoices", 4)]


class Replay:
    """A runner that answers `docker exec C PROGRAM ...` from a table {program: (rc, out, err)} and
    records every argv; a program not in the table is missing as Docker 20.10 says it."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv, timeout=None):
        self.calls.append(list(argv))
        assert argv[:3] == ["docker", "exec", "kafka"]
        if argv[3] not in self.answers:
            return 126, "", ('OCI runtime exec failed: exec failed: unable to start container process: exec: "%s": '
                             'executable file not found in $PATH: unknown' % argv[3])
        answer = self.answers[argv[3]]
        return answer() if callable(answer) else answer


def kafka_probe(answers, **keys):
    spec = dict(type="kafka_consumer", container="kafka", group="cg-deposit-watcher", max_lag=100, docker_cli="docker")
    spec.update(keys)
    runner = Replay(answers)
    return probes.build_probes([spec], runner=runner)[0], runner


@pytest.mark.parametrize("out, err, keys, message", [
    (LAGGING, "", {}, "consumer group cg-deposit-watcher lag 1501 on 3 partition(s) (deposits-1: 1500, payouts-0: 1), "
                      "above max_lag 100"),
    (LAGGING, "", {"topic": "deposits", "max_lag": 1000},
     "consumer group cg-deposit-watcher lag 1500 on 2 partition(s) of deposits (deposits-1: 1500), above max_lag 1000"),
    (CAUGHT_UP, "", {"topic": "withdrawals"},
     "consumer group cg-deposit-watcher has no partitions of topic withdrawals (its topics: deposits, payouts)"),
    (STOPPED, NO_MEMBERS_ERR, {}, "consumer group cg-deposit-watcher has no active members (its consumers are not "
                                  "running); lag 0 on 2 partition(s)"),
    ("", NO_MEMBERS_ERR, {}, "consumer group cg-deposit-watcher has no active members and no committed offsets"),
    (CAUGHT_UP, REBALANCING_ERR, {}, "consumer group cg-deposit-watcher is rebalancing; lag 1 on 3 partition(s)"),
    (NEVER_COMMITTED, "", {}, "consumer group cg-deposit-watcher has no committed offset on deposits-1 yet (lag unknown)"),
    (MISSING, "", {}, "consumer group cg-deposit-watcher does not exist (yet) at localhost:9092"),
    (MISSING_KAFKA4, "", {"bootstrap_server": "kafka:29092"},
     "consumer group cg-deposit-watcher does not exist (yet) at kafka:29092"),
    (UNREACHABLE, "", {}, "consumer group cg-deposit-watcher: the Kafka CLI failed: Executing consumer group command "
                          "failed due to org.apache.kafka.common.errors.TimeoutException"),
    ("", "", {}, "consumer group cg-deposit-watcher has no partitions assigned and no committed offsets yet"),
])
def test_kafka_consumer_not_ready_says_why(out, err, keys, message):
    probe, _runner = kafka_probe({"kafka-consumer-groups.sh": (0, out, err)}, **keys)
    with pytest.raises(Exception) as exc:
        probe.probe(10)
    assert not isinstance(exc.value, probes.FatalProbeError)
    assert message in str(exc.value)


@pytest.mark.parametrize("out, err, keys, detail", [
    (CAUGHT_UP, "", {}, "lag 1 on 3 partition(s) (payouts-0: 1), max_lag 100"),
    (LAGGING, "", {"max_lag": 1501}, "lag 1501 on 3 partition(s) (deposits-1: 1500, payouts-0: 1), max_lag 1501"),
    (LAGGING, "", {"topic": "payouts", "max_lag": 1}, "lag 1 on 1 partition(s) of payouts (payouts-0: 1), max_lag 1"),
    (FRESH_TOPIC, "", {"max_lag": 0}, "lag 0 on 1 partition(s), max_lag 0"),
    (STOPPED, NO_MEMBERS_ERR, {"require_members": False, "max_lag": 0}, "lag 0 on 2 partition(s), max_lag 0"),
    (KAFKA_2_0, "", {"group": "my-group"}, "lag 3 on 2 partition(s) (my-topic-0: 2, my-topic-1: 1), max_lag 100"),
])
def test_kafka_consumer_ready(out, err, keys, detail):
    probe, _runner = kafka_probe({"kafka-consumer-groups.sh": (0, out, err)}, **keys)
    assert probe.probe(10) == detail


def test_kafka_consumer_finds_the_cli_of_the_image_once_and_keeps_secrets_off_the_command_line():
    probe, runner = kafka_probe({"kafka-consumer-groups": (0, CAUGHT_UP, "")}, bootstrap_server="kafka:9093",
                                command_config="/etc/kafka/client.properties", request_timeout=8)
    probe.probe(30)
    probe.probe(30)
    assert [call[3] for call in runner.calls] == ["kafka-consumer-groups.sh", "/opt/kafka/bin/kafka-consumer-groups.sh",
                                                  "kafka-consumer-groups", "kafka-consumer-groups"]
    assert runner.calls[-1] == ["docker", "exec", "kafka", "kafka-consumer-groups", "--bootstrap-server", "kafka:9093",
                                "--describe", "--group", "cg-deposit-watcher", "--timeout", "4000",
                                "--command-config", "/etc/kafka/client.properties"]


def test_kafka_consumer_given_cli_is_the_only_one_tried():
    probe, runner = kafka_probe({"/usr/local/kafka/bin/kafka-consumer-groups.sh": (0, CAUGHT_UP, "")},
                                kafka_cli="/usr/local/kafka/bin/kafka-consumer-groups.sh")
    probe.probe(10)
    assert [call[3] for call in runner.calls] == ["/usr/local/kafka/bin/kafka-consumer-groups.sh"]


def test_kafka_consumer_without_the_cli_fails_fast_naming_what_was_tried():
    probe, _runner = kafka_probe({})
    with pytest.raises(probes.FatalProbeError) as exc:
        probe.probe(10)
    assert str(exc.value) == (
        "no Kafka CLI in container kafka (tried kafka-consumer-groups.sh, /opt/kafka/bin/kafka-consumer-groups.sh, "
        "kafka-consumer-groups); set kafka_cli to the path of kafka-consumer-groups.sh in the broker image")


def test_kafka_consumer_container_not_running_is_retried():
    probe, _runner = kafka_probe({"kafka-consumer-groups.sh": (1, "", "Error response from daemon: Container "
                                                                      "0f1e is not running")})
    with pytest.raises(Exception) as exc:
        probe.probe(10)
    assert not isinstance(exc.value, probes.FatalProbeError)
    assert "Container 0f1e is not running" in str(exc.value)


def test_kafka_consumer_gate_waits_until_the_lag_falls_under_the_ceiling():
    answers = iter([(0, LAGGING, ""), (0, LAGGING, ""), (0, CAUGHT_UP, "")])
    probe, runner = kafka_probe({"kafka-consumer-groups.sh": lambda: next(answers)})
    ok, runs, _elapsed = probes.wait_for([probe], 5, interval=0.01, max_interval=0.01)
    assert ok and runs[0].attempts == 3
    assert runs[0].timeline[0]["detail"].endswith("above max_lag 100")


@pytest.mark.parametrize("keys, message", [
    ({"group": None}, "checks[0] (type kafka_consumer) needs 'group'"),
    ({"container": None}, "checks[0] (type kafka_consumer) needs 'container'"),
    ({"max_lag": None}, "checks[0] (type kafka_consumer) needs 'max_lag' (the most messages the group may lag"),
    ({"max_lag": -1}, "'max_lag' must be a whole number 0 or more, got -1"),
    ({"bootstrap_server": "kafka"}, "'bootstrap_server' must be HOST:PORT[,HOST:PORT...]"),
    ({"bootstrap_server": "PLAINTEXT://kafka:9092 "}, "'bootstrap_server' must be HOST:PORT"),
    ({"command_config": "client.properties"}, "'command_config' must be the absolute path of a client properties file"),
    ({"require_members": "yes"}, "'require_members' must be true or false, got 'yes'"),
    ({"topic": ["a", "b"]}, "'topic' must be a topic name"),
])
def test_bad_kafka_consumer_checks_are_named(keys, message):
    spec = dict(type="kafka_consumer", container="kafka", group="g", max_lag=0)
    spec.update(keys)
    with pytest.raises(probes.CheckSpecError) as err:
        probes.build_probes([dict((k, v) for k, v in spec.items() if v is not None)])
    assert message in str(err.value)


def test_kafka_consumer_names_and_describes_itself():
    probe, _runner = kafka_probe({}, topic="deposits")
    assert probe.name == "kafka_consumer cg-deposit-watcher"
    assert probe.describe() == "kafka_consumer cg-deposit-watcher on deposits at localhost:9092 in container kafka"


def test_the_watch_window_gives_a_kafka_consumer_probe_its_request_timeout():
    """A probe of the watch window gets at least the check's request_timeout (30 s here: the tool
    starts a JVM), not the 5 s that suit an HTTP request."""
    probe, runner = kafka_probe({"kafka-consumer-groups.sh": (0, CAUGHT_UP, "")})
    timeouts = []

    def recording(argv, timeout=None):
        timeouts.append(timeout)
        return runner(argv, timeout)

    probe.engine().runner = recording
    ok, failure, _elapsed, made = probes.watch([probe], 0.2, interval=0.05)
    assert ok and failure is None and made[probe.name] >= 1
    assert set(timeouts) == {35}
    assert runner.calls[0][-2:] == ["--timeout", "15000"]


def test_the_health_wait_example_of_these_gates_builds():
    """The module's example of the seed gates is a valid gate (docs that drift from the code fail here)."""
    import ast
    import os

    import yaml

    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "plugins", "modules", "health_wait.py")
    with open(path) as handle:
        tree = ast.parse(handle.read())
    examples = next(yaml.safe_load(node.value.value) for node in tree.body
                    if isinstance(node, ast.Assign) and node.targets[0].id == "EXAMPLES")
    task = next(t for t in examples if t["name"].startswith("Gate on readiness"))["vpsops.deploy.health_wait"]
    built = probes.build_probes(probes.gate_specs(task["checks"], task["containers"]))
    assert [p.type_name for p in built] == ["http", "http", "kafka_consumer", "container"]
    assert built[2].argv("kafka-consumer-groups.sh", 30)[-2:] == ["--command-config", "/etc/kafka/admin.properties"]
