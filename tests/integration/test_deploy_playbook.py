"""The deploy playbook and the health_wait module, run by Ansible over SSH against the lab host."""

import json
import os
import re

import pytest

from conftest import ROOT, Stack, ansible_env, ansible_module, container_names, http_json, run

PLAYBOOK = os.path.join(ROOT, "playbooks", "deploy.yml")
ROLLBACK_PLAYBOOK = os.path.join(ROOT, "playbooks", "rollback.yml")
INVENTORY = os.path.join(ROOT, "inventories", "lab")
ANSIBLE = os.path.join(ROOT, ".venv", "bin")


def stack_vars(st, tag="v1", phases=None):
    """vpsops_stack for a Stack: its project name, ports and fresh passwords."""
    p = st.ports
    env = {"RELEASE_TAG": tag}
    env.update({k: str(v) for k, v in p.items()})
    env.update(st.passwords)
    default_phases = [
        {"name": "infrastructure", "compose_files": ["docker-compose.infrastructure.yml"],
         "checks": [{"name": "nats", "type": "http",
                     "url": "http://127.0.0.1:%d/healthz?js-enabled-only=true" % p["NATS_MONITOR_PORT"]},
                    {"name": "ar-db", "type": "postgres", "port": p["AR_DB_PORT"], "db": "ar_db",
                     "login_user": "ar_user", "login_password": st.passwords["AR_DB_PASSWORD"]},
                    {"name": "payments-db", "type": "tcp", "port": p["PAYMENTS_DB_PORT"]}]},
        {"name": "platform", "compose_files": ["docker-compose.platform.yml"],
         "checks": [{"name": "auth", "type": "http", "url": "http://127.0.0.1:%d/api/health" % p["AUTH_PORT"],
                     "json": {"status": "ok"}}]},
        {"name": "modules", "compose_files": ["docker-compose.modules.yml"],
         "checks": [{"name": "ar", "type": "http", "url": "http://127.0.0.1:%d/api/health" % p["AR_PORT"],
                     "json": {"status": "ok"}},
                    {"name": "payments", "type": "http", "url": "http://127.0.0.1:%d/api/health" % p["PAYMENTS_PORT"],
                     "json": {"status": "ok"}},
                    {"name": "ar-subscribed", "type": "log", "container": st.container("ar"),
                     "pattern": "Subscribed to", "fail_pattern": "FATAL|panic"},
                    {"name": "streams", "type": "nats", "url": "http://127.0.0.1:%d" % p["NATS_MONITOR_PORT"],
                     "streams": ["AR_EVENTS", "PAYMENTS_EVENTS"]}]},
    ]
    return {
        "vpsops_stack": {"name": st.project, "source": os.path.join(ROOT, "lab", "stack"), "env": env,
                         "phases": default_phases if phases is None else phases},
        "deploy_phase_timeout": 90,
    }


def playbook(tmp_path, extra_vars, *args, check=False, path=PLAYBOOK):
    vars_file = tmp_path / ("vars-%d.json" % len(list(tmp_path.iterdir())))
    vars_file.write_text(json.dumps(extra_vars))
    return run([os.path.join(ANSIBLE, "ansible-playbook"), "-i", INVENTORY, path, "-e", "@%s" % vars_file]
               + list(args), check=check, env=ansible_env())


def releases(st):
    rc, info = ansible_module("compose_release_info", {"stack": st.project})
    assert rc == 0, info
    return info


def container_ids(names):
    return run(["docker", "inspect", "--format", "{{.Id}}"] + list(names)).stdout.split()


def images(project):
    """{container name: image id} of a compose project."""
    names = container_names(project)
    out = run(["docker", "inspect", "--format", "{{.Name}} {{.Image}}"] + names).stdout if names else ""
    return dict(line.lstrip("/").split() for line in out.splitlines())


def recap(output):
    match = re.search(r"lab1\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output)
    assert match, output[-2000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups())))


@pytest.fixture
def deployed(lab):
    st = Stack("vpsops-itd", 22000)
    st.down()
    run(["rm", "-rf", "/var/lib/vpsops/%s" % st.project])  # what an interrupted run left
    yield st
    st.down()
    run(["rm", "-rf", "/var/lib/vpsops/%s" % st.project])


def test_deploy_with_vvv_prints_no_secret_recreates_only_what_changed_and_rolls_back_one_service(deployed, tmp_path):
    # Idempotence, rollback.yml and a release that never becomes healthy are the Molecule scenario
    # `default` (molecule/default); this test covers what it does not: -vvv output, the private env
    # file, the plan in check mode, the infrastructure containers kept across an upgrade, and
    # rollback.yml for one service.
    first = playbook(tmp_path, stack_vars(deployed), "-vvv")
    assert first.returncode == 0, first.stdout[-4000:]
    assert recap(first.stdout)["changed"] > 0
    for secret in deployed.passwords.values():
        assert secret not in first.stdout
        assert secret not in first.stderr
    for port_key in ("AUTH_PORT", "AR_PORT", "PAYMENTS_PORT"):
        assert http_json(deployed.url(port_key))[1]["release"] == "v1"
    env_file = "/var/lib/vpsops/%s/project/.env" % deployed.project
    assert oct(os.stat(env_file).st_mode & 0o777) == "0o600"
    assert deployed.passwords["AR_DB_PASSWORD"] in open(env_file).read()

    checked = playbook(tmp_path, stack_vars(deployed, tag="v2"), "--check")
    assert checked.returncode == 0, checked.stdout[-4000:]
    assert http_json(deployed.url("AR_PORT"))[1]["release"] == "v1"  # check mode changed nothing
    # ... and printed the plan: per phase the changes, per service the image now and next.
    plan = checked.stdout
    assert "phase infrastructure: 0 change(s)" in plan and "phase modules: 2 change(s)" in plan, plan[-4000:]
    for service in ("auth", "ar", "payments"):
        assert "%s: recreate vpsops-demo/%s:v1 -> vpsops-demo/%s:v2" % (service, service, service) in plan
    assert "nats: unchanged vpsops-lab/nats:2.15 -> vpsops-lab/nats:2.15" in plan
    assert len(releases(deployed)["releases"]) == 1

    infrastructure = ("vpsops-itd-nats-1", "vpsops-itd-ar-postgres-1", "vpsops-itd-payments-postgres-1")
    before = container_ids(infrastructure)
    upgraded = playbook(tmp_path, stack_vars(deployed, tag="v2"))
    assert upgraded.returncode == 0, upgraded.stdout[-4000:]
    for port_key in ("AUTH_PORT", "AR_PORT", "PAYMENTS_PORT"):
        assert http_json(deployed.url(port_key))[1]["release"] == "v2"
    # The infrastructure did not move: NATS and the databases kept their containers (their images
    # are pinned by the same reference in both releases).
    assert container_ids(infrastructure) == before
    info = releases(deployed)
    assert [r["status"] for r in info["releases"]] == ["live", "superseded"], info["releases"]
    assert info["live"] == info["releases"][0]["id"] and info["lock"] is None

    # --check of an older release with v2 live: the plan, exit 0, nothing recorded, no lock, and
    # the project directory still shows the live release.
    older = playbook(tmp_path, stack_vars(deployed, tag="v1"), "--check")
    assert older.returncode == 0, older.stdout[-4000:]
    assert "auth: recreate vpsops-demo/auth:v2 -> vpsops-demo/auth:v1" in older.stdout, older.stdout[-4000:]
    assert releases(deployed)["releases"] == info["releases"] and releases(deployed)["lock"] is None
    assert "RELEASE_TAG='v2'" in open(env_file).read()

    # One service rolled back with rollback.yml: payments runs v1 again, the rest stays at v2, and
    # the mix is recorded as a release of its own.
    others = container_ids(("vpsops-itd-auth-1", "vpsops-itd-ar-1") + infrastructure)
    back = playbook(tmp_path, {"vpsops_stack": {"name": deployed.project}, "rollback_services": ["payments"]},
                    path=ROLLBACK_PLAYBOOK)
    assert back.returncode == 0, back.stdout[-4000:]
    assert http_json(deployed.url("PAYMENTS_PORT"))[1]["release"] == "v1"
    assert http_json(deployed.url("AR_PORT"))[1]["release"] == "v2"
    assert container_ids(("vpsops-itd-auth-1", "vpsops-itd-ar-1") + infrastructure) == others
    after = releases(deployed)
    assert len(after["releases"]) == 3 and after["live"] == after["releases"][0]["id"] != info["live"]
    assert after["lock"] is None


@pytest.mark.parametrize("phases, message", [
    ([], "vpsops_stack.phases must be a non-empty list"),
    ([{"name": "infra"}], "missing required arguments: compose_files found in vpsops_stack -> phases"),
    ([{"name": "infra", "compose_files": ["docker-compose.infrastructure.yml"], "bogus": 1}],
     "vpsops_stack.phases.bogus. Supported parameters include"),
    ([{"name": "infra", "compose_files": ["docker-compose.infrastructure.yml"], "timeout": "soon"}],
     "argument 'timeout' is of type str found in 'vpsops_stack -> phases'. and we were unable to convert to int"),
    ([{"name": "infra", "compose_files": ["docker-compose.infrastructure.yml"], "backup": ["ar"]}],
     "vpsops_stack.phases[infra]: backup names [\"ar\"] that vpsops_stack.databases does not define"),
    ([{"name": "infra", "compose_files": ["docker-compose.infrastructure.yml"], "migration": {"command": ["x"]}}],
     "missing required arguments: service found in vpsops_stack -> phases -> migration"),
    ([{"name": "a", "compose_files": ["docker-compose.platform.yml"]},
      {"name": "a", "compose_files": ["docker-compose.modules.yml"]}], "unique 'name'"),
])
def test_bad_stacks_fail_before_anything_changes(lab, tmp_path, phases, message):
    st = Stack("vpsops-itbad", 23000)
    result = playbook(tmp_path, stack_vars(st, phases=phases))
    assert result.returncode != 0
    assert message in result.stdout
    assert not os.path.exists("/var/lib/vpsops/%s" % st.project)
    assert container_names(st.project) == []


def test_a_stack_name_that_is_no_project_name_is_refused(lab, tmp_path):
    st = Stack("Bad Name", 23000)
    result = playbook(tmp_path, stack_vars(st))
    assert result.returncode != 0
    assert "vpsops_stack needs 'name' (lowercase letters, digits" in result.stdout
    assert not os.path.exists("/var/lib/vpsops/Bad Name")


def test_an_env_value_with_quotes_and_newlines_is_planned_without_printing_it(lab, tmp_path):
    """A value with a quote, a `$` and a newline (a PEM key) is written so that compose reads it
    exactly (tests/integration/test_env_values.py): the deploy's checks pass it (--check: compose
    config reads the new .env) and print no line of it."""
    st = Stack("vpsops-itquote", 23000)
    values = stack_vars(st)
    values["vpsops_stack"]["env"]["AR_DB_PASSWORD"] = "it's-secret-4711"
    values["vpsops_stack"]["env"]["JWT_PRIVATE_KEY"] = "-----BEGIN KEY-----\nline-one-$ecret-8812\n-----END KEY-----"
    result = playbook(tmp_path, values, "--check")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "release " in result.stdout and "would be recorded" in result.stdout, result.stdout[-3000:]
    for secret in ("it's-secret-4711", "line-one-$ecret-8812"):
        assert secret not in result.stdout + result.stderr
    assert not os.path.exists("/var/lib/vpsops/%s/project/.env" % st.project)
    run(["rm", "-rf", "/var/lib/vpsops/%s" % st.project])


def test_check_mode_plans_an_image_it_would_pull_and_pulls_nothing(lab, tmp_path):
    """--check of a release whose images are not on the host (no registry reachable here: a pull
    would fail): exit 0, the plan names what a deploy would pull, nothing pulled or recorded."""
    st = Stack("vpsops-itcheckpull", 23000)
    values = stack_vars(st, tag="v9-not-on-this-host")
    result = playbook(tmp_path, values, "--check")
    assert result.returncode == 0, result.stdout[-3000:]
    for service in ("auth", "ar", "payments"):
        assert "%s: would pull vpsops-demo/%s:v9-not-on-this-host" % (service, service) in result.stdout, \
            result.stdout[-3000:]
    assert "would be recorded" in result.stdout
    images = run(["docker", "images", "-q", "vpsops-demo/*:v9-not-on-this-host"]).stdout.split()
    assert images == []
    assert not os.path.exists("/var/lib/vpsops/%s/releases" % st.project)
    run(["rm", "-rf", "/var/lib/vpsops/%s" % st.project])


# --------------------------------------------------------------------------------------------
# health_wait as Ansible runs it
# --------------------------------------------------------------------------------------------
def health_wait(args, *options):
    return ansible_module("health_wait", args, *options)


def test_health_wait_module_reports_every_check(stack):
    rc, result = health_wait({
        "timeout": 30, "consecutive": 2, "interval": 0.2,
        "checks": [{"name": "auth", "type": "http", "url": stack.url("AUTH_PORT"), "json": {"status": "ok"}},
                   {"name": "ar-db", "type": "tcp", "port": stack.ports["AR_DB_PORT"]}],
        "containers": [stack.container("ar"), stack.container("nats")],
    })
    assert rc == 0, result
    assert result["ready"] is True and result["changed"] is False
    assert set(result["checks"]) == {"auth", "ar-db", "container %s" % stack.container("ar"),
                                     "container %s" % stack.container("nats")}
    for check in result["checks"].values():
        assert check["ready"] and check["attempts"] >= 2


def test_health_wait_module_probes_in_check_mode(stack):
    rc, result = health_wait({"timeout": 3, "checks": [
        {"name": "auth", "type": "http", "url": stack.url("AUTH_PORT"), "json": {"status": "ok"}},
        {"name": "nothing", "type": "tcp", "port": 1}]}, "--check")
    assert rc != 0  # the probes really ran: the closed port is reported
    assert result["checks"]["auth"]["ready"] is True
    assert result["checks"]["nothing"]["attempts"] >= 1
    assert result["changed"] is False


def test_health_wait_module_names_what_is_not_ready(stack):
    rc, result = health_wait({
        "timeout": 2, "interval": 0.2,
        "checks": [{"name": "auth", "type": "http", "url": stack.url("AUTH_PORT"), "json": {"status": "degraded"}},
                   {"name": "nothing", "type": "tcp", "port": 1}],
    })
    assert rc != 0
    assert result["ready"] is False
    assert sorted(result["not_ready"]) == ["auth", "nothing"]
    assert "2 of 2 checks not ready" in result["msg"]
    assert 'does not contain {"status": "degraded"}' in result["msg"]


def test_health_wait_module_fails_fast_on_an_exited_container(stack):
    name = "vpsops-it-exited"
    run(["docker", "rm", "-f", name], check=False)
    run(["docker", "run", "--name", name, "vpsops-lab/base:bookworm", "sh", "-c", "exit 7"], check=False)
    try:
        rc, result = health_wait({"timeout": 60, "containers": [name],
                                  "checks": [{"name": "never", "type": "tcp", "port": 1}]})
    finally:
        run(["docker", "rm", "-f", name], check=False)
    assert rc != 0
    assert result["elapsed"] < 30
    assert "failed fast" in result["msg"] and "exit code 7" in result["msg"]


@pytest.mark.parametrize("args, message", [
    ({"checks": [{"type": "http"}]}, "checks[0] (type http) needs 'url'"),
    ({"checks": [{"type": "ftp"}]}, "value of type must be one of: command, container, dlq, http, kafka_consumer, log, "
                                    "nats, nats_consumer, postgres, redis, tcp"),
    ({"checks": [{"type": "tcp", "port": "x"}]}, "port"),
    ({"checks": [{"type": "tcp", "port": 1, "colour": "red"}]}, "colour"),
    ({"checks": [], "containers": []}, "give at least one check"),
    ({"checks": [{"type": "tcp", "port": 1}], "timeout": -1}, "timeout must be between"),
    ({"checks": [{"type": "tcp", "port": 1}], "consecutive": 0}, "consecutive must be 1 or more"),
])
def test_health_wait_module_bad_input(lab, args, message):
    rc, result = health_wait(args)
    assert rc != 0
    assert message in result["msg"]
    assert "Traceback" not in json.dumps(result)
