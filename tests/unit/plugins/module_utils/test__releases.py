"""The release store without Docker: manifests, ordering, targets, retention, atomic writes, the lock."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _releases as rel
from ansible_collections.vpsops.deploy.plugins.module_utils import _rollback as rb
from ansible_collections.vpsops.deploy.plugins.module_utils._env import read_env_file


def make_store(tmp_path, stack="shop"):
    return rel.Store(stack, str(tmp_path / "state"))


def add_release(store, tmp_path, release_id, status=None, image="sha256:%s"):
    """A release with one compose file and two services; optionally pushed to a status."""
    compose = tmp_path / ("compose-%s.yml" % release_id)
    compose.write_text("services: {web: {image: web}, api: {image: api}}\n# %s\n" % release_id)
    services = dict((name, {"image": name + ":x", "image_id": image % (name + release_id), "ref": "r/%s" % name,
                            "pin_tag": rel.pin_ref(store.stack, name, image % (name + release_id))})
                    for name in ("web", "api"))
    store.ensure()
    manifest = store.create(release_id, [str(compose)], dict((n, s["ref"]) for n, s in services.items()), services,
                            [{"name": "front", "services": ["web"], "files": [], "checks": []}], str(tmp_path))
    if status == "live":
        store.make_live(manifest)
    elif status:
        store.set_status(manifest, status)
    return store.load(release_id)


def test_create_writes_a_complete_release_with_private_modes(tmp_path):
    store = make_store(tmp_path)
    env = tmp_path / ".env"
    env.write_text("TOKEN=secret\n")
    compose = tmp_path / "a.yml"
    compose.write_text("services: {}\n")
    store.ensure()
    manifest = store.create("r1", [str(compose)], {"web": "vpsops/shop/web:r1"},
                            {"web": {"image": "web:1", "image_id": "sha256:1", "ref": "vpsops/shop/web:r1"}},
                            [], str(tmp_path), env_file=str(env))
    base = tmp_path / "state" / "releases" / "r1"
    assert sorted(os.listdir(base)) == [".env", "a.yml", "images.lock.yml", "manifest.json"]
    assert all(os.stat(base / n).st_mode & 0o777 == 0o600 for n in os.listdir(base))
    assert os.stat(base).st_mode & 0o777 == 0o700
    assert manifest["seq"] == 1 and manifest["status"] == "pending"
    assert store.compose_files(manifest) == [str(base / "a.yml"), str(base / "images.lock.yml")]
    assert (base / "images.lock.yml").read_text().splitlines()[1:] == [
        "services:", '  "web":', '    image: "vpsops/shop/web:r1"']
    assert rel.verify_files(store, manifest) is None
    assert not [n for n in os.listdir(tmp_path / "state" / "releases") if n.startswith(".")]


def test_a_failed_create_leaves_no_release_directory(tmp_path):
    store = make_store(tmp_path)
    store.ensure()
    with pytest.raises(IOError):
        store.create("r1", [str(tmp_path / "missing.yml")], {}, {}, [], str(tmp_path))
    assert os.listdir(tmp_path / "state" / "releases") == []


def test_order_is_the_counter_not_the_file_time(tmp_path):
    store = make_store(tmp_path)
    add_release(store, tmp_path, "b-first", "live")
    add_release(store, tmp_path, "a-second", "live")
    # Make the older release look newer on disk: order must not change.
    future = time.time() + 3600
    os.utime(store.release_dir("b-first"), (future, future))
    manifests = store.releases()[0]
    assert [m["id"] for m in manifests] == ["a-second", "b-first"]
    assert store.resolve("previous") == "b-first"


def test_previous_live_and_minus_n(tmp_path):
    store = make_store(tmp_path)
    for release_id in ("r1", "r2", "r3"):
        add_release(store, tmp_path, release_id, "live")
    assert store.live_id() == "r3"
    assert store.resolve("previous") == "r2" and store.resolve("-1") == "r2" and store.resolve("-2") == "r1"
    with pytest.raises(rel.ReleaseError, match="only 2 earlier good release"):
        store.resolve("-3")
    # A deploy that did not finish: previous means the live release.
    add_release(store, tmp_path, "r4")
    assert store.resolve("previous") == "r3" and store.resolve("live") == "r3"
    # Once failed (its deploy rolled back), previous is again the release before the live one.
    store.set_status(store.load("r4"), "failed")
    assert store.resolve("previous") == "r2"


def test_previous_never_goes_back_to_a_release_rolled_back_from(tmp_path):
    store = make_store(tmp_path)
    add_release(store, tmp_path, "r1", "live")
    r2 = add_release(store, tmp_path, "r2", "live")
    store.make_live(store.load("r1"), replaced_status="rolled_back")
    assert store.load("r2")["status"] == "rolled_back" and r2["id"] == "r2"
    with pytest.raises(rel.ReleaseError, match="no previous release"):
        store.resolve("previous")


def test_unknown_and_corrupt_releases_are_refused(tmp_path):
    store = make_store(tmp_path)
    add_release(store, tmp_path, "r1", "live")
    with pytest.raises(rel.ReleaseError, match="nope does not exist .* known releases: r1"):
        store.resolve("nope")
    path = tmp_path / "state" / "releases" / "r1" / "manifest.json"
    data = json.loads(path.read_text())
    for broken in ('{"id": "r1"', json.dumps(dict(data, id="r9")), json.dumps(dict(data, stack="other")),
                   json.dumps(dict(data, services={"web": {"image": "x"}}))):
        path.write_text(broken)
        with pytest.raises(rel.CorruptRelease, match="corrupt"):
            store.load("r1")
    assert store.releases() == ([], {"r1": store.releases()[1]["r1"]})


def test_scope_of_phases_and_services(tmp_path):
    store = make_store(tmp_path)
    target = add_release(store, tmp_path, "r1", "live")
    assert rb.scope_of(target) == (["api", "web"], True)
    assert rb.scope_of(target, phases=["front"]) == (["web"], False)
    assert rb.scope_of(target, services=["api"]) == (["api"], False)
    with pytest.raises(rel.ReleaseError, match="'back' is not a phase of release r1; its phases are front"):
        rb.scope_of(target, phases=["back"])
    with pytest.raises(rel.ReleaseError, match="'db' is not a service of release r1; its services are api, web"):
        rb.scope_of(target, services=["db"])


def test_retention_never_removes_live_previous_or_pending(tmp_path):
    store = make_store(tmp_path)
    for index in range(1, 7):
        add_release(store, tmp_path, "r%d" % index, "live")
    store.set_status(store.load("r6"), "superseded")
    store.make_live(store.load("r3"), replaced_status="rolled_back")  # r3 live again
    add_release(store, tmp_path, "r7")  # a deploy in progress
    doomed = store.retention_plan(2)
    assert "r3" not in doomed and "r7" not in doomed
    assert store.previous_of("r3", store.releases()[0]) == "r2"
    assert "r2" not in doomed
    assert set(doomed) == {"r1", "r4", "r5"}
    with pytest.raises(rel.ReleaseError, match="live"):
        store.retire("r3")
    store.retire("r1")
    assert "r1" not in store.ids()


def test_referenced_backups_reads_every_release_and_refuses_to_guess(tmp_path):
    store = make_store(tmp_path)
    manifest = add_release(store, tmp_path, "r1", "live")
    manifest["backups"] = [{"path": str(tmp_path / "b" / ".." / "ar.dump")}]
    store.save(manifest)
    assert rel.referenced_backups(store.state_dir) == {str(tmp_path / "ar.dump")}
    (tmp_path / "state" / "releases" / "r1" / "manifest.json").write_text("{")
    with pytest.raises(rel.CorruptRelease):
        rel.referenced_backups(store.state_dir)


def test_history_is_append_only_json_lines(tmp_path):
    store = make_store(tmp_path)
    store.ensure()
    store.record("a", x=1)
    store.record("b", x=2)
    assert [e["event"] for e in store.history()] == ["a", "b"]
    assert all(json.loads(line) for line in open(store.history_path))


def test_bad_stack_and_release_names(tmp_path):
    with pytest.raises(rel.ReleaseError, match="stack must be"):
        rel.Store("Bad Name", str(tmp_path))
    store = make_store(tmp_path)
    store.ensure()
    with pytest.raises(rel.ReleaseError, match="release must match"):
        store.create("../x", [], {}, {}, [], str(tmp_path))


# the lock ------------------------------------------------------------------------------------

def _contend(state_dir, owner, barrier, results):
    store = rel.Store("shop", state_dir)
    barrier.wait()
    try:
        store.acquire(owner, 600)
        results.put(owner)
    except rel.LockHeld:
        results.put(None)


def test_concurrent_acquisitions_one_wins(tmp_path):
    state_dir = str(tmp_path / "state")
    rel.Store("shop", state_dir).ensure()
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(state_dir, "owner-%d" % i, barrier, results)) for i in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    winners = [w for w in (results.get(timeout=5) for proc in procs) if w]
    assert len(winners) == 1
    assert rel.Store("shop", state_dir).read_lock()["owner"] == winners[0]


def test_stale_lock_is_taken_over_and_a_live_one_is_not(tmp_path):
    store = make_store(tmp_path)
    lock, changed, took = store.acquire("a", ttl=60, controller="ctl", pid=1, now=1000)
    assert changed and took is None
    with pytest.raises(rel.LockHeld, match="locked by a .*controller ctl, pid 1"):
        store.acquire("b", ttl=60, now=1059)
    lock, changed, took = store.acquire("b", ttl=60, now=1061)
    assert changed and took["owner"] == "a" and lock["owner"] == "b"
    with pytest.raises(rel.LockHeld, match="no longer ours"):
        store.heartbeat("a")
    with pytest.raises(rel.LockHeld):
        store.release_lock("a")
    assert store.release_lock("b")[1] is True and store.release_lock("b") == (None, False)
    events = [e["event"] for e in store.history()]
    assert events == ["lock_acquired", "lock_taken_over", "lock_released"]


def test_a_process_killed_while_holding_the_lock_blocks_until_its_ttl(tmp_path):
    state_dir = str(tmp_path / "state")
    code = ("import sys, time; sys.path[:0] = %r\n"
            "from ansible_collections.vpsops.deploy.plugins.module_utils import _releases as r\n"
            "r.Store('shop', %r).acquire('crashed', 2)\n"
            "print('held', flush=True); time.sleep(60)\n" % (sys.path, state_dir))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    store = rel.Store("shop", state_dir)
    with pytest.raises(rel.LockHeld, match="crashed"):
        store.acquire("next", 600)
    lock, changed, took = store.acquire("next", 600, now=time.time() + 3)
    assert took["owner"] == "crashed" and lock["owner"] == "next"


def test_a_torn_lock_file_counts_as_stale(tmp_path):
    store = make_store(tmp_path)
    store.ensure()
    with open(store.lock_path, "w") as handle:
        handle.write('{"owner": "x"')
    lock, changed, took = store.acquire("me", 60)
    assert changed and took["owner"] == "<unreadable lock file>"


def test_pin_tags_name_the_image_so_releases_of_one_image_share_them():
    one = rel.pin_ref("shop", "Web_1", "sha256:" + "ab" * 32)
    assert one == "vpsops/shop/web_1:id-" + "ab" * 12
    assert rel.pin_ref("shop", "Web_1", "sha256:" + "ab" * 32) == one
    assert rel.pin_ref("shop", "Web_1", "sha256:" + "cd" * 32) != one


class FakeTags:
    """Records untag calls (retire's only use of Docker)."""

    def __init__(self):
        self.removed = []

    def untag(self, ref):
        self.removed.append(ref)
        return True


def test_retire_keeps_a_pin_tag_another_release_still_uses(tmp_path):
    store = make_store(tmp_path)
    add_release(store, tmp_path, "r1", "live")
    add_release(store, tmp_path, "r2", "live")
    add_release(store, tmp_path, "r3", "live")
    r1, r2 = store.load("r1"), store.load("r2")
    # r2 runs r1's web image (only api moved): they share web's pin tag.
    r2["services"]["web"] = dict(r1["services"]["web"])
    store.save(r2)
    tags = FakeTags()
    store.retire("r1", tags)
    assert tags.removed == [r1["services"]["api"]["pin_tag"]]


def test_rollback_order_walks_the_phases_backwards_and_skips_what_does_not_move():
    target = {"phases": [{"name": "infrastructure", "services": ["db", "nats"]},
                         {"name": "platform", "services": ["auth", "lb"]},
                         {"name": "modules", "services": ["ar", "payments"]}]}
    plan = dict((name, {"changes": name in ("db", "auth", "ar", "payments", "extra")})
                for name in ("db", "nats", "auth", "lb", "ar", "payments", "extra"))
    groups = rb.reverse_phase_groups(target, sorted(plan), plan)
    assert groups == [("modules", ["ar", "payments"]), ("platform", ["auth"]), ("infrastructure", ["db"]),
                      (None, ["extra"])]
    assert rb.reverse_phase_groups(target, ["lb", "nats"], plan) == []


def test_takeover_names_the_one_live_holder_that_may_be_replaced(tmp_path):
    store = make_store(tmp_path)
    store.acquire("dead-run", ttl=600, controller="ctl", pid=4242, now=1000)
    with pytest.raises(rel.LockHeld, match="dead-run"):
        store.acquire("rescuer", ttl=600, now=1010, takeover="someone-else")
    lock, changed, took = store.acquire("rescuer", ttl=600, now=1010, takeover="dead-run")
    assert changed and took["owner"] == "dead-run" and lock["owner"] == "rescuer"
    assert [e["event"] for e in store.history()][-1] == "lock_taken_over"


def test_a_rollback_ends_the_unfinished_deploys_after_its_target(tmp_path):
    store = make_store(tmp_path)
    live = add_release(store, tmp_path, "r1", "live")
    add_release(store, tmp_path, "r2")  # a deploy that died before it changed anything
    assert rb.fail_pending_after(store, live, "r1") == ["r2"]
    assert store.load("r2")["status"] == "failed" and store.load("r1")["status"] == "live"
    assert rb.fail_pending_after(store, live, "r1") == []
    assert store.history()[-1]["event"] == "pending_failed"


def test_checks_keep_no_secret_only_a_reference_to_the_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("RELEASE_TAG='v2'\nAR_DB_PASSWORD='s3cret-ar'\nAPI_TOKEN=\"Bearer t0ken\"\n")
    env = read_env_file(str(env_file))
    assert env == {"RELEASE_TAG": "v2", "AR_DB_PASSWORD": "s3cret-ar", "API_TOKEN": "Bearer t0ken"}
    checks = [
        {"name": "ar-db", "type": "postgres", "port": 5434, "login_password": "s3cret-ar"},
        {"name": "api", "type": "http", "url": "http://127.0.0.1/", "headers": {"Authorization": "Bearer t0ken"}},
        {"name": "cache", "type": "redis", "port": 6379, "password": "not-in-the-env"},
        {"name": "web", "type": "http", "url": "http://127.0.0.1/"},
    ]
    sealed = rel.seal_checks(checks, env)
    text = json.dumps(sealed)
    assert "s3cret-ar" not in text and "t0ken" not in text and "not-in-the-env" not in text
    assert sealed[0]["login_password"] == {"from_env": "AR_DB_PASSWORD"}
    assert sealed[1]["headers"] == {"Authorization": {"from_env": "API_TOKEN"}}
    # A check whose secret the env file does not hold is not recorded: without it, it could only fail.
    assert [c["name"] for c in sealed] == ["ar-db", "api", "web"]
    # The rollback's gate reads them back from the release's env file copy.
    target = {"phases": [{"services": ["ar"], "checks": sealed}]}
    assert rb.checks_for(target, ["ar"], str(env_file)) == [checks[0], checks[1], checks[3]]


# a lock file that is not a lock, the run's identity in the lock ----------------------------------

@pytest.mark.parametrize("text,problem", [
    ("[]", "a JSON list, not an object"),
    ("42", "a JSON int, not an object"),
    ('"locked"', "a JSON str, not an object"),
    ("null", "a JSON NoneType, not an object"),
    ('{"owner": 7, "heartbeat_epoch": 1, "ttl": 60}', "owner is missing or not a string"),
    ('{"owner": "x", "heartbeat_epoch": "soon", "ttl": 60}', "heartbeat_epoch is 'soon', not a number"),
    ('{"owner": "x", "heartbeat_epoch": 1}', "ttl is None, not a number"),
])
def test_a_lock_file_that_is_not_a_lock_is_refused_clearly_and_left_as_it_was(tmp_path, text, problem):
    store = make_store(tmp_path)
    store.ensure()
    with open(store.lock_path, "w") as handle:
        handle.write(text)
    for call in (lambda: store.acquire("me", 60), lambda: rel.refuse_foreign_lock(store, "me"),
                 lambda: store.heartbeat("me"), lambda: store.release_lock("me")):
        with pytest.raises(rel.CorruptLock) as caught:
            call()
        message = str(caught.value)
        assert problem in message and store.lock_path in message and "state=released and force=true" in message
    with open(store.lock_path) as handle:
        assert handle.read() == text  # nothing was changed, nothing taken
    assert rel.Store.protected(store) == set()  # retention reads it too, without a traceback
    lock, changed = store.release_lock("me", force=True)
    assert changed and not os.path.exists(store.lock_path)
    assert store.acquire("me", 60)[1] is True


def test_the_lock_keeps_the_run_identity_it_was_given(tmp_path):
    store = make_store(tmp_path)
    identity = rel.controller_identity(os.getpid())
    lock, _changed, _took = store.acquire("me", 60, "ctl", os.getpid(), identity=dict(identity, extra="dropped"))
    assert store.read_lock()["identity"] == identity == lock["identity"]
    assert rel.dead_holder_here(store.read_lock(), dict(identity, pid=1, start=0)) is None  # it runs: this process


# retention and an orphaned pending release -----------------------------------------------------

def test_an_orphaned_pending_release_is_not_kept_once_its_lock_is_gone_and_a_later_release_was_made(tmp_path):
    store = make_store(tmp_path)
    add_release(store, tmp_path, "r1", "live")
    add_release(store, tmp_path, "r2", "live")
    # Deploy A takes the lock, records r3 (pending), and is killed.
    store.acquire("A", ttl=60, now=1000)
    orphan = store.create("r3", [str(tmp_path / "compose-r1.yml")], {}, {}, [], str(tmp_path),
                          lock_owner=store.lock_holder(now=1000))
    assert orphan["lock_owner"] == "A"
    assert "r3" in store.protected()  # the newest release: its deploy may still run
    # Deploy B, later (A's lock long stale), takes over the lock and makes r4, r5 live.
    store.acquire("B", ttl=60, now=time.time())
    add_release(store, tmp_path, "r4", "live")
    assert "r3" not in store.protected()  # a later release, and A holds no lock: an orphan
    add_release(store, tmp_path, "r5", "live")
    store.release_lock("B")
    assert store.retention_plan(2) == ["r3", "r2", "r1"]
    store.retire("r3")
    assert store.ids() == ["r1", "r2", "r4", "r5"]


def test_a_pending_release_whose_deploy_still_holds_the_lock_is_kept(tmp_path):
    store = make_store(tmp_path)
    add_release(store, tmp_path, "r1", "live")
    store.acquire("A", ttl=600)
    store.create("r2", [str(tmp_path / "compose-r1.yml")], {}, {}, [], str(tmp_path), lock_owner=store.lock_holder())
    add_release(store, tmp_path, "r3", "live")  # made under A's lock (a partial rollback, say)
    assert "r2" in store.protected() and "r2" not in store.retention_plan(0)
    store.release_lock("A")
    assert "r2" not in store.protected() and "r2" in store.retention_plan(0)
    with open(store.lock_path, "w") as handle:
        handle.write("[]")  # a lock nobody can read: every pending release may be in use
    assert "r2" in store.protected()


# image pulls ----------------------------------------------------------------------------------------

# What `docker pull --quiet 127.0.0.1:9/shop/web:v2` answered on the lab (Docker 20.10, no registry there).
PULL_REFUSED = ('docker pull 127.0.0.1:9/shop/web:v2 failed (rc=1): Error response from daemon: Get '
                '"http://127.0.0.1:9/v2/": dial tcp 127.0.0.1:9: connect: connection refused')


class FakePulls:
    """Docker for resolve_images: images on the host, pulls that fail as the lab's do."""

    def __init__(self, present):
        self.present = present
        self.pulled = []

    def images(self, refs):
        return dict((r, {"id": "sha256:" + r, "repo_digests": [], "repo_tags": [r]}) for r in refs if r in self.present)

    def pull(self, ref):
        from ansible_collections.vpsops.deploy.plugins.module_utils._compose import DockerError
        self.pulled.append(ref)
        raise DockerError(PULL_REFUSED)


class FakeModel:
    def __init__(self, services):
        self.services = services

    def config(self):
        return {"services": self.services}


@pytest.mark.parametrize("pull", ["missing", "always"])
def test_a_failed_pull_is_reported_with_dockers_error_not_swallowed(pull):
    docker = FakePulls({"api:v1"})
    model = FakeModel({"web": {"image": "127.0.0.1:9/shop/web:v2"}, "api": {"image": "api:v1"}})
    with pytest.raises(rel.ReleaseError) as caught:
        rel.resolve_images(docker, model, "shop", pull=pull)
    message = str(caught.value)
    assert docker.pulled == ["127.0.0.1:9/shop/web:v2"]
    assert "web (127.0.0.1:9/shop/web:v2)" in message and "pulling failed" in message
    assert "connect: connection refused" in message and "Nothing was changed" in message


def test_with_pull_never_a_missing_image_is_named_and_nothing_is_pulled():
    docker = FakePulls(set())
    with pytest.raises(rel.ReleaseError, match=r"web \(web:v2\): build or pull them first \(pull=never\)"):
        rel.resolve_images(docker, FakeModel({"web": {"image": "web:v2"}}), "shop", pull="never")
    assert docker.pulled == []


# the rollback's image pre-check ------------------------------------------------------------------

class FakeHost:
    """Docker for the rollback's pre-check: the images on the host, the containers running."""

    def __init__(self, images, running):
        self.present, self.running = set(images), running
        self.tagged = []

    def images(self, refs):
        return dict((r, {"id": r, "repo_digests": [], "repo_tags": [r]}) for r in refs if r in self.present)

    def project_containers(self, stack):
        return [{"service": s, "image_id": i, "name": "%s-%s-1" % (stack, s)} for s, i in self.running.items()]

    def tag(self, image_id, ref):
        self.tagged.append((image_id, ref))


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_rollback_whose_images_were_pruned_is_refused_before_any_change(tmp_path, check_mode):
    store = make_store(tmp_path)
    r1 = add_release(store, tmp_path, "r1", "live")
    r2 = add_release(store, tmp_path, "r2", "live")
    running = dict((n, s["image_id"]) for n, s in r2["services"].items())
    # After `docker system prune -a`: only the images the running containers use are left.
    docker = FakeHost(running.values(), running)
    history = len(store.history())
    with pytest.raises(rel.ReleaseError) as caught:
        rb.rollback(store, docker, to="r1", check_mode=check_mode)
    message = str(caught.value)
    assert message.startswith("rollback to r1 refused before any change: ")
    for name in ("web", "api"):
        assert "service %s's image %s:x (ID %s)" % (name, name, r1["services"][name]["image_id"][7:19]) in message
    assert "docker load" in message and "then run the rollback again" in message
    assert "nothing was stopped or recreated" in message
    assert "or roll back to a release whose images are all here: r2" in message
    assert len(store.history()) == history and docker.tagged == [] and store.live_id() == "r2"


def test_a_partial_rollback_needs_the_live_release_s_other_images_too_and_a_lost_pin_tag_is_no_refusal(tmp_path):
    store = make_store(tmp_path)
    r1 = add_release(store, tmp_path, "r1", "live")
    r2 = add_release(store, tmp_path, "r2", "live")
    # r1's web image is here; r2's api image (which the partial release keeps) is not, nor its pin.
    docker = FakeHost([r1["services"]["web"]["image_id"]], {"web": r2["services"]["web"]["image_id"]})
    with pytest.raises(rel.ReleaseError, match=r"service api's image api:x \(ID [0-9a-z ]+, of the live release\)"):
        rb.rollback(store, docker, to="r1", services=["web"], check_mode=True)
    docker.present.add(r2["services"]["api"]["image_id"])
    assert rb.rollback(store, docker, to="r1", services=["web"], check_mode=True)["changed"] is True


def test_file_labels_follow_the_files_each_service_uses():
    extra = [{"path": "conf/nats.conf", "sha256": "a" * 64, "mode": 0o644},
             {"path": "conf/sub/x.conf", "sha256": "b" * 64, "mode": 0o644},
             {"path": "secrets/jwt.pem", "sha256": "c" * 64, "mode": 0o600}]
    refs = {"nats": ["conf"], "kong": ["secrets/jwt.pem"], "plain": ["nothing-here"]}
    labels = rel.file_labels(extra, refs)
    assert sorted(labels) == ["kong", "nats"]
    changed = rel.file_labels([dict(extra[0], sha256="d" * 64)] + extra[1:], refs)
    assert changed["nats"] != labels["nats"] and changed["kong"] == labels["kong"]
    text = rel.lock_override_text("r1", {"nats": "vpsops/s/nats:id-1"}, labels)
    assert '"vpsops.deploy.files": "%s"' % labels["nats"] in text and '"kong":' in text
