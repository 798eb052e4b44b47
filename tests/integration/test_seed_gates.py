"""The gates the seeds' runbooks use, through vpsops.deploy.health_wait on the lab host over SSH:

- kafka_consumer (seed 004's cg-deposit-watcher, seed 002): the consumer group's lag read with
  kafka-consumer-groups inside the broker container (`docker exec`);
- json_compare on an http check (seed 001: Kong's `/routes` has more than 10 routes), against a
  real HTTP server on loopback;
- a readiness endpoint (`/readyz`) gated apart from the container's liveness healthcheck
  (`/healthz`), as a phase gates: its checks plus its containers (seed 001's readiness probes).

THE ONE STAND-IN: Kafka cannot run on this machine (no image registry is reachable and no Kafka
image is cached), so the broker is a tiny image built here (busybox, FROM scratch) whose
/opt/kafka/bin/kafka-consumer-groups.sh (apache/kafka's path) logs its arguments and prints what the
test put in its /state directory. What the test puts there is the real tool's output: the table
rendered with the format strings of Kafka 4.1's ConsumerGroupCommand (printOffsets,
printOffsetFormat) and its messages for a group with no active members or none at all. Everything
else is real: Docker, docker exec, the module over SSH, the HTTP servers, the healthcheck.

Project names vpsops-itgates-*, loopback ports 31600-31609.
"""

import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ansible_module, run, wait_until

PREFIX = "vpsops-itgates"
IMAGE = "%s/broker:test" % PREFIX
KAFKA = "%s-kafka" % PREFIX
SERVICE = "%s-svc" % PREFIX
KONG_PORT = 31600
SERVICE_PORT = 31601
GROUP = "cg-deposit-watcher"

DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY kafka-consumer-groups.sh /opt/kafka/bin/kafka-consumer-groups.sh
COPY www /www
CMD ["/bin/busybox", "sleep", "3600"]
"""

# The stand-in of Kafka's tool: argv logged, then the answer the test left for the group.
STAND_IN = """#!/bin/sh
echo "$*" >> /state/argv.log
group=""
previous=""
for arg in "$@"; do
  [ "$previous" = "--group" ] && group="$arg"
  previous="$arg"
done
[ -f "/state/$group.err" ] && cat "/state/$group.err" >&2
if [ -f "/state/$group.out" ]; then
  cat "/state/$group.out"
  # The next answer, when the test left one: the group catches up between two probes.
  [ -f "/state/$group.then" ] && mv "/state/$group.then" "/state/$group.out"
else
  printf "\\nError: Consumer group '%s' does not exist.\\n" "$group"
fi
exit 0
"""


def describe_output(group, rows):
    """stdout of `kafka-consumer-groups --describe --group GROUP` as Kafka 4.1's ConsumerGroupCommand
    prints it: "\\n%-Gs %-Ts %-10s %-15s %-15s %-15s %-Cs %-Hs %s" for the header and each row (G, T,
    C, H the widest group, topic, consumer id and host, at least 15), then a newline.
    rows: (topic, partition, current offset, log end offset, lag, consumer id, host, client id)."""
    widths = [max([15, len(group)])] + [max([15] + [len(r[i]) for r in rows]) for i in (0, 5, 6)]
    line = "\n%%-%ds %%-%ds %%-10s %%-15s %%-15s %%-15s %%-%ds %%-%ds %%s" % tuple(widths)
    out = line % ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST",
                  "CLIENT-ID")
    for row in rows:
        out += line % ((group,) + tuple(row))
    return out + "\n"


MEMBER = ("consumer-cg-deposit-watcher-1-3b9f0c4e-6d0a-4f8e-9a57-2c1d5e7f9b10", "/172.18.0.7",
          "consumer-cg-deposit-watcher-1")
LAGGING = describe_output(GROUP, [("deposits", "0", "1200", "1200", "0") + MEMBER,
                                  ("deposits", "1", "880", "2380", "1500") + MEMBER])
CAUGHT_UP = describe_output(GROUP, [("deposits", "0", "1200", "1200", "0") + MEMBER,
                                    ("deposits", "1", "2330", "2380", "50") + MEMBER])
STOPPED = describe_output(GROUP, [("deposits", "0", "1200", "1200", "0", "-", "-", "-"),
                                  ("deposits", "1", "2380", "2380", "0", "-", "-", "-")])
NO_MEMBERS = "\nConsumer group '%s' has no active members.\n" % GROUP


def health_wait(args):
    rc, result = ansible_module("health_wait", dict(dict(interval=0.5, max_interval=1), **args))
    return rc, result


@pytest.fixture(scope="module")
def broker(lab, tmp_path_factory):
    """The stand-in broker container, its /state a directory of the test."""
    ctx = str(tmp_path_factory.mktemp("broker-image"))
    state = str(tmp_path_factory.mktemp("broker-state"))
    os.chmod(state, 0o777)
    os.makedirs(os.path.join(ctx, "www"))
    shutil.copy2(shutil.which("busybox"), os.path.join(ctx, "busybox"))
    with open(os.path.join(ctx, "kafka-consumer-groups.sh"), "w") as handle:
        handle.write(STAND_IN)
    os.chmod(os.path.join(ctx, "kafka-consumer-groups.sh"), 0o755)
    with open(os.path.join(ctx, "www", "healthz"), "w") as handle:
        handle.write("alive\n")
    with open(os.path.join(ctx, "Dockerfile"), "w") as handle:
        handle.write(DOCKERFILE)
    run(["docker", "build", "-q", "-t", IMAGE, ctx])
    run(["docker", "rm", "-f", KAFKA], check=False)
    run(["docker", "run", "-d", "--name", KAFKA, "-v", "%s:/state" % state, IMAGE])
    yield state
    run(["docker", "rm", "-f", KAFKA, SERVICE], check=False)
    run(["docker", "image", "rm", IMAGE], check=False)


def answer(state, out, err=""):
    """What the stand-in prints for the group from now on (written whole, then renamed into place)."""
    for suffix, text in ((".err", err), (".out", out)):
        path = os.path.join(state, GROUP + suffix)
        with open(path + ".tmp", "w") as handle:
            handle.write(text)
        os.rename(path + ".tmp", path)


def argv_log(state):
    with open(os.path.join(state, "argv.log")) as handle:
        return handle.read().splitlines()


def kafka_check(**keys):
    check = {"name": "deposits", "type": "kafka_consumer", "container": KAFKA, "group": GROUP, "max_lag": 100,
             "bootstrap_server": "kafka:29092", "command_config": "/etc/kafka/admin-client.properties"}
    check.update(keys)
    return check


# --------------------------------------------------------------------------------------------
# kafka_consumer
# --------------------------------------------------------------------------------------------
def test_kafka_consumer_waits_until_the_lag_is_under_the_ceiling(broker):
    answer(broker, LAGGING)
    with open(os.path.join(broker, GROUP + ".then"), "w") as handle:
        handle.write(CAUGHT_UP)
    open(os.path.join(broker, "argv.log"), "w").close()
    rc, result = health_wait({"timeout": 120, "checks": [kafka_check()]})
    assert rc == 0 and result["ready"], result
    check = result["checks"]["deposits"]
    assert check["attempts"] == 2, check
    assert check["timeline"][0]["ok"] is False
    assert "consumer group cg-deposit-watcher lag 1500 on 2 partition(s) (deposits-1: 1500), above max_lag 100" \
        in check["timeline"][0]["detail"]
    assert check["timeline"][-1] == dict(check["timeline"][-1], ok=True)
    assert "lag 50 on 2 partition(s) (deposits-1: 50), max_lag 100" in check["timeline"][-1]["detail"]
    # apache/kafka's path found (the PATH has no kafka-consumer-groups.sh in this image); the client
    # properties travel as a path in the container, the broker as the container reaches it.
    expected = ("--bootstrap-server kafka:29092 --describe --group cg-deposit-watcher --timeout 15000 "
                "--command-config /etc/kafka/admin-client.properties")
    assert argv_log(broker) == [expected, expected]


def test_kafka_consumer_over_the_ceiling_fails_at_the_deadline_naming_group_partitions_and_lag(broker):
    answer(broker, LAGGING)
    rc, result = health_wait({"timeout": 8, "checks": [kafka_check(max_lag=1000, topic="deposits")]})
    assert rc != 0 and not result["ready"]
    assert result["not_ready"] == ["deposits"]
    assert ("deposits (kafka_consumer cg-deposit-watcher on deposits at kafka:29092 in container %s) is not ready "
            "after" % KAFKA) in result["msg"]
    assert "consumer group cg-deposit-watcher lag 1500 on 2 partition(s) of deposits (deposits-1: 1500), " \
           "above max_lag 1000" in result["msg"]


def test_kafka_consumer_group_without_members_or_missing_is_not_ready(broker):
    answer(broker, STOPPED, NO_MEMBERS)
    rc, result = health_wait({"timeout": 8, "checks": [kafka_check(max_lag=0)]})
    assert rc != 0
    assert "consumer group cg-deposit-watcher has no active members (its consumers are not running)" in result["msg"]
    # The stopped group's committed offsets alone, when the stack says so.
    rc, result = health_wait({"timeout": 90, "checks": [kafka_check(max_lag=0, require_members=False)]})
    assert rc == 0, result
    os.remove(os.path.join(broker, GROUP + ".out"))
    rc, result = health_wait({"timeout": 8, "checks": [kafka_check()]})
    assert rc != 0
    assert "consumer group cg-deposit-watcher does not exist (yet) at kafka:29092" in result["msg"]


def test_kafka_consumer_finds_the_confluent_name_and_fails_fast_without_any_cli(broker):
    answer(broker, CAUGHT_UP)
    run(["docker", "exec", KAFKA, "mv", "/opt/kafka/bin/kafka-consumer-groups.sh", "/bin/kafka-consumer-groups"])
    try:
        rc, result = health_wait({"timeout": 90, "checks": [kafka_check()]})
        assert rc == 0, result
        run(["docker", "exec", KAFKA, "rm", "/bin/kafka-consumer-groups"])
        rc, result = health_wait({"timeout": 300, "checks": [kafka_check()]})
        assert rc != 0
        # Failed fast: fatal at its first probe, long before the deadline.
        assert result["checks"]["deposits"]["fatal"] is True and result["checks"]["deposits"]["attempts"] == 1
        assert result["elapsed"] < 300
        assert ("no Kafka CLI in container %s (tried kafka-consumer-groups.sh, /opt/kafka/bin/kafka-consumer-groups.sh, "
                "kafka-consumer-groups)" % KAFKA) in result["msg"]
    finally:
        # The image keeps its file: the next container of the module starts from it again.
        run(["docker", "rm", "-f", KAFKA], check=False)
        run(["docker", "run", "-d", "--name", KAFKA, "-v", "%s:/state" % broker, IMAGE])


# --------------------------------------------------------------------------------------------
# json_compare: Kong's routes
# --------------------------------------------------------------------------------------------
class KongAdmin(BaseHTTPRequestHandler):
    routes = 10

    def do_GET(self):  # noqa: N802 - the http.server API
        if self.path != "/routes":
            self.send_error(404)
            return
        body = json.dumps({"data": [{"id": "route-%d" % i, "paths": ["/api/%d" % i]} for i in range(KongAdmin.routes)],
                           "next": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def kong_admin(lab):
    server = ThreadingHTTPServer(("127.0.0.1", KONG_PORT), KongAdmin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    KongAdmin.routes = 10


def test_json_compare_gates_on_more_than_ten_kong_routes(kong_admin):
    check = {"name": "kong-routes", "type": "http", "url": "http://127.0.0.1:%d/routes" % KONG_PORT,
             "json_compare": [{"path": "data", "length": {"gt": 10}}]}
    rc, result = health_wait({"timeout": 6, "checks": [check]})
    assert rc != 0 and result["not_ready"] == ["kong-routes"]
    assert "HTTP 200 but length of data is 10, expected > 10" in result["msg"]
    KongAdmin.routes = 11
    rc, result = health_wait({"timeout": 90, "checks": [check]})
    assert rc == 0, result
    assert result["checks"]["kong-routes"]["timeline"][-1]["detail"] == "HTTP 200, length of data is 11"


def test_bad_json_compare_is_refused_before_probing(lab):
    rc, result = health_wait({"timeout": 3, "checks": [
        {"name": "kong-routes", "type": "http", "url": "http://127.0.0.1:%d/routes" % KONG_PORT,
         "json_compare": [{"path": "data", "length": {"more_than": 10}}]}]})
    assert rc != 0
    assert "check 'kong-routes': 'json_compare[0]': 'length' has the comparison 'more_than'; use gt, ge, lt, le, eq " \
           "or ne" in result["msg"]


# --------------------------------------------------------------------------------------------
# readiness (/readyz, an http check) gated apart from liveness (/healthz, the container's healthcheck)
# --------------------------------------------------------------------------------------------
@pytest.fixture
def service(broker):
    """A service whose healthcheck is its liveness endpoint /healthz; /readyz answers 404 until the
    test makes the service ready."""
    run(["docker", "rm", "-f", SERVICE], check=False)
    run(["docker", "run", "-d", "--name", SERVICE, "--init", "-p", "127.0.0.1:%d:8080" % SERVICE_PORT,
         "--health-cmd", "wget -q -O /dev/null http://127.0.0.1:8080/healthz", "--health-interval", "1s",
         "--health-retries", "2", IMAGE, "/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"])
    yield SERVICE
    run(["docker", "rm", "-f", SERVICE], check=False)


def test_a_phase_gates_on_readyz_while_the_healthcheck_is_liveness(service):
    readyz = {"name": "svc-ready", "type": "http", "url": "http://127.0.0.1:%d/readyz" % SERVICE_PORT}
    wait_until("the service's liveness healthcheck passes",
               lambda: run(["docker", "inspect", "--format", "{{.State.Health.Status}}", service]).stdout.strip()
               == "healthy", timeout=60)
    # Alive (healthy) but not ready: the phase's gate does not pass.
    rc, result = health_wait({"timeout": 8, "containers": [service], "checks": [readyz]})
    assert rc != 0
    assert result["checks"]["container %s" % service]["ready"] is True
    assert result["not_ready"] == ["svc-ready"]
    assert "svc-ready (http GET http://127.0.0.1:%d/readyz) is not ready" % SERVICE_PORT in result["msg"]
    assert "HTTP 404" in result["msg"]
    # Ready: the same gate passes.
    run(["docker", "exec", service, "sh", "-c", "echo ready > /www/readyz"])
    rc, result = health_wait({"timeout": 90, "containers": [service], "checks": [readyz]})
    assert rc == 0 and result["ready"], result
