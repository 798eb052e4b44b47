"""Drill: two controllers with one host name on one machine, as two containers (AWX execution nodes)
are. One holds a stack's lock from its own PID namespace (a real one: `unshare --pid`); the other
runs with `lock_takeover_dead: true` (what rollback.yml sets). The holder's pid means nothing (or
another process) in the second one's namespace, and the host name is the same: a takeover by host
name and pid took this live lock. The lock's recorded identity (machine id, boot id, PID namespace)
must keep it: the second run is refused naming the holder, and the holder releases its own lock.
"""

import json
import os
import subprocess

import pytest

from conftest import ROOT, ansible_env, run, wait_until
from test_deploy_playbook import ANSIBLE, INVENTORY

STACK = "vpsops-itlockns"

HOLDER = """---
- name: Hold the lock from another PID namespace until told to let go
  hosts: lab1
  gather_facts: false
  vars:
    lock_stack: %(stack)s
    lock_state_dir: %(state)s
    lock_ttl: 600
  tasks:
    - name: Take the lock
      ansible.builtin.include_role:
        name: vpsops.deploy.lock
    - name: Hold it
      ansible.builtin.wait_for:
        path: %(flag)s
        timeout: 180
    - name: Let go
      ansible.builtin.include_role:
        name: vpsops.deploy.lock
        tasks_from: release
"""

RESCUER = """---
- name: Take the lock, taking over a dead holder of this controller
  hosts: lab1
  gather_facts: false
  vars:
    lock_stack: %(stack)s
    lock_state_dir: %(state)s
    lock_takeover_dead: true
  tasks:
    - name: Take the lock
      ansible.builtin.include_role:
        name: vpsops.deploy.lock
    - name: Let go
      ansible.builtin.include_role:
        name: vpsops.deploy.lock
        tasks_from: release
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="unshare --pid needs root")
def test_a_live_lock_held_from_another_pid_namespace_with_the_same_host_name_is_not_taken_over(lab, tmp_path):
    state = str(tmp_path / "state")
    flag = str(tmp_path / "let-go")
    values = dict(stack=STACK, state=state, flag=flag)
    for name, text in (("holder.yml", HOLDER), ("rescuer.yml", RESCUER)):
        (tmp_path / name).write_text(text % values)
    lock_path = os.path.join(state, "lock.json")
    env = ansible_env()
    # Its own SSH control sockets: a master started in the namespace dies with it.
    env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(tmp_path / "cp")
    log = open(str(tmp_path / "holder.log"), "w")
    holder = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc",
                               os.path.join(ANSIBLE, "ansible-playbook"), "-i", INVENTORY, str(tmp_path / "holder.yml")],
                              stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    try:
        lock = wait_until("the holder in its own PID namespace has the lock",
                          lambda: os.path.exists(lock_path) and json.load(open(lock_path)), timeout=120)
        mine = os.readlink("/proc/self/ns/pid")
        assert lock["identity"]["pid_ns"] != mine and lock["controller"] == os.uname()[1]
        assert lock["pid"] == lock["identity"]["pid"]
        # Its pid here is no ansible-playbook (a check of host name and pid alone calls it gone).
        cmdline = "/proc/%d/cmdline" % lock["pid"]
        with open(cmdline if os.path.exists(cmdline) else os.devnull, "rb") as handle:
            assert b"ansible" not in handle.read()

        rescuer = run([os.path.join(ANSIBLE, "ansible-playbook"), "-i", INVENTORY, str(tmp_path / "rescuer.yml")],
                      check=False, env=ansible_env())
        out = rescuer.stdout + rescuer.stderr
        assert rescuer.returncode != 0, out[-3000:]
        assert "cannot lock" in out and lock["owner"] in out, out[-3000:]
        assert "took over" not in out
        with open(lock_path) as handle:
            assert json.load(handle)["owner"] == lock["owner"]  # still the holder's

        open(flag, "w").close()
        assert holder.wait(120) == 0, open(str(tmp_path / "holder.log")).read()[-3000:]
        assert not os.path.exists(lock_path)  # the holder let go of its own lock
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, 9)
            holder.wait(30)
        log.close()
