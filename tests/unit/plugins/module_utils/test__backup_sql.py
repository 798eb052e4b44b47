"""Plain SQL dumps told from other files (_backup.sql_dump_info), on the recorded output of the lab's
pg_dump 15 (`pg_dump --clean --if-exists` of a database with one table): what is a whole dump of one
database, gzip'd or not, and what is refused, with the words that say why."""

import gzip
import hashlib
import os

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _backup as backup

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "pg_dump_plain_clean.sql")
with open(FIXTURE, "rb") as _handle:
    DUMP = _handle.read()
NO_CLEAN = b"\n".join(line for line in DUMP.split(b"\n") if not line.startswith(b"DROP "))


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("name,data,gzipped,clean", [
    ("db.sql", DUMP, False, True),
    ("db.sql.gz", gzip.compress(DUMP, mtime=0), True, True),
    ("two-members.sql.gz", gzip.compress(DUMP[:300], mtime=0) + gzip.compress(DUMP[300:], mtime=0), True, True),
    ("noclean.sql", NO_CLEAN, False, False),
])
def test_a_whole_dump_is_recognised_in_one_pass(tmp_path, name, data, gzipped, clean):
    path = write(tmp_path, name, data)
    assert backup.file_kind(path) == "sql"
    info = backup.sql_dump_info(path)
    assert info == dict(sha256=hashlib.sha256(data).hexdigest(), size=len(data), gzip=gzipped, clean=clean,
                        dumped_from="15.18", pg_dump_version="15.18")


@pytest.mark.parametrize("data,words", [
    (b"hello\n", "its beginning has no '-- PostgreSQL database dump' line"),
    (b"", "its beginning has no"),
    (b"\0\1" * 50, "holds NUL bytes"),
    (DUMP[:len(DUMP) // 2], "ends without pg_dump's closing line"),
    (gzip.compress(DUMP, mtime=0)[:-9], "the gzip stream ends before its end"),
    (gzip.compress(b"PGDMP\x01\x0e\x00" + b"x" * 100, mtime=0), "custom archive inside gzip"),
    (b"--\n-- PostgreSQL database cluster dump\n--\n" + DUMP, "cluster dump of pg_dumpall"),
])
def test_anything_else_is_refused_naming_why(tmp_path, data, words):
    path = write(tmp_path, "x.sql", data)
    with pytest.raises(backup.BackupError, match="src: %s" % path) as caught:
        backup.sql_dump_info(path)
    assert words in str(caught.value)


def test_check_backup_hashes_a_sql_dump_while_it_reads_it(tmp_path):
    path = write(tmp_path, "db.sql.gz", gzip.compress(DUMP, mtime=0))
    found = {}
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert backup.check_backup(path, digest, found=found) == ({}, digest, "sql")
    assert found["gzip"] and found["clean"]
    with pytest.raises(backup.BackupError, match="the backup is damaged or was changed"):
        backup.check_backup(path, "0" * 64)
    custom = write(tmp_path, "db.dump", b"PGDMP" + b"\0" * 20)
    assert backup.check_backup(custom, hashlib.sha256(b"PGDMP" + b"\0" * 20).hexdigest())[2] == "custom"
