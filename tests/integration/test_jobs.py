"""One-shot services (jobs) and hooks deployed as operators write them: a schema job the web service waits for
(`depends_on: condition: service_completed_successfully`) and a configurator named in the phase's
`jobs`, run after the others are up. A job that exits 0 is a success (not "exited with exit code
0"); one that exits non-zero fails the phase with its last log lines and the deploy rolls back,
the rollback running the live release's jobs again. A deploy that changes nothing runs no job again.

Hooks on the same stack: a host command before the deploy and one after it (marked on_rollback),
each leaving a line in a marker file with the variables the hook was given; a command in web's
container after the phase; a secret hook whose output is never shown; and a last deploy whose
`before` hook fails: nothing of the stack changes, the on_rollback hook runs, the release is failed.

Its own tiny stack: project vpsops-itjobs, one busybox image (`FROM scratch`) built here per tag,
port 12490.
"""

import json
import os
import shutil
import time
import urllib.request

import pytest

from conftest import ansible_env, ansible_module, compose_down, remove_pin_tags, run
from test_deploy_playbook import ANSIBLE, INVENTORY, PLAYBOOK

PROJECT = "vpsops-itjobs"
MARKER = "/tmp/vpsops-itjobs-hooks.log"
HOOK_SECRET = "hook-output-that-must-not-show-%d" % time.time()
PORT = 12490
STATE = "/var/lib/vpsops/%s" % PROJECT
REPO = "vpsops-itjobs/box"

COMPOSE = """services:
  schema:
    image: %(repo)s:${RELEASE_TAG}
    command: ["/bin/busybox", "sh", "-c", "echo schema ${RELEASE_TAG} > /shared/schema; echo schema written"]
    volumes: ["shared:/shared"]
    healthcheck: {disable: true}
  web:
    image: %(repo)s:${RELEASE_TAG}
    init: true
    depends_on:
      schema: {condition: service_completed_successfully}
    volumes: ["shared:/www"]
    ports: ["127.0.0.1:%(port)d:8080"]
  configure:
    image: %(repo)s:${RELEASE_TAG}
    command: ["/bin/busybox", "sh", "-c",
              "echo configuring for ${RELEASE_TAG}; /bin/busybox wget -q -O - http://web:8080/schema; exit ${CONFIGURE_EXIT:-0}"]
    healthcheck: {disable: true}
volumes:
  shared: {}
""" % dict(repo=REPO, port=PORT)

DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
LABEL vpsops.test.image=%(label)s
HEALTHCHECK --interval=2s --timeout=10s --retries=5 --start-period=60s CMD ["/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/schema"]
CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"""


def build(tmp, tag):
    ctx = os.path.join(tmp, "ctx-%s" % tag)
    os.makedirs(ctx)
    shutil.copy2(shutil.which("busybox"), os.path.join(ctx, "busybox"))
    with open(os.path.join(ctx, "Dockerfile"), "w") as handle:
        handle.write(DOCKERFILE % dict(label="%s-%s" % (tag, time.time())))
    run(["docker", "build", "-q", "-t", "%s:%s" % (REPO, tag), ctx])


def hooks(failing_before=False):
    before = [{"name": "pause", "command": ["sh", "-c", 'echo "before $VPSOPS_STACK $VPSOPS_RELEASE" >> %s' % MARKER]}]
    if failing_before:
        before.append({"name": "refuse", "command": ["sh", "-c", "echo payouts cannot pause >&2; exit 4"]})
    return {"before": before,
            "after": [{"name": "resume", "on_rollback": True,
                       "command": ["sh", "-c", 'echo "after $VPSOPS_OUTCOME" >> %s' % MARKER]}]}


def deploy(tmp, name, tag, failing_before=False, **env):
    stack = {
        "name": PROJECT, "source": os.path.join(tmp, "source"), "env": dict({"RELEASE_TAG": tag}, **env),
        "hooks": hooks(failing_before),
        "phases": [{"name": "app", "compose_files": ["compose.yml"], "jobs": ["configure"],
                    "hooks": {"before": [{"name": "secret", "secret": True,
                                          "command": ["sh", "-c", "echo %s; exit 0" % HOOK_SECRET]}],
                              "after": [{"name": "page", "service": "web", "command": [
                                  "/bin/busybox", "sh", "-c", 'echo "hooked $VPSOPS_PHASE" > /www/hooked']}]},
                    "checks": [{"name": "web", "type": "http", "url": "http://127.0.0.1:%d/schema" % PORT,
                                "body": "schema %s" % tag}]}]}
    values = {"vpsops_stack": stack, "deploy_phase_timeout": 40}
    vars_file = os.path.join(tmp, "%s-vars.json" % name)
    with open(vars_file, "w") as handle:
        json.dump(values, handle)
    proc = run([os.path.join(ANSIBLE, "ansible-playbook"), "-i", INVENTORY, PLAYBOOK, "-e", "@%s" % vars_file],
               check=False, env=ansible_env())
    return {"rc": proc.returncode, "out": proc.stdout + proc.stderr, "containers": containers(), "info": info(),
            "marker": read_marker(), "hooked": fetch("hooked")}


def read_marker():
    try:
        with open(MARKER) as handle:
            return handle.read().splitlines()
    except OSError:
        return []


def fetch(path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/%s" % (PORT, path), timeout=5) as answer:
            return answer.read().decode().strip()
    except OSError as exc:
        return "(no answer: %s)" % exc


def containers():
    """{service: {id, image, state, exit_code, started}} of the project."""
    ids = run(["docker", "ps", "-aq", "--no-trunc", "--filter",
               "label=com.docker.compose.project=%s" % PROJECT]).stdout.split()
    found = {}
    for item in json.loads(run(["docker", "inspect"] + ids).stdout) if ids else []:
        found[item["Config"]["Labels"]["com.docker.compose.service"]] = dict(
            id=item["Id"], image=item["Image"], state=item["State"]["Status"], exit_code=item["State"]["ExitCode"],
            started=item["State"]["StartedAt"])
    return found


def info():
    rc, result = ansible_module("compose_release_info", {"stack": PROJECT, "history": 100})
    assert rc == 0, result
    return result


def logs(service):
    proc = run(["docker", "logs", "%s-%s-1" % (PROJECT, service)], check=False)
    return proc.stdout + proc.stderr


def cleanup(tmp):
    source = os.path.join(tmp, "source", "compose.yml")
    if os.path.isfile(source):
        compose_down(["docker", "compose", "-p", PROJECT, "-f", source], env=dict(os.environ, RELEASE_TAG="v1"))
    run(["docker", "volume", "rm", "-f", "%s_shared" % PROJECT], check=False)
    run(["rm", "-rf", STATE, MARKER])
    remove_pin_tags(PROJECT)


@pytest.fixture(scope="module")
def runs(lab, tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("jobs"))
    os.makedirs(os.path.join(tmp, "source"))
    with open(os.path.join(tmp, "source", "compose.yml"), "w") as handle:
        handle.write(COMPOSE)
    cleanup(tmp)
    for tag in ("v1", "v2"):
        build(tmp, tag)
    done = {}
    try:
        done["v1"] = deploy(tmp, "v1", "v1")
        done["v1-logs"] = logs("configure")
        live = [r["id"] for r in done["v1"]["info"]["releases"] if r["status"] == "live"]
        done["v1-manifest"] = {}
        if live:
            with open(os.path.join(STATE, "releases", live[0], "manifest.json")) as handle:
                done["v1-manifest"] = json.load(handle)
        done["again"] = deploy(tmp, "again", "v1")
        done["v2"] = deploy(tmp, "v2", "v2", CONFIGURE_EXIT="3")
        done["v2-logs"] = logs("configure")
        done["refused"] = deploy(tmp, "refused", "v2", failing_before=True)
        yield done
    finally:
        cleanup(tmp)
        for tag in ("v1", "v2"):
            run(["docker", "image", "rm", "%s:%s" % (REPO, tag)], check=False)


def test_jobs_that_exit_0_are_a_success_and_are_recorded(runs):
    v1 = runs["v1"]
    assert v1["rc"] == 0, v1["out"][-4000:]
    found = v1["containers"]
    assert (found["schema"]["state"], found["schema"]["exit_code"]) == ("exited", 0), found
    assert (found["configure"]["state"], found["configure"]["exit_code"]) == ("exited", 0), found
    assert found["web"]["state"] == "running", found
    # The configurator ran after web was up: it read the schema through web.
    assert "configuring for v1" in runs["v1-logs"] and "schema v1" in runs["v1-logs"], runs["v1-logs"]
    live = [r for r in v1["info"]["releases"] if r["status"] == "live"]
    assert len(live) == 1, v1["info"]["releases"]
    # Named jobs first, in the stack's order, then compose's completed dependencies.
    assert runs["v1-manifest"]["phases"][0]["jobs"] == ["configure", "schema"], runs["v1-manifest"]


def test_a_deploy_that_changes_nothing_runs_no_job_again(runs):
    again = runs["again"]
    assert again["rc"] == 0, again["out"][-4000:]
    before, after = runs["v1"]["containers"], again["containers"]
    for service in ("schema", "configure", "web"):
        assert (after[service]["id"], after[service]["started"]) == (before[service]["id"], before[service]["started"]), \
            (service, before[service], after[service])


def test_a_failing_job_fails_the_phase_with_its_logs_and_the_rollback_runs_the_live_jobs(runs):
    v2 = runs["v2"]
    assert v2["rc"] != 0, v2["out"][-4000:]
    assert "one-shot service configure exited with exit code 3; its last log lines:" in v2["out"], v2["out"][-4000:]
    assert "configuring for v2" in v2["out"], v2["out"][-4000:]
    assert "rolled back to the live release" in v2["out"], v2["out"][-4000:]
    live = [r for r in v2["info"]["releases"] if r["status"] == "live"]
    v1_live = [r for r in runs["v1"]["info"]["releases"] if r["status"] == "live"]
    assert len(live) == 1 and live[0]["id"] == v1_live[0]["id"], v2["info"]["releases"]
    found, v1_image = v2["containers"], runs["v1"]["containers"]["web"]["image"]
    assert found["web"]["state"] == "running" and found["web"]["image"] == v1_image, found
    # The rollback ran v1's configurator again, to completion.
    assert (found["configure"]["image"], found["configure"]["exit_code"]) == (v1_image, 0), found
    assert runs["v2-logs"].rstrip().endswith("schema v1"), runs["v2-logs"]


def release_of(run_, status="live"):
    return [r["id"] for r in run_["info"]["releases"] if r["status"] == status]


def test_hooks_run_before_and_after_with_what_they_are_given(runs):
    v1, again, v2 = runs["v1"], runs["again"], runs["v2"]
    live = release_of(v1)[0]
    # v1: before (with the release it deploys), after (succeeded); the same release again; v2's
    # failed job: before, then the on_rollback hook after the rollback.
    assert v1["marker"] == ["before %s %s" % (PROJECT, live), "after succeeded"], v1["marker"]
    assert again["marker"][2:] == ["before %s %s" % (PROJECT, live), "after succeeded"], again["marker"]
    failed = release_of(v2, "failed")
    assert v2["marker"][4:] == ["before %s %s" % (PROJECT, failed[0]), "after rolled_back"], v2["marker"]
    # The phase's hook ran in web's container after the phase was up.
    assert v1["hooked"] == "hooked app", v1["hooked"]


def test_a_secret_hook_output_is_never_shown(runs):
    for name in ("v1", "again", "v2", "refused"):
        assert HOOK_SECRET not in runs[name]["out"], name


def test_a_failing_before_hook_stops_the_deploy_before_anything_changes(runs):
    before, refused = runs["v2"], runs["refused"]
    assert refused["rc"] != 0, refused["out"][-4000:]
    assert "before-deploy hook 'refuse' failed (exit code 4): payouts cannot pause" in refused["out"], \
        refused["out"][-4000:]
    assert "nothing of the stack was changed, and the on_rollback hooks ran (resume)" in refused["out"]
    assert refused["marker"][-1] == "after failed", refused["marker"]
    assert dict((s, c["id"]) for s, c in refused["containers"].items()) == \
        dict((s, c["id"]) for s, c in before["containers"].items())
    assert release_of(refused) == release_of(before)
    assert refused["info"]["lock"] is None or not refused["info"]["lock"].get("owner"), refused["info"]["lock"]
