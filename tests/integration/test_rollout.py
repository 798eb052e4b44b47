"""compose_rollout on the real lab: auth x2 behind auth-lb (the platform phase of the demo stack).

A steady, bounded request loop through the load balancer proves that a rollout drops no request,
that a release which never becomes healthy leaves the old containers serving, and (the control)
that the loop does see an outage when the upstreams go away.
"""

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import STACK_DIR, ansible_module, run, wait_until

PROJECT = "vpsops-ro"
AUTH_PORT = 23080
URL = "http://127.0.0.1:%d/api/health" % AUTH_PORT
FIGURES = {}
# The demo images' healthchecks start python with a 5 s timeout; on a loaded 2-core machine that alone
# can take longer, and every container of the lab turns unhealthy. A second compose file gives them
# 30 s, so the tests judge the rollout and not the machine's load (and pass `files` in order).
OVERRIDE = """services:
  auth:
    healthcheck: {timeout: 30s}
  auth-lb:
    healthcheck: {timeout: 30s}
"""
FILES = ["docker-compose.platform.yml", "healthcheck.override.yml"]


class Traffic:
    """GET the URL every `interval` seconds in a thread, at most `max_requests` times and for at most
    `max_seconds`; records every outcome."""

    def __init__(self, url=URL, interval=0.02, max_seconds=150, max_requests=6000):
        self.url = url
        self.interval = interval
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.results = []  # (ok, release or error)
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.started = None
        self.ended = None

    def loop(self):
        deadline = time.monotonic() + self.max_seconds
        while not self.halt.is_set() and len(self.results) < self.max_requests and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url, timeout=10) as resp:
                    body = json.loads(resp.read().decode())
                self.results.append((resp.status == 200 and body.get("status") == "ok", body.get("release")))
            except urllib.error.HTTPError as exc:
                self.results.append((False, "HTTP %d" % exc.code))
            except Exception as exc:  # noqa: BLE001 - every failure is a data point
                self.results.append((False, "%s: %s" % (type(exc).__name__, exc)))
            self.halt.wait(self.interval)
        self.ended = time.monotonic()

    def __enter__(self):
        self.started = time.monotonic()
        self.thread.start()
        wait_until("the request loop has answers", lambda: len(self.results) >= 10, timeout=30, interval=0.1)
        return self

    def __exit__(self, *exc):
        self.stop()

    def running(self):
        return self.thread.is_alive()

    def settle(self, more=50):
        """Let `more` requests land after what the test did (the loop's tail)."""
        target = len(self.results) + more
        wait_until("%d more requests" % more, lambda: len(self.results) >= target or not self.running(), timeout=60,
                   interval=0.1)

    def stop(self):
        self.halt.set()
        self.thread.join(20)

    def failures(self):
        return [detail for ok, detail in self.results if not ok]

    def releases(self):
        return [detail for ok, detail in self.results if ok]


class Platform:
    """The platform phase (auth x2 + auth-lb) in its own project, directory and env file."""

    def __init__(self, root):
        self.dir = root
        shutil.copy(os.path.join(STACK_DIR, "docker-compose.platform.yml"), root)
        with open(os.path.join(root, FILES[1]), "w") as handle:
            handle.write(OVERRIDE)
        self.env_file = os.path.join(root, "ro.env")
        self.set_tag("v1")

    def set_tag(self, tag, port=AUTH_PORT):
        with open(self.env_file, "w") as handle:
            handle.write("AUTH_TAG=%s\nAUTH_PORT=%d\n" % (tag, port))

    def compose(self, *args, check=True):
        argv = ["docker", "compose", "-p", PROJECT, "--project-directory", self.dir, "--env-file", self.env_file]
        for name in FILES:
            argv += ["-f", os.path.join(self.dir, name)]
        return run(argv + list(args), check=check, cwd=self.dir)

    def args(self, **extra):
        args = {"project": PROJECT, "project_dir": self.dir, "files": FILES,
                "env_files": ["ro.env"], "services": ["auth"], "timeout": 120}
        args.update(extra)
        return args

    def rollout(self, *options, **extra):
        return ansible_module("compose_rollout", self.args(**extra), *options)

    def containers(self, service=None):
        """{name: (id, image ref, state)} of the project (of one service)."""
        argv = ["docker", "ps", "-aq", "--no-trunc", "--filter", "label=com.docker.compose.project=%s" % PROJECT]
        if service:
            argv += ["--filter", "label=com.docker.compose.service=%s" % service]
        ids = run(argv).stdout.split()
        if not ids:
            return {}
        return dict((item["Name"].lstrip("/"), (item["Id"], item["Config"]["Image"], item["State"]["Status"]))
                    for item in json.loads(run(["docker", "inspect"] + ids).stdout))

    def lb_log(self):
        """The last lines the load balancer wrote (nginx's errors: why it answered 502)."""
        proc = self.compose("logs", "--no-color", "--tail", "40", "auth-lb", check=False)
        return (proc.stdout + proc.stderr)[-4000:]

    def events(self, since, *actions):
        """For each list of actions, [(container id, epoch seconds)] of Docker's events of this
        project's containers with one of those actions since `since`, in order."""
        proc = run(["docker", "events", "--since", "%.3f" % since, "--until", "%.3f" % time.time(),
                    "--filter", "type=container", "--filter", "label=com.docker.compose.project=%s" % PROJECT,
                    "--format", "{{json .}}"])
        found = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        return [[(e["id"], e["timeNano"] / 1e9) for e in found if e.get("status") in wanted] for wanted in actions]

    def serving(self, release):
        """Both auth containers answer through the LB with this release."""
        def check():
            seen = set()
            for _attempt in range(8):
                with urllib.request.urlopen(URL, timeout=5) as resp:
                    body = json.loads(resp.read().decode())
                if body.get("release") != release:
                    return False
                seen.add(body.get("instance"))
            return len(seen) == 2
        wait_until("auth %s serving through the LB" % release, check, timeout=120, interval=0.5)

    def ensure(self, tag):
        """auth runs `tag` (plain compose up, recreating when needed) and the LB serves it."""
        self.set_tag(tag)
        self.compose("up", "-d", "--remove-orphans")
        self.serving(tag.split("-")[0])


@pytest.fixture(scope="module")
def platform(lab, tmp_path_factory):
    plat = Platform(str(tmp_path_factory.mktemp("rollout")))
    plat.compose("down", "-v", "--remove-orphans", "-t", "3", check=False)
    plat.compose("up", "-d")
    plat.serving("v1")
    yield plat
    plat.compose("down", "-v", "--remove-orphans", "-t", "3", check=False)
    leftovers = run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=%s" % PROJECT]).stdout.split()
    assert not leftovers, "containers of %s left behind: %s" % (PROJECT, leftovers)
    if FIGURES:
        print("\ncompose_rollout figures: %s" % json.dumps(FIGURES, sort_keys=True))


@pytest.mark.parametrize("extra, words", [
    ({"services": []}, ["services", "at least one service"]),
    ({"services": ["nope", "auth"]}, ["services", "nope", "not a service", "auth-lb"]),
    ({"timeout": 0}, ["timeout", "1 second or more"]),
    ({"files": ["missing.yml"]}, ["files", "missing.yml", "not a file"]),
], ids=["empty-services", "unknown-service", "timeout", "missing-file"])
def test_bad_input_fails_naming_the_option_and_changes_nothing(platform, extra, words):
    before = platform.containers()
    rc, result = platform.rollout(**extra)
    assert rc != 0 and result.get("failed"), result
    for word in words:
        assert word in result["msg"], result["msg"]
    assert platform.containers() == before


def test_a_service_that_publishes_a_fixed_host_port_is_refused_before_anything_changes(platform):
    platform.ensure("v1")
    before = platform.containers()
    platform.set_tag("v2", port=AUTH_PORT + 1)  # auth-lb's config moves: it would need a rollout
    try:
        rc, result = platform.rollout(services=["auth", "auth-lb"])
    finally:
        platform.set_tag("v1")
    assert rc != 0, result
    assert "auth-lb publishes host port 127.0.0.1:%d" % (AUTH_PORT + 1) in result["msg"], result["msg"]
    # auth comes first but every service is checked before the first one changes
    assert platform.containers() == before


def test_a_service_without_containers_is_started_and_gated(platform):
    platform.ensure("v1")
    platform.compose("rm", "-s", "-f", "auth")
    assert platform.containers("auth") == {}
    rc, result = platform.rollout()
    assert rc == 0, result
    auth = result["services"]["auth"]
    assert result["changed"] and auth["action"] == "start" and auth["old"] == []
    assert len(auth["new"]) == 2 and sorted(auth["new"]) == sorted(platform.containers("auth"))
    platform.serving("v1")


def test_no_change_and_check_mode_change_nothing(platform):
    platform.ensure("v1")
    before = platform.containers()
    rc, result = platform.rollout()
    assert rc == 0 and result["changed"] is False, result
    assert result["services"]["auth"]["action"] == "none"
    assert platform.containers() == before

    platform.set_tag("v2")
    try:
        rc, result = platform.rollout("--check", "--diff")
    finally:
        platform.set_tag("v1")
    assert rc == 0 and result["changed"] is True, result
    auth = result["services"]["auth"]
    assert auth["action"] == "rollout" and auth["new"] == []
    assert sorted(auth["old"]) == sorted(platform.containers("auth"))
    assert auth["image_before"] == "vpsops-demo/auth:v1" and auth["image_after"] == "vpsops-demo/auth:v2"
    assert "vpsops-demo/auth:v2" in result["diff"]["after"]
    assert platform.containers() == before


def test_rollout_v1_to_v2_drops_no_request(platform):
    platform.ensure("v1")
    old = platform.containers("auth")
    lb_before = platform.containers("auth-lb")
    platform.set_tag("v2")
    since = time.time()
    with Traffic() as traffic:
        rc, result = platform.rollout()
        assert traffic.running(), "the request loop hit its bound (%d requests) before the rollout finished: %s" % (
            len(traffic.results), result)
        traffic.settle()
    assert rc == 0, json.dumps(result, indent=1)[-6000:]
    failures = traffic.failures()
    assert not failures, "%d of %d requests failed during the rollout: %s; the LB said: %s" % (
        len(failures), len(traffic.results), failures[:10], platform.lb_log())
    # The old containers were told to stop only after Docker itself had called every new one healthy
    # (a proxy that follows Docker's health, such as Traefik, routes to no container still `starting`).
    healthy, stopping = platform.events(since, ["health_status: healthy"], ["kill", "stop"])
    new_ids = set(platform.containers("auth")[n][0] for n in result["services"]["auth"]["new"])
    old_ids = set(cid for cid, _image, _state in old.values())
    first_stop = min(t for cid, t in stopping if cid in old_ids)
    healthy_at = dict((cid, t) for cid, t in healthy if cid in new_ids)
    assert set(healthy_at) == new_ids, (healthy, new_ids)
    assert max(healthy_at.values()) < first_stop, (healthy_at, first_stop)
    releases = traffic.releases()
    assert releases[0] == "v1" and set(releases[-20:]) == {"v2"}, releases
    auth = result["services"]["auth"]
    assert result["changed"] and auth["action"] == "rollout"
    assert sorted(auth["old"]) == sorted(old)
    now = platform.containers("auth")
    assert sorted(now) == sorted(auth["new"]) and len(now) == 2
    assert not set(now) & set(old)
    assert set(image for _id, image, _state in now.values()) == {"vpsops-demo/auth:v2"}
    assert auth["image_id_after"] == run(["docker", "image", "inspect", "--format", "{{.Id}}",
                                          "vpsops-demo/auth:v2"]).stdout.strip()
    assert platform.containers("auth-lb") == lb_before
    FIGURES["rollout_seconds"] = auth["seconds"]
    FIGURES["rollout_timing"] = auth["timing"]
    FIGURES["rollout_requests"] = len(traffic.results)

    # compose sees nothing to do, and neither does a second rollout
    before = platform.containers()
    proc = platform.compose("up", "-d")
    assert "Recreate" not in proc.stderr + proc.stdout
    assert platform.containers() == before
    rc, result = platform.rollout()
    assert rc == 0 and result["changed"] is False, result
    assert platform.containers() == before


def test_a_release_that_never_becomes_healthy_leaves_the_old_containers_serving(platform):
    platform.ensure("v2")
    before = platform.containers()
    platform.set_tag("v3-unhealthy")
    try:
        with Traffic() as traffic:
            rc, result = platform.rollout(timeout=20)
            assert traffic.running(), "the request loop hit its bound (%d requests) before the rollout finished: %s" % (
                len(traffic.results), result)
            traffic.settle()
    finally:
        platform.set_tag("v2")
    assert rc != 0, result
    msg = result["msg"]
    assert "rollout of service auth failed" in msg and "vpsops-demo/auth:v3-unhealthy" in msg, msg
    auth = result["services"]["auth"]
    assert auth["changed"] is False and auth["new"] == [] and len(auth["rejected"]) == 2
    assert not set(auth["rejected"]) & set(before)
    assert platform.containers() == before, "the service changed: %s" % platform.containers()
    failures = traffic.failures()
    assert not failures, "%d of %d requests failed: %s" % (len(failures), len(traffic.results), failures[:10])
    assert set(traffic.releases()) == {"v2"}
    FIGURES["unhealthy_requests"] = len(traffic.results)
    FIGURES["unhealthy_seconds"] = auth["seconds"]


def test_control_the_request_loop_sees_an_outage_and_a_plain_recreate(platform):
    """Without this the zero-failure asserts above could pass with a loop that never fails."""
    platform.ensure("v2")
    auth = sorted(platform.containers("auth"))
    with Traffic(max_seconds=60) as traffic:
        run(["docker", "stop", "-t", "1"] + auth)
        wait_until("the loop sees the outage", lambda: traffic.failures() or not traffic.running(), timeout=30,
                   interval=0.1)
    assert traffic.failures(), "the request loop saw no failure with every upstream stopped"
    platform.compose("up", "-d")
    platform.serving("v2")

    # A plain recreate of auth (v2 -> v1) under the same loop: its failures and time, for the figures.
    platform.set_tag("v1")
    with Traffic(max_seconds=60) as traffic:
        start = time.monotonic()
        platform.compose("up", "-d", "--wait", "--wait-timeout", "120", "--no-deps", "auth")
        FIGURES["recreate_seconds"] = round(time.monotonic() - start, 3)
        traffic.settle()
    FIGURES["recreate_failed_requests"] = len(traffic.failures())
    FIGURES["recreate_requests"] = len(traffic.results)
    platform.serving("v1")
