"""Fault drills on the real lab: what happens to a deploy when the host, the network or the
controller fails under it. After each: nothing lost, one consistent live release running, no lock
left behind, and a message that says what happened.

- SSH to the host lost during a phase (the host's sshd and every session killed), then restored:
  `rollback.yml` converges to the live release.
- The host's disk (its state directory) full when a deploy starts: the deploy fails before any
  container changes, writes no half release, and releases its lock.
- A lock left by a controller that died on another machine: refused before its TTL, taken over
  (with a warning) after it.

The other fault drills live beside what they break: PostgreSQL killed during a backup and a backup
disk full (test_pg_backup), NATS stopped during a replay (test_events), the controller killed with
SIGKILL during phase 2 (test_deploy_flow), the Docker daemon restarted during a phase
(test_docker_restart_drill, run alone after the parallel suite), the images of a rollback's release
removed from the host (test_prune_drill). docs/reliability.md lists them all.
"""

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import ROOT, Stack, ansible_env, ansible_module, process_running, run, wait_until
from test_deploy_flow import fault_during_phase
from test_deploy_playbook import ANSIBLE, PLAYBOOK, ROLLBACK_PLAYBOOK, images, stack_vars

SSH_DIR = os.path.join(ROOT, ".lab", "ssh")
DRILL_SSH_PORT = 14022


def drill_stack(st, tag="v1"):
    """The platform phase of the lab stack (auth x2 behind its load balancer): enough to be caught
    in the middle of a phase, without the databases' start-up time."""
    values = stack_vars(st, tag=tag)
    values["vpsops_stack"]["phases"] = [p for p in values["vpsops_stack"]["phases"] if p["name"] == "platform"]
    return values


class SSHHost:
    """A second sshd on loopback for the lab host, that the drill may kill and start again without
    touching the lab's own (shared by every other test)."""

    def __init__(self, tmp, port):
        self.port, self.tmp = port, tmp
        self.conf = os.path.join(tmp, "sshd.conf")
        self.pidfile = os.path.join(tmp, "sshd.pid")
        with open(os.path.join(SSH_DIR, "sshd_main.conf")) as handle:
            lines = [line for line in handle.read().splitlines()
                     if not line.startswith(("ListenAddress", "Port", "PidFile"))]
        lines += ["ListenAddress 127.0.0.1", "Port %d" % port, "PidFile %s" % self.pidfile]
        with open(self.conf, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        os.chmod(self.conf, 0o600)
        with open(os.path.join(SSH_DIR, "ssh_host_ed25519_key.pub")) as handle:
            key = handle.read().split()
        self.known_hosts = os.path.join(tmp, "known_hosts")
        with open(self.known_hosts, "w") as handle:
            handle.write("[127.0.0.1]:%d %s %s\n" % (port, key[0], key[1]))
        self.inventory = os.path.join(tmp, "inventory.yml")
        with open(self.inventory, "w") as handle:
            handle.write(INVENTORY % dict(port=port, key=os.path.join(SSH_DIR, "id_ed25519"),
                                          known_hosts=self.known_hosts))

    def pid(self):
        try:
            with open(self.pidfile) as handle:
                pid = int(handle.read().strip())
        except (OSError, ValueError):
            return None
        return pid if process_running(pid) else None

    def start(self):
        run(["/usr/sbin/sshd", "-f", self.conf, "-E", os.path.join(self.tmp, "sshd.log")])
        wait_until("the drill's sshd listens", lambda: self.pid() is not None, timeout=10)

    def kill(self):
        """The host drops off the network: the listener and every session it serves die at once."""
        pid = self.pid()
        if pid:
            subprocess.run(["pkill", "-KILL", "-P", str(pid)], check=False)
            os.kill(pid, signal.SIGKILL)
        if os.path.exists(self.pidfile):
            os.unlink(self.pidfile)


INVENTORY = """---
vpsops_hosts:
  hosts:
    lab1:
      ansible_host: 127.0.0.1
      ansible_port: %(port)d
      ansible_user: root
      ansible_ssh_private_key_file: %(key)s
      ansible_ssh_common_args: >-
        -o UserKnownHostsFile=%(known_hosts)s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes
        -o ControlPath=none -o ServerAliveInterval=2 -o ServerAliveCountMax=2
      ansible_python_interpreter: /usr/bin/python3
"""


def drill_playbook(inventory, tmp_path, name, values, path=PLAYBOOK, background=False):
    vars_file = tmp_path / ("%s-vars.json" % name)
    vars_file.write_text(json.dumps(values))
    argv = [os.path.join(ANSIBLE, "ansible-playbook"), "-i", inventory, path, "-e", "@%s" % vars_file]
    if not background:
        return run(argv, check=False, env=ansible_env())
    log = open(tmp_path / ("%s.log" % name), "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=ansible_env(), cwd=ROOT,
                            start_new_session=True)
    proc.log_path = str(tmp_path / ("%s.log" % name))
    return proc


def store_info(st):
    rc, info = ansible_module("compose_release_info", {"stack": st.project})
    assert rc == 0, info
    return info


@pytest.fixture
def drill(lab, tmp_path):
    st = Stack("vpsops-itfd", 14000)
    state = "/var/lib/vpsops/%s" % st.project
    st.down()
    run(["rm", "-rf", state])
    yield st
    st.down()
    if os.path.ismount(state):
        run(["umount", "-l", state], check=False)
    run(["rm", "-rf", state])


def test_ssh_lost_during_a_phase_then_rollback_playbook_converges(drill, tmp_path):
    host = SSHHost(str(tmp_path), DRILL_SSH_PORT)
    host.start()
    try:
        first = drill_playbook(host.inventory, tmp_path, "v1", drill_stack(drill))
        assert first.returncode == 0, first.stdout[-3000:]
        good = images(drill.project)
        live = store_info(drill)["live"]

        deploy = drill_playbook(host.inventory, tmp_path, "v2", drill_stack(drill, "v2"), background=True)
        lost = fault_during_phase(deploy, host.kill, wait=180)
        assert deploy.returncode != 0
        assert "became unreachable during the phase step" in lost, lost[-3000:]
        assert "unreachable: nothing more could be done there" in lost, lost[-3000:]
        # The host was left mid-phase with its lock held by a run that is gone.
        assert store_info(drill)["lock"] is not None

        # The host comes back. rollback.yml reads the state there and converges to the live release.
        host.start()
        back = drill_playbook(host.inventory, tmp_path, "back", {"vpsops_stack": {"name": drill.project}},
                              path=ROLLBACK_PLAYBOOK)
        assert back.returncode == 0, back.stdout[-4000:]
        assert "took over the deploy lock (its holder is gone)" in back.stdout + back.stderr
        assert images(drill.project) == good
        info = store_info(drill)
        assert info["live"] == live and info["lock"] is None
        assert [r["status"] for r in info["releases"]][:2] == ["failed", "live"]
        # Every container of the project runs, and runs the live release's images.
        states = run(["docker", "ps", "-a", "--filter", "label=com.docker.compose.project=%s" % drill.project,
                      "--format", "{{.State}}"]).stdout.split()
        assert states and set(states) == {"running"}, states

        # And a deploy run again afterwards goes through.
        again = drill_playbook(host.inventory, tmp_path, "again", drill_stack(drill, "v2"))
        assert again.returncode == 0, again.stdout[-4000:]
        assert store_info(drill)["releases"][0]["status"] == "live"
    finally:
        host.kill()


def fill(path, leave_pages):
    """Fill the file system of `path` until only `leave_pages` pages of 4 KiB are free."""
    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize
    with open(os.path.join(path, "filler"), "wb") as handle:
        handle.write(b"\0" * max(free - leave_pages * 4096, 0))
    return os.statvfs(path).f_bavail * os.statvfs(path).f_frsize


def tree(path):
    """Every path under `path` with its size (what a failed run must not have added to)."""
    found = {}
    for base, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(base, name)
            found[os.path.relpath(full, path)] = os.lstat(full).st_size
    return found


def test_host_disk_full_when_a_deploy_starts_changes_nothing_and_frees_the_lock(drill, tmp_path):
    state = "/var/lib/vpsops/%s" % drill.project
    os.makedirs(state, mode=0o700)
    run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs-vpsops-drill", state])
    first = drill_playbook(os.path.join(ROOT, "inventories", "lab"), tmp_path, "v1", drill_stack(drill))
    assert first.returncode == 0, first.stdout[-3000:]
    good = images(drill.project)
    live = store_info(drill)["live"]

    left = fill(state, leave_pages=3)
    assert left <= 3 * 4096
    before = tree(state)
    full = drill_playbook(os.path.join(ROOT, "inventories", "lab"), tmp_path, "v2", drill_stack(drill, "v2"))
    out = full.stdout + full.stderr
    assert full.returncode != 0
    assert "No space left on device" in out, out[-4000:]
    assert "Traceback (most recent call last)" not in out
    # No container changed; the live release is still live; the lock is free.
    assert images(drill.project) == good
    os.unlink(os.path.join(state, "filler"))
    info = store_info(drill)
    assert info["live"] == live and info["lock"] is None
    # Nothing half-written stays behind: no release directory, temporary file or project file
    # (the project directory included: it shows what runs) that was not there, and the project
    # directory's files are the ones v1 left.
    after = tree(state)
    added = sorted(set(after) - set(before) - {"history.jsonl"})
    assert added == [], added
    project = dict((p, size) for p, size in before.items() if p.startswith("project/"))
    assert project and dict((p, after.get(p)) for p in project) == project

    # With space again, the same deploy goes through.
    again = drill_playbook(os.path.join(ROOT, "inventories", "lab"), tmp_path, "again", drill_stack(drill, "v2"))
    assert again.returncode == 0, again.stdout[-4000:]
    assert store_info(drill)["releases"][0]["status"] == "live"


def test_a_lock_left_on_another_controller_is_refused_until_its_ttl_then_taken_over(drill, tmp_path):
    inventory = os.path.join(ROOT, "inventories", "lab")
    # A deploy from another machine died holding the lock: its process cannot be checked from here.
    rc, took = ansible_module("deploy_lock", {"stack": drill.project, "owner": "ops@ctl-b:4242",
                                              "controller": "ctl-b", "pid": 4242, "ttl": 20})
    assert rc == 0, took
    refused = drill_playbook(inventory, tmp_path, "refused", dict(drill_stack(drill), lock_takeover_dead=True))
    assert refused.returncode != 0
    assert "cannot lock" in refused.stdout and "ops@ctl-b:4242" in refused.stdout, refused.stdout[-3000:]
    assert run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=%s" % drill.project]).stdout == ""
    assert store_info(drill)["lock"]["owner"] == "ops@ctl-b:4242"  # refused, and the holder's lock kept

    wait_until("the dead holder's TTL passes", lambda: time.time() - took["lock"]["heartbeat_epoch"] > 21,
               timeout=40, interval=1)
    taken = drill_playbook(inventory, tmp_path, "taken", drill_stack(drill))
    assert taken.returncode == 0, taken.stdout[-3000:]
    assert "took over the deploy lock (stale)" in taken.stdout + taken.stderr
    assert "ops@ctl-b:4242" in taken.stdout + taken.stderr
    info = store_info(drill)
    assert info["lock"] is None and info["releases"][0]["status"] == "live"
    with open("/var/lib/vpsops/%s/history.jsonl" % drill.project) as handle:
        assert '"lock_taken_over"' in handle.read()
