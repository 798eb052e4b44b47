"""Other stores' state before a deploy: a Redis (with a password) and a named volume of the stack,
backed up by a phase's backups (_phase_backups.take_backups, as the deploy takes them), pinned to
the release, changed, and put back by playbooks/restore.yml on the lab host; a truncated backup is
refused by its checksum and changes nothing. Containers `vpsops-st-redis`, `vpsops-st-filer`,
volumes `vpsops-st-*`, files under /tmp/vpsops-st-*."""

import json
import os
import secrets
import shutil
import subprocess

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _backup as backup
from ansible_collections.vpsops.deploy.plugins.module_utils import _stores as stores
from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Docker
from ansible_collections.vpsops.deploy.plugins.module_utils._phase_backups import take_backups
from ansible_collections.vpsops.deploy.plugins.module_utils._releases import Store as ReleaseStore, new_release_id
from conftest import ROOT, VENV_BIN, ansible_env, run, wait_until

REDIS_IMAGE = "vpsops-lab/redis:7"
BASE_IMAGE = "vpsops-lab/base:bookworm"
REDIS = "vpsops-st-redis"
FILER = "vpsops-st-filer"
REDIS_VOLUME = "vpsops-st-redis-data"
FILES_VOLUME = "vpsops-st-files"
INVENTORY = os.path.join(ROOT, "inventories", "lab")


def sh(*argv, **kwargs):
    return run(list(argv), **kwargs).stdout.strip()


def redis(*command, password=None):
    env = dict(os.environ, REDISCLI_AUTH=password) if password else None
    return run(["docker", "exec"] + (["-e", "REDISCLI_AUTH"] if password else []) + [REDIS, "redis-cli"]
               + list(command), env=env).stdout.strip()


class Lab:
    def __init__(self):
        self.root = "/tmp/vpsops-st-" + secrets.token_hex(4)
        self.password = "rd-" + secrets.token_hex(10)
        self.state_dir = os.path.join(self.root, "state")
        self.dest = os.path.join(self.root, "backups")
        self.runs = 0

    def start(self):
        self.stop()
        os.makedirs(os.path.join(self.root, "source"))
        run(["docker", "run", "-d", "--name", REDIS, "-v", "%s:/data" % REDIS_VOLUME, REDIS_IMAGE, "redis-server",
             "--requirepass", self.password])
        run(["docker", "run", "-d", "--init", "--name", FILER, "-v", "%s:/files" % FILES_VOLUME, BASE_IMAGE,
             "sleep", "infinity"])
        wait_until("redis answers", lambda: redis("PING", password=self.password) == "PONG", 30)

    def stop(self):
        run(["docker", "rm", "-f", REDIS, FILER], check=False)
        run(["docker", "volume", "rm", REDIS_VOLUME, FILES_VOLUME], check=False)

    def stack(self):
        return dict(name="vpsops-st", source=os.path.join(self.root, "source"),
                    phases=[dict(name="data", compose_files=["compose.yml"], backup=["cache", "files"])],
                    databases=dict(cache=dict(type="redis", container=REDIS, login_password=self.password),
                                   files=dict(type="volume", volume=FILES_VOLUME)),
                    backup=dict(dest=self.dest, keep=3))

    def playbook(self, name, **extra):
        self.runs += 1
        vars_file = os.path.join(self.root, "vars-%d.json" % self.runs)
        with open(os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            json.dump(dict(vpsops_stack=self.stack(), vpsops_state_dir=self.state_dir, **extra), handle)
        proc = run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", INVENTORY,
                    os.path.join(ROOT, "playbooks", name + ".yml"), "-e", "@" + vars_file], check=False,
                   env=ansible_env(), timeout=600)
        assert self.password not in proc.stdout + proc.stderr, "the Redis password leaked from %s" % name
        return proc


@pytest.fixture(scope="module")
def lab_stores(lab):
    state = Lab()
    state.start()
    yield state
    state.stop()
    shutil.rmtree(state.root, ignore_errors=True)


def files_state():
    return sh("docker", "exec", FILER, "sh", "-c", "cd /files && find . -type f | sort | xargs -r md5sum")


def test_phase_backups_pin_redis_and_volume_and_restore_yml_brings_them_back(lab_stores):
    lab = lab_stores
    redis("MSET", "payouts:paused", "0", "fx:eurusd", "1.09", "jobs:7", "queued", password=lab.password)
    redis("RPUSH", "queue", "a", "b", "c", password=lab.password)
    run(["docker", "exec", FILER, "sh", "-c", "mkdir -p /files/stream/1 && head -c 300000 /dev/urandom > "
         "/files/stream/1/blk.dat && echo meta > /files/meta.json"])
    before_files = files_state()

    store = ReleaseStore("vpsops-st", lab.state_dir)
    store.ensure()
    release = store.create(new_release_id(), [], {}, {}, [], os.path.join(lab.root, "project"))
    backups, skipped = take_backups(store, Docker(), lab.stack(), lab.stack()["phases"][0], release, True)
    assert skipped == []
    assert [(b["name"], b["type"]) for b in backups] == [("cache", "redis"), ("files", "volume")]
    for entry in backups:
        assert entry["verified"] and backup.checksum(entry["path"])[0] == entry["sha256"]
        sidecar = backup.read_sidecar(entry["path"])
        assert sidecar["label"] == release["id"] and sidecar["sha256"] == entry["sha256"]
    assert backup.read_sidecar(backups[0]["path"])["verification"]["keys"] == 4
    pinned = store.load(release["id"])["backups"]
    assert [b["path"] for b in pinned] == [b["path"] for b in backups]
    assert lab.password not in json.dumps(pinned)

    # what a failed release leaves behind
    redis("FLUSHALL", password=lab.password)
    redis("SET", "half:written", "1", password=lab.password)
    run(["docker", "exec", FILER, "sh", "-c", "rm -rf /files/stream && echo broken > /files/meta.json && "
         "touch /files/new"])

    for name in ("cache", "files"):
        proc = lab.playbook("restore", restore_database=name, restore_release=release["id"], restore_confirm=True)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert "stopped and started again" in proc.stdout
    assert redis("MGET", "payouts:paused", "fx:eurusd", "jobs:7", password=lab.password).split() == [
        "0", "1.09", "queued"]
    assert redis("LRANGE", "queue", "0", "-1", password=lab.password).split() == ["a", "b", "c"]
    assert redis("EXISTS", "half:written", password=lab.password) == "0"
    assert files_state() == before_files
    # the safety backups hold the broken state, next to the backups
    safety = sorted(n for n in os.listdir(lab.dest) if "pre-restore" in n and not n.endswith(".json"))
    assert len(safety) == 2


@pytest.mark.parametrize("name,cut", [("cache", 20), ("files", 4096)])
def test_a_truncated_backup_is_refused_by_its_checksum_and_nothing_changes(lab_stores, name, cut):
    lab = lab_stores
    params = dict((k, v.get("default")) for k, v in stores.store_argument_spec().items())
    params.update(lab.stack()["databases"][name], dest=os.path.join(lab.root, "one-" + name))
    made = stores.make_store_backup(params)
    damaged = os.path.join(lab.root, "damaged-" + os.path.basename(made["path"]))
    with open(made["path"], "rb") as source, open(damaged, "wb") as out:
        out.write(source.read()[:-cut])
    shutil.copy(made["manifest"], backup.sidecar_path(damaged))
    redis("SET", "marker", name, password=lab.password)
    before = (redis("DBSIZE", password=lab.password), files_state())
    started = sh("docker", "inspect", "-f", "{{.State.StartedAt}}", REDIS if name == "cache" else FILER)

    proc = lab.playbook("restore", restore_database=name, restore_src=damaged, restore_confirm=True)
    assert proc.returncode != 0
    assert "the backup is damaged or was changed" in proc.stdout, proc.stdout[-2000:]
    assert (redis("DBSIZE", password=lab.password), files_state()) == before
    assert sh("docker", "inspect", "-f", "{{.State.StartedAt}}", REDIS if name == "cache" else FILER) == started
    assert not [n for n in os.listdir(os.path.dirname(damaged)) if "pre-restore" in n and name in n]


def test_without_the_redis_password_the_backup_says_to_set_it(lab_stores, tmp_path):
    params = dict((k, v.get("default")) for k, v in stores.store_argument_spec().items())
    params.update(type="redis", container=REDIS, dest=str(tmp_path / "bk"))
    with pytest.raises(backup.BackupError, match="set login_password to the Redis password"):
        stores.make_store_backup(params)
    assert not os.path.exists(str(tmp_path / "bk")) or os.listdir(str(tmp_path / "bk")) == []


def test_a_volume_read_through_a_throwaway_container_is_the_same_backup(lab_stores, tmp_path):
    """access: container (what a volume that is not local gets) gives a tar with the same files."""
    params = dict((k, v.get("default")) for k, v in stores.store_argument_spec().items())
    params.update(type="volume", volume=FILES_VOLUME, dest=str(tmp_path))
    host = stores.make_store_backup(dict(params, access="host", label="h"))
    inside = stores.make_store_backup(dict(params, access="container", label="c"))
    assert inside["verification"]["read"] == "container of %s" % BASE_IMAGE
    assert stores.tar_listing(host["path"]) == stores.tar_listing(inside["path"])
    assert subprocess.run(["docker", "ps", "-aq", "--filter", "name=vpsops-bk-"], capture_output=True,
                          text=True, check=True).stdout.strip() == ""


def test_backup_yml_backs_up_the_stores_beside_the_databases(lab_stores):
    lab = lab_stores
    proc = lab.playbook("backup", backup_label="by-hand")
    assert proc.returncode == 0, proc.stdout[-3000:]
    made = sorted(n for n in os.listdir(lab.dest) if "_by-hand." in n and not n.endswith(".json"))
    assert [n.split("_")[0] for n in made] == ["redis-%s" % REDIS, "volume-%s" % FILES_VOLUME]
    assert "cache (redis:%s): " % REDIS in proc.stdout and "verified (redis)" in proc.stdout
