"""pg_backup and pg_restore against the lab's real PostgreSQL 15 in a container of our own:
both ways in (docker exec and host/port), both formats, every verification level, copy and
retention, restore with safety backup, the backups of one phase at the same time on two servers
(backup_many), and every fault of the issue (wrong password, missing database, container not
running, destination not writable, disk full, PostgreSQL killed during the dump). Containers are
`vpsops-bk-*`, ports 26433-26439, files under /tmp/vpsops-bk-*."""

import glob
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import threading

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _backup as backup
from conftest import ROOT, ansible_env, run, wait_until

PG_IMAGE = "vpsops-lab/postgres:15"
USER = "shopkeeper"
DB = "shop"
INVENTORY = os.path.join(ROOT, "inventories", "lab")
PLAYBOOK_BIN = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")


class Pg:
    """One PostgreSQL container of our own, with a fresh password."""

    def __init__(self, name, port):
        self.name = name
        self.port = port
        self.password = "bk-" + secrets.token_hex(10)

    def start(self):
        run(["docker", "rm", "-f", self.name], check=False)
        run(["docker", "run", "-d", "--name", self.name, "-e", "POSTGRES_USER=" + USER, "-e", "POSTGRES_DB=" + DB,
             "-e", "POSTGRES_PASSWORD=" + self.password, "-p", "127.0.0.1:%d:5432" % self.port,
             # over TCP: the init's temporary server listens only on the socket
             "--health-cmd", "pg_isready -h 127.0.0.1 -U %s -d %s" % (USER, DB), "--health-interval", "1s",
             PG_IMAGE])
        wait_until("%s healthy" % self.name, lambda: run(
            ["docker", "inspect", "-f", "{{.State.Health.Status}}", self.name]).stdout.strip() == "healthy", 60)

    def remove(self):
        run(["docker", "rm", "-f", self.name], check=False)

    def sql(self, text, db=DB, check=True):
        proc = subprocess.run(["docker", "exec", "-i", self.name, "psql", "-X", "-q", "-A", "-t", "-v",
                               "ON_ERROR_STOP=1", "-U", USER, "-d", db], input=text, capture_output=True, text=True,
                              timeout=120, check=False)
        if check and proc.returncode != 0:
            raise AssertionError("psql failed: %s" % proc.stderr)
        return proc

    def value(self, text, db=DB):
        return self.sql(text, db=db).stdout.strip()

    def container_params(self, **extra):
        params = dict(db=DB, login_user=USER, login_password=self.password, container=self.name, docker_cli="docker",
                      format="custom", jobs=1, verify="toc", space_factor=1.0, timeout=300,
                      container_tmpdir="/tmp")
        params.update(extra)
        return params

    def host_params(self, **extra):
        return self.container_params(container=None, login_host="127.0.0.1", port=self.port, **extra)


SEED = """
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 5000) g;
CREATE TABLE orders (id bigserial PRIMARY KEY, item int REFERENCES items, qty int);
INSERT INTO orders (item, qty) SELECT (g % 5000) + 1, g FROM generate_series(1, 2000) g;
CREATE SCHEMA billing;
CREATE TABLE billing."Invoice Lines" (id int, amount numeric);
INSERT INTO billing."Invoice Lines" VALUES (1, 9.5), (2, 10.25), (3, 0);
"""
SEEDED = {"public.items": 5000, "public.orders": 2000, 'billing."Invoice Lines"': 3}


@pytest.fixture(scope="module")
def pg(lab):
    server = Pg("vpsops-bk-pg", 26433)
    server.start()
    server.sql(SEED)
    yield server
    server.remove()


@pytest.fixture(scope="module")
def pg2(lab):
    """A second server, for the backups of one phase taken at the same time (backup_many)."""
    server = Pg("vpsops-bk-pg2", 26436)
    server.start()
    server.sql(SEED)
    server.sql("CREATE TABLE ledger AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 20000) g")
    yield server
    server.remove()


@pytest.fixture
def workdir():
    path = "/tmp/vpsops-bk-it-" + secrets.token_hex(4)
    os.mkdir(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tmpfs():
    """Mount small tmpfs file systems for the test; unmounted and removed at the end."""
    mounts = []

    def mount(size):
        path = "/tmp/vpsops-bk-fs-" + secrets.token_hex(4)
        os.mkdir(path)
        run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", path])
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        run(["umount", "-l", path], check=False)
        shutil.rmtree(path, ignore_errors=True)


def files_in(directory):
    return sorted(os.listdir(directory))


def final_names(directory):
    """Names that are not temporary (pg_backup's temporaries start with a dot)."""
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


def sha256_of(path):
    return backup.checksum(path)[0]


def container_tmp_leftovers(pg):
    return run(["docker", "exec", pg.name, "sh", "-c", "ls -d /tmp/vpsops-* 2>/dev/null || true"]).stdout.split()


# ------------------------------------------------------------------------------------------------
# backups that work
# ------------------------------------------------------------------------------------------------
def test_custom_backup_in_the_container_is_verified_atomic_and_private(pg, workdir):
    dest = os.path.join(workdir, "new", "shop")
    result = backup.make_backup(pg.container_params(dest=dest, label="r42"))
    path = result["path"]
    assert os.path.dirname(path) == dest and path.endswith("_r42.dump")
    assert files_in(dest) == sorted([os.path.basename(path), os.path.basename(path) + ".json"])
    assert oct(os.stat(dest).st_mode & 0o777) == "0o700"
    for name in files_in(dest):
        assert oct(os.stat(os.path.join(dest, name)).st_mode & 0o777) == "0o600"
    assert result["verified"] and result["verification"]["level"] == "toc"
    assert result["verification"]["toc_entries"] > 5
    assert result["size"] == os.path.getsize(path) > 0
    assert result["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    sidecar = json.load(open(result["manifest"]))
    for key, value in dict(database=DB, format="custom", label="r42", sha256=result["sha256"], size=result["size"],
                           pg_dump_version=result["pg_dump_version"]).items():
        assert sidecar[key] == value, key
    assert sidecar["server_version"].startswith("15.") and sidecar["verification"]["ok"] is True
    assert sidecar["started"] <= sidecar["finished"]
    # the archive is a real one: the host's pg_restore reads its TOC
    listing = run(["pg_restore", "--list", path]).stdout
    assert "TABLE DATA public items" in listing and 'TABLE DATA billing Invoice Lines' in listing
    assert pg.password not in open(result["manifest"]).read()
    assert pg.password not in json.dumps(result)


def test_directory_backup_in_the_container_streams_out_and_leaves_nothing_inside(pg, workdir):
    result = backup.make_backup(pg.container_params(dest=workdir, format="directory", jobs=2, verify="full"))
    path = result["path"]
    assert os.path.isdir(path) and path.endswith(".dir")
    assert "toc.dat" in os.listdir(path)
    assert result["verification"]["full_read"] is True
    assert result["sha256"] == backup.sha256_tree(path)[0]
    assert json.load(open(result["manifest"]))["sha256_method"] == "sha256sum-of-files"
    assert container_tmp_leftovers(pg) == []
    # the host copy is a complete archive
    assert "TABLE DATA public orders" in run(["pg_restore", "--list", path]).stdout


@pytest.mark.parametrize("fmt", ["custom", "directory"])
def test_restore_verification_from_the_host_counts_rows_and_drops_the_scratch_database(pg, workdir, fmt):
    result = backup.make_backup(pg.host_params(dest=workdir, format=fmt, verify="restore",
                                               verify_tables=["items", 'billing."Invoice Lines"']))
    assert result["verification"]["row_counts"] == {"public.items": 5000, 'billing."Invoice Lines"': 3}
    assert pg.value("SELECT count(*) FROM pg_database WHERE datname LIKE '%vpsops_verify%'") == "0"


def test_restore_verification_fails_on_a_table_that_is_not_in_the_backup(pg, workdir):
    earlier = backup.make_backup(pg.container_params(dest=workdir))
    with pytest.raises(backup.BackupError, match="table public.nosuch is not in the restored backup"):
        backup.make_backup(pg.container_params(dest=workdir, verify="restore", verify_tables=["nosuch"],
                                               label="second"))
    assert final_names(workdir) == sorted([os.path.basename(earlier["path"]), os.path.basename(earlier["manifest"])])
    assert files_in(workdir) == final_names(workdir)
    assert pg.value("SELECT count(*) FROM pg_database WHERE datname LIKE '%vpsops_verify%'") == "0"


def test_copy_to_retention_and_release_references(pg, workdir):
    dest, second, state = (os.path.join(workdir, n) for n in ("dest", "offsite", "state"))
    made = [backup.make_backup(pg.container_params(dest=dest, copy_to=second, label="b%d" % i)) for i in range(3)]
    for result in made:
        copy = result["copy"]
        assert copy["sha256"] == result["sha256"] == sha256_of(copy["path"])
        assert json.load(open(copy["manifest"]))["copy_of"] == result["path"]
    # release r1 references the oldest backup: retention keeps it whatever keep says
    os.makedirs(os.path.join(state, "releases", "r1"))
    with open(os.path.join(state, "releases", "r1", "manifest.json"), "w") as handle:
        json.dump({"id": "r1", "backups": [{"path": made[0]["path"], "sha256": made[0]["sha256"],
                                            "size": made[0]["size"], "verified": True}]}, handle)
    # a file of someone else's and another database's backup are never touched
    with open(os.path.join(dest, "shop_manual.sql"), "w") as handle:
        handle.write("-- by hand")
    check = backup.make_backup(pg.container_params(dest=dest, copy_to=second, keep=1, release_state_dir=state),
                               check_mode=True)
    assert sorted(check["deleted"]) == sorted([made[1]["path"], made[2]["path"], made[1]["copy"]["path"],
                                               made[2]["copy"]["path"]])
    assert all(os.path.exists(m["path"]) for m in made)
    assert check["path"] in check["diff"]["after"] and check["path"] not in check["diff"]["before"]
    result = backup.make_backup(pg.container_params(dest=dest, copy_to=second, keep=1, release_state_dir=state))
    assert sorted(result["deleted"]) == sorted(check["deleted"])
    for directory, new in ((dest, result["path"]), (second, result["copy"]["path"])):
        names = final_names(directory)
        assert os.path.basename(new) in names
        assert os.path.basename(made[0]["path"]) in names
        assert os.path.basename(made[1]["path"]) not in names and os.path.basename(made[2]["path"]) not in names
    assert "shop_manual.sql" in final_names(dest)


# ------------------------------------------------------------------------------------------------
# the backups of one phase at the same time (backup_many), on two servers
# ------------------------------------------------------------------------------------------------
def test_backup_many_takes_each_database_s_own_verified_atomic_backup(pg, pg2, workdir):
    dest = os.path.join(workdir, "phase")
    results = backup.backup_many([
        dict(params=pg.container_params(dest=dest, label="r7")),
        dict(params=pg2.container_params(dest=os.path.join(dest, "pg2"), label="r7", verify="full")),
        dict(params=pg2.host_params(dest=dest, db="postgres", label="r7", format="directory", jobs=2)),
        dict(params=pg.host_params(dest=os.path.join(dest, "host"), label="r7")),
    ])
    assert [(r["database"], r["format"]) for r in results] == [
        (DB, "custom"), (DB, "custom"), ("postgres", "directory"), (DB, "custom")]
    for result in results:
        assert result["verified"] and result["sha256"] == sha256_of(result["path"])
        sidecar = json.load(open(result["manifest"]))
        assert sidecar["sha256"] == result["sha256"] and sidecar["label"] == "r7"
        assert sidecar["pg_dump_version"] == result["pg_dump_version"] and result["pg_dump_version"].startswith("15.")
    assert results[1]["verification"]["full_read"] is True
    # each backup holds its own server's data
    assert "TABLE DATA public ledger" in run(["pg_restore", "--list", results[1]["path"]]).stdout
    assert "ledger" not in run(["pg_restore", "--list", results[0]["path"]]).stdout
    assert final_names(dest) == sorted(["pg2", "host"] + [os.path.basename(p) for r in (results[0], results[2])
                                                          for p in (r["path"], r["manifest"])])
    for sub, result in (("pg2", results[1]), ("host", results[3])):
        assert files_in(os.path.join(dest, sub)) == sorted(
            os.path.basename(p) for p in (result["path"], result["manifest"]))
    assert container_tmp_leftovers(pg) == [] and container_tmp_leftovers(pg2) == []


def test_backup_many_keeps_what_succeeded_and_names_each_failed_database(pg, pg2, workdir):
    jobs = [dict(params=pg.container_params(dest=workdir)),
            dict(params=pg2.container_params(dest=workdir, db="nosuchdb")),
            dict(params=pg2.host_params(dest=os.path.join(workdir, "pg2"),
                                        login_password="wrong-" + secrets.token_hex(4))),
            dict(params=pg2.container_params(dest=workdir, db="postgres"))]
    with pytest.raises(backup.BackupManyError) as failure:
        backup.backup_many(jobs, max_workers=4)
    error = failure.value
    message = str(error)
    assert message.startswith("2 of 4 backups failed: ")
    assert 'nosuchdb (%s@container vpsops-bk-pg2/nosuchdb): cannot read database nosuchdb before the dump' % USER \
        in message and 'database "nosuchdb" does not exist' in message
    assert "%s (%s@127.0.0.1:26436/%s): cannot read database %s" % (DB, USER, DB, DB) in message
    assert "password authentication failed" in message
    assert [index for index, _db, _why in error.failures] == [1, 2]
    kept = [error.results[0], error.results[3]]
    assert error.results[1] is None and error.results[2] is None
    for result in kept:
        assert result["path"] in message and result["verified"] and sha256_of(result["path"]) == result["sha256"]
    assert files_in(workdir) == sorted(os.path.basename(p) for r in kept for p in (r["path"], r["manifest"]))
    for secret in [pg.password, pg2.password] + [job["params"]["login_password"] for job in jobs]:
        assert secret not in message


# ------------------------------------------------------------------------------------------------
# restore
# ------------------------------------------------------------------------------------------------
def counts(pg):
    return json.loads(pg.value(backup.ROW_COUNTS_SQL))


@pytest.mark.parametrize("mode, fmt", [("container", "custom"), ("host", "directory"), ("container", "directory")])
def test_restore_puts_the_data_back_after_a_safety_backup_and_terminates_sessions(pg, workdir, mode, fmt):
    params = pg.container_params if mode == "container" else pg.host_params
    good = backup.make_backup(params(dest=workdir, format=fmt))
    assert counts(pg) == SEEDED
    pg.sql("INSERT INTO items SELECT g, 'new' FROM generate_series(5001, 5100) g; DELETE FROM orders WHERE id <= 500;")
    # a client sitting on the database
    subprocess.Popen(["docker", "exec", pg.name, "psql", "-U", USER, "-d", DB, "-c", "SELECT pg_sleep(120)"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until("the sleeping client", lambda: pg.value(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(120)%'") == "1", 20)

    plan = backup.restore(params(src=good["path"], safety_backup=True, terminate_sessions=True), check_mode=True)
    assert plan["sessions_to_terminate"] >= 1 and plan["tables"]["public.items"] == {"before": 5100, "after": None}
    assert counts(pg)["public.items"] == 5100 and len(final_names(workdir)) == 2

    result = backup.restore(params(src=good["path"], safety_backup=True, terminate_sessions=True))
    assert result["terminated_sessions"] >= 1
    assert result["tables"]["public.items"] == {"before": 5100, "after": 5000}
    assert result["tables"]["public.orders"] == {"before": 1500, "after": 2000}
    assert counts(pg) == SEEDED
    assert pg.value("SELECT count(*) FROM items WHERE name = 'new'") == "0"
    safety = result["safety_backup"]
    assert safety["path"].endswith("_pre-restore.dump") and os.path.dirname(safety["path"]) == workdir
    assert json.load(open(safety["manifest"]))["verification"]["ok"] is True
    assert sha256_of(safety["path"]) == safety["sha256"]
    assert "TABLE DATA public items" in run(["pg_restore", "--list", safety["path"]]).stdout
    assert container_tmp_leftovers(pg) == []


@pytest.mark.parametrize("counting", ["estimate", "none"])
def test_restore_with_estimated_or_no_row_counts(pg, workdir, counting):
    good = backup.make_backup(pg.container_params(dest=workdir))
    pg.sql("ANALYZE")
    result = backup.restore(pg.container_params(src=good["path"], safety_backup=False, row_counts=counting))
    assert result["safety_backup"] is None and final_names(workdir) == sorted(
        [os.path.basename(good["path"]), os.path.basename(good["manifest"])])
    if counting == "none":
        assert result["tables"] == {}
    else:
        assert sorted(result["tables"]) == sorted(SEEDED)
        assert all(isinstance(v["before"], int) and isinstance(v["after"], int) for v in result["tables"].values())
    assert counts(pg) == SEEDED


def test_restore_refuses_a_damaged_backup_and_changes_nothing(pg, workdir):
    good = backup.make_backup(pg.container_params(dest=workdir))
    damaged = os.path.join(workdir, "damaged.dump")
    data = bytearray(open(good["path"], "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(damaged, "wb").write(bytes(data))
    shutil.copy(good["manifest"], damaged + ".json")
    pg.sql("INSERT INTO items VALUES (99999, 'keep me')")
    try:
        with pytest.raises(backup.BackupError, match="the backup is damaged or was changed"):
            backup.restore(pg.container_params(src=damaged))
        assert pg.value("SELECT name FROM items WHERE id = 99999") == "keep me"
        assert not glob.glob(os.path.join(workdir, "*pre-restore*"))
    finally:
        pg.sql("DELETE FROM items WHERE id = 99999")


def test_restore_into_a_missing_database_fails_before_touching_anything(pg, workdir):
    good = backup.make_backup(pg.container_params(dest=workdir))
    with pytest.raises(backup.BackupError, match='database "nosuchdb" does not exist'):
        backup.restore(pg.container_params(src=good["path"], db="nosuchdb"))
    assert final_names(workdir) == sorted([os.path.basename(good["path"]), os.path.basename(good["manifest"])])


def test_restore_refuses_a_mismatched_or_partial_backup_unless_forced(pg, pg2, workdir):
    """A schema-only backup, a backup of some tables, one of another database and one of the same
    database name on another server (two stack databases both named shop) are refused before
    anything changes, each naming why; force_mismatch restores one all the same, with a warning."""
    schema = backup.make_backup(pg.container_params(dest=workdir, schema_only=True, label="schema"))
    some = backup.make_backup(pg.container_params(dest=workdir, tables=["items"], label="some"))
    other_server = backup.make_backup(pg2.container_params(dest=workdir, label="pg2"))
    pg.sql("DROP DATABASE IF EXISTS shop_copy", db=DB)
    pg.sql("CREATE DATABASE shop_copy", db=DB)
    other_db = backup.make_backup(pg.container_params(dest=workdir, db="shop_copy", label="copy"))
    manifest = json.load(open(schema["manifest"]))
    assert manifest["system_identifier"] == pg.value("SELECT system_identifier FROM pg_control_system()")
    assert manifest["system_identifier"] != json.load(open(other_server["manifest"]))["system_identifier"]
    before = set(files_in(workdir))
    for made, why in ((schema, "it is schema-only (no rows)"), (some, "it holds only the tables items"),
                      (other_server, "it was taken on another PostgreSQL cluster (system identifier "),
                      (other_db, "it is a backup of database shop_copy, not of shop")):
        for check_mode in (True, False):
            with pytest.raises(backup.BackupError) as failure:
                backup.restore(pg.container_params(src=made["path"]), check_mode=check_mode)
            message = str(failure.value)
            assert message.startswith("refusing to restore %s into database shop: " % made["path"]), message
            assert why in message and "Nothing was changed" in message and "force_mismatch" in message, message
    assert counts(pg) == SEEDED and set(files_in(workdir)) == before  # no safety backup either
    assert pg.value("SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop'") >= "1"

    # forced: restored, the reason in the result and a warning; the safety backup holds the rows
    forced = backup.restore(pg.container_params(src=schema["path"], force_mismatch=True))
    assert forced["mismatches"] == ["it is schema-only (no rows)"]
    assert any("although it is schema-only" in w for w in forced["warnings"]), forced["warnings"]
    assert forced["tables"]["public.items"] == {"before": 5000, "after": 0}
    back = backup.restore(pg.container_params(src=forced["safety_backup"]["path"], safety_backup=False))
    assert back["mismatches"] == [] and counts(pg) == SEEDED
    pg.sql("DROP DATABASE shop_copy", db=DB)


def test_retention_on_the_server_keeps_the_last_full_backup_and_the_one_just_made(pg, workdir):
    """A full backup, then three newer schema-only ones with keep 3; then an unverified backup
    with keep_days 0: the full one and the new one survive."""
    full = backup.make_backup(pg.container_params(dest=workdir, label="full"))
    schemas = [backup.make_backup(pg.container_params(dest=workdir, schema_only=True, keep=3, label="s%d" % i))
               for i in range(3)]
    assert schemas[-1]["deleted"] == []
    assert os.path.exists(full["path"])
    unverified = backup.make_backup(pg.container_params(dest=workdir, verify="none", keep_days=0, label="nv"))
    assert sorted(unverified["deleted"]) == sorted(s["path"] for s in schemas[:2])
    left = [n for n in final_names(workdir) if not n.endswith(".json")]
    assert left == sorted(os.path.basename(p) for p in (full["path"], schemas[2]["path"], unverified["path"]))
    assert "TABLE DATA public items" in run(["pg_restore", "--list", full["path"]]).stdout


def test_a_dump_left_in_the_container_is_reported_with_how_to_remove_it(pg, workdir):
    """A directory dump in the container whose container is paused while pg_dump waits for a
    lock: the backup times out, the temporary dump cannot be removed (docker exec into a paused
    container fails), and the failure says where the dump is and how to remove it. Once the
    container runs again, pg_dump completes it: a full dump of the database is left there."""
    locker = subprocess.Popen(["docker", "exec", "-i", pg.name, "psql", "-X", "-q", "-U", USER, "-d", DB],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    paused = False
    try:
        locker.stdin.write("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE;\n")
        locker.stdin.flush()
        wait_until("the lock", lambda: pg.value(
            "SELECT count(*) FROM pg_locks WHERE relation = 'orders'::regclass AND mode = 'AccessExclusiveLock'"
            " AND granted") == "1", 20)
        outcome = {}

        def dump():
            try:
                outcome["result"] = backup.make_backup(pg.container_params(dest=workdir, format="directory",
                                                                           timeout=8, label="paused"))
            except backup.BackupError as exc:
                outcome["error"] = str(exc)

        worker = threading.Thread(target=dump)
        worker.start()
        wait_until("pg_dump waiting for the lock", lambda: pg.value(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock'")
            == "1", 30)
        inside = container_tmp_leftovers(pg)
        assert len(inside) == 1, inside
        run(["docker", "pause", pg.name])
        paused = True
        worker.join(60)
        assert not worker.is_alive()
        run(["docker", "unpause", pg.name])
        paused = False
        assert "result" not in outcome
        message = outcome["error"]
        assert "a dump of database shop is left in container %s at %s" % (pg.name, inside[0]) in message, message
        assert "is paused" in message and "remove it with: docker exec %s rm -rf %s" % (pg.name, inside[0]) in message
        locker.stdin.write("COMMIT;\n")
        locker.stdin.close()
        locker.wait(30)
        # pg_dump, which nothing stopped inside the container, finishes its dump there
        wait_until("pg_dump done", lambda: pg.value(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'") == "0", 30)
        listed = run(["docker", "exec", pg.name, "pg_restore", "-U", USER, "--list", inside[0]]).stdout
        assert "TABLE DATA public items" in listed
        assert final_names(workdir) == []
        run(["docker", "exec", pg.name, "rm", "-rf", inside[0]])
        assert container_tmp_leftovers(pg) == []
    finally:
        if paused:
            run(["docker", "unpause", pg.name], check=False)
        if locker.poll() is None:
            locker.kill()
        run(["docker", "exec", pg.name, "sh", "-c", "rm -rf /tmp/vpsops-bk-*"], check=False)


def test_a_scratch_database_that_cannot_be_dropped_is_reported(pg, workdir):
    """verify: restore by a role without superuser rights while a superuser's session sits in the
    scratch database: DROP DATABASE ... WITH (FORCE) cannot end it. The backup is good, and its
    warnings name the scratch database, why it is left and how to drop it."""
    pg.sql("DROP DATABASE IF EXISTS vdb; DROP ROLE IF EXISTS verifier", db=DB)
    pg.sql("CREATE ROLE verifier LOGIN CREATEDB", db=DB)
    pg.sql("CREATE DATABASE vdb OWNER verifier", db=DB)
    pg.sql("SET ROLE verifier; CREATE TABLE big (id int PRIMARY KEY, note text); "
           "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 250000) g", db="vdb")
    found = {}

    def sit_in_the_scratch_database():
        # a superuser's session polls for the scratch database, then another one sits in it
        proc = pg.sql("DO $$DECLARE n text; BEGIN FOR i IN 1..6000 LOOP SELECT datname INTO n FROM pg_database "
                      "WHERE datname LIKE 'vdb\\_vpsops\\_verify\\_%'; IF n IS NOT NULL THEN RAISE NOTICE 'scratch=%', n; "
                      "RETURN; END IF; PERFORM pg_sleep(0.005); END LOOP; END$$", check=False)
        name = proc.stderr.split("scratch=")[-1].strip() if "scratch=" in proc.stderr else None
        found["name"] = name
        if name:
            found["sitter"] = subprocess.Popen(["docker", "exec", pg.name, "psql", "-U", USER, "-d", name, "-c",
                                                "SELECT pg_sleep(60)"],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    watcher = threading.Thread(target=sit_in_the_scratch_database)
    watcher.start()
    try:
        result = backup.make_backup(pg.container_params(dest=workdir, db="vdb", login_user="verifier",
                                                        verify="restore", verify_tables=["big"]))
        watcher.join(60)
        name = found["name"]
        assert name and result["verification"]["row_counts"] == {"public.big": 250000}
        assert result["verification"]["scratch_database_left"] == name
        warning = [w for w in result["warnings"] if "scratch database" in w]
        assert warning and "the scratch database %s of the verification could not be dropped" % name in warning[0]
        assert "must be a superuser to terminate superuser process" in warning[0], warning
        assert 'DROP DATABASE "%s" WITH (FORCE);' % name in warning[0]
        assert pg.value("SELECT count(*) FROM pg_database WHERE datname = '%s'" % name) == "1"
    finally:
        watcher.join(60)
        if found.get("sitter"):
            found["sitter"].kill()
        for name in pg.value("SELECT string_agg(datname, ' ') FROM pg_database WHERE datname LIKE "
                             "'vdb_vpsops_verify_%'").split():
            pg.sql('DROP DATABASE "%s" WITH (FORCE)' % name, db=DB)
        pg.sql("DROP DATABASE IF EXISTS vdb; DROP ROLE IF EXISTS verifier", db=DB)


# ------------------------------------------------------------------------------------------------
# bad input and faults: a clear failure naming what failed with the command's stderr, no file
# under a final name, every earlier good backup untouched
# ------------------------------------------------------------------------------------------------
def assert_only(directory, good):
    """Only the earlier good backup (unchanged) and its manifest are left, no temporary either."""
    assert files_in(directory) == sorted([os.path.basename(good["path"]), os.path.basename(good["manifest"])])
    assert sha256_of(good["path"]) == good["sha256"]


@pytest.mark.parametrize("change, expected", [
    (dict(mode="host", login_password="wrong-" + secrets.token_hex(4)), ["psql", "password authentication failed"]),
    (dict(mode="container", db="nosuchdb"), ["psql", 'database "nosuchdb" does not exist']),
    (dict(mode="host", db="nosuchdb"), ["psql", 'database "nosuchdb" does not exist']),
    (dict(mode="container", container="vpsops-bk-nosuch"), ["psql", "No such container: vpsops-bk-nosuch"]),
])
def test_connection_faults(pg, workdir, change, expected):
    good = backup.make_backup(pg.container_params(dest=workdir))
    change = dict(change)
    params = (pg.container_params if change.pop("mode") == "container" else pg.host_params)(dest=workdir, **change)
    with pytest.raises(backup.BackupError) as failure:
        backup.make_backup(params)
    message = str(failure.value)
    for part in expected:
        assert part in message, message
    assert pg.password not in message and (params["login_password"] not in message)
    assert_only(workdir, good)


def test_container_not_running(pg, workdir):
    good = backup.make_backup(pg.container_params(dest=workdir))
    name = "vpsops-bk-stopped"
    run(["docker", "rm", "-f", name], check=False)
    run(["docker", "create", "--name", name, PG_IMAGE])
    try:
        with pytest.raises(backup.BackupError) as failure:
            backup.make_backup(pg.container_params(dest=workdir, container=name))
    finally:
        run(["docker", "rm", "-f", name], check=False)
    assert "container %s" % name in str(failure.value) and "is not running" in str(failure.value)
    assert_only(workdir, good)


def test_destination_not_writable(pg, tmpfs):
    dest = tmpfs("16m")
    good = backup.make_backup(pg.container_params(dest=dest))
    run(["mount", "-o", "remount,ro", dest])
    with pytest.raises(backup.BackupError, match="dest: directory %s is not writable" % dest):
        backup.make_backup(pg.container_params(dest=dest))
    # nor may a missing directory on the read-only file system be created
    with pytest.raises(backup.BackupError, match="dest: cannot create directory %s/sub: Read-only file system" % dest):
        backup.make_backup(pg.container_params(dest=dest + "/sub"))
    assert_only(dest, good)


def test_destination_too_small_fails_before_the_dump(pg, tmpfs):
    dest = tmpfs("1m")
    with pytest.raises(backup.BackupError) as failure:
        backup.make_backup(pg.container_params(dest=dest))
    message = str(failure.value)
    assert "dest: not enough free space in %s" % dest in message and "bytes free" in message
    assert "the dump of database shop (estimated at " in message
    assert "user tables with their indexes and large objects" in message and "x space_factor 1.0" in message
    assert files_in(dest) == []


def test_a_small_database_is_backed_up_to_a_disk_smaller_than_its_catalogs(pg, tmpfs):
    """Ten rows: pg_database_size says 7.6 MB (the catalogs), the dump holds a few kB."""
    pg.sql("DROP DATABASE IF EXISTS tiny", db=DB)
    pg.sql("CREATE DATABASE tiny", db=DB)
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) "
           "FROM generate_series(1, 10) g", db="tiny")
    dest = tmpfs("3m")
    size = int(pg.value("SELECT pg_database_size('tiny')"))
    assert size > 3 * 1024 * 1024
    result = backup.make_backup(pg.container_params(dest=dest, db="tiny"))
    assert result["database_size"] == size
    assert result["size"] < result["estimate"] < 2 * 1024 * 1024, result
    assert "TABLE DATA public t" in run(["pg_restore", "--list", result["path"]]).stdout
    # the estimate grows with what the dump holds: 2 MB of rows no longer fit
    pg.sql("INSERT INTO t SELECT g, repeat(md5(g::text), 8) FROM generate_series(11, 9000) g", db="tiny")
    with pytest.raises(backup.BackupError, match=r"the dump of database tiny \(estimated at \d+ bytes"):
        backup.make_backup(pg.container_params(dest=dest, db="tiny", label="bigger"))
    assert final_names(dest) == sorted([os.path.basename(result["path"]), os.path.basename(result["manifest"])])
    pg.sql("DROP DATABASE tiny", db=DB)


@pytest.fixture
def toasted(pg):
    """40 rows of 1 MB each that PostgreSQL stores compressed (TOAST): the database stays small on
    disk, but an uncompressed dump is 40 MB, so the free-space estimate passes and the disk fills."""
    pg.sql("CREATE TABLE toasted AS SELECT g AS id, repeat(md5(g::text), 31250) AS body "
           "FROM generate_series(1, 40) g")
    yield
    pg.sql("DROP TABLE toasted")


@pytest.mark.parametrize("mode, fmt", [("container", "custom"), ("host", "custom"), ("host", "directory")])
def test_destination_disk_full_during_the_dump(pg, tmpfs, toasted, mode, fmt):
    dest = tmpfs("24m")
    params = pg.container_params if mode == "container" else pg.host_params
    good = backup.make_backup(params(dest=dest, tables=["items"]))
    assert int(pg.value("SELECT pg_database_size('shop')")) < 20 * 1024 * 1024
    with pytest.raises(backup.BackupError) as failure:
        backup.make_backup(params(dest=dest, format=fmt, compress=0))
    message = str(failure.value)
    assert "pg_dump on" in message and "no space left on device" in message.lower(), message
    assert_only(dest, good)


def test_postgres_killed_during_the_dump(lab, workdir):
    """pg_dump is held mid-dump by a lock another session has, PostgreSQL is killed, the dump fails."""
    server = Pg("vpsops-bk-kill", 26434)
    server.start()
    try:
        server.sql("CREATE TABLE small (id int); INSERT INTO small VALUES (1); "
                   "CREATE TABLE busy AS SELECT g AS id FROM generate_series(1, 100000) g;")
        good = backup.make_backup(server.container_params(dest=workdir))
        locker = subprocess.Popen(["docker", "exec", "-i", server.name, "psql", "-U", USER, "-d", DB],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  text=True)
        locker.stdin.write("BEGIN; LOCK TABLE busy IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120);\n")
        locker.stdin.flush()
        wait_until("the lock", lambda: server.value(
            "SELECT count(*) FROM pg_locks WHERE relation = 'busy'::regclass AND mode = 'AccessExclusiveLock'"
            " AND granted") == "1", 20)
        outcome = {}

        def dump():
            try:
                outcome["result"] = backup.make_backup(server.container_params(dest=workdir, label="doomed"))
            except backup.BackupError as exc:
                outcome["error"] = str(exc)

        worker = threading.Thread(target=dump)
        worker.start()
        wait_until("pg_dump waiting inside its dump", lambda: server.value(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock'")
            == "1", 30)
        assert glob.glob(os.path.join(workdir, ".*doomed*.tmp-*")), "the dump's temporary file exists while it runs"
        run(["docker", "kill", server.name])
        worker.join(60)
        assert not worker.is_alive()
        locker.kill()
    finally:
        server.remove()
    assert "result" not in outcome, "the dump succeeded although PostgreSQL was killed"
    assert "pg_dump on %s@container vpsops-bk-kill/shop failed" % USER in outcome["error"], outcome["error"]
    assert_only(workdir, good)


# ------------------------------------------------------------------------------------------------
# through Ansible, over SSH to the lab host: check mode, diff, the module's failures, no password
# anywhere in -vvv output, results or manifests
# ------------------------------------------------------------------------------------------------
PLAY = """
- name: pg_backup and pg_restore through Ansible
  hosts: lab1
  gather_facts: false
  vars:
    conn: &conn
      container: "{{ pg_container }}"
      db: shop
      login_user: shopkeeper
      login_password: "{{ pg_password }}"
  tasks:
    - name: Plan a backup
      vpsops.deploy.pg_backup:
        <<: *conn
        dest: "{{ dest }}"
        keep: 1
      check_mode: true
      register: planned
    - name: Take a backup
      vpsops.deploy.pg_backup:
        <<: *conn
        dest: "{{ dest }}"
        keep: 1
        label: r1
      register: taken
    - name: Take a backup with a wrong password from the host
      vpsops.deploy.pg_backup:
        db: shop
        login_host: 127.0.0.1
        port: "{{ pg_port }}"
        login_user: shopkeeper
        login_password: "wrong-{{ pg_password }}"
        dest: "{{ dest }}"
      register: refused
      ignore_errors: true
    - name: Reject a bad option
      vpsops.deploy.pg_backup:
        <<: *conn
        dest: "{{ dest }}"
        jobs: 4
      register: bad
      ignore_errors: true
    - name: Plan a restore
      vpsops.deploy.pg_restore:
        <<: *conn
        src: "{{ taken.path }}"
      check_mode: true
      register: restore_plan
    - name: Restore
      vpsops.deploy.pg_restore:
        <<: *conn
        src: "{{ taken.path }}"
      register: restored
    - name: Save the results
      ansible.builtin.copy:
        content: "{{ {'planned': planned, 'taken': taken, 'refused': refused, 'bad': bad,
                      'restore_plan': restore_plan, 'restored': restored} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""


def test_modules_through_ansible_keep_the_password_out_of_everything(pg, workdir, tmp_path):
    dest = os.path.join(workdir, "dest")
    out = os.path.join(workdir, "results.json")
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(dict(pg_container=pg.name, pg_password=pg.password, pg_port=pg.port, dest=dest,
                                     out=out)))
    proc = run([PLAYBOOK_BIN, "-i", INVENTORY, str(play), "-e", "@%s" % extra, "--diff", "-vvv"], check=False,
               env=ansible_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    results = json.load(open(out))
    planned, taken, refused, bad = (results[k] for k in ("planned", "taken", "refused", "bad"))
    assert planned["changed"] and planned["path"].startswith(dest + "/shop_") and planned["deleted"] == []
    assert taken["changed"] and taken["verified"] and os.path.exists(taken["path"])
    assert "diff" in taken and os.path.basename(taken["path"]) in taken["diff"]["after"]
    assert refused["failed"] and "password authentication failed" in refused["msg"]
    assert bad["failed"] and "jobs > 1 needs format: directory" in bad["msg"]
    assert results["restore_plan"]["changed"] and results["restore_plan"]["tables"]["public.items"]["after"] is None
    restored = results["restored"]
    assert restored["tables"]["public.items"] == {"before": 5000, "after": 5000}
    assert os.path.exists(restored["safety_backup"]["path"])
    assert final_names(dest) == sorted(os.path.basename(p) for p in (
        taken["path"], taken["manifest"], restored["safety_backup"]["path"], restored["safety_backup"]["manifest"]))
    texts = [proc.stdout, proc.stderr, open(out).read()]
    texts += [open(p).read() for p in glob.glob(os.path.join(dest, "*.json"))]
    for text in texts:
        assert pg.password not in text
