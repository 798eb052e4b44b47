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


def two_phases(st, tag):
    """Infrastructure (the databases, NATS) then platform: the daemon restarts during phase 2."""
    values = stack_vars(st, tag=tag)
    values["vpsops_stack"]["phases"] = values["vpsops_stack"]["phases"][:2]
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
    st = restart_stack
    first = playbook(tmp_path, two_phases(st, "v1"))
    assert first.returncode == 0, first.stdout[-3000:]
    db_rows(st, "ar", "CREATE TABLE drill (id text PRIMARY KEY); "
                      "INSERT INTO drill VALUES ('written-before-the-deploy')")

    deploy = start_playbook(tmp_path, two_phases(st, "v2"), name="restart")
    out = fault_during_phase(deploy, restart_dockerd)
    if deploy.returncode != 0:
        # The deploy failed, said where, and released its lock, even when its own rollback failed
        # too (the daemon was still coming back) ...
        assert "Deploy of %s failed. lab1 failed at" % st.project in out, out[-4000:]
        assert releases(st)["lock"] is None
        if "the automatic rollback to" in out:
            # ... then it said so and how to converge: rollback.yml, from the state on the host.
            assert "stays pending: once the cause is fixed, run rollback.yml" in out, out[-4000:]
            back = playbook(tmp_path, {"vpsops_stack": {"name": st.project}}, path=ROLLBACK_PLAYBOOK)
            assert back.returncode == 0, back.stdout[-4000:]

    # One consistent live release: its images run in every container of the stack, all running.
    info = releases(st)
    assert info["lock"] is None, info["lock"]
    live = [r for r in info["releases"] if r["status"] == "live"]
    assert len(live) == 1, info["releases"]
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
