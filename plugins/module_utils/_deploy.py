# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The deploy engine: one host's deploy of a stack as plain Python over the release store, the
Compose wrapper, the backup engine and the gate. Private to this collection.

A deploy on a host is four steps, each one module run (vpsops.deploy.deploy_host):

- begin: take the stack's lock, stage the new compose files and .env, check them (compose config,
  variables, tags, ports), record the release (pending, every image pinned), plan what each phase
  changes, measure the SLO baseline. The running stack and the project directory are not touched.
- phase (one per phase): put the release's files in the project directory, the phase's verified
  backups, its migration, the rollout of its replicated services, `up` of the others and the gate.
  A phase whose containers already run the release (same config hash, running, healthy) takes no
  backup and no `up`: one probe round proves it.
- finish: smoke tests, the SLO gate, every check of every phase twice in a row, the watch window,
  then the release goes live (retention applies).
- end: roll back to the live release when told to (the project directory shows it again), mark the
  release this run recorded failed when it did not go live, release the lock.

Every step refreshes the lock while it runs and refuses to act on a lock another owner holds.
The decisions across hosts (who failed, who is rolled back) belong to the controller (the
deploy_outcome action); nothing here knows of other hosts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Compose, DockerError
from ansible_collections.vpsops.deploy.plugins.module_utils._env import read_env_file
from ansible_collections.vpsops.deploy.plugins.module_utils._files import makedirs_owner_only, write_atomic
from ansible_collections.vpsops.deploy.plugins.module_utils._hooks import HookError, hooks_of, run_hooks
from ansible_collections.vpsops.deploy.plugins.module_utils._phase import PhaseError, run_phase
from ansible_collections.vpsops.deploy.plugins.module_utils._phase_backups import PhaseBackupError, restore_backups, take_backups
from ansible_collections.vpsops.deploy.plugins.module_utils._plan import add_waits, jobs_of, unchanged_services
from ansible_collections.vpsops.deploy.plugins.module_utils._probes import (
    CheckSpecError,
    run_gate,
    validate_checks,
    watch,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._project import ENV_FILE, ProjectError, check_name, publish, sync
from ansible_collections.vpsops.deploy.plugins.module_utils._releases import (
    LOCK_OVERRIDE,
    LockHeld,
    ReleaseError,
    given_checks,
    lock_is_live,
    lock_message,
    lock_override_text,
    refuse_foreign_lock,
    snapshot,
    stored_checks,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._rollback import rollback
from ansible_collections.vpsops.deploy.plugins.module_utils._secrets import (
    argv_secrets,
    check_secrets,
    is_secret_name,
    redact_text,
    secret_parts,
    url_secrets,
)

STAGING = ".staging"
# The deploy's gates run after `up --wait`: most checks pass at their first probe, and the final
# gate's second success in a row needs one interval more. Probe often, back off little.
GATE_INTERVAL = 0.3
GATE_MAX_INTERVAL = 2.0


class DeployError(Exception):
    """A step failed; `result` holds what it did before it failed."""

    def __init__(self, message, result=None):
        super(DeployError, self).__init__(message)
        self.result = result or {}


# the stack -------------------------------------------------------------------------------------

def stack_files(stack):
    """Every compose file of the stack, in phase order, each once."""
    files = []
    for phase in stack.get("phases") or []:
        for name in phase.get("compose_files") or []:
            if name not in files:
                files.append(name)
    return files


def stack_secrets(stack):
    """Every secret value of the stack: what a module masks in anything it returns. The env values
    whose names look secret, the databases' passwords, and the secrets of checks, smoke tests and SLO
    endpoints (secret keys, headers' values, URL credentials and tokens, command-line passwords)."""
    found = set()
    for name, value in (stack.get("env") or {}).items():
        if is_secret_name(name) and isinstance(value, (str, int, float)) and not isinstance(value, bool) \
                and len(str(value)) >= 3:
            found.add(str(value))
        found.update(url_secrets(value))  # DATABASE_URL=postgres://user:pw@db/app
    for db in (stack.get("databases") or {}).values():
        if isinstance(db, dict) and isinstance(db.get("login_password"), (str, int)) \
                and len(str(db["login_password"])) >= 3:
            found.add(str(db["login_password"]))
    checks = list(stack.get("smoke_tests") or []) + list((stack.get("slo") or {}).get("endpoints") or [])
    for phase in stack.get("phases") or []:
        checks += list((phase or {}).get("checks") or [])
        migration = (phase or {}).get("migration")
        if isinstance(migration, dict) and isinstance(migration.get("command"), (list, str)):
            found.update(argv_secrets(migration["command"]))
    for check in checks:
        found.update(check_secrets(check))
    # A multi-line secret (a PEM key) is masked line by line too.
    for secret in [f for f in found if "\n" in f]:
        found.update(secret_parts(secret))
    return found


def secret_file_values(files):
    """What a module masks of the secret and env files the compose files reference: each file's
    text and each of its lines of 8 characters or more."""
    import base64

    from ansible_collections.vpsops.deploy.plugins.module_utils._env import parse_env

    found = set()
    for spec in (files or {}).values():
        if not isinstance(spec, dict) or spec.get("kind") not in ("secret", "env_file"):
            continue
        try:
            text = base64.b64decode(spec.get("content") or "").decode("utf-8", "replace")
        except (TypeError, ValueError):
            continue
        if spec["kind"] == "env_file":
            # An env file: the values of its secret-looking variables, as for the stack's env.
            found |= stack_secrets({"env": parse_env(text)})
            continue
        found.update(secret_parts(text))
    return found


def stack_hooks(docker, stack, spec, when, where, release=None, live=None, phase=None, outcome=None, only=None):
    """Run the hooks of `spec` for `when` (HookError on the first that fails); returns their runs.
    Every hook gets VPSOPS_STACK, VPSOPS_RELEASE, VPSOPS_LIVE, VPSOPS_PHASE, VPSOPS_HOOK and
    VPSOPS_OUTCOME in its environment; its output is masked with the stack's secrets."""
    hooks = [h for h in hooks_of(spec, when) if only is None or only(h)]
    if not hooks:
        return []
    secrets = stack_secrets(stack)
    env = dict(VPSOPS_STACK=stack.get("name"), VPSOPS_RELEASE=release, VPSOPS_LIVE=live, VPSOPS_PHASE=phase,
               VPSOPS_HOOK=when, VPSOPS_OUTCOME=outcome)
    return run_hooks(docker, stack["name"], hooks, where, env=env, redact=lambda text: redact_text(text, secrets))


def phase_of(stack, name):
    for phase in stack.get("phases") or []:
        if phase.get("name") == name:
            return phase
    raise DeployError("phase %r is not a phase of the stack %s; its phases are %s"
                      % (name, stack.get("name"), ", ".join(p.get("name", "?") for p in stack.get("phases") or [])))


def phase_services(docker, project, phases, files_by_name, project_dir, env_file, file_services=None,
                   stack_checked=None, keep=None):
    """The phases as a release records them: name, files, services and checks without secrets.

    A phase's services are the stack's services (the resolved model the stack checks read, once
    `stack_checked` is done, or one `compose config --services` of every file) that its files define
    (`file_services`, read by the controller): a service may depend on one of an earlier phase's
    file. A phase with a file whose services only compose can tell (`include:`, `extends` of
    another file) is listed by `compose config --services` of its files alone."""
    env = read_env_file(env_file)
    file_services = file_services or {}
    every = {}

    def all_services():
        if "names" not in every:
            if stack_checked is not None:
                stack_checked.exception()
            model = (keep or {}).get("model")
            if isinstance(model, dict) and isinstance(model.get("services"), dict):
                every["names"] = set(model["services"])
            else:
                paths = [files_by_name[f] for f in files_by_name]
                out = Compose(docker, project, paths, project_dir=project_dir, env_file=env_file).run(
                    ["config", "--services", "--no-consistency"], what="docker compose config --services")
                every["names"] = set(out.split())
        return every["names"]

    def services_of(phase):
        unknown = [f for f in phase["compose_files"] if f not in files_by_name]
        if unknown or not phase["compose_files"]:
            raise DeployError("phases: phase %r names compose_files %s that are not files of the stack (%s)"
                              % (phase["name"], unknown or "[]", ", ".join(sorted(files_by_name))))
        paths = [files_by_name[f] for f in phase["compose_files"]]
        defined = [file_services.get(f) for f in phase["compose_files"]]
        if all(isinstance(d, list) for d in defined):
            names = set(n for d in defined for n in d)
            services = sorted(n for n in all_services() if n in names)
        else:
            out = Compose(docker, project, paths, project_dir=project_dir, env_file=env_file).run(
                ["config", "--services", "--no-consistency"], what="docker compose config --services")
            services = sorted(out.split())
        entry = dict(name=phase["name"], files=[os.path.basename(p) for p in paths], services=services,
                     checks=stored_checks(phase.get("checks"), env))
        if phase.get("jobs"):
            entry["jobs"] = list(phase["jobs"])
        return entry

    phases = list(phases or [])
    if len(phases) <= 1 or all(all(isinstance(file_services.get(f), list) for f in p["compose_files"]) for p in phases):
        return [services_of(p) for p in phases]
    with ThreadPoolExecutor(max_workers=min(4, len(phases))) as pool:
        return list(pool.map(services_of, phases))


def completion_dependencies(model):
    """Services another service waits for with `condition: service_completed_successfully`: one-shot
    services by compose's own word."""
    found = set()
    for svc in ((model or {}).get("services") or {}).values():
        depends = (svc or {}).get("depends_on") or {}
        if isinstance(depends, dict):
            for name, spec in depends.items():
                if isinstance(spec, dict) and spec.get("condition") == "service_completed_successfully":
                    found.add(name)
    return found


def add_jobs(phases, model):
    """Each phase's one-shot services (its `jobs`, in the stack's order, then those compose names as
    completed dependencies): recorded with the release as the phase's `jobs`."""
    completed = completion_dependencies(model)
    for phase in phases:
        jobs = list(phase.get("jobs") or [])
        unknown = [j for j in jobs if j not in phase["services"]]
        if unknown:
            raise DeployError("vpsops_stack.phases[%s].jobs names %s, which are not services of the phase "
                              "(its services are %s)." % (phase["name"], unknown, phase["services"]))
        jobs += sorted(s for s in phase["services"] if s in completed and s not in jobs)
        if jobs:
            phase["jobs"] = jobs
        else:
            phase.pop("jobs", None)
    return phases


# the lock --------------------------------------------------------------------------------------

class Heartbeat:
    """Refreshes the stack's lock while a step runs (at once, then every third of its TTL), and
    refuses the step when the lock is not ours: another controller took it over, or it was released.
    `lost` is set when a refresh during the step found the lock gone to someone else."""

    def __init__(self, store, owner, ttl=None, clock=time.time):
        self.store = store
        self.owner = owner
        self.ttl = ttl
        self.clock = clock
        self.lost = None
        self._stop = threading.Event()
        self._thread = None

    def beat(self):
        try:
            return self.store.heartbeat(self.owner, self.ttl)
        except LockHeld as exc:
            raise DeployError("the deploy lock of stack %s is no longer held by this run (%s): nothing more "
                              "was changed" % (self.store.stack, exc))
        except ReleaseError as exc:
            raise DeployError("the deploy lock of stack %s is not held by this run: %s" % (self.store.stack, exc))

    def __enter__(self):
        lock = self.beat()
        period = max(1.0, float(self.ttl or lock.get("ttl") or 60) / 3.0)

        def loop():
            while not self._stop.wait(period):
                try:
                    self.beat()
                except DeployError as exc:
                    self.lost = str(exc)
                    return
                except Exception:  # noqa: BLE001 - a failed refresh is retried at the next period
                    continue

        self._thread = threading.Thread(target=loop, name="lock-heartbeat")
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return False


# begin -----------------------------------------------------------------------------------------

def stage(store, contents, env, check_mode, files=None):
    """Write the new compose files, .env and the files they reference (`files`: {relative path:
    {content (base64), mode, kind}}) to a staging directory of the state directory (a temporary
    directory in check mode). Returns (its path, the referenced files as the release records them:
    [{path, source, mode, kind}])."""
    import base64

    if check_mode:
        path = tempfile.mkdtemp(prefix="vpsops-plan-")
    else:
        store.ensure()
        path = os.path.join(store.state_dir, STAGING)
        if os.path.isdir(path):
            shutil.rmtree(path)
    extra = []
    try:
        sync(path, contents, env=env)
        for rel in sorted(files or {}):
            spec = files[rel] if isinstance(files[rel], dict) else {}
            name = check_name(rel, "files")
            if name in contents:
                raise DeployError("files: %s is both a compose file and a file the compose files reference" % name)
            try:
                data = base64.b64decode(spec.get("content") or "", validate=True)
            except (TypeError, ValueError):
                raise DeployError("files.%s: content must be base64 (the deploy_host action sets it)" % name)
            mode = int(spec.get("mode") or 0o600) & 0o755 | 0o400
            target = os.path.join(path, name)
            makedirs_owner_only(os.path.dirname(target))
            # Its own mode (the state directory is owner-only): a build context copies modes into
            # the image, so an executable stays executable.
            write_atomic(target, data, mode)
            extra.append(dict(path=name, source=target, mode=mode, kind=spec.get("kind")))
    except ProjectError as exc:
        raise DeployError(str(exc))
    return path, extra


def quiet_phase(phase, release_is_live):
    """Whether a phase whose containers already run the release may skip its module run: it has no
    backup or migration to take, or the release is the live one (same files, env and images: a
    redeploy that changes nothing). A new release keeps its backups even for a phase it does not
    recreate: a later phase may change the data."""
    return release_is_live or not (phase.get("backup") or phase.get("migration"))


def plan_phases(compose, manifest, stack, containers, images_of_refs=None, live=None):
    """Per phase: its services and whether the release changes any of them on this host."""
    migrations = dict((p["name"], (p.get("migration") or {}).get("service")) for p in stack["phases"])
    specs = dict((p["name"], p) for p in stack["phases"])
    services = []
    for phase in manifest.get("phases") or []:
        services += [s for s in phase["services"] if s != migrations.get(phase["name"])]
    same = unchanged_services(compose, sorted(set(services)), containers, jobs=set(jobs_of(manifest)))
    running = {}
    for c in containers:
        ref = c.get("image") or c.get("image_id") or "?"
        running.setdefault(c["service"], set()).add((images_of_refs or {}).get(ref) or ref)
    plan = []
    for phase in manifest.get("phases") or []:
        names = [s for s in phase["services"] if s != migrations.get(phase["name"])]
        changes = sorted(set(names) - same)
        moves = {}
        for name in names:
            now = sorted(running.get(name) or [])
            action = "unchanged" if name in same else ("recreate" if now else "create")
            moves[name] = {"action": action, "from": now or None,
                           "to": (manifest["services"].get(name) or {}).get("image")}
        plan.append(dict(name=phase["name"], services=phase["services"], changes=changes, moves=moves,
                         unchanged=not changes and quiet_phase(specs.get(phase["name"]) or {},
                                                               manifest["id"] == live)))
    return plan


def begin(store, docker, stack, contents, owner, ttl=1800, controller=None, pid=None, takeover=None,
          project_dir=None, pull="missing", user=None, git_sha=None, preflight=None, check_mode=False,
          environ=None, identity=None, extra_files=None, file_refs=None, file_services=None):
    """Lock, stage, check, record and plan one host's deploy. Returns the result; raises LockHeld
    when the lock belongs to another run, DeployError for anything else (and then releases the lock
    it took: nothing on the host changed)."""
    project_dir = project_dir or os.path.join(store.state_dir, "project")
    names = stack_files(stack)
    missing = [n for n in names if not isinstance(contents.get(n), str)]
    if missing:
        raise DeployError("no content for the compose files %s (the deploy_host action reads them from the "
                          "stack's source on the controller)" % ", ".join(missing))
    for phase in stack.get("phases") or []:
        try:
            validate_checks(given_checks(phase.get("checks")), docker.cli)
        except CheckSpecError as exc:
            raise DeployError("vpsops_stack.phases[%s].checks: %s; nothing was changed" % (phase.get("name"), exc))
    try:
        # Smoke tests run at the end; a malformed one is refused now, before anything changes.
        validate_checks([dict(c, type=c.get("type") or "http") for c in given_checks(stack.get("smoke_tests"))],
                        docker.cli)
    except CheckSpecError as exc:
        raise DeployError("vpsops_stack.smoke_tests: %s; nothing was changed" % exc)
    result = dict(changed=False, lock=None, took_over=None, warnings=[], seconds={})
    started = time.monotonic()

    def host_checks():
        if preflight is not None and preflight.get("check_host", True):
            result["host"] = host_preflight(docker, preflight, preflight.get("host") or "this host")
        return round(time.monotonic() - started, 3)

    # The host's checks run while the lock is taken and the new files are read; their problems come
    # first (a full disk says so, not that the lock could not be written).
    with ThreadPoolExecutor(max_workers=3) as pool:
        host = pool.submit(host_checks)
        try:
            lock = take_lock(store, result, owner, ttl, controller, pid, takeover, identity, check_mode)
        except BaseException:
            host.exception()
            host.result()
            raise
        try:
            return _begin(store, docker, stack, contents, names, owner, project_dir, pull, user, git_sha, preflight,
                          check_mode, environ, result, lock, pool, host, extra_files, file_refs, file_services)
        except BaseException:
            # Nothing changed on the host yet: the lock taken here goes with the failure.
            if not check_mode and result.get("lock"):
                try:
                    store.release_lock(owner)
                except (ReleaseError, OSError):
                    pass
            raise


def take_lock(store, result, owner, ttl, controller, pid, takeover, identity, check_mode):
    """The stack's lock for this run (in check mode only whether another run holds it)."""
    now = time.time()
    if check_mode:
        lock = store.read_lock() if store.exists() else None
        if lock and lock.get("owner") != owner and lock_is_live(lock, now) and lock.get("owner") != takeover:
            raise LockHeld("cannot lock: " + lock_message(lock, now), lock)
        return lock
    store.ensure()
    lock, _changed, took_over = store.acquire(owner, ttl, controller, pid, takeover=takeover, identity=identity)
    result.update(lock=lock, took_over=took_over)
    if took_over:
        result["warnings"].append("took over the deploy lock (%s): %s" % (
            "its holder is gone" if took_over.get("owner") == takeover else "stale",
            lock_message(took_over, lock["heartbeat_epoch"])))
    return lock


def host_preflight(docker, options, host="this host"):
    """The host can run the stack: the Docker daemon answers, Compose v2 is recent enough, and the
    disk, memory and cores are enough (the checks of the preflight role, in the same run)."""
    from ansible_collections.vpsops.deploy.plugins.module_utils import _preflight

    params = dict((k, v.get("default")) for k, v in _preflight.argument_spec().items())
    params.update(dict((k, v) for k, v in options.items() if k in params and v is not None))
    try:
        for key in ("min_disk_free_mb", "min_memory_mb", "min_cores"):
            params[key] = int(params[key])
    except (TypeError, ValueError):
        raise DeployError("preflight: %s must be a whole number, got %r" % (key, params[key]))
    params.update(scope="host", compose_min_version=str(options.get("compose_min_version") or "2.20.0"),
                  docker_cli=docker.cli)
    try:
        found = _preflight.preflight(params, docker)
    except _preflight.PreflightError as exc:
        raise DeployError("preflight: %s" % exc)
    if found["problems"]:
        raise DeployError("%s on %s" % (_preflight.failure_message(params, found["problems"]), host))
    return found["checks"]


def _begin(store, docker, stack, contents, names, owner, project_dir, pull, user, git_sha, preflight, check_mode,
           environ, result, lock, pool, host, extra_files=None, file_refs=None, file_services=None):
    from ansible_collections.vpsops.deploy.plugins.module_utils import _preflight

    seconds = result["seconds"]
    mark = time.monotonic()
    staged, extra = stage(store, dict((n, contents[n]) for n in names), stack.get("env") or {}, check_mode,
                          extra_files)
    try:
        files = [os.path.join(staged, n) for n in names]
        env_file = os.path.join(staged, ENV_FILE)
        if not check_mode:
            if not os.path.isdir(project_dir):
                makedirs_owner_only(project_dir)
        # Compose resolves the referenced files against the project directory, where the running
        # release's files are (the config hashes of the plan must be those the phases will see);
        # before a referenced file is there for the first time, against the staged files.
        compose_dir = project_dir if os.path.isdir(project_dir) and all(
            os.path.exists(os.path.join(project_dir, e["path"])) for e in extra) else staged
        files_by_name = dict(zip(names, files))
        keep = {}

        def checks_of_stack():
            if preflight is None:
                return round(time.monotonic() - mark, 3)
            params = dict((k, v.get("default")) for k, v in _preflight.argument_spec().items())
            params.update(dict((k, v) for k, v in preflight.items() if k in params and v is not None))
            params.update(scope="stack", project=store.stack, project_dir=compose_dir, files=files,
                          env_files=[env_file], docker_cli=docker.cli,
                          required_env=sorted((stack.get("env") or {}).keys()))
            _checks, _services, problems = _preflight.stack_checks(
                params, docker, dict(os.environ) if environ is None else environ, keep=keep)
            if problems:
                raise DeployError(_preflight.failure_message(params, problems))
            return round(time.monotonic() - mark, 3)

        stack_checked = pool.submit(checks_of_stack)

        def services_of_phases():
            found = phase_services(docker, store.stack, stack["phases"], files_by_name, compose_dir, env_file,
                                   file_services, stack_checked, keep)
            return found, round(time.monotonic() - mark, 3)

        # Independent reads of the new files (Docker and Compose answer each in their own process), at
        # once and beside the host's checks; the host's problems first when several fail.
        futures = [host, stack_checked, pool.submit(services_of_phases)]
        for future in futures:
            future.exception()
        seconds["host"] = futures[0].result()
        seconds["stack checks"] = futures[1].result()
        phases, seconds["phases"] = futures[2].result()
        add_jobs(phases, keep.get("model"))
        add_waits(phases, keep.get("model"))
        built = sorted(n for n, svc in ((keep.get("model") or {}).get("services") or {}).items()
                       if isinstance(svc, dict) and svc.get("build"))
        if built and check_mode:
            result["would_build"] = built
        elif built:
            # Images built on the host from the release's own files (the staged build contexts; a
            # git context builds the ref its URL names). Recorded and pinned like any other image:
            # no later step builds again, a rollback never rebuilds.
            mark = time.monotonic()
            try:
                Compose(docker, store.stack, files, project_dir=staged, env_file=env_file).build(built)
            except DockerError as exc:
                raise DeployError("building %s on the host failed: %s" % (", ".join(built), exc))
            result["built"] = built
            seconds["build"] = round(time.monotonic() - mark, 3)
        for phase in stack["phases"]:
            rollout = phase.get("rollout") or []
            known = next(p["services"] for p in phases if p["name"] == phase["name"])
            stray = [s for s in rollout if s not in known]
            if stray:
                raise DeployError("vpsops_stack.phases[%s].rollout names %s, which are not services of the phase "
                                  "(its services are %s)." % (phase["name"], stray, known))
        compose = Compose(docker, store.stack, files, project_dir=compose_dir, env_file=env_file)
        compose.model = keep.get("model")  # the stack checks read it with these files: not read twice
        mark = time.monotonic()
        live = store.live_id() if store.exists() else None
        manifest, recorded = snapshot(store, docker, compose, None, files, project_dir, env_file=env_file,
                                      phases=phases, pull=pull, user=user, git_sha=git_sha, check_mode=check_mode,
                                      extra_files=extra, file_refs=file_refs, to_build=built if check_mode else ())
        seconds["record"] = round(time.monotonic() - mark, 3)
        if check_mode:
            pulled = sorted(n for n, s in manifest["services"].items() if s.get("would") == "pull")
            if pulled:
                result["would_pull"] = dict((n, manifest["services"][n]["image"]) for n in pulled)
        mark = time.monotonic()
        containers = docker.project_containers(store.stack)
        # Planned with the pins the release records, as the phase step will run it.
        override = os.path.join(staged, LOCK_OVERRIDE)
        write_atomic(override, lock_override_text(manifest["id"], dict(
            (n, s["ref"]) for n, s in manifest["services"].items()), manifest.get("file_labels")).encode("utf-8"),
            0o600)
        pinned = Compose(docker, store.stack, files + [override], project_dir=compose_dir, env_file=env_file)
        known = {}
        if live:
            try:
                known = dict((s.get("ref"), s.get("image")) for s in store.load(live)["services"].values())
            except ReleaseError:
                known = {}
        plan = plan_phases(pinned, manifest, stack, containers, known, live)
        seconds["plan"] = round(time.monotonic() - mark, 3)
        if not check_mode and hooks_of(stack.get("hooks"), "before"):
            mark = time.monotonic()
            run_before_hooks(store, docker, stack, manifest, live, result)
            seconds["hooks"] = round(time.monotonic() - mark, 3)
    finally:
        # The release holds its own copies now; the staged files are never what compose runs.
        shutil.rmtree(staged, ignore_errors=True)
    result.update(
        changed=bool(recorded),
        release=manifest["id"],
        status=manifest["status"],
        live=live,
        recorded=bool(recorded),
        phases=dict((p["name"], p["services"]) for p in plan),
        plan=plan,
        services=dict((n, {"image": s.get("image"), "image_id": s.get("image_id"), "ref": s.get("ref")})
                      for n, s in manifest["services"].items()),
        started_epoch=(lock or {}).get("started_epoch"),
    )
    return result


def run_before_hooks(store, docker, stack, manifest, live, result):
    """The stack's `before` hooks, the last thing begin does: when one fails, nothing of the stack
    has changed; the deploy stops, the release is marked failed and the `after` hooks marked
    on_rollback run (best effort: they undo what the earlier hooks did, such as a paused consumer)."""
    try:
        result["hooks"] = stack_hooks(docker, stack, stack.get("hooks"), "before", "before-deploy",
                                      release=manifest["id"], live=live)
    except HookError as exc:
        result["hooks"] = exc.runs
        undone = []
        try:
            undone = stack_hooks(docker, stack, stack.get("hooks"), "after", "after-deploy (on_rollback)",
                                 release=manifest["id"], live=live, outcome="failed",
                                 only=lambda h: h.get("on_rollback"))
        except HookError as undo:
            undone = undo.runs
        result["hooks"] += undone
        with store.guard():
            current = store.load(manifest["id"])
            marked = current["status"] == "pending" and store.set_status(current, "failed", by="deploy",
                                                                         reason=str(exc)[:500])
            if marked:
                store.record("release_failed", release=manifest["id"], reason=str(exc)[:500])
        raise DeployError("%s; nothing of the stack was changed%s" % (
            exc, ", and the on_rollback hooks ran (%s)" % ", ".join(r["name"] for r in undone) if undone else ""),
            dict(hooks=result["hooks"]))


def slo_params(stack, **extra):
    """slo_gate's parameters for the stack's `slo` (defaults filled as the module's spec fills them)."""
    from ansible_collections.vpsops.deploy.plugins.module_utils import _slo

    params = dict((k, v.get("default")) for k, v in _slo.slo_argument_spec().items())
    params.update(dict((k, v) for k, v in (stack.get("slo") or {}).items() if v is not None))
    endpoint_defaults = dict(method="GET", status=[200], headers=None, validate_certs=True)
    params["endpoints"] = [dict(endpoint_defaults, **dict((k, v) for k, v in e.items() if v is not None))
                           for e in params.get("endpoints") or []]
    params.update(extra)
    return params


def slo_baseline(stack):
    """The SLO endpoints measured before anything changes (the baseline of finish's SLO gate)."""
    from ansible_collections.vpsops.deploy.plugins.module_utils import _slo

    measured, _warnings = _slo.gate(slo_params(stack, fail_on_exceeded=False))
    return measured


# phase -----------------------------------------------------------------------------------------

def migrate(compose, phase, backups, stack):
    """The phase's migration: `docker compose run --rm` of its service, once. On failure, the
    databases are restored from the backups just taken when the stack asks for it."""
    migration = phase["migration"]
    timeout = int(migration.get("timeout") or 600)
    argv = [compose.docker.cli] + compose.base() + ["run", "--rm", "--no-TTY", migration["service"]] + \
        list(migration.get("command") or [])
    rc, out, err = compose.docker.runner(argv, timeout=timeout)
    if rc == 0:
        return dict(service=migration["service"], rc=0)
    timed_out = rc == 124 and "timed out" in (err or "")
    # Its output may print what it connects with: every secret of the stack is masked.
    text = redact_text(("%s %s" % (err or "", out or "")).strip(), stack_secrets(stack))
    if len(text) > 600:
        text = text[:597] + "..."
    if migration.get("restore_on_failure"):
        restored = restore_backups(stack, backups)
        after = "Restored %s from the backups taken before it." % ", ".join(restored)
    else:
        after = "The databases were not restored (set migration.restore_on_failure to restore them)."
    raise DeployError("Migration %s of phase %s failed (exit code %s%s): %s. %s"
                      % (migration["service"], phase["name"], rc if rc is not None else "?",
                         ", timed out" if timed_out else "", text, after))


def deploy_phase(store, docker, stack, release_id, name, owner, ttl=None, since=None, timeout=120,
                 consecutive=1, pull="missing", project_dir=None, planned_unchanged=False, planned_changes=None,
                 clock=time.monotonic):
    """One phase of the deploy of `release_id` on this host (see the module docstring)."""
    from ansible_collections.vpsops.deploy.plugins.module_utils._rollout import Rollout, RolloutError

    phase = phase_of(stack, name)
    manifest = store.load(release_id)
    project_dir = project_dir or manifest.get("project_dir") or os.path.join(store.state_dir, "project")
    recorded = next((p for p in manifest.get("phases") or [] if p["name"] == name), None)
    if recorded is None:
        raise DeployError("release %s records no phase %s: record the release with the stack's phases first"
                          % (release_id, name))
    migration = (phase.get("migration") or {}).get("service")
    rollout = list(phase.get("rollout") or [])
    services = [s for s in recorded["services"] if s != migration]
    jobs = [s for s in recorded.get("jobs") or [] if s in services]
    # One-shot services run to completion after the others are up; the gate judges the others.
    lasting = [s for s in services if s not in jobs]
    plain = [s for s in lasting if s not in rollout]
    timeout = int(phase.get("timeout") or timeout)
    checks = given_checks(phase.get("checks"))
    validate_checks(checks, docker.cli)
    compose = Compose(docker, store.stack, store.compose_files(manifest), project_dir=project_dir,
                      env_file=store.env_path(manifest))
    result = dict(changed=False, phase=name, release=release_id, services=services, unchanged=False, backups=[],
                  skipped_backups=[], migration=None, rolled_out={}, actions=[], containers=[], gate=None,
                  seconds={})
    started = clock()
    with Heartbeat(store, owner, ttl) as beat:
        live = store.live_id()
        if planned_unchanged:
            # begin compared the config hashes with the release's pins moments ago; the gate below
            # still proves every container runs and is healthy.
            same = set(services)
        elif planned_changes is not None:
            # So did it for a phase that changes, under the lock held since: `up` recreates what
            # differs either way, and comparing again costs a `compose config --hash` of every file.
            same = set(services) - set(planned_changes)
        else:
            same = unchanged_services(compose, services, docker.project_containers(store.stack), jobs=set(jobs))
        # A new release keeps its backups and migration even for a phase whose containers stay.
        result["unchanged"] = bool(services) and same >= set(services) and quiet_phase(phase, live == release_id)
        result["seconds"]["plan"] = round(clock() - started, 3)
        if result["unchanged"]:
            # Nothing to change: one probe round of the phase's checks and containers proves it.
            try:
                gated = run_phase(compose, [], gate_services=lasting, checks=checks, since=since, timeout=timeout,
                                  interval=GATE_INTERVAL, max_interval=GATE_MAX_INTERVAL, consecutive=1, pull="never")
            except PhaseError as exc:
                raise DeployError(str(exc), dict(result, **exc.result))
            result.update(containers=gated["containers"], gate=gated["gate"])
            result["seconds"]["total"] = round(clock() - started, 3)
            return result
        written = publish(store, manifest, project_dir)
        result["changed"] = bool(written)
        if hooks_of(phase.get("hooks"), "before"):
            mark = clock()
            try:
                result["hooks"] = stack_hooks(docker, stack, phase.get("hooks"), "before", "before phase %s" % name,
                                              release=release_id, live=live, phase=name)
            except HookError as exc:
                result["hooks"] = exc.runs
                raise DeployError(str(exc), result)
            result["seconds"]["hooks"] = round(clock() - mark, 3)
        mark = clock()
        try:
            backups, skipped = take_backups(store, docker, stack, phase, manifest, live)
        except PhaseBackupError as exc:
            raise DeployError(str(exc), dict(result, **exc.result))
        result.update(backups=backups, skipped_backups=skipped)
        result["seconds"]["backups"] = round(clock() - mark, 3)
        if migration:
            mark = clock()
            result["migration"] = migrate(compose, phase, backups, stack)
            result["changed"] = True
            result["seconds"]["migration"] = round(clock() - mark, 3)
        new_replicas = []
        if rollout:
            mark = clock()
            try:
                rolled = Rollout(compose, timeout=timeout, pull=pull).run(rollout)
            except RolloutError as exc:
                result["rolled_out"] = exc.services
                raise DeployError(str(exc), result)
            result["rolled_out"] = rolled
            result["changed"] = result["changed"] or any(r.get("changed") for r in rolled.values())
            for r in rolled.values():
                new_replicas += list(r.get("new") or [])
            result["seconds"]["rollout"] = round(clock() - mark, 3)
        try:
            done = run_phase(compose, plain, gate_services=lasting, gate_containers=new_replicas, checks=checks,
                             since=since, timeout=timeout, interval=GATE_INTERVAL, max_interval=GATE_MAX_INTERVAL,
                             consecutive=consecutive, pull=pull, jobs=jobs,
                             redact=lambda text: redact_text(text, stack_secrets(stack)),
                             waits=recorded.get("waits"), changing=set(plain) - same)
        except PhaseError as exc:
            raise DeployError(str(exc), dict(result, **exc.result))
        result.update(actions=done["actions"], containers=done["containers"], gate=done["gate"],
                      jobs=done.get("jobs") or [])
        if done.get("steps"):
            result["steps"] = done["steps"]
        result["changed"] = result["changed"] or done["changed"]
        for key, value in done["seconds"].items():
            result["seconds"][key] = value
        if hooks_of(phase.get("hooks"), "after"):
            try:
                result["hooks"] = list(result.get("hooks") or []) + stack_hooks(
                    docker, stack, phase.get("hooks"), "after", "after phase %s" % name, release=release_id,
                    live=live, phase=name)
            except HookError as exc:
                result["hooks"] = list(result.get("hooks") or []) + exc.runs
                raise DeployError(str(exc), result)
        if beat.lost:
            raise DeployError(beat.lost, result)
    result["gated"] = sorted(set([c["name"] for c in result["containers"]] + new_replicas))
    result["seconds"]["total"] = round(clock() - started, 3)
    return result


# finish ----------------------------------------------------------------------------------------

def finish(store, docker, stack, release_id, owner, ttl=None, since=None, gated=None, timeout=120, consecutive=2,
           watch_seconds=0, smoke_timeout=60, baseline=None, keep=5, user=None, host="this host", release_lock=False):
    """Smoke tests, SLO gate, the final gate (every check twice in a row), watch window, promote.
    With release_lock (a deploy of this host alone: nothing after it can call for a rollback), the
    lock goes too, and the end step has nothing left to do."""
    from ansible_collections.vpsops.deploy.plugins.module_utils import _slo

    result = dict(changed=False, release=release_id, smoke=None, slo=None, gate=None, watch=None, removed=[],
                  replaced=None, seconds={})
    checks = []
    for phase in stack.get("phases") or []:
        checks += given_checks(phase.get("checks"))
    with Heartbeat(store, owner, ttl) as beat:
        if not gated:
            # Every container of the release's services (its migrations are one-off): a container
            # this deploy created fails the final gate and the watch on any restart since `since`.
            manifest = store.load(release_id)
            migrations = set((p.get("migration") or {}).get("service") for p in stack.get("phases") or [])
            services = set()
            for phase in manifest.get("phases") or []:
                services |= set(phase.get("services") or [])
            gated = [c["name"] for c in docker.project_containers(store.stack)
                     if c["service"] in services - migrations - set(jobs_of(manifest))]
        smoke = [dict(c, type=c.get("type") or "http") for c in given_checks(stack.get("smoke_tests"))]
        if smoke:
            mark = time.monotonic()
            found = run_gate(smoke, [], smoke_timeout, docker_cli=docker.cli)
            runs = found.runs
            result["smoke"] = found.summary()
            result["seconds"]["smoke"] = round(time.monotonic() - mark, 3)
            if not found.ok:
                failed = [r for r in runs if not r.ready]
                raise DeployError("%d of %d smoke tests failed on %s within %ss: %s." % (
                    len(failed), len(runs), host, smoke_timeout,
                    "; ".join("%s (%s)" % (r.probe.name, r.last_error or r.fatal or "not run") for r in failed)), result)
        if stack.get("slo"):
            mark = time.monotonic()
            try:
                measured, _warnings = _slo.gate(slo_params(stack, baseline=baseline or None, fail_on_exceeded=True))
            except _slo.SloSpecError as exc:
                raise DeployError(str(exc), result)
            result["slo"] = measured
            result["seconds"]["slo"] = round(time.monotonic() - mark, 3)
            if measured.get("exceeded"):
                raise DeployError("SLO gate failed: %s." % "; ".join(measured["exceeded"]), result)
        if checks or gated:
            mark = time.monotonic()
            found = run_gate(checks, gated or [], timeout, GATE_INTERVAL, GATE_MAX_INTERVAL, consecutive, since,
                             docker.cli)
            result["gate"] = found.summary()
            result["seconds"]["gate"] = round(time.monotonic() - mark, 3)
            if not found.ok:
                raise DeployError(found.message, result)
            if watch_seconds and float(watch_seconds) > 0:
                watched, failure, seconds, made = watch(found.probes, float(watch_seconds), 1.0, consecutive)
                result["watch"] = dict(ok=watched, failure=failure, seconds=seconds, probes=made)
                if not watched:
                    raise DeployError("Watch window: check %s failed %.1fs into the %ss window: %s"
                                      % (failure["check"], failure["after"], watch_seconds, failure["error"]), result)
        if beat.lost:
            raise DeployError(beat.lost, result)
        with store.guard():
            manifest = store.load(release_id)
            replaced, changed = store.make_live(manifest, user=user)
            if changed:
                store.record("release_live", release=release_id, replaced=replaced, user=user)
            for old in store.retention_plan(keep):
                store.retire(old, docker)
                store.record("release_retired", release=old, reason="retention keep=%d" % keep)
                result["removed"].append(old)
        result.update(changed=changed or bool(result["removed"]), replaced=replaced)
        if hooks_of(stack.get("hooks"), "after"):
            # The release is live and proven: a failing `after` hook is reported, never rolled back.
            try:
                result["hooks"] = stack_hooks(docker, stack, stack.get("hooks"), "after", "after-deploy",
                                              release=release_id, live=release_id, outcome="succeeded")
            except HookError as exc:
                result["hooks"] = exc.runs
                result.setdefault("warnings", []).append("%s (the release %s is live and stays live)"
                                                         % (exc, release_id))
    if release_lock:
        _lock, result["lock_released"] = store.release_lock(owner)
    return result


# end -------------------------------------------------------------------------------------------

def end(store, docker, release_id, owner, live=None, roll_back=False, reason=None, timeout=120, project_dir=None,
        user=None, gate_fn=None, stack=None):
    """Close this host's part of a deploy: roll back to `live` when told to, mark the release this run
    recorded failed unless it went live and stays, release the lock. Every part is tried even when
    one fails; the result says what was done and `errors` what could not be."""
    result = dict(changed=False, rolled_back=None, marked=None, lock_released=False, lock_note=None, errors=[])
    if not store.exists():
        return result
    manifest = None
    if release_id:
        try:
            manifest = store.load(release_id)
        except ReleaseError as exc:
            result["errors"].append("cannot read release %s: %s" % (release_id, exc))
    if roll_back and live and release_id and live != release_id:
        try:
            refuse_foreign_lock(store, owner)
            done = rollback(store, docker, to=live, timeout=timeout, user=user, gate=gate_fn)
            result["rolled_back"] = dict(to=live, changed=done.get("changed"),
                                         services=sorted(n for n, p in (done.get("services") or {}).items()
                                                         if p.get("changes")))
            result["changed"] = True
            if done.get("project_files") is None:
                # Nothing to `up` (the failed deploy changed no container), so the rollback wrote no
                # files: the project directory may still hold the failed release's.
                publish(store, store.load(live), project_dir or store.load(live).get("project_dir")
                        or os.path.join(store.state_dir, "project"))
        except (ReleaseError, DockerError, DeployError, OSError) as exc:
            result["errors"].append("the rollback to %s failed: %s" % (live, exc))
    if manifest is not None and not result["errors"]:
        try:
            manifest = store.load(release_id)
            status = manifest["status"]
            if status == "pending" or (status == "live" and roll_back and live and live != release_id):
                new = "failed"
                with store.guard():
                    manifest = store.load(release_id)
                    if store.set_status(manifest, new, by="deploy", reason=(reason or "")[:500]):
                        store.record("release_failed", release=release_id, reason=(reason or "")[:500])
                result["marked"] = new
                result["changed"] = True
        except (ReleaseError, OSError) as exc:
            result["errors"].append("cannot mark release %s failed: %s" % (release_id, exc))
    failed = roll_back or bool(reason)
    if stack and failed and hooks_of(stack.get("hooks"), "after"):
        # The deploy failed on some host: the `after` hooks marked on_rollback undo what the
        # `before` hooks did (a paused consumer, a maintenance page), whether or not this host moved.
        try:
            result["hooks"] = stack_hooks(docker, stack, stack.get("hooks"), "after", "after-deploy (on_rollback)",
                                          release=release_id, live=live,
                                          outcome="rolled_back" if result["rolled_back"] else "failed",
                                          only=lambda h: h.get("on_rollback"))
        except HookError as exc:
            result["hooks"] = exc.runs
            result["errors"].append(str(exc))
    try:
        _lock, released = store.release_lock(owner)
        result["lock_released"] = released
    except LockHeld as exc:
        result["lock_note"] = "the lock is held by another run and was left alone: %s" % lock_message(
            exc.lock, time.time())
    except (ReleaseError, OSError) as exc:
        result["errors"].append("cannot release the lock: %s" % exc)
    return result


__all__ = ["DeployError", "Heartbeat", "begin", "deploy_phase", "end", "finish", "publish", "refuse_foreign_lock",
           "stack_files", "CheckSpecError"]
