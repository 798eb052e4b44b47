# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Files as the release store, the backups and the project directory write them: through a
temporary file in the same directory, fsync, rename and fsync of the directory, so a half-written
file is never visible under its final name; private directories; checksums. The ground floor of
the shared code: it imports nothing of the collection. Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import json
import os
import tempfile

CHUNK = 1 << 20


def fsync_dir(path):
    """fsync a directory (or a file: it opens read-only either way)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path, data, mode=0o600):
    """Write bytes or text to `path` through a temporary file, fsync and rename."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


def write_json_atomic(path, data, mode=0o600):
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode)


def makedirs_owner_only(path):
    """Create a missing directory and its missing parents, each 0700 (os.makedirs would make the
    parents 0777 less the umask: 0755 under the usual 022). Existing directories keep their mode."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path.rstrip("/"))
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except OSError as exc:
            if exc.errno != errno.EEXIST or not os.path.isdir(directory):  # a concurrent run made it: fine
                raise


def sha256_file(path):
    """(sha256 hex digest, size in bytes) of a file, read in blocks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def read_text(path):
    """A text file as UTF-8, bytes that are not UTF-8 replaced rather than refused."""
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8", "replace")
