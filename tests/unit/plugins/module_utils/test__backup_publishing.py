"""The shared pieces of the backup modules: publishing (a backup is visible under its final name
only when complete, with its sidecar), kill_after (the deadline of a PostgreSQL client run), and the
option sets pg_backup/pg_restore share with store_backup/store_restore."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _backup as backup
from ansible_collections.vpsops.deploy.plugins.module_utils import _stores as stores
from ansible_collections.vpsops.deploy.plugins.module_utils._pgcli import kill_after

NAME = "ar_20260101T000000Z.dump"
SIDECAR = dict(tool=backup.TOOL, format_version=backup.SIDECAR_VERSION, path=NAME, database="ar",
               finished="2026-01-01T00:00:01.000000Z", verification=dict(level="toc", ok=True))


def write(path, data=b"PGDMP archive"):
    with backup.create_private(path) as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def write_directory(path):
    os.mkdir(path, 0o700)
    write(os.path.join(path, "toc.dat"))


def test_a_complete_backup_is_published_with_its_sidecar(tmp_path):
    with backup.publishing(str(tmp_path), NAME, "dump") as staged:
        assert os.path.dirname(staged.tmp) == str(tmp_path) and os.path.basename(staged.tmp).startswith(".")
        write(staged.tmp)
        assert not os.path.exists(staged.final)
        staged.sidecar = SIDECAR
    assert staged.final == str(tmp_path / NAME)
    assert (tmp_path / NAME).read_bytes() == b"PGDMP archive"
    assert json.loads((tmp_path / (NAME + ".json")).read_text()) == SIDECAR
    assert sorted(os.listdir(str(tmp_path))) == [NAME, NAME + ".json"]
    assert [e["path"] for e in backup.list_backups(str(tmp_path), "ar")] == [staged.final]


@pytest.mark.parametrize("writer", [write, write_directory], ids=["file", "directory"])
@pytest.mark.parametrize("error", [backup.BackupError("pg_restore --list failed"), OSError(28, "No space left on device"),
                                   KeyboardInterrupt()], ids=["failure", "disk-full", "interrupt"])
def test_a_failure_before_the_rename_leaves_nothing_behind(tmp_path, writer, error):
    with pytest.raises(type(error)) as raised:
        with backup.publishing(str(tmp_path), NAME, "dump") as staged:
            writer(staged.tmp)
            staged.sidecar = SIDECAR
            raise error
    assert raised.value is error
    assert os.listdir(str(tmp_path)) == []


def test_a_failing_rename_removes_the_temporary_name(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(backup.os, "rename", refuse)
    with pytest.raises(OSError, match="Input/output error"):
        with backup.publishing(str(tmp_path), NAME, "dump") as staged:
            write(staged.tmp)
            staged.sidecar = SIDECAR
    assert os.listdir(str(tmp_path)) == []


def _killed_between_write_and_rename(dest, ready):
    with backup.publishing(dest, NAME, "dump") as staged:
        write(staged.tmp)
        staged.sidecar = SIDECAR
        ready.set()
        time.sleep(60)


def test_a_crash_between_the_write_and_the_rename_leaves_no_file_under_the_final_name(tmp_path):
    """SIGKILL runs no cleanup: what stays is a hidden temporary name, never a final one."""
    ready = multiprocessing.get_context("fork").Event()
    child = multiprocessing.get_context("fork").Process(target=_killed_between_write_and_rename,
                                                        args=(str(tmp_path), ready))
    child.start()
    try:
        assert ready.wait(30)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
    left = os.listdir(str(tmp_path))
    assert len(left) == 1 and left[0].startswith("." + NAME + ".tmp-")
    assert not (tmp_path / NAME).exists() and not (tmp_path / (NAME + ".json")).exists()
    assert backup.list_backups(str(tmp_path), "ar") == []


@pytest.mark.parametrize("work", ["dump", "backup"])
def test_a_final_name_that_appeared_meanwhile_is_never_overwritten(tmp_path, work):
    (tmp_path / NAME).write_bytes(b"someone else's")
    with pytest.raises(backup.BackupError) as raised:
        with backup.publishing(str(tmp_path), NAME, work) as staged:
            write(staged.tmp)
            staged.sidecar = SIDECAR
    assert str(raised.value) == "%s appeared while the %s ran; not overwriting it" % (tmp_path / NAME, work)
    assert os.listdir(str(tmp_path)) == [NAME]
    assert (tmp_path / NAME).read_bytes() == b"someone else's"


def test_a_sidecar_that_cannot_be_written_takes_the_backup_with_it(tmp_path, monkeypatch):
    def full(path, data, mode=0o600):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backup, "write_json_atomic", full)
    with pytest.raises(backup.BackupError) as raised:
        with backup.publishing(str(tmp_path), NAME, "dump") as staged:
            write(staged.tmp)
            staged.sidecar = SIDECAR
    assert str(raised.value) == ("writing the manifest %s.json failed: [Errno 28] No space left on device"
                                 % (tmp_path / NAME))
    assert os.listdir(str(tmp_path)) == []


def timers_alive():
    """Timers still waiting after a moment to finish (a cancelled one ends at once)."""
    timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    for timer in timers:
        timer.join(5)
    return [t for t in timers if t.is_alive()]


def sleeper(seconds):
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(%s)" % seconds])


def test_kill_after_kills_a_process_that_outlives_its_deadline():
    proc = sleeper(30)
    started = time.monotonic()
    with kill_after(proc, 0.2) as expired:
        rc = proc.wait(30)
    assert expired.is_set() and rc == -signal.SIGKILL
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("timeout", [None, 0, 30])
def test_kill_after_leaves_a_process_that_ends_in_time_and_leaves_no_timer(timeout):
    proc = sleeper(0)
    with kill_after(proc, timeout) as expired:
        rc = proc.wait(30)
    assert rc == 0 and not expired.is_set()
    assert timers_alive() == []


def test_kill_after_cancels_its_timer_when_the_block_raises():
    proc = sleeper(0)
    with pytest.raises(ValueError):
        with kill_after(proc, 30):
            proc.wait(30)
            raise ValueError("consume refused the output")
    assert timers_alive() == []


@pytest.mark.parametrize("pg, store, shared", [
    (backup.backup_argument_spec, stores.store_argument_spec, backup.retention_argument_spec),
    (backup.restore_argument_spec, stores.store_restore_argument_spec, backup.restore_source_argument_spec),
], ids=["backup", "restore"])
def test_the_postgres_and_store_modules_take_the_shared_options_alike(pg, store, shared):
    assert shared()
    for key, option in shared().items():
        assert pg()[key] == store()[key] == option
