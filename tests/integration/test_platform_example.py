"""The example inventory deployed as it stands: inventories/prod with its compose files (files/platform),
the 7D platform of the deployment runbook, brought up by playbooks/deploy.yml on a lab host of its
own: five PostgreSQL, NATS JetStream, auth x2 (rolled out) behind its load balancer and the four
business modules, every container healthy on the release's images, the databases backed up through
the containers the inventory names. One deploy: on this loaded machine it takes minutes already (a
second one of the same release, which recreates nothing, was measured at about 80 s more).

Only what an operator would change is changed: the host's address (VPSOPS_EXAMPLE_*), the images
(platform_images=lab: the lab's locally built stand-ins, as no registry is reachable), the
directory of the JWT key pair, the watch window (vpsops_watch_seconds=0 instead of 300 s) and the
phases' timeout (deploy_phase_timeout=300: the tests beside this one load the machine).
The lab host is a network namespace with its own Docker daemon (`bin/lab host add`), so the example
runs with its own project name, container names and ports (8080, 8086-8089, 4222, 8222, 5433-5437)
beside every other test, and `bin/lab host del` removes all of it."""

import json
import os
import re
import time

import pytest

from conftest import ROOT, ansible_env, ansible_module, run

VENV_BIN = os.path.join(ROOT, ".venv", "bin")
LAB = os.path.join(ROOT, "bin", "lab")
KEY_DIR = os.path.join(ROOT, ".lab", "ssh")
INVENTORY = os.path.join(ROOT, "inventories", "prod")
PLAYBOOK = os.path.join(ROOT, "playbooks", "deploy.yml")
HOST = "it7d"  # the lab host's name (bin/lab host); no other test uses it
INVENTORY_HOST = "prod-vps-1"
PROJECT = "7d-platform"
TAG = "v1"
# container: (compose service, the lab image the release must run), from the runbook's names
EXPECTED = {
    "7d-nats": ("nats", "vpsops-lab/nats:2.15"),
    "7d-auth-postgres": ("auth-postgres", "vpsops-lab/postgres:15"),
    "7d-ar-postgres": ("ar-postgres", "vpsops-lab/postgres:15"),
    "7d-subscriptions-postgres": ("subscriptions-postgres", "vpsops-lab/postgres:15"),
    "7d-payments-postgres": ("payments-postgres", "vpsops-lab/postgres:15"),
    "7d-notifications-postgres": ("notifications-postgres", "vpsops-lab/postgres:15"),
    "7d-auth-lb": ("auth-lb", "vpsops-demo/lb:%s" % TAG),
    "7d-ar": ("ar", "vpsops-demo/ar:%s" % TAG),
    "7d-subscriptions": ("subscriptions", "vpsops-demo/ar:%s" % TAG),
    "7d-payments": ("payments", "vpsops-demo/payments:%s" % TAG),
    "7d-notifications": ("notifications", "vpsops-demo/payments:%s" % TAG),
}
AUTH_IMAGE = "vpsops-demo/auth:%s" % TAG
MODULE_PORTS = {"ar": 8086, "subscriptions": 8087, "payments": 8088, "notifications": 8089}
DATABASES = {"auth_db", "ar_db", "subscriptions_db", "payments_db", "notifications_db"}


@pytest.fixture
def example_host(lab, tmp_path, monkeypatch):
    """A lab host for the example, the inventory pointed at it, and auth's JWT key pair."""
    run([LAB, "host", "add", HOST])
    try:
        host = dict((h["name"], h) for h in json.loads(run([LAB, "host", "list"]).stdout))[HOST]
        for name, value in {"VPSOPS_EXAMPLE_HOST": host["address"], "VPSOPS_EXAMPLE_PORT": "22",
                            "VPSOPS_EXAMPLE_USER": "root",
                            "VPSOPS_EXAMPLE_KEY": os.path.join(KEY_DIR, "id_ed25519"),
                            "VPSOPS_EXAMPLE_KNOWN_HOSTS": os.path.join(KEY_DIR, "known_hosts"),
                            "VPSOPS_EXAMPLE_IMAGES": "lab",
                            "VPSOPS_AUDIT_LOG": str(tmp_path / "audit.jsonl")}.items():
            monkeypatch.setenv(name, value)
        # The host's filesystem outside /var/lib/docker, /var/lib/vpsops, /var/backups, /etc/docker
        # and /run is this machine's: the key pair in tmp_path is on the host.
        keys = tmp_path / "jwt"
        keys.mkdir()
        run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", str(keys / "private.pem")])
        run(["openssl", "pkey", "-in", str(keys / "private.pem"), "-pubout", "-out", str(keys / "public.pem")])
        for name in ("private.pem", "public.pem"):
            os.chmod(keys / name, 0o600)
        host["keys"] = str(keys)
        host["audit_log"] = str(tmp_path / "audit.jsonl")
        yield host
    finally:
        run([LAB, "host", "del", HOST], check=False)


def deploy(host):
    return run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", INVENTORY, PLAYBOOK,
                "-e", "release_tag=%s" % TAG, "-e", "platform_jwt_keys_dir=%s" % host["keys"],
                # No 300 s watch window; and on this machine, loaded by the tests beside this one,
                # the platform's containers can take more than the default 120 s per phase.
                "-e", "vpsops_watch_seconds=0", "-e", "deploy_phase_timeout=300"],
               check=False, env=ansible_env(), timeout=1500)


def recap(proc):
    found = re.search(r"%s\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)" % INVENTORY_HOST,
                      proc.stdout)
    assert found, proc.stdout[-3000:]
    return tuple(map(int, found.groups()))


def containers(host):
    """{name: inspect data} of the project's containers in the host's own Docker daemon."""
    docker = ["docker", "-H", host["docker_host"]]
    ids = run(docker + ["ps", "-aq", "--filter", "label=com.docker.compose.project=%s" % PROJECT]).stdout.split()
    assert ids, "no container of %s on %s" % (PROJECT, HOST)
    return dict((c["Name"].lstrip("/"), c) for c in json.loads(run(docker + ["inspect"] + ids).stdout))


def docker_agrees_healthy(host):
    """The containers once Docker's own healthcheck has judged each of them.

    The deploy does not wait for Docker's healthcheck clock: it runs each container's healthcheck
    itself while Docker still says `starting` (docs/checks.md), so right after it Docker may not
    have run its first check yet (one `interval`, 5 s here, later on a loaded machine). Docker's
    own verdict must then agree within a few rounds; `unhealthy` fails at once."""
    found = containers(host)
    started = dict((name, c["State"]["StartedAt"]) for name, c in found.items())
    deadline = time.monotonic() + 90
    while True:
        health = dict((name, c["State"].get("Health", {}).get("Status")) for name, c in found.items())
        assert "unhealthy" not in health.values(), health
        if "starting" not in health.values() or time.monotonic() > deadline:
            return found, started
        time.sleep(1)
        found = containers(host)


def image_id(ref):
    """The image ID in the lab's daemon; every lab host's daemon holds the lab's images under the same IDs."""
    return run(["docker", "image", "inspect", "--format", "{{.Id}}", ref]).stdout.strip()


def host_get(url):
    """GET a URL inside the lab host (its loopback is its own): (status, JSON body)."""
    proc = run([LAB, "host", "exec", HOST, "--", "curl", "-s", "--max-time", "5", "-w", "\\n%{http_code}", url])
    body, _newline, status = proc.stdout.rpartition("\n")
    return int(status), json.loads(body)


def audit(host):
    with open(host["audit_log"]) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def vault_values():
    path = os.path.join(INVENTORY, "group_vars", "all", "vault.yml")
    with open(path) as handle:
        return [m.group(1) for m in re.finditer(r"^vault_\w+: (\S+)$", handle.read(), re.M) if m.group(1) != '""']


def test_the_prod_example_deploys_the_whole_platform(example_host):
    host = example_host
    first = deploy(host)
    out = first.stdout + first.stderr
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
    assert recap(first)[2:] == (0, 0)
    # Secrets only ever travel through vault_* variables and files; none is printed.
    with open(os.path.join(host["keys"], "private.pem")) as handle:
        key_lines = [line for line in handle.read().splitlines() if len(line) > 40]
    for secret in vault_values() + key_lines:
        assert secret not in out, "a secret of the example appears in the deploy's output"

    # Every service the runbook lists, healthy, on the release's images: 5 PostgreSQL, NATS, auth
    # x2 + its load balancer, four modules.
    found, started = docker_agrees_healthy(host)
    auth = sorted(name for name, c in found.items() if c["Config"]["Labels"]["com.docker.compose.service"] == "auth")
    assert len(auth) == 2 and all(name.startswith("%s-auth-" % PROJECT) for name in auth), sorted(found)
    assert set(found) == set(EXPECTED) | set(auth), sorted(found)
    for name, c in found.items():
        service, ref = EXPECTED.get(name, ("auth", AUTH_IMAGE))
        assert c["Config"]["Labels"]["com.docker.compose.service"] == service, name
        assert c["State"]["Status"] == "running" and c["State"]["Health"]["Status"] == "healthy", (name, c["State"])
        assert c["State"]["StartedAt"] == started[name], (name, "restarted after the deploy")
        assert c["RestartCount"] == 0, name
        # pinned by the release: the image ID the lab image's tag names
        assert c["Image"] == image_id(ref), (name, ref)
        assert c["Config"]["Image"].startswith("vpsops/%s/%s:id-" % (PROJECT, service)), (name, c["Config"]["Image"])

    # auth through its load balancer, answered by both replicas; each module on its port.
    instances = set()
    for _attempt in range(12):
        status, body = host_get("http://127.0.0.1:8080/api/health")
        assert status == 200 and body["service"] == "auth" and body["release"] == TAG, body
        instances.add(body["instance"])
        if len(instances) == 2:
            break
    assert instances == set(found[name]["Config"]["Hostname"] for name in auth), instances
    for module, port in MODULE_PORTS.items():
        status, body = host_get("http://127.0.0.1:%d/api/health" % port)
        assert status == 200 and (body["service"], body["release"]) == (module, TAG), (module, body)

    # The release is live and the lock released; auth came up through the rollout, the others
    # through up; the databases were backed up through the containers the inventory names.
    rc, info = ansible_module("compose_release_info", {"stack": PROJECT}, host=INVENTORY_HOST, inventory=INVENTORY)
    assert rc == 0, info
    live = info["live"]
    assert live and info["lock"] is None and info["releases"][0]["id"] == live, info
    assert info["releases"][0]["status"] == "live", info["releases"][0]
    phases = dict((e["phase"], e["data"]) for e in audit(host) if e["event"] == "phase_finished")
    assert phases["platform"]["rolled_out"] == ["auth"], phases["platform"]
    infrastructure = set(n for n, (s, _r) in EXPECTED.items() if s == "nats" or s.endswith("-postgres"))
    assert set(phases["infrastructure"]["recreated"]) == infrastructure
    dumps = os.listdir(os.path.join(host["root"], "backups", "vpsops", PROJECT))
    assert set(re.sub(r"_\d{8}T\d{6}Z_.*", "", name) for name in dumps if name.endswith(".dump")) == DATABASES, dumps
