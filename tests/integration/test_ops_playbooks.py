"""The operations playbooks (backup, restore, health, dlq, status) and the backup role, run by
ansible-playbook over SSH against the lab host on a deployed copy of the lab platform.

The stack is `opsdemo` (its compose project), on loopback ports 25xxx, with its release store and
backups under a temporary directory; the module removes its containers, volumes, pin tags and files.
"""

import glob
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _backup
from conftest import (PHASE_FILES, ROOT, STACK_DIR, VENV_BIN, Stack, ansible_env, ansible_module,
                      remove_pin_tags, run, wait_until)

STACK_NAME = "opsdemo"
PORT_BASE = 25000
INVENTORY = os.path.join(ROOT, "inventories", "lab")
PLAYBOOKS = os.path.join(ROOT, "playbooks")


# --------------------------------------------------------------------------------------------
# the stack and how the playbooks are run
# --------------------------------------------------------------------------------------------

def psql(st, which, text):
    """Run SQL with psql inside a module's database container ("ar" or "payments"); its output."""
    proc = subprocess.run(["docker", "exec", "-i", st.container("%s-postgres" % which), "psql", "-X", "-q",
                           "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "%s_user" % which, "-d", "%s_db" % which],
                          input=text, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


class Ops:
    """The deployed stack, its variables and its directories."""

    def __init__(self, root):
        self.st = Stack(STACK_NAME, PORT_BASE)
        self.root = root
        self.state_dir = os.path.join(root, "state")
        self.backup_dir = os.path.join(root, "backups")
        self.runs = 0
        self.how = None

    @property
    def secrets(self):
        return list(self.st.passwords.values())

    def stack(self):
        st, p = self.st, self.st.ports
        env = {"RELEASE_TAG": "v1"}
        env.update({k: str(v) for k, v in p.items()})
        env.update(st.passwords)
        return {
            "name": STACK_NAME,
            "source": STACK_DIR,
            "env": env,
            "nats_url": "nats://127.0.0.1:%d" % p["NATS_PORT"],
            "databases": {
                # pg_dump/psql in the database's container, and from the host over TCP
                "ar": {"container": st.container("ar-postgres"), "db": "ar_db", "login_user": "ar_user",
                       "login_password": st.passwords["AR_DB_PASSWORD"]},
                "payments": {"login_host": "127.0.0.1", "port": p["PAYMENTS_DB_PORT"], "db": "payments_db",
                             "login_user": "payments_user", "login_password": st.passwords["PAYMENTS_DB_PASSWORD"]},
            },
            "backup": {"dest": self.backup_dir, "keep": 5},
            "phases": [
                {"name": "infrastructure", "compose_files": ["docker-compose.infrastructure.yml"],
                 "checks": [{"name": "nats", "type": "http",
                             "url": "http://127.0.0.1:%d/healthz?js-enabled-only=true" % p["NATS_MONITOR_PORT"]},
                            {"name": "ar-db", "type": "postgres", "port": p["AR_DB_PORT"], "db": "ar_db",
                             "login_user": "ar_user", "login_password": st.passwords["AR_DB_PASSWORD"]},
                            {"name": "payments-db", "type": "tcp", "port": p["PAYMENTS_DB_PORT"]}]},
                {"name": "platform", "compose_files": ["docker-compose.platform.yml"],
                 "checks": [{"name": "auth", "type": "http", "url": st.url("AUTH_PORT"), "json": {"status": "ok"},
                             "request_timeout": 10}]},
                {"name": "modules", "compose_files": ["docker-compose.modules.yml"],
                 "checks": [{"name": "ar", "type": "http", "url": st.url("AR_PORT"), "json": {"status": "ok"},
                             "request_timeout": 10},
                            {"name": "payments", "type": "http", "url": st.url("PAYMENTS_PORT"),
                             "json": {"status": "ok"}, "request_timeout": 10}]},
            ],
        }

    def extra_vars(self, **more):
        values = {"vpsops_stack": self.stack(), "vpsops_state_dir": self.state_dir}
        values.update(more)
        return values

    def playbook(self, name, *args, extra=None, structured=False):
        """Run playbooks/<name>.yml with the stack's variables (in a 0600 file: they hold passwords).
        structured: with the json callback; returns (proc, {task name: lab1 result}) then."""
        self.runs += 1
        vars_file = os.path.join(self.root, "vars-%d.json" % self.runs)
        with open(os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            json.dump(self.extra_vars(**(extra or {})), handle)
        env = ansible_env()
        if structured:
            env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
            env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
        proc = run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", INVENTORY, os.path.join(PLAYBOOKS, name + ".yml"),
                    "-e", "@" + vars_file] + list(args), check=False, env=env)
        for secret in self.secrets:
            assert secret not in proc.stdout and secret not in proc.stderr, "a password leaked from %s" % name
        if not structured:
            return proc
        try:
            data = json.loads(proc.stdout[proc.stdout.index("{"):])
        except ValueError:
            raise AssertionError("no JSON from %s (rc=%d): %s %s" % (name, proc.returncode, proc.stdout[-2000:],
                                                                     proc.stderr[-2000:]))
        tasks = {}
        for play in data["plays"]:
            for task in play["tasks"]:
                if "lab1" in task["hosts"]:
                    # a role's tasks are named "<role> : <task>"
                    tasks[task["task"]["name"].split(" : ")[-1]] = task["hosts"]["lab1"]
        return proc, tasks

    def sql(self, which, text):
        return psql(self.st, which, text)

    def count(self, which, table, where=""):
        return int(self.sql(which, "SELECT count(*) FROM %s %s" % (table, where)))

    def info(self):
        rc, info = ansible_module("compose_release_info", {"stack": STACK_NAME, "state_dir": self.state_dir,
                                                           "history": 100000})
        assert rc == 0, info
        return info

    def backups(self, db):
        return sorted(p for p in glob.glob(os.path.join(self.backup_dir, "%s_*.dump" % db)))


def deploy(ops):
    """Bring the stack up as a live release: with playbooks/deploy.yml, or, when that fails, with
    docker compose and compose_release directly (the ops playbooks only need a live release)."""
    proc = ops.playbook("deploy", extra={"deploy_phase_state_dir": ops.state_dir, "lock_state_dir": ops.state_dir,
                                         "deploy_phase_timeout": 240})
    if proc.returncode == 0 and ops.info()["live"]:
        return "deploy.yml"
    print("deploy.yml did not deploy %s (rc=%d), setting up with compose_release: %s"
          % (STACK_NAME, proc.returncode, proc.stdout[-1500:]))
    shutil.rmtree(ops.state_dir, ignore_errors=True)
    env_file = os.path.join(ops.root, "stack.env")
    with open(os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write("".join("%s=%s\n" % item for item in ops.stack()["env"].items()))
    # Without --wait: on a busy machine Docker's healthchecks time out and compose gives up at the
    # first "unhealthy"; the services themselves answering is what the playbooks need.
    ops.st.compose("up", "-d")
    for port_key in ("AUTH_PORT", "AR_PORT", "PAYMENTS_PORT"):
        wait_until("%s answering ok" % port_key, lambda: json.loads(urllib.request.urlopen(
            ops.st.url(port_key), timeout=5).read().decode()).get("status") == "ok", timeout=300, interval=2)
    rc, rel = ansible_module("compose_release", {
        "stack": STACK_NAME, "state_dir": ops.state_dir, "project_dir": STACK_DIR, "files": PHASE_FILES,
        "env_file": env_file, "pull": "never",
        "phases": [{k: v for k, v in phase.items() if k != "checks"} for phase in ops.stack()["phases"]]})
    assert rc == 0, rel
    rc, live = ansible_module("compose_release", {"stack": STACK_NAME, "state_dir": ops.state_dir,
                                                  "release": rel["release"], "state": "live"})
    assert rc == 0, live
    return "compose_release"


@pytest.fixture(scope="module")
def ops(lab):
    root = tempfile.mkdtemp(prefix="vpsops-ops-")
    os.chmod(root, 0o700)
    ops = Ops(root)
    ops.st.down()
    try:
        ops.how = deploy(ops)
        ops.sql("ar", "CREATE TABLE ledger (id SERIAL PRIMARY KEY, amount INT NOT NULL);"
                      "INSERT INTO ledger (amount) SELECT g FROM generate_series(1, 50) g;")
        ops.sql("payments", "CREATE TABLE payouts (id SERIAL PRIMARY KEY, amount INT NOT NULL);"
                            "INSERT INTO payouts (amount) SELECT g FROM generate_series(1, 30) g;")
        yield ops
    finally:
        ops.st.down()
        remove_pin_tags(STACK_NAME)
        shutil.rmtree(root, ignore_errors=True)
        # deploy.yml's rescue may reach for the default state directory of the stack
        shutil.rmtree("/var/lib/vpsops/%s" % STACK_NAME, ignore_errors=True)


def said(proc):
    """The output with every run of whitespace as one space (the callback wraps long lines)."""
    return " ".join(proc.stdout.split())


def failure(proc):
    """The output of a failed run, for assertion messages."""
    return proc.stdout[-3000:] + proc.stderr[-1000:]


def lock_events(ops):
    return [e for e in ops.info()["history"] if e["event"].startswith("lock_")]


# --------------------------------------------------------------------------------------------
# backup.yml and the backup role
# --------------------------------------------------------------------------------------------
def test_backup_check_mode_says_what_it_would_back_up_and_writes_nothing(ops):
    proc, tasks = ops.playbook("backup", "--check", structured=True)
    assert proc.returncode == 0, failure(proc)
    said = tasks["Say what was backed up"]["msg"]
    assert [line.split(" to ")[0] for line in said] == ["would back up ar (ar_db)", "would back up payments (payments_db)"]
    assert not os.path.exists(ops.backup_dir)


def test_backup_makes_verified_private_backups_of_every_database(ops):
    proc = ops.playbook("backup", "-vvv", extra={"backup_label": "it-1"})
    assert proc.returncode == 0, failure(proc)
    for db in ("ar_db", "payments_db"):
        paths = ops.backups(db)
        assert len(paths) == 1 and paths[0].endswith("_it-1.dump"), paths
        path = paths[0]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path + ".json").st_mode) == 0o600
        listing = run(["pg_restore", "--list", path]).stdout
        assert "dbname: %s" % db in listing
        manifest = json.load(open(path + ".json"))
        assert manifest["verification"]["ok"] is True and manifest["label"] == "it-1"
        assert manifest["sha256"] == run(["sha256sum", path]).stdout.split()[0]
    assert "TABLE DATA public ledger" in run(["pg_restore", "--list", ops.backups("ar_db")[0]]).stdout
    assert stat.S_IMODE(os.stat(ops.backup_dir).st_mode) == 0o700


def test_backup_results_have_the_shape_compose_release_pins(ops):
    proc, tasks = ops.playbook("backup", structured=True, extra={"backup_databases": ["payments"]})
    assert proc.returncode == 0, failure(proc)
    results = tasks["Keep the backups in the shape compose_release pins to a release"]["ansible_facts"]["backup_results"]
    assert len(results) == 1
    entry = results[0]
    assert set(entry) == {"name", "type", "database", "path", "size", "sha256", "verified", "manifest"}
    assert entry["name"] == "payments" and entry["database"] == "payments_db" and entry["verified"] is True
    assert entry["type"] == "postgres"
    assert entry["path"] == ops.backups("payments_db")[-1] and entry["manifest"] == entry["path"] + ".json"
    assert entry["size"] == os.path.getsize(entry["path"])
    # compose_release takes them as they are
    rc, pinned = ansible_module("compose_release", {"stack": STACK_NAME, "state_dir": ops.state_dir,
                                                    "release": ops.info()["live"], "backups": results})
    assert rc == 0, pinned
    live = [r for r in ops.info()["releases"] if r["id"] == ops.info()["live"]][0]
    assert entry["path"] in [b["path"] for b in live["backups"]]


@pytest.mark.parametrize("databases", [["ar", "billing"], "billing"])
def test_backup_of_an_unknown_database_fails_naming_it_before_anything_is_written(ops, databases):
    dest = os.path.join(ops.root, "never")
    proc = ops.playbook("backup", extra={"backup_databases": databases, "backup_dest": dest})
    assert proc.returncode != 0
    assert 'backup_databases names ["billing"], not a database of the stack opsdemo; the known databases are ' \
           '["ar", "payments"]' in said(proc)
    assert not os.path.exists(dest)
    assert "TASK [vpsops.deploy.backup : Back up and verify" not in proc.stdout


# --------------------------------------------------------------------------------------------
# restore.yml
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    ({"restore_database": "billing", "restore_src": "/nonexistent"},
     'restore_database must name one database of the stack opsdemo, one of ["ar", "payments"]; got "billing"'),
    ({"restore_database": "ar"}, "with exactly one of restore_src"),
    ({"restore_database": "ar", "restore_src": "/x.dump", "restore_release": "live"}, "got both"),
    # An AWX survey sends the questions left empty as null: they are unset, not the string "None".
    ({"restore_database": "ar", "restore_src": None, "restore_release": None}, "got neither"),
    ({"restore_database": "ar", "restore_src": "/nonexistent/ar.dump", "restore_confirm": True},
     "restore_src /nonexistent/ar.dump does not exist on lab1"),
    ({"restore_database": "ar", "restore_release": "20200101T000000Z-dead", "restore_confirm": True},
     "20200101T000000Z-dead is not a release of opsdemo on lab1"),
])
def test_restore_refuses_bad_input_before_anything_changes(ops, extra, message):
    before = lock_events(ops)
    proc = ops.playbook("restore", extra=extra)
    assert proc.returncode != 0
    assert message in said(proc), failure(proc)
    assert "Take the deploy lock" not in proc.stdout
    assert lock_events(ops) == before


def test_restore_brings_deleted_rows_back_under_the_lock(ops):
    proc = ops.playbook("backup", extra={"backup_databases": ["ar"], "backup_label": "before-delete"})
    assert proc.returncode == 0, failure(proc)
    backup = ops.backups("ar_db")[-1]
    assert backup.endswith("_before-delete.dump")
    ops.sql("ar", "DELETE FROM ledger WHERE id > 20")
    assert ops.count("ar", "ledger") == 20
    extra = {"restore_database": "ar", "restore_src": backup}

    # Without restore_confirm: refused, nothing changed.
    events = lock_events(ops)
    refused = ops.playbook("restore", extra=extra)
    assert refused.returncode != 0
    assert "confirm it with -e restore_confirm=true" in said(refused)
    assert ops.count("ar", "ledger") == 20 and lock_events(ops) == events

    # Check mode: the plan, nothing restored.
    planned = ops.playbook("restore", "--check", extra=extra)
    assert planned.returncode == 0, failure(planned)
    assert "would restore ar (ar_db) from %s" % backup in said(planned)
    assert ops.count("ar", "ledger") == 20

    # Someone else holds the stack's lock: refused, nothing restored.
    rc, held = ansible_module("deploy_lock", {"stack": STACK_NAME, "state_dir": ops.state_dir,
                                              "owner": "someone-else@elsewhere:1", "ttl": 600})
    assert rc == 0, held
    try:
        blocked = ops.playbook("restore", extra=dict(extra, restore_confirm=True))
        assert blocked.returncode != 0
        assert "someone-else@elsewhere:1" in blocked.stdout
        assert ops.count("ar", "ledger") == 20
        # The lock stays the holder's: this run says it left it alone instead of failing to release it.
        assert "the deploy lock of %s was left alone" % STACK_NAME in blocked.stdout, failure(blocked)
        assert ops.info()["lock"]["owner"] == "someone-else@elsewhere:1"
    finally:
        rc, freed = ansible_module("deploy_lock", {"stack": STACK_NAME, "state_dir": ops.state_dir,
                                                   "owner": "someone-else@elsewhere:1", "state": "released"})
        assert rc == 0, freed

    events = len(ops.info()["history"])
    # As an AWX survey sends it: the questions left empty are null (safety backup: its default, on).
    done = ops.playbook("restore", "-vvv", extra=dict(extra, restore_confirm="true", restore_release=None,
                                                      restore_safety_backup=None, restore_row_counts=None))
    assert done.returncode == 0, failure(done)
    assert ops.count("ar", "ledger") == 50
    assert "public.ledger: 20 rows before, 50 after" in said(done)
    # The lock was taken and released by this run, and is free now.
    new = [e for e in ops.info()["history"][events:] if e["event"].startswith("lock_")]
    assert [e["event"] for e in new] == ["lock_acquired", "lock_released"], new
    assert new[0]["owner"] == new[1]["owner"] != "someone-else@elsewhere:1"
    assert ops.info()["lock"] is None
    # The data it replaced is in a safety backup.
    safety = [p for p in ops.backups("ar_db") if p.endswith("_pre-restore.dump")]
    assert len(safety) == 1
    assert stat.S_IMODE(os.stat(safety[0]).st_mode) == 0o600


def test_restore_from_the_backup_pinned_to_a_release(ops):
    proc, tasks = ops.playbook("backup", structured=True, extra={"backup_databases": "payments",
                                                                 "backup_label": "pinned"})
    assert proc.returncode == 0, failure(proc)
    results = tasks["Keep the backups in the shape compose_release pins to a release"]["ansible_facts"]["backup_results"]
    live = ops.info()["live"]
    rc, pinned = ansible_module("compose_release", {"stack": STACK_NAME, "state_dir": ops.state_dir,
                                                    "release": live, "backups": results})
    assert rc == 0, pinned
    ops.sql("payments", "DELETE FROM payouts WHERE id % 2 = 0")
    assert ops.count("payments", "payouts") == 15

    # the previous release does not exist (one live release): named
    if ops.info()["previous"] is None:
        proc = ops.playbook("restore", extra={"restore_database": "payments", "restore_release": "previous",
                                              "restore_confirm": True})
        assert proc.returncode != 0
        assert "the stack opsdemo has no previous release on lab1" in said(proc)

    proc = ops.playbook("restore", extra={"restore_database": "payments", "restore_release": "live",
                                          "restore_confirm": True, "restore_safety_backup": False})
    assert proc.returncode == 0, failure(proc)
    assert "restored payments (payments_db) from %s" % results[0]["path"] in said(proc)
    assert "safety backup: none" in said(proc)
    assert ops.count("payments", "payouts") == 30
    assert ops.info()["lock"] is None


# --------------------------------------------------------------------------------------------
# the restore drill: restore.yml while the application writes, then back to the safety backup;
# a backup of another database, a schema-only one and a same-named database of another server
# --------------------------------------------------------------------------------------------
class Writer:
    """The application writing to ar_db while the drill runs: one numbered row at a time over TCP
    (psycopg2, autocommit), reconnecting when its session is terminated or refused, as an
    application does."""

    def __init__(self, ops):
        self.dsn = ops.st.psql_dsn("ar")
        self.seq = 0
        self.written = []
        self.failed = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        import psycopg2

        conn = None
        while not self.stopping.is_set():
            self.seq += 1
            try:
                if conn is None:
                    conn = psycopg2.connect(connect_timeout=3, **self.dsn)
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO drill_writes (seq) VALUES (%s)", (self.seq,))
                self.written.append(self.seq)
            except psycopg2.Error:
                self.failed += 1
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.02)
        if conn is not None:
            conn.close()

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(90)
        assert not self.thread.is_alive()

    def more(self, count, timeout=60):
        """Wait until `count` more rows are written."""
        target = len(self.written) + count
        wait_until("%d more rows written" % count, lambda: len(self.written) >= target, timeout, 0.1)
        return self.written[-1]


def seqs_in(dump):
    """The writer's row numbers a backup holds, read from the dump itself."""
    out = run(["pg_restore", "--data-only", "-t", "drill_writes", "-f", "-", dump]).stdout
    rows = out.split("FROM stdin;\n", 1)[1].split("\n\\.", 1)[0]
    return set(int(line.split("\t")[0]) for line in rows.splitlines() if line)


def seqs_up_to(ops, top):
    return set(int(v) for v in ops.sql("ar", "SELECT seq FROM drill_writes WHERE seq <= %d" % top).split())


def rows_said(proc, table):
    """(before, after) of 'TABLE: N rows before, M after' in restore.yml's output."""
    match = re.search(r"%s: (\d+) rows before, (\d+) after" % re.escape(table), said(proc))
    assert match, failure(proc)
    return int(match.group(1)), int(match.group(2))


def test_restore_drill_while_the_application_writes_then_back_to_the_safety_backup(ops):
    drill = os.path.join(ops.root, "drill")
    stack = ops.stack()
    stack["backup"] = dict(stack["backup"], dest=drill)
    ops.sql("ar", "CREATE TABLE drill_writes (seq int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
    ledger = ops.count("ar", "ledger")
    writer = Writer(ops)
    writer.start()
    try:
        writer.more(10)
        # payments' backup is the wrong one offered to ar below
        proc = ops.playbook("backup", extra={"vpsops_stack": stack, "backup_databases": ["ar", "payments"],
                                             "backup_label": "drill"})
        assert proc.returncode == 0, failure(proc)
        (taken,) = glob.glob(os.path.join(drill, "ar_db_*_drill.dump"))
        (other,) = glob.glob(os.path.join(drill, "payments_db_*_drill.dump"))
        in_backup = seqs_in(taken)
        assert len(in_backup) >= 10
        writer.more(10)

        # the backup back while the writer writes: what it holds is there again, exactly
        done = ops.playbook("restore", extra={"vpsops_stack": stack, "restore_database": "ar", "restore_src": taken,
                                              "restore_confirm": True})
        assert done.returncode == 0, failure(done)
        (safety,) = glob.glob(os.path.join(drill, "ar_db_*_pre-restore.dump"))
        in_safety = seqs_in(safety)
        assert in_backup < in_safety and max(in_safety) > max(in_backup)
        assert seqs_up_to(ops, max(in_safety)) == in_backup
        before, after = rows_said(done, "public.drill_writes")
        # counted before the safety backup, and right after the restore (the writer goes on)
        assert len(in_backup) < before <= len(in_safety) and after >= len(in_backup)
        assert rows_said(done, "public.ledger") == (ledger, ledger)
        last = writer.more(10)
        assert last > max(in_safety), "the application writes again after the restore"

        # then the safety backup back: the rows the first restore replaced are there again
        back = ops.playbook("restore", extra={"vpsops_stack": stack, "restore_database": "ar", "restore_src": safety,
                                              "restore_confirm": True, "restore_safety_backup": False})
        assert back.returncode == 0, failure(back)
        assert "safety backup: none" in said(back)
        assert seqs_up_to(ops, max(in_safety)) == in_safety
        assert rows_said(back, "public.drill_writes")[1] >= len(in_safety)
        assert ops.count("ar", "ledger") == ledger
        writer.more(10)
    finally:
        writer.stop()
    assert writer.written[-1] > max(in_safety)
    # the table after the last restore: the safety backup's rows, then only rows written after it
    now = set(int(v) for v in ops.sql("ar", "SELECT seq FROM drill_writes").split())
    assert set(s for s in now if s <= max(in_safety)) == in_safety

    # refused, each naming why, before anything changes: a backup of another database, and a
    # schema-only backup of this one
    # pg_backup's own code in this process (the lab host is this machine): one playbook run less
    schema = _backup.make_backup(dict(
        (k, v.get("default")) for k, v in _backup.backup_argument_spec().items()) | dict(
        container=ops.st.container("ar-postgres"), db="ar_db", login_user="ar_user",
        login_password=ops.st.passwords["AR_DB_PASSWORD"], dest=drill, schema_only=True, label="schema"))
    rows = ops.count("ar", "drill_writes")
    files = sorted(os.listdir(drill))
    history = len(ops.info()["history"])
    for src, why in ((other, "it is a backup of database payments_db, not of ar_db"),
                     (schema["path"], "it is schema-only (no rows)")):
        refused = ops.playbook("restore", extra={"vpsops_stack": stack, "restore_database": "ar",
                                                 "restore_src": src, "restore_confirm": True})
        assert refused.returncode != 0
        assert "refusing to restore %s into database ar_db: " % src in said(refused), failure(refused)
        assert why in said(refused) and "Nothing was changed" in said(refused)
        assert ops.count("ar", "drill_writes") == rows and ops.count("ar", "ledger") == ledger
        assert sorted(os.listdir(drill)) == files  # no safety backup was taken
    info = ops.info()
    assert info["lock"] is None  # each refused run took the lock and released it
    assert [e["event"] for e in info["history"][history:] if e["event"].startswith("lock_")] == [
        "lock_acquired", "lock_released"] * 2
    ops.sql("ar", "DROP TABLE drill_writes")


def test_restore_release_picks_the_pinned_backup_by_the_stack_s_key_not_the_database_name(ops):
    """Two databases of the stack both named ar_db, on two servers: restore_release restores each
    one's own pinned backup (picked by database name, one would get the other's)."""
    drill = os.path.join(ops.root, "twins")
    ops.sql("payments", "CREATE DATABASE ar_db")
    try:
        subprocess.run(["docker", "exec", "-i", ops.st.container("payments-postgres"), "psql", "-X", "-q",
                        "-v", "ON_ERROR_STOP=1", "-U", "payments_user", "-d", "ar_db"],
                       input="CREATE TABLE ledger (id SERIAL PRIMARY KEY, amount INT NOT NULL);"
                             "INSERT INTO ledger (amount) SELECT g FROM generate_series(1, 7) g;",
                       text=True, check=True, capture_output=True, timeout=60)
        stack = ops.stack()
        stack["backup"] = dict(stack["backup"], dest=drill)
        stack["databases"]["ar_twin"] = dict(stack["databases"]["payments"], db="ar_db")
        proc, tasks = ops.playbook("backup", structured=True, extra={
            "vpsops_stack": stack, "backup_databases": ["ar", "ar_twin"], "backup_label": "twins"})
        assert proc.returncode == 0, failure(proc)
        results = tasks["Keep the backups in the shape compose_release pins to a release"]["ansible_facts"][
            "backup_results"]
        assert [(r["name"], r["database"]) for r in results] == [("ar", "ar_db"), ("ar_twin", "ar_db")]
        rc, pinned = ansible_module("compose_release", {"stack": STACK_NAME, "state_dir": ops.state_dir,
                                                        "release": ops.info()["live"], "backups": results})
        assert rc == 0, pinned
        ledger = ops.count("ar", "ledger")
        ops.sql("ar", "DELETE FROM ledger WHERE id > 10")
        done = ops.playbook("restore", extra={"vpsops_stack": stack, "restore_database": "ar",
                                              "restore_release": "live", "restore_confirm": True,
                                              "restore_safety_backup": False})
        assert done.returncode == 0, failure(done)
        assert "restored ar (ar_db) from %s" % results[0]["path"] in said(done)
        assert ops.count("ar", "ledger") == ledger
    finally:
        ops.sql("payments", "DROP DATABASE IF EXISTS ar_db WITH (FORCE)")


# --------------------------------------------------------------------------------------------
# health.yml and status.yml
# --------------------------------------------------------------------------------------------
def not_healthy(text):
    """The check names of "... not healthy on lab1: a, b (...)"."""
    match = re.search(r"not healthy on lab1: ([^(]*?) \(", text)
    assert match, text[-3000:]
    return match.group(1).split(", ")


def test_health_passes_on_a_healthy_stack_and_names_the_check_that_fails(ops):
    # The deadline only matters when a check fails; a busy machine may need a few seconds.
    healthy = ops.playbook("health", "-vvv", extra={"health_timeout": 60})
    assert healthy.returncode == 0, failure(healthy)
    for name in ("infrastructure/nats", "infrastructure/ar-db", "infrastructure/payments-db", "platform/auth",
                 "modules/ar", "modules/payments"):
        assert "ok %s: ready after" % name in said(healthy)

    only = ops.playbook("health", extra={"health_phases": ["modules"], "health_timeout": 60})
    assert only.returncode == 0, failure(only)
    assert "modules/ar" in only.stdout and "infrastructure/nats" not in only.stdout

    payments = ops.st.container("payments")
    run(["docker", "stop", "-t", "3", payments])
    try:
        sick = ops.playbook("health", extra={"health_timeout": 20})
        assert sick.returncode != 0
        text = said(sick)
        assert "FAIL modules/payments: request failed" in text
        assert "checks of opsdemo not healthy on lab1: " in text
        failing = not_healthy(text)
        assert "modules/payments" in failing and "modules/ar" not in failing, failing

        # status reports it without failing, unless asked to
        proc, tasks = ops.playbook("status", structured=True, extra={"status_health_timeout": 20})
        assert proc.returncode == 0, failure(proc)
        status = tasks["Keep the status of the host"]["ansible_facts"]["vpsops_status"]
        assert status["health"]["ready"] is False and "modules/payments" in status["health"]["not_ready"]
        assert any(line.startswith("health: NOT HEALTHY: ") and "modules/payments" in line
                   for line in tasks["Show the status of the host"]["msg"])
        strict = ops.playbook("status", extra={"status_health_timeout": 20, "status_fail_unhealthy": "true"})
        assert strict.returncode != 0
        assert "opsdemo is not healthy on lab1: " in said(strict)
        assert "modules/payments" in said(strict).split("opsdemo is not healthy on lab1: ")[1]
    finally:
        run(["docker", "start", payments])
        wait_until("payments answering again", lambda: urllib.request.urlopen(
            ops.st.url("PAYMENTS_PORT"), timeout=5).status == 200, timeout=180, interval=1)


@pytest.mark.parametrize("extra, message", [
    ({"health_phases": ["modules", "cache"]},
     'health_phases names ["cache"], not a phase of the stack opsdemo; the phases are '
     '["infrastructure", "platform", "modules"]'),
    ({"health_timeout": "soon"}, 'health_timeout must be a positive number of seconds, got "soon"'),
])
def test_health_refuses_bad_input(ops, extra, message):
    proc = ops.playbook("health", extra=extra)
    assert proc.returncode != 0
    assert message in said(proc), failure(proc)


def test_status_shows_the_live_release_the_history_and_a_free_lock(ops):
    info = ops.info()
    proc, tasks = ops.playbook("status", structured=True, extra={"status_history": 5, "status_health_timeout": 60})
    assert proc.returncode == 0, failure(proc)
    status = tasks["Keep the status of the host"]["ansible_facts"]["vpsops_status"]
    assert status["stack"] == STACK_NAME and status["host"] == "lab1"
    assert status["live"]["id"] == info["live"]
    assert status["live"]["images"]["ar"] == "vpsops-demo/ar:v1"
    assert status["live"]["images"]["ar-postgres"] == "vpsops-lab/postgres:15"
    assert status["lock"] is None
    assert len(status["history"]) == 5 and status["history"] == info["history"][-5:]
    assert status["health"]["ready"] is True, status["health"]
    lines = tasks["Show the status of the host"]["msg"]
    assert "live release: %s (%s" % (info["live"], status["live"]["time"]) in "\n".join(lines)
    assert "  ar: vpsops-demo/ar:v1" in lines
    assert "lock: free" in lines
    assert "health: healthy (6 checks)" in lines

    rc, held = ansible_module("deploy_lock", {"stack": STACK_NAME, "state_dir": ops.state_dir,
                                              "owner": "deployer@ci:42", "ttl": 600})
    assert rc == 0, held
    try:
        proc, tasks = ops.playbook("status", structured=True)
        assert proc.returncode == 0, failure(proc)
        assert tasks["Keep the status of the host"]["ansible_facts"]["vpsops_status"]["lock"]["owner"] == "deployer@ci:42"
        assert any(line.startswith("lock: held by deployer@ci:42") for line in tasks["Show the status of the host"]["msg"])
    finally:
        ansible_module("deploy_lock", {"stack": STACK_NAME, "state_dir": ops.state_dir, "owner": "deployer@ci:42",
                                       "state": "released"})


# --------------------------------------------------------------------------------------------
# dlq.yml
# --------------------------------------------------------------------------------------------
FAILED = ("INSERT INTO failed_events (event_id, subject, tenant_id, envelope_json, error, retry_count, failed_at) VALUES "
          "('{p}-old-1', '{s}', 't1', '{{\"event_id\": \"{p}-old-1\"}}', 'invoice 17 not found', 3, now() - interval '40 days'),"
          "('{p}-old-2', '{s}', 't1', '{{\"event_id\": \"{p}-old-2\"}}', 'invoice 18 not found', 3, now() - interval '35 days'),"
          "('{p}-new-1', '{s}', 't2', '{{\"event_id\": \"{p}-new-1\"}}', 'timeout after 3s', 3, now())")


def stream_messages(ops, stream):
    url = "http://127.0.0.1:%d/jsz?streams=true" % ops.st.ports["NATS_MONITOR_PORT"]
    with urllib.request.urlopen(url, timeout=5) as resp:
        data = json.loads(resp.read().decode())
    for account in data.get("account_details", []):
        for found in account.get("stream_detail", []):
            if found["name"] == stream:
                return found["state"]["messages"]
    raise AssertionError("no stream %s" % stream)


def test_dlq_report_purge_and_replay(ops):
    ops.sql("ar", "DELETE FROM failed_events;" + FAILED.format(p="ar", s="ar.events.ar.invoice.created"))
    ops.sql("payments", "DELETE FROM failed_events;" + FAILED.format(p="pay", s="payments.events.payments.refund.failed"))

    proc, tasks = ops.playbook("dlq", "-e", "dlq_action=report", structured=True)
    assert proc.returncode == 0, failure(proc)
    result = tasks["Keep the report"]["ansible_facts"]["dlq_result"]
    assert result["total"] == 6
    assert result["databases"]["ar"]["total"] == 3 and result["databases"]["payments"]["total"] == 3
    assert result["databases"]["ar"]["by_error"] == {"invoice <n> not found": 2, "timeout after <n>s": 1}
    lines = tasks["Show the report"]["msg"]
    assert "failed events: 6 in ar, payments" in lines
    assert "  age lt_1h=1 1h_24h=0 1d_7d=0 7d_30d=0 gt_30d=2" in lines

    # purge: refused without dlq_confirm, counted only in check mode
    refused = ops.playbook("dlq", "-e", "dlq_action=purge")
    assert refused.returncode != 0
    assert "dlq_action=purge deletes failed events from ar, payments: confirm it with -e dlq_confirm=true" \
        in said(refused)
    assert ops.count("ar", "failed_events") == 3 and ops.count("payments", "failed_events") == 3
    proc, tasks = ops.playbook("dlq", "--check", "-e", "dlq_action=purge", structured=True)
    assert proc.returncode == 0, failure(proc)
    assert tasks["Keep what was replayed or purged, per database"]["ansible_facts"]["dlq_result"]["databases"]["ar"]["matched"] == 2
    assert ops.count("ar", "failed_events") == 3 and ops.count("payments", "failed_events") == 3

    # purge, confirmed, of one database, exporting first
    export_dir = os.path.join(ops.root, "dlq-export")
    os.mkdir(export_dir, 0o700)
    proc = ops.playbook("dlq", "-e", "dlq_action=purge", "-e", "dlq_confirm=true", extra={
        "dlq_databases": ["ar"], "dlq_export_dir": export_dir})
    assert proc.returncode == 0, failure(proc)
    assert ops.sql("ar", "SELECT string_agg(event_id, ',') FROM failed_events") == "ar-new-1"
    assert ops.count("payments", "failed_events") == 3
    exported = glob.glob(os.path.join(export_dir, "opsdemo-ar-failed-events-*.jsonl"))
    assert len(exported) == 1
    assert sorted(json.loads(line)["event_id"] for line in open(exported[0])) == ["ar-old-1", "ar-old-2"]

    # replay: refused without dlq_confirm; confirmed, the events reach AR_EVENTS and leave the table
    refused = ops.playbook("dlq", "-e", "dlq_action=replay", extra={"dlq_databases": ["ar"]})
    assert refused.returncode != 0 and "dlq_confirm=true" in refused.stdout
    assert ops.count("ar", "failed_events") == 1
    before = stream_messages(ops, "AR_EVENTS")
    proc, tasks = ops.playbook("dlq", "-e", "dlq_action=replay", "-e", "dlq_confirm=true", structured=True,
                               extra={"dlq_databases": ["ar"]})
    assert proc.returncode == 0, failure(proc)
    replayed = tasks["Keep what was replayed or purged, per database"]["ansible_facts"]["dlq_result"]["databases"]["ar"]
    assert replayed["replayed"] == 1 and replayed["removed"] == 1 and replayed["event_ids"] == ["ar-new-1"]
    assert ops.count("ar", "failed_events") == 0
    assert stream_messages(ops, "AR_EVENTS") == before + 1


@pytest.mark.parametrize("extra, message", [
    ({"dlq_action": "nuke"}, 'dlq_action must be one of report, replay or purge; got "nuke"'),
    ({}, "dlq_action must be one of report, replay or purge; got nothing"),
    ({"dlq_action": "report", "dlq_databases": ["ar", "ledger"]},
     'dlq_databases names ["ledger"], not a database of the stack opsdemo; the known databases are ["ar", "payments"]'),
    ({"dlq_action": "replay", "dlq_confirm": True, "dlq_nats_url": "http://127.0.0.1:25822"},
     "must be a client URL nats://host:port without credentials"),
])
def test_dlq_refuses_bad_input(ops, extra, message):
    proc = ops.playbook("dlq", extra=extra)
    assert proc.returncode != 0
    assert message in said(proc), failure(proc)
