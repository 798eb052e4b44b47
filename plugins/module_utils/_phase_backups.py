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


def take_backups(store, docker, stack, phase, manifest, live):
    """The phase's verified backups, taken concurrently and pinned to the release. Before the first
    release went live, a database whose container does not run has no data to lose and is skipped."""
    from ansible_collections.vpsops.deploy.plugins.module_utils._backup import BackupError, BackupManyError, backup_many

    names = list(phase.get("backup") or [])
    skipped = []
    if not live:
        running = set(c["name"] for c in docker.project_containers(store.stack) if c["state"] == "running")
        for name in list(names):
            container = (stack["databases"].get(name) or {}).get("container")
            if container and container not in running:
                skipped.append(name)
                names.remove(name)
    if not names:
        return [], skipped

    jobs = [dict(params=backup_params(stack, name, manifest["id"], store.state_dir)) for name in names]
    failure = None
    try:
        runs = backup_many(jobs)
    except BackupManyError as exc:
        runs, failure = exc.results, str(exc)
    except BackupError as exc:
        raise PhaseBackupError("backup before phase %s failed, nothing was backed up: %s" % (phase["name"], exc))
    backups = []
    for name, run in zip(names, runs):
        if run:
            backups.append(dict(name=name, database=run.get("database"), path=run.get("path"), size=run.get("size"),
                                sha256=run.get("sha256"), verified=run.get("verified", False),
                                manifest=run.get("manifest")))
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

    restored = []
    for backup in backups:
        db = stack["databases"][backup["name"]]
        params = dict((k, v.get("default")) for k, v in restore_argument_spec().items())
        params.update(src=backup["path"], db=db.get("db") or db.get("login_db"), container=db.get("container"),
                      login_host=db.get("login_host"),
                      port=db.get("port") or db.get("login_port") or params.get("port"),
                      login_user=db.get("login_user") or params.get("login_user"),
                      login_password=db.get("login_password"))
        restore(params)
        restored.append(backup["name"])
    return restored
