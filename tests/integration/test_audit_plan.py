"""The audit action from many hosts at once, and compose_plan on the lab's platform phase.

compose projects: vpsops-plan-*; host ports: 33000-33999."""

import json
import os
import shutil
import stat
import subprocess

import pytest

from conftest import ROOT, STACK_DIR, VENV_BIN, ansible_env, ansible_module, remove_pin_tags, run

HOSTS = 20
EVENTS = 3
SECRET = "s3cret-audit-4711"
PLAN_TOKEN = "plan-token-0815-secret"
CHECK_PASSWORD = "check-pw-2323-secret"


# --------------------------------------------------------------------------------------------
# audit: a real ansible-playbook, 20 hosts, forks 20, one file
# --------------------------------------------------------------------------------------------
AUDIT_PLAYBOOK = """
- name: Audit from every host at once
  hosts: all
  gather_facts: false
  tasks:
    - name: Record events
      vpsops.deploy.audit:
        path: "{{ audit_path | default(omit) }}"
        event: "event-{{ item }}"
        stack: platform
        release: r1
        phase: modules
        status: ok
        data:
          index: "{{ item }}"
          login_password: %s
          notify_url: "https://hooks.example.invalid/services/T0/B0/%s"
          endpoint: "https://ops:%s@127.0.0.1:9/x?token=%s"
          summary: {recreate: 1}
      loop: %s
""" % (SECRET, SECRET, SECRET, SECRET, json.dumps(list(range(EVENTS))))


def write_inventory(tmp_path, extra=""):
    lines = ["[all]"]
    for index in range(HOSTS):
        lines.append("h%02d ansible_connection=local ansible_python_interpreter=%s %s"
                     % (index, os.path.join(VENV_BIN, "python"), extra))
    path = tmp_path / "inventory.ini"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def audit_run(tmp_path, *args, env_extra=None):
    """ansible-playbook as its own process; returns (proc, its pid)."""
    playbook = tmp_path / "audit.yml"
    playbook.write_text(AUDIT_PLAYBOOK)
    env = ansible_env()
    env["ANSIBLE_FORKS"] = str(HOSTS)
    env.pop("VPSOPS_AUDIT_LOG", None)
    env.pop("JOB_ID", None)
    env.update(env_extra or {})
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", write_inventory(tmp_path), str(playbook)] + list(args)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err, proc.pid


def read_lines(path):
    with open(path, "rb") as handle:
        raw = handle.read()
    assert raw.endswith(b"\n")
    return [json.loads(line) for line in raw.decode().split("\n")[:-1]]


def test_twenty_hosts_append_whole_lines_to_one_private_file_with_secrets_masked(tmp_path):
    log = tmp_path / "audit" / "log.jsonl"
    rc, out, err, pid = audit_run(tmp_path, "-e", "audit_path=%s" % log, "-v")
    assert rc == 0, out[-3000:] + err[-3000:]
    entries = read_lines(str(log))
    assert len(entries) == HOSTS * EVENTS
    assert sorted((e["host"], e["event"]) for e in entries) == sorted(
        ("h%02d" % h, "event-%d" % i) for h in range(HOSTS) for i in range(EVENTS))
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(log.parent).st_mode) == 0o700
    # One run: every line names the ansible-playbook process and this controller.
    assert set(e["pid"] for e in entries) == {pid}
    assert set(e["controller"] for e in entries) == {os.uname()[1]}
    first = entries[0]
    assert (first["stack"], first["release"], first["phase"], first["status"], first["check_mode"],
            first["awx_job_id"]) == ("platform", "r1", "modules", "ok", False, None)
    assert first["data"]["login_password"] == "********"
    assert first["data"]["notify_url"] == "********"
    assert first["data"]["endpoint"] == "https://********@127.0.0.1:9/x?********"
    assert first["data"]["summary"] == {"recreate": 1}
    assert SECRET not in log.read_text()
    assert SECRET not in out and SECRET not in err
    assert "changed=0" in out


def test_check_mode_writes_marked_lines_and_the_environment_names_the_default_log(tmp_path):
    log = tmp_path / "from-env.jsonl"
    rc, out, err, _pid = audit_run(tmp_path, "--check", env_extra={"VPSOPS_AUDIT_LOG": str(log), "JOB_ID": "4242"})
    assert rc == 0, out[-3000:] + err[-3000:]
    entries = read_lines(str(log))
    assert len(entries) == HOSTS * EVENTS
    assert set(e["check_mode"] for e in entries) == {True}
    assert set(e["awx_job_id"] for e in entries) == {"4242"}


def test_an_unwritable_log_warns_unless_told_to_fail(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    args = {"path": str(blocker / "log.jsonl"), "event": "x", "data": {"token": SECRET}}
    inventory = tmp_path / "one.ini"
    inventory.write_text("h ansible_connection=local ansible_python_interpreter=%s\n" % os.path.join(VENV_BIN, "python"))
    rc, result = ansible_module("audit", args, host="h", inventory=str(inventory))
    assert rc == 0 and result["written"] is False and not result.get("failed")
    assert "cannot append to %s" % (blocker / "log.jsonl") in " ".join(result["warnings"])
    assert SECRET not in json.dumps(result)
    rc, result = ansible_module("audit", dict(args, fail_on_error=True), host="h", inventory=str(inventory))
    assert rc != 0 and result["failed"] and "cannot append to" in result["msg"]
    rc, result = ansible_module("audit", {"data": {}}, host="h", inventory=str(inventory))
    assert rc != 0 and "event" in result["msg"]


# --------------------------------------------------------------------------------------------
# compose_plan on the lab: the platform phase (auth x2 + auth-lb), deployed as the deploy does
# --------------------------------------------------------------------------------------------
PROJECT = "vpsops-plan-p"
AUTH_PORT = 33080

EXTRA_FILE = """services:
  probe:
    image: vpsops-demo/lb:v1
    init: true
    environment:
      PROBE_TOKEN: ${PLAN_TOKEN:?PLAN_TOKEN must be set}
  migrate:
    image: vpsops-demo/lb:v1
    profiles: [migrate]
"""


def image_id(ref):
    return run(["docker", "image", "inspect", "--format", "{{.Id}}", ref]).stdout.strip()


def project_container_ids():
    return sorted(run(["docker", "ps", "-aq", "--no-trunc", "--filter",
                       "label=com.docker.compose.project=%s" % PROJECT]).stdout.split())


class Lab:
    def __init__(self, base):
        self.base = base
        self.project_dir = base / "project"
        self.state_dir = base / "state"

    def write_env(self, tag):
        (self.project_dir / ".env").write_text(
            "AUTH_TAG=%s\nAUTH_PORT=%d\nPLAN_TOKEN=%s\n" % (tag, AUTH_PORT, PLAN_TOKEN))
        os.chmod(self.project_dir / ".env", 0o600)

    def args(self, phases=None, **extra):
        args = {"stack": PROJECT, "state_dir": str(self.state_dir), "project_dir": str(self.project_dir),
                "phases": phases or [{"name": "platform", "compose_files": ["docker-compose.platform.yml"],
                                      "rollout": ["auth"],
                                      "checks": [{"name": "db", "type": "postgres", "port": 1,
                                                  "login_password": CHECK_PASSWORD}]}]}
        args.update(extra)
        return args

    def plan(self, *options, phases=None, **extra):
        rc, result, proc = ansible_module("compose_plan", self.args(phases, **extra), *options, raw=True)
        for secret in (PLAN_TOKEN, CHECK_PASSWORD):
            assert secret not in proc.stdout and secret not in proc.stderr
        return rc, result


@pytest.fixture(scope="module")
def deployed(lab, tmp_path_factory):
    """The platform phase at v1, recorded and brought up as the deploy playbook does it (release
    files, pinned images, live)."""
    base = tmp_path_factory.mktemp("plan")
    st = Lab(base)
    st.project_dir.mkdir()
    shutil.copy(os.path.join(STACK_DIR, "docker-compose.platform.yml"), str(st.project_dir))
    st.write_env("v1")

    def down():
        run(["docker", "compose", "-p", PROJECT, "down", "-v", "--remove-orphans", "-t", "3"], check=False)
        remove_pin_tags(PROJECT)

    down()
    try:
        rc, release = ansible_module("compose_release", {
            "stack": PROJECT, "state_dir": str(st.state_dir), "project_dir": str(st.project_dir),
            "files": ["docker-compose.platform.yml"], "pull": "never",
            "phases": [{"name": "platform", "compose_files": ["docker-compose.platform.yml"]}]})
        assert rc == 0, release
        argv = ["docker", "compose", "-p", PROJECT, "--project-directory", str(st.project_dir),
                "--env-file", release["env_file"]]
        for path in release["files"]:
            argv += ["-f", path]
        run(argv + ["up", "-d", "--pull", "never"])  # health is not what is planned
        rc, live = ansible_module("compose_release", {"stack": PROJECT, "state_dir": str(st.state_dir),
                                                      "release": release["release"], "state": "live"})
        assert rc == 0, live
        st.release = release["release"]
        yield st
    finally:
        down()


def services_of(result, phase="platform"):
    return next(p for p in result["plan"] if p["name"] == phase)["services"]


def test_plan_of_what_runs_is_unchanged_and_matches_the_live_release(deployed):
    before = project_container_ids()
    rc, result = deployed.plan()
    assert rc == 0, result
    svc = services_of(result)
    assert sorted(svc) == ["auth", "auth-lb"]
    assert {n: s["action"] for n, s in svc.items()} == {"auth": "unchanged", "auth-lb": "unchanged"}
    v1 = image_id("vpsops-demo/auth:v1")
    assert svc["auth"]["current"]["image_id"] == v1 == svc["auth"]["new"]["image_id"]
    assert svc["auth"]["current"]["config_hash"] == svc["auth"]["new"]["config_hash"]
    assert svc["auth"]["current"]["containers"] == ["%s-auth-1" % PROJECT, "%s-auth-2" % PROJECT]
    assert svc["auth"]["current"]["source_image"] == "vpsops-demo/auth:v1"
    assert svc["auth"]["live_image_id"] == v1 and svc["auth"]["drift"] is False
    assert svc["auth"]["rollout"] is True
    assert result["live_release"] == deployed.release and result["drift"] == []
    assert result["summary"]["unchanged"] == 2 and result["plan"][0]["changes"] == 0
    assert result["changed"] is False and result["project_missing"] is False
    # Without pinning, the deploy's containers (created from pinned references) would all move.
    rc, unpinned = deployed.plan(pin_images=False)
    assert rc == 0 and services_of(unpinned)["auth"]["action"] == "recreate"
    assert project_container_ids() == before


def test_a_new_tag_recreates_auth_only_and_the_plan_changes_nothing(deployed):
    before = project_container_ids()
    deployed.write_env("v2")
    try:
        for options in ((), ("--check",)):
            rc, result = deployed.plan("--diff", *options)
            assert rc == 0, result
            svc = services_of(result)
            assert svc["auth"]["action"] == "recreate"
            assert svc["auth"]["current"]["image_id"] == image_id("vpsops-demo/auth:v1")
            assert svc["auth"]["new"]["image_id"] == image_id("vpsops-demo/auth:v2")
            assert svc["auth"]["new"]["image"] == "vpsops-demo/auth:v2" and svc["auth"]["new"]["pull"] is False
            assert svc["auth-lb"]["action"] == "unchanged"
            assert result["summary"]["recreate"] == 1 and result["plan"][0]["changes"] == 1
            assert result["changed"] is False
            diff = result["diff"]
            assert "auth: vpsops-demo/auth:v1 (%s)" % image_id("vpsops-demo/auth:v1")[7:19] in diff["before"]
            assert "auth: vpsops-demo/auth:v2 (%s)" % image_id("vpsops-demo/auth:v2")[7:19] in diff["after"]
            assert "auth-lb: vpsops-demo/lb:v1" in diff["before"] and "auth-lb: vpsops-demo/lb:v1" in diff["after"]
    finally:
        deployed.write_env("v1")
    assert project_container_ids() == before
    assert len(os.listdir(deployed.state_dir / "releases")) == 1  # no release recorded


def test_a_new_phase_creates_its_service(deployed):
    (deployed.project_dir / "docker-compose.extra.yml").write_text(EXTRA_FILE)
    phases = [{"name": "platform", "compose_files": ["docker-compose.platform.yml"]},
              {"name": "extra", "compose_files": ["docker-compose.extra.yml"], "backup": ["ar"],
               "migration": {"service": "migrate", "command": ["true"]}}]
    rc, result = deployed.plan(phases=phases)
    assert rc == 0, result
    # The migration's service sits in a profile: it is known, and not planned as a service of the phase.
    assert sorted(services_of(result, "extra")) == ["probe"]
    probe = services_of(result, "extra")["probe"]
    assert probe["action"] == "create" and probe["current"] is None
    assert probe["new"]["image_id"] == image_id("vpsops-demo/lb:v1") and probe["live_image_id"] is None
    assert probe["drift"] is False
    extra = result["plan"][1]
    assert (extra["backups"], extra["migration"], extra["migration_service"], extra["changes"]) == (
        ["ar"], True, "migrate", 1)
    assert result["summary"]["create"] == 1 and result["summary"]["unchanged"] == 2


def test_a_service_gone_from_the_files_is_removed_in_its_phase(deployed):
    (deployed.project_dir / "docker-compose.platform-nolb.yml").write_text(
        "services:\n  auth:\n    image: vpsops-demo/auth:${AUTH_TAG:-v1}\n    init: true\n    deploy:\n      replicas: 2\n")
    rc, result = deployed.plan(phases=[{"name": "platform", "compose_files": ["docker-compose.platform-nolb.yml"]}])
    assert rc == 0, result
    svc = services_of(result)
    assert svc["auth-lb"]["action"] == "remove" and svc["auth-lb"]["new"] is None
    assert svc["auth-lb"]["current"]["containers"] == ["%s-auth-lb-1" % PROJECT]
    assert result["summary"]["remove"] == 1


@pytest.mark.parametrize("phases, extra, message", [
    ([{"name": "platform", "compose_files": ["docker-compose.nope.yml"]}], {"files": ["docker-compose.platform.yml"]},
     "compose_files names docker-compose.nope.yml, which is not among the stack's files"),
    ([{"name": "platform", "compose_files": ["docker-compose.platform.yml"], "rollout": ["nosuch"]}], {},
     "rollout names nosuch, which is not a service of the phase"),
    ([{"name": "platform", "compose_files": ["docker-compose.platform.yml"]}], {"env_files": ["missing.env"]},
     "env_files: "),
    ([{"name": "broken", "compose_files": ["docker-compose.broken.yml"]}], {},
     "docker compose config of docker-compose.broken.yml failed"),
    ([{"name": "platform", "compose_files": ["docker-compose.platform.yml"], "migration": {"service": "nosuch"}}], {},
     "migration service 'nosuch' is not a service of the compose files"),
])
def test_bad_input_fails_naming_the_file_or_option(deployed, phases, extra, message):
    (deployed.project_dir / "docker-compose.broken.yml").write_text("services:\n  x: [not, a, mapping\n")
    rc, result = deployed.plan(phases=phases, **extra)
    assert rc != 0 and result["failed"]
    assert message in result["msg"], result["msg"]


def test_a_project_not_on_the_host_lists_only_the_phases(deployed, tmp_path):
    rc, result = deployed.plan("--check", project_dir=str(tmp_path / "absent"), phases=[
        {"name": "platform", "compose_files": ["docker-compose.platform.yml"], "backup": ["ar"]}])
    assert rc == 0, result
    assert result["project_missing"] is True
    assert result["plan"] == [{"name": "platform", "compose_files": ["docker-compose.platform.yml"], "backups": ["ar"],
                               "migration": False, "migration_service": None, "rollout": [], "services": {},
                               "changes": None}]


def test_drift_shows_a_service_changed_outside_the_tool(deployed):
    # Someone brings auth to v2 by hand, past the release store.
    run(["docker", "compose", "-p", PROJECT, "--project-directory", str(deployed.project_dir), "-f",
         str(deployed.project_dir / "docker-compose.platform.yml"), "up", "-d",
         "--no-deps", "--pull", "never", "auth"], env=dict(os.environ, AUTH_TAG="v2", AUTH_PORT=str(AUTH_PORT)))
    rc, result = deployed.plan()
    assert rc == 0, result
    auth = services_of(result)["auth"]
    assert result["drift"] == ["auth"] and auth["drift"] is True
    assert auth["live_image_id"] == image_id("vpsops-demo/auth:v1")
    assert auth["current"]["image_id"] == image_id("vpsops-demo/auth:v2")
    assert auth["action"] == "recreate"  # the deploy puts v1 back (.env says v1)
    assert services_of(result)["auth-lb"]["drift"] is False
