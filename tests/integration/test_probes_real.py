"""Every probe type against the real thing: the lab's PostgreSQL, NATS, containers, a Redis server."""

import os
import shutil
import socket
import subprocess
import time

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _probes as probes
from conftest import ROOT, run

LAB = os.path.join(ROOT, "bin", "lab")


def gate(checks, timeout=20, **kwargs):
    kwargs.setdefault("interval", 0.2)
    kwargs.setdefault("max_interval", 1)
    ok, runs, elapsed = probes.wait_for(probes.build_probes(checks), timeout, **kwargs)
    return ok, {r.probe.name: r for r in runs}, elapsed, probes.failure_message(runs, elapsed, timeout)


@pytest.fixture
def containers():
    """Names of throw-away containers to remove after the test."""
    names = []
    yield names
    for name in names:
        run(["docker", "rm", "-f", name], check=False)


def start(containers, name, *args):
    run(["docker", "rm", "-f", name], check=False)
    containers.append(name)
    run(["docker", "run", "-d", "--name", name] + list(args))


# --------------------------------------------------------------------------------------------
# postgres
# --------------------------------------------------------------------------------------------
def test_postgres_ready_with_the_right_password(stack):
    dsn = stack.psql_dsn("ar")
    ok, runs, _elapsed, _msg = gate([{"name": "ar-db", "type": "postgres", "port": dsn["port"], "db": dsn["dbname"],
                                      "login_user": dsn["user"], "login_password": dsn["password"]}])
    assert ok
    assert runs["ar-db"].last_ok == "SELECT 1 ok"


def test_postgres_wrong_password_is_named_but_never_shown(stack):
    dsn = stack.psql_dsn("ar")
    wrong = "not-the-password-" + dsn["password"]
    ok, _runs, _elapsed, msg = gate([{"name": "ar-db", "type": "postgres", "port": dsn["port"],
                                      "db": dsn["dbname"], "login_user": dsn["user"], "login_password": wrong}],
                                    timeout=2)
    assert not ok
    assert "password authentication failed" in msg
    assert "ar_user@127.0.0.1:%d/ar_db" % dsn["port"] in msg
    assert wrong not in msg and dsn["password"] not in msg


# --------------------------------------------------------------------------------------------
# nats
# --------------------------------------------------------------------------------------------
def test_nats_healthz_and_streams(stack):
    base = "http://127.0.0.1:%d" % stack.ports["NATS_MONITOR_PORT"]
    ok, _runs, _elapsed, msg = gate([{"name": "bus", "type": "nats", "url": base,
                                      "streams": ["AR_EVENTS", "PAYMENTS_EVENTS"]}])
    assert ok, msg


def test_nats_missing_stream_is_named(stack):
    base = "http://127.0.0.1:%d" % stack.ports["NATS_MONITOR_PORT"]
    ok, _runs, _elapsed, msg = gate([{"name": "bus", "type": "nats", "url": base,
                                      "streams": ["AR_EVENTS", "INVOICES"]}], timeout=1.5)
    assert not ok
    assert "JetStream stream(s) missing: INVOICES" in msg


def test_nats_unreachable_monitoring_endpoint(lab):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ok, _runs, _elapsed, msg = gate([{"name": "bus", "type": "nats", "url": "http://127.0.0.1:%d" % port}],
                                    timeout=1)
    assert not ok
    assert "monitoring endpoint http://127.0.0.1:%d unreachable" % port in msg


# --------------------------------------------------------------------------------------------
# redis (Debian's redis-server on a loopback port, with a password)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is missing: bin/lab setup installs it")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    password = "redis-" + os.urandom(6).hex()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(workdir), "--requirepass", password],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, password
    proc.terminate()
    proc.wait(10)


def test_redis_ping_with_auth(redis_server):
    port, password = redis_server
    ok, runs, _elapsed, msg = gate([{"name": "cache", "type": "redis", "port": port, "password": password}])
    assert ok, msg
    assert runs["cache"].last_ok == "PONG"


@pytest.mark.parametrize("password, expect", [
    ("wrong-redis-secret", "AUTH refused"),
    (None, "PING answered '-NOAUTH"),
])
def test_redis_refusals_are_reported_without_the_password(redis_server, password, expect):
    port, _real = redis_server
    check = {"name": "cache", "type": "redis", "port": port}
    if password:
        check["password"] = password
    ok, _runs, _elapsed, msg = gate([check], timeout=1)
    assert not ok
    assert expect in msg
    assert "wrong-redis-secret" not in msg


# --------------------------------------------------------------------------------------------
# container
# --------------------------------------------------------------------------------------------
def test_container_becomes_healthy(lab, containers):
    start(containers, "vpsops-pr-healthy", "-e", "SERVICE_ROLE=auth", "vpsops-demo/auth:v1")
    # Docker's own verdict (the gate's own run of the healthcheck is off): starting, then healthy.
    ok, runs, _elapsed, msg = gate([{"name": "c", "type": "container", "container": "vpsops-pr-healthy",
                                     "own_health": False}], timeout=30)
    assert ok, msg
    timeline = runs["c"].timeline
    assert timeline[0]["ok"] is False and "is starting" in timeline[0]["detail"]
    assert timeline[-1]["ok"] is True


def docker_health(name):
    return run(["docker", "inspect", "--format", "{{.State.Health.Status}}", name]).stdout.strip()


def test_container_is_healthy_by_its_own_healthcheck_long_before_dockers_first_interval(lab, containers):
    # Docker runs the first check 60 s after the start; the gate runs the same command at once.
    start(containers, "vpsops-pr-early", "--health-interval", "60s", "-e", "SERVICE_ROLE=auth", "vpsops-demo/auth:v1")
    started = time.monotonic()
    ok, runs, _elapsed, msg = gate([{"name": "c", "type": "container", "container": "vpsops-pr-early"}], timeout=30)
    assert ok, msg
    assert time.monotonic() - started < 20
    assert runs["c"].last_ok == "running (healthy by its own healthcheck, run now)"
    assert docker_health("vpsops-pr-early") == "starting"


def test_container_whose_own_healthcheck_fails_is_not_ready_and_says_why(lab, containers):
    start(containers, "vpsops-pr-early-fail", "--health-interval", "60s", "--health-cmd",
          "echo not-yet-$((1+1)); exit 1", "vpsops-lab/base:bookworm", "sleep", "300")
    ok, runs, _elapsed, msg = gate([{"name": "c", "type": "container", "container": "vpsops-pr-early-fail"}], timeout=3)
    assert not ok and not runs["c"].fatal
    # CMD-SHELL through the container's shell: its output, not its command, is shown.
    assert "container vpsops-pr-early-fail is starting and its healthcheck does not pass yet: not-yet-2" in msg


def test_own_healthcheck_off_waits_for_docker(lab, containers):
    start(containers, "vpsops-pr-early-off", "--health-interval", "60s", "-e", "SERVICE_ROLE=auth", "vpsops-demo/auth:v1")
    ok, _runs, _elapsed, msg = gate([{"name": "c", "type": "container", "container": "vpsops-pr-early-off",
                                      "own_health": False}], timeout=4)
    assert not ok
    assert "container vpsops-pr-early-off is starting" in msg and "its healthcheck" not in msg


def test_container_that_never_becomes_healthy_times_out_with_its_health_output(lab, containers):
    start(containers, "vpsops-pr-unhealthy", "-e", "SERVICE_ROLE=auth", "vpsops-demo/auth:v3-unhealthy")
    ok, _runs, elapsed, msg = gate([{"name": "c", "type": "container", "container": "vpsops-pr-unhealthy"}],
                                   timeout=45)
    assert not ok
    assert elapsed >= 44
    assert "container vpsops-pr-unhealthy is unhealthy" in msg


def test_container_that_exits_after_3_s_fails_fast(lab, containers):
    run([LAB, "build-release", "pr-crash3", "--services", "auth", "--behaviour", "crash_after", "--crash-after", "3"])
    start(containers, "vpsops-pr-crash", "-e", "SERVICE_ROLE=auth", "vpsops-demo/auth:pr-crash3")
    started = time.monotonic()
    ok, runs, _elapsed, msg = gate([{"name": "c", "type": "container", "container": "vpsops-pr-crash",
                                     "running_for": 60},
                                    {"name": "other", "type": "tcp", "port": 1}], timeout=120)
    assert not ok
    assert time.monotonic() - started < 15  # far from the 120 s deadline
    assert runs["c"].fatal and "has exited with exit code 1" in msg
    assert "failed fast" in msg


def test_crash_loop_fails_fast(lab, containers):
    start(containers, "vpsops-pr-loop", "--restart", "always", "vpsops-lab/base:bookworm", "sh", "-c", "sleep 1; exit 2")
    ok, runs, _elapsed, msg = gate([{"name": "c", "type": "container", "container": "vpsops-pr-loop",
                                     "running_for": 30}], timeout=60)
    assert not ok
    assert runs["c"].fatal
    # Caught while docker restarts it, while it is down, or running again with one restart more.
    assert "restarting" in msg or "exited with exit code 2" in msg or "restarted 1 time(s) while it was watched" in msg, msg


# --------------------------------------------------------------------------------------------
# log
# --------------------------------------------------------------------------------------------
def test_log_line_that_comes_late(lab, containers):
    start(containers, "vpsops-pr-late", "vpsops-lab/base:bookworm", "sh", "-c",
          "echo starting; sleep 3; echo 'INFO Subscribed to ar.events.>'; sleep 120")
    ok, runs, _elapsed, msg = gate([{"name": "sub", "type": "log", "container": "vpsops-pr-late",
                                     "pattern": "Subscribed to", "fail_pattern": "panic|FATAL"}], timeout=30)
    assert ok, msg
    assert runs["sub"].ready_after >= 2.5
    assert runs["sub"].last_ok == "INFO Subscribed to ar.events.>"


def test_log_fail_pattern_fails_fast(lab, containers):
    start(containers, "vpsops-pr-panic", "vpsops-lab/base:bookworm", "sh", "-c",
          "echo 'FATAL panic: pool exhausted' >&2; sleep 120")
    ok, runs, elapsed, msg = gate([{"name": "sub", "type": "log", "container": "vpsops-pr-panic",
                                    "pattern": "Subscribed to", "fail_pattern": "panic|FATAL"}], timeout=120)
    assert not ok
    assert elapsed < 20
    assert runs["sub"].fatal
    assert "shows /panic|FATAL/: FATAL panic: pool exhausted" in msg


def test_log_only_counts_the_current_start(lab, containers):
    """A line from before the last restart does not make a restarted container ready."""
    start(containers, "vpsops-pr-restart", "vpsops-lab/base:bookworm", "sh", "-c",
          "if [ -f /tmp/again ]; then echo second start; else touch /tmp/again; echo 'Subscribed to x'; fi; sleep 120")
    assert gate([{"name": "sub", "type": "log", "container": "vpsops-pr-restart", "pattern": "Subscribed to"}])[0]
    time.sleep(1.1)  # docker's --since has one-second granularity
    run(["docker", "restart", "-t", "1", "vpsops-pr-restart"])
    ok, _runs, _elapsed, msg = gate([{"name": "sub", "type": "log", "container": "vpsops-pr-restart",
                                      "pattern": "Subscribed to"}], timeout=2)
    assert not ok
    assert "no line of vpsops-pr-restart matches /Subscribed to/ yet" in msg


# --------------------------------------------------------------------------------------------
# command
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("check, ready, detail", [
    ({"argv": ["true"]}, True, "exited 0"),
    ({"argv": ["false"]}, False, "exited 1 (expected 0)"),
    ({"argv": ["false"], "rc": 1}, True, "exited 1"),
    ({"argv": ["docker", "compose", "version"], "stdout": "Docker Compose version v2"}, True, "exited 0"),
    ({"argv": ["echo", "migrations: pending"], "stdout": "migrations: done"}, False,
     "stdout does not match /migrations: done/"),
    ({"argv": ["/nonexistent/tool"]}, False, "exited 127"),
    ({"argv": ["sh", "-c", "echo $HOME; exit 3"], "rc": 3, "stdout": "^/"}, True, "exited 3"),
])
def test_command_probe(lab, check, ready, detail):
    ok, runs, _elapsed, msg = gate([dict(check, name="cmd", type="command")], timeout=1.5)
    assert ok is ready, msg
    assert detail in (runs["cmd"].last_ok if ready else msg)


def test_command_probe_is_bounded_by_the_deadline(lab):
    started = time.monotonic()
    ok, _runs, _elapsed, _msg = gate([{"name": "cmd", "type": "command", "argv": ["sleep", "30"]}], timeout=1)
    assert not ok
    assert time.monotonic() - started < 5
