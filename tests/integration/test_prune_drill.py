"""Drill: a rollback after the images it needs were removed from the host (`docker system prune -af`).

`docker system prune -af` deletes every image no container uses: the images of the release to roll
back to are among them. A rollback must then be refused before it changes anything (no container
stopped or recreated, no release status moved, no lock left), saying which images are missing and
what to do; once they are back, the same rollback converges. Both ways in: `rollback.yml`
(compose_rollback) and the automatic rollback inside `deploy.yml` (the engine's `end` step).

The prune is SIMULATED: this drill must not run `docker system prune -af` on the shared lab daemon
(it would delete the images every other test needs). It removes exactly what a prune would remove
of its own stack: every tag of the images of the release it rolls back to, none of which a
container uses at that moment (`docker image rm`). Its stack is tiny and its own: two busybox
services (`FROM scratch`) built here, project vpsops-itprune, ports 12480-12481.
"""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import ROOT, ansible_env, ansible_module, compose_down, remove_pin_tags, run, wait_until
from test_deploy_playbook import ANSIBLE, INVENTORY, PLAYBOOK, ROLLBACK_PLAYBOOK

PROJECT = "vpsops-itprune"
PORTS = {"a": 12480, "b": 12481}
STATE = "/var/lib/vpsops/%s" % PROJECT
REPO = "vpsops-itprune"  # the images: vpsops-itprune/<service>:<release tag>

PHASE_FILE = """services:
  %(service)s:
    image: %(repo)s/%(service)s:${RELEASE_TAG}
    init: true
    ports: ["127.0.0.1:%(port)d:8080"]
"""

DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY www /www
LABEL vpsops.test.image=%(label)s
HEALTHCHECK --interval=1s --timeout=2s --retries=2 --start-period=%(start)ds CMD %(health)s
CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"""
GOOD = '["/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]'
# Never healthy, never unhealthy within the phase's timeout: the deploy waits in phase two long
# enough for the drill to remove an image, then fails and rolls back.
STARTING = '["/bin/busybox", "false"]'


def build(tmp, service, tag, broken=False):
    """vpsops-itprune/<service>:<tag>, a new image ID for every (service, tag)."""
    ctx = os.path.join(tmp, "ctx-%s-%s" % (service, tag))
    os.makedirs(os.path.join(ctx, "www"))
    shutil.copy2(shutil.which("busybox"), os.path.join(ctx, "busybox"))
    with open(os.path.join(ctx, "www", "index.html"), "w") as handle:
        handle.write("%s %s\n" % (service, tag))
    with open(os.path.join(ctx, "Dockerfile"), "w") as handle:
        handle.write(DOCKERFILE % dict(label="%s-%s-%s" % (service, tag, time.time()),
                                       start=600 if broken else 30, health=STARTING if broken else GOOD))
    run(["docker", "build", "-q", "-t", "%s/%s:%s" % (REPO, service, tag), ctx])


def stack_vars(tmp, tag):
    phases = [{"name": "one", "compose_files": ["one.yml"],
               "checks": [{"name": "a", "type": "http", "url": "http://127.0.0.1:%d/" % PORTS["a"]}]},
              {"name": "two", "compose_files": ["two.yml"],
               "checks": [{"name": "b", "type": "http", "url": "http://127.0.0.1:%d/" % PORTS["b"]}]}]
    if tag == "v3":
        # b never gets healthy: its phase only has to last while the drill removes an image.
        phases[1]["timeout"] = 10
    return {"vpsops_stack": {"name": PROJECT, "source": os.path.join(tmp, "source"),
                             "env": {"RELEASE_TAG": tag}, "phases": phases}}


def playbook_argv(tmp, name, values, path=PLAYBOOK):
    vars_file = os.path.join(tmp, "%s-vars.json" % name)
    with open(vars_file, "w") as handle:
        json.dump(values, handle)
    return [os.path.join(ANSIBLE, "ansible-playbook"), "-i", INVENTORY, path, "-e", "@%s" % vars_file]


def playbook(tmp, name, values, path=PLAYBOOK):
    return run(playbook_argv(tmp, name, values, path), check=False, env=ansible_env())


def info():
    rc, result = ansible_module("compose_release_info", {"stack": PROJECT, "history": 200})
    assert rc == 0, result
    return result


def containers():
    """{service: (container id, image id, state)} of the project."""
    ids = run(["docker", "ps", "-aq", "--no-trunc", "--filter", "label=com.docker.compose.project=%s" % PROJECT]).stdout.split()
    found = {}
    for item in json.loads(run(["docker", "inspect"] + ids).stdout) if ids else []:
        found[item["Config"]["Labels"]["com.docker.compose.service"]] = (item["Id"], item["Image"],
                                                                         item["State"]["Status"])
    return found


def image_ids(release):
    return dict((name, svc["image_id"]) for name, svc in release["services"].items())


def prune_images_of(release, services):
    """What `docker system prune -af` does to the images of `release` that no container uses:
    every tag removed, the image gone."""
    for name in services:
        image_id = release["services"][name]["image_id"]
        tags = json.loads(run(["docker", "image", "inspect", image_id]).stdout)[0]["RepoTags"]
        run(["docker", "image", "rm"] + tags)
        assert run(["docker", "image", "inspect", image_id], check=False).returncode != 0


def history_events():
    return [e["event"] for e in info()["history"]]


@pytest.fixture(scope="module")
def drill(lab, tmp_path_factory):
    """v1 then v2 deployed with deploy.yml: two releases, v2 live, v1 the one before it."""
    tmp = str(tmp_path_factory.mktemp("prune"))
    os.makedirs(os.path.join(tmp, "source"))
    files = []
    for phase, service in (("one", "a"), ("two", "b")):
        files.append(os.path.join(tmp, "source", "%s.yml" % phase))
        with open(files[-1], "w") as handle:
            handle.write(PHASE_FILE % dict(service=service, repo=REPO, port=PORTS[service]))
    compose = ["docker", "compose", "-p", PROJECT] + sum([["-f", f] for f in files], [])

    def clean():
        compose_down(compose, env=dict(os.environ, RELEASE_TAG="v1"))
        run(["rm", "-rf", STATE])
        remove_pin_tags(PROJECT)
        refs = run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                    "reference=%s/*" % REPO], check=False).stdout.split()
        if refs:
            run(["docker", "image", "rm"] + refs, check=False)

    clean()
    for tag in ("v1", "v2", "v3"):
        for service in ("a", "b"):
            build(tmp, service, tag, broken=(tag == "v3" and service == "b"))
    for tag in ("v1", "v2"):
        done = playbook(tmp, tag, stack_vars(tmp, tag))
        assert done.returncode == 0, done.stdout[-4000:]
    state = info()
    assert [r["status"] for r in state["releases"]] == ["live", "superseded"], state["releases"]
    yield {"tmp": tmp, "v1": state["releases"][1]["id"], "v2": state["releases"][0]["id"]}
    clean()


def manifest(release_id):
    with open(os.path.join(STATE, "releases", release_id, "manifest.json")) as handle:
        return json.load(handle)


def test_rollback_playbook_after_a_prune_is_refused_before_any_change_saying_what_to_do(drill):
    v1 = manifest(drill["v1"])
    prune_images_of(v1, ("a", "b"))
    before, events = containers(), history_events()
    back = playbook(drill["tmp"], "back", {"vpsops_stack": {"name": PROJECT}}, path=ROLLBACK_PLAYBOOK)
    out = back.stdout + back.stderr
    assert back.returncode != 0
    assert "rollback to %s refused before any change" % drill["v1"] in out, out[-4000:]
    for name in ("a", "b"):
        assert "service %s's image %s/%s:v1 (ID %s)" % (name, REPO, name, v1["services"][name]["image_id"][7:19]) in out
    assert "docker load" in out and "then run the rollback again" in out
    assert "Traceback" not in out
    # Nothing changed: the same containers run v2, v2 is live, nothing recorded, no lock left.
    assert containers() == before
    state = info()
    assert (state["live"], state["lock"]) == (drill["v2"], None)
    assert [r["status"] for r in state["releases"]] == ["live", "superseded"]
    new = history_events()[len(events):]
    assert "lock_acquired" not in new and "rollback_started" not in new, new  # refused before the lock


def test_automatic_rollback_inside_a_deploy_after_a_prune_is_refused_then_rollback_playbook_converges(drill):
    """v3 changes phase one (a), then never gets healthy in phase two (b). While it waits there, the
    image a ran before (v2's, which no container uses any more) is pruned. The deploy's automatic
    rollback to v2 must then refuse before changing anything and say what to do; doing it (the image
    loaded back from a saved copy) lets rollback.yml converge to v2."""
    tmp = drill["tmp"]
    v2 = manifest(drill["v2"])
    saved = os.path.join(tmp, "a-v2.tar")
    run(["docker", "image", "save", "-o", saved, "%s/a:v2" % REPO])  # the operator's saved copy
    known = len(history_events())
    log_path = os.path.join(tmp, "v3.log")
    with open(log_path, "w") as log:
        deploy = subprocess.Popen(playbook_argv(tmp, "v3", stack_vars(tmp, "v3")), stdout=log,
                                  stderr=subprocess.STDOUT, env=ansible_env(), cwd=ROOT, start_new_session=True)
    try:
        def text():
            with open(log_path) as handle:
                return handle.read()
        wait_until("the v3 deploy waits in phase two", lambda: "Phase two: services" in text() or
                   deploy.poll() is not None, timeout=180)
        assert deploy.poll() is None, text()[-4000:]
        assert containers()["a"][1] != v2["services"]["a"]["image_id"]  # phase one runs v3 already
        prune_images_of(v2, ("a",))
        # Phase two's `up` has replaced b by v3's container, which never gets healthy: what the
        # failed deploy leaves, and what its rollback must not touch.
        b_v3 = run(["docker", "image", "inspect", "--format", "{{.Id}}", "%s/b:v3" % REPO]).stdout.strip()
        before_rollback = wait_until("phase two runs b's v3 container", lambda: (
            containers().get("b", (None, None))[1] == b_v3 and containers()), timeout=60, interval=0.2)
        deploy.wait(300)
    finally:
        if deploy.poll() is None:
            os.killpg(deploy.pid, 9)
            deploy.wait(30)
    out = text()
    assert deploy.returncode != 0
    assert "the automatic rollback to %s failed too" % drill["v2"] in out, out[-4000:]
    assert "rollback to %s refused before any change" % drill["v2"] in out, out[-4000:]
    assert "service a's image %s/a:v2 (ID %s)" % (REPO, v2["services"]["a"]["image_id"][7:19]) in out
    assert "docker load" in out and "run rollback.yml" in out
    # The rollback changed nothing: the containers the failed phase left are the ones still there.
    after = containers()
    assert dict((s, c[:2]) for s, c in after.items()) == dict((s, c[:2]) for s, c in before_rollback.items())
    state = info()
    assert state["live"] == drill["v2"] and state["lock"] is None
    v3 = state["releases"][0]
    assert v3["status"] == "pending"  # "stays pending", as the message says
    new = history_events()[known:]
    assert "release_created" in new and "rollback_started" not in new, new

    # What the message says to do: the exact image back, then rollback.yml.
    run(["docker", "image", "load", "-i", saved])
    back = playbook(tmp, "back-v2", {"vpsops_stack": {"name": PROJECT}}, path=ROLLBACK_PLAYBOOK)
    assert back.returncode == 0, back.stdout[-4000:]
    running = containers()
    assert dict((s, c[1]) for s, c in running.items()) == image_ids(v2)
    assert set(c[2] for c in running.values()) == {"running"}
    state = info()
    assert state["live"] == drill["v2"] and state["lock"] is None
    assert [r["status"] for r in state["releases"]][:2] == ["failed", "live"]
    assert re.search(r"rolled back|already at", back.stdout)


def test_an_image_that_cannot_be_pulled_fails_the_release_with_dockers_error(lab, tmp_path):
    """Pull errors are not swallowed: the failure carries Docker's answer. The registry is a closed
    port on loopback (no traffic leaves the machine), so the pull fails at once."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "one.yml").write_text("services:\n  web:\n    image: 127.0.0.1:9/%s/none:v1\n" % REPO)
    state_dir = str(tmp_path / "state")
    rc, result = ansible_module("compose_release", {"stack": "vpsops-itpull", "state_dir": state_dir,
                                                    "project_dir": str(project), "files": ["one.yml"]})
    assert rc != 0 and result.get("failed"), result
    assert "web (127.0.0.1:9/%s/none:v1)" % REPO in result["msg"] and "pulling failed" in result["msg"], result
    assert "connection refused" in result["msg"], result["msg"]
    assert "Traceback" not in json.dumps(result)
    assert not os.path.exists(os.path.join(state_dir, "releases")) or os.listdir(os.path.join(state_dir, "releases")) == []
