"""Fault drill: the Docker daemon restarts in the middle of a phase.

It stops every container on the machine, so this module runs alone, after the parallel suite
(`-m alone`, the `alone` gate of lab/gates.py). Afterwards the host must hold one consistent live
release: every container of the stack running the live release's images, the lock free, the
database rows written before the deploy still there.
"""

import os
import signal

import pytest

from conftest import ROOT, Stack, container_names, process_running, run, wait_until
from test_deploy_flow import db_rows, fault_during_phase, start_playbook
from test_deploy_playbook import ROLLBACK_PLAYBOOK, playbook, releases, stack_vars

pytestmark = pytest.mark.alone

DOCKERD_MARK = "/var/cache/vpsops-lab/dockerd.started-by-lab"


def two_phases(st, tag, mark=None):
    """Infrastructure (the databases, NATS) then platform: the daemon restarts during phase 2.

    With `mark`, the platform phase has a `before` hook on the host that creates the file `mark`,
    then waits until the Docker daemon stops answering (at most 60 s): the drill stops the daemon
    when it sees the file, so the phase's `up` runs against a daemon that is going away, whatever
    the machine's load (a fixed delay let the phase finish before the daemon went away)."""
    values = stack_vars(st, tag=tag)
    phases = values["vpsops_stack"]["phases"][:2]
    if mark:
        wait = ("touch %s; i=0; while docker info >/dev/null 2>&1 && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done"
                % mark)
        phases[1]["hooks"] = {"before": [{"name": "hold until the daemon goes", "command": ["sh", "-c", wait],
                                          "timeout": 90}]}
    values["vpsops_stack"]["phases"] = phases
    return values


def restart_dockerd():
    with open(DOCKERD_MARK) as handle:
        pid = int(handle.read().strip())
    os.kill(pid, signal.SIGTERM)
    wait_until("dockerd (pid %d) stopped" % pid, lambda: not process_running(pid), timeout=60, interval=0.1)
    run([os.path.join(ROOT, "bin", "lab"), "up"])


@pytest.fixture
def restart_stack(lab):
    if not os.path.exists(DOCKERD_MARK):
        pytest.skip("the Docker daemon was not started by the lab (bin/lab up): this drill restarts only that one")
    st = Stack("vpsops-itdr", 13000)
    st.down()
    run(["rm", "-rf", "/var/lib/vpsops/%s" % st.project])
    yield st
    st.down()
    run(["rm", "-rf", "/var/lib/vpsops/%s" % st.project])


def test_docker_daemon_restarted_during_a_phase_leaves_one_consistent_live_release(restart_stack, tmp_path):
    """Every outcome is asserted, none inside an `if`: the phase under way cannot finish (its `up`
    finds the daemon gone), so the deploy fails, says where, and frees its lock. Its automatic rollback
    may succeed (the daemon was back in time) or fail (it was not, and it then says to run
    rollback.yml): `rollback.yml -e rollback_to=live` converges in both cases, and afterwards the
    v1 release is the one live release, v2 is failed, every container runs v1's images, and the
    rows written before the deploy are there."""
    st = restart_stack
    first = playbook(tmp_path, two_phases(st, "v1"))
    assert first.returncode == 0, first.stdout[-3000:]
    live_before = releases(st)["live"]
    assert live_before
    db_rows(st, "ar", "CREATE TABLE drill (id text PRIMARY KEY); "
                      "INSERT INTO drill VALUES ('written-before-the-deploy')")

    mark = tmp_path / "phase-platform-started"
    deploy = start_playbook(tmp_path, two_phases(st, "v2", mark=str(mark)), name="restart")
    out = fault_during_phase(deploy, restart_dockerd, entered=mark.exists)
    # The deploy failed, said where, and released its lock, even when its own rollback failed too
    # (the daemon was still coming back) ...
    assert deploy.returncode != 0, out[-4000:]
    assert "Deploy of %s failed. lab1 failed at" % st.project in out, out[-4000:]
    assert "Traceback (most recent call last)" not in out
    assert releases(st)["lock"] is None
    # ... and it either rolled back or said how to converge: one of the two, always.
    assert ("rolled back to the live release %s" % live_before in out
            or "stays pending: once the cause is fixed, run rollback.yml" in out), out[-4000:]

    # Converge from the state on the host, whatever the automatic rollback managed: to the live release.
    back = playbook(tmp_path, {"vpsops_stack": {"name": st.project}, "rollback_to": "live"}, path=ROLLBACK_PLAYBOOK)
    assert back.returncode == 0, back.stdout[-4000:]

    # One consistent live release, v1's: its images run in every container of the stack, all running.
    info = releases(st)
    assert info["lock"] is None, info["lock"]
    live = [r for r in info["releases"] if r["status"] == "live"]
    assert [r["id"] for r in live] == [live_before], info["releases"]
    assert info["live"] == live_before
    assert [r["status"] for r in info["releases"]] == ["failed", "live"], info["releases"]  # v2 failed
    wait_until("every container of the stack runs again", lambda: set(run(
        ["docker", "ps", "-a", "--filter", "label=com.docker.compose.project=%s" % st.project,
         "--format", "{{.State}}"]).stdout.split()) == {"running"}, timeout=120)
    pinned = dict((name, service["image_id"]) for name, service in live[0]["services"].items())
    containers = container_names(st.project)
    running = run(["docker", "inspect", "--format", '{{index .Config.Labels "com.docker.compose.service"}} {{.Image}}']
                  + containers).stdout.splitlines()
    assert len(running) == len(pinned) + 1  # auth runs two replicas
    for line in running:
        service, image = line.split()
        assert pinned[service] == image, line
    # The row written before the deploy survived the daemon's restart.
    assert db_rows(st, "ar", "SELECT id FROM drill") == [("written-before-the-deploy",)]
