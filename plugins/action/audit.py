# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vpsops.deploy.audit: one JSON line per event appended to an audit log on the controller.
The documentation is in plugins/modules/audit.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import fcntl
import getpass
import json
import multiprocessing
import os
import re
import socket

from ansible.plugins.action import ActionBase
from ansible_collections.vpsops.deploy.plugins.module_utils._files import makedirs_owner_only

DEFAULT_PATH = "~/.vpsops/audit.jsonl"
PATH_ENV = "VPSOPS_AUDIT_LOG"
MASK = "********"

ARGUMENT_SPEC = dict(
    path=dict(type="path"),
    event=dict(type="str"),
    stack=dict(type="str"),
    release=dict(type="str"),
    phase=dict(type="str"),
    status=dict(type="str"),
    data=dict(type="dict", default={}),
    fail_on_error=dict(type="bool", default=False),
    entries=dict(type="list", elements="dict", options=dict(
        host=dict(type="str", required=True),
        event=dict(type="str", required=True),
        stack=dict(type="str"),
        release=dict(type="str"),
        phase=dict(type="str"),
        status=dict(type="str"),
        data=dict(type="dict", default={}),
    )),
)
MUTUALLY_EXCLUSIVE = [("event", "entries")]
REQUIRED_ONE_OF = [("event", "entries")]

# Keys whose values are secrets wherever they appear in `data` (matched anywhere in the key, any case).
SECRET_KEY_RE = re.compile(r"passw|passphrase|(^|[^a-z])pass($|[^a-z])|pwd|secret|token|api[_-]?key|private[_-]?key|credential"
                           r"|authorization|cookie|session[_-]?id|hook|notify_url|dsn", re.IGNORECASE)
# user:password@ (or a bare token@) in a URL, and its query string, wherever a URL appears in a string.
URL_USERINFO_RE = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@?#]+@")
URL_QUERY_RE = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#]*)\?[^\s#]*")


def secret_key(key):
    return bool(SECRET_KEY_RE.search(str(key)))


def mask_text(text):
    """A string with the credentials and query strings of the URLs in it replaced."""
    text = URL_USERINFO_RE.sub(r"\1%s@" % MASK, text)
    return URL_QUERY_RE.sub(r"\1?%s" % MASK, text)


def mask(value, key=None):
    """`value` with every secret replaced: values under secret-looking keys, the userinfo and query
    of URLs in strings. Containers are copied, never changed in place."""
    if key is not None and secret_key(key) and value not in (None, "", [], {}):
        return MASK
    if isinstance(value, dict):
        return dict((str(k), mask(v, k)) for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return [mask(v) for v in value]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return mask_text(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return mask_text(str(value))


def utc_now(now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def playbook_pid():
    """The pid of the ansible-playbook (or ansible) process: tasks run in worker processes forked
    from it, so it is the parent of a worker and the process itself otherwise."""
    if multiprocessing.current_process().name != "MainProcess":
        return os.getppid()
    return os.getpid()


def build_entry(event, stack=None, release=None, phase=None, status=None, data=None, host=None, controller=None,
                user=None, pid=None, job_id=None, check_mode=False, now=None):
    """One audit entry, secrets masked."""
    return {
        "time": utc_now(now),
        "event": event,
        "stack": stack,
        "release": release,
        "phase": phase,
        "host": host,
        "controller": controller,
        "user": user,
        "pid": pid,
        "awx_job_id": None if job_id in (None, "") else str(job_id),
        "status": mask_text(status) if isinstance(status, str) else status,
        "check_mode": bool(check_mode),
        "data": mask(data or {}),
    }


def entry_line(entry):
    """The entry as one line of bytes: JSON with no newline inside, then a newline."""
    return (json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str) + "\n").encode("utf-8")


def log_path(path=None, environ=None):
    """The option, else $VPSOPS_AUDIT_LOG, else ~/.vpsops/audit.jsonl; ~ expanded."""
    environ = os.environ if environ is None else environ
    return os.path.expanduser(path or environ.get(PATH_ENV) or DEFAULT_PATH)


def ensure_dir(directory):
    """Create the log's directory and its missing parents, each 0700; existing ones keep their mode."""
    makedirs_owner_only(directory)


def append_line(path, line):
    """Append one line with a single write() on an O_APPEND descriptor, under an exclusive flock.

    O_APPEND puts every write at the end of the file, and a local filesystem does not interleave
    one write() with another; the flock also serializes writers whose line is large or whose
    filesystem is less strict. A new file is created 0600; an existing file keeps its mode."""
    ensure_dir(os.path.dirname(os.path.abspath(path)))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(errno.EIO, "short write: %d of %d bytes" % (written, len(line)))
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return len(line)


def job_id_of(task_vars, environ=None):
    environ = os.environ if environ is None else environ
    for name in ("awx_job_id", "tower_job_id"):
        value = task_vars.get(name)
        if value not in (None, ""):
            return value
    return environ.get("JOB_ID") or None


def user_of(task_vars):
    for name in ("awx_user_name", "tower_user_name"):
        value = task_vars.get(name)
        if value:
            return str(value)
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return str(os.getuid())


class ActionModule(ActionBase):
    """Append one audit line on the controller; never touches the managed host."""

    TRANSFERS_FILES = False
    _requires_connection = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC, mutually_exclusive=MUTUALLY_EXCLUSIVE,
                                           required_one_of=REQUIRED_ONE_OF)[1]
        common = dict(controller=socket.gethostname(), user=user_of(task_vars), pid=playbook_pid(),
                      job_id=job_id_of(task_vars), check_mode=self._play_context.check_mode)
        if args["entries"] is None:
            entries = [build_entry(args["event"], stack=args["stack"], release=args["release"], phase=args["phase"],
                                   status=args["status"], data=args["data"], host=task_vars.get("inventory_hostname"),
                                   **common)]
        else:
            # Several hosts' lines in one task (run_once): each names its own host; what an entry
            # leaves out comes from the task's options.
            entries = [build_entry(item["event"], stack=item["stack"] or args["stack"],
                                   release=item["release"] or args["release"], phase=item["phase"] or args["phase"],
                                   status=item["status"] or args["status"], data=item["data"], host=item["host"],
                                   **common) for item in args["entries"]]
        path = log_path(args["path"])
        result.update(changed=False, path=path)
        if args["entries"] is None:
            result["entry"] = entries[0]
        else:
            result["entries"] = entries
        try:
            if entries:
                # One write for every line: they land together, never interleaved with another writer's.
                append_line(path, b"".join(entry_line(entry) for entry in entries))
            result["written"] = True
        except (IOError, OSError) as exc:
            result["written"] = False
            message = "audit: cannot append to %s: %s" % (path, exc.strerror or exc)
            if args["fail_on_error"]:
                result.update(failed=True, msg=message)
            else:
                result.setdefault("warnings", []).append(message + " (the event is not recorded; set "
                                                                   "fail_on_error to stop instead)")
        return result
