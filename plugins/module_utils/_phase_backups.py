# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A phase's backups: the stores a phase names in `backup`, backed up concurrently before the
phase changes anything and pinned to the release, and restored when its migration fails and the
stack asks for it. Above the backup engine, below the deploy engine. Private to this collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class PhaseBackupError(Exception):
    """A backup failed; `result` holds the backups that were taken before it failed."""

    def __init__(self, message, result=None):
        super(PhaseBackupError, self).__init__(message)
        self.result = result or {}


def backup_params(stack, name, label, state_dir):
    """pg_backup's parameters for database `name` of the stack (the backup role's mapping)."""
    from ansible_collections.vpsops.deploy.plugins.module_utils._backup import backup_argument_spec

    db = stack["databases"][name]
    settings = stack.get("backup") or {}
    params = dict((k, v.get("default")) for k, v in backup_argument_spec().items())
    params.update(
        db=db.get("db") or db.get("login_db"),
        container=db.get("container"),
        login_host=db.get("login_host"),
        port=db.get("port") or db.get("login_port") or params.get("port"),
        login_user=db.get("login_user") or params.get("login_user"),
        login_password=db.get("login_password"),
        dest=settings.get("dest") or "/var/backups/vpsops/%s" % stack["name"],
        label=label,
        format=settings.get("format") or "custom",
        verify=settings.get("verify") or "toc",
        copy_to=settings.get("copy_to") or None,
        keep=int(settings.get("keep") or 10) or None,
        keep_days=float(settings.get("keep_days") or 0) or None,
        release_state_dir=state_dir,
        timeout=3600,
    )
    for key in ("ssl_mode", "connect_timeout"):
        if db.get(key) is not None:
            params[key] = db[key]
    return params


def store_type(stack, name):
    """postgres (the default), redis or volume: the `type` of database `name` of the stack."""
    return (stack["databases"].get(name) or {}).get("type") or "postgres"


def store_params(stack, name, label, state_dir):
    """store_backup's parameters for store `name` of the stack (type redis or volume)."""
    from ansible_collections.vpsops.deploy.plugins.module_utils._stores import store_argument_spec

    entry = stack["databases"][name]
    settings = stack.get("backup") or {}
    params = dict((k, v.get("default")) for k, v in store_argument_spec().items())
    for key in ("type", "container", "login_password", "volume", "image", "access"):
        if entry.get(key) is not None:
            params[key] = entry[key]
    params.update(dest=settings.get("dest") or "/var/backups/vpsops/%s" % stack["name"], label=label,
                  keep=int(settings.get("keep") or 10) or None, keep_days=float(settings.get("keep_days") or 0) or None,
                  release_state_dir=state_dir, timeout=3600)
    return params


def take_stores(jobs):
    """make_store_backup for each (name, params), at the same time; returns ({name: result}, {name: error})."""
    import concurrent.futures

    from ansible_collections.vpsops.deploy.plugins.module_utils._backup import BackupError
    from ansible_collections.vpsops.deploy.plugins.module_utils._stores import make_store_backup

    results, errors = {}, {}

    def run(job):
        name, params = job
        try:
            results[name] = make_store_backup(params)
        except BackupError as exc:
            errors[name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported with the other failures, never lost in a thread
            errors[name] = "%s: %s" % (type(exc).__name__, exc)

    if jobs:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, len(jobs))) as pool:
            list(pool.map(run, jobs))
    return results, errors


def take_backups(store, docker, stack, phase, manifest, live):
    """The phase's verified backups, taken concurrently and pinned to the release: the PostgreSQL
    databases with backup_many, the other stores (Redis, volumes) with _stores, all at the same
    time. Before the first release went live, a store whose container does not run (or whose
    volume does not exist yet) has no data to lose and is skipped."""
    import concurrent.futures

    from ansible_collections.vpsops.deploy.plugins.module_utils._backup import BackupError, BackupManyError, backup_many

    names = list(phase.get("backup") or [])
    skipped = []
    if not names:
        return [], skipped
    if not live:
        running = set(c["name"] for c in docker.project_containers(store.stack) if c["state"] == "running")
        volumes = None
        for name in list(names):
            entry = stack["databases"].get(name) or {}
            container = entry.get("container")
            gone = container and container not in running
            if store_type(stack, name) == "volume":
                if volumes is None:
                    volumes = set(v.get("name") for v in docker.volumes())
                gone = entry.get("volume") not in volumes
            if gone:
                skipped.append(name)
                names.remove(name)
    if not names:
        return [], skipped

    pg_names = [n for n in names if store_type(stack, n) == "postgres"]
    other = [(n, store_params(stack, n, manifest["id"], store.state_dir)) for n in names if n not in pg_names]
    jobs = [dict(params=backup_params(stack, name, manifest["id"], store.state_dir)) for name in pg_names]
    failure = None
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        stores_running = pool.submit(take_stores, other)
        try:
            runs = backup_many(jobs)
        except BackupManyError as exc:
            runs, failure = exc.results, str(exc)
        except BackupError as exc:
            stores_running.result()
            raise PhaseBackupError("backup before phase %s failed, nothing was backed up: %s" % (phase["name"], exc))
        store_runs, store_errors = stores_running.result()
    by_name = dict(zip(pg_names, runs))
    by_name.update(store_runs)
    if store_errors:
        lines = "; ".join("%s: %s" % (n, store_errors[n]) for n in sorted(store_errors))
        failure = "%s%s" % ("%s; " % failure if failure else "", lines)
    backups = []
    for name in names:
        run = by_name.get(name)
        if run:
            backups.append(dict(name=name, type=store_type(stack, name), database=run.get("database"),
                                path=run.get("path"), size=run.get("size"), sha256=run.get("sha256"),
                                verified=run.get("verified", False), manifest=run.get("manifest")))
    if backups:
        with store.guard():
            current = store.load(manifest["id"])
            known = set(b.get("path") for b in current.get("backups") or [])
            current.setdefault("backups", []).extend(b for b in backups if b["path"] not in known)
            store.save(current)
            store.record("backups_pinned", release=manifest["id"], backups=[b["path"] for b in backups])
    if failure:
        raise PhaseBackupError("backup before phase %s failed: %s" % (phase["name"], failure), dict(backups=backups))
    return backups, skipped


def restore_backups(stack, backups):
    from ansible_collections.vpsops.deploy.plugins.module_utils._backup import restore, restore_argument_spec

    from ansible_collections.vpsops.deploy.plugins.module_utils._stores import restore_store, store_restore_argument_spec

    restored = []
    for backup in backups:
        db = stack["databases"][backup["name"]]
        if store_type(stack, backup["name"]) != "postgres":
            params = dict((k, v.get("default")) for k, v in store_restore_argument_spec().items())
            for key in ("type", "container", "login_password", "volume", "image", "access"):
                if db.get(key) is not None:
                    params[key] = db[key]
            params.update(src=backup["path"], sha256=backup.get("sha256"), timeout=3600)
            restore_store(params)
            restored.append(backup["name"])
            continue
        params = dict((k, v.get("default")) for k, v in restore_argument_spec().items())
        params.update(src=backup["path"], db=db.get("db") or db.get("login_db"), container=db.get("container"),
                      login_host=db.get("login_host"),
                      port=db.get("port") or db.get("login_port") or params.get("port"),
                      login_user=db.get("login_user") or params.get("login_user"),
                      login_password=db.get("login_password"))
        restore(params)
        restored.append(backup["name"])
    return restored
