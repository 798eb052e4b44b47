# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Verified, atomic PostgreSQL backups and their restore, for the pg_backup and pg_restore modules.
Private to this collection; plain functions, callable without Ansible.

A backup is a pg_dump archive (custom format: one file; directory format: one directory of files)
plus a sidecar manifest `<backup>.json`. The archive is written under a temporary name in the
destination directory, fsynced, verified, and only then renamed to its final name; any failure
removes the temporary name, so a file under a final name is always a complete, verified backup.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import concurrent.futures
import contextlib
import datetime
import glob
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time

from ansible_collections.vpsops.deploy.plugins.module_utils._pgcli import PgCli, PgCliError, kill_after, pgcli_argument_spec
from ansible_collections.vpsops.deploy.plugins.module_utils._files import (
    fsync_dir,
    makedirs_owner_only,
    sha256_file,
    write_json_atomic,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._backup_refs import referenced_backups as store_references

FORMATS = {"custom": ("c", ".dump"), "directory": ("d", ".dir")}
VERIFY_LEVELS = ["none", "toc", "full", "restore"]
SIDECAR_VERSION = 1
TOOL = "vpsops.deploy.pg_backup"
CHUNK = 1 << 20
# The free-space check estimates a dump from what it holds: the user tables (heap, TOAST) and their
# indexes, and the large objects, as they lie on disk (SERVER_INFO_SQL's user_data), plus
# SCHEMA_ALLOWANCE for the schema's DDL.
# pg_database_size also counts the system catalogs (about 7.5 MB in an empty database), which no
# dump holds. A dump holds no index data and is compressed, so the estimate is an upper bound in
# practice (data PostgreSQL already compressed in TOAST is the exception, and the dump's ENOSPC is
# then caught and cleaned up like any other failure). The check asks for space_factor times it.
DEFAULT_SPACE_FACTOR = 1.0
SCHEMA_ALLOWANCE = 1 << 20

# Exact row counts of every table in the user schemas, computed on the server in one statement.
ROW_COUNTS_SQL = r"""
SELECT coalesce(json_object_agg(t.name, t.n ORDER BY t.name), '{}'::json) FROM (
  SELECT format('%I.%I', n.nspname, c.relname) AS name,
         (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname),
                                              false, true, '')))[1]::text::bigint AS n
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
) t
"""

# The statistics' live-tuple estimates of the same tables (no table is read; null without stats).
ROW_ESTIMATES_SQL = r"""
SELECT coalesce(json_object_agg(t.name, t.n ORDER BY t.name), '{}'::json) FROM (
  SELECT format('%I.%I', n.nspname, c.relname) AS name, s.n_live_tup AS n
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
  WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
) t
"""
ROW_COUNT_MODES = ["exact", "estimate", "none"]

# user_data: the database's size less its own system catalogs (shared catalogs are not in it; the
# large objects stay in): the user tables with their TOAST and indexes, and the large objects. It
# opens only catalogs, so a user table locked by a migration does not hold it up (sizing the user
# tables one by one would wait for that lock).
SERVER_INFO_SQL = r"""
SELECT json_build_object('database', current_database(), 'server_version', current_setting('server_version'),
                         'size', pg_database_size(current_database()),
                         'user_data', greatest(0, pg_database_size(current_database()) - (
                             SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
                             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                             WHERE c.relkind IN ('r', 'm') AND n.nspname IN ('pg_catalog', 'information_schema')
                               AND NOT c.relisshared AND c.oid <> 'pg_catalog.pg_largeobject'::regclass)),
                         'system_identifier', (SELECT system_identifier::text FROM pg_control_system()))
"""


class BackupError(Exception):
    """A backup, verification, retention or restore step failed; the message says which and why."""


def retention_argument_spec():
    """Where a backup is written and how long backups stay: options of pg_backup and store_backup."""
    return dict(
        dest=dict(type="path", required=True),
        label=dict(type="str"),
        keep=dict(type="int"),
        keep_days=dict(type="float"),
        release_state_dir=dict(type="path"),
    )


def restore_source_argument_spec():
    """The backup a restore reads and the safety backup taken first: options of pg_restore and
    store_restore."""
    return dict(
        src=dict(type="path", required=True),
        sha256=dict(type="str"),
        safety_backup=dict(type="bool", default=True),
        safety_dest=dict(type="path"),
    )


def _pg_argument_spec():
    """What pg_backup and pg_restore share: the connection options of pgcli_argument_spec (db
    required), parallel jobs, the free-space check, the container's scratch directory, the timeout."""
    spec = pgcli_argument_spec()
    spec["db"] = dict(spec["db"], required=True)
    spec.update(
        jobs=dict(type="int", default=1),
        space_factor=dict(type="float", default=DEFAULT_SPACE_FACTOR),
        container_tmpdir=dict(type="path", default="/tmp"),
        timeout=dict(type="float", default=3600),
    )
    return spec


def backup_argument_spec():
    """Options of the pg_backup module (connection options of pgcli_argument_spec included)."""
    spec = _pg_argument_spec()
    spec.update(retention_argument_spec())
    spec.update(
        format=dict(type="str", default="custom", choices=sorted(FORMATS)),
        compress=dict(type="int"),
        schema_only=dict(type="bool", default=False),
        tables=dict(type="list", elements="str", default=[]),
        exclude_tables=dict(type="list", elements="str", default=[]),
        verify=dict(type="str", default="toc", choices=VERIFY_LEVELS),
        verify_tables=dict(type="list", elements="str", default=[]),
        copy_to=dict(type="path"),
    )
    return spec


def restore_argument_spec():
    """Options of the pg_restore module."""
    spec = _pg_argument_spec()
    spec.update(restore_source_argument_spec())
    spec.update(
        terminate_sessions=dict(type="bool", default=True),
        row_counts=dict(type="str", default="exact", choices=ROW_COUNT_MODES),
        force_mismatch=dict(type="bool", default=False),
        sql_clean=dict(type="bool", default=False),
    )
    return spec


def backup_mismatches(sidecar, db, system_identifier):
    """Why the backup a manifest describes is not a whole backup of database `db` on the cluster
    `system_identifier` (None when unknown): a list of reasons, empty when it is."""
    reasons = []
    if sidecar.get("database") is not None and sidecar["database"] != db:
        reasons.append("it is a backup of database %s, not of %s" % (sidecar["database"], db))
    theirs = sidecar.get("system_identifier")
    if theirs and system_identifier and str(theirs) != str(system_identifier):
        reasons.append("it was taken on another PostgreSQL cluster (system identifier %s; the target's is %s)"
                       % (theirs, system_identifier))
    return reasons + partial_reasons(sidecar)


def validate_backup_params(params):
    """Bad input fails before anything is touched, naming the option and what was expected."""
    if params.get("compress") is not None and not 0 <= params["compress"] <= 9:
        raise BackupError("compress must be between 0 and 9, got %s" % params["compress"])
    if not 1 <= params.get("jobs", 1) <= 64:
        raise BackupError("jobs must be between 1 and 64, got %s" % params.get("jobs"))
    if params.get("jobs", 1) > 1 and params.get("format") != "directory":
        raise BackupError("jobs > 1 needs format: directory (pg_dump dumps in parallel only into a directory)")
    if params.get("keep") is not None and params["keep"] < 1:
        raise BackupError("keep must be 1 or more (the newest verified backup is never deleted), got %s"
                          % params["keep"])
    if params.get("keep_days") is not None and params["keep_days"] < 0:
        raise BackupError("keep_days must be 0 or more, got %s" % params["keep_days"])
    if params.get("space_factor", 0) < 0:
        raise BackupError("space_factor must be 0 (no check) or more, got %s" % params["space_factor"])
    if params.get("timeout", 1) < 0:
        raise BackupError("timeout must be 0 (no limit) or more seconds, got %s" % params["timeout"])
    if params.get("verify_tables") and params.get("verify") != "restore":
        raise BackupError("verify_tables needs verify: restore (row counts come from a scratch restore)")
    for key in ("dest", "copy_to", "release_state_dir", "container_tmpdir"):
        if params.get(key) and not os.path.isabs(params[key]):
            raise BackupError("%s must be an absolute path, got %r" % (key, params[key]))
    if params.get("copy_to") and os.path.realpath(params["copy_to"]) == os.path.realpath(params["dest"]):
        raise BackupError("copy_to must be another directory than dest (%s)" % params["dest"])


# ------------------------------------------------------------------------------------------------
# files: checksums, fsync, atomic JSON, names
# ------------------------------------------------------------------------------------------------
def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def isoformat(when):
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)


def safe_component(text):
    """A database name or label as a file name component: [A-Za-z0-9._+-], anything else '_'."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text).strip(".") or "_"


def backup_basename(db, fmt, when, label=None):
    name = "%s_%s" % (safe_component(db), when.strftime("%Y%m%dT%H%M%SZ"))
    if label:
        name += "_" + safe_component(label)
    return name + FORMATS[fmt][1]


def sha256_tree(path):
    """Checksum of a directory backup: the sha256 of the lines `<sha256 of file>  <name>\\n` of its
    files in bytewise name order, which is what `cd DIR && sha256sum $(LC_ALL=C ls) | sha256sum`
    prints. pg_dump's directory format is flat; anything but regular files is refused."""
    sums = {}
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.islink(full) or not os.path.isfile(full):
            raise BackupError("%s is not a regular file: a pg_dump directory holds only files" % full)
        sums[name] = sha256_file(full)
    return tree_digest(sums)


def tree_digest(sums):
    """sha256_tree's (sha256, size) from {file name: (sha256 of the file, size)}, however the file
    sums were had (read back, or hashed while the files were written)."""
    digest = hashlib.sha256()
    size = 0
    for name in sorted(sums, key=lambda n: n.encode("utf-8", "surrogateescape")):
        file_sum, file_size = sums[name]
        digest.update(("%s  %s\n" % (file_sum, name)).encode("utf-8", "surrogateescape"))
        size += file_size
    return digest.hexdigest(), size


def checksum(path):
    """(sha256, size in bytes) of a backup file or directory."""
    return sha256_tree(path) if os.path.isdir(path) else sha256_file(path)


def fsync_tree(path):
    """fsync every file of a directory backup, then the directory (fsync_dir takes files too)."""
    if os.path.isdir(path):
        for name in os.listdir(path):
            fsync_dir(os.path.join(path, name))
    fsync_dir(path)


def create_private(path):
    """Open a new file 0600 for writing; never an existing one."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def remove_path(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


def ensure_dir(path, option):
    """Create a missing backup directory 0700, and its missing parents 0700 too (an existing one
    keeps its mode); fail naming the option when it cannot be used."""
    if not os.path.isdir(path):
        try:
            makedirs_owner_only(path)
        except OSError as exc:
            raise BackupError("%s: cannot create directory %s: %s" % (option, path, exc.strerror or exc))
    if not os.access(path, os.W_OK | os.X_OK):
        raise BackupError("%s: directory %s is not writable" % (option, path))


def free_bytes(path):
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def check_space(path, needed, option, what):
    free = free_bytes(path)
    if needed > free:
        raise BackupError("%s: not enough free space in %s: %d bytes free, %s needs about %d bytes"
                          % (option, path, free, what, needed))
    return free


class SpaceLedger:
    """Free space promised to backups that run at the same time (backup_many), per file system.
    Each backup's space check counts what the others still running on the same file system asked
    for, so concurrent dumps never together count on the same free bytes. Conservative: what a
    running dump has already written is counted both as used and as promised."""

    def __init__(self):
        self._lock = threading.Lock()
        self._held = {}

    def claim(self, path, needed, option, what):
        """check_space, counting the claims still held on the same file system; returns a claim
        for release()."""
        device = os.stat(path).st_dev
        with self._lock:
            held = self._held.get(device, 0)
            free = free_bytes(path)
            if needed + held > free:
                raise BackupError("%s: not enough free space in %s: %d bytes free, %d of them needed by backups "
                                  "running at the same time, %s needs about %d bytes"
                                  % (option, path, free, held, what, needed))
            self._held[device] = held + needed
        return device, needed

    def release(self, claim):
        device, needed = claim
        with self._lock:
            self._held[device] -= needed


def claim_space(ledger, path, needed, option, what):
    """check_space, through `ledger` when backups run at the same time; returns the claim (or None)."""
    if ledger is None:
        check_space(path, needed, option, what)
        return None
    return ledger.claim(path, needed, option, what)


def release_space(ledger, claim):
    if ledger is not None and claim is not None:
        ledger.release(claim)


class Background:
    """func(*args) in a thread of its own; result() waits for it and returns its value or raises
    its exception. Used to overlap a docker exec round trip with local work."""

    def __init__(self, func, *args):
        self._value = self._error = None
        self._thread = threading.Thread(target=self._run, args=(func,) + args)
        self._thread.daemon = True
        self._thread.start()

    def _run(self, func, *args):
        try:
            self._value = func(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of result()
            self._error = exc

    def wait(self):
        self._thread.join()

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


# ------------------------------------------------------------------------------------------------
# sidecars, listing, retention
# ------------------------------------------------------------------------------------------------
def sidecar_path(backup_path):
    return backup_path.rstrip("/") + ".json"


def read_sidecar(backup_path):
    """The sidecar of a backup, or None when it is missing or not one of ours."""
    try:
        with open(sidecar_path(backup_path), "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("tool") != TOOL or data.get("format_version") != SIDECAR_VERSION:
        return None
    return data


class Staged:
    """A backup being written: `tmp`, a temporary name beside `final` in the destination directory,
    and the `sidecar` to publish with it (set by the writer once the backup is complete)."""

    def __init__(self, dest, name):
        self.dest = dest
        self.final = os.path.join(dest, name)
        self.tmp = os.path.join(dest, ".%s.tmp-%s" % (name, secrets.token_hex(4)))
        self.sidecar = None


@contextlib.contextmanager
def publishing(dest, name, work):
    """Publish a backup under `dest`/`name` only once it is complete. The block writes the backup
    (a file or a directory, fsynced) at the yielded Staged's `tmp` and sets its `sidecar`; on leaving,
    the backup is renamed to its final name, the directory fsynced and the sidecar written next to it
    (_files.write_json_atomic). A failure in the block, or a final name that appeared meanwhile
    ("... appeared while the `work` ran"), removes the temporary name: nothing half-written is ever
    under a final name. A sidecar that cannot be written removes the backup too (without its sidecar
    no retention or restore would trust it) and raises BackupError."""
    staged = Staged(dest, name)
    try:
        yield staged
        if os.path.lexists(staged.final):
            raise BackupError("%s appeared while the %s ran; not overwriting it" % (staged.final, work))
        os.rename(staged.tmp, staged.final)
    except BaseException:
        remove_path(staged.tmp)
        raise
    try:
        fsync_dir(dest)
        write_json_atomic(sidecar_path(staged.final), staged.sidecar)
    except OSError as exc:
        remove_path(staged.final)
        raise BackupError("writing the manifest %s failed: %s" % (sidecar_path(staged.final), exc))


def list_backups(directory, db):
    """Backups in `directory` with a valid sidecar for database `db`, as dicts of path, finished
    (epoch seconds), verified, sidecar. Anything else in the directory is never looked at again."""
    found = []
    for meta in glob.glob(os.path.join(glob.escape(directory), "*.json")):
        path = meta[:-len(".json")]
        if os.path.basename(path).startswith(".") or not os.path.exists(path):
            continue
        data = read_sidecar(path)
        if not data or data.get("database") != db:
            continue
        try:
            finished = parse_time(data["finished"]).timestamp()
        except (KeyError, TypeError, ValueError):
            continue
        verification = data.get("verification") or {}
        verified = bool(verification.get("ok")) and verification.get("level") not in (None, "none")
        found.append(dict(path=path, finished=finished, verified=verified, full=is_full(data),
                          copy_of=data.get("copy_of"), sidecar=data))
    return found


def partial_reasons(sidecar):
    """Why a backup does not hold the whole database (schema only, some tables only, tables left
    out), from its manifest; empty for a full backup."""
    reasons = []
    if sidecar.get("schema_only"):
        reasons.append("it is schema-only (no rows)")
    if sidecar.get("tables"):
        reasons.append("it holds only the tables %s" % ", ".join(sidecar["tables"]))
    if sidecar.get("exclude_tables"):
        reasons.append("it leaves out the tables %s" % ", ".join(sidecar["exclude_tables"]))
    return reasons


def is_full(sidecar):
    """A backup of the whole database: schema and every row of every table."""
    return not partial_reasons(sidecar)


def referenced_backups(state_dir):
    """Real paths of the backups the release store in `state_dir` references (none without a store).
    An unreadable release manifest raises: retention must then delete nothing."""
    if not state_dir or not os.path.isdir(state_dir):
        return set()
    return set(os.path.realpath(p) for p in store_references(state_dir))


def plan_retention(entries, keep=None, keep_days=None, now=None, protected=frozenset(), just_made=frozenset()):
    """Split backups (dicts with path, finished, verified and full) into (kept, deleted), each a list
    of (path, reason). A backup is kept when any rule keeps it: one of the newest `keep`, younger
    than `keep_days`, or referenced by a release (`protected`, real paths; a copy_to copy counts as
    its original). Whatever the rules say, these always stay: the newest verified full backup (the
    last one a database can be restored from), the newest verified backup of any kind, and the
    backups `just_made` (paths: the backup this run took and its copy).
    An entry without `full` counts as full. Without keep and keep_days nothing is deleted."""
    ordered = sorted(entries, key=lambda e: (e["finished"], e["path"]), reverse=True)
    if keep is None and keep_days is None:
        return [(e["path"], "no retention rule") for e in ordered], []
    now = time.time() if now is None else now
    newest_verified = next((e for e in ordered if e["verified"]), None)
    newest_full = next((e for e in ordered if e["verified"] and e.get("full", True)), None)
    made = set(os.path.realpath(p) for p in just_made)
    kept, deleted = [], []
    for index, entry in enumerate(ordered):
        reasons = []
        if keep is not None and index < keep:
            reasons.append("one of the newest %d" % keep)
        if keep_days is not None and now - entry["finished"] <= keep_days * 86400:
            reasons.append("younger than %s days" % keep_days)
        if entry is newest_full:
            reasons.append("newest verified full backup")
        elif entry is newest_verified:
            reasons.append("newest verified backup")
        if os.path.realpath(entry["path"]) in made:
            reasons.append("the backup just made")
        if os.path.realpath(entry["path"]) in protected or (
                entry.get("copy_of") and os.path.realpath(entry["copy_of"]) in protected):
            reasons.append("referenced by a release")
        if reasons:
            kept.append((entry["path"], ", ".join(reasons)))
        else:
            deleted.append((entry["path"], "older than every retention rule"))
    return kept, deleted


def apply_retention(directories, db, keep, keep_days, state_dir, check_mode, new_entries=(), just_made=()):
    """Retention over each directory. Returns (deleted paths, warnings). `new_entries` are backups
    that check mode would have made (listed but never deleted); `just_made` the paths of the backup
    this run took and of its copy (never deleted)."""
    if keep is None and keep_days is None:
        return [], []
    try:
        protected = referenced_backups(state_dir)
    except Exception as exc:  # noqa: BLE001 - any failure of the store reader means: delete nothing
        return [], ["retention skipped: the release store %s could not be read (%s)" % (state_dir, exc)]
    made = set(just_made) | set(e["path"] for e in new_entries)
    deleted = []
    for directory in directories:
        if not directory or not os.path.isdir(directory):
            continue
        entries = list_backups(directory, db)
        entries += [e for e in new_entries if os.path.dirname(e["path"]) == directory]
        _kept, doomed = plan_retention(entries, keep, keep_days, protected=protected, just_made=made)
        for path, _reason in doomed:
            if not check_mode:
                remove_path(path)
                remove_path(sidecar_path(path))
            deleted.append(path)
        if doomed and not check_mode:
            fsync_dir(directory)
    return deleted, []


# ------------------------------------------------------------------------------------------------
# talking to the server
# ------------------------------------------------------------------------------------------------
def server_info(cli, timeout=None):
    info = cli.query_json(SERVER_INFO_SQL, timeout=timeout)
    if not isinstance(info, dict):
        raise BackupError("psql on %s returned no server information" % cli.describe())
    return info


def row_counts(cli, db=None, timeout=None, mode="exact"):
    """{schema.table: row count} for every table in the user schemas, one query: exact count(*)
    (reads every table), the statistics' n_live_tup estimate, or nothing."""
    if mode == "none":
        return {}
    sql = ROW_ESTIMATES_SQL if mode == "estimate" else ROW_COUNTS_SQL
    return cli.query_json(sql, db=db, timeout=timeout) or {}


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


def quote_literal(text):
    return "'%s'" % text.replace("'", "''")


def terminate_sessions(cli, db, timeout=None):
    """Terminate every other session on `db`; returns how many were terminated."""
    sql = ("SELECT json_build_object('n', count(pg_terminate_backend(pid))) FROM pg_stat_activity "
           "WHERE datname = %s AND pid <> pg_backend_pid()" % quote_literal(db))
    return int((cli.query_json(sql, timeout=timeout) or {}).get("n") or 0)


def other_sessions(cli, db, timeout=None, cluster=False):
    """The number of other sessions on `db`; with `cluster`, (that number, the cluster's system
    identifier) in the same round trip."""
    sql = ("SELECT json_build_object('n', count(*), 'cluster', (SELECT system_identifier::text FROM "
           "pg_control_system())) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
           % quote_literal(db))
    found = cli.query_json(sql, timeout=timeout) or {}
    sessions = int(found.get("n") or 0)
    return (sessions, found.get("cluster")) if cluster else sessions


def _timeout(params):
    return params.get("timeout") or None


def _container_tmp(params, kind):
    return "%s/vpsops-%s-%s" % ((params.get("container_tmpdir") or "/tmp").rstrip("/"), kind, secrets.token_hex(6))


def container_remove(cli, path):
    """rm -rf a temporary path inside the container; a message when it could not (else None)."""
    try:
        proc = subprocess.run([cli.docker_cli, "exec", cli.container, "rm", "-rf", "--", path],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "could not remove %s in container %s: %s" % (path, cli.container, exc)
    if proc.returncode != 0:
        return "could not remove %s in container %s: %s" % (
            path, cli.container, proc.stderr.decode("utf-8", "replace").strip())
    return None


def copy_out_of_container(cli, src, dest, timeout=None):
    """Stream directory `src` of the container into new host directory `dest` (0700, files 0600,
    fsynced) through `docker cp CONTAINER:SRC -`, a tar stream, never through memory. Each file is
    hashed as it is written; returns {file name: (sha256, size)} for tree_digest."""
    os.mkdir(dest, 0o700)
    sums = {}
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([cli.docker_cli, "cp", "%s:%s" % (cli.container, src), "-"],
                                stdout=subprocess.PIPE, stderr=errors)
        problem = None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    parts = member.name.split("/")
                    if member.isdir() and len(parts) == 1:
                        continue
                    name = parts[-1]
                    if not member.isfile() or len(parts) != 2 or name in ("", ".", ".."):
                        problem = "unexpected entry %r in the dump directory" % member.name
                        break
                    with create_private(os.path.join(dest, name)) as out:
                        sums[name] = copy_hashed(tar.extractfile(member), out)
                        out.flush()
                        os.fsync(out.fileno())
        except (tarfile.TarError, OSError) as exc:
            problem = str(exc)
        finally:
            proc.stdout.close()
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace").strip()
    if rc != 0 or problem:
        raise BackupError("docker cp of %s out of container %s failed (rc=%s): %s"
                          % (src, cli.container, rc, stderr or problem or "no output"))
    fsync_dir(dest)
    return sums


def copy_hashed(source, out):
    """Copy an open binary file into another, hashing what is written; returns (sha256, size)."""
    digest = hashlib.sha256()
    size = 0
    for block in iter(lambda: source.read(CHUNK), b""):
        out.write(block)
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def copy_into_container(cli, src, dest, timeout=None):
    try:
        proc = subprocess.run([cli.docker_cli, "cp", src, "%s:%s" % (cli.container, dest)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError("docker cp of %s into container %s failed: %s" % (src, cli.container, exc))
    if proc.returncode != 0:
        raise BackupError("docker cp of %s into container %s failed (rc=%s): %s" % (
            src, cli.container, proc.returncode, proc.stderr.decode("utf-8", "replace").strip()))


# ------------------------------------------------------------------------------------------------
# verification
# ------------------------------------------------------------------------------------------------
class Archive:
    """Where pg_restore reads an archive: a host path (host mode), a host file streamed to
    `docker exec -i` (custom format in a container) or a path inside the container (directory
    format in a container)."""

    def __init__(self, cli, host_path=None, container_path=None):
        self.cli = cli
        self.host_path = host_path
        self.container_path = container_path

    def run(self, args, stdout=None, timeout=None):
        """pg_restore `args` on this archive; raises PgCliError with its stderr."""
        if self.container_path:
            return self.cli.check_io("pg_restore", list(args) + [self.container_path], stdout=stdout, timeout=timeout)
        if self.cli.container:
            with open(self.host_path, "rb") as stdin:
                return self.cli.check_io("pg_restore", args, stdin=stdin, stdout=stdout, timeout=timeout)
        return self.cli.check_io("pg_restore", list(args) + [self.host_path], stdout=stdout, timeout=timeout)

    def parallel_ok(self):
        """pg_restore -j needs a seekable file, never stdin."""
        return not (self.cli.container and not self.container_path)


def parse_toc(text):
    """The header fields and entry count of `pg_restore --list` output."""
    info = {}
    entries = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if not line.startswith(";"):
            entries += 1
            continue
        match = re.match(r";\s*(Archive created at|(?:dbname|TOC Entries|Format|Dumped from database version|"
                         r"Dumped by pg_dump version)\s*:)\s*(.*)$", line)
        if match:
            info[match.group(1).rstrip(":").strip()] = match.group(2).strip()
    if "Archive created at" not in info:
        raise BackupError("pg_restore --list printed no archive header: the table of contents is unreadable")
    return dict(toc_entries=entries, dbname=info.get("dbname"), format=info.get("Format"),
                dumped_from=info.get("Dumped from database version"),
                pg_dump_version=info.get("Dumped by pg_dump version"))


def verify_archive(archive, level, source_db, verify_tables=(), timeout=None):
    """Verify an archive at `level`; returns the verification dict (ok, level, ...) or raises
    BackupError naming the step that failed."""
    result = dict(level=level, ok=False)
    if level == "none":
        result["ok"] = True
        return result
    with tempfile.TemporaryFile() as listing:
        try:
            archive.run(["--list"], stdout=listing, timeout=timeout)
        except PgCliError as exc:
            raise BackupError("verification (toc) failed: %s" % exc)
        listing.seek(0)
        result.update(parse_toc(listing.read().decode("utf-8", "replace")))
    if level in ("full", "restore"):
        try:
            archive.run(["-f", "/dev/null"], timeout=timeout)
        except PgCliError as exc:
            raise BackupError("verification (full read) failed: %s" % exc)
        result["full_read"] = True
    if level == "restore":
        result["row_counts"], left = scratch_restore(archive, source_db, verify_tables, timeout)
        if left:
            result["scratch_database_left"] = left[0]
            result.setdefault("warnings", []).append(left[1])
    result["ok"] = True
    return result


def scratch_restore(archive, source_db, verify_tables, timeout):
    """Restore into a scratch database (created from the source database's session, dropped in
    every path) and return (the row counts of `verify_tables` (all tables when empty), None), or
    with (scratch database, message) in place of None when the scratch database could not be
    dropped: it holds a copy of the data, so whoever runs this must hear of it."""
    cli = archive.cli
    scratch = ("%s_vpsops_verify_%s" % (source_db[:40], secrets.token_hex(4)))
    try:
        cli.check("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", source_db],
                  input_text="CREATE DATABASE %s;\n" % quote_ident(scratch), timeout=timeout)
    except PgCliError as exc:
        raise BackupError("verification (restore) could not create scratch database %s (needs CREATEDB): %s"
                          % (scratch, exc))
    try:
        args = ["-d", scratch, "--no-owner", "--no-acl", "--exit-on-error", "--single-transaction", "-w"]
        try:
            archive.run(args, timeout=timeout)
        except PgCliError as exc:
            raise BackupError("verification (restore into %s) failed: %s" % (scratch, exc))
        counts = row_counts(cli, db=scratch, timeout=timeout)
    except BaseException as exc:
        left = drop_scratch(cli, source_db, scratch, timeout)
        if left and isinstance(exc, (BackupError, PgCliError)):
            raise BackupError("%s; %s" % (exc, left[1]))
        raise
    left = drop_scratch(cli, source_db, scratch, timeout)
    if not verify_tables:
        return counts, left
    chosen = {}
    for table in verify_tables:
        key = table if "." in table else "public." + table
        if key not in counts:
            raise BackupError("verification (restore): table %s is not in the restored backup (tables: %s)"
                              % (key, ", ".join(sorted(counts)) or "none"))
        chosen[key] = counts[key]
    return chosen, left


def drop_scratch(cli, source_db, scratch, timeout):
    """DROP the scratch database of a verification; None when it is gone, else (its name, a
    message saying it was left, why, and how to drop it)."""
    try:
        cli.check("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", source_db],
                  input_text="DROP DATABASE IF EXISTS %s WITH (FORCE);\n" % quote_ident(scratch), timeout=timeout)
    except PgCliError as exc:
        return scratch, ("the scratch database %s of the verification could not be dropped and holds a copy of "
                         "the backup's data: %s. Drop it as a superuser: DROP DATABASE %s WITH (FORCE);"
                         % (scratch, exc, quote_ident(scratch)))
    return None


# ------------------------------------------------------------------------------------------------
# backup
# ------------------------------------------------------------------------------------------------
def pg_dump_args(params, fmt, target=None):
    args = ["-w", "-F", FORMATS[fmt][0]]
    if params.get("compress") is not None:
        args += ["-Z", str(params["compress"])]
    if fmt == "directory" and params.get("jobs", 1) > 1:
        args += ["-j", str(params["jobs"])]
    if params.get("schema_only"):
        args.append("--schema-only")
    for table in params.get("tables") or []:
        args += ["-t", table]
    for table in params.get("exclude_tables") or []:
        args += ["-T", table]
    if target:
        args += ["-f", target]
    return args + ["-d", params["db"]]


def unique_final(directories, db, fmt, when, label):
    """A backup name free in every directory (a suffix -2, -3 ... after a same-second backup)."""
    base = backup_basename(db, fmt, when, label)
    stem, ext = base[:-len(FORMATS[fmt][1])], FORMATS[fmt][1]
    for counter in range(1, 1000):
        name = base if counter == 1 else "%s-%d%s" % (stem, counter, ext)
        if not any(d and (os.path.lexists(os.path.join(d, name)) or os.path.lexists(os.path.join(d, name + ".json")))
                   for d in directories):
            return name
    raise BackupError("no free backup name for %s in %s" % (base, ", ".join(d for d in directories if d)))


def listing(directories, db, extra=(), removed=()):
    """Names of the backups of `db` in the directories, one per line, for --diff."""
    lines = []
    for directory in directories:
        if directory and os.path.isdir(directory):
            lines += [e["path"] for e in list_backups(directory, db)]
    lines = sorted(set(lines + list(extra)) - set(removed))
    return "".join(line + "\n" for line in lines)


def diff(dest, before, after):
    return dict(before_header="%s (before)" % dest, before=before, after_header="%s (after)" % dest, after=after)


def run_module(module, action):
    """Run `action` (make_backup or restore) for an AnsibleModule and exit with its result: a
    BackupError becomes fail_json, warnings become module warnings, the diff shows with --diff."""
    try:
        result = action(module.params, check_mode=module.check_mode)
    except BackupError as exc:
        module.fail_json(msg=str(exc))
    changes = result.pop("diff", None)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    if module._diff and changes:
        result["diff"] = changes
    module.exit_json(**result)


def write_all(fd, block):
    view = memoryview(block)
    while view:
        view = view[os.write(fd, view):]


def stream_dump(cli, params, tmp, timeout, follower=None, before_write=None):
    """pg_dump -Fc into new host file `tmp` (0600), hashed as it is written: one pass over the
    data, no second read for the checksum. `follower` (a TocFollower) is told how far the file is
    written. `before_write()` is called once, before the first byte is written (the free-space
    check); pg_dump waits on its full pipe meanwhile, and what it raises stops the dump.
    Returns (sha256, size); the file is not yet fsynced."""
    digest = hashlib.sha256()
    written = [0]
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        def consume(block):
            if before_write is not None and not written[0]:
                before_write()
            write_all(fd, block)
            digest.update(block)
            written[0] += len(block)
            if follower is not None:
                follower.progress(written[0])

        try:
            cli.check_stream("pg_dump", pg_dump_args(params, "custom"), consume, timeout=timeout, chunk=CHUNK)
        except PgCliError as exc:
            raise BackupError(str(exc))
        if os.fstat(fd).st_size != written[0]:
            raise BackupError("the dump file %s holds %d bytes, %d were written to it" % (
                tmp, os.fstat(fd).st_size, written[0]))
    finally:
        os.close(fd)
    if written[0] == 0:
        raise BackupError("pg_dump on %s wrote 0 bytes: not a backup" % cli.describe())
    return digest.hexdigest(), written[0]


class TocFollower:
    """`pg_restore --list` (verification level toc) of a custom dump that reads the dump file while
    it is being written, so the round trip to the tool hides behind the dump instead of following it.

    pg_dump writes a custom archive to a pipe (its stdout is never a file here) as header, table of
    contents, then data, and never seeks back to rewrite any of it: the header and TOC it reads
    are final once written, the same bytes a read of the finished file would give. pg_restore
    --list reads only them and exits; the feeder then stops. It reads the file itself, never the
    bytes in memory, and only the part already written."""

    def __init__(self, cli, path, timeout=None):
        self.cli = cli
        self.path = path
        self.timeout = timeout
        self.cond = threading.Condition()
        self.written = 0
        self.done = False
        self.listing = tempfile.TemporaryFile()
        self.errors = tempfile.TemporaryFile()
        self.feed_error = None
        self.proc = subprocess.Popen(cli.argv("pg_restore", ["--list"], stdin=True), stdin=subprocess.PIPE,
                                     stdout=self.listing, stderr=self.errors, env=cli.env())
        self.feeder = threading.Thread(target=self._feed)
        self.feeder.daemon = True
        self.feeder.start()

    def progress(self, written):
        with self.cond:
            self.written = written
            self.cond.notify()

    def finish(self):
        """The dump is complete: what is left of the file goes to pg_restore, then end of input."""
        with self.cond:
            self.done = True
            self.cond.notify()

    def _feed(self):
        source = None
        position = 0
        try:
            while True:
                with self.cond:
                    while self.written <= position and not self.done:
                        self.cond.wait()
                    limit, done = self.written, self.done
                if limit > position:
                    if source is None:
                        source = open(self.path, "rb")
                    source.seek(position)
                    while position < limit:
                        block = source.read(min(CHUNK, limit - position))
                        if not block:
                            raise OSError("%s is shorter than the %d bytes written to it" % (self.path, limit))
                        self.proc.stdin.write(block)
                        position += len(block)
                    self.proc.stdin.flush()
                if done and position >= limit:
                    break
        except BrokenPipeError:
            pass  # pg_restore read the TOC and exited: it needs no more
        except OSError as exc:
            self.feed_error = exc
        finally:
            if source is not None:
                source.close()
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def abort(self):
        """The dump failed: stop pg_restore and the feeder."""
        self.proc.kill()
        self.finish()
        self.feeder.join()
        self.proc.wait()
        self._close()

    def _close(self):
        self.listing.close()
        self.errors.close()

    def result(self):
        """The verification dict, as verify_archive gives it for level toc; BackupError on failure."""
        try:
            self.finish()
            try:
                rc = self.proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
                raise BackupError("verification (toc) failed: pg_restore on %s timed out after %ss"
                                  % (self.cli.describe(), self.timeout))
            finally:
                self.feeder.join()
            self.errors.seek(0)
            err = self.cli.scrub(self.errors.read().decode("utf-8", "replace")).strip()
            if rc != 0:
                raise BackupError("verification (toc) failed: pg_restore on %s failed (rc=%s): %s"
                                  % (self.cli.describe(), rc, err or "no output"))
            if self.feed_error is not None:
                raise BackupError("verification (toc) failed: reading %s back failed: %s"
                                  % (self.path, self.feed_error))
            self.listing.seek(0)
            result = dict(level="toc", ok=False)
            result.update(parse_toc(self.listing.read().decode("utf-8", "replace")))
            result.update(ok=True, verified_in="the file, while it was written")
            return result
        finally:
            self._close()


def verify_beside(archive, params, timeout, local_work):
    """verify_archive in a thread while `local_work()` (fsync, copy, checksum) runs in this one:
    pg_restore's docker exec round trip overlaps the local I/O. Returns (verification, what
    local_work returned); when both fail, the verification's error is raised."""
    level = params.get("verify") or "toc"
    verifying = Background(verify_archive, archive, level, params["db"], params.get("verify_tables") or (), timeout)
    try:
        local = local_work()
    finally:
        verifying.wait()
    return verifying.result(), local


def dump_to(cli, params, fmt, tmp, timeout, gate):
    """pg_dump into host path `tmp` (new file or directory), fsynced, verified, checksummed. A
    custom dump streams into the file and is hashed as it is written; its table of contents is
    read from the file while the dump goes on (TocFollower), deeper verification reads the written
    file while it is fsynced. For a directory backup in a container the dump goes to a temporary
    directory inside it and is verified there while it is streamed out (and hashed).
    `gate` (a SpaceGate) checks the free space before anything of the dump is written: a custom
    dump starts while the database's size is still being read and holds its first byte until the
    check passed; the other kinds write where the gate cannot hold them, so they start after it.
    Returns (verification, sha256, size)."""
    if fmt == "custom":
        follower = TocFollower(cli, tmp, timeout) if (params.get("verify") or "toc") == "toc" else None
        try:
            digest, size = stream_dump(cli, params, tmp, timeout, follower, before_write=gate.check)
        except BaseException:
            if follower:
                follower.abort()
            raise
        if follower:
            follower.finish()
            fsync_dir(tmp)
            return follower.result(), digest, size
        verification, _none = verify_beside(Archive(cli, host_path=tmp), params, timeout, lambda: fsync_dir(tmp))
        return verification, digest, size
    gate.check()
    if not cli.container:
        try:
            cli.check_io("pg_dump", pg_dump_args(params, fmt, target=tmp), timeout=timeout)
        except PgCliError as exc:
            raise BackupError(str(exc))
        os.chmod(tmp, 0o700)

        def settle():
            fsync_tree(tmp)
            return sha256_tree(tmp)

        verification, (digest, size) = verify_beside(Archive(cli, host_path=tmp), params, timeout, settle)
        return verification, digest, size
    inside = _container_tmp(params, "bk")
    try:
        try:
            cli.check_io("pg_dump", pg_dump_args(params, fmt, target=inside), timeout=timeout)
        except PgCliError as exc:
            raise BackupError(str(exc))
        verification, sums = verify_beside(Archive(cli, container_path=inside), params, timeout,
                                           lambda: copy_out_of_container(cli, inside, tmp, timeout))
        verification["verified_in"] = "container, while it was copied out"
        digest, size = tree_digest(sums)
    except BackupError as exc:
        left = leftover_in_container(cli, inside, "a dump of database %s" % params["db"])
        raise BackupError("%s; %s" % (exc, left) if left else str(exc))
    except BaseException:
        leftover_in_container(cli, inside, "a dump of database %s" % params["db"])
        raise
    left = leftover_in_container(cli, inside, "a full dump of database %s" % params["db"])
    if left:
        verification["container_tmp_left"] = inside
        verification.setdefault("warnings", []).append(left)
    return verification, digest, size


def leftover_in_container(cli, path, what):
    """Remove a temporary path in the container; None when it is gone, else a message saying what it
    holds, why it is still there and how to remove it."""
    problem = container_remove(cli, path)
    if not problem:
        return None
    return ("%s is left in container %s at %s (%s): it is outside the backup directory and its modes, "
            "remove it with: docker exec %s rm -rf %s" % (what, cli.container, path, problem, cli.container, path))


def dump_version(verification):
    """The pg_dump version from the archive header pg_restore --list read ('15.18 (Debian …)' ->
    '15.18', as `pg_dump --version` gives it), or None."""
    text = (verification or {}).get("pg_dump_version") or ""
    return text.split()[0] if text.split() else None


def dump_estimate(params, info):
    """(bytes the free-space check asks for, the words that explain them) for a dump of the
    database server_info describes: what the dump holds (the user tables with their indexes and
    TOAST and the large objects; nothing of them for a schema-only dump) plus SCHEMA_ALLOWANCE,
    times space_factor. An older server_info without the user data falls back to the database size."""
    factor = params.get("space_factor") if params.get("space_factor") is not None else DEFAULT_SPACE_FACTOR
    if info.get("user_data") is None:
        data, held = int(info["size"]), "pg_database_size %d bytes" % info["size"]
    elif params.get("schema_only"):
        data, held = 0, "schema only"
    else:
        data = int(info["user_data"])
        held = "user tables with their indexes and large objects %d bytes" % data
    estimate = int(math.ceil((data + SCHEMA_ALLOWANCE) * factor))
    return estimate, "the dump of database %s (estimated at %d bytes: %s + %d for the schema, x space_factor %s)" % (
        params["db"], estimate, held, SCHEMA_ALLOWANCE, factor)


def make_backup(params, check_mode=False, cli=None, space=None):
    """Take one backup as the pg_backup module does; returns its result dict. Raises BackupError
    (after removing every temporary file) on any failure. `space` is the SpaceLedger of backups
    that run at the same time (backup_many); alone, the free-space check looks at the disk only."""
    validate_backup_params(params)
    cli = cli or PgCli(params)
    fmt = params.get("format") or "custom"
    dest = params["dest"]
    copy_to = params.get("copy_to")
    timeout = _timeout(params)
    directories = [dest, copy_to] if copy_to else [dest]
    warnings = []

    if check_mode:
        info = SpaceGate(cli, params, dest, space, timeout).info()
        estimate, what = dump_estimate(params, info)
        started = utcnow()
        name = backup_basename(params["db"], fmt, started, params.get("label"))
        path = os.path.join(dest, name)
        if os.path.isdir(dest) and estimate:
            check_space(dest, estimate, "dest", what)
        new = [dict(path=os.path.join(d, name), finished=started.timestamp(),
                    verified=(params.get("verify") or "toc") != "none", full=is_full(params)) for d in directories]
        deleted, more = apply_retention(directories, params["db"], params.get("keep"), params.get("keep_days"),
                                        params.get("release_state_dir"), True, new)
        return dict(changed=True, path=path, manifest=sidecar_path(path), deleted=deleted, database=params["db"],
                    format=fmt, server_version=info["server_version"], database_size=info["size"],
                    estimate=estimate, warnings=warnings + more,
                    diff=diff(dest, listing(directories, params["db"]),
                              listing(directories, params["db"], [e["path"] for e in new], deleted)))

    gate = SpaceGate(cli, params, dest, space, timeout)
    try:
        if not os.path.isdir(dest):
            gate.info()  # a database that cannot be read leaves no new directory behind
        ensure_dir(dest, "dest")
        return _make_backup(params, cli, gate, fmt, dest, directories, utcnow(), timeout, warnings, space)
    finally:
        gate.release()


class SpaceGate:
    """The database's size and versions (server_info), read in a thread of its own from the moment
    the gate is made, so that its docker exec round trip overlaps the start of pg_dump; check()
    waits for them and claims the dump's estimated space (SpaceLedger) before the first byte of the
    dump is written. When server_info failed, that failure is the one to report (the dump usually
    fails the same way, and its words say less)."""

    def __init__(self, cli, params, dest, space, timeout):
        self.params = params
        self.dest = dest
        self.space = space
        self.claim = None
        self.checked = False
        self.reading = Background(server_info, cli, timeout)

    def info(self):
        """server_info's answer; BackupError when it could not be read."""
        try:
            return self.reading.result()
        except PgCliError as exc:
            raise BackupError("cannot read database %s before the dump: %s" % (self.params["db"], exc))

    def failure(self):
        """The BackupError of a failed server_info, or None (waits for it)."""
        try:
            self.info()
        except BackupError as exc:
            return exc
        return None

    def estimate(self):
        return dump_estimate(self.params, self.info())[0]

    def check(self):
        """Before the dump writes: the free-space check (once)."""
        if self.checked:
            return
        estimate, what = dump_estimate(self.params, self.info())
        if estimate:
            self.claim = claim_space(self.space, self.dest, estimate, "dest", what)
        self.checked = True

    def release(self):
        self.reading.wait()
        release_space(self.space, self.claim)
        self.claim = None


def _make_backup(params, cli, gate, fmt, dest, directories, started, timeout, warnings, space):
    copy_to = params.get("copy_to")
    # The archive header names the pg_dump that wrote it, and verification reads that header: a
    # separate `pg_dump --version` round trip is only needed when nothing reads the archive.
    before = listing(directories, params["db"])
    name = unique_final(directories, params["db"], fmt, started, params.get("label"))
    version = Background(cli.version, "pg_dump") if (params.get("verify") or "toc") == "none" else None
    with publishing(dest, name, "dump") as staged:
        try:
            verification, digest, size = dump_to(cli, params, fmt, staged.tmp, timeout, gate)
        except BackupError as exc:
            raise gate.failure() or exc
        finally:
            if version:
                version.wait()
        info = gate.info()
        estimate = gate.estimate()
        # what verification and the container left behind is said in the result's warnings
        warnings.extend(verification.pop("warnings", []))
        if size == 0:
            raise BackupError("the dump of %s is empty: not a backup" % cli.describe())
        pg_dump_version = dump_version(verification)
        try:
            pg_dump_version = version.result() if version else (pg_dump_version or cli.version("pg_dump"))
        except PgCliError as exc:
            raise BackupError(str(exc))
        finished = utcnow()
        staged.sidecar = sidecar = dict(
            tool=TOOL, format_version=SIDECAR_VERSION, path=name, database=params["db"],
            server_version=info["server_version"], pg_dump_version=pg_dump_version,
            format=fmt, compress=params.get("compress"), jobs=params.get("jobs", 1),
            schema_only=bool(params.get("schema_only")), tables=list(params.get("tables") or []),
            exclude_tables=list(params.get("exclude_tables") or []),
            size=size, sha256=digest,
            sha256_method="sha256sum-of-files" if fmt == "directory" else "file",
            database_size=info["size"], system_identifier=info.get("system_identifier"),
            started=isoformat(started), finished=isoformat(finished),
            label=params.get("label"), source=("container %s" % cli.container) if cli.container else
            "%s:%s" % (params.get("login_host") or "127.0.0.1", params.get("port") or 5432),
            verification=verification,
        )
    final = staged.final

    result = dict(changed=True, path=final, manifest=sidecar_path(final), size=size, sha256=digest,
                  verified=verification["ok"] and verification["level"] != "none", verification=verification,
                  database=params["db"], format=fmt, server_version=info["server_version"],
                  pg_dump_version=pg_dump_version, database_size=info["size"], estimate=estimate,
                  started=sidecar["started"], finished=sidecar["finished"], label=params.get("label"),
                  copy=None, deleted=[], warnings=warnings)
    if copy_to:
        try:
            result["copy"] = copy_backup(final, sidecar, copy_to, space=space)
        except BackupError as exc:
            raise BackupError("%s (the backup itself is complete and verified at %s)" % (exc, final))
    made = [final] + ([result["copy"]["path"]] if result["copy"] else [])
    deleted, more = apply_retention(directories, params["db"], params.get("keep"), params.get("keep_days"),
                                    params.get("release_state_dir"), False, just_made=made)
    result["deleted"] = deleted
    result["warnings"] += more
    result["diff"] = diff(dest, before, listing(directories, params["db"]))
    return result


class BackupManyError(BackupError):
    """Some backups of a backup_many call failed. `results` holds each job's result in job order
    (None for a failed one); `failures` holds (job index, database, message) of each failure."""

    def __init__(self, message, results, failures):
        BackupError.__init__(self, message)
        self.results = results
        self.failures = failures


MAKE_BACKUP_KWARGS = ("params", "check_mode", "cli")


def check_jobs(jobs, max_workers):
    """backup_many's input checked before anything runs: every job's options, and no two jobs
    backing up the same database name into the same directory (their file names and retention would
    collide). Raises BackupError naming the job."""
    if not isinstance(max_workers, int) or isinstance(max_workers, bool) or not 1 <= max_workers <= 32:
        raise BackupError("max_workers must be between 1 and 32, got %r" % (max_workers,))
    if not isinstance(jobs, (list, tuple)):
        raise BackupError("jobs must be a list of make_backup keyword arguments, got %s" % type(jobs).__name__)
    seen = {}
    for index, job in enumerate(jobs):
        if not isinstance(job, dict) or not isinstance(job.get("params"), dict):
            raise BackupError("job %d: expected a dict with the make_backup keyword arguments (params, and "
                              "optionally check_mode and cli), got %r" % (index, type(job).__name__))
        unknown = sorted(set(job) - set(MAKE_BACKUP_KWARGS))
        if unknown:
            raise BackupError("job %d: unknown make_backup argument(s) %s (expected %s)"
                              % (index, ", ".join(unknown), ", ".join(MAKE_BACKUP_KWARGS)))
        params = job["params"]
        for key in ("db", "dest"):
            if not params.get(key):
                raise BackupError("job %d: %s is required" % (index, key))
        try:
            validate_backup_params(params)
        except BackupError as exc:
            raise BackupError("job %d (database %s): %s" % (index, params["db"], exc))
        for directory in (params["dest"], params.get("copy_to")):
            if not directory:
                continue
            key = (os.path.realpath(directory), safe_component(params["db"]))
            if key in seen:
                raise BackupError("jobs %d and %d both back up database %s into %s: their backups and retention "
                                  "would collide; give each its own dest" % (seen[key], index, params["db"], directory))
            seen[key] = index


def _job_target(job):
    params = job["params"]
    cli = job.get("cli") or PgCli(params)
    return cli.describe()


def backup_many(jobs, max_workers=4):
    """Back up several databases at the same time (the databases one deploy phase names), each its
    own verified, atomic backup exactly as make_backup (the pg_backup module) takes it.

    `jobs` is a list; each job is a dict of make_backup's keyword arguments: `params` (the pg_backup
    options of one database: db, dest, container or login_host/port, login_user, login_password,
    label, verify, copy_to, keep, ...) and optionally `check_mode` and `cli`. At most `max_workers`
    (1-32) backups run at once, each in a thread of its own.

    Before anything runs, every job's options are checked, and two jobs may not back up the same
    database name into the same directory (dest or copy_to); a bad job raises BackupError naming it
    and no backup is taken. The free-space checks of backups running at the same time count each
    other's estimates, per file system.

    Every job runs to its end whatever happens to the others: a failure neither stops nor undoes
    another backup. Returns the results in job order, each exactly what make_backup returns for its
    database (path, manifest, sha256, size, verified, verification, ..., warnings, diff).

    When any job failed, it waits for all of them, removes nothing that succeeded (a failed job
    leaves no file under a final name, as make_backup never does), and raises BackupManyError whose
    message names each failed database, where it runs and why, then the backups that succeeded;
    its `results` are the job-ordered results (None where a job failed) and its `failures` the
    (job index, database, message) of each failure."""
    check_jobs(jobs, max_workers)
    if not jobs:
        return []
    ledger = SpaceLedger()
    results = [None] * len(jobs)
    failures = []

    def run(index):
        job = jobs[index]
        try:
            results[index] = make_backup(space=ledger, **job)
        except BackupError as exc:
            return index, str(exc)
        except Exception as exc:  # noqa: BLE001 - reported with the other failures, never lost in a thread
            return index, "%s: %s" % (type(exc).__name__, exc)
        return index, None

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(max_workers, len(jobs))) as pool:
        outcomes = list(pool.map(run, range(len(jobs))))
    for index, problem in outcomes:
        if problem is not None:
            failures.append((index, jobs[index]["params"]["db"], problem))
    if not failures:
        return results
    lines = ["%s (%s): %s" % (db, _job_target(jobs[index]), problem) for index, db, problem in failures]
    done = [r["path"] for r in results if r is not None]
    raise BackupManyError("%d of %d backups failed: %s. %s" % (
        len(failures), len(jobs), "; ".join(lines),
        "Kept the backups that succeeded: %s" % ", ".join(done) if done else "No backup succeeded"),
        results, failures)


def copy_backup(final, sidecar, copy_to, space=None):
    """Second copy in `copy_to`: temporary name, fsync, checksum compared, rename, sidecar."""
    ensure_dir(copy_to, "copy_to")
    claim = claim_space(space, copy_to, sidecar["size"], "copy_to", "the copy of %s" % final)
    try:
        return _copy_backup(final, sidecar, copy_to)
    finally:
        release_space(space, claim)


def _copy_backup(final, sidecar, copy_to):
    name = os.path.basename(final)
    target = os.path.join(copy_to, name)
    tmp = os.path.join(copy_to, ".%s.tmp-%s" % (name, secrets.token_hex(4)))
    try:
        if os.path.isdir(final):
            os.mkdir(tmp, 0o700)
            for entry in sorted(os.listdir(final)):
                _copy_file(os.path.join(final, entry), os.path.join(tmp, entry))
        else:
            _copy_file(final, tmp)
        fsync_dir(tmp)
        digest, size = checksum(tmp)
        if digest != sidecar["sha256"] or size != sidecar["size"]:
            raise BackupError("copy_to: the copy %s does not match the backup (sha256 %s, expected %s)"
                              % (target, digest, sidecar["sha256"]))
        if os.path.lexists(target):
            raise BackupError("copy_to: %s already exists; not overwriting it" % target)
        os.rename(tmp, target)
    except OSError as exc:
        remove_path(tmp)
        raise BackupError("copy_to: copying %s to %s failed: %s" % (final, copy_to, exc.strerror or exc))
    except BaseException:
        remove_path(tmp)
        raise
    fsync_dir(copy_to)
    write_json_atomic(sidecar_path(target), dict(sidecar, copy_of=final))
    return dict(path=target, manifest=sidecar_path(target), sha256=digest, size=size)


def _copy_file(src, dst):
    with open(src, "rb") as source, create_private(dst) as out:
        shutil.copyfileobj(source, out, CHUNK)
        out.flush()
        os.fsync(out.fileno())


# ------------------------------------------------------------------------------------------------
# restore
# ------------------------------------------------------------------------------------------------
def check_backup(src, expected=None, found=None):
    """Checksum a backup against its sidecar (or `expected`); returns (sidecar or {}, sha256, format):
    directory, custom, or sql (a plain SQL dump of pg_dump, gzip'd or not, read in the same pass as
    the checksum: `found`, a dict, then receives its sql_dump_info)."""
    if not os.path.exists(src):
        raise BackupError("src: backup %s does not exist" % src)
    sidecar = read_sidecar(src) or {}
    expected = (expected or sidecar.get("sha256") or "").lower()
    if not expected:
        raise BackupError("src: %s has no manifest %s and no sha256 was given: refusing to restore an unchecked "
                          "backup" % (src, sidecar_path(src)))
    fmt = "directory" if os.path.isdir(src) else file_kind(src)
    if fmt == "sql":
        info = sql_dump_info(src)
        digest = info["sha256"]
        if found is not None:
            found.update(info)
    else:
        digest, _size = checksum(src)
    if digest != expected:
        raise BackupError("src: checksum of %s is %s, expected %s: the backup is damaged or was changed"
                          % (src, digest, expected))
    return sidecar, digest, fmt


# ------------------------------------------------------------------------------------------------
# plain SQL dumps (pg_dump -Fp, gzip'd or not): checked, then replayed by psql in one transaction
# ------------------------------------------------------------------------------------------------
GZIP_MAGIC = b"\x1f\x8b"
CUSTOM_MAGIC = b"PGDMP"
SQL_HEAD = "-- PostgreSQL database dump"
SQL_TAIL = "-- PostgreSQL database dump complete"
CLUSTER_HEAD = "-- PostgreSQL database cluster dump"
SQL_PEEK = 1 << 16


def file_kind(path):
    """custom (a pg_dump archive) or sql (anything else: sql_dump_info says whether it is one)."""
    with open(path, "rb") as handle:
        return "custom" if handle.read(len(CUSTOM_MAGIC)) == CUSTOM_MAGIC else "sql"


def sql_chunks(handle, gzipped):
    """The text of an open dump file in blocks, gunzipped on the way when `gzipped`; yields
    (raw bytes read, text bytes). A damaged gzip stream raises BackupError."""
    import zlib

    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
    for raw in iter(lambda: handle.read(CHUNK), b""):
        if inflate is None:
            yield raw, raw
            continue
        try:
            text = inflate.decompress(raw)
            while inflate.eof and inflate.unused_data:
                # a file of several gzip members (cat a.gz b.gz) is one stream, as gunzip reads it
                rest = inflate.unused_data
                inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                text += inflate.decompress(rest)
        except zlib.error as exc:
            raise BackupError("the gzip stream is damaged: %s" % exc)
        yield raw, text
    if inflate is not None and not inflate.eof:
        raise BackupError("the gzip stream ends before its end (the file is truncated)")


def sql_dump_info(path):
    """Read a plain SQL dump once: its sha256 and size, and what it is. Refuses (BackupError) a
    file that is not the plain output of pg_dump: not text, no pg_dump header, a pg_dumpall
    cluster dump, a custom archive inside gzip, or one without pg_dump's closing line (truncated)."""
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == GZIP_MAGIC
    digest = hashlib.sha256()
    size = 0
    head = b""
    tail = b""
    lines = dict(drop=False, create=False, copy=False)
    carry = b""
    try:
        with open(path, "rb") as handle:
            for raw, text in sql_chunks(handle, gzipped):
                digest.update(raw)
                size += len(raw)
                if len(head) < SQL_PEEK:
                    head += text[:SQL_PEEK - len(head)]
                    if len(head) >= len(CUSTOM_MAGIC) and head.startswith(CUSTOM_MAGIC):
                        break
                tail = (tail + text)[-4096:]
                if not lines["create"]:
                    block = carry + text
                    complete, carry = block.rsplit(b"\n", 1) if b"\n" in block else (b"", block)
                    for line in complete.split(b"\n"):
                        if line.startswith(b"DROP "):
                            lines["drop"] = True
                        elif line.startswith(b"CREATE "):
                            lines["create"] = True
                            break
                    carry = carry[-4096:]
    except BackupError as exc:
        raise BackupError("src: %s is not a readable gzip'd SQL dump: %s" % (path, exc))
    what = "gunzipped " if gzipped else ""
    if head.startswith(CUSTOM_MAGIC):
        raise BackupError("src: %s is a pg_dump custom archive inside gzip: gunzip it and restore the .dump" % path)
    if b"\0" in head:
        raise BackupError("src: %s is not a SQL dump (its %stext holds NUL bytes): expected a pg_dump custom archive, "
                          "a directory backup, or the plain SQL output of pg_dump (.sql or .sql.gz)" % (path, what))
    text = head.decode("utf-8", "replace")
    if CLUSTER_HEAD in text[:2048]:
        raise BackupError("src: %s is a cluster dump of pg_dumpall (roles and every database): it cannot be restored "
                          "into one database; restore it with psql as a superuser, by hand" % path)
    if SQL_HEAD not in text[:2048]:
        raise BackupError("src: %s is not a SQL dump of pg_dump: its %sbeginning has no '%s' line (expected a pg_dump "
                          "custom archive, a directory backup, or the plain SQL output of pg_dump, .sql or .sql.gz)"
                          % (path, what, SQL_HEAD))
    if SQL_TAIL not in tail.decode("utf-8", "replace"):
        raise BackupError("src: %s ends without pg_dump's closing line '%s': the dump is truncated or was cut short "
                          "when it was made; refusing to restore part of a database" % (path, SQL_TAIL))
    info = dict(sha256=digest.hexdigest(), size=size, gzip=gzipped, clean=lines["drop"])
    for key, label in (("dumped_from", "-- Dumped from database version"), ("pg_dump_version", "-- Dumped by pg_dump version")):
        found = re.search(r"^%s (\S+)" % re.escape(label), text, re.M)
        info[key] = found.group(1) if found else None
    return info


# Before a dump made without --clean, with sql_clean: the user schemas are dropped and public made
# again (owner pg_database_owner, USAGE for all: PostgreSQL 15's own), in the restore's transaction.
SQL_CLEAN = r"""DO $vpsops$ DECLARE s name; BEGIN
  FOR s IN SELECT nspname FROM pg_namespace WHERE nspname <> 'information_schema' AND nspname NOT LIKE 'pg\_%'
  LOOP EXECUTE format('DROP SCHEMA %I CASCADE', s); END LOOP;
END $vpsops$;
CREATE SCHEMA public AUTHORIZATION pg_database_owner;
GRANT USAGE ON SCHEMA public TO PUBLIC;
"""


def replay_sql(cli, src, info, db, clean=False, timeout=None):
    """Replay plain SQL dump `src` into `db` with psql (ON_ERROR_STOP) in one transaction that this
    side opens and commits: BEGIN, (SQL_CLEAN), the dump's text (gunzipped on the way), then
    COMMIT only once the whole file was read and hashed to the checksum that was checked. Any
    failure, a file that changed since, or a timeout leaves the database as it was (the COMMIT is
    never sent; psql stops at the error and the transaction dies with its session)."""
    argv = cli.argv("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-f", "-"], stdin=True)
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors,
                                    env=cli.env())
        except OSError as exc:
            raise BackupError("psql on %s failed: %s" % (cli.describe(), cli.scrub(exc)))
        problem = None
        with kill_after(proc, timeout) as expired:
            try:
                proc.stdin.write(b"BEGIN;\n" + (SQL_CLEAN.encode() if clean else b""))
                digest = hashlib.sha256()
                with open(src, "rb") as handle:
                    for raw, text in sql_chunks(handle, info.get("gzip")):
                        digest.update(raw)
                        proc.stdin.write(text)
                if digest.hexdigest() != info["sha256"]:
                    problem = "%s changed while it was restored (sha256 %s, checked %s)" % (
                        src, digest.hexdigest(), info["sha256"])
                    # psql stops at this line under ON_ERROR_STOP (in COPY data it ends the COPY first)
                    proc.stdin.write(b"\n\\.\n\\vpsops_abort\n")
                else:
                    proc.stdin.write(b"\nCOMMIT;\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # psql stopped at an error: its stderr says which
            except (OSError, BackupError) as exc:
                problem = str(exc)
                proc.kill()
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
                rc = proc.wait()
        errors.seek(0)
        err = cli.scrub(errors.read().decode("utf-8", "replace")).strip()
    if expired.is_set():
        raise BackupError("psql on %s timed out after %ss" % (cli.describe(), timeout))
    if problem:
        raise BackupError("reading the dump failed: %s" % problem)
    if rc != 0:
        raise BackupError(cli.failure("psql", rc, err[-2000:]))


def restore(params, check_mode=False, cli=None):
    """Restore `src` into database `db` as the pg_restore module does; returns its result dict."""
    for key in ("src", "safety_dest", "container_tmpdir"):
        if params.get(key) and not os.path.isabs(params[key]):
            raise BackupError("%s must be an absolute path, got %r" % (key, params[key]))
    if not 1 <= params.get("jobs", 1) <= 64:
        raise BackupError("jobs must be between 1 and 64, got %s" % params.get("jobs"))
    if params.get("sha256") and not re.match(r"^[0-9a-fA-F]{64}$", params["sha256"]):
        raise BackupError("sha256 must be 64 hexadecimal digits")
    cli = cli or PgCli(params)
    timeout = _timeout(params)
    src = params["src"].rstrip("/")
    db = params["db"]
    counting = params.get("row_counts") or "exact"
    # The counts before (reading every table for exact counts) run while the checksum is computed;
    # they only read, and nothing else happens unless the checksum matches.
    found = {}

    def count_before():
        try:
            found["before"] = row_counts(cli, timeout=timeout, mode=counting)
            found["sessions"], found["cluster"] = other_sessions(cli, db, timeout=timeout, cluster=True)
        except PgCliError as exc:
            found["error"] = exc

    counter = threading.Thread(target=count_before)
    counter.start()
    dump = {}
    try:
        sidecar, digest, fmt = check_backup(src, params.get("sha256"), found=dump)
    finally:
        counter.join()
    if "error" in found:
        raise BackupError("cannot read database %s before the restore: %s" % (db, found["error"]))
    before, sessions = found["before"], found["sessions"]
    mismatches = backup_mismatches(sidecar, db, found["cluster"]) if sidecar else []
    if fmt == "sql":
        if params.get("jobs", 1) > 1:
            raise BackupError("jobs > 1 needs a custom or directory backup: a plain SQL dump is replayed by psql, "
                              "one statement after the other, in one transaction")
        if not sidecar:
            mismatches.append("it is a plain SQL dump without a manifest: the database and cluster it was taken "
                              "from cannot be compared with %s" % db)
        if not dump["clean"] and before and not params.get("sql_clean"):
            raise BackupError(
                "refusing to restore %s into database %s: it is a plain SQL dump made without --clean (it creates "
                "its objects and would fail on the tables %s has: %s). Nothing was changed. Set sql_clean to drop "
                "the user schemas of %s first, in the restore's transaction, or restore into an empty database"
                % (src, db, db, ", ".join(sorted(before)[:10]) + (" ..." if len(before) > 10 else ""), db))
    if mismatches and not params.get("force_mismatch"):
        raise BackupError("refusing to restore %s into database %s: %s. Nothing was changed. Restore the right "
                          "backup, or set force_mismatch to restore this one all the same"
                          % (src, db, "; ".join(mismatches)))
    safety_dest = params.get("safety_dest") or os.path.dirname(src)
    single = params.get("jobs", 1) <= 1
    method = "pg_restore --clean --if-exists " + ("--single-transaction" if single else "-j %d" % params["jobs"])
    if fmt == "sql":
        method = "%spsql -v ON_ERROR_STOP=1, one transaction%s" % (
            "gunzip | " if dump["gzip"] else "", ", user schemas dropped first (sql_clean)"
            if params.get("sql_clean") and not dump["clean"] else "")
    result = dict(changed=True, restored=src, db=db, sha256=digest, format=fmt,
                  backup_database=sidecar.get("database"), backup_finished=sidecar.get("finished"),
                  method=method, safety_backup=None, terminated_sessions=0, mismatches=mismatches, warnings=[])
    if mismatches:
        result["warnings"].append("restoring %s into %s although %s (force_mismatch)"
                                  % (src, db, "; ".join(mismatches)))
    if not sidecar and fmt != "sql":
        result["warnings"].append("%s has no manifest: its database and completeness could not be compared "
                                  "with %s" % (src, db))
    if check_mode:
        result.update(safety_backup=dict(dest=safety_dest) if params.get("safety_backup", True) else None,
                      sessions_to_terminate=sessions if params.get("terminate_sessions", True) else 0,
                      tables=dict((name, dict(before=count, after=None)) for name, count in before.items()))
        return result
    if params.get("safety_backup", True):
        safety_params = dict(params, dest=safety_dest, format="custom", verify="toc", label="pre-restore",
                             compress=None, jobs=1, schema_only=False, tables=[], exclude_tables=[],
                             verify_tables=[], copy_to=None, keep=None, keep_days=None, release_state_dir=None)
        try:
            safety = make_backup(safety_params, cli=cli)
        except BackupError as exc:
            raise BackupError("safety backup of %s before the restore failed, nothing was restored: %s" % (db, exc))
        result["safety_backup"] = dict(path=safety["path"], manifest=safety["manifest"], sha256=safety["sha256"],
                                       size=safety["size"])
    if params.get("terminate_sessions", True):
        try:
            result["terminated_sessions"] = terminate_sessions(cli, db, timeout=timeout)
        except PgCliError as exc:
            raise BackupError("terminating the sessions on %s failed: %s" % (db, exc))
    safety = result["safety_backup"]["path"] if result["safety_backup"] else None
    if fmt == "sql":
        try:
            replay_sql(cli, src, dump, db, clean=bool(params.get("sql_clean")) and not dump["clean"], timeout=timeout)
        except BackupError as exc:
            raise BackupError("restore of %s into %s failed (in one transaction: the database is unchanged): %s%s"
                              % (src, db, exc, "; the safety backup is %s" % safety if safety else ""))
    else:
        restore_archive(cli, params, src, fmt, db, safety, result["warnings"], timeout)
    try:
        after = row_counts(cli, timeout=timeout, mode=counting)
    except PgCliError as exc:
        raise BackupError("restore of %s into %s done, but counting rows afterwards failed: %s" % (src, db, exc))
    names = sorted(set(before) | set(after))
    result["tables"] = dict((name, dict(before=before.get(name), after=after.get(name))) for name in names)
    return result


def restore_archive(cli, params, src, fmt, db, safety, warnings, timeout):
    """pg_restore --clean --if-exists of a custom or directory backup into `db` (one transaction
    unless jobs > 1); a directory backup goes into the container first and is removed after."""
    single = params.get("jobs", 1) <= 1
    args = ["-w", "-d", db, "--clean", "--if-exists", "--exit-on-error"]
    args += ["--single-transaction"] if single else ["-j", str(params["jobs"])]
    inside = None
    try:
        if fmt == "directory" and cli.container:
            inside = _container_tmp(params, "rs")
            copy_into_container(cli, src, inside, timeout)
            archive = Archive(cli, container_path=inside)
        else:
            archive = Archive(cli, host_path=src)
        if not single and not archive.parallel_ok():
            raise BackupError("jobs > 1 needs a directory backup, or host mode: a custom archive streamed into a "
                              "container cannot be restored in parallel")
        try:
            archive.run(args, timeout=timeout)
        except PgCliError as exc:
            raise BackupError("restore of %s into %s failed%s: %s%s" % (
                src, db, " (in one transaction: the database is unchanged)" if single else "", exc,
                "; the safety backup is %s" % safety if safety else ""))
    except BackupError as exc:
        left = leftover_in_container(cli, inside, "a copy of the backup %s" % src) if inside else None
        raise BackupError("%s; %s" % (exc, left) if left else str(exc))
    except BaseException:
        if inside:
            leftover_in_container(cli, inside, "a copy of the backup %s" % src)
        raise
    if inside:
        left = leftover_in_container(cli, inside, "a copy of the backup %s" % src)
        if left:
            warnings.append(left)
