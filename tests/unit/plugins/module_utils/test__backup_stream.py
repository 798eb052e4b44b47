# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of the one-pass dump: pg_dump's output is written to the temporary file and hashed
as it arrives (PgCli.check_stream, _backup.stream_dump), and every way it can fail names the tool,
the target and the reason, never the password. A small Python program stands in for pg_dump here
(the real one runs in tests/integration/test_pg_backup.py); tree_digest and the archive header's
pg_dump version are checked against their reference values."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import os
import stat
import sys

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _backup as backup
from ansible_collections.vpsops.deploy.plugins.module_utils._pgcli import PgCli, PgCliError

SECRET = "pa55-" + "w0rd-of-the-day"


class ScriptCli(PgCli):
    """PgCli whose tool is a Python program (the same env(), scrub() and error messages)."""

    def __init__(self, script):
        PgCli.__init__(self, dict(db="ar", login_user="ar_user", login_password=SECRET, port=5434))
        self.script = script

    def argv(self, tool, args, stdin=False):
        return [sys.executable, "-c", self.script]


# 3 MB in uneven writes, so the reader sees many partial chunks
WRITER = "import os, sys\nfor i in range(300):\n    sys.stdout.buffer.write(bytes([i % 256]) * 10007)\n"
EXPECTED = b"".join(bytes([i % 256]) * 10007 for i in range(300))


def test_the_dump_is_written_and_hashed_in_one_pass(tmp_path):
    tmp = str(tmp_path / ".ar.dump.tmp-1")
    digest, size = backup.stream_dump(ScriptCli(WRITER), dict(db="ar"), tmp, timeout=30)
    assert (digest, size) == (hashlib.sha256(EXPECTED).hexdigest(), len(EXPECTED))
    with open(tmp, "rb") as handle:
        assert handle.read() == EXPECTED
    assert stat.S_IMODE(os.stat(tmp).st_mode) == 0o600


def test_the_dump_never_overwrites_an_existing_file(tmp_path):
    tmp = tmp_path / ".ar.dump.tmp-1"
    tmp.write_bytes(b"someone else's")
    with pytest.raises(OSError):
        backup.stream_dump(ScriptCli(WRITER), dict(db="ar"), str(tmp), timeout=30)
    assert tmp.read_bytes() == b"someone else's"


def test_an_empty_dump_is_not_a_backup(tmp_path):
    with pytest.raises(backup.BackupError, match="pg_dump on ar_user@127.0.0.1:5434/ar wrote 0 bytes"):
        backup.stream_dump(ScriptCli("pass"), dict(db="ar"), str(tmp_path / "t"), timeout=30)


def test_a_failed_pg_dump_names_tool_target_rc_and_stderr_without_the_password(tmp_path):
    script = ("import os, sys\nsys.stdout.write('partial')\nsys.stdout.flush()\n"
              "sys.stderr.write('pg_dump: error: connection failed for ' + os.environ['PGPASSWORD'])\nsys.exit(1)\n")
    with pytest.raises(backup.BackupError) as failure:
        backup.stream_dump(ScriptCli(script), dict(db="ar"), str(tmp_path / "t"), timeout=30)
    message = str(failure.value)
    assert message.startswith("pg_dump on ar_user@127.0.0.1:5434/ar failed (rc=1): pg_dump: error: connection failed")
    assert SECRET not in message


def test_a_full_disk_stops_the_tool_and_names_both(tmp_path):
    def full(block):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    script = "import sys, time\nwhile True:\n    sys.stdout.buffer.write(b'x' * 65536)\n    sys.stdout.flush()\n"
    with pytest.raises(PgCliError, match="pg_dump on ar_user@127.0.0.1:5434/ar failed: writing its output failed: "
                                         "No space left on device"):
        ScriptCli(script).check_stream("pg_dump", [], full, timeout=30)


def test_the_free_space_check_runs_before_the_first_byte_is_written(tmp_path):
    tmp = str(tmp_path / ".ar.dump.tmp-1")
    seen = []
    digest, size = backup.stream_dump(ScriptCli(WRITER), dict(db="ar"), tmp, timeout=30,
                                      before_write=lambda: seen.append(os.path.getsize(tmp)))
    assert seen == [0] and size == len(EXPECTED)


def test_a_free_space_check_that_fails_stops_the_dump_before_it_writes(tmp_path):
    """The check raises while pg_dump waits on its full pipe: the tool is killed (it never sees its
    pipe close, so it cannot go on: here it would leave a marker), nothing is written, and the
    check's own error is what the caller gets."""
    tmp = str(tmp_path / ".ar.dump.tmp-1")
    marker = str(tmp_path / "went-on")
    script = ("import sys\ntry:\n    while True:\n        sys.stdout.buffer.write(b'x' * 65536)\n"
              "        sys.stdout.flush()\nexcept BrokenPipeError:\n    open(%r, 'w').close()\n" % marker)

    def no_space():
        raise backup.BackupError("dest: not enough free space")

    with pytest.raises(backup.BackupError, match="^dest: not enough free space$"):
        backup.stream_dump(ScriptCli(script), dict(db="ar"), tmp, timeout=30, before_write=no_space)
    assert os.path.getsize(tmp) == 0
    assert not os.path.exists(marker)


def test_a_dump_that_outlives_its_timeout_is_stopped(tmp_path):
    chunks = []
    script = "import sys, time\nsys.stdout.write('begin')\nsys.stdout.flush()\ntime.sleep(60)\n"
    with pytest.raises(PgCliError, match=r"pg_dump on ar_user@127.0.0.1:5434/ar failed \(rc=124\): pg_dump timed "
                                         r"out after 0.5s"):
        ScriptCli(script).check_stream("pg_dump", [], chunks.append, timeout=0.5)
    assert b"".join(chunks) == b"begin"


def test_a_tool_that_cannot_start_fails_with_rc_127():
    cli = ScriptCli("")
    cli.argv = lambda tool, args, stdin=False: ["/nonexistent/pg_dump"]
    with pytest.raises(PgCliError, match=r"pg_dump on ar_user@127.0.0.1:5434/ar failed \(rc=127\)"):
        cli.check_stream("pg_dump", [], lambda block: None)


def test_tree_digest_of_hashed_files_equals_the_digest_of_the_files_read_back(tmp_path):
    files = {"toc.dat": b"toc", "3345.dat.gz": b"x" * 5000, "3346.dat.gz": b"", "B.dat": b"upper"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    sums = dict((name, (hashlib.sha256(data).hexdigest(), len(data))) for name, data in files.items())
    assert backup.tree_digest(sums) == backup.sha256_tree(str(tmp_path))


@pytest.mark.parametrize("verification, expected", [
    (dict(level="toc", ok=True, pg_dump_version="15.18 (Debian 15.18-0+deb12u1)"), "15.18"),
    (dict(level="toc", ok=True, pg_dump_version="16.4"), "16.4"),
    (dict(level="none", ok=True), None),
    (None, None),
])
def test_the_pg_dump_version_comes_from_the_archive_header(verification, expected):
    assert backup.dump_version(verification) == expected


# ------------------------------------------------------------------------------------------------
# the table of contents read from the file while it is written (TocFollower)
# ------------------------------------------------------------------------------------------------
# `pg_restore --list` of the lab's PostgreSQL 15 (header lines recorded), printed by a stand-in
# that reads its stdin up to an end-of-TOC marker and exits, as pg_restore stops after the TOC.
LISTING = """;
; Archive created at 2026-11-23 16:33:16 UTC
;     dbname: bkdb
;     TOC Entries: 10
;     Format: CUSTOM
;     Dumped from database version: 15.18 (Debian 15.18-0+deb12u1)
;     Dumped by pg_dump version: 15.18 (Debian 15.18-0+deb12u1)
;
215; 1259 16389 TABLE public items bk
3345; 0 16389 TABLE DATA public items bk
"""
TOC_READER = """import sys
seen = b""
while b"END-OF-TOC" not in seen:
    block = sys.stdin.buffer.read1(4096)
    if not block:
        sys.stderr.write("pg_restore: error: could not read input file: end of file")
        sys.exit(1)
    seen += block
sys.stdout.write(%r)
""" % LISTING


def test_the_toc_is_read_from_the_file_while_the_dump_is_still_written(tmp_path):
    path = str(tmp_path / "dump")
    follower = backup.TocFollower(ScriptCli(TOC_READER), path, timeout=30)
    with open(path, "wb") as out:
        for part in (b"PGDMP header ", b"toc END-OF-TOC "):
            out.write(part)
            out.flush()
            follower.progress(out.tell())
        follower.proc.wait(30)  # it has its TOC and is gone before the data comes
        assert follower.proc.returncode == 0
        out.write(b"data " * 100000)
        out.flush()
        follower.progress(out.tell())
    result = follower.result()
    assert result == dict(level="toc", ok=True, toc_entries=2, dbname="bkdb", format="CUSTOM",
                          dumped_from="15.18 (Debian 15.18-0+deb12u1)",
                          pg_dump_version="15.18 (Debian 15.18-0+deb12u1)",
                          verified_in="the file, while it was written")


def test_a_dump_that_ends_before_its_toc_fails_verification_with_pg_restore_s_stderr(tmp_path):
    path = tmp_path / "dump"
    path.write_bytes(b"PGDMP trunc")
    follower = backup.TocFollower(ScriptCli(TOC_READER), str(path), timeout=30)
    follower.progress(len(b"PGDMP trunc"))
    with pytest.raises(backup.BackupError, match=r"verification \(toc\) failed: pg_restore on "
                                                 r"ar_user@127.0.0.1:5434/ar failed \(rc=1\): "
                                                 r"pg_restore: error: could not read input file"):
        follower.result()


def test_an_aborted_dump_stops_the_toc_reader(tmp_path):
    follower = backup.TocFollower(ScriptCli(TOC_READER), str(tmp_path / "never-written"), timeout=30)
    follower.abort()
    assert follower.proc.returncode is not None and not follower.feeder.is_alive()
