# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of the probe engine: parsing, judging recorded docker output, and the wait loop."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _probes as probes
from ansible_collections.vpsops.deploy.plugins.module_utils._secrets import redact_url

# `docker inspect --format '{{json .State}}'` as recorded from the lab's Docker 20.10.
STATE_HEALTHY = json.loads(
    '{"Status":"running","Running":true,"Paused":false,"Restarting":false,"OOMKilled":false,"Dead":false,'
    '"Pid":19544,"ExitCode":0,"Error":"","StartedAt":"2026-11-23T13:49:36.798831171Z",'
    '"FinishedAt":"0001-01-01T00:00:00Z","Health":{"Status":"healthy","FailingStreak":0,"Log":['
    '{"Start":"2026-11-23T13:55:38.092196785Z","End":"2026-11-23T13:55:38.441834861Z","ExitCode":0,"Output":""}]}}')
STATE_STARTING = json.loads(
    '{"Status":"running","Running":true,"Paused":false,"Restarting":false,"OOMKilled":false,"Dead":false,'
    '"Pid":27509,"ExitCode":0,"Error":"","StartedAt":"2026-11-23T13:55:59.518705897Z",'
    '"FinishedAt":"0001-01-01T00:00:00Z","Health":{"Status":"starting","FailingStreak":0,"Log":[]}}')
STATE_EXITED = json.loads(
    '{"Status":"exited","Running":false,"Paused":false,"Restarting":false,"OOMKilled":false,"Dead":false,'
    '"Pid":0,"ExitCode":3,"Error":"","StartedAt":"2026-11-23T13:55:58.953022331Z",'
    '"FinishedAt":"2026-11-23T13:55:58.956170822Z"}')
STARTED_AT = probes.parse_docker_time(STATE_HEALTHY["StartedAt"])


class Tracker:
    restarts_seen = None


@pytest.mark.parametrize("actual, expected, result", [
    ({"status": "ok", "version": "v1"}, {"status": "ok"}, True),
    ({"status": "degraded"}, {"status": "ok"}, False),
    ({"checks": {"db": "ok", "bus": "ok"}}, {"checks": {"db": "ok"}}, True),
    ({"checks": {"db": "down"}}, {"checks": {"db": "ok"}}, False),
    ({"items": [1, 2]}, {"items": [1, 2]}, True),
    ({"items": [1, 2, 3]}, {"items": [1, 2]}, False),
    (["status", "ok"], {"status": "ok"}, False),
    ({"count": 1}, {"count": True}, True),  # Python equality: JSON 1 == true, as in Ansible's own comparisons
])
def test_json_contains(actual, expected, result):
    assert probes.json_contains(actual, expected) is result


@pytest.mark.parametrize("url, shown", [
    ("http://127.0.0.1:8080/api/health", "http://127.0.0.1:8080/api/health"),
    ("http://admin:s3cret@127.0.0.1:8080/x?y=1", "http://***@127.0.0.1:8080/x?y=1"),
    ("https://token@example.invalid/", "https://***@example.invalid/"),
])
def test_redact_url_drops_credentials(url, shown):
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


@pytest.mark.parametrize("checks, message", [
    ([], "non-empty list"),
    ("http://x", "non-empty list"),
    (["http://x"], "checks[0] must be a dict"),
    ([{"type": "smtp"}],
     "'type' must be one of command, container, dlq, http, kafka_consumer, log, nats, nats_consumer, postgres, redis, tcp, "
     "got 'smtp'"),
    ([{"type": "http"}], "checks[0] (type http) needs 'url'"),
    ([{"type": "http", "name": "api", "url": "ftp://x/"}], "check 'api': 'url' must be an http:// or https:// URL"),
    ([{"type": "http", "url": "http:///nohost"}], "'url' must be an http:// or https:// URL with a host"),
    ([{"type": "http", "url": "127.0.0.1:8080/api/health"}], "'url' must be an http:// or https:// URL"),
    ([{"type": "http", "url": "http://a/", "body": "(unclosed"}], "'body' is not a valid regular expression"),
    ([{"type": "tcp", "port": 70000}], "'port' must be a TCP port 1-65535, got 70000"),
    ([{"type": "tcp", "port": "web"}], "'port' must be a TCP port 1-65535, got 'web'"),
    ([{"type": "tcp"}], "checks[0] (type tcp) needs 'port'"),
    ([{"type": "container"}], "needs 'container'"),
    ([{"type": "tcp", "port": 1, "name": "a"}, {"type": "tcp", "port": 2, "name": "a"}], "the name 'a' is used by another check"),
    ([{"type": "tcp", "port": 1, "request_timeout": 0}], "checks[0]: 'request_timeout' must be a positive number of seconds, got 0"),
    ([{"type": "tcp", "port": 1, "interval": -1}], "'interval' must be a positive number of seconds, got -1"),
    ([{"type": "tcp", "port": 1, "consecutive": 0}], "'consecutive' must be 1 or more, got 0"),
    ([{"type": "container", "container": "c", "running_for": -5}], "'running_for' must be 0 or more seconds, got -5"),
    ([{"type": "redis", "port": 0}], "'port' must be a TCP port 1-65535, got 0"),
    ([{"type": "postgres", "port": 99999}], "'port' must be a TCP port 1-65535, got 99999"),
    ([{"type": "nats", "url": "127.0.0.1:8222"}], "'url' must be the http:// monitoring base URL of NATS"),
    ([{"type": "nats", "streams": "AR_EVENTS"}], "'streams' must be a list of stream names"),
    ([{"type": "log", "container": "c"}], "(type log) needs 'pattern'"),
    ([{"type": "log", "pattern": "x"}], "(type log) needs 'container'"),
    ([{"type": "log", "container": "c", "pattern": "ok", "fail_pattern": "*panic"}],
     "'fail_pattern' is not a valid regular expression"),
    ([{"type": "command", "argv": "curl -f http://x"}], "'argv' must be a non-empty list of strings (no shell)"),
    ([{"type": "command", "argv": []}], "'argv' must be a non-empty list of strings"),
    ([{"type": "command", "argv": ["true"], "stdout": "[a-"}], "'stdout' is not a valid regular expression"),
    ([{"type": "nats_consumer", "consumer": "ar"}], "checks[0] (type nats_consumer) needs 'stream'"),
    ([{"type": "nats_consumer", "stream": "AR_EVENTS"}], "checks[0] (type nats_consumer) needs 'consumer'"),
    ([{"type": "nats_consumer", "stream": "S", "consumer": "c", "url": "nats://x:4222"}],
     "'url' must be the http:// monitoring base URL of NATS"),
    ([{"type": "nats_consumer", "stream": "S", "consumer": "c", "max_pending": -1}],
     "'max_pending' must be a whole number 0 or more, got -1"),
    ([{"type": "nats_consumer", "stream": "S", "consumer": "c", "max_redelivered_growth": "lots"}],
     "'max_redelivered_growth' must be a whole number 0 or more, got 'lots'"),
    ([{"type": "dlq"}], "checks[0] (type dlq) needs 'db'"),
    ([{"type": "dlq", "db": "ar_db", "name": "ar-dlq", "table": "failed_events;--"}],
     "check 'ar-dlq': 'table' must be a table or column name"),
    ([{"type": "dlq", "db": "ar_db", "columns": {"id": "row id"}}], "'columns.id' must be a table or column name"),
    ([{"type": "dlq", "db": "ar_db", "max_new": -2}], "'max_new' must be a whole number 0 or more, got -2"),
    ([{"type": "dlq", "db": "ar_db", "port": 0}], "'port' must be a TCP port 1-65535, got 0"),
])
def test_bad_checks_are_named_in_the_error(checks, message):
    with pytest.raises(probes.CheckSpecError) as err:
        probes.build_probes(checks)
    assert message in str(err.value)


def test_bad_url_credentials_never_reach_the_error():
    with pytest.raises(probes.CheckSpecError) as err:
        probes.build_probes([{"type": "http", "url": "ftp://user:hunter2@host/"}])
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("state, restarts, running_for, expect", [
    (STATE_HEALTHY, 0, 0, "running (healthy)"),
    (STATE_HEALTHY, 0, 10, "running (healthy)"),
])
def test_container_ready_states(state, restarts, running_for, expect):
    assert probes.check_container_state("c", state, restarts, running_for, Tracker(), now=STARTED_AT + 60) == expect


def test_container_starting_is_not_ready_yet():
    with pytest.raises(Exception) as err:
        probes.check_container_state("c", STATE_STARTING, 0, 0, Tracker())
    assert not isinstance(err.value, probes.FatalProbeError)
    assert "is starting" in str(err.value)


def test_container_starting_is_healthy_when_its_own_healthcheck_passes_now():
    calls = []

    def own():
        calls.append(1)
        return True, "ok"

    assert probes.check_container_state("c", STATE_STARTING, 0, 0, Tracker(), own_health=own) == \
        "running (healthy by its own healthcheck, run now)"
    assert calls == [1]


def test_container_starting_stays_not_ready_while_its_own_healthcheck_fails():
    with pytest.raises(Exception) as err:
        probes.check_container_state("c", STATE_STARTING, 0, 0, Tracker(), own_health=lambda: (False, "HTTP 503"))
    assert not isinstance(err.value, probes.FatalProbeError)
    assert "container c is starting and its healthcheck does not pass yet: HTTP 503" in str(err.value)


def test_container_starting_waits_for_docker_when_its_own_healthcheck_cannot_run():
    with pytest.raises(Exception) as err:
        probes.check_container_state("c", STATE_STARTING, 0, 0, Tracker(), own_health=lambda: None)
    assert "container c is starting" in str(err.value)


def test_an_unhealthy_container_is_never_overruled_by_its_own_healthcheck():
    calls = []
    unhealthy = dict(STATE_STARTING, Health={"Status": "unhealthy", "Log": [{"Output": "down"}]})
    with pytest.raises(Exception) as err:
        probes.check_container_state("c", unhealthy, 0, 0, Tracker(), own_health=lambda: calls.append(1) or (True, ""))
    assert "container c is unhealthy: down" in str(err.value)
    assert calls == []


class StartingEngine:
    """A Docker wrapper whose container is running, Docker's first healthcheck not run yet."""

    def __init__(self, state=None):
        self.state = dict(state or STATE_STARTING)
        self.own_runs = 0

    def container_state(self, name, timeout=None):
        return self.state, 0, self.state["StartedAt"]

    def own_healthcheck(self, name, timeout=None):
        self.own_runs += 1
        return True, "ok"


def container_probe(engine):
    probe = probes.build_probes([{"type": "container", "container": "web-1"}])[0]
    probe.client = engine
    return probe


def gate_once(probe):
    ok, _runs, _elapsed = probes.wait_for([probe], 5, interval=0.05, max_interval=0.05)
    return ok, probe


def test_a_start_proven_by_its_own_healthcheck_is_not_checked_again_by_the_next_gate():
    engine = StartingEngine()
    ok, first = gate_once(container_probe(engine))
    assert ok and engine.own_runs == 1
    proven = probes.proven_starts(probes.GateResult(True, [], 0.1, [first], 5))
    assert proven == {"web-1": STATE_STARTING["StartedAt"]}

    second = container_probe(engine)
    probes.vouch_for(proven)([second])
    assert second.probe(5) == "running (healthy by its own healthcheck, passed for this start just before)"
    assert engine.own_runs == 1


def test_another_start_of_the_container_runs_its_own_healthcheck_again():
    engine = StartingEngine()
    probe = container_probe(engine)
    probes.vouch_for({"web-1": "2026-11-23T13:50:00.000000000Z"})([probe])
    assert probe.probe(5) == "running (healthy by its own healthcheck, run now)"
    assert engine.own_runs == 1


def test_a_vouched_start_that_docker_finds_unhealthy_fails():
    engine = StartingEngine(dict(STATE_STARTING, Health={"Status": "unhealthy", "Log": [{"Output": "down"}]}))
    probe = container_probe(engine)
    probes.vouch_for({"web-1": STATE_STARTING["StartedAt"]})([probe])
    with pytest.raises(Exception, match="container web-1 is unhealthy: down"):
        probe.probe(5)
    assert probes.proven_starts(None) == {}


def test_container_running_for_not_reached():
    with pytest.raises(Exception) as err:
        probes.check_container_state("c", STATE_HEALTHY, 0, 30, Tracker(), now=STARTED_AT + 5)
    assert "running for 5.0s of the 30.0s required" in str(err.value)


@pytest.mark.parametrize("state, restarts, seen, message", [
    (STATE_EXITED, 0, None, "has exited with exit code 3"),
    (dict(STATE_HEALTHY, OOMKilled=True, ExitCode=137), 0, None, "OOM-killed"),
    (dict(STATE_HEALTHY, Status="restarting", Restarting=True), 4, None, "is restarting (restart count 4"),
    (STATE_HEALTHY, 3, 2, "restarted 1 time(s) while it was watched"),
])
def test_container_fatal_states_fail_fast(state, restarts, seen, message):
    tracker = Tracker()
    tracker.restarts_seen = seen
    with pytest.raises(probes.FatalProbeError) as err:
        probes.check_container_state("c", state, restarts, 0, tracker)
    assert message in str(err.value)


@pytest.mark.parametrize("created, restarts, fatal", [
    (STARTED_AT - 5, 1, True),     # created by the deploy, crashed once before the first probe
    (STARTED_AT - 5, 0, False),    # created by the deploy, never restarted
    (STARTED_AT - 3600, 2, False),  # older than the deploy: its earlier restarts are not the deploy's
])
def test_container_restarts_count_from_since_for_containers_created_after_it(created, restarts, fatal):
    since = STARTED_AT - 10
    if fatal:
        with pytest.raises(probes.FatalProbeError) as err:
            probes.check_container_state("c", STATE_HEALTHY, restarts, 0, Tracker(), created=created, since=since)
        assert "restarted 1 time(s) since it was created" in str(err.value)
    else:
        tracker = Tracker()
        assert probes.check_container_state("c", STATE_HEALTHY, restarts, 0, tracker, created=created,
                                            since=since) == "running (healthy)"
        # ... and one more restart while it is probed fails it.
        with pytest.raises(probes.FatalProbeError, match="restarted 1 time"):
            probes.check_container_state("c", STATE_HEALTHY, restarts + 1, 0, tracker, created=created, since=since)


def test_gate_specs_pass_since_to_the_container_checks_only():
    specs = probes.gate_specs([{"type": "tcp", "port": 1}], ["a"], since=12.5)
    assert "since" not in specs[0] and specs[1]["since"] == 12.5
    with pytest.raises(probes.CheckSpecError, match="'since' must be a time in epoch seconds, got 'soon'"):
        probes.build_probes([{"type": "container", "container": "a", "since": "soon"}])


@pytest.mark.parametrize("value, expected", [
    ("0001-01-01T00:00:00Z", None),
    ("", None),
    ("2026-11-23T13:49:36.798831171Z", 1795441776.798831),
    ("2026-11-23T13:49:36Z", 1795441776.0),
])
def test_parse_docker_time(value, expected):
    result = probes.parse_docker_time(value)
    if expected is None:
        assert result is None
    else:
        assert abs(result - expected) < 1e-6


# --------------------------------------------------------------------------------------------
# http and tcp probes against real sockets on loopback
# --------------------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    routes = {
        "/ok": (200, '{"status": "ok", "release": "v1"}'),
        "/degraded": (200, '{"status": "degraded"}'),
        "/down": (503, '{"status": "unavailable"}'),
        "/text": (200, "Server listening"),
    }

    def log_message(self, *args):
        return

    flips = {"count": 0}

    def do_GET(self):  # noqa: N802
        status, body = self.routes.get(self.path, (404, "missing"))
        if self.path == "/slow":
            time.sleep(1.5)
            status, body = 200, '{"status": "ok"}'
        if self.path == "/flip":
            self.flips["count"] += 1
            status, body = (503, '{"status": "starting"}') if self.flips["count"] <= 2 else (200, '{"status": "ok"}')
        if self.path == "/auth" and self.headers.get("Authorization") == "Bearer t0k":
            status, body = 200, "{}"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def http_base():
    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % server.server_port
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("spec, ok, detail", [
    ({"url": "/ok", "json": {"status": "ok"}}, True, "HTTP 200"),
    ({"url": "/degraded", "json": {"status": "ok"}}, False, 'does not contain {"status": "ok"}'),
    ({"url": "/down"}, False, "HTTP 503 (expected 200)"),
    ({"url": "/down", "status": [200, 503]}, True, "HTTP 503"),
    ({"url": "/text", "body": "listening$"}, True, "HTTP 200"),
    ({"url": "/text", "body": "^ready"}, False, "body does not match '^ready'"),
    ({"url": "/text", "json": {"a": 1}}, False, "body is not JSON"),
    ({"url": "/auth", "headers": {"Authorization": "Bearer t0k"}}, True, "HTTP 200"),
    ({"url": "/auth"}, False, "HTTP 404"),
])
def test_http_probe(http_base, spec, ok, detail):
    spec = dict(spec, type="http", url=http_base + spec["url"])
    probe = probes.build_probes([spec])[0]
    if ok:
        assert probe.probe(5) == detail
    else:
        with pytest.raises(Exception) as err:
            probe.probe(5)
        assert detail in str(err.value)


def test_http_slow_body_is_bounded_by_the_request_timeout(http_base):
    probe = probes.build_probes([{"type": "http", "url": http_base + "/slow", "request_timeout": 0.3}])[0]
    started = time.monotonic()
    with pytest.raises(Exception) as err:
        probe.probe(5)
    assert time.monotonic() - started < 1.2
    assert "timed out" in str(err.value)


def test_http_503_then_200_becomes_ready(http_base):
    Handler.flips["count"] = 0
    ok, runs, _elapsed = probes.wait_for(
        probes.build_probes([{"type": "http", "name": "flip", "url": http_base + "/flip", "json": {"status": "ok"}}]),
        timeout=10, interval=0.05)
    assert ok
    assert runs[0].attempts == 3
    assert [t["ok"] for t in runs[0].timeline] == [False, True]
    assert "HTTP 503" in runs[0].timeline[0]["detail"]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_http_probe_connection_refused():
    probe = probes.build_probes([{"type": "http", "url": "http://127.0.0.1:%d/" % free_port()}])[0]
    with pytest.raises(Exception) as err:
        probe.probe(2)
    assert "request failed" in str(err.value)


def test_tcp_probe(http_base):
    port = int(http_base.rsplit(":", 1)[1])
    assert probes.build_probes([{"type": "tcp", "port": port}])[0].probe(2) == "connected"
    with pytest.raises(OSError):
        probes.build_probes([{"type": "tcp", "port": free_port()}])[0].probe(2)


# --------------------------------------------------------------------------------------------
# The wait engine, with scripted probes (the engine's logic, independent of any target)
# --------------------------------------------------------------------------------------------
class Scripted(probes.Probe):
    """Answers from a script: True = success, False = failure, 'fatal' = fail fast."""

    type_name = "scripted"

    def __init__(self, name, script, **spec):
        probes.Probe.__init__(self, dict(spec, name=name), 0)
        self.script = list(script)
        self.calls = 0

    def probe(self, timeout):
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if step == "fatal":
            raise probes.FatalProbeError("%s exited with code 1" % self.name)
        if step == "slow":
            time.sleep(timeout)
            raise Exception("timed out")
        if not step:
            raise Exception("not yet (call %d)" % self.calls)
        return "fine"


def test_all_ready_returns_as_soon_as_the_slowest_is_ready():
    fast = Scripted("fast", [True])
    slow = Scripted("slow", [False, False, True])
    ok, runs, elapsed = probes.wait_for([fast, slow], timeout=10, interval=0.05)
    assert ok
    assert [r.ready for r in runs] == [True, True]
    assert runs[1].attempts == 3
    assert elapsed < 5
    assert runs[1].timeline[0]["ok"] is False and runs[1].timeline[-1]["ok"] is True


def test_consecutive_successes_reset_on_failure():
    flappy = Scripted("flappy", [True, False, True, True, True])
    ok, runs, _elapsed = probes.wait_for([flappy], timeout=10, interval=0.01, consecutive=3)
    assert ok
    assert runs[0].attempts == 5
    assert runs[0].first_success is not None


def test_per_check_consecutive_override():
    check = Scripted("c", [True, True, True], consecutive=1)
    ok, runs, _elapsed = probes.wait_for([check], timeout=10, interval=0.01, consecutive=3)
    assert ok and runs[0].attempts == 1


def test_deadline_fails_with_every_not_ready_check_named():
    good = Scripted("good", [True])
    never = Scripted("never", [False])
    ok, runs, elapsed = probes.wait_for([good, never], timeout=0.5, interval=0.05, max_interval=0.1)
    assert not ok
    assert elapsed < 5
    msg = probes.failure_message(runs, elapsed, 0.5)
    assert "1 of 2 checks not ready" in msg
    assert "never (scripted) is not ready after" in msg
    assert "not yet" in msg
    assert "good" not in msg.split(".", 1)[1]


def test_partial_stability_is_reported():
    check = Scripted("c", [True])
    ok, runs, elapsed = probes.wait_for([check], timeout=0.3, interval=0.02, consecutive=1000)
    assert not ok
    assert "successes in a row it needs" in probes.failure_message(runs, elapsed, 0.3)


def test_fail_fast_stops_the_others_at_once():
    fatal = Scripted("crashy", [False, "fatal"])
    waiting = Scripted("waiting", [False])
    ok, runs, elapsed = probes.wait_for([fatal, waiting], timeout=30, interval=0.05)
    assert not ok
    assert elapsed < 5  # far below the 30 s deadline
    assert runs[0].fatal == "crashy exited with code 1"
    assert "failed fast" in probes.failure_message(runs, elapsed, 30)


def test_without_fail_fast_a_fatal_check_is_retried_until_the_deadline():
    fatal = Scripted("crashy", ["fatal", "fatal", True])
    ok, runs, _elapsed = probes.wait_for([fatal], timeout=10, interval=0.01, fail_fast=False)
    assert ok and runs[0].attempts == 3


def test_backoff_is_capped():
    never = Scripted("never", [False])
    _ok, runs, _elapsed = probes.wait_for([never], timeout=1.0, interval=0.01, max_interval=0.05)
    # capped at 50 ms, about 20 or more attempts fit in a second; uncapped growth would give ~12
    assert runs[0].attempts >= 15


def test_a_probe_cannot_outlive_the_deadline():
    slow = Scripted("slow", ["slow"])
    started = time.monotonic()
    ok, _runs, _elapsed = probes.wait_for([slow], timeout=0.5, interval=0.01)
    assert not ok
    assert time.monotonic() - started < 3


def test_registry_lists_the_types():
    assert set(["http", "tcp", "container", "nats_consumer", "dlq"]) <= set(probes.probe_types())


def test_dlq_check_takes_its_baseline_from_a_dlq_report_result():
    report = {"databases": {"ar_db": {"total": 7, "max_id": 41}, "payments_db": {"total": 1, "max_id": 3}}}
    (probe,) = probes.build_probes([{"type": "dlq", "db": "ar_db", "container": "ar-pg", "baseline": report}])
    assert probe.baseline == {"max_id": 41, "total": 7}
    (probe,) = probes.build_probes([{"type": "dlq", "db": "ar_db", "baseline": {"total": 2, "max_id": 9}}])
    assert probe.baseline == {"max_id": 9, "total": 2}
    (probe,) = probes.build_probes([{"type": "dlq", "db": "ar_db"}])
    assert probe.baseline is None and probe.name == "dlq ar_db"
    assert probe.describe() == "dlq failed_events in postgres@127.0.0.1:5432/ar_db"


# --------------------------------------------------------------------------------------------
# The watch window after a passed gate
# --------------------------------------------------------------------------------------------
def test_watch_passes_when_every_check_stays_healthy_for_the_window():
    steady = Scripted("steady", [True])
    ok, failure, elapsed, made = probes.watch([steady], seconds=0.3, interval=0.05)
    assert ok and failure is None
    assert elapsed >= 0.3
    assert made["steady"] >= 3


def test_watch_ends_at_the_first_fatal_probe_naming_the_check():
    crashing = Scripted("app", [True, True, "fatal"])
    steady = Scripted("db", [True])
    ok, failure, elapsed, _made = probes.watch([crashing, steady], seconds=30, interval=0.02)
    assert not ok
    assert failure["check"] == "app" and "exited" in failure["error"]
    assert elapsed < 10


def test_watch_tolerates_fewer_failures_in_a_row_than_asked():
    flappy = Scripted("flappy", [True, False, True, False, True])
    ok, failure, _elapsed, _made = probes.watch([flappy], seconds=0.4, interval=0.02, failures_in_a_row=2)
    assert ok and failure is None
    broken = Scripted("broken", [True, False, False])
    ok, failure, _elapsed, _made = probes.watch([broken], seconds=30, interval=0.02, failures_in_a_row=2)
    assert not ok and failure["check"] == "broken"
