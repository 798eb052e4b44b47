"""The secrets drill: unique secrets planted as vault variables go through a deploy of v1 then v2, a
failing deploy that rolls itself back, one whose migration fails printing a database password,
backup.yml, restore.yml and a dlq.yml replay, each run the way AWX runs a job (ansible-runner over a
private data directory, the variables in env/extravars) with -vvv and --diff, and appear nowhere but
where they must: the project's `.env` and the releases' copies of it (mode 0600), the containers'
environment (by design, not searched) and the extra variables the job was given.

Planted: two database passwords (in postgres checks, backups and the env), a password on a command
check's command line, a token in an http check's URL query, and the webhook URL with its token.

Searched for every secret and for the webhook's token alone: every run's stdout, every job event
ansible-runner stored (artifacts/<job>/job_events/*.json, what AWX keeps and shows), the process
list sampled every 0.05 s during each run (the argv of every process), every file of the stack's
state directory (releases, history, the lock as sampled while held, the project's compose files)
and of its backup directory (dumps and their manifests) as they were after each run, the
controller's audit log and the bodies the webhook received.

The stack is compose project `vpsops-itsec` on loopback ports 18xxx (webhook on 18990), state in
/var/lib/vpsops/vpsops-itsec, backups in /var/backups/vpsops/vpsops-itsec; all removed at the end.
"""

import collections
import glob
import hashlib
import json
import os
import re
import secrets
import threading
import time

import pytest

from awx_runner import run_job
from conftest import ROOT, Stack, ansible_env, run
from test_deploy_playbook import stack_vars
from test_ops_playbooks import psql
from test_slo_notify import receiving, webhook

PROJECT = "vpsops-itsec"
PORT_BASE = 18000
RECEIVER_PORT = PORT_BASE + 990
STATE_DIR = "/var/lib/vpsops/%s" % PROJECT
BACKUP_DIR = "/var/backups/vpsops/%s" % PROJECT
INVENTORY = os.path.join(ROOT, "inventories", "lab")
PLAYBOOKS = os.path.join(ROOT, "playbooks")
# The env files that must hold the secrets: the project's, and each release's copy of it.
ENV_FILES = re.compile(r"^(project/\.env|releases/[^/]+/\.env)$")
MIN_FILES = 20  # files (distinct paths) a search of this drill's state and backups must read at least


def planted():
    """The secrets: name -> value, each unique to this run."""
    return {name: "S3CRET-" + secrets.token_hex(12)
            for name in ("AR_DB_PASSWORD", "PAYMENTS_DB_PASSWORD", "REGISTRY_PASSWORD", "HEALTH_TOKEN",
                         "NOTIFY_TOKEN")}


# The argv of the planted command check, as the process list shows it (its password follows).
CHECK_ARGV = "sh -c exit 0 sh --password "


class Sampler:
    """While a run goes: every process's argv every 0.05 s, and the stack's lock file while it is held."""

    def __init__(self, interval=0.05):
        self.interval = interval
        self.lines = collections.Counter()  # every sampled line, with how often it was seen
        self.samples = 0
        self.locks = set()  # every content the lock file had
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self):
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as handle:
                    raw = handle.read()
            except OSError:  # gone meanwhile, or a kernel thread
                continue
            if raw:
                self.lines["%s %s" % (pid, raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace"))] += 1
        try:
            with open(os.path.join(STATE_DIR, "lock.json"), "rb") as handle:
                self.locks.add(handle.read())
        except OSError:
            pass
        self.samples += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        self.sample()  # once more after the run


class Drill:
    """The stack, its secrets, and everything the runs produced."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.st = Stack(PROJECT, PORT_BASE)
        self.secret = planted()
        self.st.passwords = {k: self.secret[k] for k in ("AR_DB_PASSWORD", "PAYMENTS_DB_PASSWORD")}
        self.notify_url = webhook(self.secret["NOTIFY_TOKEN"], RECEIVER_PORT)
        # What is searched for: each secret, the whole webhook URL and its token alone.
        self.needles = dict(self.secret, NOTIFY_URL=self.notify_url)
        self.audit_log = os.path.join(tmp, "audit.jsonl")
        self.runs = []  # {name, rc, stdout, events, seconds, processes (Counter), samples}
        self.locks = set()
        self.files = {}  # (path, sha256) -> bytes: every version of every file seen after a run
        self.posts = []  # what the webhook received
        self.backup_taken = None  # the backup of ar that backup.yml took and restore.yml restored
        self.failed_events_left = None  # rows of ar's failed_events after the replay
        self.seconds = 0.0

    def stack(self, tag):
        """vpsops_stack referencing the vault variables, never the values."""
        values = stack_vars(self.st, tag=tag)
        stack = values["vpsops_stack"]
        p = self.st.ports
        stack["env"].update(AR_DB_PASSWORD="{{ vault_ar_db_password }}",
                            PAYMENTS_DB_PASSWORD="{{ vault_payments_db_password }}",
                            REGISTRY_PASSWORD="{{ vault_registry_password }}",
                            HEALTH_TOKEN="{{ vault_health_token }}")
        infrastructure, platform, modules = stack["phases"]
        # A token in a URL's query, a password on a command line (a check named by its command).
        modules["checks"] = modules["checks"] + [
            {"name": "nats-with-token", "type": "http",
             "url": "http://127.0.0.1:%d/healthz?token={{ vault_health_token }}" % p["NATS_MONITOR_PORT"]},
            {"type": "command", "argv": ["sh", "-c", "exit 0", "sh", "--password", "{{ vault_registry_password }}"]}]
        infrastructure["checks"] = [
            check for check in infrastructure["checks"] if check["name"] not in ("ar-db", "payments-db")] + [
            {"name": "ar-db", "type": "postgres", "port": p["AR_DB_PORT"], "db": "ar_db",
             "login_user": "ar_user", "login_password": "{{ vault_ar_db_password }}"},
            {"name": "payments-db", "type": "postgres", "port": p["PAYMENTS_DB_PORT"], "db": "payments_db",
             "login_user": "payments_user", "login_password": "{{ vault_payments_db_password }}"}]
        stack["databases"] = {
            # pg_dump in the database's container, and from the host over TCP
            "ar": {"container": self.st.container("ar-postgres"), "db": "ar_db", "login_user": "ar_user",
                   "login_password": "{{ vault_ar_db_password }}"},
            "payments": {"login_host": "127.0.0.1", "port": p["PAYMENTS_DB_PORT"], "db": "payments_db",
                         "login_user": "payments_user", "login_password": "{{ vault_payments_db_password }}"}}
        stack["backup"] = {"dest": BACKUP_DIR, "keep": 10}
        stack["nats_url"] = "nats://127.0.0.1:%d" % p["NATS_PORT"]
        platform["backup"] = ["ar", "payments"]  # taken before the platform phase of every deploy
        return values

    def playbook(self, name, path, tag="v2", stack_change=None, **extra):
        """Run a playbook as AWX runs a job: ansible-runner over a private data directory, the
        variables (secrets included, as a credential or survey would give them) in env/extravars,
        -vvv and --diff; sampling the process list meanwhile."""
        values = self.stack(tag)
        if stack_change:
            stack_change(values["vpsops_stack"])
        values.update(vault_ar_db_password=self.secret["AR_DB_PASSWORD"],
                      vault_payments_db_password=self.secret["PAYMENTS_DB_PASSWORD"],
                      vault_registry_password=self.secret["REGISTRY_PASSWORD"],
                      vault_health_token=self.secret["HEALTH_TOKEN"],
                      vault_notify_url=self.notify_url,
                      vpsops_notify_url="{{ vault_notify_url }}")
        values.update(extra)
        private = os.path.join(self.tmp, "job-%d" % len(self.runs))
        os.makedirs(private)
        env = dict((k, v) for k, v in ansible_env().items() if k.startswith(("ANSIBLE_", "PATH", "VPSOPS_")))
        env["VPSOPS_AUDIT_LOG"] = self.audit_log
        env["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"  # where the time went, in stdout
        with Sampler() as sampler:
            job = run_job(private, os.path.join(PLAYBOOKS, path), ident="job", template=name, project_dir=ROOT,
                          inventory=INVENTORY, extravars=values, envvars=env, verbosity=3, cmdline="--diff",
                          timeout=600)
        events = []
        for event_file in job.event_files():
            with open(event_file) as handle:
                events.append((os.path.basename(event_file), handle.read()))
        self.runs.append({"name": name, "rc": job.rc, "status": job.status, "stdout": job.stdout, "events": events,
                          "seconds": job.seconds, "processes": sampler.lines, "samples": sampler.samples})
        self.locks |= sampler.locks
        # What AWX itself holds of the job besides its events: the extra variables it was given.
        run(["rm", "-rf", os.path.join(private, "env")])
        self.snapshot()
        return self.runs[-1]

    def snapshot(self):
        """Keep every file of the state and backup directories as it is now."""
        for top in (STATE_DIR, BACKUP_DIR):
            for path in walk(top):
                try:
                    with open(path, "rb") as handle:
                        content = handle.read()
                except OSError:
                    continue
                self.files[(path, hashlib.sha256(content).hexdigest())] = content

    def sql(self, which, text):
        return psql(self.st, which, text)

    def cleanup(self):
        self.st.down()
        run(["rm", "-rf", STATE_DIR, BACKUP_DIR])


def walk(top):
    for base, _dirs, names in os.walk(top):
        for name in names:
            yield os.path.join(base, name)


def is_env_file(path):
    """The project's .env or a release's copy of it: the files that must hold the secrets."""
    return path.startswith(STATE_DIR + "/") and bool(ENV_FILES.match(os.path.relpath(path, STATE_DIR)))


FAILED_EVENTS = ("DELETE FROM failed_events; INSERT INTO failed_events "
                 "(event_id, subject, tenant_id, envelope_json, error, retry_count, failed_at) VALUES "
                 "('sec-1', 'ar.events.ar.invoice.created', 't1', '{\"event_id\": \"sec-1\"}', 'timeout after 3s', 3, "
                 "now() - interval '2 hours'),"
                 "('sec-2', 'ar.events.ar.invoice.created', 't1', '{\"event_id\": \"sec-2\"}', 'invoice 7 not found', "
                 "3, now() - interval '1 hour')")


@pytest.fixture(scope="module")
def drill(lab, tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("secrets-drill"))
    d = Drill(tmp)
    d.cleanup()  # what an interrupted run left
    started = time.monotonic()
    try:
        for receiver in receiving(RECEIVER_PORT):
            d.playbook("deploy v1", "deploy.yml", tag="v1")
            d.playbook("deploy v2", "deploy.yml", tag="v2")
            # auth never answers ok: its check fails at the phase's deadline, kept short here.
            d.playbook("deploy v3-unhealthy (rolls back)", "deploy.yml", tag="v3-unhealthy", deploy_phase_timeout=40)
            d.playbook("deploy with a failing migration (rolls back)", "deploy.yml", tag="v2",
                       stack_change=failing_migration, deploy_phase_timeout=40)
            d.playbook("backup.yml", "backup.yml", backup_label="drill")
            taken = sorted(glob.glob(os.path.join(BACKUP_DIR, "ar_db_*_drill.dump")))
            d.backup_taken = taken[-1] if taken else None
            d.playbook("restore.yml", "restore.yml", restore_database="ar",
                       restore_src=d.backup_taken or "(backup.yml took no backup of ar)", restore_confirm=True)
            d.sql("ar", FAILED_EVENTS)
            d.playbook("dlq.yml replay", "dlq.yml", dlq_action="replay", dlq_confirm=True,
                       dlq_databases=["ar"])
            d.failed_events_left = int(d.sql("ar", "SELECT count(*) FROM failed_events"))
            d.posts = list(receiver.posts)
        d.seconds = time.monotonic() - started
        yield d
    finally:
        d.cleanup()


def failing_migration(stack):
    """The modules phase migrates first, in ar's image: the migration prints the AR database's
    password (its container's PGPASSWORD, from the env file) and fails. One more check makes it a
    new release (v2 again would be the live release, whose phases have nothing to do)."""
    modules = stack["phases"][2]
    modules["migration"] = {"service": "ar", "command": [
        "sh", "-c", "echo connecting to ar_db with password $PGPASSWORD >&2; exit 3"]}
    modules["checks"] = modules["checks"] + [{"name": "ar-port", "type": "tcp", "port": int(stack["env"]["AR_PORT"])}]


def failure(run_):
    return "%s failed (rc=%s, %s):\n%s" % (run_["name"], run_["rc"], run_["status"], run_["stdout"][-5000:])


def test_the_runs_did_what_they_should(drill):
    v1, v2, v3, migration, backup, restore, dlq = drill.runs
    for ok in (v1, v2, backup, restore, dlq):
        assert ok["rc"] == 0 and ok["status"] == "successful", failure(ok)
    for failed in (v3, migration):
        assert failed["rc"] != 0 and failed["status"] == "failed", failure(failed)
        assert "rolled back to the live release" in failed["stdout"], failed["stdout"][-3000:]
    assert "Migration ar of phase modules failed (exit code 3" in migration["stdout"], migration["stdout"][-3000:]
    assert "connecting to ar_db with password" in migration["stdout"]  # its output is shown, masked
    # Every job left its events, as AWX keeps them.
    assert all(len(r["events"]) > 20 for r in drill.runs), [(r["name"], len(r["events"])) for r in drill.runs]
    assert drill.backup_taken, "backup.yml took no backup of ar into %s" % BACKUP_DIR
    assert drill.failed_events_left == 0  # replayed, then removed
    # The webhook was used (v1, v2 succeeded, v3 failed): its URL, with the token, reached the receiver.
    events = [json.loads(post["raw"])["event"] for post in drill.posts]
    assert events == ["deploy_succeeded", "deploy_succeeded", "deploy_failed", "deploy_failed"], events
    assert all(post["path"].endswith(drill.secret["NOTIFY_TOKEN"]) for post in drill.posts)
    # Every run was sampled many times (at least one sample in four of its 0.05 s intervals: a short
    # run is sampled less, never too little), and the audit log was written to the file the runs
    # were given.
    assert all(r["samples"] >= max(20, r["seconds"] / 0.05 / 4) for r in drill.runs), \
        [(r["name"], r["samples"], round(r["seconds"], 1)) for r in drill.runs]
    assert os.path.getsize(drill.audit_log) > 0


def test_the_env_files_hold_the_secrets_owner_only(drill):
    env_files = sorted(p for p in walk(STATE_DIR) if is_env_file(p))
    # The project's .env and one copy per release (v1, v2, v3-unhealthy, v2 with a migration, and none else).
    assert os.path.join(STATE_DIR, "project", ".env") in env_files and len(env_files) == 5, env_files
    for path in env_files:
        assert oct(os.stat(path).st_mode & 0o777) == "0o600", path
        with open(path) as handle:
            text = handle.read()
        for name in ("AR_DB_PASSWORD", "PAYMENTS_DB_PASSWORD", "REGISTRY_PASSWORD"):
            assert "%s='%s'" % (name, drill.secret[name]) in text, (path, name)
        # ... and the search below would have found them there.
        assert len(find(drill.needles, [(path, text.splitlines())])) >= 3


def find(needles, sources):
    """[(secret name, where, line number, excerpt with every secret masked)] for each line holding a secret."""
    found = []
    for where, lines in sources:
        for number, line in enumerate(lines, 1):
            hits = [name for name, value in needles.items() if value in line]
            if hits:
                found.append((hits, where, number, mask(needles, line)))
    return found


def mask(needles, line):
    first = min(line.find(v) for v in needles.values() if v in line)
    for name, value in sorted(needles.items(), key=lambda item: -len(item[1])):
        line = line.replace(value, "<%s>" % name)
    start = max(0, first - 100)
    return ("..." if start else "") + line[start:start + 240]


def lines_of(content):
    return content.decode("utf-8", "replace").splitlines()


def test_no_secret_appears_anywhere_else(drill, capsys):
    sources = []
    for r in drill.runs:
        sources.append(("%s: stdout" % r["name"], r["stdout"].splitlines()))
        for event_name, text in r["events"]:
            sources.append(("%s: job event %s" % (r["name"], event_name), text.splitlines()))
        # The planted command check runs its own argv, password included, as the stack asks: that
        # process is the check itself (docs/checks.md says so); any other process is a leak.
        sources.append(("%s: process list" % r["name"],
                        [line for line in r["processes"] if not line.split(" ", 1)[-1].startswith(CHECK_ARGV)]))
    for content in sorted(drill.locks):
        sources.append(("%s (held)" % os.path.join(STATE_DIR, "lock.json"), lines_of(content)))
    searched_paths, env_files = set(), set()
    for (path, digest), content in sorted(drill.files.items()):
        if is_env_file(path):
            env_files.add(path)
            continue
        searched_paths.add(path)
        sources.append(("%s (sha256 %s)" % (path, digest[:12]), lines_of(content)))
    with open(drill.audit_log, "rb") as handle:
        sources.append((drill.audit_log + " (audit log)", lines_of(handle.read())))
    for number, post in enumerate(drill.posts):
        sources.append(("webhook body #%d" % number, post["raw"].splitlines()))

    # The search reads what it claims to: the state's files, the backups and their manifests.
    names = {os.path.relpath(p, STATE_DIR) for p in searched_paths if p.startswith(STATE_DIR + "/")}
    assert "history.jsonl" in names and any(n.startswith("releases/") and n.endswith(".json") for n in names), names
    assert any(p.startswith(BACKUP_DIR + "/") and p.endswith(".dump.json") for p in searched_paths), searched_paths
    assert drill.locks, "the lock file was never seen while held: the sampler does not read the state dir"
    assert len(searched_paths) >= MIN_FILES, sorted(searched_paths)
    assert env_files  # excluded above, checked in test_the_env_files_hold_the_secrets_owner_only

    found = find(drill.needles, sources)
    lines = sum(len(lines) for _where, lines in sources)
    sampled = sum(sum(r["processes"].values()) for r in drill.runs)
    with capsys.disabled():
        print("\nsecrets drill: %d runs in %.0f s (%s); searched %d sources, %d files (%d versions), %d lines "
              "(process lines sampled: %d), for %d secrets: found %d"
              % (len(drill.runs), drill.seconds, ", ".join("%s %.0f s" % (r["name"], r["seconds"]) for r in drill.runs),
                 len(sources), len(searched_paths), len(drill.files) - sum(1 for p, _digest in drill.files if is_env_file(p)),
                 lines, sampled, len(drill.needles), len(found)))
    assert not found, "secrets found:\n" + "\n".join(
        "%s in %s line %d: %s" % (",".join(hits), where, number, excerpt)
        for hits, where, number, excerpt in found[:60])
