"""A deploy on three hosts when one of them fails in a way a rescue cannot handle: the canary becomes
unreachable, a later host becomes unreachable, the automatic rollback itself fails, and a deploy
outlives its lock's TTL while a second controller starts. In each: every reachable lock released,
the audit log and the webhook say what failed, every host this run changed rolled back, and the
message names each host and what was done.

Each host is a sshd of its own on loopback (the drill may kill it) in front of the lab's Docker,
with a stack of its own (project, ports, state directory)."""

import json
import os
import re
import secrets
import time

import pytest

from conftest import ROOT, Stack, ansible_module, http_json, run, wait_until
from test_deploy_flow import output
from test_deploy_playbook import images, stack_vars
from test_fault_drills import SSH_DIR, SSHHost, drill_playbook, store_info
from test_slo_notify import receiving, webhook

RECEIVER_PORT = 19991
HOSTS = ("m1", "m2", "m3")
# Port ranges no other test module uses (test_ops_playbooks has 25000, the permissions drill 26000).
PORTS = {"m1": 24000, "m2": 35000, "m3": 36000}
SSH_PORTS = {"m1": 14041, "m2": 14042, "m3": 14043}


def host_vars(st, tag="v1", **env):
    values = stack_vars(st, tag=tag)
    stack = values["vpsops_stack"]
    # The platform phase (auth x2 behind its load balancer): enough to be caught in the middle of
    # a phase, without the databases' start-up time.
    stack["phases"] = [p for p in stack["phases"] if p["name"] == "platform"]
    stack["env"].update(env)
    return stack


class Fleet:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.stacks = dict((h, Stack("vpsops-itm%s" % h[1], PORTS[h])) for h in HOSTS)
        self.ssh = {}
        for host in HOSTS:
            directory = tmp_path / ("ssh-" + host)
            directory.mkdir()
            self.ssh[host] = SSHHost(str(directory), SSH_PORTS[host])
        self.known_hosts = str(tmp_path / "known_hosts")
        with open(os.path.join(SSH_DIR, "ssh_host_ed25519_key.pub")) as handle:
            key = handle.read().split()
        with open(self.known_hosts, "w") as handle:
            for host in HOSTS:
                handle.write("[127.0.0.1]:%d %s %s\n" % (SSH_PORTS[host], key[0], key[1]))

    def inventory(self, name, stacks):
        hosts = {}
        for host in HOSTS:
            hosts[host] = {
                "ansible_host": "127.0.0.1", "ansible_port": SSH_PORTS[host], "ansible_user": "root",
                "ansible_ssh_private_key_file": os.path.join(SSH_DIR, "id_ed25519"),
                "ansible_ssh_common_args": ("-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes "
                                            "-o IdentitiesOnly=yes -o ControlPath=none -o ConnectTimeout=5 "
                                            "-o ServerAliveInterval=2 -o ServerAliveCountMax=2" % self.known_hosts),
                "ansible_python_interpreter": "/usr/bin/python3",
                "vpsops_stack": stacks[host],
            }
        path = self.tmp / ("%s-inventory.json" % name)
        path.write_text(json.dumps({"vpsops_hosts": {"hosts": hosts}}))
        return str(path)

    def clean(self):
        for st in self.stacks.values():
            st.down()
            run(["rm", "-rf", "/var/lib/vpsops/%s" % st.project])


@pytest.fixture
def fleet(lab, tmp_path, monkeypatch):
    found = Fleet(tmp_path)
    found.clean()
    for ssh in found.ssh.values():
        ssh.start()
    # The controller's audit log of these deploys, and of them only.
    monkeypatch.setenv("VPSOPS_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    found.audit_log = str(tmp_path / "audit.jsonl")
    yield found
    for ssh in found.ssh.values():
        ssh.kill()
    found.clean()


@pytest.fixture
def receiver():
    yield from receiving(RECEIVER_PORT)


def deploy(fleet, name, stacks, extra=None, background=False):
    return drill_playbook(fleet.inventory(name, stacks), fleet.tmp, name, dict(extra or {}), background=background)


def audit_events(fleet):
    """The outcome of the last deploy per host, as the controller's audit log has it."""
    with open(fleet.audit_log) as handle:
        events = [json.loads(line) for line in handle if line.strip()]
    return dict((e["host"], e["event"]) for e in events
                if e["event"].startswith("deploy_") and e["event"] != "deploy_started")


def first_release(fleet):
    """Every host on v1 (the release a failed v2 must come back to)."""
    done = deploy(fleet, "v1", dict((h, host_vars(st)) for h, st in fleet.stacks.items()))
    assert done.returncode == 0, done.stdout[-4000:]
    return dict((h, store_info(st)["live"]) for h, st in fleet.stacks.items()), \
        dict((h, images(st.project)) for h, st in fleet.stacks.items())


def wait_for_phase(proc, host):
    """Until `host` has started its phase platform (its start reported), then a second into its `up`."""
    def started():
        return "%s: Phase platform: services" % host in output(proc) or proc.poll() is not None

    wait_until("%s enters its phase platform" % host, started, timeout=300, interval=0.2)
    assert proc.poll() is None, output(proc)[-3000:]
    time.sleep(1)


def finish(proc, timeout=600):
    try:
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return output(proc)


def assert_back_on_v1(fleet, hosts, live, good):
    for host in hosts:
        st = fleet.stacks[host]
        assert images(st.project) == good[host], host
        info = store_info(st)
        assert info["live"] == live[host], (host, info)
        assert info["lock"] is None, (host, info["lock"])
        assert http_json(st.url("AUTH_PORT"))[1]["release"] == "v1"


def test_the_canary_unreachable_leaves_the_others_untouched_and_unlocked(fleet, tmp_path, receiver):
    live, good = first_release(fleet)
    token = "tok" + secrets.token_hex(12)
    stacks = dict((h, host_vars(st, tag="v2")) for h, st in fleet.stacks.items())
    proc = deploy(fleet, "v2", stacks, {"vpsops_notify_url": webhook(token, RECEIVER_PORT)}, background=True)
    wait_for_phase(proc, "m1")
    fleet.ssh["m1"].kill()
    out = finish(proc)
    assert proc.returncode != 0
    assert "m1 failed at" in out and "unreachable" in out, out[-4000:]
    assert "m2: not deployed (another host failed)" in out and "m3: not deployed (another host failed)" in out
    assert token not in out
    # The two other hosts never changed, and their locks are free.
    assert_back_on_v1(fleet, ("m2", "m3"), live, good)
    # The audit log and the webhook say what failed.
    assert audit_events(fleet) == {"m1": "deploy_failed", "m2": "deploy_skipped", "m3": "deploy_skipped"}
    assert len(receiver.posts) == 1, receiver.posts
    posted = json.loads(receiver.posts[0]["raw"])
    assert posted["event"] == "deploy_failed" and "m1 failed at" in posted["message"]
    # Once the canary is back, rollback.yml converges it to the live release.
    fleet.ssh["m1"].start()
    back = drill_playbook(fleet.inventory("back", stacks), tmp_path, "back",
                          {"vpsops_target": "m1", "lock_takeover_dead": True},
                          path=os.path.join(ROOT, "playbooks", "rollback.yml"))
    assert back.returncode == 0, back.stdout[-4000:]
    assert_back_on_v1(fleet, ("m1",), live, good)


def test_a_later_host_unreachable_rolls_back_every_host_this_run_changed(fleet, tmp_path, receiver):
    live, good = first_release(fleet)
    stacks = dict((h, host_vars(st, tag="v2")) for h, st in fleet.stacks.items())
    proc = deploy(fleet, "v2", stacks, {"vpsops_notify_url": webhook("x", RECEIVER_PORT)}, background=True)
    wait_for_phase(proc, "m2")
    fleet.ssh["m2"].kill()
    out = finish(proc)
    assert proc.returncode != 0
    assert "m2 failed at" in out and "unreachable" in out, out[-4000:]
    assert "m1: deployed" in out and "then rolled back to %s because m2 failed" % live["m1"] in out, out[-4000:]
    # The canary went live on v2, then came back; m3 ran beside m2 and came back too.
    assert_back_on_v1(fleet, ("m1", "m3"), live, good)
    assert store_info(fleet.stacks["m1"])["releases"][0]["status"] == "rolled_back"  # it went live, then back
    events = audit_events(fleet)
    assert events["m1"] == "deploy_rolled_back" and events["m2"] == "deploy_failed", events
    posted = json.loads(receiver.posts[0]["raw"])
    assert posted["event"] == "deploy_failed" and "m1: deployed" in posted["message"]
    # The project directory of a rolled-back host shows the live release, not v2.
    with open("/var/lib/vpsops/%s/project/.env" % fleet.stacks["m1"].project) as handle:
        assert "RELEASE_TAG='v1'" in handle.read()


def test_a_failed_automatic_rollback_is_reported_and_every_lock_is_released(fleet, tmp_path, receiver):
    live, good = first_release(fleet)
    stacks = dict((h, host_vars(st, tag="v2")) for h, st in fleet.stacks.items())
    stacks["m1"] = host_vars(fleet.stacks["m1"], tag="v2", AUTH_TAG="v3-unhealthy")
    extra = {"vpsops_notify_url": webhook("y", RECEIVER_PORT), "deploy_phase_timeout": 20}
    proc = deploy(fleet, "v3", stacks, extra, background=True)
    wait_for_phase(proc, "m1")
    # The live release of the canary is damaged while its broken release deploys: the automatic
    # rollback that follows is refused.
    damaged = "/var/lib/vpsops/%s/releases/%s/docker-compose.platform.yml" % (fleet.stacks["m1"].project, live["m1"])
    with open(damaged, "a") as handle:
        handle.write("# changed by hand\n")
    out = finish(proc)
    assert proc.returncode != 0
    assert "m1 failed at Bring up the services of the phase (backups, migration, rollout, up, gate) platform" in out, out[-4000:]
    assert "the automatic rollback to %s failed too" % live["m1"] in out, out[-4000:]
    assert "run rollback.yml" in out
    assert "m2: not deployed (another host failed)" in out
    for host in HOSTS:
        assert store_info(fleet.stacks[host])["lock"] is None, host
    assert_back_on_v1(fleet, ("m2", "m3"), live, good)
    posted = json.loads(receiver.posts[0]["raw"])
    assert posted["event"] == "deploy_failed" and "failed too" in posted["message"]
    assert audit_events(fleet)["m1"] == "deploy_failed"


def test_a_deploy_that_outlives_its_lock_ttl_keeps_its_lock_against_a_second_controller(fleet, tmp_path):
    first_release(fleet)
    stacks = dict((h, host_vars(st, tag="v2")) for h, st in fleet.stacks.items())
    # A TTL of 10 s and a watch window of 25 s: without the heartbeat the lock would be stale
    # long before the deploy ends.
    proc = deploy(fleet, "long", stacks, {"lock_ttl": 10, "vpsops_watch_seconds": 25}, background=True)
    wait_until("the canary watches", lambda: "Smoke tests, SLO gate, final gate and watch window" in output(proc)
               or proc.poll() is not None, timeout=300, interval=0.2)
    assert proc.poll() is None, output(proc)[-3000:]
    time.sleep(12)  # the deploy outlives its TTL
    # A second controller (another run) is refused, naming the holder ...
    second = drill_playbook(fleet.inventory("second", stacks), tmp_path, "second",
                            {"vpsops_target": "m1", "lock_takeover_dead": True})
    assert second.returncode != 0
    assert "cannot lock" in second.stdout, second.stdout[-3000:]
    # ... and so is a module that changes the stack without the lock.
    rc, refused = ansible_module("compose_rollback", {"stack": fleet.stacks["m1"].project, "to": "previous"})
    assert rc != 0 and "refused: stack %s is locked by" % fleet.stacks["m1"].project in refused["msg"], refused
    out = finish(proc)
    assert proc.returncode == 0, out[-4000:]
    for host in HOSTS:
        info = store_info(fleet.stacks[host])
        assert info["lock"] is None and info["releases"][0]["status"] == "live", (host, info)
        assert http_json(fleet.stacks[host].url("AUTH_PORT"))[1]["release"] == "v2"


def recap_failed(out):
    """{host: failed count} of the play recap."""
    return dict((m.group(1), int(m.group(2))) for m in re.finditer(r"^(m\d)\s+:.*?failed=(\d+)", out, re.M))


def test_within_the_failure_budget_the_failed_host_alone_is_rolled_back_and_the_others_stay_live(fleet, receiver):
    live, good = first_release(fleet)
    stacks = dict((h, host_vars(st, tag="v2")) for h, st in fleet.stacks.items())
    stacks["m3"] = host_vars(fleet.stacks["m3"], tag="v2", AUTH_TAG="v3-unhealthy")
    # The waves: m1 alone, then m2 and m3. One failed host of two is 50 %: not more than the budget.
    extra = {"vpsops_notify_url": webhook("z", RECEIVER_PORT), "deploy_phase_timeout": 20,
             "vpsops_max_fail_percentage": 50}
    done = deploy(fleet, "budget", stacks, extra)
    out = done.stdout
    assert done.returncode != 0, out[-4000:]
    assert "partly failed: release live on 2 of 3 hosts" in out, out[-4000:]
    assert "m3 failed at Bring up the services of the phase" in out and \
        "rolled back to the live release %s" % live["m3"] in out, out[-4000:]
    assert "m3 failed within vpsops_max_fail_percentage 50 %" in out
    # Only the failed host fails the play; the others are live on v2, their locks released.
    assert recap_failed(out) == {"m1": 0, "m2": 0, "m3": 1}, out[-2000:]
    for host in ("m1", "m2"):
        st = fleet.stacks[host]
        info = store_info(st)
        assert info["live"] != live[host] and info["releases"][0]["status"] == "live" and info["lock"] is None
        assert http_json(st.url("AUTH_PORT"))[1]["release"] == "v2"
    assert_back_on_v1(fleet, ("m3",), live, good)
    assert store_info(fleet.stacks["m3"])["releases"][0]["status"] == "failed"
    with open(fleet.audit_log) as handle:
        lines = [json.loads(line) for line in handle if line.strip()]
    outcome = dict((e["host"], (e["event"], e["data"]["result"], e["status"])) for e in lines
                   if e["event"] != "deploy_started" and e["event"].startswith("deploy_"))
    assert outcome == {"m1": ("deploy_succeeded", "deployed", "partial"), "m2": ("deploy_succeeded", "deployed", "partial"),
                       "m3": ("deploy_failed", "failed_rolled_back", "partial")}, outcome
    posted = json.loads(receiver.posts[-1]["raw"])
    assert posted["event"] == "deploy_partial" and "m3 failed within" in posted["message"]


@pytest.mark.parametrize("extra, message", [
    ({"vpsops_max_fail_percentage": "lots"}, "vpsops_max_fail_percentage must be a percentage from 0 to 100"),
    ({"vpsops_max_fail_percentage": 120}, "vpsops_max_fail_percentage must be a percentage from 0 to 100"),
    ({"vpsops_serial": [1, "none"]}, "vpsops_serial must be a number of hosts (1 or more), a percentage"),
])
def test_a_wrong_wave_option_fails_before_any_host_is_touched(fleet, extra, message):
    done = deploy(fleet, "wrong", dict((h, host_vars(st, tag="v2")) for h, st in fleet.stacks.items()), extra)
    assert done.returncode != 0 and message in done.stdout, done.stdout[-3000:]
    for st in fleet.stacks.values():
        assert not os.path.exists("/var/lib/vpsops/%s" % st.project)
