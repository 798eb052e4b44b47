# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of the backup logic that needs no server: retention, manifests, checksums, names,
option validation, TOC parsing and the argv/env the client tools get."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import json
import os
import subprocess
import time

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _backup as backup
from ansible_collections.vpsops.deploy.plugins.module_utils._pgcli import PgCli

DAY = 86400.0
NOW = 1_800_000_000.0

# `pg_restore --list` of a custom archive, recorded from the lab's PostgreSQL 15.
TOC_RECORDED = """;
; Archive created at 2026-11-23 16:33:16 UTC
;     dbname: bkdb
;     TOC Entries: 10
;     Compression: -1
;     Dump Version: 1.14-0
;     Format: CUSTOM
;     Integer: 4 bytes
;     Offset: 8 bytes
;     Dumped from database version: 15.18 (Debian 15.18-0+deb12u1)
;     Dumped by pg_dump version: 15.18 (Debian 15.18-0+deb12u1)
;
;
; Selected TOC Entries:
;
6; 2615 16396 SCHEMA - app bk
216; 1259 16397 TABLE app Odd Name bk
215; 1259 16389 TABLE public items bk
3346; 0 16397 TABLE DATA app Odd Name bk
3345; 0 16389 TABLE DATA public items bk
3199; 2606 16393 CONSTRAINT public items items_pkey bk
"""


def entry(name, age_days, verified=True):
    return dict(path="/b/%s" % name, finished=NOW - age_days * DAY, verified=verified)


def names(pairs):
    return sorted(os.path.basename(path) for path, _reason in pairs)


# ------------------------------------------------------------------------------------------------
# retention
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("entries, kwargs, expected_deleted", [
    # no rule: nothing is ever deleted
    ([entry("a", 1), entry("b", 50)], dict(), []),
    # keep N: the newest N stay
    ([entry("a", 1), entry("b", 2), entry("c", 3), entry("d", 4)], dict(keep=2), ["c", "d"]),
    # keep_days: younger ones stay
    ([entry("a", 1), entry("b", 5), entry("c", 10)], dict(keep_days=7), ["c"]),
    # both: kept when any rule keeps it
    ([entry("a", 1), entry("b", 2), entry("c", 3), entry("d", 20)], dict(keep=1, keep_days=2.5), ["c", "d"]),
    # the newest verified backup survives even when every rule would drop it
    ([entry("a", 1, False), entry("b", 2, False), entry("c", 30, True), entry("d", 40, True)],
     dict(keep=1, keep_days=0), ["b", "d"]),
    # nothing verified: only the rules count
    ([entry("a", 1, False), entry("b", 2, False)], dict(keep=1), ["b"]),
    # keep_days 0 with keep 1: only the newest and the newest verified remain
    ([entry("a", 1, False), entry("b", 2), entry("c", 3)], dict(keep=1, keep_days=0), ["c"]),
])
def test_plan_retention(entries, kwargs, expected_deleted):
    kept, deleted = backup.plan_retention(entries, now=NOW, **kwargs)
    assert names(deleted) == expected_deleted
    assert len(kept) + len(deleted) == len(entries)


def test_plan_retention_never_deletes_what_a_release_references():
    entries = [entry("a", 1), entry("b", 2), entry("c", 3)]
    kept, deleted = backup.plan_retention(entries, keep=1, now=NOW, protected={os.path.realpath("/b/c")})
    assert names(deleted) == ["b"]
    assert dict(kept)["/b/c"] == "referenced by a release"
    assert "newest verified full backup" in dict(kept)["/b/a"]


def kind_entry(name, age_days, kind):
    """A backup of one kind: full, schema (schema-only), tables (some tables), unverified (full,
    verify none)."""
    return dict(path="/b/%s" % name, finished=NOW - age_days * DAY, verified=kind != "unverified",
                full=kind in ("full", "unverified"))


def test_three_full_and_three_newer_schema_only_backups_with_keep_3_keep_a_full_one():
    entries = [kind_entry("f%d" % i, 10 + i, "full") for i in range(3)]
    entries += [kind_entry("s%d" % i, i, "schema") for i in range(3)]
    kept, deleted = backup.plan_retention(entries, keep=3, now=NOW)
    assert names(deleted) == ["f1", "f2"]
    assert dict(kept)["/b/f0"] == "newest verified full backup"


def test_keep_days_0_keeps_the_unverified_backup_just_made():
    entries = [kind_entry("new", 0.00001, "unverified"), kind_entry("old", 3, "full")]
    kept, deleted = backup.plan_retention(entries, keep_days=0, now=NOW, just_made={"/b/new"})
    assert deleted == []
    assert dict(kept) == {"/b/new": "the backup just made", "/b/old": "newest verified full backup"}
    # without the run's own backup named, keep_days 0 would delete it: just_made is what keeps it
    assert names(backup.plan_retention(entries, keep_days=0, now=NOW)[1]) == ["new"]


KINDS = ["full", "schema", "tables", "unverified"]


def mixed_histories():
    """Every history of four backups (newest first) over the four kinds: 256 of them."""
    import itertools

    for kinds in itertools.product(KINDS, repeat=4):
        yield [kind_entry("b%d" % i, i * 2 + 1, kind) for i, kind in enumerate(kinds)]


@pytest.mark.parametrize("keep, keep_days", [(1, None), (2, None), (3, None), (None, 0), (None, 4), (1, 0), (2, 2.5)])
@pytest.mark.parametrize("pinned", [False, True])
def test_retention_over_mixed_backups_keeps_the_newest_verified_full_and_the_new_one(keep, keep_days, pinned):
    for entries in mixed_histories():
        # the run's own backup is the newest, and may be of any kind
        for made_kind in KINDS:
            history = [kind_entry("made", 0, made_kind)] + entries
            protected = {os.path.realpath("/b/b3")} if pinned else set()
            kept, deleted = backup.plan_retention(history, keep=keep, keep_days=keep_days, now=NOW,
                                                  protected=protected, just_made={"/b/made"})
            gone = set(p for p, _r in deleted)
            full = [e for e in history if e["verified"] and e["full"]]
            assert "/b/made" not in gone
            if full:
                assert full[0]["path"] not in gone, (made_kind, [e["path"] for e in history], deleted)
            verified = [e for e in history if e["verified"]]
            if verified:
                assert verified[0]["path"] not in gone
            if pinned:
                assert "/b/b3" not in gone
            assert len(kept) + len(deleted) == len(history)


def test_a_copy_of_a_pinned_backup_is_kept_and_a_copy_of_a_retired_one_is_not():
    entries = [kind_entry("new", 0, "schema"), dict(kind_entry("c_pinned", 5, "full"), copy_of="/d/pinned"),
               dict(kind_entry("c_retired", 6, "full"), copy_of="/d/retired"), kind_entry("c_old", 7, "full")]
    kept, deleted = backup.plan_retention(entries, keep=1, now=NOW, protected={os.path.realpath("/d/pinned")},
                                          just_made={"/b/new"})
    assert names(deleted) == ["c_old", "c_retired"]
    assert "referenced by a release" in dict(kept)["/b/c_pinned"]
    assert "newest verified full backup" in dict(kept)["/b/c_pinned"]


def make_backup_files(directory, db, name, age_days, verified=True, fmt="custom", tool=backup.TOOL, **extra):
    """A fake backup plus a sidecar as pg_backup writes them."""
    path = os.path.join(directory, name)
    if fmt == "directory":
        os.mkdir(path)
        with open(os.path.join(path, "toc.dat"), "wb") as handle:
            handle.write(b"toc")
    else:
        with open(path, "wb") as handle:
            handle.write(b"PGDMP" + name.encode())
    finished = datetime.datetime.fromtimestamp(NOW - age_days * DAY, datetime.timezone.utc)
    sidecar = dict(tool=tool, format_version=backup.SIDECAR_VERSION, database=db, format=fmt,
                   finished=backup.isoformat(finished),
                   verification=dict(level="toc" if verified else "none", ok=True))
    sidecar.update(extra)
    with open(path + ".json", "w") as handle:
        json.dump(sidecar, handle)
    return path


def test_list_backups_only_takes_valid_sidecars_of_the_same_database(tmp_path):
    d = str(tmp_path)
    good = make_backup_files(d, "ar", "ar_1.dump", 1)
    make_backup_files(d, "payments", "payments_1.dump", 1)
    make_backup_files(d, "ar", "ar_foreign.dump", 1, tool="someone-else")
    orphan = make_backup_files(d, "ar", "ar_orphan.dump", 1)
    os.unlink(orphan)
    with open(os.path.join(d, "ar_broken.dump"), "wb") as handle:
        handle.write(b"x")
    with open(os.path.join(d, "ar_broken.dump.json"), "w") as handle:
        handle.write("{not json")
    found = backup.list_backups(d, "ar")
    assert [f["path"] for f in found] == [good]
    assert found[0]["verified"] is True


def test_apply_retention_deletes_files_and_dirs_with_sidecars_and_leaves_the_rest(tmp_path):
    d = str(tmp_path)
    new = make_backup_files(d, "ar", "ar_new.dump", 0)
    old_file = make_backup_files(d, "ar", "ar_old.dump", 10)
    old_dir = make_backup_files(d, "ar", "ar_old.dir", 11, fmt="directory")
    other_db = make_backup_files(d, "payments", "payments_old.dump", 30)
    unmanaged = os.path.join(d, "ar_manual.dump")
    with open(unmanaged, "wb") as handle:
        handle.write(b"PGDMP")
    deleted, warnings = backup.apply_retention([d], "ar", keep=1, keep_days=None, state_dir=None, check_mode=False)
    assert sorted(deleted) == sorted([old_file, old_dir])
    assert warnings == []
    for path in (old_file, old_dir):
        assert not os.path.lexists(path) and not os.path.lexists(path + ".json")
    for path in (new, other_db, unmanaged):
        assert os.path.exists(path)


def test_apply_retention_in_check_mode_lists_but_keeps(tmp_path):
    d = str(tmp_path)
    old = make_backup_files(d, "ar", "ar_old.dump", 10)
    planned = dict(path=os.path.join(d, "ar_planned.dump"), finished=NOW + DAY, verified=True)
    deleted, _warnings = backup.apply_retention([d], "ar", keep=1, keep_days=None, state_dir=None, check_mode=True,
                                                new_entries=[planned])
    assert deleted == [old]
    assert os.path.exists(old) and os.path.exists(old + ".json")


def write_release(state_dir, release_id, backup_paths):
    """A release manifest in the release store's fixed format."""
    release = os.path.join(state_dir, "releases", release_id)
    os.makedirs(release)
    with open(os.path.join(release, "manifest.json"), "w") as handle:
        json.dump({"id": release_id, "backups": [{"path": p, "sha256": "0" * 64, "size": 1, "verified": True}
                                                 for p in backup_paths]}, handle)
    return release


@pytest.fixture
def store(tmp_path):
    """A backup directory with a new, a pinned and an old backup of `ar`, and a release store."""
    d = str(tmp_path / "backups")
    os.mkdir(d)
    return dict(dir=d, state=str(tmp_path / "state"), new=make_backup_files(d, "ar", "ar_new.dump", 0),
                pinned=make_backup_files(d, "ar", "ar_pinned.dump", 20), old=make_backup_files(d, "ar", "ar_old.dump", 30))


def retention(store):
    return backup.apply_retention([store["dir"]], "ar", keep=1, keep_days=None, state_dir=store["state"],
                                  check_mode=False)


def test_retention_keeps_backups_a_release_references(store):
    write_release(store["state"], "20260101T000000Z-r1", [store["pinned"]])
    assert backup.referenced_backups(store["state"]) == {os.path.realpath(store["pinned"])}
    assert retention(store) == ([store["old"]], [])
    assert os.path.exists(store["pinned"]) and os.path.exists(store["new"])


def test_retention_on_disk_over_schema_only_unverified_copies_and_a_retired_release(tmp_path):
    """dest and copy_to each hold: an old full backup pinned by a live release, the newest full one
    (its release retired: no longer in the store), newer schema-only and table backups, and the
    unverified backup this run just made. keep 1, keep_days 0: in each directory the pinned, the
    newest verified full and the new one survive, the rest goes."""
    dest, copies, state = (str(tmp_path / n) for n in ("dest", "copies", "state"))
    os.mkdir(dest)
    os.mkdir(copies)
    made = {}
    for directory in (dest, copies):
        copy = directory == copies

        def one(name, age, **extra):
            if copy:
                extra["copy_of"] = os.path.join(dest, name)
            # ages from the real clock (apply_retention reads it), the new one a second old
            return make_backup_files(directory, "ar", name, max(age, 1 / DAY) + (NOW - time.time()) / DAY, **extra)

        made[directory] = dict(
            pinned=one("ar_pinned.dump", 30), full=one("ar_full.dump", 10),
            schema=one("ar_schema.dump", 5, schema_only=True), tables=one("ar_tables.dump", 4, tables=["items"]),
            older=one("ar_older.dump", 20),
            new=one("ar_new.dump", 0, verified=False))
    write_release(state, "r-live", [made[dest]["pinned"]])
    deleted, warnings = backup.apply_retention([dest, copies], "ar", keep=None, keep_days=0, state_dir=state,
                                               check_mode=False, just_made=[made[dest]["new"], made[copies]["new"]])
    assert warnings == []
    for directory in (dest, copies):
        left = sorted(n for n in os.listdir(directory) if not n.endswith(".json"))
        assert left == ["ar_full.dump", "ar_new.dump", "ar_pinned.dump", "ar_tables.dump"], (directory, left)
        assert sorted(p for p in deleted if p.startswith(directory + "/")) == sorted(
            [made[directory]["older"], made[directory]["schema"]])


def test_unreadable_release_store_means_nothing_is_deleted(store):
    release = write_release(store["state"], "r1", [])
    with open(os.path.join(release, "manifest.json"), "w") as handle:
        handle.write("{truncated")
    deleted, warnings = retention(store)
    assert deleted == []
    assert "retention skipped" in warnings[0] and store["state"] in warnings[0]
    assert os.path.exists(store["old"]) and os.path.exists(store["pinned"])


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
def test_directory_checksum_is_sha256sum_of_the_files_in_byte_order(tmp_path):
    d = tmp_path / "x.dir"
    d.mkdir()
    contents = {"toc.dat": b"toc", "3345.dat.gz": b"data" * 1000, "B.dat": b"", "a.dat": b"a"}
    for name, data in contents.items():
        (d / name).write_bytes(data)
    digest, size = backup.sha256_tree(str(d))
    lines = "".join("%s  %s\n" % (hashlib.sha256(contents[n]).hexdigest(), n) for n in sorted(contents))
    assert digest == hashlib.sha256(lines.encode()).hexdigest()
    assert size == sum(len(v) for v in contents.values())
    shell = subprocess.run("cd %s && sha256sum $(LC_ALL=C ls) | sha256sum" % d, shell=True, capture_output=True,
                           text=True, check=True)
    assert shell.stdout.split()[0] == digest


def test_directory_checksum_refuses_anything_but_files(tmp_path):
    d = tmp_path / "x.dir"
    d.mkdir()
    (d / "sub").mkdir()
    with pytest.raises(backup.BackupError, match="not a regular file"):
        backup.sha256_tree(str(d))


@pytest.mark.parametrize("db, label, fmt, expected", [
    ("ar_db", None, "custom", "ar_db_20260212T101500Z.dump"),
    ("ar_db", "r42", "directory", "ar_db_20260212T101500Z_r42.dir"),
    ("my db/x", "release 7: hotfix", "custom", "my_db_x_20260212T101500Z_release_7__hotfix.dump"),
    ("..", "..", "custom", "__20260212T101500Z__.dump"),
])
def test_backup_names(db, label, fmt, expected):
    when = datetime.datetime(2026, 2, 12, 10, 15, 0, tzinfo=datetime.timezone.utc)
    assert backup.backup_basename(db, fmt, when, label) == expected


def test_unique_name_after_a_same_second_backup(tmp_path):
    when = datetime.datetime(2026, 2, 12, 10, 15, 0, tzinfo=datetime.timezone.utc)
    d = str(tmp_path)
    first = backup.unique_final([d], "ar", "custom", when, None)
    open(os.path.join(d, first), "w").close()
    assert backup.unique_final([d], "ar", "custom", when, None) == "ar_20260212T101500Z-2.dump"


# ------------------------------------------------------------------------------------------------
# options, TOC, argv
# ------------------------------------------------------------------------------------------------
BASE = dict(db="ar", dest="/var/backups/ar", format="custom", jobs=1, verify="toc", space_factor=1.0, timeout=60)


@pytest.mark.parametrize("change, message", [
    (dict(compress=10), "compress must be between 0 and 9"),
    (dict(jobs=0), "jobs must be between 1 and 64"),
    (dict(jobs=4), "jobs > 1 needs format: directory"),
    (dict(keep=0), "keep must be 1 or more"),
    (dict(keep_days=-1), "keep_days must be 0 or more"),
    (dict(space_factor=-0.5), "space_factor must be 0"),
    (dict(timeout=-1), "timeout must be 0"),
    (dict(verify_tables=["items"]), "verify_tables needs verify: restore"),
    (dict(dest="relative/dir"), "dest must be an absolute path"),
    (dict(copy_to="/var/backups/ar/"), "copy_to must be another directory than dest"),
])
def test_bad_options_are_named(change, message):
    with pytest.raises(backup.BackupError, match=message):
        backup.validate_backup_params(dict(BASE, **change))


def test_good_options_pass():
    backup.validate_backup_params(dict(BASE, format="directory", jobs=4, compress=0, keep=1, keep_days=0,
                                       verify="restore", verify_tables=["items"], copy_to="/mnt/offsite"))


def test_parse_toc_of_a_recorded_listing():
    toc = backup.parse_toc(TOC_RECORDED)
    assert toc == dict(toc_entries=6, dbname="bkdb", format="CUSTOM",
                       dumped_from="15.18 (Debian 15.18-0+deb12u1)", pg_dump_version="15.18 (Debian 15.18-0+deb12u1)")


@pytest.mark.parametrize("text", ["", "pg_restore: error: input file is too short (read 0, expected 5)\n",
                                  "; Selected TOC Entries:\n"])
def test_parse_toc_refuses_output_without_an_archive_header(text):
    with pytest.raises(backup.BackupError, match="table of contents is unreadable"):
        backup.parse_toc(text)


def test_pg_dump_args():
    args = backup.pg_dump_args(dict(BASE, format="directory", jobs=2, compress=3, schema_only=True,
                                    tables=["public.a*"], exclude_tables=["audit"]), "directory", target="/t/x")
    assert args == ["-w", "-F", "d", "-Z", "3", "-j", "2", "--schema-only", "-t", "public.a*", "-T", "audit",
                    "-f", "/t/x", "-d", "ar"]


@pytest.mark.parametrize("container", [None, "platform-ar-postgres-1"])
def test_the_password_is_only_in_the_environment(container):
    secret = "s3cr3t-pa55word"
    cli = PgCli(dict(db="ar", login_user="ar_user", login_password=secret, container=container, port=5434))
    for tool, args in (("pg_dump", backup.pg_dump_args(dict(BASE), "custom")),
                       ("pg_restore", ["--list"]), ("psql", ["-d", "ar"])):
        argv = cli.argv(tool, args, stdin=True)
        assert not any(secret in part for part in argv), argv
    assert cli.env()["PGPASSWORD"] == secret
    if container:
        argv = cli.argv("pg_dump", [])
        assert argv[:2] == ["docker", "exec"] and argv[argv.index("PGPASSWORD") - 1] == "-e"


def test_restore_refuses_a_backup_without_checksum_or_with_a_wrong_one(tmp_path):
    d = str(tmp_path)
    path = make_backup_files(d, "ar", "ar_1.dump", 1)
    with pytest.raises(backup.BackupError, match="refusing to restore an unchecked backup"):
        backup.check_backup(path)
    with pytest.raises(backup.BackupError, match="the backup is damaged or was changed"):
        backup.check_backup(path, expected="0" * 64)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert backup.check_backup(path, expected=digest)[1:] == (digest, "custom")


# ------------------------------------------------------------------------------------------------
# restore: the backup's manifest against the target; the free-space estimate
# ------------------------------------------------------------------------------------------------
FULL = dict(database="app", system_identifier="7716310244152336404", schema_only=False, tables=[], exclude_tables=[])


@pytest.mark.parametrize("change, db, cluster, expected", [
    (dict(), "app", "7716310244152336404", []),
    (dict(), "app", None, []),
    (dict(system_identifier=None), "app", "1", []),
    (dict(), "ar_db", "7716310244152336404", ["it is a backup of database app, not of ar_db"]),
    (dict(), "app", "42", ["it was taken on another PostgreSQL cluster (system identifier 7716310244152336404; "
                           "the target's is 42)"]),
    (dict(schema_only=True), "app", None, ["it is schema-only (no rows)"]),
    (dict(tables=["items", "orders"]), "app", None, ["it holds only the tables items, orders"]),
    (dict(exclude_tables=["audit"]), "app", None, ["it leaves out the tables audit"]),
    (dict(schema_only=True), "other", "42", ["it is a backup of database app, not of other",
                                             "it was taken on another PostgreSQL cluster (system identifier "
                                             "7716310244152336404; the target's is 42)",
                                             "it is schema-only (no rows)"]),
])
def test_backup_mismatches(change, db, cluster, expected):
    assert backup.backup_mismatches(dict(FULL, **change), db, cluster) == expected


def test_is_full():
    assert backup.is_full(FULL)
    assert not backup.is_full(dict(FULL, schema_only=True))
    assert not backup.is_full(dict(FULL, tables=["x"]))


INFO = dict(size=7667047, user_data=40960)


@pytest.mark.parametrize("params, info, expected, words", [
    # ten rows: what the tables hold, not the 7.6 MB of catalogs
    (dict(db="shop"), INFO, 40960 + backup.SCHEMA_ALLOWANCE,
     "user tables with their indexes and large objects 40960 bytes + 1048576 for the schema, x space_factor 1.0"),
    (dict(db="shop", space_factor=2.0), INFO, 2 * (40960 + backup.SCHEMA_ALLOWANCE), "x space_factor 2.0"),
    (dict(db="shop", schema_only=True), INFO, backup.SCHEMA_ALLOWANCE, "schema only + 1048576 for the schema"),
    (dict(db="shop", space_factor=0), INFO, 0, "estimated at 0 bytes"),
    (dict(db="shop"), dict(size=5000000), 5000000 + backup.SCHEMA_ALLOWANCE, "pg_database_size 5000000 bytes"),
])
def test_dump_estimate_counts_what_the_dump_holds(params, info, expected, words):
    estimate, what = backup.dump_estimate(params, info)
    assert estimate == expected
    assert "estimated at %d bytes" % expected in what and words in what and "database shop" in what
