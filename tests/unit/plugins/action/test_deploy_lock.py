# -*- coding: utf-8 -*-
"""The controller side of deploy_lock: which lock holders count as gone."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import subprocess
import sys

from ansible_collections.vpsops.deploy.plugins.action import deploy_lock as action


def started(*argv):
    """A running child that has exec'd (its command line is its own)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"]
                            + list(argv), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    return proc


def finished_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    return proc.pid


def test_a_pid_that_no_longer_runs_is_gone():
    assert action.process_gone(finished_pid()) is True


def test_a_running_process_that_is_not_ansible_counts_as_gone_and_an_ansible_one_does_not():
    sleeper = started()
    named = started("ansible-playbook")
    try:
        assert action.process_gone(sleeper.pid) is True
        assert action.process_gone(named.pid) is False
    finally:
        for proc in (sleeper, named):
            proc.kill()
            proc.wait(10)


def test_only_a_lock_of_this_controller_whose_process_is_gone_has_a_dead_holder():
    here = socket.gethostname()
    gone = finished_pid()
    assert action.dead_holder({"owner": "run-1", "controller": here, "pid": gone}, here) == "run-1"
    assert action.dead_holder({"owner": "run-1", "controller": "elsewhere", "pid": gone}, here) is None
    assert action.dead_holder({"owner": "run-1", "controller": here, "pid": None}, here) is None
    assert action.dead_holder(None, here) is None
    alive = started("ansible-playbook")
    try:
        assert action.dead_holder({"owner": "run-1", "controller": here, "pid": alive.pid}, here) is None
    finally:
        alive.kill()
        alive.wait(10)
