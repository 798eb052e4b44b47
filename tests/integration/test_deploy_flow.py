"""The deploy flow end to end on the lab: a controller killed half way, two deploys at once, several
hosts with a canary, migrations with backups, the plan in check mode."""

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import ROOT, Stack, ansible_env, http_json, run, wait_until
from test_deploy_playbook import (
    ANSIBLE, INVENTORY, PLAYBOOK, ROLLBACK_PLAYBOOK, images, playbook, releases, stack_vars,
)


def start_playbook(tmp_path, extra_vars, path=PLAYBOOK, name="bg"):
    """ansible-playbook in its own session (so the test can kill it and every worker), output to a file."""
    vars_file = tmp_path / ("%s-vars.json" % name)
    vars_file.write_text(json.dumps(extra_vars))
    log = open(tmp_path / ("%s.log" % name), "w")
    proc = subprocess.Popen([os.path.join(ANSIBLE, "ansible-playbook"), "-i", INVENTORY, path, "-e", "@%s" % vars_file],
                            stdout=log, stderr=subprocess.STDOUT, env=ansible_env(), cwd=ROOT, start_new_session=True)
    proc.log_path = str(tmp_path / ("%s.log" % name))
    return proc


def output(proc):
    with open(proc.log_path) as handle:
        return handle.read()


def lock_of(st):
    path = "/var/lib/vpsops/%s/lock.json" % st.project
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


@pytest.fixture
def flow(lab):
    st = Stack("vpsops-itf", 34000)
    st.down()
    run(["rm", "-rf", "/var/lib/vpsops/%s" % st.project])
    yield st
    st.down()
    run(["rm", "-rf", "/var/lib/vpsops/%s" % st.project])


def test_controller_killed_during_phase_two_then_rollback_playbook_restores_the_live_release(flow, tmp_path):
    first = playbook(tmp_path, stack_vars(flow))
    assert first.returncode == 0, first.stdout[-3000:]
    good = images(flow.project)
    live = releases(flow)["live"]

    deploy = start_playbook(tmp_path, stack_vars(flow, tag="v2"), name="killed")
    try:
        # Phase 2 (platform) has started once its progress line is in the log.
        wait_until("phase 2 of the v2 deploy starts",
                   lambda: "Phase platform: services" in output(deploy) or deploy.poll() is not None, timeout=300)
        assert deploy.poll() is None, output(deploy)[-3000:]
        time.sleep(3)  # into the phase's `up`
        os.killpg(deploy.pid, signal.SIGKILL)
    finally:
        deploy.wait(30)
    held = lock_of(flow)
    assert held is not None and held["pid"] == deploy.pid  # the killed run left its lock behind

    # Another deploy is refused while the lock's TTL runs ...
    refused = playbook(tmp_path, stack_vars(flow, tag="v2"))
    assert refused.returncode != 0
    assert "cannot lock" in refused.stdout and held["owner"] in refused.stdout

    # ... but rollback.yml sees the holder's process is gone on this controller and takes over.
    back = playbook(tmp_path, {"vpsops_stack": {"name": flow.project}}, path=ROLLBACK_PLAYBOOK)
    assert back.returncode == 0, back.stdout[-4000:]
    assert "took over the deploy lock (its holder is gone)" in back.stdout
    assert images(flow.project) == good
    for port_key in ("AUTH_PORT", "AR_PORT", "PAYMENTS_PORT"):
        assert http_json(flow.url(port_key))[1]["release"] == "v1"
    info = releases(flow)
    assert info["live"] == live and info["lock"] is None
    assert info["releases"][0]["status"] == "failed"  # the interrupted v2 release


def test_two_deploys_at_once_one_is_refused_with_the_holder_named(flow, tmp_path):
    first = start_playbook(tmp_path, stack_vars(flow), name="first")
    try:
        holder = wait_until("the first deploy holds the lock", lambda: lock_of(flow) or (
            first.poll() is not None and {"owner": "(exited)"}), timeout=300)
        assert holder.get("pid") == first.pid, output(first)[-3000:]
        second = playbook(tmp_path, stack_vars(flow))
        assert second.returncode != 0
        assert "cannot lock" in second.stdout and holder["owner"] in second.stdout
        assert first.wait(600) == 0, output(first)[-4000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(30)
    info = releases(flow)
    assert info["lock"] is None and len(info["releases"]) == 1 and info["releases"][0]["status"] == "live"
