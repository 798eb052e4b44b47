"""The fleet drill: 20 lab hosts, each a host of its own (network namespace, sshd, Docker daemon,
/var/lib/vpsops), the tiny stack of fleet.py on each (two busybox httpd services), deployed with
playbooks/deploy.yml in waves (vpsops_serial [1, 5, '100%']: fl1 alone, then fl2-fl6, then the
14 others) with vpsops_max_fail_percentage 10.

  1. v1, then v2 to all 20 in waves: every host live, each wave in its turn.
  2. v3, where fl4's release fails in the second wave: 1 failed host of 5 is 20 %, more than 10 %.
     The third wave is not started, every host this run changed is rolled back to v2 (fl1 had gone
     live, fl2, fl3, fl5, fl6 were deployed beside fl4), fl4 is rolled back, fl7-fl20 are not
     touched; the message and the audit log name every host and what happened to it.
  3. rollback.yml on all 20: every host back to v1. status.yml on all 20: v1 live, no lock, healthy.

It adds 20 hosts and runs five playbooks on them, CPU-bound on this 2-core machine (about 7 minutes
alone): it runs in the `alone` gate of lab/gates.py, after the parallel suite, by itself. Stack
`fleetdrill` (ports 8080 and 8081 inside each host, nothing on this machine's loopback), hosts
fl1-fl20, all removed at the end."""

import json
import os
import re
import time

import pytest

from fleet import LabFleet, audit_lines, outcomes, tiny_source, tiny_stack

pytestmark = pytest.mark.alone

NAMES = ["fl%d" % n for n in range(1, 21)]
STACK = "fleetdrill"
WAVES = [["fl1"], NAMES[1:6], NAMES[6:]]
OPTIONS = {"vpsops_serial": [1, 5, "100%"], "vpsops_max_fail_percentage": 10, "deploy_phase_timeout": 120}


class Drill:
    def __init__(self, tmp):
        self.tmp = str(tmp)
        self.fleet = LabFleet(NAMES, tmp)
        self.source = tiny_source(os.path.join(self.tmp, "stack"))
        self.runs = {}  # name -> (process, audit log, seconds)
        self.live = {}  # release tag -> {host: release id}

    def deploy(self, name, release, failing=()):
        stacks = dict((host, tiny_stack(STACK, self.source, release, fail=3 if host in failing else None))
                      for host in NAMES)
        return self.play(name, "deploy.yml", stacks, extra=dict(OPTIONS, release_tag=release))

    def play(self, name, playbook, stacks=None, extra=None):
        stacks = stacks or dict((host, tiny_stack(STACK, self.source, "v1")) for host in NAMES)
        inventory, _content = self.fleet.inventory(name, stacks)
        audit_log = os.path.join(self.tmp, "audit-%s.jsonl" % name)
        started = time.monotonic()
        proc = self.fleet.playbook(playbook, inventory, audit_log, extra=extra)
        self.runs[name] = (proc, audit_log, time.monotonic() - started)
        print("%s: rc %d in %.0f s" % (name, proc.returncode, self.runs[name][2]))
        return proc

    def stores(self):
        return dict((host, self.fleet.store(host, STACK)) for host in NAMES)

    def serving(self):
        return dict((host, self.fleet.serving(host)) for host in NAMES)


@pytest.fixture(scope="module")
def drill(lab, tmp_path_factory):
    found = Drill(tmp_path_factory.mktemp("fleet-drill"))
    found.fleet.remove()  # what an interrupted run left
    started = time.monotonic()
    found.fleet.add()
    print("20 lab hosts added in %.0f s" % (time.monotonic() - started))
    try:
        yield found
    finally:
        found.fleet.remove()
        print("runs: %s" % ", ".join("%s %.0f s" % (name, run[2]) for name, run in found.runs.items()))


def everywhere(release):
    return dict((host, {"web": release, "api": release}) for host in NAMES)


def test_v1_then_v2_reach_every_host_wave_by_wave(drill):
    for release in ("v1", "v2"):
        proc = drill.deploy(release, release)
        assert proc.returncode == 0, proc.stdout[-5000:]
        stores = drill.stores()
        assert all(s["lock"] is False and s["releases"][s["live"]] == "live" for s in stores.values()), stores
        drill.live[release] = dict((host, s["live"]) for host, s in stores.items())
        assert drill.serving() == everywhere(release)
        # The canary alone, then five, then fourteen: each wave's deploy play, in its turn.
        batches = [part.split("PLAY [", 1)[0] for part in
                   proc.stdout.split("PLAY [Deploy phase by phase, the first host alone (canary), then the others]")[1:]]
        assert [sorted(set(re.findall(r"\[(fl\d+)\]", b))) for b in batches] == [sorted(w) for w in WAVES], \
            proc.stdout[-3000:]
        lines = audit_lines(drill.runs[release][1])
        waves = dict((e["host"], e["data"]["wave"]) for e in lines if e["event"] == "deploy_succeeded")
        assert waves == dict((host, number) for number, wave in enumerate(WAVES, 1) for host in wave), waves
        assert [e["host"] for e in lines if e["event"] == "deploy_started"] == NAMES


def test_a_host_failing_beyond_the_budget_stops_the_waves_and_rolls_back_every_changed_host(drill):
    assert drill.live.get("v2"), "v2 was not deployed"
    before = dict((host, drill.fleet.containers(host, STACK)) for host in NAMES)
    proc = drill.deploy("v3", "v3", failing=("fl4",))
    out = proc.stdout
    assert proc.returncode != 0, out[-5000:]
    # Every host back on v2, its lock released; fl4's and the others' v3 releases marked as what they were.
    stores = drill.stores()
    assert dict((h, s["live"]) for h, s in stores.items()) == drill.live["v2"]
    assert not any(s["lock"] for s in stores.values()), stores
    assert drill.serving() == everywhere("v2")
    newest = dict((h, sorted(s["releases"].items())[-1]) for h, s in stores.items())
    assert newest["fl1"][1] == "rolled_back", newest["fl1"]  # it had gone live
    assert newest["fl4"][1] == "failed"
    # The third wave never started: its hosts' containers are those of v2 still; the first two waves' were
    # recreated (v3, then v2 again).
    after = dict((host, drill.fleet.containers(host, STACK)) for host in NAMES)
    assert [h for h in NAMES if after[h] == before[h]] == NAMES[6:], (before, after)
    # The message names every host and what happened to it.
    message = out[out.index("Deploy of %s failed." % STACK):]
    assert "fl4 failed at Bring up the services of the phase (backups, migration, rollout, up, gate) app" in message
    assert "Wave 2 of 3 had 1 failed host(s) of 5, more than vpsops_max_fail_percentage 10 % allows" in message
    assert ("By host: failed and rolled back: fl4; rolled back because another host failed: fl1, fl2, fl3, fl5, fl6; "
            "not started: %s." % ", ".join(NAMES[6:])) in message, message[-2000:]
    assert "fl1: deployed %s, then rolled back to %s because fl4 failed" % (newest["fl1"][0], drill.live["v2"]["fl1"]) \
        in message
    for host in NAMES[6:]:
        assert "%s: not deployed (another host failed)" % host in message
    # And so does the audit log, one line per host.
    expected = {"fl4": ("deploy_failed", "failed_rolled_back")}
    expected.update((h, ("deploy_rolled_back", "rolled_back")) for h in ("fl1", "fl2", "fl3", "fl5", "fl6"))
    expected.update((h, ("deploy_skipped", "not_started")) for h in NAMES[6:])
    assert outcomes(drill.runs["v3"][1]) == expected


def test_rollback_and_status_on_all_twenty(drill):
    assert drill.live.get("v1"), "v1 was not deployed"
    proc = drill.play("rollback", "rollback.yml", stacks=dict((h, tiny_stack(STACK, drill.source, "v2")) for h in NAMES))
    assert proc.returncode == 0, proc.stdout[-5000:]
    stores = drill.stores()
    assert dict((h, s["live"]) for h, s in stores.items()) == drill.live["v1"]
    assert not any(s["lock"] for s in stores.values())
    assert drill.serving() == everywhere("v1")
    assert [e["event"] for e in audit_lines(drill.runs["rollback"][1])] == ["rollback_succeeded"] * 20

    status = drill.play("status", "status.yml", stacks=dict((h, tiny_stack(STACK, drill.source, "v1")) for h in NAMES),
                        extra={"status_fail_unhealthy": True})
    assert status.returncode == 0, status.stdout[-5000:]
    for host in NAMES:
        assert re.search(r"ok: \[%s\]" % host, status.stdout), host
    shown = json.dumps(status.stdout)
    assert all(drill.live["v1"][h] in shown for h in NAMES)
