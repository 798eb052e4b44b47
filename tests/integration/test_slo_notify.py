"""The SLO gate, the smoke_test role and the notify role against real servers on loopback.

A demo auth container (compose project vpsops-slo, 127.0.0.1:24080) is the healthy release; an
HTTP server thread of this test (127.0.0.1:24081) is the degraded one (errors, latency); another
(127.0.0.1:24090) is the webhook receiver. slo_gate and smoke_test run over SSH on the lab host,
notify from the controller (localhost).
"""

import json
import os
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT, VENV_BIN, ansible_env, ansible_module, http_json, run, wait_until

PROJECT = "vpsops-slo"
AUTH_PORT = 24080
DEGRADED_PORT = 24081
RECEIVER_PORT = 24090
CLOSED_PORT = 24099
INVENTORY = os.path.join(ROOT, "inventories", "lab")
COMPOSE = """
services:
  auth:
    image: vpsops-demo/auth:v1
    init: true
    environment:
      SERVICE_NAME: auth
      SERVICE_ROLE: auth
    ports:
      - "127.0.0.1:%d:8080"
    labels:
      vpsops.lab: slo-test
""" % AUTH_PORT
AUTH_URL = "http://127.0.0.1:%d/api/health" % AUTH_PORT


def degraded_url(path):
    return "http://127.0.0.1:%d%s" % (DEGRADED_PORT, path)


# --------------------------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def auth(lab, tmp_path_factory):
    """The healthy release: the demo auth service in a container of project vpsops-slo."""
    compose_file = tmp_path_factory.mktemp("slo-compose") / "docker-compose.yml"
    compose_file.write_text(COMPOSE)
    argv = ["docker", "compose", "-p", PROJECT, "-f", str(compose_file)]
    run(argv + ["down", "-v", "--remove-orphans", "-t", "2"], check=False)
    try:
        # Its answers, not its healthcheck: on a loaded machine the healthcheck's own Python start
        # can exceed its timeout while the service answers.
        run(argv + ["up", "-d"])
        wait_until("auth answers", lambda: http_json(AUTH_URL)[1]["status"] == "ok", timeout=90)
        yield AUTH_URL
    finally:
        run(argv + ["down", "-v", "--remove-orphans", "-t", "2"], check=False)


class Degraded(BaseHTTPRequestHandler):
    """A release gone bad: /every-fifth-fails answers 500 to one request in five,
    /one-in-twenty-fails to one in twenty (the 5% limit itself), /slow takes 2.5 s, /jitter 5 ms,
    /auth wants a bearer token. Requests are counted per path."""

    protocol_version = "HTTP/1.1"
    counts = {}
    lock = threading.Lock()
    token = "t-" + secrets.token_hex(12)

    def log_message(self, *args):
        return

    def do_GET(self):  # noqa: N802 - http.server API
        with self.lock:
            count = self.counts[self.path] = self.counts.get(self.path, 0) + 1
        status = 200
        if self.path == "/every-fifth-fails" and count % 5 == 0:
            status = 500
        elif self.path == "/one-in-twenty-fails" and count % 20 == 0:
            status = 500
        elif self.path == "/slow":
            time.sleep(2.5)
        elif self.path == "/jitter":
            time.sleep(0.005)
        elif self.path == "/auth":
            status = 200 if self.headers.get("Authorization") == "Bearer " + self.token else 401
        elif self.path not in ("/every-fifth-fails", "/one-in-twenty-fails", "/ok"):
            status = 404
        body = json.dumps({"status": "ok" if status == 200 else "error"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(handler, port):
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def degraded():
    server, thread = serve(Degraded, DEGRADED_PORT)
    try:
        yield Degraded
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class Receiver(BaseHTTPRequestHandler):
    """A Slack-compatible webhook: records each POST and answers `answer`."""

    posts = []
    answer = {"status": 200}

    def log_message(self, *args):
        return

    def do_POST(self):  # noqa: N802 - http.server API
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8")
        self.posts.append({"path": self.path, "content_type": self.headers.get("Content-Type"), "raw": raw})
        body = b"ok" if self.answer["status"] < 300 else b"invalid_token"
        self.send_response(self.answer["status"])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def receiving(port):
    """A Receiver on port while the generator runs (the body of a fixture)."""
    Receiver.posts = []
    Receiver.answer = {"status": 200}
    server, thread = serve(Receiver, port)
    try:
        yield Receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def receiver():
    yield from receiving(RECEIVER_PORT)


# --------------------------------------------------------------------------------------------
# slo_gate
# --------------------------------------------------------------------------------------------
def slo_gate(endpoints, *options, **args):
    args["endpoints"] = endpoints
    return ansible_module("slo_gate", args, *options)


def test_a_healthy_release_passes_against_its_own_baseline(auth):
    rc, before = slo_gate([{"name": "auth", "url": auth}], fail_on_exceeded=False)
    assert rc == 0, before
    stats = before["endpoints"]["auth"]
    assert stats["requests"] == 20 and stats["errors"] == 0 and stats["statuses"] == {"200": 20}
    assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["max_ms"]
    assert before["baseline_used"] is False and before["exceeded"] == [] and before["changed"] is False

    rc, after = slo_gate([{"name": "auth", "url": auth}], baseline=before)
    assert rc == 0, after
    assert after["passed"] and after["baseline_used"] is True and after["exceeded"] == []
    assert after["endpoints"]["auth"]["baseline_p95_ms"] == stats["p95_ms"]


def test_an_error_rate_above_five_percent_fails_the_gate(auth, degraded):
    rc, before = slo_gate([{"name": "auth", "url": auth}], fail_on_exceeded=False)
    assert rc == 0, before
    # The new release answers 500 to one request in five: 4 of 20 (20%).
    degraded.counts.pop("/every-fifth-fails", None)
    rc, after = slo_gate([{"name": "auth", "url": degraded_url("/every-fifth-fails")}], baseline=before)
    assert rc != 0
    assert after["endpoints"]["auth"]["statuses"] == {"200": 16, "500": 4}
    assert after["exceeded"] == ["auth: error rate 20% (4 of 20 requests failed: 4 x HTTP 500) is above the limit 5%"]
    assert after["msg"].startswith("SLO gate failed: auth: error rate 20%")

    # fail_on_exceeded false: the same verdict, reported, and the task succeeds.
    rc, reported = slo_gate([{"name": "auth", "url": degraded_url("/every-fifth-fails")}], baseline=before,
                            fail_on_exceeded=False)
    assert rc == 0, reported
    assert reported["passed"] is False and len(reported["exceeded"]) == 1


def test_one_error_in_twenty_is_the_limit_itself_and_passes(degraded):
    degraded.counts.pop("/one-in-twenty-fails", None)
    rc, result = slo_gate([{"name": "auth", "url": degraded_url("/one-in-twenty-fails")}])
    assert rc == 0, result
    assert result["endpoints"]["auth"]["errors"] == 1 and result["endpoints"]["auth"]["error_rate"] == 0.05
    assert result["exceeded"] == []


def test_connection_errors_count_as_errors(lab):
    rc, result = slo_gate([{"name": "gone", "url": "http://127.0.0.1:%d/api/health" % CLOSED_PORT}], requests=3)
    assert rc != 0
    assert result["endpoints"]["gone"]["errors_by_reason"] == {"connection refused": 3}
    assert result["endpoints"]["gone"]["p95_ms"] is None
    assert "gone: error rate 100% (3 of 3 requests failed: 3 x connection refused)" in result["msg"]


def test_a_p95_above_twice_the_baseline_fails_the_gate(auth, degraded):
    rc, before = slo_gate([{"name": "auth", "url": auth}], fail_on_exceeded=False)
    assert rc == 0, before
    # Every answer of the new release takes 2.5 s: far above twice the container's p95 (a few ms,
    # some hundreds on a loaded machine) and above min_p95_ms (50).
    rc, after = slo_gate([{"name": "auth", "url": degraded_url("/slow")}], baseline=before, requests=4)
    assert rc != 0
    limit = before["endpoints"]["auth"]["p95_ms"] * 2
    p95 = after["endpoints"]["auth"]["p95_ms"]
    assert p95 >= 2500 > limit
    assert after["endpoints"]["auth"]["errors"] == 0
    assert len(after["exceeded"]) == 1
    assert after["exceeded"][0].startswith("auth: p95 latency ")
    assert "(2 x the baseline p95 of" in after["exceeded"][0]
    assert "SLO gate failed: auth: p95 latency" in after["msg"]

    # The same measurement without a baseline judges only the error rate: it passes.
    rc, alone = slo_gate([{"name": "auth", "url": degraded_url("/slow")}], requests=2)
    assert rc == 0 and alone["baseline_used"] is False, alone


def test_a_p95_under_min_p95_ms_is_never_a_regression(degraded):
    # The baseline of a fast endpoint (1 ms); the new one takes at least 5 ms: five times slower,
    # but under min_p95_ms. The floor is set above request_timeout (5 s), so that no answer of a
    # loaded machine can reach it: the test does not depend on timing.
    baseline = {"endpoints": {"api": {"requests": 20, "errors": 0, "error_rate": 0.0, "p50_ms": 0.8,
                                      "p95_ms": 1.0, "max_ms": 1.2, "statuses": {"200": 20}}}}
    rc, result = slo_gate([{"name": "api", "url": degraded_url("/jitter")}], baseline=baseline, min_p95_ms=10000)
    assert rc == 0, result
    assert result["baseline_used"] is True and result["endpoints"]["api"]["p95_ms"] >= 5
    # Without the floor the same change is judged a regression: the floor is what passed it.
    rc, result = slo_gate([{"name": "api", "url": degraded_url("/jitter")}], baseline=baseline, min_p95_ms=0)
    assert rc != 0
    assert result["exceeded"][0].startswith("api: p95 latency ") and "above the limit 2 ms" in result["exceeded"][0]


def test_check_mode_measures_and_headers_stay_secret(degraded):
    degraded.counts.pop("/auth", None)
    endpoints = [{"name": "private", "url": degraded_url("/auth"),
                  "headers": {"Authorization": "Bearer " + degraded.token}}]
    rc, result, proc = ansible_module("slo_gate", {"endpoints": endpoints, "requests": 4}, "--check", "-vvv", raw=True)
    assert rc == 0, result
    assert degraded.counts["/auth"] == 4  # it only reads, so it runs in check mode
    assert result["endpoints"]["private"]["statuses"] == {"200": 4} and result["changed"] is False
    assert degraded.token not in proc.stdout and degraded.token not in proc.stderr


@pytest.mark.parametrize("endpoints, options, message", [
    ([{"name": "auth", "url": AUTH_URL}, {"name": "auth", "url": AUTH_URL}], {},
     "endpoints[1]: the name 'auth' is already used by endpoints[0]; names must be unique"),
    ([{"name": "auth", "url": "ftp://127.0.0.1/health"}], {},
     "endpoints[0] (auth): 'url' must be an http:// or https:// URL, got scheme 'ftp'"),
    ([{"name": "auth", "url": "http://[127.0.0.1/api"}], {}, "endpoints[0] (auth): 'url' is not a valid URL"),
    ([{"name": "auth", "url": AUTH_URL}], {"requests": 1001}, "requests must be between 1 and 1000, got 1001"),
])
def test_bad_options_fail_naming_the_option_before_any_request(degraded, endpoints, options, message):
    before = sum(degraded.counts.values())
    rc, result = slo_gate(endpoints, **options)
    assert rc != 0
    assert message in result["msg"]
    assert sum(degraded.counts.values()) == before


# --------------------------------------------------------------------------------------------
# roles: a playbook per run
# --------------------------------------------------------------------------------------------
def playbook(tmp_path, tasks, extra_vars=None, *options, inventory=INVENTORY, hosts="lab1"):
    path = tmp_path / ("play-%d.yml" % len(list(tmp_path.iterdir())))
    path.write_text(json.dumps([{"name": "Run the role", "hosts": hosts, "gather_facts": False, "tasks": tasks}]))
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", str(inventory), str(path)]
    if extra_vars is not None:
        vars_file = tmp_path / ("vars-%d.json" % len(list(tmp_path.iterdir())))
        vars_file.write_text(json.dumps(extra_vars))
        argv += ["-e", "@%s" % vars_file]
    return run(argv + list(options), check=False, env=ansible_env())


def include(role):
    return {"name": "Include %s" % role, "ansible.builtin.include_role": {"name": "vpsops.deploy.%s" % role}}


def test_smoke_tests_pass_against_the_healthy_release(auth, tmp_path):
    checks = [{"name": "auth-health", "url": auth, "json": {"status": "ok"}},
              {"name": "auth-release", "url": auth, "json": {"release": "v1"}, "body": "instance"}]
    proc = playbook(tmp_path, [include("smoke_test")], {"smoke_test_checks": checks})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "failed=0" in proc.stdout


def test_failed_smoke_tests_are_named(auth, tmp_path):
    checks = [{"name": "auth-health", "url": auth, "json": {"status": "ok"}},
              {"name": "auth-wrong-release", "url": auth, "json": {"release": "v9"}},
              {"name": "auth-missing-page", "url": auth.replace("/api/health", "/api/missing")}]
    proc = playbook(tmp_path, [include("smoke_test")], {"smoke_test_checks": checks, "smoke_test_timeout": 3})
    assert proc.returncode != 0
    out = proc.stdout
    assert "2 of 3 smoke tests failed on lab1 within 3s" in out, out[-3000:]
    assert "auth-wrong-release (HTTP 200 but JSON" in out
    assert "auth-missing-page (HTTP 404 (expected 200)" in out
    assert "auth-health (" not in out


def test_smoke_tests_skip_cleanly_when_there_are_none(lab, tmp_path):
    proc = playbook(tmp_path, [include("smoke_test")], {"smoke_test_checks": []})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "No smoke tests to run on lab1" in proc.stdout


def test_smoke_test_checks_is_required_and_typed(lab, tmp_path):
    proc = playbook(tmp_path, [include("smoke_test")])
    assert proc.returncode != 0
    assert "smoke_test_checks" in proc.stdout
    proc = playbook(tmp_path, [include("smoke_test")], {"smoke_test_checks": [{"url": AUTH_URL}]})
    assert proc.returncode != 0
    assert "missing required arguments: name" in proc.stdout


# --------------------------------------------------------------------------------------------
# notify
# --------------------------------------------------------------------------------------------
@pytest.fixture
def local_inventory(tmp_path):
    """Two inventory hosts, both this machine through the local connection, with the venv's Python."""
    path = tmp_path / "inventory.ini"
    python = os.path.join(VENV_BIN, "python")
    path.write_text("[deploy]\n" + "".join(
        "%s ansible_connection=local ansible_python_interpreter=%s\n" % (name, python) for name in ("web1", "web2")))
    return path


def notify(tmp_path, inventory, *options, **role_vars):
    role_vars.setdefault("notify_stack", "platform")
    role_vars.setdefault("notify_event", "deploy_failed")
    role_vars.setdefault("notify_release", "20261123T120000-ab12cd")
    role_vars.setdefault("notify_message", "phase modules: ar <unhealthy> & rolled back")
    # The URL is a variable like any vault value: from a vars file, never on the command line.
    return playbook(tmp_path, [include("notify")], role_vars, "-vvv", *options, inventory=inventory, hosts="deploy")


def webhook(token, port=RECEIVER_PORT):
    return "http://127.0.0.1:%d/services/T000/B000/%s" % (port, token)


def test_notify_posts_a_slack_compatible_message_once_without_showing_the_url(receiver, local_inventory, tmp_path):
    token = "tok" + secrets.token_hex(16)
    proc = notify(tmp_path, local_inventory, notify_url=webhook(token))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert token not in proc.stdout and token not in proc.stderr
    assert len(receiver.posts) == 1, receiver.posts  # run_once: one message for the play
    post = receiver.posts[0]
    assert post["path"].endswith(token)
    assert post["content_type"].startswith("application/json")
    payload = json.loads(post["raw"])
    assert set(payload) == {"text", "stack", "event", "release", "hosts", "message", "time"}
    assert payload["stack"] == "platform" and payload["event"] == "deploy_failed"
    assert payload["release"] == "20261123T120000-ab12cd"
    assert payload["hosts"] == ["web1", "web2"]
    assert payload["message"] == "phase modules: ar <unhealthy> & rolled back"
    assert payload["text"] == ("platform: deploy failed, release 20261123T120000-ab12cd on web1, web2. "
                               "phase modules: ar &lt;unhealthy&gt; &amp; rolled back")
    assert time.strptime(payload["time"], "%Y-%m-%dT%H:%M:%SZ")


def test_an_undelivered_notification_warns_and_the_play_goes_on(receiver, local_inventory, tmp_path):
    receiver.answer["status"] = 500
    token = "tok" + secrets.token_hex(16)
    proc = notify(tmp_path, local_inventory, notify_url=webhook(token))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert len(receiver.posts) == 1
    assert ("WARNING: the deploy_failed notification of platform to 127.0.0.1 was not delivered (HTTP 500)"
            in " ".join(proc.stdout.split()))
    assert token not in proc.stdout and token not in proc.stderr


@pytest.mark.parametrize("answer, url, problem", [
    (500, "receiver", "HTTP 500"),
    (200, "closed", "no answer: connection refused"),
    (200, "user-info", "HTTP 500"),
])
def test_with_fail_on_error_an_undelivered_notification_fails_without_the_url(
        receiver, local_inventory, tmp_path, answer, url, problem):
    token = "tok" + secrets.token_hex(16)
    receiver.answer["status"] = 500 if url == "user-info" else answer
    target = {"receiver": webhook(token),
              "closed": "http://127.0.0.1:%d/services/%s" % (CLOSED_PORT, token),
              "user-info": "http://hook:%s@127.0.0.1:%d/services/x" % (token, RECEIVER_PORT)}[url]
    proc = notify(tmp_path, local_inventory, notify_url=target, notify_fail_on_error=True)
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert ("The deploy_failed notification of platform to 127.0.0.1 was not delivered (%s), and "
            "notify_fail_on_error is true." % problem) in text, text[-3000:]
    assert token not in proc.stdout and token not in proc.stderr


def test_a_malformed_url_is_refused_without_being_shown(receiver, local_inventory, tmp_path):
    token = "tok" + secrets.token_hex(16)
    proc = notify(tmp_path, local_inventory, notify_url="ftp://%s/hook" % token, notify_fail_on_error=True)
    assert proc.returncode != 0
    assert "not delivered (notify_url is not an http:// or https:// URL)" in " ".join(proc.stdout.split())
    assert token not in proc.stdout and token not in proc.stderr
    assert receiver.posts == []


def test_check_mode_and_an_empty_url_post_nothing(receiver, local_inventory, tmp_path):
    token = "tok" + secrets.token_hex(16)
    proc = notify(tmp_path, local_inventory, "--check", notify_url=webhook(token))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Check mode: would post deploy_failed of platform to 127.0.0.1" in " ".join(proc.stdout.split())
    assert token not in proc.stdout and token not in proc.stderr
    proc = notify(tmp_path, local_inventory, notify_url="")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert receiver.posts == []


def test_closed_port_is_closed():
    """The port the tests use for 'nothing listens here' is free (else they would test nothing)."""
    with socket.socket() as sock:
        sock.settimeout(1)
        assert sock.connect_ex(("127.0.0.1", CLOSED_PORT)) != 0
