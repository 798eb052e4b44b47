"""Plain SQL dumps (`pg_dump -Fp`, `.sql`, and `.sql.gz` gzip'd by hand as seed 003 makes them)
restored by pg_restore through psql in one transaction: checked by checksum and by pg_dump's own
first and last lines, refused when not a dump of one database, replayed with the safety backup
first, verified by the row counts. Against the lab's PostgreSQL in container `vpsops-st-sql`
(no port published), files under /tmp/vpsops-st-sql-*."""

import gzip
import hashlib
import os
import secrets
import shutil
import subprocess

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _backup as backup
from ansible_collections.vpsops.deploy.plugins.module_utils._pgcli import PgCli
from conftest import run, wait_until

PG_IMAGE = "vpsops-lab/postgres:15"
USER = "clipper"
DB = "clipper"
SEED = """
CREATE TABLE clips (id int PRIMARY KEY, title text NOT NULL);
INSERT INTO clips SELECT g, 'clip ' || g FROM generate_series(1, 4000) g;
CREATE SCHEMA stats;
CREATE TABLE stats.views (clip int, n bigint);
INSERT INTO stats.views SELECT g, g * 3 FROM generate_series(1, 500) g;
"""
SEEDED = {"public.clips": 4000, "stats.views": 500}


class Pg:
    def __init__(self, name):
        self.name = name
        self.password = "sq-" + secrets.token_hex(10)

    def start(self):
        run(["docker", "rm", "-f", self.name], check=False)
        run(["docker", "run", "-d", "--name", self.name, "-e", "POSTGRES_USER=" + USER, "-e", "POSTGRES_DB=" + DB,
             "-e", "POSTGRES_PASSWORD=" + self.password,
             "--health-cmd", "pg_isready -h 127.0.0.1 -U %s -d %s" % (USER, DB), "--health-interval", "1s",
             PG_IMAGE])
        wait_until("%s healthy" % self.name, lambda: run(
            ["docker", "inspect", "-f", "{{.State.Health.Status}}", self.name]).stdout.strip() == "healthy", 60)

    def sql(self, text):
        proc = subprocess.run(["docker", "exec", "-i", self.name, "psql", "-X", "-q", "-A", "-t", "-v",
                               "ON_ERROR_STOP=1", "-U", USER, "-d", DB], input=text, capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def reseed(self):
        self.sql("DROP SCHEMA IF EXISTS stats CASCADE; DROP TABLE IF EXISTS clips, later;" + SEED)

    def counts(self):
        return backup.row_counts(PgCli(self.params()))

    def dump(self, path, *options, gzipped=False):
        """pg_dump's plain output as an operator's script writes it (gzip'd on the host when asked)."""
        data = subprocess.run(["docker", "exec", self.name, "pg_dump", "-U", USER, "-d", DB] + list(options),
                              capture_output=True, check=True, timeout=120).stdout
        with open(path, "wb") as handle:
            handle.write(gzip.compress(data) if gzipped else data)
        return path

    def params(self, **extra):
        params = dict((k, v.get("default")) for k, v in backup.restore_argument_spec().items())
        params.update(db=DB, login_user=USER, login_password=self.password, container=self.name, timeout=300)
        params.update(extra)
        return params

    def remove(self):
        run(["docker", "rm", "-f", self.name], check=False)


@pytest.fixture(scope="module")
def pg(lab):
    server = Pg("vpsops-st-sql")
    server.start()
    server.sql(SEED)
    yield server
    server.remove()


@pytest.fixture
def workdir(pg):
    path = "/tmp/vpsops-st-sql-" + secrets.token_hex(4)
    os.mkdir(path)
    pg.reseed()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def damage(pg):
    """What a failed migration leaves: rows gone, a table added, a row changed."""
    pg.sql("DELETE FROM clips WHERE id > 10; UPDATE stats.views SET n = 0; CREATE TABLE later (x int);")


@pytest.mark.parametrize("gzipped,options,sql_clean", [
    (False, ["--clean", "--if-exists"], False),   # .sql that drops what it creates
    (True, ["--clean", "--if-exists"], False),    # the same, gzip'd by hand (seed 003)
    (True, [], True),                             # .sql.gz without --clean: the user schemas go first
])
def test_a_plain_sql_dump_is_restored_in_one_transaction_after_a_safety_backup(
        pg, workdir, gzipped, options, sql_clean):
    src = pg.dump(os.path.join(workdir, "db-20240101-120000.sql" + (".gz" if gzipped else "")), *options,
                  gzipped=gzipped)
    damage(pg)
    result = backup.restore(pg.params(src=src, sha256=sha256(src), force_mismatch=True, sql_clean=sql_clean))
    assert result["format"] == "sql" and "psql -v ON_ERROR_STOP=1, one transaction" in result["method"]
    assert result["method"].startswith("gunzip | ") is gzipped
    assert result["tables"]["public.clips"] == {"before": 10, "after": 4000}
    assert result["tables"]["stats.views"]["after"] == 500
    assert pg.sql("SELECT sum(n) FROM stats.views") == str(3 * 500 * 501 // 2)
    # objects made after the dump: dropped with the schemas under sql_clean, else they stay (as pg_restore --clean)
    assert ("public.later" in pg.counts()) is (not sql_clean)
    assert any("plain SQL dump without a manifest" in w for w in result["warnings"])
    # the safety backup holds the damaged state, as a verified pg_backup backup
    safety = result["safety_backup"]["path"]
    assert safety.startswith(workdir) and backup.read_sidecar(safety)["verification"]["ok"]
    assert "TABLE DATA public later" in run(["pg_restore", "--list", safety]).stdout


def test_check_mode_checks_the_dump_and_changes_nothing(pg, workdir):
    src = pg.dump(os.path.join(workdir, "db.sql.gz"), "--clean", gzipped=True)
    damage(pg)
    plan = backup.restore(pg.params(src=src, sha256=sha256(src), force_mismatch=True), check_mode=True)
    assert plan["format"] == "sql" and plan["tables"]["public.clips"] == {"before": 10, "after": None}
    assert pg.sql("SELECT count(*) FROM clips") == "10" and sorted(os.listdir(workdir)) == ["db.sql.gz"]


def refused(pg, workdir, params, match):
    before = pg.counts()
    with pytest.raises(backup.BackupError, match=match) as caught:
        backup.restore(params)
    assert pg.counts() == before
    assert not [n for n in os.listdir(workdir) if "pre-restore" in n], "a safety backup was taken"
    return str(caught.value)


def test_without_force_mismatch_a_dump_without_manifest_is_refused(pg, workdir):
    src = pg.dump(os.path.join(workdir, "db.sql"), "--clean")
    damage(pg)
    message = refused(pg, workdir, pg.params(src=src, sha256=sha256(src)), "refusing to restore")
    assert "plain SQL dump without a manifest" in message and "force_mismatch" in message


def test_without_sha256_a_dump_without_manifest_is_refused(pg, workdir):
    src = pg.dump(os.path.join(workdir, "db.sql"), "--clean")
    refused(pg, workdir, pg.params(src=src, force_mismatch=True), "refusing to restore an unchecked backup")


def test_a_dump_without_clean_is_refused_on_a_database_with_tables_unless_sql_clean(pg, workdir):
    src = pg.dump(os.path.join(workdir, "db.sql"))
    damage(pg)
    message = refused(pg, workdir, pg.params(src=src, sha256=sha256(src), force_mismatch=True), "made without --clean")
    assert "Set sql_clean" in message and "public.clips" in message


def write(path, data):
    with open(path, "wb") as handle:
        handle.write(data)
    return path


@pytest.mark.parametrize("name,make,match", [
    ("notes.sql", lambda d: b"just some notes\nnot sql\n", "its beginning has no '-- PostgreSQL database dump' line"),
    ("binary.sql", lambda d: b"\x00\x01\x02" * 100, "holds NUL bytes"),
    ("cut.sql", lambda d: d[:len(d) // 2], "ends without pg_dump's closing line"),
    ("cut.sql.gz", lambda d: gzip.compress(d)[:-200], "the gzip stream ends before its end"),
    ("bad.sql.gz", lambda d: gzip.compress(d)[:40] + b"\xff" * 64 + gzip.compress(d)[104:], "gzip stream is damaged"),
    ("all.sql", lambda d: b"--\n-- PostgreSQL database cluster dump\n--\n" + d, "cluster dump of pg_dumpall"),
    ("custom.dump.gz", None, "custom archive inside gzip"),
])
def test_a_file_that_is_not_a_whole_sql_dump_is_refused(pg, workdir, name, make, match):
    dumped = pg.dump(os.path.join(workdir, "source.sql"), "--clean")
    with open(dumped, "rb") as handle:
        data = handle.read()
    if make is None:
        data = gzip.compress(subprocess.run(["docker", "exec", pg.name, "pg_dump", "-Fc", "-U", USER, "-d", DB],
                                            capture_output=True, check=True).stdout)
    else:
        data = make(data)
    src = write(os.path.join(workdir, name), data)
    refused(pg, workdir, pg.params(src=src, sha256=sha256(src), force_mismatch=True), match)


def test_a_statement_that_fails_half_way_leaves_the_database_as_it_was(pg, workdir):
    src = pg.dump(os.path.join(workdir, "db.sql"), "--clean", "--if-exists")
    with open(src, "rb") as handle:
        text = handle.read()
    cut = text.index(b"COPY public.clips")
    src = write(os.path.join(workdir, "broken.sql"), text[:cut] + b"SELECT 1/0;\n" + text[cut:])
    damage(pg)
    with pytest.raises(backup.BackupError, match="division by zero") as caught:
        backup.restore(pg.params(src=src, sha256=sha256(src), force_mismatch=True))
    assert "the database is unchanged" in str(caught.value) and "the safety backup is" in str(caught.value)
    assert pg.sql("SELECT count(*) FROM clips") == "10" and "public.later" in pg.counts()


@pytest.mark.parametrize("cut_at", [b"COPY public.clips", b"CREATE TABLE stats.views"])
def test_a_dump_that_is_not_what_was_checked_is_never_committed(pg, workdir, cut_at):
    """replay_sql commits only when the bytes it streamed hash to the checked sha256: here the
    check says otherwise, and the data it already sent (in COPY or between statements) is rolled back."""
    src = pg.dump(os.path.join(workdir, "db.sql"), "--clean", "--if-exists")
    damage(pg)
    info = backup.sql_dump_info(src)
    with open(src, "rb") as handle:
        text = handle.read()
    # a dump whose end was lost after cut_at, and a checksum that cannot match it
    write(src, text[:text.index(cut_at) + 200])
    with pytest.raises(backup.BackupError, match="changed while it was restored"):
        backup.replay_sql(PgCli(pg.params()), src, info, DB, timeout=60)
    assert pg.sql("SELECT count(*) FROM clips") == "10" and "public.later" in pg.counts()
