"""The deploy flow end to end on the lab: a controller killed half way, two deploys at once, several
hosts with a canary, migrations with backups, and zero-downtime rollout. Every broken release under live
traffic is in test_broken_releases.py."""

import json
import os
import secrets
import signal
import subprocess
import time

import pytest

from conftest import ROOT, Stack, ansible_env, ansible_module, http_json, run, wait_until
from test_deploy_playbook import (
    ANSIBLE, INVENTORY, PLAYBOOK, ROLLBACK_PLAYBOOK, images, playbook, releases, stack_vars,
)
from test_slo_notify import receiving, webhook

RECEIVER_PORT = 19990  # the webhook of this module's notifications (test_slo_notify has its own)


def start_playbook(tmp_path, extra_vars, path=PLAYBOOK, name="bg"):
    """ansible-playbook in its own session (so the test can kill it and every worker), output to a file."""
    vars_file = tmp_path / ("%s-vars.json" % name)
    vars_file.write_text(json.dumps(extra_vars))
    log = open(tmp_path / ("%s.log" % name), "w")
    proc = subprocess.Popen([os.path.join(ANSIBLE, "ansible-playbook"), "-i", INVENTORY, path, "-e", "@%s" % vars_file],
                            stdout=log, stderr=subprocess.STDOUT, env=ansible_env(), cwd=ROOT, start_new_session=True)
    proc.log_path = str(tmp_path / ("%s.log" % name))
    return proc


def output(proc):
    with open(proc.log_path) as handle:
        return handle.read()


def fault_during_phase(deploy, fault, phase="platform", wait=600, entered=None):
    """Let a running deploy (start_playbook) into the `up` of `phase`, cause `fault()`, and wait for
    the deploy to end (killed if it does not within `wait` seconds). Returns its output. Without
    `entered`, the fault comes 1 s after the controller announces the phase; with it, as soon as
    `entered()` is true (a mark the phase itself leaves, such as a hook's file)."""
    try:
        wait_until("the deploy enters its phase %s" % phase,
                   lambda: (entered() if entered else "Phase %s: services" % phase in output(deploy))
                   or deploy.poll() is not None, timeout=300, interval=0.1 if entered else 0.5)
        assert deploy.poll() is None, output(deploy)[-3000:]
        if entered is None:
            time.sleep(1)  # into the phase's `up`
        fault()
        deploy.wait(wait)
    finally:
        if deploy.poll() is None:
            os.killpg(deploy.pid, signal.SIGKILL)
            deploy.wait(30)
    return output(deploy)


def lock_of(st):
    path = "/var/lib/vpsops/%s/lock.json" % st.project
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


@pytest.fixture
def receiver():
    yield from receiving(RECEIVER_PORT)


@pytest.fixture
def flow(lab):
    st = Stack("vpsops-itf", 19000)
    st.down()
    run(["rm", "-rf", "/var/lib/vpsops/%s" % st.project])
    yield st
    st.down()
    run(["rm", "-rf", "/var/lib/vpsops/%s" % st.project])


def audit_entries(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def test_controller_killed_during_phase_two_then_rollback_playbook_restores_the_live_release(
        flow, tmp_path, receiver, monkeypatch):
    audit_log = str(tmp_path / "audit.jsonl")
    monkeypatch.setenv("VPSOPS_AUDIT_LOG", audit_log)  # every playbook below appends to it
    first = playbook(tmp_path, stack_vars(flow))
    assert first.returncode == 0, first.stdout[-3000:]
    good = images(flow.project)
    live = releases(flow)["live"]

    deploy = start_playbook(tmp_path, stack_vars(flow, tag="v2"), name="killed")
    try:
        # Phase 2 (platform) has started once its progress line is in the log.
        wait_until("phase 2 of the v2 deploy starts",
                   lambda: "Phase platform: services" in output(deploy) or deploy.poll() is not None, timeout=300)
        assert deploy.poll() is None, output(deploy)[-3000:]
        time.sleep(3)  # into the phase's `up`
        os.killpg(deploy.pid, signal.SIGKILL)
    finally:
        deploy.wait(30)
    held = lock_of(flow)
    assert held is not None and held["pid"] == deploy.pid  # the killed run left its lock behind

    # Another deploy is refused while the lock's TTL runs ...
    refused = playbook(tmp_path, stack_vars(flow, tag="v2"))
    assert refused.returncode != 0
    assert "cannot lock" in refused.stdout and held["owner"] in refused.stdout

    # ... but rollback.yml sees the holder's process is gone on this controller and takes over.
    token = "tok" + secrets.token_hex(16)
    back = playbook(tmp_path, {"vpsops_stack": {"name": flow.project}, "vpsops_notify_url": webhook(token, RECEIVER_PORT)},
                    path=ROLLBACK_PLAYBOOK)
    assert back.returncode == 0, back.stdout[-4000:]
    assert "took over the deploy lock (its holder is gone)" in back.stdout + back.stderr  # a warning
    # The webhook heard of it once, and the token in its URL was never printed.
    assert token not in back.stdout + back.stderr
    assert len(receiver.posts) == 1, receiver.posts
    posted = json.loads(receiver.posts[0]["raw"])
    assert (posted["event"], posted["stack"], posted["release"]) == ("rollback_succeeded", flow.project, live)
    assert images(flow.project) == good
    for port_key in ("AUTH_PORT", "AR_PORT", "PAYMENTS_PORT"):
        assert http_json(flow.url(port_key))[1]["release"] == "v1"
    info = releases(flow)
    assert info["live"] == live and info["lock"] is None
    assert info["releases"][0]["status"] == "failed"  # the interrupted v2 release
    interrupted = info["releases"][0]["id"]

    # The controller's audit log tells the story: the killed run started and finished phase 1 of
    # release v2, and nothing recorded its end (it was killed); the deploy refused meanwhile says
    # by whom; the rollback that took over is recorded as a success back to the live release.
    entries = audit_entries(audit_log)
    killed = [e for e in entries if e["pid"] == deploy.pid]
    assert [e["event"] for e in killed][:2] == ["deploy_started", "phase_finished"], killed
    assert (killed[1]["phase"], killed[1]["release"], killed[1]["status"]) == ("infrastructure", interrupted, "ok")
    assert set(e["event"] for e in killed[1:]) == {"phase_finished"}, killed  # no end: it was killed
    refused_lines = [e for e in entries if e["event"] == "deploy_failed" and e["pid"] not in (deploy.pid,)]
    assert len(refused_lines) == 1, entries
    assert "cannot lock" in refused_lines[0]["data"]["outcome"] and held["owner"] in refused_lines[0]["data"]["outcome"]
    last = entries[-1]
    assert (last["event"], last["status"], last["release"], last["stack"]) == (
        "rollback_succeeded", "ok", live, flow.project), last
    assert last["data"]["changed"] in (True, "True", "true"), last
    assert [e["event"] for e in entries].count("deploy_succeeded") == 1  # the v1 deploy, before it all


def test_two_deploys_at_once_one_is_refused_with_the_holder_named(flow, tmp_path):
    first = start_playbook(tmp_path, stack_vars(flow), name="first")
    try:
        holder = wait_until("the first deploy holds the lock", lambda: lock_of(flow) or (
            first.poll() is not None and {"owner": "(exited)"}), timeout=300)
        assert holder.get("pid") == first.pid, output(first)[-3000:]
        second = playbook(tmp_path, stack_vars(flow))
        assert second.returncode != 0
        assert "cannot lock" in second.stdout and holder["owner"] in second.stdout
        assert first.wait(600) == 0, output(first)[-4000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(30)
    info = releases(flow)
    assert info["lock"] is None and len(info["releases"]) == 1 and info["releases"][0]["status"] == "live"


# --------------------------------------------------------------------------------------------
# Several hosts: every host locked first, the first alone (canary), a failure rolls back all
# --------------------------------------------------------------------------------------------
LAB = os.path.join(ROOT, "bin", "lab")
KEY_DIR = os.path.join(ROOT, ".lab", "ssh")


def namespace_inventory(tmp_path, hosts):
    """An inventory of lab hosts: {name: (address, vpsops_stack)}."""
    inventory = {"vpsops_hosts": {"hosts": {}, "vars": {
        "ansible_user": "root", "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_private_key_file": os.path.join(KEY_DIR, "id_ed25519"),
        "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
                                   % os.path.join(KEY_DIR, "known_hosts"),
        "deploy_phase_timeout": 120}}}
    for name, (address, stack) in hosts.items():
        inventory["vpsops_hosts"]["hosts"][name] = {"ansible_host": address, "ansible_port": 22,
                                                    "vpsops_stack": stack}
    path = tmp_path / ("hosts-%d.yml" % len(list(tmp_path.iterdir())))
    path.write_text(json.dumps(inventory))  # JSON is YAML
    return str(path)


def host_stack(st, **env):
    """The platform phase of the lab (auth x2 behind its load balancer) with its HTTP check on
    127.0.0.1: every lab host has its own Docker daemon and loopback, so the same project, ports
    and checks serve every host, as on a fleet. One phase is enough for the canary and the
    cross-host rollback; the databases and NATS would only add start-up time."""
    stack = stack_vars(st)["vpsops_stack"]
    stack["env"].update(env)
    stack["phases"] = [phase for phase in stack["phases"] if phase["name"] == "platform"]
    return stack


def lab_hosts():
    with open(os.path.join(ROOT, ".lab", "hosts.json")) as handle:
        return dict((h["name"], h) for h in json.load(handle))


def host_images(host, project):
    """{container name: image id} of a compose project in a lab host's own Docker daemon."""
    docker = ["docker", "-H", host["docker_host"]]
    names = run(docker + ["ps", "-a", "--filter", "label=com.docker.compose.project=%s" % project,
                          "--format", "{{.Names}}"]).stdout.split()
    out = run(docker + ["inspect", "--format", "{{.Name}} {{.Image}}"] + names).stdout if names else ""
    return dict(line.lstrip("/").split() for line in out.splitlines())


def host_releases(inventory, name, project):
    rc, info = ansible_module("compose_release_info", {"stack": project}, host=name, inventory=inventory)
    assert rc == 0, info
    return info


def host_http(name, url):
    """The JSON a URL answers inside a lab host (its loopback is its own)."""
    return json.loads(run([LAB, "host", "exec", name, "--", "curl", "-sf", "--max-time", "5", url]).stdout)


@pytest.fixture
def two_hosts(lab):
    run([LAB, "host", "add", "fa", "fb"])
    yield lab_hosts()
    run([LAB, "host", "del", "fa", "fb"], check=False)


def deploy_hosts(tmp_path, inventory, *args):
    return run([os.path.join(ANSIBLE, "ansible-playbook"), "-i", inventory, PLAYBOOK] + list(args),
               check=False, env=ansible_env())


def test_two_hosts_a_failure_on_the_second_rolls_back_both(two_hosts, tmp_path):
    # One stack, one project, the same ports on both hosts.
    st = Stack("vpsops-itfh", 34100)
    fa, fb = two_hosts["fa"], two_hosts["fb"]
    v1 = namespace_inventory(tmp_path, {"fa": (fa["address"], host_stack(st)), "fb": (fb["address"], host_stack(st))})
    first = deploy_hosts(tmp_path, v1)
    assert first.returncode == 0, first.stdout[-4000:]
    good = dict((name, host_images(host, st.project)) for name, host in two_hosts.items() if name in ("fa", "fb"))
    live = dict((name, host_releases(v1, name, st.project)["live"]) for name in ("fa", "fb"))
    for name in ("fa", "fb"):
        assert len(good[name]) == 3, good  # auth x2 and its load balancer, in each host's own daemon
        assert host_http(name, st.url("AUTH_PORT"))["release"] == "v1"
    # Nothing of it on this machine: not in the lab's daemon, not in its /var/lib/vpsops.
    assert run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=%s" % st.project]).stdout == ""
    assert not os.path.exists("/var/lib/vpsops/%s" % st.project)

    # v2 everywhere, but the second host's auth never becomes healthy.
    v2 = namespace_inventory(tmp_path, {"fa": (fa["address"], host_stack(st, RELEASE_TAG="v2")),
                                        "fb": (fb["address"], host_stack(st, RELEASE_TAG="v2",
                                                                         AUTH_TAG="v3-unhealthy"))})
    second = deploy_hosts(tmp_path, v2)
    out = second.stdout
    assert second.returncode != 0
    # The canary went first and alone: the deploy play ran in two batches, fa then fb.
    batches = out.split("PLAY [Deploy phase by phase, the first host alone (canary), then the others]")[1:]
    batches[-1] = batches[-1].split("PLAY [Finish the deploy on every host]")[0]
    assert len(batches) == 2, out[-4000:]
    assert "[fa]" in batches[0] and "[fb]" not in batches[0]
    assert "[fb]" in batches[1] and "[fa]" not in batches[1]
    assert "fb failed at Bring up the services of the phase" in out, out[-4000:]
    assert "then rolled back to %s because fb failed" % live["fa"] in out, out[-4000:]
    for name in ("fa", "fb"):
        assert host_images(two_hosts[name], st.project) == good[name], name
        info = host_releases(v2, name, st.project)
        assert info["live"] == live[name] and info["lock"] is None, (name, info)
        assert host_http(name, st.url("AUTH_PORT"))["release"] == "v1"
    assert host_releases(v2, "fa", st.project)["releases"][0]["status"] == "rolled_back"
    assert host_releases(v2, "fb", st.project)["releases"][0]["status"] == "failed"


# --------------------------------------------------------------------------------------------
# Backups and migrations
# --------------------------------------------------------------------------------------------
MIGRATE_FILE = """
services:
  ar-migrate:
    image: vpsops-demo/ar:${RELEASE_TAG:-v1}
    profiles: [migrate]
    environment:
      PGHOST: ar-postgres
      PGUSER: ar_user
      PGDATABASE: ar_db
      PGPASSWORD: ${AR_DB_PASSWORD:?AR_DB_PASSWORD must be set}
      MIGRATION_SQL: ${MIGRATION_SQL:-SELECT 1}
    entrypoint:
      - python3
      - -c
      - |
        import os, psycopg2
        conn = psycopg2.connect()
        conn.autocommit = True
        for statement in os.environ["MIGRATION_SQL"].split(";"):
            print("migrate:", statement.strip(), flush=True)
            conn.cursor().execute(statement)
"""


def migration_stack(st, tmp_path, sql, tag="v1", restore=True):
    source = tmp_path / "stack"
    if not source.exists():
        run(["cp", "-r", os.path.join(ROOT, "lab", "stack"), str(source)])
        (source / "docker-compose.migrate.yml").write_text(MIGRATE_FILE)
    values = stack_vars(st, tag=tag)
    stack = values["vpsops_stack"]
    stack["source"] = str(source)
    stack["env"]["MIGRATION_SQL"] = sql
    stack["databases"] = {"ar": {"container": st.container("ar-postgres"), "db": "ar_db", "login_user": "ar_user",
                                 "login_password": st.passwords["AR_DB_PASSWORD"]}}
    stack["backup"] = {"dest": str(tmp_path / "backups")}
    modules = stack["phases"][2]
    modules["compose_files"] = ["docker-compose.modules.yml", "docker-compose.migrate.yml"]
    modules["backup"] = ["ar"]
    modules["migration"] = {"service": "ar-migrate", "timeout": 120, "restore_on_failure": restore}
    return values


def db_rows(st, which, sql):
    """Run sql on a module's database ("ar" or "payments"); its rows, or None for a statement."""
    import psycopg2

    conn = psycopg2.connect(connect_timeout=5, **st.psql_dsn(which))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def ar_rows(st, sql):
    return db_rows(st, "ar", sql)


def test_a_failed_migration_restores_the_backup_taken_before_it_and_rolls_back(flow, tmp_path):
    first = playbook(tmp_path, migration_stack(flow, tmp_path, "CREATE TABLE IF NOT EXISTS marker (v int)"))
    assert first.returncode == 0, first.stdout[-4000:]
    assert ar_rows(flow, "SELECT to_regclass('marker') IS NOT NULL") == [(True,)]  # the migration ran
    live = releases(flow)
    backups = live["releases"][0]["backups"]
    assert [b["name"] for b in backups] == ["ar"] and os.path.exists(backups[0]["path"])
    assert oct(os.stat(backups[0]["path"]).st_mode & 0o777) == "0o600"
    ar_rows(flow, "INSERT INTO marker SELECT generate_series(1, 25)")
    before = ar_rows(flow, "SELECT count(*), sum(v) FROM marker")
    good = images(flow.project)

    # The v2 migration deletes the rows (committed) and then fails.
    bad = playbook(tmp_path, migration_stack(flow, tmp_path, "DELETE FROM marker; SELECT 1/0", tag="v2"))
    assert bad.returncode != 0
    assert "Migration ar-migrate of phase modules failed" in bad.stdout, bad.stdout[-4000:]
    assert "Restored ar from the backups taken before it" in bad.stdout
    assert ar_rows(flow, "SELECT count(*), sum(v) FROM marker") == before
    assert images(flow.project) == good
    info = releases(flow)
    assert info["live"] == live["live"] and info["lock"] is None
    assert info["releases"][0]["status"] == "failed"
    assert [b["name"] for b in info["releases"][0]["backups"]] == ["ar"]  # the backup is pinned to it
    for secret in flow.passwords.values():
        assert secret not in bad.stdout


# --------------------------------------------------------------------------------------------
# Zero downtime for replicated services behind a proxy
# --------------------------------------------------------------------------------------------
def test_deploy_rolls_out_the_auth_replicas_without_one_failed_request(flow, tmp_path):
    from test_rollout import Traffic

    values = stack_vars(flow)
    values["vpsops_stack"]["phases"][1]["rollout"] = ["auth"]
    first = playbook(tmp_path, values)
    assert first.returncode == 0, first.stdout[-3000:]

    values = stack_vars(flow, tag="v2")
    values["vpsops_stack"]["phases"][1]["rollout"] = ["auth"]
    with Traffic(url=flow.url("AUTH_PORT"), interval=0.05, max_seconds=400, max_requests=8000) as traffic:
        upgraded = playbook(tmp_path, values)
        traffic.settle()
    assert upgraded.returncode == 0, upgraded.stdout[-3000:]
    assert "rolled out auth" in upgraded.stdout
    assert traffic.failures() == [], traffic.failures()[:5]
    answered = traffic.releases()
    assert answered[0] == "v1" and answered[-1] == "v2" and len(answered) > 100
    auth = [name for name in images(flow.project) if "-auth-" in name and "-lb-" not in name]
    assert len(auth) == 2
