"""The release store, compose_release(_info), deploy_lock and compose_rollback on the real lab.

A small stack of three services in two phases (front: web; back: api, worker), each from its own
image built here from the demo image with a distinct label, so every build is a new image ID under
the same tag: that is how a moved tag looks to Docker.
"""

import json
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from conftest import ansible_module, run, wait_until

STACK = "vpsops-rel"
WEB_PORT = 28080
SECRET = "rel-token-5c2e9d1f"
FRONT = """services:
  web:
    image: vpsops-relt/web:cur
    init: true
    environment: {SERVICE_NAME: web, SERVICE_ROLE: auth, APP_TOKEN: "${APP_TOKEN:?APP_TOKEN must be set}"}
    ports: ["127.0.0.1:${WEB_PORT}:8080"]
"""
BACK = """services:
  api:
    image: vpsops-relt/api:cur
    init: true
    environment: {SERVICE_NAME: api, SERVICE_ROLE: auth}
  worker:
    image: vpsops-relt/worker:cur
    init: true
    environment: {SERVICE_NAME: worker, SERVICE_ROLE: auth}
"""
SERVICES = ("web", "api", "worker")
CHECK_SECRET = "check-header-secret-93af"
PHASES = [
    {"name": "front", "compose_files": ["front.yml"],
     # The first check's header is the env file's APP_TOKEN (recorded as a reference to it); the
     # second's is in no variable of the env file (not recorded at all).
     "checks": [{"name": "web", "type": "http", "url": "http://127.0.0.1:%d/api/health" % WEB_PORT,
                 "json": {"status": "ok"}, "headers": {"X-Token": SECRET}},
                {"name": "web-other", "type": "http", "url": "http://127.0.0.1:%d/api/health" % WEB_PORT,
                 "headers": {"X-Other": CHECK_SECRET}}]},
    {"name": "back", "compose_files": ["back.yml"]},
]


def build(service, variant, tag="cur"):
    """A new image ID under vpsops-relt/<service>:<tag>; returns the ID."""
    ref = "vpsops-relt/%s:%s" % (service, tag)
    dockerfile = "FROM vpsops-demo/auth:v1\nLABEL vpsops.test.variant=%s\n" % variant
    subprocess.run(["docker", "build", "-q", "-t", ref, "-"], input=dockerfile, text=True, check=True,
                   capture_output=True, timeout=120)
    return image_id(ref)


def image_id(ref):
    proc = run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def running(project=STACK):
    """{service: (container id, image id)} of the project."""
    ids = run(["docker", "ps", "-q", "--no-trunc", "--filter", "label=com.docker.compose.project=%s" % project]).stdout.split()
    result = {}
    if ids:
        for item in json.loads(run(["docker", "inspect"] + ids).stdout):
            result[item["Config"]["Labels"]["com.docker.compose.service"]] = (item["Id"], item["Image"])
    return result


class Lab:
    def __init__(self, root):
        self.root = root
        self.state_dir = os.path.join(root, "state")
        self.project_dir = os.path.join(root, "project")
        os.makedirs(self.project_dir)
        for name, text in (("front.yml", FRONT), ("back.yml", BACK)):
            with open(os.path.join(self.project_dir, name), "w") as handle:
                handle.write(text)
        with open(os.path.join(self.project_dir, ".env"), "w") as handle:
            handle.write("APP_TOKEN=%s\nWEB_PORT=%d\n" % (SECRET, WEB_PORT))

    def args(self, **extra):
        args = {"stack": STACK, "state_dir": self.state_dir}
        args.update(extra)
        return args

    def release(self, *options, raw=False, **extra):
        args = self.args(project_dir=self.project_dir, files=["front.yml", "back.yml"], phases=PHASES)
        args.update(extra)
        return ansible_module("compose_release", args, *options, raw=raw)

    def deploy(self):
        """Record a release, bring it up as a user would (plain docker compose with the returned
        files), and make it live. Returns the release result."""
        rc, rel = self.release()
        assert rc == 0, rel
        argv = ["docker", "compose", "-p", STACK, "--project-directory", rel["project_dir"],
                "--env-file", rel["env_file"]]
        for path in rel["files"]:
            argv += ["-f", path]
        run(argv + ["up", "-d", "--wait", "--wait-timeout", "60", "--pull", "never", "--no-build"])
        rc, live = ansible_module("compose_release", self.args(release=rel["release"], state="live", keep=10))
        assert rc == 0, live
        return rel

    def manifest(self, release_id):
        with open(os.path.join(self.state_dir, "releases", release_id, "manifest.json")) as handle:
            return json.load(handle)

    def live(self):
        return os.path.basename(os.readlink(os.path.join(self.state_dir, "current")))

    def history(self):
        with open(os.path.join(self.state_dir, "history.jsonl")) as handle:
            return [json.loads(line) for line in handle]

    def rollback(self, *options, **extra):
        args = dict(timeout=60)
        args.update(extra)
        return ansible_module("compose_rollback", self.args(**args), *options)


@pytest.fixture(scope="module")
def rel(lab):
    root = tempfile.mkdtemp(prefix="vpsops-rel-")
    env = Lab(root)
    yield env
    run(["docker", "compose", "-p", STACK, "down", "-v", "--remove-orphans", "-t", "2"], check=False)
    refs = run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]).stdout.split()
    doomed = [r for r in refs if r.startswith(("vpsops-relt/", "vpsops/%s/" % STACK))]
    if doomed:
        run(["docker", "image", "rm", "-f"] + doomed, check=False)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def history(rel):
    """Release 1 (variant a), then release 2 (variant b under the same tags), both deployed."""
    ids = {1: {}, 2: {}}
    for service in SERVICES:
        ids[1][service] = build(service, "a-%s" % service)
    r1 = rel.deploy()
    for service in SERVICES:
        ids[2][service] = build(service, "b-%s" % service)
    r2 = rel.deploy()
    assert all(ids[1][s] != ids[2][s] for s in SERVICES)
    return {"r1": r1["release"], "r2": r2["release"], "ids": ids}


def test_release_pins_every_service_and_keeps_secrets_off_the_output(rel, history):
    manifest = rel.manifest(history["r2"])
    assert manifest["status"] == "live" and rel.live() == history["r2"]
    for service in SERVICES:
        svc = manifest["services"][service]
        assert svc["image_id"] == history["ids"][2][service]
        assert svc["ref"] == "vpsops/%s/%s:id-%s" % (STACK, service, svc["image_id"][7:31])
        assert image_id(svc["ref"]) == svc["image_id"]
    release_dir = os.path.join(rel.state_dir, "releases", history["r2"])
    assert stat.S_IMODE(os.stat(release_dir).st_mode) == 0o700
    for name in ("front.yml", "back.yml", ".env", "images.lock.yml", "manifest.json"):
        assert stat.S_IMODE(os.stat(os.path.join(release_dir, name)).st_mode) == 0o600, name
    with open(os.path.join(release_dir, "images.lock.yml")) as handle:
        lock = handle.read()
    assert all('"%s"' % manifest["services"][s]["ref"] in lock for s in SERVICES)
    # The same files and images again: nothing new is recorded.
    rc, again, proc = rel.release("-vvv", raw=True)
    assert rc == 0 and again["changed"] is False and again["release"] == history["r2"], again
    assert SECRET not in proc.stdout + proc.stderr
    assert CHECK_SECRET not in proc.stdout + proc.stderr
    # The phases' checks are recorded (for rollbacks to gate on) without their secrets: one the env
    # file holds is a reference to its variable (the rollbacks below gate with it read back), a check
    # with any other secret is left out.
    front = [p for p in manifest["phases"] if p["name"] == "front"][0]
    assert front["services"] == ["web"] and [c["name"] for c in front["checks"]] == ["web"]
    assert front["checks"][0]["headers"] == {"X-Token": {"from_env": "APP_TOKEN"}}
    with open(os.path.join(release_dir, "manifest.json")) as handle:
        text = handle.read()
    assert SECRET not in text and CHECK_SECRET not in text
    assert [e["event"] for e in rel.history()].count("release_created") == 2


def test_info_lists_releases_newest_first(rel, history):
    rc, info, proc = ansible_module("compose_release_info", rel.args(), raw=True)
    assert rc == 0, info
    ids = [r["id"] for r in info["releases"]]
    assert ids.index(history["r2"]) < ids.index(history["r1"])
    assert info["live"] == history["r2"] and info["previous"] == history["r1"]
    assert CHECK_SECRET not in proc.stdout
    first = [r for r in info["releases"] if r["id"] == history["r1"]][0]
    assert first["services"]["api"]["image_id"] == history["ids"][1]["api"]
    assert SECRET not in proc.stdout


def test_rollback_check_mode_plans_and_changes_nothing(rel, history):
    before = running()
    rc, plan = rel.rollback("--check", "--diff")
    assert rc == 0 and plan["changed"] is True, plan
    assert plan["to"] == history["r1"] and plan["from"] == history["r2"]
    for service in SERVICES:
        assert plan["services"][service]["before"] == history["ids"][2][service]
        assert plan["services"][service]["after"] == history["ids"][1][service]
    assert running() == before and rel.live() == history["r2"]


def test_rollback_after_moved_tag_and_prune_runs_the_exact_old_images(rel, history):
    # The tags now point at release 2's images; release 1's images have no tag of their own left
    # except the release's pin tag. A prune must not take them away.
    run(["docker", "image", "prune", "-f"])
    for service in SERVICES:
        assert image_id("vpsops-relt/%s:cur" % service) == history["ids"][2][service]
        assert image_id(history["ids"][1][service]) == history["ids"][1][service]
    rc, result = rel.rollback()
    assert rc == 0, result
    assert result["to"] == history["r1"] and result["changed"] is True
    now = running()
    for service in SERVICES:
        assert now[service][1] == history["ids"][1][service], service
    assert rel.live() == history["r1"]
    assert rel.manifest(history["r1"])["status"] == "live"
    assert rel.manifest(history["r2"])["status"] == "rolled_back"
    events = [e["event"] for e in rel.history()]
    assert events[-2:] == ["rollback_started", "rolled_back"]
    # Rolling back to what already runs changes nothing.
    rc, again = rel.rollback(to=history["r1"])
    assert rc == 0 and again["changed"] is False, again
    assert running() == now


def test_rollback_gates_on_the_checks_recorded_with_the_target(rel, history):
    bad_phases = [dict(PHASES[0], checks=[{"name": "nothing-listens", "type": "tcp", "port": 1}]), PHASES[1]]
    rc, target = rel.release(phases=bad_phases)
    assert rc == 0 and target["changed"] is True, target
    live = rel.live()
    rc, result = rel.rollback(to=target["release"], phases=["front"], timeout=5)
    assert rc != 0 and "health gate failed" in result["msg"] and "nothing-listens" in result["msg"], result
    assert rel.live() == live
    assert rel.history()[-1]["event"] == "rollback_failed"
    assert ansible_module("compose_release", rel.args(release=target["release"], state="failed"))[0] == 0


def test_previous_skips_the_release_that_was_rolled_back(rel, history):
    rc, result = rel.rollback()
    assert rc != 0
    assert "no previous release" in result["msg"], result["msg"]


def test_roll_back_one_service_leaves_the_others_untouched(rel, history):
    # Go forward again to release 2 by id, then take only api back to release 1.
    rc, result = rel.rollback(to=history["r2"])
    assert rc == 0, result
    before = running()
    rc, result = rel.rollback(to=history["r1"], services=["api"])
    assert rc == 0, result
    after = running()
    assert after["api"][1] == history["ids"][1]["api"] and after["api"][0] != before["api"][0]
    assert after["web"] == before["web"] and after["worker"] == before["worker"]
    new = result["release"]
    assert new and new not in (history["r1"], history["r2"]) and rel.live() == new
    manifest = rel.manifest(new)
    assert manifest["services"]["api"]["image_id"] == history["ids"][1]["api"]
    assert manifest["services"]["web"]["image_id"] == history["ids"][2]["web"]
    assert manifest["meta"]["services"] == ["api"]


def test_roll_back_one_phase_touches_only_its_services(rel, history):
    before = running()
    rc, result = rel.rollback(to=history["r1"], phases=["front"])
    assert rc == 0, result
    assert sorted(result["services"]) == ["web"]
    after = running()
    assert after["web"][1] == history["ids"][1]["web"] and after["web"][0] != before["web"][0]
    assert after["api"] == before["api"] and after["worker"] == before["worker"]


@pytest.mark.parametrize("args, expect", [
    ({"to": "no-such-release"}, "no-such-release does not exist"),
    ({"to": "-40"}, "earlier good release"),
    ({"services": ["nope"]}, "'nope' is not a service of release"),
    ({"phases": ["middle"]}, "'middle' is not a phase of release"),
    ({"timeout": 0}, "timeout must be 1 second or more"),
])
def test_bad_input_is_refused_before_any_change(rel, history, args, expect):
    before, live = running(), rel.live()
    args.setdefault("to", history["r1"])
    rc, result = rel.rollback(**args)
    assert rc != 0 and expect in result["msg"], result
    assert running() == before and rel.live() == live


def test_corrupt_manifest_is_refused_and_nothing_is_half_applied(rel, history):
    path = os.path.join(rel.state_dir, "releases", history["r2"], "manifest.json")
    with open(path) as handle:
        good = handle.read()
    before, live = running(), rel.live()
    try:
        with open(path, "w") as handle:
            handle.write(good[: len(good) // 2])
        rc, result = rel.rollback(to=history["r2"])
        assert rc != 0 and "corrupt" in result["msg"] and history["r2"] in result["msg"], result
        assert running() == before and rel.live() == live
        rc, info = ansible_module("compose_release_info", rel.args())
        assert rc == 0 and history["r2"] in info["corrupt"]
        # A compose file changed behind the store's back is refused too.
        with open(path, "w") as handle:
            handle.write(good)
        front = os.path.join(rel.state_dir, "releases", history["r2"], "front.yml")
        with open(front, "a") as handle:
            handle.write("# edited\n")
        rc, result = rel.rollback(to=history["r2"])
        assert rc != 0 and "sha256 mismatch" in result["msg"], result
        assert running() == before
    finally:
        with open(path, "w") as handle:
            handle.write(good)
        with open(front, "w") as handle:
            handle.write(FRONT)


def test_missing_target_image_names_service_image_and_remedy(rel, history):
    # A release whose web image is then deleted from the host entirely.
    build("web", "gone")
    rc, gone = rel.release()
    assert rc == 0, gone
    gone_id = gone["services"]["web"]["image_id"]
    build("web", "b-web")  # the tag moves back; only the pin tag holds the doomed image
    run(["docker", "image", "rm", "-f", gone_id])
    before = running()
    rc, result = rel.rollback(to=gone["release"])
    assert rc != 0, result
    short = gone_id.split(":")[-1][:12]
    assert "service web" in result["msg"] and short in result["msg"] and "docker load" in result["msg"], result
    assert running() == before
    # A pending release is protected; once marked failed it can be retired.
    rc, result = ansible_module("compose_release", rel.args(release=gone["release"], state="absent"))
    assert rc != 0 and "pending" in result["msg"], result
    assert ansible_module("compose_release", rel.args(release=gone["release"], state="failed"))[0] == 0
    assert ansible_module("compose_release", rel.args(release=gone["release"], state="absent"))[0] == 0
    assert not os.path.exists(os.path.join(rel.state_dir, "releases", gone["release"]))


def test_docker_daemon_down_is_a_clear_failure(rel, history, tmp_path):
    cli = tmp_path / "docker-down"
    cli.write_text("#!/bin/sh\nDOCKER_HOST=unix://%s/nothing.sock exec docker \"$@\"\n" % tmp_path)
    cli.chmod(0o755)
    rc, result = rel.rollback(to=history["r1"], docker_cli=str(cli))
    assert rc != 0 and "Docker daemon is not reachable" in result["msg"], result


def test_state_dir_not_writable(rel, history):
    ro = tempfile.mkdtemp(prefix="vpsops-rel-ro-")
    try:
        shutil.copytree(rel.state_dir, os.path.join(ro, "state"), symlinks=True)
        run(["mount", "--bind", os.path.join(ro, "state"), os.path.join(ro, "state")])
        run(["mount", "-o", "remount,bind,ro", os.path.join(ro, "state")])
        try:
            before = running()
            rc, result = ansible_module("compose_rollback", {
                "stack": STACK, "state_dir": os.path.join(ro, "state"), "to": history["r2"]})
            assert rc != 0 and "not writable" in result["msg"], result
            assert running() == before
            rc, result = ansible_module("compose_release", {
                "stack": STACK, "state_dir": os.path.join(ro, "state"), "project_dir": rel.project_dir,
                "files": ["front.yml"], "release": "ro-test"})
            assert rc != 0 and "not writable" in result["msg"], result
        finally:
            run(["umount", os.path.join(ro, "state")], check=False)
    finally:
        shutil.rmtree(ro, ignore_errors=True)


def test_retention_keeps_live_and_previous_and_untags_the_rest(rel, history):
    releases = sorted(os.listdir(os.path.join(rel.state_dir, "releases")))
    pins = dict((r, [s["pin_tag"] for s in rel.manifest(r)["services"].values()]) for r in releases)
    live = rel.live()
    rc, result = ansible_module("compose_release", rel.args(release=live, state="live", keep=2))
    assert rc == 0, result
    kept = sorted(os.listdir(os.path.join(rel.state_dir, "releases")))
    assert live in kept and len(kept) <= max(2, 3) and len(kept) < len(releases), (releases, kept)
    still_pinned = set(tag for r in kept for tag in pins[r])
    for gone in set(releases) - set(kept):
        for tag in pins[gone]:
            assert (image_id(tag) is not None) == (tag in still_pinned), tag
    for release_id in kept:
        manifest = rel.manifest(release_id)
        # The rollback targets keep their images. The newest pending release is kept too (a deploy
        # may be under way), whatever its images: the test before this one deleted its web image.
        if manifest["status"] not in ("live", "superseded"):
            continue
        for service, svc in manifest["services"].items():
            assert image_id(svc["ref"]) == svc["image_id"], (release_id, service)
    rc, result = ansible_module("compose_release", rel.args(release=live, state="absent"))
    assert rc != 0 and "live" in result["msg"]


# --------------------------------------------------------------------------------------------
# the deploy lock as the module runs it
# --------------------------------------------------------------------------------------------
def test_lock_second_owner_refused_with_holder_details_release_twice(rel):
    args = rel.args(owner="alice@ctl-1:run-1", controller="ctl-1", pid=4242, ttl=600)
    rc, first = ansible_module("deploy_lock", args)
    assert rc == 0 and first["changed"] and first["lock"]["owner"] == "alice@ctl-1:run-1", first
    try:
        rc, second = ansible_module("deploy_lock", rel.args(owner="bob@ctl-2:run-9"))
        assert rc != 0
        for part in ("alice@ctl-1:run-1", "ctl-1", "4242", "ttl 600"):
            assert part in second["msg"], second["msg"]
        rc, beat = ansible_module("deploy_lock", dict(args, state="heartbeat"))
        assert rc == 0 and beat["lock"]["heartbeat_epoch"] >= first["lock"]["heartbeat_epoch"]
    finally:
        rc, freed = ansible_module("deploy_lock", dict(args, state="released"))
    assert rc == 0 and freed["changed"] is True
    rc, again = ansible_module("deploy_lock", dict(args, state="released"))
    assert rc == 0 and again["changed"] is False
    assert not os.path.exists(os.path.join(rel.state_dir, "lock.json"))


def test_lock_stale_after_ttl_is_taken_over_with_a_warning(rel):
    rc, first = ansible_module("deploy_lock", rel.args(owner="crashed@ctl:1", ttl=1))
    assert rc == 0, first

    def taken():
        rc, result = ansible_module("deploy_lock", rel.args(owner="next@ctl:2", ttl=600))
        return result if rc == 0 else None
    result = wait_until("the stale lock is taken over", taken, timeout=30, interval=0.5)
    assert result["took_over"]["owner"] == "crashed@ctl:1"
    assert any("stale" in w for w in result.get("warnings", [])), result
    assert ansible_module("deploy_lock", rel.args(owner="next@ctl:2", state="released"))[0] == 0
