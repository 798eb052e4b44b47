"""The parts of the deploy engine (vpsops.deploy.deploy_host) that need no Docker: the secrets a
module masks, the lock a step refreshes and refuses, the project directory that shows a release, and
which services a release leaves unchanged."""

import json
import os
import time

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils._deploy import (
    DeployError,
    Heartbeat,
    phase_services,
    stack_files,
    stack_secrets,
    unchanged_services,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._project import publish
from ansible_collections.vpsops.deploy.plugins.module_utils._releases import LockHeld, Store, refuse_foreign_lock


def test_stack_secrets_are_the_passwords_tokens_and_secret_env_values_only():
    stack = {
        "name": "shop",
        "env": {"RELEASE_TAG": "v2", "DB_PASSWORD": "pw-one", "API_TOKEN": "tok-two", "PORT": "8080"},
        "databases": {"main": {"db": "shop", "login_password": "pw-three"}},
        "phases": [{"name": "web", "compose_files": ["a.yml"], "checks": [
            {"type": "postgres", "login_password": "pw-four"},
            {"type": "http", "url": "http://u:pw-five@127.0.0.1/?token=tok-six&verbose=true",
             "headers": {"Authorization": "Bearer tok-seven"}},
        ]}],
        "smoke_tests": [{"url": "http://127.0.0.1/x?api_key=tok-eight"}],
    }
    found = stack_secrets(stack)
    assert found == {"pw-one", "tok-two", "pw-three", "pw-four", "pw-five", "tok-six", "Bearer tok-seven",
                     "tok-eight"}
    assert not {"v2", "8080", "true", "shop", "web"} & found


def test_stack_files_keeps_phase_order_and_each_file_once():
    stack = {"phases": [{"compose_files": ["a.yml", "b.yml"]}, {"compose_files": ["b.yml", "c.yml"]}]}
    assert stack_files(stack) == ["a.yml", "b.yml", "c.yml"]


def test_a_step_refreshes_its_lock_and_refuses_a_lock_it_does_not_hold(tmp_path):
    store = Store("shop", str(tmp_path / "state"))
    store.ensure()
    lock, _changed, _old = store.acquire("me", 60, now=time.time() - 50)
    with Heartbeat(store, "me", 60):
        assert store.read_lock()["heartbeat_epoch"] > lock["heartbeat_epoch"] + 40
    store.release_lock("me")
    store.acquire("them", 60)
    with pytest.raises(DeployError, match="no longer held by this run.*them"):
        with Heartbeat(store, "me", 60):
            pass  # pragma: no cover - refused before the body runs
    store.release_lock("them")
    with pytest.raises(DeployError, match="not held by this run"):
        Heartbeat(store, "me", 60).__enter__()


def test_the_heartbeat_keeps_a_long_step_locked_past_its_ttl(tmp_path):
    store = Store("shop", str(tmp_path / "state"))
    store.ensure()
    store.acquire("me", 3)
    with Heartbeat(store, "me", 3):
        time.sleep(4.5)  # longer than the TTL: refreshed every second meanwhile
        lock = store.read_lock()
        assert time.time() - lock["heartbeat_epoch"] < 2.5


def test_modules_refuse_a_live_lock_of_another_owner(tmp_path):
    store = Store("shop", str(tmp_path / "state"))
    refuse_foreign_lock(store, "me")  # no store yet: nothing to refuse
    store.ensure()
    store.acquire("them", 60)
    with pytest.raises(LockHeld, match="refused: stack shop is locked by them"):
        refuse_foreign_lock(store, "me")
    with pytest.raises(LockHeld, match="locked by them"):
        refuse_foreign_lock(store, None)
    refuse_foreign_lock(store, "them")
    refuse_foreign_lock(store, "me", now=time.time() + 120)  # stale


def test_publish_puts_the_release_files_and_env_in_the_project_directory(tmp_path):
    store = Store("shop", str(tmp_path / "state"))
    store.ensure()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.yml").write_text("services: {web: {image: web:v1}}\n")
    (src / ".env").write_text("TAG='v1'\n")
    manifest = store.create("r1", [str(src / "a.yml")], {"web": "web@sha256:1"}, {}, [], str(tmp_path / "project"),
                            env_file=str(src / ".env"))
    project = tmp_path / "project"
    project.mkdir()
    (project / "a.yml").write_text("services: {web: {image: web:v3-broken}}\n")
    (project / ".env").write_text("TAG='v3-broken'\n")
    assert sorted(publish(store, manifest, str(project))) == [".env", "a.yml"]
    assert (project / "a.yml").read_text() == "services: {web: {image: web:v1}}\n"
    assert (project / ".env").read_text() == "TAG='v1'\n"
    assert oct(os.stat(project / ".env").st_mode & 0o777) == "0o600"
    assert publish(store, manifest, str(project)) == []


class FakeDocker:
    cli = "docker"

    def __init__(self, labels):
        self.labels = labels

    def run(self, args, what=None, timeout=None):
        ids = args[args.index("--format") + 2:]
        return "".join("%s %s\n" % (i, self.labels[i]) for i in ids)


class FakeCompose:
    def __init__(self, docker, hashes):
        self.docker = docker
        self.hashes = hashes

    def config_hashes(self, services):
        return dict((s, self.hashes[s]) for s in services if s in self.hashes)


@pytest.mark.parametrize("containers,expected", [
    ([{"id": "1", "service": "web", "state": "running", "health": "healthy"},
      {"id": "2", "service": "web", "state": "running", "health": None},
      {"id": "3", "service": "db", "state": "running", "health": None}], {"web", "db"}),
    ([{"id": "1", "service": "web", "state": "running", "health": "healthy"},
      {"id": "9", "service": "web", "state": "running", "health": None},
      {"id": "3", "service": "db", "state": "exited", "health": None}], set()),
    ([{"id": "1", "service": "web", "state": "running", "health": "unhealthy"}], set()),
    # Docker has not run its first healthcheck yet: up would not touch it, the gates run it.
    ([{"id": "1", "service": "web", "state": "running", "health": "starting"}], {"web"}),
    ([], set()),
])
def test_a_service_is_unchanged_only_when_every_container_runs_the_wanted_config(containers, expected):
    docker = FakeDocker({"1": "h-web", "2": "h-web", "3": "h-db", "9": "h-old"})
    compose = FakeCompose(docker, {"web": "h-web", "db": "h-db"})
    assert unchanged_services(compose, ["web", "db"], containers) == expected


def test_the_manifest_keeps_no_secret_of_the_checks(tmp_path):
    from ansible_collections.vpsops.deploy.plugins.module_utils._releases import stored_checks

    checks = [{"name": "db", "type": "postgres", "login_password": "pw", "port": 5432, "db": None}]
    assert stored_checks(checks, {"DB_PASSWORD": "pw"}) == [
        {"name": "db", "type": "postgres", "login_password": {"from_env": "DB_PASSWORD"}, "port": 5432}]
    assert json.dumps(stored_checks(checks, {})).count("pw") == 0


def test_jobs_are_the_named_ones_then_compose_completed_dependencies():
    from ansible_collections.vpsops.deploy.plugins.module_utils._deploy import add_jobs, jobs_of  # jobs_of lives in _plan
    model = {"services": {
        "web": {"depends_on": {"schema": {"condition": "service_completed_successfully"},
                               "db": {"condition": "service_healthy"}}},
        "schema": {}, "db": {}, "configure": {}, "other": {"depends_on": {"seed": {"condition": "service_completed_successfully"}}},
        "seed": {}}}
    phases = add_jobs([{"name": "app", "services": ["configure", "db", "schema", "web"], "jobs": ["configure"]},
                       {"name": "more", "services": ["other", "seed"]},
                       {"name": "none", "services": ["db2"]}], model)
    assert [p.get("jobs") for p in phases] == [["configure", "schema"], ["seed"], None]
    assert jobs_of({"phases": phases}) == ["configure", "schema", "seed"]
    assert jobs_of({"phases": phases}, "more") == ["seed"]


def test_a_job_that_is_not_a_service_of_its_phase_is_refused():
    from ansible_collections.vpsops.deploy.plugins.module_utils._deploy import DeployError, add_jobs
    with pytest.raises(DeployError, match=r"phases\[app\]\.jobs names \['nosuch'\], which are not services"):
        add_jobs([{"name": "app", "services": ["web"], "jobs": ["nosuch"]}], {"services": {}})


def test_a_job_is_done_when_it_exited_0_after_the_phase_started():
    from ansible_collections.vpsops.deploy.plugins.module_utils._phase import job_done
    exited = {"state": "exited", "exit_code": 0, "started_at": "2026-12-06T10:00:05.5Z"}
    import calendar
    ten = calendar.timegm((2026, 12, 6, 10, 0, 0, 0, 0, 0))
    assert job_done(exited, None)
    assert job_done(exited, ten)  # ran after the phase started
    assert not job_done(exited, ten + 10)  # an earlier run, before the phase started
    assert not job_done(dict(exited, exit_code=3), None)
    assert not job_done(dict(exited, state="running"), None)


def test_a_malformed_smoke_test_is_refused_before_anything_changes(tmp_path):
    from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Docker
    from ansible_collections.vpsops.deploy.plugins.module_utils._deploy import begin
    stack = {"name": "s", "phases": [{"name": "app", "compose_files": ["c.yml"]}],
             "smoke_tests": [{"name": "home", "type": "bogus", "url": "http://127.0.0.1/"}]}
    with pytest.raises(DeployError, match=r"^vpsops_stack.smoke_tests: .*; nothing was changed"):
        begin(Store("s", str(tmp_path / "state")), Docker("docker"), stack, {"c.yml": "services: {}\n"}, "owner")
    assert not (tmp_path / "state").exists()


class NoDocker:
    cli = "docker"

    def runner(self, argv, timeout=None):
        raise AssertionError("ran %s" % argv)


def test_phases_are_split_by_the_services_their_files_define_without_a_compose_process(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("")
    files = {"infra.yml": str(tmp_path / "infra.yml"), "app.yml": str(tmp_path / "app.yml")}
    phases = [{"name": "infrastructure", "compose_files": ["infra.yml"]},
              {"name": "app", "compose_files": ["app.yml"], "jobs": ["seed"]}]
    # The resolved model (profiles applied: the migration under a profile is not in it).
    keep = {"model": {"services": {"redis": {}, "api": {}, "seed": {}}}}
    found = phase_services(NoDocker(), "p", phases, files, str(tmp_path), str(env_file),
                           {"infra.yml": ["redis"], "app.yml": ["api", "migrate", "seed"]}, keep=keep)
    assert [(p["name"], p["services"], p["files"]) for p in found] == [
        ("infrastructure", ["redis"], ["infra.yml"]), ("app", ["api", "seed"], ["app.yml"])]
    assert found[1]["jobs"] == ["seed"]


def test_a_rollback_asks_the_config_not_the_health():
    """healthy=False (what a rollback asks of its target): an unhealthy container that runs the
    wanted config needs no recreation, a service without a container does."""
    docker = FakeDocker({"1": "h-web", "3": "h-db"})
    compose = FakeCompose(docker, {"web": "h-web", "db": "h-db", "worker": "h-worker"})
    containers = [{"id": "1", "service": "web", "state": "running", "health": "unhealthy"},
                  {"id": "3", "service": "db", "state": "restarting", "health": None}]
    assert unchanged_services(compose, ["web", "db", "worker"], containers, healthy=False) == {"web"}
    assert unchanged_services(compose, ["web", "db", "worker"], containers) == set()


def test_waits_are_what_each_service_of_a_phase_depends_on_with_its_condition():
    from ansible_collections.vpsops.deploy.plugins.module_utils._plan import add_waits
    model = {"services": {
        "web": {"depends_on": {"db": {"condition": "service_healthy", "required": True},
                               "cache": {"condition": "service_started"}}},
        "worker": {"depends_on": ["cache"]},  # the short form: started
        "db": {}, "cache": {"depends_on": {}}}}
    phases = add_waits([{"name": "infra", "services": ["cache", "db"], "waits": {"stale": {}}},
                        {"name": "app", "services": ["web", "worker"]}], model)
    assert "waits" not in phases[0]
    assert phases[1]["waits"] == {"web": {"cache": "service_started", "db": "service_healthy"},
                                  "worker": {"cache": "service_started"}}
    assert add_waits([{"name": "app", "services": ["web"]}], None) == [{"name": "app", "services": ["web"]}]


def test_a_release_recorded_without_waits_is_the_same_release():
    from ansible_collections.vpsops.deploy.plugins.module_utils._releases import same_content, strip_waits
    phases = [{"name": "app", "files": ["c.yml"], "services": ["web"], "checks": [],
               "waits": {"web": {"db": "service_healthy"}}}]
    manifest = {"files": [{"sha256": "f"}], "env_file": {"sha256": "e"}, "services": {"web": {"image_id": "i"}},
                "phases": strip_waits(phases)}
    images = {"web": {"image_id": "i"}}
    assert same_content(manifest, ["f"], "e", images, phases)
    assert not same_content(manifest, ["f"], "e", images, [dict(phases[0], services=["web", "db"])])
    assert phases[0]["waits"]  # stripped in a copy only
