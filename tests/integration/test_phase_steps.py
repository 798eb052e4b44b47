"""A phase whose services wait for one another (`depends_on: condition: service_healthy`) against
the lab's daemon: the services come up in steps, each dependency proven healthy by its own
healthcheck run at once, not after Docker's first `interval`. The healthchecks here run every
300 s, so Docker never judges them while the test runs: one plain `up` would wait for Docker
that long before it starts the dependent service."""

import json
import os

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Compose, Docker
from ansible_collections.vpsops.deploy.plugins.module_utils._phase import PhaseError, run_phase
from ansible_collections.vpsops.deploy.plugins.module_utils._probes import parse_docker_time
from conftest import ansible_module, run

PROJECT = "vpsops-itsteps"
COMPOSE = """
services:
  store:
    image: vpsops-lab/redis:7
    command: ["redis-server", "--save", "", "--appendonly", "no"]
    healthcheck: %(healthcheck)s
  api:
    image: vpsops-lab/redis:7
    command: ["redis-server", "--save", "", "--appendonly", "no"]
    healthcheck: {test: ["CMD", "redis-cli", "ping"], interval: 300s, timeout: 5s, retries: 3}
    depends_on: {store: {condition: service_healthy}}
  edge:
    image: vpsops-lab/redis:7
    command: ["redis-server", "--save", "", "--appendonly", "no"]
    depends_on: {api: {condition: service_healthy}, store: {condition: service_started}}
"""
WAITS = {"api": {"store": "service_healthy"}, "edge": {"api": "service_healthy", "store": "service_started"}}
SERVICES = ["api", "edge", "store"]


@pytest.fixture
def project(lab, tmp_path):
    def make(check=None):
        path = tmp_path / "compose.yml"
        healthcheck = ('{test: ["CMD-SHELL", "%s"], interval: 300s, timeout: 5s, retries: 3}' % check if check
                       else "{disable: true}")
        path.write_text(COMPOSE % {"healthcheck": healthcheck})
        return Compose(Docker(), PROJECT, [str(path)], project_dir=str(tmp_path))
    yield make
    ids = run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=%s" % PROJECT]).stdout.split()
    if ids:
        run(["docker", "rm", "-f"] + ids, check=False)


def inspect(service):
    ids = run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=%s" % PROJECT,
               "--filter", "label=com.docker.compose.service=%s" % service]).stdout.split()
    return [c["State"] for c in json.loads(run(["docker", "inspect"] + ids).stdout)] if ids else []


def test_each_step_starts_once_its_dependency_passed_its_own_healthcheck(project):
    compose = project("redis-cli ping")
    result = run_phase(compose, SERVICES, timeout=60, pull="never", waits=WAITS, changing=set(SERVICES))
    assert result["steps"] == [["store"], ["api"], ["edge"]]
    assert sorted(a["service"] for a in result["actions"]) == SERVICES
    states = dict((s, inspect(s)) for s in SERVICES)
    assert all(len(found) == 1 and found[0]["Running"] for found in states.values()), states
    store, api, edge = states["store"][0], states["api"][0], states["edge"][0]
    # In order, and without Docker's verdict: Docker has run no healthcheck yet.
    assert parse_docker_time(store["StartedAt"]) < parse_docker_time(api["StartedAt"]) < parse_docker_time(edge["StartedAt"])
    assert store["Health"]["Status"] == api["Health"]["Status"] == "starting"
    assert not store["Health"].get("Log") and not api["Health"].get("Log")
    assert result["gate"]["ready"] and result["gate"]["not_ready"] == [], result["gate"]

    # Again with nothing changing, and Docker still saying starting: the steps prove the same starts.
    again = run_phase(compose, SERVICES, timeout=60, pull="never", waits=WAITS, changing=set())
    assert again["actions"] == [] and again["steps"] == [["store"], ["api"], ["edge"]]
    assert [s["StartedAt"] for s in (inspect("store")[0], inspect("api")[0])] == [store["StartedAt"], api["StartedAt"]]


def test_a_dependency_that_never_passes_stops_the_steps_before_its_dependents(project):
    compose = project("exit 1")
    with pytest.raises(PhaseError, match=r"^store, which api waits for \(depends_on: service_healthy\), did not become healthy: "):
        run_phase(compose, SERVICES, timeout=4, pull="never", waits=WAITS, changing=set(SERVICES))
    assert inspect("store") and inspect("store")[0]["Running"]
    assert inspect("api") == [] and inspect("edge") == []  # never created


def test_a_healthy_dependency_without_a_healthcheck_is_refused_as_compose_refuses_it(project):
    compose = project(check=None)
    with pytest.raises(PhaseError, match=r"^store has no healthcheck, which api waits for \(depends_on: service_healthy\)$"):
        run_phase(compose, SERVICES, timeout=30, pull="never", waits=WAITS, changing=set(SERVICES))
    assert inspect("api") == []


ROLLBACK_STACK = "vpsops-itsteps-rb"
PHASE_FILE = """services:
  %s:
    image: vpsops-lab/redis:7
    command: ["redis-server", "--save", "", "--appendonly", "no"]
    environment: {VARIANT: "${VARIANT}"}
    healthcheck: {test: ["CMD", "redis-cli", "ping"], interval: 300s, timeout: 5s, retries: 3}
"""
WAITS_FOR_BACK = """    depends_on: {back: {condition: service_healthy}}
"""
EXTRA = """  extra:
    image: vpsops-lab/redis:7
    command: ["redis-server", "--save", "", "--appendonly", "no"]
"""


def test_a_rollback_of_two_phases_does_not_wait_for_dockers_first_healthcheck(lab, tmp_path):
    """Two phases move back, the last first, each healthy before the next moves: proven by each
    container's own healthcheck, so with Docker's first check 300 s away the rollback still ends
    within its 60 s timeout (an `up --wait` per phase would wait for Docker, and so would compose
    for front's dependency on back if one `up` named both). The service the target lacks goes."""
    project, state = tmp_path / "project", str(tmp_path / "state")
    project.mkdir()
    (project / "back.yml").write_text(PHASE_FILE % "back")
    args = {"stack": ROLLBACK_STACK, "state_dir": state}
    phases = [{"name": "back", "compose_files": ["back.yml"]}, {"name": "front", "compose_files": ["front.yml"]}]
    releases = []
    try:
        for variant in ("1", "2"):
            (project / "front.yml").write_text(PHASE_FILE % "front" + WAITS_FOR_BACK + (EXTRA if variant == "2" else ""))
            (project / ".env").write_text("VARIANT=%s\n" % variant)
            rc, rel = ansible_module("compose_release", dict(args, project_dir=str(project),
                                                             files=["back.yml", "front.yml"], phases=phases))
            assert rc == 0, json.dumps(rel)[:3000]
            argv = ["docker", "compose", "-p", ROLLBACK_STACK, "--project-directory", rel["project_dir"],
                    "--env-file", rel["env_file"]]
            for path in rel["files"]:
                argv += ["-f", path]
            # One service at a time: one `up` of back and front would wait for Docker to call back healthy.
            for service in ["back", "front"] + (["extra"] if variant == "2" else []):
                run(argv + ["up", "-d", "--pull", "never", "--no-build", "--no-deps", service])
            rc, live = ansible_module("compose_release", dict(args, release=rel["release"], state="live"))
            assert rc == 0, live
            releases.append(rel["release"])
        with open(os.path.join(state, "releases", releases[0], "manifest.json")) as handle:
            recorded = dict((p["name"], p.get("waits")) for p in json.load(handle)["phases"])
        assert recorded == {"back": None, "front": {"front": {"back": "service_healthy"}}}, recorded
        rc, back = ansible_module("compose_rollback", dict(args, to=releases[0], timeout=60))
        assert rc == 0 and back["changed"], back
        assert back["order"] == ["front", "back"], back
        ids = run(["docker", "ps", "-q", "--filter", "label=com.docker.compose.project=%s" % ROLLBACK_STACK]).stdout.split()
        found = json.loads(run(["docker", "inspect"] + ids).stdout)
        assert sorted(c["Config"]["Labels"]["com.docker.compose.service"] for c in found) == ["back", "front"]
        for c in found:
            assert "VARIANT=1" in c["Config"]["Env"], c["Name"]
            assert c["State"]["Health"]["Status"] == "starting" and not c["State"]["Health"].get("Log"), c["State"]
    finally:
        ids = run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=%s" % ROLLBACK_STACK]).stdout.split()
        if ids:
            run(["docker", "rm", "-f"] + ids, check=False)
        refs = run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]).stdout.split()
        pins = [r for r in refs if r.startswith("vpsops/%s/" % ROLLBACK_STACK)]
        if pins:
            run(["docker", "image", "rm"] + pins, check=False)
