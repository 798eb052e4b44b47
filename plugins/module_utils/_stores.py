# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Backups of the stack's other stores, beside the PostgreSQL ones of _backup: a Redis (BGSAVE,
waited for by LASTSAVE, then its RDB file copied out of the container and checked by
redis-check-rdb) and a named Docker volume (a tar of it, read from the host's volume directory
when the volume is local, else through a throwaway container of an image the stack already has).

Each backup is one file, written under a temporary name, fsynced, checksummed while written,
verified, renamed, with a sidecar `<file>.json` in the format of _backup's (tool, format_version,
database, sha256, size, verification ...), so that _backup's retention and the release store's
references treat them as they treat the PostgreSQL backups. The sidecar's `database` is
`redis:<container>` or `volume:<volume>`: a key of its own, never a PostgreSQL database name.

A restore checks the checksum, takes a safety backup, stops what uses the store, puts the data
back, starts it again and verifies it. Passwords travel in the environment only (REDISCLI_AUTH,
passed to `docker exec` by name). Private to this collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time

from ansible_collections.vpsops.deploy.plugins.module_utils._backup import (
    CHUNK,
    SIDECAR_VERSION,
    TOOL,
    BackupError,
    apply_retention,
    diff,
    ensure_dir,
    isoformat,
    listing,
    publishing,
    read_sidecar,
    remove_path,
    restore_source_argument_spec,
    retention_argument_spec,
    safe_component,
    sidecar_path,
    utcnow,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._files import fsync_dir

TYPES = ("redis", "volume")
ACCESS = ("auto", "host", "container")
EXTENSIONS = {"redis": ".rdb", "volume": ".tar"}
RDB_MAGIC = b"REDIS"


def _store_argument_spec():
    """What store_backup and store_restore share: the store, how a volume is read, Docker, the timeout."""
    return dict(
        type=dict(type="str", required=True, choices=list(TYPES)),
        container=dict(type="str"),
        login_password=dict(type="str", default="", no_log=True),
        volume=dict(type="str"),
        image=dict(type="str"),
        access=dict(type="str", default="auto", choices=list(ACCESS)),
        docker_cli=dict(type="path", default="docker"),
        timeout=dict(type="float", default=600),
    )


def store_argument_spec():
    """Options of the store_backup module."""
    spec = _store_argument_spec()
    spec.update(retention_argument_spec())
    return spec


def store_restore_argument_spec():
    """Options of the store_restore module."""
    spec = _store_argument_spec()
    spec.update(restore_source_argument_spec())
    return spec


def store_key(params):
    """The sidecar's `database` of a store: redis:<container> or volume:<volume>."""
    return "%s:%s" % (params["type"], params["container"] if params["type"] == "redis" else params["volume"])


def validate_store_params(params, restore=False):
    """Bad input fails before anything is touched, naming the option and what was expected."""
    kind = params.get("type")
    if kind not in TYPES:
        raise BackupError("type must be one of %s, got %r" % (", ".join(TYPES), kind))
    needed = "container" if kind == "redis" else "volume"
    if not params.get(needed):
        raise BackupError("%s is required with type: %s (%s)" % (
            needed, kind, "the Redis container" if kind == "redis" else "the name of the Docker volume"))
    if kind == "volume" and params.get("container"):
        raise BackupError("container is for type: redis; a volume is named by volume (and read with image)")
    if kind == "redis" and (params.get("volume") or params.get("image")):
        raise BackupError("volume and image are for type: volume; a Redis is named by container")
    if params.get("access", "auto") not in ACCESS:
        raise BackupError("access must be one of %s, got %r" % (", ".join(ACCESS), params.get("access")))
    for key in ("dest", "release_state_dir", "src", "safety_dest"):
        if params.get(key) and not os.path.isabs(params[key]):
            raise BackupError("%s must be an absolute path, got %r" % (key, params[key]))
    if params.get("keep") is not None and params["keep"] < 1:
        raise BackupError("keep must be 1 or more (the newest verified backup is never deleted), got %s"
                          % params["keep"])
    if params.get("keep_days") is not None and params["keep_days"] < 0:
        raise BackupError("keep_days must be 0 or more, got %s" % params["keep_days"])
    if (params.get("timeout") or 0) < 0:
        raise BackupError("timeout must be 0 (no limit) or more seconds, got %s" % params["timeout"])
    if restore and params.get("sha256") and not re.match(r"^[0-9a-fA-F]{64}$", params["sha256"]):
        raise BackupError("sha256 must be 64 hexadecimal digits")


# ------------------------------------------------------------------------------------------------
# docker
# ------------------------------------------------------------------------------------------------
class StoreDocker:
    """The docker commands of one store's backup or restore (argv lists, bounded in time). The
    Redis password goes to `docker exec` as REDISCLI_AUTH by name, never in argv."""

    def __init__(self, params):
        self.cli = params.get("docker_cli") or "docker"
        self.password = params.get("login_password") or ""
        self.timeout = params.get("timeout") or None

    def env(self):
        env = dict(os.environ)
        env.pop("REDISCLI_AUTH", None)
        if self.password:
            env["REDISCLI_AUTH"] = self.password
        return env

    def scrub(self, text):
        text = str(text or "").strip()
        return text.replace(self.password, "********") if self.password else text

    def run(self, args, what, timeout=None, check=True):
        argv = [self.cli] + list(args)
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env(),
                                  timeout=timeout or self.timeout or 600, check=False)
        except OSError as exc:
            raise BackupError("%s: cannot run %s: %s" % (what, self.cli, exc))
        except subprocess.TimeoutExpired:
            raise BackupError("%s timed out after %ss" % (what, timeout or self.timeout or 600))
        out = proc.stdout.decode("utf-8", "replace")
        if check and proc.returncode != 0:
            raise BackupError("%s failed (rc=%s): %s" % (what, proc.returncode,
                                                         self.scrub(proc.stderr.decode("utf-8", "replace")
                                                                    or out) or "no output"))
        return proc.returncode, out

    def redis(self, container, *command):
        """redis-cli COMMAND in the container; its answer (redis-cli prints errors on stdout, rc 0)."""
        argv = ["exec"] + (["-e", "REDISCLI_AUTH"] if self.password else []) + [container, "redis-cli", "--no-raw"]
        _rc, out = self.run(argv + list(command), "redis-cli %s in container %s" % (command[0], container))
        text = out.strip()
        if text.startswith("(error)") or "NOAUTH" in text or "WRONGPASS" in text:
            advice = " (set login_password to the Redis password)" if ("NOAUTH" in text or "WRONGPASS" in text) else ""
            raise BackupError("redis-cli %s in container %s: %s%s" % (command[0], container, self.scrub(text), advice))
        return text

    def stream_out(self, args, out, what):
        """`docker ARGS` whose stdout streams into open binary file `out`, hashed as it is written;
        returns (sha256, size)."""
        digest = hashlib.sha256()
        size = 0
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen([self.cli] + list(args), stdout=subprocess.PIPE, stderr=errors, env=self.env())
            try:
                for block in iter(lambda: proc.stdout.read(CHUNK), b""):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
            finally:
                proc.stdout.close()
                try:
                    rc = proc.wait(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    rc = proc.wait()
            errors.seek(0)
            err = self.scrub(errors.read().decode("utf-8", "replace"))
        if rc != 0:
            raise BackupError("%s failed (rc=%s): %s" % (what, rc, err or "no output"))
        return digest.hexdigest(), size

    def stream_in(self, args, path, what):
        """`docker ARGS` with the file `path` on its stdin."""
        with open(path, "rb") as source:
            try:
                proc = subprocess.run([self.cli] + list(args), stdin=source, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=self.env(), timeout=self.timeout, check=False)
            except subprocess.TimeoutExpired:
                raise BackupError("%s timed out after %ss" % (what, self.timeout))
        if proc.returncode != 0:
            raise BackupError("%s failed (rc=%s): %s" % (what, proc.returncode,
                                                         self.scrub(proc.stderr.decode("utf-8", "replace"))))

    def inspect(self, kind, name):
        _rc, out = self.run([kind, "inspect", name], "docker %s inspect %s" % (kind, name), timeout=60)
        return json.loads(out)[0]

    def users_of(self, volume):
        """Names of the containers (running or not) that mount `volume`, and of those running."""
        _rc, out = self.run(["ps", "-a", "--filter", "volume=%s" % volume, "--format", "{{.Names}}\t{{.State}}"],
                            "docker ps of the containers using volume %s" % volume, timeout=60)
        rows = [line.split("\t") for line in out.splitlines() if line.strip()]
        return [r[0] for r in rows], [r[0] for r in rows if len(r) > 1 and r[1] == "running"]


# ------------------------------------------------------------------------------------------------
# backup
# ------------------------------------------------------------------------------------------------
def backup_name(params, when):
    ident = params["container"] if params["type"] == "redis" else params["volume"]
    name = "%s-%s_%s" % (params["type"], safe_component(ident), when.strftime("%Y%m%dT%H%M%SZ"))
    if params.get("label"):
        name += "_" + safe_component(params["label"])
    return name + EXTENSIONS[params["type"]]


def free_name(dest, name):
    stem, ext = os.path.splitext(name)
    for counter in range(1, 1000):
        candidate = name if counter == 1 else "%s-%d%s" % (stem, counter, ext)
        if not os.path.lexists(os.path.join(dest, candidate)) and \
                not os.path.lexists(os.path.join(dest, candidate + ".json")):
            return candidate
    raise BackupError("no free backup name for %s in %s" % (name, dest))


def redis_settings(docker, container):
    """(data directory, RDB file name, appendonly) of the running Redis."""
    found = {}
    for key in ("dir", "dbfilename", "appendonly"):
        lines = docker.redis(container, "CONFIG", "GET", key).splitlines()
        found[key] = lines[-1].strip().strip('"') if len(lines) >= 2 else ""
        found[key] = re.sub(r'^\d+\)\s*"?', "", found[key]).rstrip('"')
    return found["dir"] or "/data", found["dbfilename"] or "dump.rdb", found["appendonly"] == "yes"


def redis_int(text):
    match = re.search(r"-?\d+", text or "")
    if not match:
        raise BackupError("redis-cli answered %r where a number was expected" % text)
    return int(match.group(0))


def redis_bgsave(docker, container, deadline):
    """BGSAVE and wait until LASTSAVE moves past what it was (a save already running is waited
    for, then a new one started). Returns the seconds the save took."""
    started = time.monotonic()
    before = redis_int(docker.redis(container, "LASTSAVE"))
    while True:
        try:
            docker.redis(container, "BGSAVE", "SCHEDULE")
            break
        except BackupError as exc:
            # "Background save already in progress": wait for it, then save again (it may predate now)
            if "in progress" not in str(exc):
                raise
        if time.monotonic() > deadline:
            raise BackupError("BGSAVE in container %s: a save in progress did not end in time" % container)
        time.sleep(0.2)
    delay = 0.05
    while redis_int(docker.redis(container, "LASTSAVE")) == before:
        if time.monotonic() > deadline:
            raise BackupError("BGSAVE in container %s did not finish before the timeout (LASTSAVE still %d)"
                              % (container, before))
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    status = docker.redis(container, "INFO", "persistence")
    if "rdb_last_bgsave_status:ok" not in status:
        raise BackupError("BGSAVE in container %s failed: %s" % (container, ", ".join(
            line.strip() for line in status.splitlines() if line.startswith("rdb_last_bgsave")) or status[:200]))
    return time.monotonic() - started


def redis_keys(docker, container):
    """Keys in every database of the running Redis (INFO keyspace)."""
    text = docker.redis(container, "INFO", "keyspace")
    return sum(int(n) for n in re.findall(r"db\d+:keys=(\d+)", text))


def check_rdb(docker, container, path_inside):
    """redis-check-rdb on an RDB file inside the container: (ok, keys read, its last lines)."""
    rc, out = docker.run(["exec", container, "redis-check-rdb", path_inside], "redis-check-rdb in container %s"
                         % container, check=False)
    keys = re.search(r"(\d+) keys read", out)
    return rc == 0 and "RDB looks OK" in out, int(keys.group(1)) if keys else None, out.strip()[-400:]


def copy_redis(docker, params, tmp, deadline):
    """BGSAVE, then the RDB file out of the container into `tmp` (docker cp to a tar stream: the
    file is unpacked from it and hashed as it is written). Returns (sha256, size, verification)."""
    container = params["container"]
    directory, filename, _aof = redis_settings(docker, container)
    seconds = redis_bgsave(docker, container, deadline)
    inside = "%s/%s" % (directory.rstrip("/"), filename)
    # Checked where it lies, right after the save (a later save only replaces it whole, by rename).
    ok, keys, said = check_rdb(docker, container, inside)
    if not ok:
        raise BackupError("redis-check-rdb of %s in container %s does not pass: %s" % (inside, container, said))
    with tempfile.TemporaryFile() as stream:
        docker.stream_out(["cp", "%s:%s" % (container, inside), "-"], stream, "docker cp of %s out of container %s"
                          % (inside, container))
        stream.seek(0)
        digest, size = unpack_single(stream, filename, tmp)
    with open(tmp, "rb") as handle:
        if handle.read(len(RDB_MAGIC)) != RDB_MAGIC:
            raise BackupError("%s of container %s is not an RDB file (no REDIS header)" % (inside, container))
    return digest, size, dict(level="rdb", ok=True, keys=keys, bgsave_seconds=round(seconds, 3),
                              checked_by="redis-check-rdb in the container, after the save")


def unpack_single(stream, filename, tmp):
    """The one regular file of a `docker cp -` tar stream into new file `tmp` (0600), hashed."""
    digest = hashlib.sha256()
    size = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                source = tar.extractfile(member)
                with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                    for block in iter(lambda: source.read(CHUNK), b""):
                        out.write(block)
                        digest.update(block)
                        size += len(block)
                    out.flush()
                    os.fsync(out.fileno())
                return digest.hexdigest(), size
    except tarfile.TarError as exc:
        raise BackupError("the copy of %s could not be read: %s" % (filename, exc))
    raise BackupError("the copy of %s holds no file" % filename)


def volume_access(docker, params):
    """('host', the volume's directory) when it can be read on this host, else ('container', image)."""
    info = docker.inspect("volume", params["volume"])
    mountpoint = info.get("Mountpoint") or ""
    local = info.get("Driver") == "local" and os.path.isdir(mountpoint)
    access = params.get("access") or "auto"
    if access == "host" and not local:
        raise BackupError("access: host, but volume %s is not a local volume whose directory %s this host can read "
                          "(driver %s)" % (params["volume"], mountpoint or "?", info.get("Driver")))
    if access == "host" or (access == "auto" and local):
        return "host", mountpoint
    image = params.get("image")
    if not image:
        users, _running = docker.users_of(params["volume"])
        if users:
            image = docker.inspect("container", users[0])["Config"]["Image"]
    if not image:
        raise BackupError("volume %s: no container uses it to take an image from, and image is not set: set image to "
                          "an image of the stack that has tar" % params["volume"])
    return "container", image


def tar_volume(docker, params, tmp):
    """A tar of the volume into new file `tmp`, hashed as written, then read back whole (the
    verification). Returns (sha256, size, verification)."""
    how, where = volume_access(docker, params)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        if how == "host":
            hashing = HashingWriter(out)
            with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for entry in sorted(os.listdir(where)):
                    tar.add(os.path.join(where, entry), arcname=entry)
            digest, size = hashing.digest.hexdigest(), hashing.size
        else:
            name = "vpsops-bk-%s" % secrets.token_hex(4)
            digest, size = docker.stream_out(
                ["run", "--rm", "--name", name, "--network", "none", "--entrypoint", "tar", "-v",
                 "%s:/vpsops-volume:ro" % params["volume"], where, "-C", "/vpsops-volume", "-cf", "-", "."], out,
                "tar of volume %s in a throwaway container of %s" % (params["volume"], where))
        out.flush()
        os.fsync(out.fileno())
    return digest, size, dict(level="tar", ok=True, read=how if how == "host" else "container of %s" % where,
                              **tar_summary(tmp))


class HashingWriter:
    """A file object that hashes and counts what is written through it."""

    def __init__(self, out):
        self.out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.out.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def tar_summary(path):
    """Read a tar whole: its entries, files and bytes of file data; BackupError when it is not one."""
    entries = files = data = 0
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                entries += 1
                if member.isfile():
                    files += 1
                    data += member.size
                    source = tar.extractfile(member)
                    while source.read(CHUNK):
                        pass
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError("%s is not a whole tar archive: %s" % (path, exc))
    return dict(entries=entries, files=files, data_bytes=data)


def make_store_backup(params, check_mode=False):
    """One backup of a Redis or a volume, as the store_backup module takes it; returns its result."""
    validate_store_params(params)
    docker = StoreDocker(params)
    dest = params["dest"]
    key = store_key(params)
    started = utcnow()
    timeout = params.get("timeout") or 0
    deadline = time.monotonic() + (timeout or 86400)
    if params["type"] == "redis":
        docker.redis(params["container"], "PING")
    else:
        docker.inspect("volume", params["volume"])
    if check_mode:
        path = os.path.join(dest, backup_name(params, started))
        new = [dict(path=path, finished=started.timestamp(), verified=True, full=True)]
        deleted, warnings = apply_retention([dest], key, params.get("keep"), params.get("keep_days"),
                                            params.get("release_state_dir"), True, new)
        return dict(changed=True, path=path, manifest=sidecar_path(path), type=params["type"], database=key,
                    deleted=deleted, warnings=warnings,
                    diff=diff(dest, listing([dest], key), listing([dest], key, [path], deleted)))
    ensure_dir(dest, "dest")
    before = listing([dest], key)
    name = free_name(dest, backup_name(params, started))
    with publishing(dest, name, "backup") as staged:
        if params["type"] == "redis":
            digest, size, verification = copy_redis(docker, params, staged.tmp, deadline)
        else:
            digest, size, verification = tar_volume(docker, params, staged.tmp)
        if size == 0:
            raise BackupError("the backup of %s is empty: not a backup" % key)
        finished = utcnow()
        staged.sidecar = sidecar = dict(
            tool=TOOL, format_version=SIDECAR_VERSION, path=name, database=key, type=params["type"],
            format=EXTENSIONS[params["type"]].lstrip("."), size=size, sha256=digest, sha256_method="file",
            started=isoformat(started), finished=isoformat(finished), label=params.get("label"),
            source=("container %s" % params["container"]) if params["type"] == "redis"
            else "volume %s" % params["volume"], verification=verification)
    final = staged.final
    deleted, warnings = apply_retention([dest], key, params.get("keep"), params.get("keep_days"),
                                        params.get("release_state_dir"), False, just_made=[final])
    return dict(changed=True, path=final, manifest=sidecar_path(final), size=size, sha256=digest, verified=True,
                verification=verification, type=params["type"], database=key, started=sidecar["started"],
                finished=sidecar["finished"], label=params.get("label"), deleted=deleted, warnings=warnings,
                diff=diff(dest, before, listing([dest], key)))


# ------------------------------------------------------------------------------------------------
# restore
# ------------------------------------------------------------------------------------------------
def check_store_backup(params):
    """The backup's sidecar and checksum, and that it is a backup of this very store."""
    src = params["src"]
    if not os.path.isfile(src):
        raise BackupError("src: backup %s does not exist or is not a file" % src)
    sidecar = read_sidecar(src) or {}
    expected = (params.get("sha256") or sidecar.get("sha256") or "").lower()
    if not expected:
        raise BackupError("src: %s has no manifest %s and no sha256 was given: refusing to restore an unchecked "
                          "backup" % (src, sidecar_path(src)))
    digest = hashlib.sha256()
    with open(src, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise BackupError("src: checksum of %s is %s, expected %s: the backup is damaged or was changed"
                          % (src, digest.hexdigest(), expected))
    key = store_key(params)
    if sidecar and sidecar.get("database") != key:
        raise BackupError("refusing to restore %s: it is a backup of %s, not of %s. Nothing was changed"
                          % (src, sidecar.get("database"), key))
    return sidecar, digest.hexdigest()


def wait_redis(docker, container, deadline):
    """Until the restarted Redis answers PING with PONG (not LOADING)."""
    last = None
    while time.monotonic() < deadline:
        try:
            last = docker.redis(container, "PING")
            if "PONG" in last:
                return
        except BackupError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise BackupError("Redis in container %s did not answer after the restore: %s" % (container, last))


def restore_store(params, check_mode=False):
    """Restore a store_backup backup: checksum, safety backup, stop, data back, start, verify."""
    validate_store_params(params, restore=True)
    docker = StoreDocker(params)
    src = params["src"]
    sidecar, digest = check_store_backup(params)
    timeout = params.get("timeout") or 0
    deadline = time.monotonic() + (timeout or 86400)
    result = dict(changed=True, restored=src, type=params["type"], database=store_key(params), sha256=digest,
                  safety_backup=None, stopped=[], warnings=[])
    if params["type"] == "redis":
        container = params["container"]
        directory, filename, aof = redis_settings(docker, container)
        if aof:
            raise BackupError("refusing to restore %s into container %s: appendonly is on, and Redis would load its "
                              "AOF, not the RDB file. Nothing was changed. Turn appendonly off for the restore, or "
                              "restore the AOF directory as a volume" % (src, container))
        stop = [container]
    else:
        tar_summary(src)
        _users, stop = docker.users_of(params["volume"])
    result["stopped"] = stop
    if check_mode:
        result["safety_backup"] = dict(dest=params.get("safety_dest") or os.path.dirname(src)) \
            if params.get("safety_backup", True) else None
        return result
    if params.get("safety_backup", True):
        safety = dict(params, dest=params.get("safety_dest") or os.path.dirname(src), label="pre-restore", keep=None,
                      keep_days=None, release_state_dir=None)
        try:
            made = make_store_backup(safety)
        except BackupError as exc:
            raise BackupError("safety backup of %s before the restore failed, nothing was restored: %s"
                              % (store_key(params), exc))
        result["safety_backup"] = dict(path=made["path"], manifest=made["manifest"], sha256=made["sha256"],
                                       size=made["size"])
    for name in stop:
        docker.run(["stop", name], "docker stop %s" % name)
    try:
        if params["type"] == "redis":
            put_rdb(docker, container, src, directory, filename)
        else:
            put_volume(docker, params, src)
    finally:
        for name in stop:
            docker.run(["start", name], "docker start %s" % name)
    if params["type"] == "redis":
        wait_redis(docker, container, deadline)
        keys = redis_keys(docker, container)
        expected = (sidecar.get("verification") or {}).get("keys")
        result["verification"] = dict(keys=keys, expected_keys=expected)
        if expected is not None and keys != expected:
            raise BackupError("restore of %s into container %s: Redis holds %d keys, the backup %d; the safety "
                              "backup is %s" % (src, container, keys, expected,
                                                (result["safety_backup"] or {}).get("path")))
    else:
        result["verification"] = verify_volume(docker, params, src)
    return result


def put_rdb(docker, container, src, directory, filename):
    """The RDB file into the stopped container's data directory, owned as the one it replaces."""
    staged = tempfile.mkdtemp(prefix="vpsops-rdb-")
    try:
        target = os.path.join(staged, filename)
        shutil.copyfile(src, target)
        os.chmod(target, 0o644)
        docker.run(["cp", target, "%s:%s/%s" % (container, directory.rstrip("/"), filename)],
                   "docker cp of %s into container %s" % (src, container))
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    # docker cp keeps the host's owner (root): the server's user must be able to read and replace it.
    # The container is stopped; a throwaway exec is not possible, so the owner is set at start by
    # images that chown their data (the lab's and the upstream image do).


def put_volume(docker, params, src):
    """Empty the volume and unpack the tar into it."""
    how, where = volume_access(docker, params)
    if how == "host":
        for entry in os.listdir(where):
            remove_path(os.path.join(where, entry))
        with tarfile.open(src, mode="r:") as tar:
            members = []
            for member in tar:
                if member.name.startswith("/") or ".." in member.name.split("/"):
                    raise BackupError("%s holds %r, outside the volume: refusing it" % (src, member.name))
                members.append(member)
            tar.extractall(where, members=members, numeric_owner=True)
        fsync_dir(where)
        return
    docker.stream_in(["run", "--rm", "-i", "--network", "none", "--entrypoint", "sh", "-v",
                      "%s:/vpsops-volume" % params["volume"], where, "-c",
                      "find /vpsops-volume -mindepth 1 -maxdepth 1 -exec rm -rf {} + && tar -C /vpsops-volume -xf -"],
                     src, "unpacking %s into volume %s in a throwaway container of %s" % (src, params["volume"], where))


def verify_volume(docker, params, src):
    """The volume holds the backup's files: a new tar of it lists the same files with the same sizes."""
    expected = tar_listing(src)
    scratch = tempfile.mkdtemp(prefix="vpsops-vol-")
    try:
        copy = os.path.join(scratch, "now.tar")
        tar_volume(docker, params, copy)
        found = tar_listing(copy)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if found != expected:
        missing = sorted(set(expected) - set(found))[:5]
        differ = sorted(n for n in set(expected) & set(found) if expected[n] != found[n])[:5]
        raise BackupError("volume %s after the restore does not hold what %s holds (missing %s, other sizes %s)"
                          % (params["volume"], src, missing, differ))
    return dict(files=len(expected), bytes=sum(expected.values()))


def tar_listing(path):
    """{normalised name: size} of the regular files of a tar."""
    found = {}
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            if member.isfile():
                found[os.path.normpath(member.name).lstrip("./") or "."] = member.size
    return found
