# -*- coding: utf-8 -*-
"""Which lock holders count as gone (deploy_lock and deploy_host's takeover_dead): only a run of this
machine, this boot and this PID namespace whose process no longer exists. The host name proves
nothing: two containers (AWX execution nodes) can share it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.vpsops.deploy.plugins.action import deploy_lock as action
from ansible_collections.vpsops.deploy.plugins.module_utils import _releases as rel

IDENTITY = ("import json, os, sys, time; sys.path[:0] = %r\n"
            "from ansible_collections.vpsops.deploy.plugins.module_utils import _releases as r\n"
            "print(json.dumps(r.controller_identity(os.getpid())), flush=True)\n"
            "sys.stdin.read()\n" % (sys.path,))


def started(*prefix):
    """A running python (under `prefix`, e.g. unshare) that prints its own controller_identity and
    waits for its stdin to close. Returns (process, its identity)."""
    proc = subprocess.Popen(list(prefix) + [sys.executable, "-c", IDENTITY], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())


def stop(proc):
    proc.stdin.close()
    proc.wait(10)


def lock_of(identity, owner="run-1"):
    return {"owner": owner, "controller": "ctl", "pid": identity["pid"], "identity": identity}


def here():
    return rel.controller_identity(os.getpid())


def test_a_run_of_this_namespace_whose_process_is_gone_is_dead_and_a_running_one_is_not():
    proc, theirs = started()
    assert rel.dead_holder_here(lock_of(theirs), here()) is None  # it runs
    assert action.dead_holder(lock_of(theirs), here()) is None
    stop(proc)
    assert rel.dead_holder_here(lock_of(theirs), here()) == "run-1"
    assert action.dead_holder(lock_of(theirs), here()) == "run-1"


def test_a_pid_reused_by_another_process_counts_as_gone():
    # The process that now has the holder's pid started at another time: the holder is gone.
    mine = here()
    reused = dict(mine, pid=os.getpid(), start=mine["start"] - 1, nonce="other")
    assert rel.dead_holder_here(lock_of(reused), dict(mine, pid=1, start=0, nonce="x")) == "run-1"
    assert rel.dead_holder_here(lock_of(dict(mine, nonce="other")), dict(mine, pid=1, start=0)) is None


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/unshare"),
                    reason="needs root and unshare to make a PID namespace")
def test_a_live_run_in_another_pid_namespace_with_the_same_host_name_is_never_taken_over():
    """Two containerised controllers on one machine with one host name (AWX execution nodes): the
    other's lock must survive even once its pid means nothing (or another process) here."""
    # sh is the namespace's pid 1, the python holding the "lock" its pid 2.
    proc, theirs = started("unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", '"$@"; true', "sh")
    try:
        mine = here()
        assert theirs["machine_id"] == mine["machine_id"] and theirs["boot_id"] == mine["boot_id"]
        assert theirs["pid_ns"] != mine["pid_ns"]
        # Its pid in its own namespace is not that process here: a pid check alone would call it gone.
        assert theirs["pid"] > 1 and rel.process_start(theirs["pid"]) != theirs["start"]
        assert rel.dead_holder_here(lock_of(theirs), mine) is None
        # Even with equal host names in the lock: the identity decides.
        assert action.dead_holder(dict(lock_of(theirs), controller=os.uname()[1]), mine) is None
    finally:
        stop(proc)


@pytest.mark.parametrize("change", [
    {"machine_id": "0" * 32},                     # another machine (or a cloned VM's boot below)
    {"boot_id": "00000000-0000-0000-0000-000000000000"},  # before a reboot, or another machine
    {"pid_ns": "pid:[1]"},                        # another container on this machine
])
def test_a_holder_of_another_machine_boot_or_namespace_is_never_proven_dead(change):
    proc, theirs = started()
    stop(proc)
    assert rel.dead_holder_here(lock_of(theirs), here()) == "run-1"  # gone, when it is ours
    assert rel.dead_holder_here(lock_of(dict(theirs, **change)), here()) is None


@pytest.mark.parametrize("lock", [
    None,
    {"owner": "run-1", "controller": "ctl", "pid": 4242},              # no identity: an older version
    {"owner": "run-1", "identity": "not a mapping"},
    {"owner": "", "identity": {}},
])
def test_a_lock_without_a_usable_identity_is_never_taken_over_as_dead(lock):
    assert rel.dead_holder_here(lock, here()) is None


def test_this_very_run_is_not_its_own_dead_holder():
    mine = here()
    assert rel.dead_holder_here(lock_of(mine), mine) is None


def test_an_identity_without_a_machine_id_is_never_matched():
    mine = dict(here(), machine_id=None)
    proc, theirs = started()
    stop(proc)
    assert rel.dead_holder_here(lock_of(dict(theirs, machine_id=None)), mine) is None


def test_the_nonce_names_one_process_and_the_owner_carries_it():
    mine = here()
    assert rel.controller_identity(os.getpid())["nonce"] == mine["nonce"]  # the same run: every worker agrees
    proc, theirs = started()
    stop(proc)
    assert theirs["nonce"] != mine["nonce"]
    owner = rel.run_owner_name("ops", "awx-ee", mine)
    assert owner == "ops@awx-ee:run-%d-%s" % (os.getpid(), mine["nonce"][:8])
    assert rel.run_owner_name("ops", "awx-ee", mine, job=42) == "ops@awx-ee:42-%s" % mine["nonce"][:8]
    assert rel.run_owner_name("ops", "awx-ee", theirs, job=42) != rel.run_owner_name("ops", "awx-ee", mine, job=42)


@pytest.mark.parametrize("files,expected", [
    ({"etc": "3D1219C7C4C5404AAA1F6D2A48ADFDA4\n", "dbus": "ffffffffffffffffffffffffffffffff"},
     "3d1219c7c4c5404aaa1f6d2a48adfda4"),
    ({"etc": "", "dbus": "ffffffffffffffffffffffffffffffff\n"}, "f" * 32),          # an empty /etc/machine-id
    ({"etc": "uninitialized\n"}, "boot-2bee902d-7526-4727-bce2-6be71605c04d"),      # no id: the boot id
    ({}, "boot-2bee902d-7526-4727-bce2-6be71605c04d"),
    ({"boot": None}, None),                                                          # nothing to go by
])
def test_the_machine_id_comes_from_systemd_or_dbus_else_the_boot_id(tmp_path, files, expected):
    paths = {}
    for name in ("etc", "dbus", "boot"):
        paths[name] = str(tmp_path / name)
        text = files.get(name, "2bee902d-7526-4727-bce2-6be71605c04d\n" if name == "boot" else None)
        if text is not None:
            with open(paths[name], "w") as handle:
                handle.write(text)
    assert rel.machine_id((paths["etc"], paths["dbus"]), paths["boot"]) == expected


def test_process_start_reads_a_fake_proc_and_tells_gone_from_unreadable(tmp_path):
    os.makedirs(str(tmp_path / "42"))
    with open(str(tmp_path / "42" / "stat"), "w") as handle:
        handle.write("42 (ansible-play (x)) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 0 0")
    assert rel.process_start(42, str(tmp_path)) == 987654
    assert rel.process_start(43, str(tmp_path)) is None
    assert rel.process_start("x", str(tmp_path)) is False
