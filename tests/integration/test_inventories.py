"""The example inventories (inventories/prod, inventories/staging): the platform of the deployment
runbook as one vpsops_stack, consistent with its compose files (files/platform), secrets only
through vault_* variables, and usable against the lab host in check mode by pointing them there
with VPSOPS_EXAMPLE_* environment variables. test_platform_example.py deploys it."""

import json
import os
import re

import pytest
import yaml

from conftest import ROOT, SSH_PORT, ansible_env, run

VENV_BIN = os.path.join(ROOT, ".venv", "bin")
COMPOSE_DIR = os.path.join(ROOT, "files", "platform")
INVENTORIES = ["prod", "staging"]
PHASES = ["infrastructure", "platform", "modules"]
DATABASES = {
    # name: (container, db, user, published port) as the runbook sets them up
    "auth": ("7d-auth-postgres", "auth_db", "auth_user", 5433),
    "ar": ("7d-ar-postgres", "ar_db", "ar_user", 5434),
    "subscriptions": ("7d-subscriptions-postgres", "subscriptions_db", "subscriptions_user", 5435),
    "payments": ("7d-payments-postgres", "payments_db", "payments_user", 5436),
    "notifications": ("7d-notifications-postgres", "notifications_db", "notifications_user", 5437),
}
HTTP_PORTS = {8080, 8086, 8087, 8088, 8089}
SECRET_KEY = re.compile(r"password|token|secret|private|notify_url", re.I)
VAULT_REF = re.compile(r"^\{\{\s*(vault_[a-z0-9_]+)\s*\}\}$")


def inventory_list(name):
    proc = run([os.path.join(VENV_BIN, "ansible-inventory"), "-i", os.path.join(ROOT, "inventories", name), "--list"],
               env=ansible_env())
    return proc, json.loads(proc.stdout)


@pytest.fixture(scope="module", params=INVENTORIES)
def listed(request):
    proc, data = inventory_list(request.param)
    hosts = data["vpsops_hosts"]["hosts"]
    assert len(hosts) == 1, hosts
    return request.param, proc, data["_meta"]["hostvars"][hosts[0]]


def secrets_of(value, path=""):
    """(path, value) of every string under a key that names a secret."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            sub = "%s.%s" % (path, key) if path else key
            if isinstance(item, str) and SECRET_KEY.search(key):
                found.append((sub, item))
            else:
                found.extend(secrets_of(item, sub))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(secrets_of(item, "%s[%d]" % (path, index)))
    return found


def test_lists_without_warnings(listed):
    name, proc, hostvars = listed
    assert "WARNING" not in proc.stderr and "DEPRECATION" not in proc.stderr, proc.stderr
    assert "ERROR" not in proc.stderr, proc.stderr


def test_the_stack_has_the_three_phases_and_five_databases(listed):
    name, proc, hostvars = listed
    stack = hostvars["vpsops_stack"]
    assert stack["name"] == "7d-platform"
    assert [phase["name"] for phase in stack["phases"]] == PHASES
    for phase in stack["phases"]:
        assert phase["compose_files"] == ["docker-compose.%s.yml" % phase["name"]]
        assert phase["checks"], phase["name"]
        assert set(phase.get("backup", [])) <= set(DATABASES), phase["name"]
    assert set(stack["databases"]) == set(DATABASES)
    for db_name, (container, db, user, _port) in DATABASES.items():
        entry = stack["databases"][db_name]
        assert (entry["container"], entry["db"], entry["login_user"]) == (container, db, user)
        assert entry["login_password"] == "{{ vault_%s_db_password }}" % db_name
    # Every database is backed up before the infrastructure phase changes its server.
    assert set(stack["phases"][0]["backup"]) == set(DATABASES)
    assert stack["backup"]["dest"] == "/var/backups/vpsops/7d-platform"
    assert stack["nats_url"] == "nats://127.0.0.1:4222"


def test_checks_cover_the_runbook(listed):
    name, proc, hostvars = listed
    stack = hostvars["vpsops_stack"]
    checks = [check for phase in stack["phases"] for check in phase["checks"]]
    by_type = {}
    for check in checks:
        by_type.setdefault(check["type"], []).append(check)
    assert {"nats", "nats_consumer", "dlq", "postgres", "http", "log"} <= set(by_type)
    assert {c["port"] for c in by_type["postgres"]} == {port for *_rest, port in DATABASES.values()}
    assert {int(re.search(r":(\d+)/", c["url"]).group(1)) for c in by_type["http"]} == HTTP_PORTS
    assert all(c["url"] == "http://127.0.0.1:8222" for c in by_type["nats"] + by_type["nats_consumer"])
    streams = set().union(*(c.get("streams", []) for c in by_type["nats"]))
    assert "AR_EVENTS" in streams and {c["stream"] for c in by_type["nats_consumer"]} <= streams
    for check in by_type["nats_consumer"]:
        assert check["consumer"] and check["max_pending"] >= 0
    assert {c["db"] for c in by_type["dlq"]} == {"ar_db", "payments_db", "notifications_db"}
    for check in by_type["dlq"]:
        assert check["max_new"] == 0 and check["container"].endswith("-postgres")
        assert VAULT_REF.match(check["login_password"]), check["name"]
    names = [c["name"] for c in checks]
    assert len(names) == len(set(names)), names
    smoke_ports = {int(re.search(r":(\d+)/", t["url"]).group(1)) for t in stack["smoke_tests"]}
    assert HTTP_PORTS <= smoke_ports
    slo = stack["slo"]
    assert slo["endpoints"] and 0 < slo["max_error_rate"] < 1 and slo["max_p95_ratio"] > 1 and slo["requests"] > 0


def compose_services():
    """{service: its definition} of the example's compose files, with the file each comes from."""
    services = {}
    for name in sorted(os.listdir(COMPOSE_DIR)):
        with open(os.path.join(COMPOSE_DIR, name)) as handle:
            for service, spec in yaml.safe_load(handle)["services"].items():
                assert service not in services, "%s is defined twice" % service
                services[service] = dict(spec, file=name)
    return services


def test_the_stack_fits_its_compose_files(listed):
    """Every file, container and port the stack names is one its compose files define: a rollout
    service has replicas and no container_name (the rollout starts new containers beside the old
    ones under other names), and every other container a check or a backup addresses by name has
    the container_name the compose files fix."""
    name, proc, hostvars = listed
    stack = hostvars["vpsops_stack"]
    services = compose_services()
    assert sorted(set(s["file"] for s in services.values())) == sorted(
        f for phase in stack["phases"] for f in phase["compose_files"])
    fixed = dict((s["container_name"], service) for service, s in services.items() if s.get("container_name"))
    for phase in stack["phases"]:
        of_phase = set(service for service, s in services.items() if s["file"] in phase["compose_files"])
        for service in phase.get("rollout", []):
            assert service in of_phase, (phase["name"], service)
            assert "container_name" not in services[service], "%s sets container_name: it cannot be rolled out" % service
            assert services[service]["deploy"]["replicas"] >= 2, service
        for check in phase["checks"]:
            if check.get("container"):
                assert check["container"] in fixed, "%s names container %s, which no compose file fixes" % (
                    check["name"], check["container"])
    for db_name, entry in stack["databases"].items():
        service = fixed.get(entry["container"])
        assert service and services[service]["environment"]["POSTGRES_DB"] == "${%s_POSTGRES_DB:-%s}" % (
            db_name.upper(), entry["db"]), db_name
    # Auth's replicas: two, behind the load balancer, in the rollout of their phase.
    assert [p["rollout"] for p in stack["phases"] if p.get("rollout")] == [["auth"]]
    # The ports the checks, smoke tests and SLO probe are the ones the compose files publish.
    published = set(int(port.split(":")[-2]) for s in services.values() for port in s.get("ports", []))
    checks = [c for phase in stack["phases"] for c in phase["checks"]]
    urls = [c["url"] for c in checks + stack["smoke_tests"] + stack["slo"]["endpoints"] if c.get("url")]
    probed = set(int(re.search(r"://[^/]+:(\d+)", url).group(1)) for url in urls + [stack["nats_url"]])
    probed |= set(c["port"] for c in checks if c.get("port"))
    assert probed <= published, probed - published
    # Every variable the compose files require is in the stack's env, and every image the env
    # names by default is the registry's.
    text = "".join(open(os.path.join(COMPOSE_DIR, f)).read() for f in os.listdir(COMPOSE_DIR))
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert required and required <= set(stack["env"]), required - set(stack["env"])
    registry = hostvars["platform_image_refs"]["registry"]
    defaults = dict(re.findall(r"\$\{(\w+_IMAGE):-([^}:]+(?::[\w.-]+)?)\}", text))
    assert defaults == dict(("%s_IMAGE" % key.upper(), ref) for key, ref in registry.items()), defaults
    assert set(hostvars["platform_image_refs"]["lab"]) == set(registry)
    for variable in defaults:
        key = variable[:-len("_IMAGE")].lower()
        assert stack["env"][variable] == "{{ platform_image_refs[platform_images].%s }}" % key, variable


def test_secrets_come_only_from_vault_variables(listed):
    name, proc, hostvars = listed
    vault = {key: value for key, value in hostvars.items() if key.startswith("vault_")}
    assert {"vault_%s_db_password" % db for db in DATABASES} <= set(vault)
    stack_secrets = secrets_of({"vpsops_stack": hostvars["vpsops_stack"],
                                "vpsops_notify_url": hostvars.get("vpsops_notify_url", "")})
    assert len(stack_secrets) >= 2 * len(DATABASES), stack_secrets
    for path, value in stack_secrets:
        match = VAULT_REF.match(value)
        assert match, "%s is not a vault_* reference: %r" % (path, value)
        assert match.group(1) in vault, "%s refers to %s, which vault.yml does not define" % (path, match.group(1))
    # The placeholder values appear under their vault_* names only, nowhere else in the listing.
    rest = json.dumps({key: value for key, value in hostvars.items() if not key.startswith("vault_")})
    for key, value in vault.items():
        if value:
            assert str(value) not in rest, "the value of %s appears outside vault.yml" % key
            assert "PLACEHOLDER" in str(value), "%s in the example vault.yml is not a placeholder" % key


@pytest.mark.parametrize("name", INVENTORIES)
def test_the_vault_file_is_a_marked_example(name):
    path = os.path.join(ROOT, "inventories", name, "group_vars", "all", "vault.yml")
    with open(path) as handle:
        text = handle.read()
    assert not text.startswith("$ANSIBLE_VAULT")
    assert "EXAMPLE FILE, NOT ENCRYPTED" in text
    assert "ansible-vault encrypt inventories/%s/group_vars/all/vault.yml" % name in text


def lab_env():
    env = ansible_env()
    ssh_dir = os.path.join(ROOT, ".lab", "ssh")
    env.update({"VPSOPS_EXAMPLE_HOST": "127.0.0.1", "VPSOPS_EXAMPLE_PORT": str(SSH_PORT),
                "VPSOPS_EXAMPLE_USER": "root", "VPSOPS_EXAMPLE_KEY": os.path.join(ssh_dir, "id_ed25519"),
                "VPSOPS_EXAMPLE_KNOWN_HOSTS": os.path.join(ssh_dir, "known_hosts")})
    return env


@pytest.mark.parametrize("name", INVENTORIES)
def test_pointed_at_the_lab_the_host_playbook_runs_in_check_mode(lab, tmp_path, name):
    """The connection settings come from VPSOPS_EXAMPLE_*: the example reaches the lab host over
    SSH with host key checking, and the host playbook's check mode finds everything in place and
    creates nothing."""
    state, backups = tmp_path / "state", tmp_path / "backups"
    proc = run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", os.path.join(ROOT, "inventories", name),
                os.path.join(ROOT, "playbooks", "host.yml"), "--check", "--diff",
                "-e", "host_state_root=%s" % state, "-e", "host_backup_root=%s" % backups],
               check=False, env=lab_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    recap = re.search(r"%s-vps-1\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)" % name, proc.stdout)
    assert recap, proc.stdout[-2000:]
    ok, changed, unreachable, failed = map(int, recap.groups())
    assert (changed, unreachable, failed) == (1, 0, 0), proc.stdout[-2000:]
    assert not state.exists() and not backups.exists()
    assert "PLACEHOLDER" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("name", INVENTORIES)
def test_without_the_environment_it_targets_the_example_address(name):
    env = ansible_env()
    for key in list(env):
        if key.startswith("VPSOPS_EXAMPLE_"):
            del env[key]
    proc = run([os.path.join(VENV_BIN, "ansible"), "-i", os.path.join(ROOT, "inventories", name), "vpsops_hosts",
                "-m", "ansible.builtin.debug", "-a", "msg={{ ansible_host }}:{{ ansible_port }}:{{ ansible_user }}"],
               env=env)
    assert re.search(r"203\.0\.113\.\d+:22:deploy", proc.stdout), proc.stdout
