"""compose_phase on the real lab: `up --wait` of a phase's services, what it changed, then the gate,
in one module run; check mode asks compose's dry run and changes nothing."""

import pytest

from conftest import ansible_module, run

PROJECT = "vpsops-itcp"
CLOSED_PORT = 15998  # nothing listens here: a check on it never passes

COMPOSE = """services:
  web:
    image: vpsops-lab/base:bookworm
    command: ["sleep", "infinity"]
    environment:
      VERSION: ${VERSION}
    healthcheck: {test: ["CMD", "true"], interval: 1s, timeout: 10s, retries: 5, start_period: 0s}
    labels: {vpsops.lab: demo}
  worker:
    image: vpsops-lab/base:bookworm
    command: ["sleep", "infinity"]
    labels: {vpsops.lab: demo}
  sick:
    image: vpsops-lab/base:bookworm
    command: ["sleep", "infinity"]
    healthcheck: {test: ["CMD", "false"], interval: 1s, timeout: 5s, retries: 1, start_period: 0s}
    labels: {vpsops.lab: demo}
    profiles: [sick]
"""


def container_ids():
    out = run(["docker", "ps", "-aq", "--no-trunc", "--filter", "label=com.docker.compose.project=%s" % PROJECT]).stdout
    return sorted(out.split())


@pytest.fixture
def project(tmp_path):
    (tmp_path / "compose.yml").write_text(COMPOSE)
    (tmp_path / "v1.env").write_text("VERSION=1\n")
    (tmp_path / "v2.env").write_text("VERSION=2\n")
    down = ["docker", "compose", "-p", PROJECT, "--project-directory", str(tmp_path), "-f", str(tmp_path / "compose.yml"),
            "--env-file", str(tmp_path / "v1.env"), "--profile", "sick", "down", "-t", "1"]
    run(down, check=False)
    yield tmp_path
    run(down, check=False)


def phase(project_dir, env, *options, **args):
    values = dict(project=PROJECT, project_dir=str(project_dir), files=["compose.yml"], env_files=[env],
                  services=["web", "worker"], timeout=60, interval=0.2)
    values.update(args)
    return ansible_module("compose_phase", values, *options)


def test_up_reports_what_changed_gates_every_container_and_then_changes_nothing(project):
    web_runs = {"name": "web runs", "type": "command", "argv": ["docker", "exec", PROJECT + "-web-1", "true"]}
    rc, result = phase(project, "v1.env", checks=[web_runs])
    assert rc == 0, result
    assert result["changed"] is True
    assert sorted((a["id"], a["status"]) for a in result["actions"]) == [
        (PROJECT + "-web-1", "Created"), (PROJECT + "-worker-1", "Created")]
    assert sorted(c["name"] for c in result["containers"]) == [PROJECT + "-web-1", PROJECT + "-worker-1"]
    assert set(result["gate"]["checks"]) == {"web runs", "container %s-web-1" % PROJECT,
                                             "container %s-worker-1" % PROJECT}
    assert all(check["ready"] for check in result["gate"]["checks"].values())

    rc, again = phase(project, "v1.env")
    assert rc == 0, again
    assert again["changed"] is False and again["actions"] == []


def test_check_mode_predicts_the_recreate_from_a_dry_run_and_changes_nothing(project):
    assert phase(project, "v1.env")[0] == 0
    before = container_ids()
    rc, result = phase(project, "v2.env", "--check")
    assert rc == 0, result
    assert result["changed"] is True
    assert [(a["id"], a["status"]) for a in result["actions"]] == [(PROJECT + "-web-1", "Recreated")]
    assert result["gate"] is None
    assert container_ids() == before

    rc, result = phase(project, "v2.env")
    assert rc == 0, result
    assert [(a["id"], a["status"]) for a in result["actions"]] == [(PROJECT + "-web-1", "Recreated")]


def test_a_failed_gate_names_the_check_and_returns_what_up_changed(project):
    rc, result = phase(project, "v1.env", timeout=3,
                       checks=[{"name": "api port", "type": "tcp", "host": "127.0.0.1", "port": CLOSED_PORT}])
    assert rc != 0
    assert "api port" in result["msg"] and "Health gate" in result["msg"], result["msg"]
    assert result["changed"] is True and len(result["actions"]) == 2
    assert result["gate"]["not_ready"] == ["api port"]


def test_a_service_that_never_turns_healthy_fails_the_gate_naming_it(project):
    rc, result = phase(project, "v1.env", services=["sick"], timeout=5)
    assert rc != 0
    # `up` starts it; the gate (its own healthcheck run at once, then Docker's verdict) names it.
    assert result["msg"].startswith("Health gate"), result["msg"]
    assert "container %s-sick-1 is unhealthy" % PROJECT in result["msg"] or \
        "container %s-sick-1 is starting and its healthcheck does not pass yet" % PROJECT in result["msg"], result["msg"]
    assert [(a["id"], a["status"]) for a in result["actions"]] == [(PROJECT + "-sick-1", "Created")]


def test_a_check_that_cannot_run_is_refused_before_anything_starts(project):
    rc, result = phase(project, "v1.env", checks=[{"name": "log", "type": "log", "container": "x", "pattern": "(["}])
    assert rc != 0
    assert "'pattern' is not a valid regular expression" in result["msg"], result["msg"]
    assert container_ids() == []


def test_compose_files_missing_on_the_host_are_named(project):
    rc, result = phase(project, "v1.env", files=["nope.yml"])
    assert rc != 0
    assert result["msg"].startswith("files: %s/nope.yml is not a file on the host" % project), result["msg"]
