# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The release store of one stack on one host, its deploy lock and its audit log.
Private to this collection; used by compose_release, compose_release_info, deploy_lock,
compose_plan and the rollback (_rollback.py), which rolls a stack back to a release of this store.

Layout under the state directory (default /var/lib/vpsops/<stack>):

    releases/<id>/<compose files>   exact copies of the files compose ran
    releases/<id>/.env              the env file compose read (0600), when there was one
    releases/<id>/images.lock.yml   override pinning every service to an image that cannot move
    releases/<id>/manifest.json     id, seq, time, user, git sha, services (image ref + id),
                                    phases, backups, status, status history
    current -> releases/<id>        the live release
    history.jsonl                   append-only audit log, one JSON line per event
    lock.json                       the deploy lock

Order is the manifest's `seq` (a counter), never a file time. Every write is atomic (_files.py): a
temporary file in the same directory, fsync, rename, fsync of the directory. A release directory is
built under a temporary name and renamed into place when complete.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager

# referenced_backups and the two errors live in _backup_refs so that the backup modules can read the
# store's references without this module; its callers still import all four from here.
from ansible_collections.vpsops.deploy.plugins.module_utils._backup_refs import (  # noqa: F401 # pylint: disable=unused-import
    MANIFEST,
    CorruptRelease,
    ReleaseError,
    referenced_backups,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._files import (
    fsync_dir,
    makedirs_owner_only,
    sha256_file,
    write_atomic,
    write_json_atomic,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._secrets import (
    SECRET_CHECK_KEYS,
    argv_secrets,
    is_secret_name,
    url_secrets,
)

LOCK_OVERRIDE = "images.lock.yml"
ENV_COPY = ".env"
FORMAT = 1
STATUSES = ("pending", "live", "superseded", "failed", "rolled_back")
# A release id names a directory and is the tag of the images pinned for it.
RELEASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STACK_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
PIN_REPO = "vpsops"


class CorruptLock(ReleaseError):
    """A lock file that holds JSON, but not a lock: it cannot be judged free, held or stale."""


class LockHeld(ReleaseError):
    """The deploy lock belongs to someone else."""

    def __init__(self, msg, lock):
        ReleaseError.__init__(self, msg)
        self.lock = lock


def now_iso(now=None):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now if now is not None else time.time()))


def check_stack(stack):
    if not isinstance(stack, str) or not STACK_RE.match(stack):
        raise ReleaseError("stack must be a compose project name: lowercase letters, digits, '-' and '_', "
                           "starting with a letter or digit; got %r" % (stack,))
    return stack


def store_argument_spec(docker=True):
    """stack and state_dir (doc fragment vpsops.deploy.release_store), and docker_cli
    (vpsops.deploy.docker) for the modules that run Docker."""
    spec = dict(stack=dict(type="str", required=True), state_dir=dict(type="path"))
    if docker:
        spec["docker_cli"] = dict(type="path", default="docker")
    return spec


def default_state_dir(stack):
    return os.path.join("/var/lib/vpsops", stack)


def pin_ref(stack, service, image_id):
    """The tag the collection puts on a service's image: named after the image ID, so every release
    that runs the same image pins the same reference and compose sees no change for that service
    (a reference that changed with each release would recreate every container, databases too)."""
    digest = (image_id or "").split(":", 1)[-1]
    return "%s/%s/%s:id-%s" % (PIN_REPO, stack, service_repo_name(service), digest[:24])


def service_repo_name(service):
    """A service name as a repository path component (lowercase, no leading/trailing separator)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", service.lower()).strip("._-")
    return re.sub(r"[._-]{2,}", "-", name) or "service"


FILES_LABEL = "vpsops.deploy.files"
EXTRA_DIR = "files"


def lock_override_text(release_id, pins, labels=None):
    """The compose override that pins every service: pins is {service: image ref}; labels is
    {service: digest of the files it uses} (FILES_LABEL: a changed file changes the service's config
    hash, so compose recreates exactly the services that use it). JSON strings are valid YAML
    scalars, so no YAML library is needed on the host."""
    lines = ["# vpsops.deploy release %s: every service pinned to the image it was deployed with." % release_id,
             "services:"]
    for service in sorted(set(pins) | set(labels or {})):
        lines.append("  %s:" % json.dumps(service))
        if service in pins:
            lines.append("    image: %s" % json.dumps(pins[service]))
        if (labels or {}).get(service):
            lines.append("    labels:")
            lines.append("      %s: %s" % (json.dumps(FILES_LABEL), json.dumps(labels[service])))
    return "\n".join(lines) + "\n"


def file_labels(extra_files, file_refs):
    """{service: one digest of every file it references} (a directory reference covers the files
    below it), from the release's extra files [{path, sha256, mode}] and {service: [paths]}."""
    labels = {}
    for service, refs in sorted((file_refs or {}).items()):
        used = [e for e in extra_files or [] if any(e["path"] == r or e["path"].startswith(r.rstrip("/") + "/")
                                                    for r in refs)]
        if used:
            text = "\n".join("%s %s %o" % (e["path"], e["sha256"], e.get("mode", 0o600))
                             for e in sorted(used, key=lambda e: e["path"]))
            labels[service] = hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]
    return labels


# the store --------------------------------------------------------------------------------------

class Store:
    """The releases, pointer, history and lock of one stack under one state directory."""

    def __init__(self, stack, state_dir=None):
        self.stack = check_stack(stack)
        self.state_dir = os.path.abspath(state_dir or default_state_dir(stack))
        self.releases_dir = os.path.join(self.state_dir, "releases")
        self.current_link = os.path.join(self.state_dir, "current")
        self.history_path = os.path.join(self.state_dir, "history.jsonl")
        self.lock_path = os.path.join(self.state_dir, "lock.json")

    # directories and writability

    def exists(self):
        return os.path.isdir(self.releases_dir)

    def ensure(self):
        """Create the state directory (0700) and check it can be written."""
        for path in (self.state_dir, self.releases_dir):
            try:
                makedirs_owner_only(path)
            except OSError as exc:
                raise ReleaseError("state_dir %s cannot be created: %s" % (self.state_dir, exc.strerror or exc))
        try:
            fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=self.state_dir)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise ReleaseError("state_dir %s is not writable: %s" % (self.state_dir, exc.strerror or exc))

    @contextmanager
    def guard(self):
        """An exclusive flock that serializes every read-modify-write of the store on this host."""
        self.ensure()
        fd = os.open(os.path.join(self.state_dir, ".guard"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def release_dir(self, release_id):
        return os.path.join(self.releases_dir, release_id)

    # reading

    def ids(self):
        if not self.exists():
            return []
        return sorted(n for n in os.listdir(self.releases_dir)
                      if not n.startswith(".") and os.path.isdir(os.path.join(self.releases_dir, n)))

    def load(self, release_id):
        """The manifest of a release; CorruptRelease when it cannot be trusted."""
        if not RELEASE_ID_RE.match(release_id or ""):
            raise ReleaseError("release %r is not a valid release id" % (release_id,))
        path = os.path.join(self.release_dir(release_id), MANIFEST)
        if not os.path.isdir(self.release_dir(release_id)):
            raise ReleaseError("release %s does not exist in %s; known releases: %s"
                               % (release_id, self.releases_dir, ", ".join(self.ids()) or "none"))
        try:
            with open(path, "rb") as handle:
                manifest = json.loads(handle.read().decode("utf-8"))
        except (IOError, OSError) as exc:
            raise CorruptRelease("release %s: cannot read %s: %s" % (release_id, path, exc.strerror or exc))
        except ValueError as exc:
            raise CorruptRelease("release %s: %s is corrupt (%s); it is refused and nothing was changed"
                                 % (release_id, path, exc))
        problem = manifest_problem(manifest, release_id, self.stack)
        if problem:
            raise CorruptRelease("release %s: %s is corrupt (%s); it is refused and nothing was changed"
                                 % (release_id, path, problem))
        return manifest

    def releases(self):
        """(manifests newest first, {id: error} of the corrupt ones)."""
        good, bad = [], {}
        for release_id in self.ids():
            try:
                good.append(self.load(release_id))
            except ReleaseError as exc:
                bad[release_id] = str(exc)
        good.sort(key=lambda m: m["seq"], reverse=True)
        return good, bad

    def live_id(self):
        try:
            target = os.readlink(self.current_link)
        except OSError:
            return None
        return os.path.basename(target.rstrip("/"))

    def next_seq(self):
        seqs = [0]
        for release_id in self.ids():
            try:
                seqs.append(int(self.load(release_id)["seq"]))
            except (ReleaseError, ValueError, TypeError):
                continue
        return max(seqs) + 1

    # writing

    def save(self, manifest):
        write_json_atomic(os.path.join(self.release_dir(manifest["id"]), MANIFEST), manifest)

    def record(self, event, **fields):
        """Append one line to history.jsonl (O_APPEND, fsync)."""
        entry = dict(time=now_iso(), event=event, stack=self.stack)
        entry.update(fields)
        line = (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8")
        fd = os.open(self.history_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def history(self, limit=None):
        if not os.path.exists(self.history_path):
            return []
        entries = []
        with open(self.history_path, "rb") as handle:
            for raw in handle:
                try:
                    entries.append(json.loads(raw.decode("utf-8")))
                except ValueError:
                    continue
        return entries[-limit:] if limit else entries

    def create(self, release_id, files, pins, services, phases, project_dir, env_file=None, user=None,
               git_sha=None, backups=None, meta=None, lock_owner=None, extra_files=None, file_refs=None):
        """Write a complete release directory (pending) and return its manifest.

        files: absolute paths of the compose files, in order; pins: {service: ref};
        services: {service: {"image": original ref, "image_id": id, "ref": pinned ref}};
        extra_files: [{"path": relative path, "source": absolute path, "mode": int, "kind": str}],
        the files the compose files reference (kept under files/ in the release); file_refs:
        {service: [relative paths]} (see file_labels).
        """
        if not RELEASE_ID_RE.match(release_id):
            raise ReleaseError("release must match %s, got %r" % (RELEASE_ID_RE.pattern, release_id))
        final = self.release_dir(release_id)
        if os.path.exists(final):
            raise ReleaseError("release %s already exists in %s" % (release_id, self.releases_dir))
        names = [os.path.basename(p) for p in files]
        if len(set(names)) != len(names) or LOCK_OVERRIDE in names or MANIFEST in names or ENV_COPY in names:
            raise ReleaseError("files must have distinct base names other than %s, %s and %s: %s"
                               % (LOCK_OVERRIDE, MANIFEST, ENV_COPY, ", ".join(names)))
        tmp = tempfile.mkdtemp(prefix=".new-%s." % release_id, dir=self.releases_dir)
        try:
            os.chmod(tmp, 0o700)
            file_entries = []
            for path, name in zip(files, names):
                with open(path, "rb") as handle:
                    content = handle.read()
                write_atomic(os.path.join(tmp, name), content, 0o600)
                file_entries.append({"name": name, "source": path,
                                     "sha256": hashlib.sha256(content).hexdigest()})
            env_entry = None
            if env_file:
                with open(env_file, "rb") as handle:
                    content = handle.read()
                write_atomic(os.path.join(tmp, ENV_COPY), content, 0o600)
                env_entry = {"source": env_file, "sha256": hashlib.sha256(content).hexdigest()}
            extra_entries = []
            for extra in sorted(extra_files or [], key=lambda e: e["path"]):
                with open(extra["source"], "rb") as handle:
                    content = handle.read()
                target = os.path.join(tmp, EXTRA_DIR, extra["path"])
                makedirs_owner_only(os.path.dirname(target))
                write_atomic(target, content, 0o600)
                extra_entries.append({"path": extra["path"], "sha256": hashlib.sha256(content).hexdigest(),
                                      "mode": int(extra.get("mode") or 0o600), "kind": extra.get("kind")})
            labels = file_labels(extra_entries, file_refs)
            write_atomic(os.path.join(tmp, LOCK_OVERRIDE), lock_override_text(release_id, pins, labels), 0o600)
            seq = self.next_seq()
            manifest = {
                "format": FORMAT,
                "id": release_id,
                "seq": seq,
                "stack": self.stack,
                "created": now_iso(),
                "user": user,
                "git_sha": git_sha,
                "host": socket.gethostname(),
                "project_dir": project_dir,
                "files": file_entries,
                "env_file": env_entry,
                "extra_files": extra_entries,
                "file_refs": dict((k, list(v)) for k, v in sorted((file_refs or {}).items())),
                "file_labels": labels,
                "services": services,
                "phases": phases or [],
                "backups": backups or [],
                "checks": [],
                "status": "pending",
                "status_history": [{"status": "pending", "time": now_iso()}],
                "meta": meta or {},
                # The deploy that made it: a pending release whose deploy lost the lock and was
                # followed by another release is an orphan (see protected).
                "lock_owner": lock_owner,
            }
            write_json_atomic(os.path.join(tmp, MANIFEST), manifest)
            os.rename(tmp, final)
            fsync_dir(self.releases_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return manifest

    def compose_files(self, manifest):
        """Absolute paths to give `docker compose -f`, in order, the lock override last."""
        base = self.release_dir(manifest["id"])
        return [os.path.join(base, f["name"]) for f in manifest["files"]] + [os.path.join(base, LOCK_OVERRIDE)]

    def env_path(self, manifest):
        return os.path.join(self.release_dir(manifest["id"]), ENV_COPY) if manifest.get("env_file") else None

    def set_status(self, manifest, status, **fields):
        if status not in STATUSES:
            raise ReleaseError("status must be one of %s, got %r" % (", ".join(STATUSES), status))
        if manifest["status"] == status:
            return False
        manifest["status"] = status
        entry = {"status": status, "time": now_iso()}
        entry.update(fields)
        manifest.setdefault("status_history", []).append(entry)
        self.save(manifest)
        return True

    def point_current(self, release_id):
        """Move `current` to a release atomically (temporary symlink renamed over the old one)."""
        tmp = os.path.join(self.state_dir, ".current.%d.tmp" % os.getpid())
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.join("releases", release_id), tmp)
        os.rename(tmp, self.current_link)
        fsync_dir(self.state_dir)

    def make_live(self, manifest, replaced_status="superseded", **fields):
        """Mark a release live, the one it replaces `replaced_status`, move `current`.
        Returns the id of the replaced live release (or None)."""
        old_id = self.live_id()
        changed = False
        if old_id and old_id != manifest["id"]:
            try:
                old = self.load(old_id)
            except ReleaseError:
                old = None
            if old is not None:
                self.set_status(old, replaced_status, replaced_by=manifest["id"])
        if old_id != manifest["id"]:
            self.point_current(manifest["id"])
            changed = True
        changed = self.set_status(manifest, "live", **fields) or changed
        return (old_id if old_id != manifest["id"] else None), changed

    # choosing releases

    def ever_live(self, manifest):
        return any(h.get("status") == "live" for h in manifest.get("status_history", []))

    def previous_of(self, live_id, manifests):
        """The release that was good before `live_id`: the newest (by seq) older release that went
        live and was not rolled back from."""
        live_seq = None
        for m in manifests:
            if m["id"] == live_id:
                live_seq = m["seq"]
        candidates = [m for m in manifests
                      if m["id"] != live_id and self.ever_live(m) and m["status"] == "superseded"
                      and (live_seq is None or m["seq"] < live_seq)]
        return candidates[0]["id"] if candidates else None

    def resolve(self, to):
        """A rollback target: 'previous', 'live', a release id, or '-N'. Returns the release id.

        'previous' is the live release when a newer release is pending (a deploy that did not
        finish: go back to what was live), otherwise the release that was live before it.
        """
        manifests, _bad = self.releases()
        live = self.live_id()
        to = str(to or "previous").strip()
        if to == "live":
            if not live:
                raise ReleaseError("to=live: no release of stack %s is live in %s" % (self.stack, self.state_dir))
            return live
        if to == "previous":
            if live:
                newer = [m for m in manifests if m["status"] == "pending" and m["seq"] > self._seq(live, manifests)]
                if newer:
                    return live
            prev = self.previous_of(live, manifests)
            if not prev:
                raise ReleaseError("to=previous: stack %s has no previous release to roll back to in %s "
                                   "(live: %s; releases: %s)" % (self.stack, self.state_dir, live or "none",
                                                                 ", ".join(m["id"] for m in manifests) or "none"))
            return prev
        match = re.match(r"^-(\d+)$", to)
        if match:
            steps = int(match.group(1))
            if steps < 1:
                raise ReleaseError("to=%s: N in -N must be 1 or more" % to)
            good = [m for m in manifests if self.ever_live(m) and m["status"] in ("live", "superseded")]
            good.sort(key=lambda m: m["seq"], reverse=True)
            ids = [m["id"] for m in good]
            if live not in ids:
                raise ReleaseError("to=%s: no release of stack %s is live" % (to, self.stack))
            index = ids.index(live) + steps
            if index >= len(ids):
                raise ReleaseError("to=%s: stack %s has only %d earlier good release(s) before %s"
                                   % (to, self.stack, len(ids) - ids.index(live) - 1, live))
            return ids[index]
        self.load(to)  # raises with the list of known releases when unknown, or when corrupt
        return to

    @staticmethod
    def _seq(release_id, manifests):
        for m in manifests:
            if m["id"] == release_id:
                return m["seq"]
        return 0

    # retention and retirement

    def protected(self, manifests=None):
        """Ids retention never removes: live, the release before it, and the pending releases whose
        deploy may still run: the newest release, and one whose deploy (its recorded lock owner)
        still holds a live lock. A pending release that a later release followed while its deploy's
        lock is gone (a deploy killed, then another deploy) is an orphan and is not kept forever."""
        if manifests is None:
            manifests, _bad = self.releases()
        live = self.live_id()
        newest = max([m["seq"] for m in manifests] or [0])
        try:
            lock = self.read_lock() if self.exists() else None
            holder = lock.get("owner") if lock and lock_is_live(lock, time.time()) else None
            unknown = False
        except ReleaseError:
            holder, unknown = None, True  # a lock nobody can read: every pending release may be in use
        keep = set(m["id"] for m in manifests if m["status"] == "pending" and (
            unknown or m["seq"] == newest or (m.get("lock_owner") and m.get("lock_owner") == holder)))
        if live:
            keep.add(live)
            prev = self.previous_of(live, manifests)
            if prev:
                keep.add(prev)
        return keep

    def lock_holder(self, now=None):
        """The owner of the stack's live lock, or None (free, stale or unreadable)."""
        try:
            lock = self.read_lock() if self.exists() else None
        except ReleaseError:
            return None
        return lock.get("owner") if lock and lock_is_live(lock, time.time() if now is None else now) else None

    def retention_plan(self, keep):
        """The ids retention would remove, keeping the newest `keep` releases and the protected ones."""
        manifests, _bad = self.releases()
        kept = set(m["id"] for m in manifests[:max(int(keep), 0)]) | self.protected(manifests)
        return [m["id"] for m in manifests if m["id"] not in kept]

    def retire(self, release_id, docker=None, force=False):
        """Remove a release directory and untag the images pinned for it (Docker keeps an image
        while another tag or a container uses it). Refuses the live release and the one before it."""
        manifest = self.load(release_id)
        if not force and release_id in self.protected():
            raise ReleaseError("release %s is %s and is never removed" % (
                release_id, "live" if release_id == self.live_id() else "kept (the release before the live one, or pending)"))
        untagged = []
        if docker is not None:
            # A pin tag names an image, and other releases may pin the same one: keep those.
            still_pinned = set()
            for other in self.releases()[0]:
                if other["id"] != release_id:
                    still_pinned.update(svc.get("pin_tag") for svc in other["services"].values())
            for name, svc in sorted(manifest.get("services", {}).items()):
                ref = svc.get("pin_tag")
                if ref and ref not in still_pinned and docker.untag(ref):
                    untagged.append(ref)
        doomed = os.path.join(self.releases_dir, ".retired-%s" % release_id)
        os.rename(self.release_dir(release_id), doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        fsync_dir(self.releases_dir)
        return untagged

    # locks

    def read_lock(self):
        """The lock, None when free. A torn file (not JSON) counts as a stale lock; JSON that is not
        a lock (an array, a number, wrong types) raises CorruptLock: nobody can tell who holds it."""
        try:
            with open(self.lock_path, "rb") as handle:
                lock = json.loads(handle.read().decode("utf-8"))
        except (IOError, OSError) as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise ReleaseError("cannot read the lock %s: %s" % (self.lock_path, exc.strerror))
        except ValueError:
            # A torn lock file cannot be trusted as held; report it as stale so it is taken over.
            return {"owner": "<unreadable lock file>", "heartbeat_epoch": 0, "ttl": 0}
        problem = lock_problem(lock)
        if problem:
            raise CorruptLock("the deploy lock %s of stack %s is not a lock written by vpsops.deploy (%s); "
                              "nothing was changed. When no deploy or rollback of %s runs, remove it "
                              "(vpsops.deploy.deploy_lock with state=released and force=true, or rm %s)"
                              % (self.lock_path, self.stack, problem, self.stack, self.lock_path))
        return lock

    def acquire(self, owner, ttl, controller=None, pid=None, now=None, takeover=None, identity=None):
        """Take the lock. Returns (lock, changed, took_over: previous lock or None).
        Raises LockHeld when a live lock belongs to another owner, unless that owner is
        `takeover` (a holder known to be dead, or one the operator chose to break).
        identity: the controller process's controller_identity(), kept in the lock so that a later
        run can prove this one dead (dead_holder_here)."""
        now = time.time() if now is None else now
        with self.guard():
            lock = self.read_lock()
            took_over = None
            if lock is not None:
                if lock.get("owner") == owner:
                    lock.update(heartbeat=now_iso(now), heartbeat_epoch=now, ttl=ttl)
                    write_json_atomic(self.lock_path, lock)
                    return lock, False, None
                if lock_is_live(lock, now) and not (takeover and lock.get("owner") == takeover):
                    raise LockHeld(lock_message(lock, now), lock)
                took_over = lock
            lock = {
                "stack": self.stack,
                "owner": owner,
                "controller": controller,
                "pid": pid,
                "host": socket.gethostname(),
                "started": now_iso(now),
                "started_epoch": now,
                "heartbeat": now_iso(now),
                "heartbeat_epoch": now,
                "ttl": ttl,
            }
            if isinstance(identity, dict):
                lock["identity"] = dict((k, identity.get(k)) for k in IDENTITY_KEYS)
            write_json_atomic(self.lock_path, lock)
            self.record("lock_taken_over" if took_over else "lock_acquired", owner=owner, controller=controller,
                        previous_owner=(took_over or {}).get("owner"))
            return lock, True, took_over

    def heartbeat(self, owner, ttl=None, now=None):
        now = time.time() if now is None else now
        with self.guard():
            lock = self.read_lock()
            if lock is None:
                raise ReleaseError("heartbeat: stack %s is not locked (the lock was released or never taken)"
                                   % self.stack)
            if lock.get("owner") != owner:
                raise LockHeld("heartbeat: the lock of stack %s is no longer ours: %s"
                               % (self.stack, lock_message(lock, now)), lock)
            lock.update(heartbeat=now_iso(now), heartbeat_epoch=now)
            if ttl:
                lock["ttl"] = ttl
            write_json_atomic(self.lock_path, lock)
            return lock

    def release_lock(self, owner, force=False):
        """Release the lock; (lock or None, changed). Releasing a free lock is not an error; force
        also removes a lock file that is not a lock (CorruptLock)."""
        with self.guard():
            try:
                lock = self.read_lock()
            except CorruptLock:
                if not force:
                    raise
                lock = {"owner": "<not a lock>"}
            if lock is None:
                return None, False
            if lock.get("owner") != owner and not force:
                raise LockHeld("release: the lock of stack %s belongs to someone else: %s"
                               % (self.stack, lock_message(lock, time.time())), lock)
            os.unlink(self.lock_path)
            fsync_dir(self.state_dir)
            self.record("lock_released", owner=owner, forced=bool(force and lock.get("owner") != owner))
            return lock, True


def lock_problem(lock):
    """Why a parsed lock file is not a lock, or None."""
    if not isinstance(lock, dict):
        return "it holds a JSON %s, not an object" % type(lock).__name__
    if not isinstance(lock.get("owner"), str) or not lock["owner"]:
        return "its owner is missing or not a string"
    for key in ("heartbeat_epoch", "ttl"):
        value = lock.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "its %s is %r, not a number" % (key, value)
    return None


def lock_is_live(lock, now):
    """True while the lock's last heartbeat is within its TTL."""
    return now - float(lock.get("heartbeat_epoch") or 0) <= float(lock.get("ttl") or 0)


def lock_message(lock, now):
    age = now - float(lock.get("heartbeat_epoch") or 0)
    return ("stack %s is locked by %s (controller %s, pid %s) since %s; last heartbeat %.0fs ago, ttl %ss"
            % (lock.get("stack"), lock.get("owner"), lock.get("controller") or "?", lock.get("pid") or "?",
               lock.get("started") or "?", age, lock.get("ttl")))


# who holds a lock: the identity of a controller's run ---------------------------------------------

MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
IDENTITY_KEYS = ("machine_id", "boot_id", "pid_ns", "pid", "start", "nonce")


def _first_line(path):
    try:
        with open(path) as handle:
            return handle.readline().strip()
    except (IOError, OSError, UnicodeDecodeError):
        return ""


def boot_id(path=BOOT_ID_FILE):
    """The kernel's id of this boot of this machine (random at each boot; containers share their
    host's), or None."""
    value = _first_line(path).lower()
    return value if re.match(r"^[0-9a-f-]{32,36}$", value) else None


def machine_id(paths=MACHINE_ID_FILES, boot_id_file=BOOT_ID_FILE):
    """This machine's id: systemd's (/etc/machine-id) or D-Bus's; without either (a minimal
    container image), "boot-" and the kernel's boot id; None when nothing can be read (then no
    holder is ever proven dead here and a dead run's lock waits for its TTL)."""
    for path in paths:
        value = _first_line(path).lower()
        if re.match(r"^[0-9a-f]{32}$", value):
            return value
    boot = boot_id(boot_id_file)
    return "boot-" + boot if boot else None


def process_start(pid, proc="/proc"):
    """When process `pid` of this PID namespace started (clock ticks after boot, field 22 of
    /proc/PID/stat): an int; None when no such process exists; False when it exists (or may) but
    its start cannot be read."""
    try:
        pid = int(pid)
        with open(os.path.join(proc, str(pid), "stat")) as handle:
            text = handle.read()
    except (TypeError, ValueError):
        return False
    except (IOError, OSError) as exc:
        if exc.errno != errno.ENOENT:
            return False
        if proc != "/proc":
            return None
        # /proc mounted with hidepid hides other users' processes: ask the kernel.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:
            return False
        return False
    try:
        return int(text.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return False


def controller_identity(pid, proc="/proc", machine=None, boot=None):
    """Who runs a deploy, as precisely as a later run needs to prove it dead: the machine id, the
    kernel's boot id, the PID namespace (two containers with one host name, such as AWX execution
    nodes, differ here), the process id of ansible-playbook and its start time. `nonce` names the
    run: a digest of all of them, the same in every worker and every step of one ansible-playbook
    run (workers are separate processes, so it cannot be a random value kept in memory) and
    different for any other run, on any machine, container, boot or process."""
    machine = machine_id() if machine is None else machine
    boot = boot_id() if boot is None else boot
    try:
        pid_ns = os.readlink(os.path.join(proc, str(int(pid)), "ns", "pid"))
    except (OSError, TypeError, ValueError):
        pid_ns = None
    start = process_start(pid, proc)
    identity = {"machine_id": machine, "boot_id": boot, "pid_ns": pid_ns, "pid": int(pid),
                "start": start if isinstance(start, int) and not isinstance(start, bool) else None}
    seed = "|".join(str(identity[k]) for k in ("machine_id", "boot_id", "pid_ns", "pid", "start"))
    if None in (machine, boot, pid_ns, identity["start"]):
        # Without /proc (a macOS controller) the digest would repeat with the pid: add the host name.
        seed += "|" + socket.gethostname()
    identity["nonce"] = hashlib.sha256(seed.encode("utf-8")).hexdigest()[:16]
    return identity


def run_owner_name(user, controller, identity, job=None):
    """The lock owner of a run: user@controller:<AWX job id>-<nonce>, else
    user@controller:run-<pid>-<nonce>. The nonce keeps two runs apart that have the same user, host
    name and job id or pid (two containers, two AWX installations)."""
    nonce = str((identity or {}).get("nonce") or "")[:8]
    if job not in (None, ""):
        name = "%s@%s:%s" % (user, controller, job)
    else:
        name = "%s@%s:run-%s" % (user, controller, (identity or {}).get("pid"))
    return "%s-%s" % (name, nonce) if nonce else name


def dead_holder_here(lock, here, proc="/proc"):
    """The owner of `lock` when its holder is provably gone: a run of this machine, this boot and this
    PID namespace (its recorded identity equals `here`, this run's controller_identity) whose
    process no longer exists, or is another process now (it started at another time). None for
    anything else: a lock without an identity (written by an older version, or by hand), a run of
    another machine or of another container on this one (an equal host name proves nothing), this
    very run, a holder still running, or one that cannot be checked."""
    if not isinstance(lock, dict) or not lock.get("owner") or not isinstance(here, dict):
        return None
    theirs = lock.get("identity")
    if not isinstance(theirs, dict):
        return None
    for key in ("machine_id", "boot_id", "pid_ns"):
        if not here.get(key) or theirs.get(key) != here.get(key):
            return None
    pid, start = theirs.get("pid"), theirs.get("start")
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (pid, start)) or pid <= 1:
        return None
    if pid == here.get("pid") and start == here.get("start"):
        return None
    now = process_start(pid, proc)
    if now is None or (now is not False and now != start):
        return lock["owner"]
    return None


def refuse_foreign_lock(store, owner, now=None):
    """Raise LockHeld when a live lock of the stack belongs to another owner than `owner` (no owner:
    any live lock). Every module that changes the stack calls it before it acts."""
    lock = store.read_lock() if store.exists() else None
    now = time.time() if now is None else now
    if lock and lock_is_live(lock, now) and (not owner or lock.get("owner") != owner):
        raise LockHeld("refused: %s. Nothing was changed; wait for that run to end, or give its owner as "
                       "lock_owner." % lock_message(lock, now), lock)


def manifest_problem(manifest, release_id, stack):
    """Why a manifest cannot be trusted, or None."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    for key, kind in (("id", str), ("seq", int), ("services", dict), ("files", list), ("status", str)):
        if not isinstance(manifest.get(key), kind):
            return "key %r missing or not a %s" % (key, kind.__name__)
    if manifest["id"] != release_id:
        return "its id %r is not its directory name %r" % (manifest["id"], release_id)
    if manifest.get("stack") != stack:
        return "it belongs to stack %r, not %r" % (manifest.get("stack"), stack)
    if manifest["status"] not in STATUSES:
        return "unknown status %r" % manifest["status"]
    for name, svc in manifest["services"].items():
        if not isinstance(svc, dict) or not svc.get("image_id") or not svc.get("ref"):
            return "service %r has no image_id/ref" % name
    for entry in manifest["files"]:
        if not isinstance(entry, dict) or not entry.get("name"):
            return "a files entry has no name"
    return None


def verify_files(store, manifest):
    """Check the release's files against the checksums in its manifest; return a problem or None."""
    base = store.release_dir(manifest["id"])
    entries = list(manifest["files"])
    if manifest.get("env_file"):
        entries.append(dict(name=ENV_COPY, sha256=manifest["env_file"].get("sha256")))
    for extra in manifest.get("extra_files") or []:
        entries.append(dict(name=os.path.join(EXTRA_DIR, extra["path"]), sha256=extra.get("sha256")))
    for entry in entries:
        path = os.path.join(base, entry["name"])
        try:
            digest = sha256_file(path)[0]
        except (IOError, OSError) as exc:
            return "file %s is missing: %s" % (path, exc.strerror or exc)
        if entry.get("sha256") and digest != entry["sha256"]:
            return "file %s was changed after the release was recorded (sha256 mismatch)" % path
    if not os.path.exists(os.path.join(base, LOCK_OVERRIDE)):
        return "%s is missing" % os.path.join(base, LOCK_OVERRIDE)
    return None


def new_release_id(now=None):
    """A sortable, unique-enough id: UTC time plus 4 random hex digits."""
    now = time.time() if now is None else now
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + os.urandom(2).hex()


# operations that need Docker -------------------------------------------------------------------

def repo_of(ref):
    """The repository of an image reference (no tag, no digest)."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return name


def resolve_images(docker, compose, stack, pull="missing", check_mode=False, to_build=()):
    """{service: {"image": ref, "image_id": id, "digest": repo@sha256 or None}} for every service of
    the resolved model. Missing images are pulled when pull='missing'; still missing is an error
    naming the services. In check mode nothing is pulled: a missing image that a deploy would pull,
    or that it would build (`to_build`), is {"image": ref, "image_id": None, "digest": None,
    "would": "pull" or "build"}."""
    from ansible_collections.vpsops.deploy.plugins.module_utils._compose import service_image

    model = compose.config()
    services = model.get("services") or {}
    if not services:
        raise ReleaseError("the compose files define no services")
    refs = dict((name, service_image(stack, name, svc)) for name, svc in services.items())
    found = docker.images(refs.values())
    missing = sorted(set(ref for ref in refs.values() if ref not in found))
    if check_mode:
        would = {}
        for name, ref in refs.items():
            if name in set(to_build):
                would[name] = "build"
            elif ref not in found and pull in ("missing", "always"):
                would[name] = "pull"
        refs_left = dict((n, r) for n, r in refs.items() if n not in would)
        result = resolve_found(refs_left, found, pull)
        for name, how in would.items():
            result[name] = {"image": refs[name], "image_id": None, "digest": None, "would": how}
        return result
    pull_errors = {}
    if missing and pull in ("missing", "always"):
        for ref in missing:
            try:
                docker.pull(ref)
            except Exception as exc:  # noqa: BLE001 - every failure is reported below, with the services
                pull_errors[ref] = str(exc).strip() or type(exc).__name__
        found.update(docker.images(missing))
    return resolve_found(refs, found, pull, pull_errors)


def resolve_found(refs, found, pull, pull_errors=None):
    """resolve_images' answer for `refs` ({service: image ref}) from `found` (docker.images)."""
    pull_errors = pull_errors or {}
    absent = sorted((name, ref) for name, ref in refs.items() if ref not in found)
    if absent:
        if pull_errors:
            raise ReleaseError("no image on this host for service(s) %s, and pulling failed: %s. Nothing was "
                               "changed; make the image reachable (registry, network, credentials: docker login) "
                               "or build or load it on the host"
                               % (", ".join("%s (%s)" % a for a in absent),
                                  "; ".join("%s: %s" % (ref, pull_errors[ref][-1000:]) for ref in sorted(pull_errors))))
        raise ReleaseError("no image on this host for service(s) %s: build or pull them first%s"
                           % (", ".join("%s (%s)" % a for a in absent),
                              " (pull=never)" if pull == "never" else ""))
    result = {}
    for name, ref in sorted(refs.items()):
        info = found[ref]
        repo = repo_of(ref)
        digest = next((d for d in info["repo_digests"] if repo_of(d) == repo), None)
        result[name] = {"image": ref, "image_id": info["id"], "digest": digest}
    return result


def same_content(manifest, file_digests, env_digest, images, phases=None, extra=None):
    if [f.get("sha256") for f in manifest.get("files", [])] != file_digests:
        return False
    if extra is not None and [(e["path"], e["sha256"], e.get("mode")) for e in manifest.get("extra_files") or []] != extra:
        return False
    if phases is not None and strip_waits(manifest.get("phases") or []) != strip_waits(phases):
        return False
    if ((manifest.get("env_file") or {}).get("sha256")) != env_digest:
        return False
    svc = manifest.get("services", {})
    return sorted(svc) == sorted(images) and all(svc[n].get("image_id") == images[n]["image_id"] for n in images)


def strip_waits(phases):
    """The phases without their `waits`: those follow from the files and the env compared beside them,
    and a release recorded before phases carried them is the same release."""
    return [dict((k, v) for k, v in p.items() if k != "waits") for p in phases]


def sha256_or_none(path):
    return sha256_file(path)[0] if path else None


def snapshot(store, docker, compose, release_id, files, project_dir, env_file=None, phases=None, pull="missing",
             user=None, git_sha=None, check_mode=False, extra_files=None, file_refs=None, to_build=()):
    """Record a pending release of what the compose files resolve to now.

    Returns (manifest, changed). When the newest live or pending release has the same files and
    image IDs it is returned unchanged: deploying the same thing twice records nothing new. In
    check mode nothing is recorded, pulled or built (resolve_images).
    """
    images = resolve_images(docker, compose, store.stack, pull=pull, check_mode=check_mode, to_build=to_build)
    file_digests = [sha256_file(p)[0] for p in files]
    env_digest = sha256_or_none(env_file)
    extra = [(e["path"], sha256_file(e["source"])[0], int(e.get("mode") or 0o600))
             for e in sorted(extra_files or [], key=lambda e: e["path"])]
    phase_entries = []
    for phase in phases or []:
        phase_entries.append({
            "name": phase["name"],
            "files": list(phase.get("files") or []),
            "services": list(phase.get("services") or []),
            "checks": list(phase.get("checks") or []),
        })
        if phase.get("jobs"):
            # One-shot services: run to completion, never gated as running containers.
            phase_entries[-1]["jobs"] = list(phase["jobs"])
        if phase.get("waits"):
            # What each service waits for (depends_on): the phase brings them up in that order.
            phase_entries[-1]["waits"] = dict((name, dict(deps)) for name, deps in phase["waits"].items())
    manifests, _bad = store.releases()
    live = store.live_id()
    for m in manifests:
        if m["status"] == "pending" or m["id"] == live:
            if same_content(m, file_digests, env_digest, images, phase_entries, extra):
                return m, False
            break
    release_id = release_id or new_release_id()
    pins, services = {}, {}
    for name, info in images.items():
        tag = pin_ref(store.stack, name, info["image_id"])
        pins[name] = info["digest"] or tag
        services[name] = dict(info, ref=pins[name], pin_tag=tag)
    if check_mode:
        extra_entries = [dict(path=p, sha256=d, mode=m) for p, d, m in extra]
        manifest = {"id": release_id, "status": "pending", "services": services, "phases": phase_entries,
                    "files": [{"name": os.path.basename(p), "sha256": d} for p, d in zip(files, file_digests)],
                    "extra_files": extra_entries, "file_labels": file_labels(extra_entries, file_refs), "seq": None}
        return manifest, True
    store.ensure()
    with store.guard():
        # Tag first: the pinned tag keeps the image through `docker image prune` even when the
        # original tag moves. A tag on an image is harmless if the release is never written.
        for name, svc in services.items():
            docker.tag(svc["image_id"], svc["pin_tag"])
        manifest = store.create(release_id, files, pins, services, phase_entries, project_dir, env_file=env_file,
                                user=user, git_sha=git_sha, lock_owner=store.lock_holder(), extra_files=extra_files,
                                file_refs=file_refs)
        store.record("release_created", release=release_id, user=user, git_sha=git_sha,
                     services=dict((n, s["image_id"]) for n, s in services.items()))
    return manifest, True


ENV_REF = "from_env"
# A URL or command-line argument with a secret inside: its text around {"from_env": NAME} parts.
ENV_PARTS = "from_env_parts"
# What seal_checks looks for inside a check's url and argv.
TEXT_KEYS = ("url", "argv")


def given_checks(checks):
    """Checks with only the keys that were given or have a default (unset options are not recorded)."""
    return [dict((k, v) for k, v in (check or {}).items() if v is not None) for check in checks or []]


def stored_checks(checks, env=None):
    """Checks as a manifest keeps them: the keys given, and no secret (a password or header the env
    file holds is kept as a reference to its variable)."""
    given = given_checks(checks)
    return given if env is None else seal_checks(given, env)


def seal_checks(checks, env):
    """Health checks as a release manifest keeps them: no secret is written.

    A secret (login_password, password, a header) whose value is the value of a variable of the
    release's env file is kept as {"from_env": NAME}: the env file's copy in the release (0600) holds
    it, and unseal_checks puts it back for the rollback's gate. A URL or a command-line argument that
    holds a secret (URL credentials, a token parameter, a password after -a or --password, or the
    value of a secret-named env variable) keeps its text around {"from_env": NAME} parts the same
    way. A check with any other secret is not recorded at all (a rollback then gates on its
    containers and on the checks its caller passes): without its secret it could only fail."""
    by_value = dict((value, name) for name, value in sorted(env.items()) if value)
    # Values of env variables with secret-looking names are found inside any text.
    env_secrets = set(value for name, value in env.items() if is_secret_name(name) and len(value or "") >= 3)

    def seal(value):
        name = by_value.get(value) if isinstance(value, str) else None
        return {ENV_REF: name} if name else None

    def seal_text(text, found):
        """(sealed text, whether every secret in it has an env variable)."""
        found = set(s for s in found | set(v for v in env_secrets if v in text) if s in text)
        if not found:
            return text, True
        if any(s not in by_value for s in found):
            return None, False
        parts = [text]
        for secret in sorted(found, key=len, reverse=True):
            split = []
            for part in parts:
                if isinstance(part, str):
                    pieces = part.split(secret)
                    for index, piece in enumerate(pieces):
                        if index:
                            split.append({ENV_REF: by_value[secret]})
                        if piece:
                            split.append(piece)
                else:
                    split.append(part)
            parts = split
        return {ENV_PARTS: parts}, True

    sealed = []
    for check in checks or []:
        check = dict(check)
        kept = True
        for key in SECRET_CHECK_KEYS:
            if check.get(key) is None:
                continue
            if key == "headers" and isinstance(check[key], dict):
                check[key] = dict((h, seal(v)) for h, v in check[key].items())
                kept = kept and all(v is not None for v in check[key].values())
            else:
                check[key] = seal(check[key])
                kept = kept and check[key] is not None
        if isinstance(check.get("url"), str):
            check["url"], ok = seal_text(check["url"], url_secrets(check["url"]))
            kept = kept and ok
        if isinstance(check.get("argv"), list):
            found = argv_secrets(check["argv"])
            words = [seal_text(str(word), found | url_secrets(str(word))) for word in check["argv"]]
            check["argv"] = [word for word, _ok in words]
            kept = kept and all(ok for _word, ok in words)
        if kept:
            sealed.append(check)
    return sealed


def unseal_checks(checks, env):
    """The recorded checks with their {"from_env": NAME} secrets read back from the env file."""
    def unseal(value):
        if isinstance(value, dict) and set(value) == {ENV_REF}:
            return env.get(value[ENV_REF])
        if isinstance(value, dict) and set(value) == {ENV_PARTS}:
            return "".join(part if isinstance(part, str) else (unseal(part) or "") for part in value[ENV_PARTS])
        return value

    unsealed = []
    for check in checks or []:
        check = dict(check)
        for key in SECRET_CHECK_KEYS + TEXT_KEYS:
            if key == "headers" and isinstance(check.get(key), dict) and set(check[key]) != {ENV_REF}:
                check[key] = dict((h, unseal(v)) for h, v in check[key].items())
            elif key == "argv" and isinstance(check.get(key), list):
                check[key] = [unseal(word) for word in check[key]]
            elif key in check:
                check[key] = unseal(check[key])
        unsealed.append(check)
    return unsealed
