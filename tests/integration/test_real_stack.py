"""The real-stack proof: a stack written the way seed 001's runbook runs it (tests/integration/stacks/
fieldops), with its inventory as a new user writes it (hosts.yml, group_vars with the stack, an
ansible-vault encrypted vault.yml), deployed by playbooks/deploy.yml, rollback.yml, host.yml and
status.yml over SSH on the lab host; the first deploy, the broken release and the status run as AWX
runs a job (ansible_runner, its events kept and searched).

The stack: Redis with its data in a volume and a model-loader job (phase infrastructure); a service
built on the host from its Dockerfile that reads a multi-line PEM signing key (a compose secret
file), nginx as the gateway with its declarative config bind-mounted, on an external network, and a
gateway configurator job that publishes the route table (a compose config file) and checks it
through the gateway (phase platform); a before hook on the host, an after hook in Redis.

One run, shared by the tests (module fixture `runs`):
  missing   deploy while the external network is missing: refused, naming it; nothing changes
  host      host.yml creates the network (host_networks of the inventory)
  v1        the first deploy (AWX): the jobs in order, live; the test then writes data to Redis
  v2        nginx.conf changed: only the gateway is recreated (with -vvv)
  v3        nginx.conf and the built service's source changed: both recreated, the image rebuilt
  v4        broken (AWX): nginx.conf sends the API to a wrong port and the source changed again;
            the configurator exits 1, the deploy rolls back to v3: v3's file in the project
            directory and in the container, v3's image ID, no build
  hook      a field sync is running: the before hook fails, nothing changes
  back      rollback.yml: v2's nginx.conf and v2's image (v1's build) come back
  status    status.yml (AWX) shows v2 live
  restore   Redis emptied and the models volume overwritten; restore.yml brings both back from
            the backups v2's deploy took before its platform phase (pinned to v2, live again)
Everything is scanned for the key and the passwords: the job events, every output, the manifests,
history.jsonl, the controller's audit log and the containers' logs.

Names: project vpsops-itreal, network vpsops-itreal-edge, ports 11600-11602, images
vpsops-itreal/nginx:1.22 (built here from the stack's images/nginx) and vpsops-itreal-field (built
by the deploy); Redis is the lab's vpsops-lab/redis:7 (`bin/lab up`). Everything is removed at the end.
"""

import base64
import glob
import hashlib
import json
import os
import secrets
import shutil
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, SSH_PORT, VENV_BIN, ansible_env, compose_down, remove_pin_tags, run

ansible_runner = pytest.importorskip("ansible_runner")

from test_awx_jobs import Job  # noqa: E402 - after the importorskip, as test_awx_jobs needs ansible_runner too

PROJECT = "vpsops-itreal"
STACK = os.path.join(ROOT, "tests", "integration", "stacks", "fieldops")
NETWORK = "vpsops-itreal-edge"
STATE = "/var/lib/vpsops/%s" % PROJECT
PROJECT_DIR = os.path.join(STATE, "project")
BACKUPS = "/var/backups/vpsops/%s" % PROJECT
MODELS_VOLUME = "%s_models" % PROJECT
SYNC_LOCK = "/run/vpsops-itreal-sync.lock"
GATEWAY = "http://127.0.0.1:11600"
REDIS_PORT = 11602
REDIS_IMAGE = "vpsops-lab/redis:7"  # the lab's (bin/lab up)
NGINX_IMAGE = "vpsops-itreal/nginx:1.22"
BUILT = "%s-field" % PROJECT  # the image compose's build tags for the service field
SERVICES = ("redis", "model-loader", "field", "gateway", "gateway-config")
SSH_DIR = os.path.join(ROOT, ".lab", "ssh")
DEPLOY, ROLLBACK, HOST, STATUS, RESTORE = ("playbooks/%s.yml" % name for name in ("deploy", "rollback", "host", "status", "restore"))


# --------------------------------------------------------------------------------------------
# the stack as an operator keeps it, copied to tmp: the key, the vault, the releases' changes
# --------------------------------------------------------------------------------------------
class Fieldops:
    def __init__(self, tmp):
        self.tmp = tmp
        self.dir = os.path.join(tmp, "fieldops")
        shutil.copytree(STACK, self.dir)
        self.files = os.path.join(self.dir, "files")
        self.inventory = os.path.join(self.dir, "inventory")
        hosts = os.path.join(self.inventory, "hosts.yml")
        with open(hosts) as handle:
            text = handle.read()
        with open(hosts, "w") as handle:
            handle.write(text.replace("ansible_port: 2222", "ansible_port: %d" % SSH_PORT))
        # The operator's signing key: a fresh RSA key, 28 lines of PEM, owner-only.
        self.key_path = os.path.join(self.files, "secrets", "jwt_private.pem")
        run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", self.key_path])
        os.chmod(self.key_path, 0o600)
        with open(self.key_path) as handle:
            self.key = handle.read()
        # The vault: fresh values, encrypted with a password only this run knows.
        self.redis_password = "rp-" + secrets.token_hex(16)
        self.vault_password = "vp-" + secrets.token_hex(16)
        self.vault_file = os.path.join(tmp, "vault-password")
        with open(os.open(self.vault_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            handle.write(self.vault_password + "\n")
        vault = os.path.join(self.inventory, "group_vars", "vpsops_hosts", "vault.yml")
        with open(vault, "w") as handle:
            handle.write("---\nvault_redis_password: %s\n" % self.redis_password)
        run([os.path.join(VENV_BIN, "ansible-vault"), "encrypt", "--vault-password-file", self.vault_file, vault])
        self.audit_log = os.path.join(tmp, "audit.jsonl")
        self.outputs = {}  # run name -> what ansible-playbook printed
        self.jobs = {}     # run name -> Job (ansible_runner)

    def needles(self):
        """What must never show: the key's body lines, the key file in base64 (as the action sends
        it), the Redis password and the vault password."""
        found = {"the vault password": self.vault_password, "the Redis password": self.redis_password,
                 "the key in base64": base64.b64encode(self.key.encode()).decode()[:60]}
        for number, line in enumerate(self.key.splitlines()):
            if not line.startswith("-----"):
                found["line %d of the key" % number] = line
        return found

    def edit(self, rel, old, new):
        path = os.path.join(self.files, rel)
        with open(path) as handle:
            text = handle.read()
        assert old in text, (rel, old)
        with open(path, "w") as handle:
            handle.write(text.replace(old, new))

    def write(self, rel, text):
        with open(os.path.join(self.files, rel), "w") as handle:
            handle.write(text)

    def env(self):
        env = ansible_env()
        env.update(ANSIBLE_PRIVATE_KEY_FILE=os.path.join(SSH_DIR, "id_ed25519"),
                   ANSIBLE_SSH_COMMON_ARGS="-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes"
                   % os.path.join(SSH_DIR, "known_hosts"),
                   VPSOPS_AUDIT_LOG=self.audit_log)
        return env

    def playbook(self, name, playbook, *args):
        """ansible-playbook as an operator types it; (rc, output)."""
        proc = run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", self.inventory, playbook,
                    "--vault-password-file", self.vault_file] + list(args), check=False, env=self.env())
        self.outputs[name] = proc.stdout + proc.stderr
        return proc.returncode, self.outputs[name]

    def job(self, name, playbook, extravars=None):
        """The playbook as AWX runs a job: ansible_runner, a private data directory with the Machine
        credential's key, the vault credential answering the prompt; the Job with its events."""
        pdd = os.path.join(self.tmp, "job-%s" % name)
        os.makedirs(os.path.join(pdd, "env"))
        shutil.copyfile(os.path.join(SSH_DIR, "id_ed25519"), os.path.join(pdd, "env", "ssh_key"))
        os.chmod(os.path.join(pdd, "env", "ssh_key"), 0o600)
        started = time.monotonic()
        result = ansible_runner.run(
            private_data_dir=pdd, project_dir=ROOT, playbook=playbook, inventory=self.inventory, ident="job-1",
            extravars=dict(extravars or {}, awx_job_id=7001, awx_user_name="admin"),
            cmdline="-u root --ask-vault-pass", passwords={r"^Vault password:\s*?$": self.vault_password},
            envvars={"PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
                     "ANSIBLE_SSH_COMMON_ARGS": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes"
                                                % os.path.join(SSH_DIR, "known_hosts"),
                     "VPSOPS_AUDIT_LOG": self.audit_log},
            settings={"job_timeout": 600}, quiet=True)
        job = Job(1, name, "run", {}, pdd, result, time.monotonic() - started)
        self.jobs[name] = job
        return job


# --------------------------------------------------------------------------------------------
# what the host shows
# --------------------------------------------------------------------------------------------
def containers():
    """{service: {id, image, state, exit_code, started, finished, networks}} of the project."""
    ids = run(["docker", "ps", "-aq", "--no-trunc", "--filter",
               "label=com.docker.compose.project=%s" % PROJECT]).stdout.split()
    found = {}
    for item in json.loads(run(["docker", "inspect"] + ids).stdout) if ids else []:
        state = item["State"]
        found[item["Config"]["Labels"]["com.docker.compose.service"]] = dict(
            id=item["Id"], image=item["Image"], state=state["Status"], exit_code=state["ExitCode"],
            started=state["StartedAt"], finished=state["FinishedAt"], name=item["Name"].lstrip("/"),
            networks=sorted(item["NetworkSettings"]["Networks"]))
    return found


def store():
    """The release store on the host: releases oldest first ({id, status, services}), live, lock."""
    releases = []
    for path in glob.glob(os.path.join(STATE, "releases", "*", "manifest.json")):
        with open(path) as handle:
            manifest = json.load(handle)
        releases.append(manifest)
    releases.sort(key=lambda m: m["seq"])
    current = os.path.join(STATE, "current")
    lock = None
    if os.path.exists(os.path.join(STATE, "lock.json")):
        with open(os.path.join(STATE, "lock.json")) as handle:
            lock = json.load(handle)
    return {"releases": [dict(id=m["id"], status=m["status"], phases=m.get("phases"), backups=m.get("backups") or [],
                              images=dict((s, v["image_id"]) for s, v in m["services"].items())) for m in releases],
            "live": os.path.basename(os.readlink(current)) if os.path.islink(current) else None,
            "lock": lock}


def project_files():
    """{path: sha256} of every file of the project directory."""
    found = {}
    for top, _dirs, names in os.walk(PROJECT_DIR):
        for name in names:
            path = os.path.join(top, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, PROJECT_DIR)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def get(path):
    """(status, headers' X-Fieldops-Gateway, body) of GET path on the gateway."""
    try:
        with urllib.request.urlopen(GATEWAY + path, timeout=5) as answer:
            return answer.status, answer.headers.get("X-Fieldops-Gateway"), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-Fieldops-Gateway"), exc.read().decode()
    except OSError as exc:
        return None, None, str(exc)


def in_container(service, *argv):
    proc = run(["docker", "exec", "%s-%s-1" % (PROJECT, service)] + list(argv), check=False)
    return proc.stdout


def redis(*argv):
    """redis-cli in the Redis container (it logs in through its REDISCLI_AUTH)."""
    return in_container("redis", "redis-cli", "--raw", *argv).strip()


def image_id(ref):
    proc = run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], check=False)
    return proc.stdout.strip() or None


def snapshot(fo):
    """What a test compares across runs."""
    status, header, body = get("/api/health")
    return {"containers": containers(), "store": store(), "files": project_files(),
            "nginx_conf": read(os.path.join(PROJECT_DIR, "gateway", "nginx.conf")),
            "nginx_conf_inside": in_container("gateway", "cat", "/etc/nginx/nginx.conf"),
            "health": (status, header, json.loads(body) if status == 200 else body),
            "built_tag": image_id(BUILT), "deploy_last": redis("GET", "deploy:last")}


# --------------------------------------------------------------------------------------------
# the images a registry would give (no registry here)
# --------------------------------------------------------------------------------------------
def build_images(tmp):
    if not image_id(REDIS_IMAGE):
        pytest.fail("the lab's Redis image %s is missing: run `bin/lab up`" % REDIS_IMAGE)
    ctx = os.path.join(tmp, "nginx-image")
    os.makedirs(ctx)
    shutil.copy2(os.path.join(STACK, "images", "nginx", "Dockerfile"), ctx)
    shutil.copy2(shutil.which("busybox"), os.path.join(ctx, "busybox"))
    run(["docker", "build", "-q", "-t", NGINX_IMAGE, ctx])


def cleanup(fo):
    files = [os.path.join(fo.files, name) for name in ("docker-compose.infrastructure.yml", "docker-compose.platform.yml")]
    argv = ["docker", "compose", "-p", PROJECT, "--project-directory", fo.files]
    for path in files:
        argv += ["-f", path]
    compose_down(argv, env=dict(os.environ, REDIS_PASSWORD="", MODEL_VERSION=""))
    run(["docker", "network", "rm", NETWORK], check=False)
    run(["rm", "-rf", STATE, BACKUPS, SYNC_LOCK])
    remove_pin_tags(PROJECT)
    run(["docker", "image", "rm", BUILT], check=False)


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(lab, tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("real-stack"))
    os.chmod(tmp, 0o700)
    fo = Fieldops(tmp)
    cleanup(fo)
    build_images(tmp)
    done = {"fo": fo}
    seconds = {}

    def timed(name, func, *args):
        started = time.monotonic()
        try:
            return func(*args)
        finally:
            seconds[name] = round(time.monotonic() - started, 1)

    try:
        done["missing"] = timed("missing", fo.playbook, "missing", DEPLOY)
        done["after-missing"] = {"containers": containers(), "store": store() if os.path.isdir(STATE) else None}
        done["host"] = timed("host", fo.playbook, "host", HOST, "-e", "host_state_root=%s/roots/lib" % tmp,
                             "-e", "host_backup_root=%s/roots/bak" % tmp)
        done["network"] = json.loads(run(["docker", "network", "inspect", NETWORK], check=False).stdout or "[]")

        done["v1"] = timed("v1", fo.job, "v1", DEPLOY)
        done["v1-state"] = snapshot(fo)
        done["v1-state"].update(
            key_inside=in_container("field", "cat", "/run/secrets/jwt_private_key"),
            key_mode=[oct(os.stat(p).st_mode & 0o777) + " uid %d" % os.stat(p).st_uid
                      for p in [os.path.join(PROJECT_DIR, "secrets", "jwt_private.pem"), os.path.join(PROJECT_DIR, ".env")]
                      + glob.glob(os.path.join(STATE, "releases", "*", "files", "secrets", "jwt_private.pem"))],
            key_mode_inside=in_container("field", "stat", "-c", "%a %u", "/run/secrets/jwt_private_key").strip(),
            jobs_at={j: float(redis("GET", "job:%s:at" % j) or 0) for j in ("model-loader", "gateway-config")},
            model=in_container("field", "cat", "/models/current"), env_file=read(os.path.join(PROJECT_DIR, ".env")))
        # Data the platform wrote after the first deploy: it must outlive every deploy and rollback.
        redis("HSET", "field:2", "name", "South plot", "crop", "barley")

        fo.edit("gateway/nginx.conf", '"routes v1"', '"routes v2"')
        done["v2"] = timed("v2", fo.playbook, "v2", DEPLOY, "-vvv")  # its output searched for secrets too
        done["v2-state"] = snapshot(fo)

        fo.edit("gateway/nginx.conf", '"routes v2"', '"routes v3"')
        fo.write("field/VERSION", "field-api 1.1.0\n")
        done["v3"] = timed("v3", fo.playbook, "v3", DEPLOY)
        done["v3-state"] = snapshot(fo)

        fo.edit("gateway/nginx.conf", '"routes v3"', '"routes v4"')
        fo.edit("gateway/nginx.conf", "http://field:8000", "http://field:8001")
        fo.write("field/VERSION", "field-api 1.2.0-rc1\n")
        done["v4"] = timed("v4", fo.job, "v4", DEPLOY)
        done["v4-state"] = snapshot(fo)
        done["v4-configurator-logs"] = run(["docker", "logs", "%s-gateway-config-1" % PROJECT], check=False).stdout

        fo.edit("gateway/nginx.conf", '"routes v4"', '"routes v5"')
        fo.edit("gateway/nginx.conf", "http://field:8001", "http://field:8000")
        with open(SYNC_LOCK, "w") as handle:
            handle.write("sync of the north plot\n")
        done["hook"] = timed("hook", fo.playbook, "hook", DEPLOY)
        os.unlink(SYNC_LOCK)
        done["hook-state"] = snapshot(fo)

        done["back"] = timed("back", fo.playbook, "back", ROLLBACK)
        done["back-state"] = snapshot(fo)

        done["status"] = timed("status", fo.job, "status", STATUS)
        done["fields"] = [redis("HGET", "field:%d" % n, "name") for n in (1, 2)]

        # The stores lose their data; restore.yml brings back what the live release's deploy backed up.
        redis("FLUSHALL")
        run(["docker", "run", "--rm", "--network", "none", "-v", "%s:/m" % MODELS_VOLUME, REDIS_IMAGE,
             "sh", "-c", "echo lost > /m/current"])
        done["lost"] = {"fields": [redis("HGET", "field:%d" % n, "name") for n in (1, 2)],
                        "model": in_container("field", "cat", "/models/current").strip()}
        for name in ("cache", "models"):
            done["restore-" + name] = timed("restore-" + name, fo.playbook, "restore-" + name, RESTORE,
                                            "-e", "restore_database=%s" % name, "-e", "restore_release=live",
                                            "-e", "restore_confirm=true")
        done["restored"] = {"fields": [redis("HGET", "field:%d" % n, "name") for n in (1, 2)],
                            "routes": redis("SCARD", "gateway:routes"),
                            "model": in_container("field", "cat", "/models/current").strip(),
                            "health": get("/api/health")[0]}
        done["logs"] = dict((s, run(["docker", "logs", "%s-%s-1" % (PROJECT, s)], check=False))
                            for s in SERVICES)
        done["store-files"] = glob.glob(os.path.join(STATE, "releases", "*", "manifest.json")) + \
            glob.glob(os.path.join(BACKUPS, "*.json")) + [os.path.join(STATE, "history.jsonl"), fo.audit_log]
        yield done
    finally:
        print("seconds: %s" % seconds)
        cleanup(fo)
        run(["docker", "image", "rm", NGINX_IMAGE], check=False)


def release_ids(state):
    return [r["id"] for r in state["store"]["releases"]]


def ids(state, *services):
    return dict((s, state["containers"][s]["id"]) for s in services)


def phase_audit(fo, release):
    """{phase: data} of the audit log's phase_finished lines of a release."""
    entries = [json.loads(line) for line in (read(fo.audit_log) or "").splitlines() if line.strip()]
    return dict((e["phase"], e["data"]) for e in entries if e.get("event") == "phase_finished" and e.get("release") == release)


def starts(state, *services):
    return dict((s, state["containers"][s]["started"]) for s in services)


# --------------------------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------------------------
def test_a_missing_external_network_is_named_and_nothing_changes_until_the_host_role_makes_it(runs):
    rc, out = runs["missing"]
    assert rc != 0, out[-3000:]
    flat = " ".join(out.split())
    assert ("network %s (external, key edge in the compose files, used by service gateway) does not exist on this "
            "host: create it (docker network create %s) or let the host role create it (host_networks)."
            % (NETWORK, NETWORK)) in flat, out[-3000:]
    after = runs["after-missing"]
    assert after["containers"] == {}, after
    assert after["store"] is None or after["store"]["releases"] == [], after
    rc, out = runs["host"]
    assert rc == 0, out[-3000:]
    [network] = runs["network"]
    assert network["Labels"] == {"owner": "fieldops"}, network
    # The gateway joined it with the first deploy.
    assert runs["v1-state"]["containers"]["gateway"]["networks"] == sorted([NETWORK, "%s_default" % PROJECT])


def test_the_first_deploy_runs_the_jobs_in_order_and_goes_live(runs):
    job = runs["v1"]
    job.assert_status()
    state = runs["v1-state"]
    found = state["containers"]
    for service in ("model-loader", "gateway-config"):
        assert (found[service]["state"], found[service]["exit_code"]) == ("exited", 0), found[service]
    for service in ("redis", "field", "gateway"):
        assert found[service]["state"] == "running", found[service]
    # The loader (phase infrastructure) finished before the configurator (phase platform) started,
    # and the configurator ran once the gateway was up.
    at = state["jobs_at"]
    assert 0 < at["model-loader"] < at["gateway-config"], at
    assert found["model-loader"]["finished"] < found["gateway-config"]["started"], found
    assert found["gateway"]["started"] < found["gateway-config"]["started"], found
    assert state["model"].strip() == "model 2026.01"
    [release] = state["store"]["releases"]
    assert (release["status"], state["store"]["live"], state["store"]["lock"]) == ("live", release["id"], None)
    assert [(p["name"], p.get("jobs")) for p in release["phases"]] == [
        ("infrastructure", ["model-loader"]), ("platform", ["gateway-config"])]
    status, header, health = state["health"]
    assert (status, header, health["status"], health["version"]) == (200, "routes v1", "ok", "field-api 1.0.0"), health
    assert get("/api/routes")[0] == 200
    assert state["deploy_last"] == "%s succeeded" % release["id"]  # the after hook, in Redis's container


def test_the_multi_line_key_arrives_intact_and_owner_only(runs):
    fo, state = runs["fo"], runs["v1-state"]
    assert state["key_inside"] == fo.key
    assert len(fo.key.splitlines()) >= 20
    # In the project directory, its .env, and the release's own copy: owner-only.
    assert state["key_mode"] == ["0o600 uid 0"] * 3, state["key_mode"]
    assert state["key_mode_inside"] == "600 0"
    health = state["health"][2]
    assert health["key_sha256"] == hashlib.sha256(fo.key.encode()).hexdigest()
    assert health["key_lines"] == len(fo.key.splitlines())


def test_a_changed_config_file_recreates_only_the_service_that_mounts_it(runs):
    rc, out = runs["v2"]
    assert rc == 0, out[-4000:]
    v1, v2 = runs["v1-state"], runs["v2-state"]
    assert v2["health"][1] == "routes v2" and '"routes v2"' in v2["nginx_conf_inside"]
    assert v2["containers"]["gateway"]["id"] != v1["containers"]["gateway"]["id"]
    unchanged = ("redis", "model-loader", "field", "gateway-config")
    assert ids(v2, *unchanged) == ids(v1, *unchanged)
    # Not restarted either, but the configurator: a job of the phase that changed, it ran again
    # (same container) to configure the new gateway.
    assert starts(v2, "redis", "model-loader", "field") == starts(v1, "redis", "model-loader", "field")
    assert v2["containers"]["gateway-config"]["started"] > v1["containers"]["gateway-config"]["started"]
    assert v2["containers"]["gateway-config"]["exit_code"] == 0
    assert [f for f in v2["files"] if v2["files"][f] != v1["files"].get(f)] == ["gateway/nginx.conf"]


def test_a_changed_source_rebuilds_the_service_built_on_the_host(runs):
    rc, out = runs["v3"]
    assert rc == 0, out[-4000:]
    v2, v3 = runs["v2-state"], runs["v3-state"]
    assert v3["health"][2]["version"] == "field-api 1.1.0" and v3["health"][1] == "routes v3"
    assert v3["containers"]["field"]["image"] != v2["containers"]["field"]["image"]
    assert v3["containers"]["field"]["image"] == v3["built_tag"] == v3["store"]["releases"][-1]["images"]["field"]
    assert ids(v3, "redis", "model-loader") == ids(v2, "redis", "model-loader")
    # gateway waits for field healthy (depends_on): with field recreated, the phase brought gateway
    # up once field's own healthcheck passed, not after Docker's first run of it; v2 changed gateway
    # alone, field healthy in Docker's eyes: one `up`.
    assert phase_audit(runs["fo"], release_ids(v3)[-1])["platform"]["steps"] == [["field"], ["gateway"]]
    assert "steps" not in phase_audit(runs["fo"], release_ids(v2)[-1])["platform"]
    from ansible_collections.vpsops.deploy.plugins.module_utils._probes import parse_docker_time
    assert parse_docker_time(v3["containers"]["gateway"]["started"]) > parse_docker_time(v3["containers"]["field"]["started"])


def test_a_broken_release_is_rolled_back_to_its_old_file_and_image_without_a_build(runs):
    job, v3, v4 = runs["v4"], runs["v3-state"], runs["v4-state"]
    job.assert_status("failed")
    out = " ".join(job.stdout.split())
    assert "one-shot service gateway-config exited with exit code 1; its last log lines:" in out, job.tail()
    assert "the gateway does not serve the routes (GET http://gateway:8080/api/routes): HTTP Error 502" in out, job.tail()
    assert "rolled back to the live release %s" % v3["store"]["live"] in out, job.tail()
    failed = v4["store"]["releases"][-1]
    assert (failed["status"], v4["store"]["live"], v4["store"]["lock"]) == ("failed", v3["store"]["live"], None)
    # The old file is back, in the project directory and in the gateway's container.
    assert v4["nginx_conf"] == v3["nginx_conf"] and '"routes v3"' in v4["nginx_conf"]
    assert v4["nginx_conf_inside"] == v3["nginx_conf"]
    assert v4["files"] == v3["files"]
    assert v4["health"][:2] == (200, "routes v3") and v4["health"][2]["version"] == "field-api 1.1.0"
    # The old image ID runs; the broken release's image was built (at its begin step) and nothing
    # was built after it: compose's tag of the build still names it, not a rebuild of v3's source.
    assert v4["containers"]["field"]["image"] == v3["containers"]["field"]["image"]
    assert failed["images"]["field"] not in (v3["containers"]["field"]["image"], None)
    assert v4["built_tag"] == failed["images"]["field"]
    # The rollback ran v3's configurator again, to exit 0.
    assert v4["containers"]["gateway-config"]["exit_code"] == 0
    assert "3 routes configured" in runs["v4-configurator-logs"].splitlines()[-1], runs["v4-configurator-logs"]
    assert v4["deploy_last"] == "%s rolled_back" % failed["id"]


def test_a_failing_pre_deploy_hook_changes_nothing(runs):
    rc, out = runs["hook"]
    before, after = runs["v4-state"], runs["hook-state"]
    assert rc != 0, out[-3000:]
    flat = " ".join(out.split())
    assert "before-deploy hook 'no-sync-running' failed (exit code 3): a field sync is running" in flat, out[-3000:]
    assert ids(after, *SERVICES) == ids(before, *SERVICES)
    assert starts(after, *SERVICES) == starts(before, *SERVICES)
    assert after["files"] == before["files"] and '"routes v3"' in after["nginx_conf"]
    assert after["store"]["live"] == before["store"]["live"] and after["store"]["lock"] is None
    # The release it began is recorded as failed; the on_rollback after hook ran and said so.
    [refused] = after["store"]["releases"][len(before["store"]["releases"]):]
    assert refused["status"] == "failed", refused
    assert after["deploy_last"] == "%s failed" % refused["id"]
    assert after["health"][:2] == (200, "routes v3")


def test_rollback_playbook_brings_back_the_previous_file_and_image(runs):
    rc, out = runs["back"]
    assert rc == 0, out[-4000:]
    v1, v2, back = runs["v1-state"], runs["v2-state"], runs["back-state"]
    assert back["store"]["live"] == v2["store"]["live"] and back["store"]["lock"] is None
    assert back["nginx_conf"] == v2["nginx_conf"] and back["nginx_conf_inside"] == v2["nginx_conf"]
    assert back["health"][:2] == (200, "routes v2") and back["health"][2]["version"] == "field-api 1.0.0"
    assert back["containers"]["field"]["image"] == v2["containers"]["field"]["image"] == v1["containers"]["field"]["image"]
    assert back["built_tag"] == runs["v4-state"]["built_tag"]  # no build by the rollback either
    for path in ("gateway/nginx.conf", "field/VERSION", "field/app.py", "secrets/jwt_private.pem"):
        assert back["files"][path] == v2["files"][path], path


def test_status_shows_the_live_release_and_its_checks(runs):
    job = runs["status"]
    job.assert_status()
    status = job.result("Keep the status of the host")["ansible_facts"]["vpsops_status"]
    assert status["live"]["id"] == runs["back-state"]["store"]["live"]
    assert set(status["health"]["checks"]) == {"infrastructure/redis", "platform/field-api", "platform/routes"}


def test_the_stores_data_outlives_every_deploy_and_rollback(runs):
    first = runs["v1-state"]["containers"]
    for name in ("v2", "v3", "v4", "hook", "back"):
        now = runs["%s-state" % name]["containers"]
        assert ids(runs["%s-state" % name], "redis", "model-loader") == ids(runs["v1-state"], "redis", "model-loader"), name
        assert now["redis"]["started"] == first["redis"]["started"], name
    assert runs["fields"] == ["North plot", "South plot"]


def test_the_stores_backed_up_before_the_phase_come_back_with_restore(runs):
    live = runs["back-state"]["store"]
    [release] = [r for r in live["releases"] if r["id"] == live["live"]]
    pinned = dict((b["name"], b) for b in release["backups"])
    assert sorted(pinned) == ["cache", "models"], release["backups"]
    assert (pinned["cache"]["type"], pinned["models"]["type"]) == ("redis", "volume"), pinned
    assert all(b["verified"] and b["path"].startswith(BACKUPS + "/") for b in pinned.values()), pinned
    # Taken by v2's deploy, before its platform phase: after the data the test wrote following v1.
    assert release["id"] == runs["v2-state"]["store"]["live"]
    assert runs["lost"] == {"fields": ["", ""], "model": "lost"}, runs["lost"]
    for name in ("cache", "models"):
        rc, out = runs["restore-" + name]
        assert rc == 0, out[-4000:]
    restored = runs["restored"]
    assert restored["fields"] == ["North plot", "South plot"], restored
    assert restored["routes"] == "3" and restored["model"] == "model 2026.01", restored
    assert restored["health"] == 200, restored


def test_no_secret_in_any_job_event_output_manifest_audit_line_or_log(runs):
    fo = runs["fo"]
    needles = fo.needles()
    leaks = []
    for job in fo.jobs.values():
        leaks += job.leaks(needles)
    for name, text in fo.outputs.items():
        leaks += ["output of %s holds %s" % (name, what) for what, value in needles.items() if value in text]
    for path in runs["store-files"]:
        text = read(path) or ""
        leaks += ["%s holds %s" % (path, what) for what, value in needles.items() if value in text]
    for service, proc in runs["logs"].items():
        leaks += ["logs of %s hold %s" % (service, what) for what, value in needles.items()
                  if value in proc.stdout + proc.stderr]
    assert not leaks, "\n".join(leaks[:20])
    # The search looked for what was there to find: the values reached the host (the project's .env,
    # the key in the container) and the audit log has the runs.
    assert "'%s'" % fo.redis_password in runs["v1-state"]["env_file"]
    assert runs["v1-state"]["key_inside"] == fo.key
    assert len((read(fo.audit_log) or "").splitlines()) >= 8


def test_a_phase_may_depend_on_a_service_of_an_earlier_phase(lab, tmp_path):
    """Operators write `depends_on: {redis: {condition: service_healthy}}` in the platform file
    while redis is in the infrastructure file (compose loads both, and so does the deploy): the
    phases are split by the services each file defines, as the controller reads them."""
    from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Docker
    from ansible_collections.vpsops.deploy.plugins.module_utils._deploy import phase_services
    from ansible_collections.vpsops.deploy.plugins.module_utils._stack import file_services

    files, texts = {}, {}
    for name in ("docker-compose.infrastructure.yml", "docker-compose.platform.yml"):
        with open(os.path.join(STACK, "files", name)) as handle:
            texts[name] = handle.read()
        assert "required: false" not in texts[name]
        files[name] = str(tmp_path / name)
        with open(files[name], "w") as handle:
            handle.write(texts[name])
    env_file = tmp_path / ".env"
    env_file.write_text("REDIS_PASSWORD='x'\nMODEL_VERSION='1'\n")
    phases = [{"name": "infrastructure", "compose_files": ["docker-compose.infrastructure.yml"]},
              {"name": "platform", "compose_files": ["docker-compose.platform.yml"]}]
    found = phase_services(Docker(), PROJECT, phases, files, str(tmp_path), str(env_file), file_services(texts))
    assert [p["services"] for p in found] == [["model-loader", "redis"], ["field", "gateway", "gateway-config"]]
