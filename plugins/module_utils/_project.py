# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A stack's project directory on the host: its compose files and its `.env`, written in one go
(owner only, atomically, only what differs). Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import stat

from ansible_collections.vpsops.deploy.plugins.module_utils._files import makedirs_owner_only, write_atomic
from ansible_collections.vpsops.deploy.plugins.module_utils._releases import ENV_COPY, EXTRA_DIR

FILE_MODE = 0o600
ENV_FILE = ".env"
ENV_HEADER = "# Written by vpsops.deploy; secrets: keep this file owner-only.\n"
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ProjectError(Exception):
    """Input the project directory cannot be written from; the message names the option."""


def check_name(name, option="files"):
    """A file name relative to the project directory, without a way out of it."""
    if not isinstance(name, str) or not name.strip():
        raise ProjectError("%s: every entry must be a non-empty file name, got %r" % (option, name))
    parts = name.replace("\\", "/").split("/")
    if name.startswith("/") or ".." in parts or name in (ENV_FILE,):
        raise ProjectError("%s: %r must be a path relative to the project directory, without '..', and not %s"
                           % (option, name, ENV_FILE))
    return os.path.normpath(name)


def env_value(value):
    """One value as compose's .env format holds it exactly: single-quoted (literal, newlines
    included) unless it holds a single quote; then double-quoted with backslash, double quote and
    dollar escaped (compose would interpolate a bare `$` there)."""
    if "'" not in value:
        return "'%s'" % value
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")


def env_text(env):
    """The `.env` compose reads: one KEY=value entry per variable, each value exactly as given (no
    interpolation; quotes, `$` and newlines kept: env_value)."""
    lines = [ENV_HEADER]
    for key, value in (env or {}).items():
        value = str(value)
        if not ENV_NAME_RE.match(str(key)):
            raise ProjectError("env: %r is not a valid variable name (letters, digits and '_', not starting "
                               "with a digit)" % (key,))
        if "\r" in value or "\0" in value:
            raise ProjectError("env.%s: the value holds a carriage return or a NUL character, which compose's .env "
                               "format cannot hold" % key)
        lines.append("%s=%s\n" % (key, env_value(value)))
    return "".join(lines)


def read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def sync(path, files, env=None, check_mode=False, want_diff=False):
    """Make `path` hold `files` ({name: text}) and, when `env` is not None, the `.env` of `env`.

    Every file is written owner-only (0600) through a temporary file and a rename, and only when
    its content differs; a file whose content is right but whose mode is wider is narrowed.
    A replaced file keeps its owner and group. Missing directories are made 0700.
    Returns (changed names in order, diffs); no diff is given for `.env` (it holds secrets)."""
    wanted = []
    for name in sorted(files):
        wanted.append((check_name(name), files[name].encode("utf-8"), True))
    if env is not None:
        wanted.append((ENV_FILE, env_text(env).encode("utf-8"), False))
    changed, diffs = [], []
    for name, data, show in wanted:
        target = os.path.join(path, name)
        before = read_bytes(target)
        if before == data:
            mode = stat.S_IMODE(os.stat(target).st_mode)
            if mode & ~FILE_MODE:
                changed.append(name)
                if not check_mode:
                    os.chmod(target, FILE_MODE)
            continue
        changed.append(name)
        if want_diff and show:
            diffs.append(dict(before_header=target, after_header=target,
                              before=(before or b"").decode("utf-8", "replace"), after=data.decode("utf-8")))
        if check_mode:
            continue
        makedirs_owner_only(os.path.dirname(target))
        owner = os.stat(target) if before is not None else None
        write_atomic(target, data, FILE_MODE)
        if owner is not None and os.geteuid() == 0:
            os.chown(target, owner.st_uid, owner.st_gid)
    return changed, diffs


def write_extra(project_dir, extra, check_mode=False):
    """Put the files the compose files reference ([(relative path, source path, mode)]) in the
    project directory, each with its mode (a config a container user reads keeps 0644; secrets and
    env files are 0600), written only when its content or mode differs. Directories below the
    project directory are made 0755 (a bind-mounted directory must be readable in the container).
    Returns the paths written."""
    written = []
    for rel, source, mode in extra:
        rel = check_name(rel, "extra files")
        mode = int(mode or FILE_MODE)
        target = os.path.join(project_dir, rel)
        with open(source, "rb") as handle:
            data = handle.read()
        if read_bytes(target) == data and stat.S_IMODE(os.stat(target).st_mode) == mode:
            continue
        written.append(rel)
        if check_mode:
            continue
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        write_atomic(target, data, mode)
        os.chmod(target, mode)
    return written


def publish(store, manifest, project_dir):
    """Make the project directory hold the release's compose files and .env (owner only, only what
    differs), so that what an operator finds there is what runs. Returns the names written."""
    base = store.release_dir(manifest["id"])
    files = {}
    for entry in manifest.get("files") or []:
        with open(os.path.join(base, entry["name"]), "rb") as handle:
            files[entry["name"]] = handle.read().decode("utf-8")
    written, _diffs = sync(project_dir, files)
    written += write_extra(project_dir, [(e["path"], os.path.join(base, EXTRA_DIR, e["path"]), e.get("mode"))
                                         for e in manifest.get("extra_files") or []])
    env_copy = os.path.join(base, ENV_COPY)
    if manifest.get("env_file") and os.path.isfile(env_copy):
        with open(env_copy, "rb") as handle:
            data = handle.read()
        target = os.path.join(project_dir, ENV_FILE)
        current = None
        if os.path.isfile(target):
            with open(target, "rb") as handle:
                current = handle.read()
        if current != data:
            write_atomic(target, data, 0o600)
            written.append(ENV_FILE)
    return written
