"""compose_rollout's logic without Docker: options, the compose model, the plan, and the order of the
steps against a small in-memory Docker that answers with documents recorded from the lab's Docker."""

import copy
import json

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _rollout as ro
from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Compose, Docker, parse_config_hashes

# `docker inspect` of a container of the demo's auth service (Docker 20.10, Compose 2.40.3), trimmed.
RECORDED_INSPECT = {
    "Id": "67e42a87e27e675abf0869cb8a9fc66998e36f13a324cbdeb8738bbeed60ff4d",
    "Created": "2026-11-23T19:39:37.217400943Z",
    "Name": "/vpsops-ro-rec-auth-1",
    "RestartCount": 0,
    "Image": "sha256:5add23142aa52e2f4b4c75c2a9531fbbfbbf61a2ae22e8df53e043c368a56b38",
    "State": {"Status": "running", "Running": True, "Paused": False, "Restarting": False, "OOMKilled": False,
              "Dead": False, "Pid": 7704, "ExitCode": 0, "Error": "", "StartedAt": "2026-11-23T19:39:40.157812106Z",
              "FinishedAt": "0001-01-01T00:00:00Z", "Health": {"Status": "starting", "FailingStreak": 0, "Log": []}},
    "Config": {
        "Image": "vpsops-demo/auth:v1",
        "Labels": {
            "com.docker.compose.config-hash": "ea84b47d70e97dfe0aa3ed3cc8ea3f75bebf581ee476500f0217a218d264b5b0",
            "com.docker.compose.container-number": "1",
            "com.docker.compose.image": "sha256:5add23142aa52e2f4b4c75c2a9531fbbfbbf61a2ae22e8df53e043c368a56b38",
            "com.docker.compose.oneoff": "False",
            "com.docker.compose.project": "vpsops-ro-rec",
            "com.docker.compose.service": "auth",
            "com.docker.compose.version": "2.40.3",
        },
        "Healthcheck": {"Test": ["CMD", "python3", "/app/demo_service.py", "--healthcheck"],
                        "Interval": 3000000000, "Timeout": 5000000000, "Retries": 3},
        "StopTimeout": None,
        "StopSignal": None,
    },
}
# `docker compose config --format json` services of the lab's platform phase
AUTH = {"command": None, "deploy": {"replicas": 2, "resources": {}, "placement": {}}, "entrypoint": None,
        "environment": {"SERVICE_NAME": "auth", "SERVICE_ROLE": "auth"}, "image": "vpsops-demo/auth:v1",
        "init": True, "labels": {"vpsops.lab": "demo"}, "networks": {"default": None}, "restart": "unless-stopped"}
AUTH_LB = {"command": None, "entrypoint": None, "image": "vpsops-demo/lb:v1", "init": True,
           "labels": {"vpsops.lab": "demo"}, "networks": {"default": None},
           "ports": [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 80, "published": "23090",
                      "protocol": "tcp"}], "restart": "unless-stopped"}
HASH_TEXT = ("auth ea84b47d70e97dfe0aa3ed3cc8ea3f75bebf581ee476500f0217a218d264b5b0\n"
             "auth-lb afb890e07dc15bd1ac1109c6e6ce4cf19126e7bbda83cb7ca1c509983250e718\n")


# ------------------------------------------------------------------------------------------------
# Pure functions
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    ({"services": []}, ["services", "at least one"]),
    ({"services": None}, ["services", "at least one"]),
    ({"services": ["auth", ""]}, ["services", "non-empty strings"]),
    ({"services": ["auth"], "timeout": 0}, ["timeout", "1 second or more"]),
    ({"services": ["auth"], "drain": -1}, ["drain", "0 seconds or more"]),
    ({"services": ["auth"], "wait_without_healthcheck": -0.5}, ["wait_without_healthcheck"]),
    ({"services": ["auth"], "pull": "sometimes"}, ["pull", "always, missing, never"]),
])
def test_check_options_names_the_bad_option(kwargs, words):
    with pytest.raises(ro.RolloutError) as info:
        ro.check_options(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_check_options_keeps_the_order_and_drops_repeats():
    assert ro.check_options(["b", "a", "b"]) == ["b", "a"]


@pytest.mark.parametrize("value, seconds", [
    ("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("1.5s", 1.5), ("2h", 7200.0), (5, 5.0), ("7", 7.0),
    ("1h1m1s", 3661.0), ("250us", 0.00025),
])
def test_parse_duration(value, seconds):
    assert ro.parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "abc", "10x", "s", "10s5", -1, "1m 30s"])
def test_parse_duration_refuses_what_is_not_a_duration(value):
    with pytest.raises(ValueError):
        ro.parse_duration(value)


@pytest.mark.parametrize("model, replicas", [
    (AUTH, 2), (AUTH_LB, 1), ({"scale": 3}, 3), ({"deploy": {"replicas": 0}}, 0), ({"deploy": {}}, 1),
])
def test_desired_replicas(model, replicas):
    assert ro.desired_replicas(model) == replicas


@pytest.mark.parametrize("model, words", [
    (AUTH, None),
    (AUTH_LB, ["auth-lb publishes host port 127.0.0.1:23090", "proxy"]),
    ({"ports": [{"target": 80, "published": "8080"}]}, ["host port 8080"]),
    ({"ports": [{"target": 80, "published": "8000-8010"}]}, None),
    ({"ports": [{"target": 80}]}, None),
    ({"ports": ["127.0.0.1:8080:80"]}, ["host port 127.0.0.1:8080"]),
    ({"container_name": "auth"}, ["container_name auth"]),
])
def test_unscalable_reason(model, words):
    reason = ro.unscalable_reason("auth-lb" if model is AUTH_LB else "auth", model)
    if words is None:
        assert reason is None
    else:
        for word in words:
            assert word in reason


@pytest.mark.parametrize("model, containers, seconds", [
    ({"stop_grace_period": "30s"}, [{"stop_timeout": 5}], 30),
    ({"stop_grace_period": "1.2s"}, [], 2),
    ({}, [{"stop_timeout": 5}, {"stop_timeout": 12}], 12),
    ({}, [{"stop_timeout": None}], ro.DEFAULT_STOP_TIMEOUT),
])
def test_stop_timeout(model, containers, seconds):
    assert ro.stop_timeout(model, containers) == seconds


def test_container_info_from_a_recorded_inspect():
    info = ro.container_info(RECORDED_INSPECT)
    assert info["name"] == "vpsops-ro-rec-auth-1" and info["service"] == "auth" and info["number"] == 1
    assert info["state"] == "running" and info["health"] == "starting" and info["healthcheck"] is True
    assert info["config_hash"].startswith("ea84b47d") and info["image"] == "vpsops-demo/auth:v1"
    assert info["image_id"].startswith("sha256:5add") and info["oneoff"] is False and info["stop_timeout"] is None


def test_a_container_whose_healthcheck_is_disabled_has_none():
    doc = copy.deepcopy(RECORDED_INSPECT)
    doc["State"].pop("Health")
    doc["Config"]["Healthcheck"] = {"Test": ["NONE"]}
    assert ro.container_info(doc)["healthcheck"] is False


def test_parse_config_hashes_of_recorded_output():
    assert parse_config_hashes(HASH_TEXT) == {
        "auth": "ea84b47d70e97dfe0aa3ed3cc8ea3f75bebf581ee476500f0217a218d264b5b0",
        "auth-lb": "afb890e07dc15bd1ac1109c6e6ce4cf19126e7bbda83cb7ca1c509983250e718"}


def test_compose_passes_every_env_file_in_order():
    compose = Compose(Docker(), "p", ["a.yml", "b.yml"], project_dir="/d", env_file="x.env", env_files=["y.env"])
    assert compose.base() == ["compose", "-p", "p", "--project-directory", "/d", "--env-file", "x.env",
                              "--env-file", "y.env", "-f", "a.yml", "-f", "b.yml"]


def box(name, number, state="running", config_hash="H", image_id="sha256:new"):
    return {"id": "id-%s" % name, "name": name, "number": number, "state": state, "config_hash": config_hash,
            "image_id": image_id, "image": "vpsops-demo/auth:x", "healthcheck": True}


@pytest.mark.parametrize("containers, action", [
    ([box("a-1", 1), box("a-2", 2)], "none"),
    ([], "start"),
    ([box("a-1", 1, state="exited")], "start"),
    ([box("a-1", 1)], "scale"),
    ([box("a-1", 1), box("a-2", 2), box("a-3", 3, state="exited")], "scale"),
    ([box("a-1", 1, config_hash="OLD"), box("a-2", 2)], "rollout"),
    ([box("a-1", 1, image_id="sha256:old"), box("a-2", 2)], "rollout"),  # the tag moved to a new image
    ([box("a-1", 1, state="restarting", config_hash="OLD"), box("a-2", 2, config_hash="OLD")], "rollout"),
])
def test_plan_service(containers, action):
    plan = ro.plan_service("auth", AUTH, "H", "sha256:new", containers)
    assert plan["action"] == action
    assert plan["stale"] == [c for c in containers if c["state"] == "exited"]
    assert ro.describe_plan(plan).startswith("auth: ")


def test_an_image_missing_on_the_host_is_a_change():
    plan = ro.plan_service("auth", AUTH, "H", None, [box("a-1", 1), box("a-2", 2)])
    assert plan["action"] == "rollout"


# ------------------------------------------------------------------------------------------------
# The steps, against an in-memory Docker
# ------------------------------------------------------------------------------------------------

class FakeDocker:
    """Answers the argv the rollout runs the way Docker 20.10 / Compose 2.40 do, from containers
    kept in memory; `behaviour` is what a container of a new image does: healthy, unhealthy, exits."""

    def __init__(self, model, image_ref="vpsops-demo/auth:v2", image_id="sha256:v2", behaviour="healthy",
                 config_hash="H2", up_fails=False):
        self.model = model
        self.image_ref, self.image_id, self.behaviour = image_ref, image_id, behaviour
        self.config_hash = config_hash
        self.up_fails = up_fails
        self.containers = []
        self.calls = []

    def add(self, number, image="vpsops-demo/auth:v1", image_id="sha256:v1", config_hash="H1", state="running",
            health="healthy"):
        doc = copy.deepcopy(RECORDED_INSPECT)
        name = "p-auth-%d" % number
        doc.update(Id="id-%s" % name, Name="/" + name, Image=image_id)
        doc["Config"]["Image"] = image
        doc["Config"]["Labels"].update({"com.docker.compose.config-hash": config_hash,
                                        "com.docker.compose.container-number": str(number),
                                        "com.docker.compose.project": "p"})
        doc["State"].update(Status=state, Running=state == "running", Health={"Status": health, "Log": []})
        self.containers.append(doc)
        return doc

    def find(self, ref):
        for doc in self.containers:
            if ref in (doc["Id"], doc["Name"].lstrip("/")):
                return doc
        return None

    def __call__(self, argv, timeout=None):
        self.calls.append(list(argv))
        args = argv[1:]
        if args[0] == "compose":
            return self.compose(args[args.index("-f") + 2:] if "-f" in args else args)
        if args[0] == "version":
            return 0, "20.10.24\n", ""
        if args[:2] == ["image", "inspect"]:
            return 0, json.dumps([{"Id": self.image_id, "RepoTags": [self.image_ref], "RepoDigests": []}]), ""
        if args[0] == "ps":
            wanted = [a.split("=", 1)[1].split("=", 1) for a in args if a.startswith("label=")]
            return 0, "".join(d["Id"] + "\n" for d in self.containers
                              if all(d["Config"]["Labels"].get(k) == v for k, v in wanted)), ""
        if args[0] == "inspect" and "--format" in args:
            doc = self.find(args[-1])
            return 0, "%s|%d|%s\n" % (json.dumps(doc["State"]), doc["RestartCount"], doc.get("Created", "")), ""
        if args[0] == "inspect":
            return 0, json.dumps([self.find(ref) for ref in args[3:] if self.find(ref)]), ""
        if args[0] == "logs":
            return 0, "starting\nlistening\n", ""
        if args[0] == "stop":
            for ref in args[3:]:
                self.find(ref)["State"].update(Status="exited", Running=False)
            return 0, "\n".join(args[3:]), ""
        if args[0] == "rm":
            refs = [a for a in args[1:] if not a.startswith("-")]
            self.containers = [d for d in self.containers if d["Id"] not in refs]
            return 0, "", ""
        raise AssertionError("unexpected docker call %r" % argv)

    def compose(self, args):
        if args[:3] == ["config", "--format", "json"]:
            return 0, json.dumps({"services": self.model}), ""
        if args[:2] == ["config", "--hash"]:
            return 0, "".join("%s %s\n" % (n, self.config_hash) for n in args[2].split(",")), ""
        if args[0] == "up":
            scale = self.model["auth"]["deploy"]["replicas"]
            if "--scale" in args:
                scale = int(args[args.index("--scale") + 1].split("=")[1])
            number = max([int(d["Config"]["Labels"]["com.docker.compose.container-number"])
                          for d in self.containers] or [0])
            while len(self.containers) < scale:
                number += 1
                state, health = {"healthy": ("running", "healthy"), "unhealthy": ("running", "unhealthy"),
                                 "exits": ("exited", "unhealthy"), "restarted": ("running", "healthy")}[self.behaviour]
                doc = self.add(number, self.image_ref, self.image_id, self.config_hash, state, health)
                doc["State"]["ExitCode"] = 1 if state == "exited" else 0
                # crashed once already and runs again by its restart policy when first looked at
                doc["RestartCount"] = 1 if self.behaviour == "restarted" else 0
            if self.up_fails:
                return 1, "", "Error response from daemon: driver failed programming external connectivity"
            return 0, "", ""
        raise AssertionError("unexpected compose call %r" % args)

    def names(self):
        return sorted(d["Name"].lstrip("/") for d in self.containers)

    def verbs(self):
        """The calls that change something, in order, as (verb, names)."""
        found = []
        for argv in self.calls:
            if argv[1] in ("stop", "rm"):
                found.append((argv[1], sorted(a.replace("id-", "") for a in argv[2:] if a.startswith("id-"))))
            elif argv[1] == "compose" and "up" in argv:
                found.append(("up", argv[argv.index("up"):]))
        return found


def rollout_with(fake, **kwargs):
    sleeps = []
    compose = Compose(Docker(runner=fake), "p", ["platform.yml"], project_dir="/d")
    return ro.Rollout(compose, sleep=sleeps.append, **kwargs), sleeps


def test_a_rollout_starts_new_beside_old_gates_drains_then_stops_the_old_ones():
    fake = FakeDocker({"auth": dict(AUTH, stop_grace_period="25s")})
    fake.add(1)
    fake.add(2)
    rollout, sleeps = rollout_with(fake, drain=1.5)
    results = rollout.run(["auth"])
    auth = results["auth"]
    assert auth["changed"] and auth["action"] == "rollout"
    assert auth["old"] == ["p-auth-1", "p-auth-2"] and auth["new"] == ["p-auth-3", "p-auth-4"]
    assert auth["image_before"] == "vpsops-demo/auth:v1" and auth["image_after"] == "vpsops-demo/auth:v2"
    assert fake.names() == ["p-auth-3", "p-auth-4"]
    assert fake.verbs() == [
        ("up", ["up", "-d", "--no-deps", "--no-recreate", "--no-build", "--pull", "missing", "--scale", "auth=4",
                "auth"]),
        ("stop", ["p-auth-1", "p-auth-2"]),
        ("rm", ["p-auth-1", "p-auth-2"]),
    ]
    stop = [argv for argv in fake.calls if argv[1] == "stop"][0]
    assert stop[2:4] == ["-t", "25"]
    assert sleeps == [1.5]


@pytest.mark.parametrize("behaviour, timeout, words", [
    ("exits", 30, ["failed fast", "exited with exit code 1"]),
    ("unhealthy", 1, ["not ready", "is unhealthy"]),
    ("restarted", 30, ["failed fast", "restarted 1 time(s)"]),
])
def test_new_containers_that_fail_the_gate_are_removed_and_the_old_ones_never_touched(behaviour, timeout, words):
    fake = FakeDocker({"auth": AUTH}, behaviour=behaviour)
    fake.add(1)
    fake.add(2)
    rollout, sleeps = rollout_with(fake, timeout=timeout)
    with pytest.raises(ro.RolloutError) as info:
        rollout.run(["auth"])
    msg = str(info.value)
    assert "rollout of service auth failed" in msg and "p-auth-1, p-auth-2 running vpsops-demo/auth:v1" in msg
    for word in words:
        assert word in msg
    auth = info.value.services["auth"]
    assert auth["changed"] is False and auth["new"] == [] and auth["rejected"] == ["p-auth-3", "p-auth-4"]
    assert auth["logs"]["p-auth-3"] == "starting\nlistening"
    assert fake.names() == ["p-auth-1", "p-auth-2"]
    assert [v for v in fake.verbs() if v[0] != "up"] == [("stop", ["p-auth-3", "p-auth-4"]),
                                                         ("rm", ["p-auth-3", "p-auth-4"])]
    assert sleeps == []


def test_a_failed_compose_up_removes_what_it_created():
    fake = FakeDocker({"auth": AUTH}, up_fails=True)
    fake.add(1)
    fake.add(2)
    rollout, _sleeps = rollout_with(fake)
    with pytest.raises(ro.RolloutError) as info:
        rollout.run(["auth"])
    assert "starting its new containers failed" in str(info.value)
    assert "driver failed programming" in str(info.value)
    assert fake.names() == ["p-auth-1", "p-auth-2"]


def test_up_to_date_containers_are_left_alone_and_check_mode_changes_nothing():
    fake = FakeDocker({"auth": AUTH}, config_hash="H1", image_id="sha256:v1", image_ref="vpsops-demo/auth:v1")
    fake.add(1)
    fake.add(2)
    rollout, _sleeps = rollout_with(fake)
    assert rollout.run(["auth"])["auth"]["changed"] is False
    fake.config_hash = "H2"
    auth = rollout.run(["auth"], check_mode=True)["auth"]
    assert auth["changed"] is True and auth["action"] == "rollout" and auth["old"] == ["p-auth-1", "p-auth-2"]
    assert fake.verbs() == [] and fake.names() == ["p-auth-1", "p-auth-2"]


def test_every_service_is_checked_before_the_first_one_changes():
    fake = FakeDocker({"auth": AUTH, "auth-lb": AUTH_LB})
    fake.add(1)
    lb = fake.add(9)
    lb["Config"]["Labels"]["com.docker.compose.service"] = "auth-lb"
    rollout, _sleeps = rollout_with(fake)
    with pytest.raises(ro.RolloutError) as info:
        rollout.run(["auth", "auth-lb"])
    assert "auth-lb publishes host port 127.0.0.1:23090" in str(info.value)
    assert fake.verbs() == []


def test_an_unknown_service_is_named():
    fake = FakeDocker({"auth": AUTH, "auth-lb": AUTH_LB})
    rollout, _sleeps = rollout_with(fake)
    with pytest.raises(ro.RolloutError) as info:
        rollout.run(["nope"])
    assert str(info.value).startswith("services: nope is not a service of compose project p")
    assert "its services are auth, auth-lb" in str(info.value)


def test_the_old_containers_wait_for_dockers_own_verdict_on_the_new_ones(monkeypatch):
    """A rollout's gate does not run the new containers' healthcheck to know sooner: a proxy that
    follows Docker's health (Traefik) routes to no container Docker still calls `starting`, so the
    old ones go only once Docker calls the new ones healthy. A service started from nothing (no old
    container serving) may use the quicker verdict."""
    seen = []
    real = ro.run_gate

    def spy(checks, containers, timeout, **kwargs):
        adjust = kwargs["adjust_specs"]

        def recorded(specs):
            adjust(specs)
            seen.append(sorted((s["container"], s.get("own_health", True)) for s in specs))
        kwargs["adjust_specs"] = recorded
        return real(checks, containers, timeout, **kwargs)

    monkeypatch.setattr(ro, "run_gate", spy)
    fake = FakeDocker({"auth": AUTH})
    fake.add(1)
    fake.add(2)
    rollout_with(fake)[0].run(["auth"])
    assert seen == [[("p-auth-3", False), ("p-auth-4", False)]]

    seen[:] = []
    fake = FakeDocker({"auth": AUTH})
    rollout_with(fake)[0].run(["auth"])
    assert seen == [[("p-auth-1", True), ("p-auth-2", True)]]
