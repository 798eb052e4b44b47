# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of backup_many, the concurrent backups of one phase: input checked before anything
runs, at most max_workers at once, every job run to its end, results in job order, failures named
with their database and reason, nothing that succeeded removed; and the free-space ledger that
concurrent backups share. make_backup itself is replaced by a stand-in here (the real one runs
against the lab's PostgreSQL in tests/integration/test_pg_backup.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import threading
import time

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _backup as backup


def job(db, dest, **extra):
    params = dict(db=db, dest=dest, container="pg-" + db, login_user="u", login_password="secret-pw", format="custom",
                  jobs=1, verify="toc", space_factor=1.0, timeout=60)
    params.update(extra)
    return dict(params=params)


class StandIn:
    """make_backup's stand-in: writes a file under a final name like a real backup, records how
    many ran at once, and fails for the databases in `failing` (a BackupError, or `other`)."""

    def __init__(self, failing=(), other=(), hold=0.05):
        self.failing = set(failing)
        self.other = set(other)
        self.hold = hold
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.finished = []
        self.spaces = set()

    def __call__(self, params, check_mode=False, cli=None, space=None):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.spaces.add(id(space))
        try:
            time.sleep(self.hold)
            if params["db"] in self.failing:
                raise backup.BackupError("pg_dump on u@container pg-%s/%s failed (rc=1): disk on fire"
                                         % (params["db"], params["db"]))
            if params["db"] in self.other:
                raise KeyError("surprise")
            path = os.path.join(params["dest"], "%s_20260101T000000Z.dump" % params["db"])
            with open(path, "w") as handle:
                handle.write("backup of %s" % params["db"])
            return dict(changed=True, path=path, database=params["db"], check_mode=check_mode, warnings=[])
        finally:
            with self.lock:
                self.running -= 1
                self.finished.append(params["db"])


@pytest.fixture
def stand_in(monkeypatch):
    def install(**kwargs):
        fake = StandIn(**kwargs)
        monkeypatch.setattr(backup, "make_backup", fake)
        return fake
    return install


@pytest.mark.parametrize("count, max_workers, expected_most", [(6, 4, 4), (3, 4, 3), (5, 1, 1), (1, 4, 1)])
def test_results_come_in_job_order_with_at_most_max_workers_at_once(tmp_path, stand_in, count, max_workers,
                                                                    expected_most):
    fake = stand_in(hold=0.1)
    names = ["db%d" % i for i in range(count)]
    results = backup.backup_many([job(n, str(tmp_path)) for n in names], max_workers=max_workers)
    assert [r["database"] for r in results] == names
    assert fake.most == expected_most
    assert len(fake.spaces) == 1 and id(None) not in fake.spaces, "every job shares one space ledger"


def test_check_mode_and_other_make_backup_arguments_reach_each_job(tmp_path, stand_in):
    stand_in()
    results = backup.backup_many([dict(job("a", str(tmp_path)), check_mode=True), job("b", str(tmp_path))])
    assert [r["check_mode"] for r in results] == [True, False]


def test_no_jobs_is_no_backup(stand_in):
    fake = stand_in()
    assert backup.backup_many([]) == []
    assert fake.finished == []


def test_a_failure_waits_for_every_other_job_keeps_their_backups_and_names_each_failed_database(
        tmp_path, stand_in):
    fake = stand_in(failing={"ar", "billing"}, other={"crm"})
    names = ["ar", "payments", "billing", "crm", "auth", "ledger"]
    with pytest.raises(backup.BackupManyError) as failure:
        backup.backup_many([job(n, str(tmp_path)) for n in names], max_workers=2)
    error = failure.value
    assert sorted(fake.finished) == sorted(names), "every job ran to its end, also those started after a failure"
    message = str(error)
    assert message.startswith("3 of 6 backups failed: ")
    assert "ar (u@container pg-ar/ar): pg_dump on u@container pg-ar/ar failed (rc=1): disk on fire" in message
    assert "billing (u@container pg-billing/billing): pg_dump" in message
    assert "crm (u@container pg-crm/crm): KeyError: 'surprise'" in message
    assert [(index, db) for index, db, _why in error.failures] == [(0, "ar"), (2, "billing"), (3, "crm")]
    assert [r and r["database"] for r in error.results] == [None, "payments", None, None, "auth", "ledger"]
    for result in error.results:
        if result:
            assert os.path.exists(result["path"]), "a backup that succeeded is kept"
            assert result["path"] in message
    assert "secret-pw" not in message
    assert isinstance(error, backup.BackupError)


def test_when_every_job_fails_the_error_says_none_succeeded(tmp_path, stand_in):
    stand_in(failing={"a", "b"})
    with pytest.raises(backup.BackupManyError, match=r"^2 of 2 backups failed: .*No backup succeeded$"):
        backup.backup_many([job("a", str(tmp_path)), job("b", str(tmp_path))])


@pytest.mark.parametrize("jobs, max_workers, message", [
    ([job("ar", "/b/x"), job("ar", "/b/x/")], 4, "jobs 0 and 1 both back up database ar into /b/x/"),
    ([job("ar", "/b/x"), job("ar", "/b/y", copy_to="/b/x")], 4, "jobs 0 and 1 both back up database ar into /b/x"),
    ([job("ar", "/b/x"), job("ar", "/b/y")], 0, "max_workers must be between 1 and 32, got 0"),
    ([job("ar", "/b/x")], 33, "max_workers must be between 1 and 32, got 33"),
    ([job("ar", "/b/x"), job("pay", "/b/x", jobs=2)], 4, "job 1 (database pay): jobs > 1 needs format: directory"),
    ([job("ar", "relative")], 4, "job 0 (database ar): dest must be an absolute path"),
    ([dict(params=dict(dest="/b/x"))], 4, "job 0: db is required"),
    ([dict(job("ar", "/b/x"), timeout=3)], 4, "job 0: unknown make_backup argument(s) timeout"),
    ([job("ar", "/b/x")["params"]], 4, "job 0: expected a dict with the make_backup keyword arguments"),
    ({"ar": job("ar", "/b/x")}, 4, "jobs must be a list"),
])
def test_bad_jobs_are_refused_before_any_backup_runs(stand_in, jobs, max_workers, message):
    fake = stand_in()
    with pytest.raises(backup.BackupError, match=re.escape(message)):
        backup.backup_many(jobs, max_workers=max_workers)
    assert fake.finished == []


def test_the_same_database_name_in_different_directories_is_fine(tmp_path, stand_in):
    stand_in()
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    results = backup.backup_many([job("app", str(first)), job("app", str(second))])
    assert [os.path.dirname(r["path"]) for r in results] == [str(first), str(second)]


# ------------------------------------------------------------------------------------------------
# the free-space ledger of backups running at the same time
# ------------------------------------------------------------------------------------------------
def test_space_claims_on_one_file_system_count_each_other_until_released(tmp_path, monkeypatch):
    monkeypatch.setattr(backup, "free_bytes", lambda path: 1000)
    ledger = backup.SpaceLedger()
    first = ledger.claim(str(tmp_path), 600, "dest", "the dump of database a")
    with pytest.raises(backup.BackupError, match=r"dest: not enough free space in %s: 1000 bytes free, 600 of them "
                       r"needed by backups running at the same time, the dump of database b needs about 500 bytes"
                       % tmp_path):
        ledger.claim(str(tmp_path), 500, "dest", "the dump of database b")
    second = ledger.claim(str(tmp_path), 400, "dest", "the dump of database c")
    ledger.release(first)
    ledger.release(second)
    ledger.release(ledger.claim(str(tmp_path), 1000, "dest", "the dump of database d"))


def test_without_a_ledger_the_space_check_is_the_plain_one(tmp_path, monkeypatch):
    monkeypatch.setattr(backup, "free_bytes", lambda path: 1000)
    assert backup.claim_space(None, str(tmp_path), 1000, "dest", "x") is None
    with pytest.raises(backup.BackupError, match="1000 bytes free, y needs about 1001 bytes"):
        backup.claim_space(None, str(tmp_path), 1001, "dest", "y")
    backup.release_space(None, None)
