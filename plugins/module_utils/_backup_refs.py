# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which backups the releases of a release store reference, read from their manifests alone.
Private to this collection.

The backup side (_backup.py, and through it pg_backup, pg_restore, store_backup and store_restore)
needs nothing else of the release store: reading it from here keeps _releases.py, and the
_compose, _docker_api and _runner it brings, out of those modules' AnsiballZ payload. _releases.py
imports these names from here, so its ReleaseError and CorruptRelease are these very classes.
Imports nothing of the collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

MANIFEST = "manifest.json"


class ReleaseError(Exception):
    """Bad input or a state that forbids the operation; nothing was changed."""


class CorruptRelease(ReleaseError):
    """A manifest that cannot be trusted."""


def referenced_backups(state_dir):
    """Absolute real paths of every backup that a release in the store references.

    Raises CorruptRelease when a manifest cannot be read: retention must then delete nothing."""
    paths = set()
    releases_dir = os.path.join(state_dir, "releases")
    if not os.path.isdir(releases_dir):
        return paths
    for name in os.listdir(releases_dir):
        if name.startswith("."):
            continue
        path = os.path.join(releases_dir, name, MANIFEST)
        try:
            with open(path, "rb") as handle:
                manifest = json.loads(handle.read().decode("utf-8"))
        except (IOError, OSError, ValueError) as exc:
            # What an unreadable manifest references is unknown: callers must then keep everything.
            raise CorruptRelease("cannot tell which backups release %s references: %s is unreadable (%s)"
                                 % (name, path, exc))
        for backup in (manifest.get("backups") or []) if isinstance(manifest, dict) else []:
            if isinstance(backup, dict) and backup.get("path"):
                paths.add(os.path.realpath(backup["path"]))
    return paths
