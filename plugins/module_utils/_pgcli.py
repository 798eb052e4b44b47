# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The PostgreSQL client tools (psql, pg_dump, pg_restore) run against one database, either inside
its container (`docker exec`, the server's own tools, the local socket) or from the managed host
to a host/port with the local client. Private to this collection.

The password travels only in the environment: PGPASSWORD for a local tool, and for `docker exec`
the variable is passed by name (`-e PGPASSWORD`) so its value never appears in argv.

In a container the tools first use the local socket (one round trip, no TCP; the password is sent
when the server asks for one, as `local ... scram-sha-256` does). When the socket refuses the login
itself (`local ... peer` of Debian and Ubuntu clusters, `ident`, `reject`, or no `local` line) and a
password is given, the same command runs again over TCP to 127.0.0.1 inside the container, and every
later command of the same PgCli goes there directly. When neither way works the error says what to
change: which option, or which pg_hba.conf line.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import os
import subprocess
import tempfile
import threading

from ansible_collections.vpsops.deploy.plugins.module_utils._postgres import postgres_argument_spec, scrub


def pgcli_argument_spec():
    """The connection options of postgres_argument_spec plus `container` and `docker_cli`
    (documented by the doc fragments vpsops.deploy.postgres, vpsops.deploy.pgcli and
    vpsops.deploy.docker)."""
    spec = postgres_argument_spec()
    spec.update(
        container=dict(type="str"),
        docker_cli=dict(type="path", default="docker"),
    )
    return spec


# What the server answers when a `local` line of pg_hba.conf refuses the login whatever the password.
SOCKET_REFUSALS = ("Peer authentication failed", "Ident authentication failed",
                   'pg_hba.conf rejects connection for host "[local]"', 'no pg_hba.conf entry for host "[local]"')
NO_PASSWORD = "no password supplied"
WRONG_PASSWORD = "password authentication failed"
TCP_NO_ENTRY = 'no pg_hba.conf entry for host "127.0.0.1"'
TCP_REFUSED = ('connection to server at "127.0.0.1"', "Connection refused")
INSIDE_HOST = "127.0.0.1"


def first_line(text):
    """The first line that says something (psql prefixes: 'psql: error: connection ... failed: FATAL: ...')."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


@contextlib.contextmanager
def kill_after(proc, timeout):
    """Kill `proc` once `timeout` seconds have passed while the block runs (none or 0: never).
    Yields an Event that is set when the deadline killed it. The block ends with proc.wait(), so the
    timer is cancelled only once the process is gone."""
    expired = threading.Event()

    def expire():
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, expire) if timeout else None
    if timer:
        timer.start()
    try:
        yield expired
    finally:
        if timer:
            timer.cancel()


class PgCliError(Exception):
    """A client tool failed; the message names the tool and target and holds its stderr, never the
    password."""


class PgCli:
    """One database target for the client tools.

    `params` is a module's params (or any dict) with the keys of pgcli_argument_spec.
    """

    def __init__(self, params, db=None):
        self.params = dict(params)
        self.container = params.get("container")
        self.docker_cli = params.get("docker_cli") or "docker"
        self.user = params.get("login_user") or "postgres"
        self.db = db or params.get("db") or "postgres"
        self.password = params.get("login_password") or ""
        # In a container: set once the local socket refused the login and TCP inside took over.
        self.over_tcp = False
        self.socket_refusal = None
        self._route_lock = threading.Lock()

    def describe(self):
        if self.container:
            return "%s@container %s/%s%s" % (self.user, self.container, self.db,
                                             " (TCP %s inside it)" % INSIDE_HOST if self.over_tcp else "")
        return "%s@%s:%s/%s" % (self.user, self.params.get("login_host") or "127.0.0.1",
                                self.params.get("port") or 5432, self.db)

    def env(self):
        """The environment for the command: PGPASSWORD (for docker exec it is forwarded by name)."""
        env = dict(os.environ)
        env["PGCONNECT_TIMEOUT"] = str(self.params.get("connect_timeout") or 5)
        if self.password:
            env["PGPASSWORD"] = self.password
        else:
            env.pop("PGPASSWORD", None)
        if not self.container:
            env["PGSSLMODE"] = self.params.get("ssl_mode") or "prefer"
        return env

    def argv(self, tool, args, stdin=False):
        """argv for `tool` with the connection options, then `args`."""
        if self.container:
            argv = [self.docker_cli, "exec"]
            if stdin:
                argv.append("-i")
            argv += ["-e", "PGCONNECT_TIMEOUT"]
            if self.password:
                argv += ["-e", "PGPASSWORD"]
            argv += [self.container, tool, "-U", self.user]
            if self.over_tcp:
                # No -p: the server's own port, the one its socket is named after.
                argv += ["-h", INSIDE_HOST]
        else:
            argv = [tool, "-h", self.params.get("login_host") or "127.0.0.1",
                    "-p", str(self.params.get("port") or 5432), "-U", self.user]
        if tool == "psql":
            argv.append("-w")  # never wait for a password prompt
        return argv + list(args)

    def route_after(self, rc, err, tcp=None):
        """After a run that failed with `err`: True when the container's local socket refused the
        login and a password is given, so the run is to be tried again over TCP inside the
        container (every later run of this PgCli goes there too). `tcp` says whether the failed run
        went over TCP (default: as this PgCli does now): runs that started at the same time on the
        socket (a dump beside its size query) are each tried again, whichever failed first."""
        tried_tcp = self.over_tcp if tcp is None else tcp
        if rc == 0 or not self.container or tried_tcp or not self.password:
            return False
        if not any(mark in (err or "") for mark in SOCKET_REFUSALS):
            return False
        with self._route_lock:
            if not self.over_tcp:
                self.over_tcp = True
                self.socket_refusal = first_line(err)
        return True

    def advice(self, err):
        """What to change when a login failed with `err` (the server's words), or ''."""
        err = err or ""
        user = self.user
        tcp_line = "host all %s %s/32 scram-sha-256" % (user, INSIDE_HOST)
        socket_line = "local all %s scram-sha-256" % user
        if not self.container:
            if NO_PASSWORD in err:
                return "the server asks %s for a password: set login_password" % user
            if WRONG_PASSWORD in err:
                return "login_password is not the password of %s" % user
            return ""
        if self.over_tcp:
            refused = "the container's local socket refused %s (%s) and " % (user, self.socket_refusal)
            if TCP_NO_ENTRY in err:
                return (refused + "pg_hba.conf has no line for %s: add `%s` to pg_hba.conf and reload "
                        "(SELECT pg_reload_conf()), or let the socket take the password with `%s`"
                        % (INSIDE_HOST, tcp_line, socket_line))
            if WRONG_PASSWORD in err:
                return refused + "the password was refused over TCP: login_password is not the password of %s" % user
            if all(mark in err for mark in TCP_REFUSED):
                return (refused + "PostgreSQL does not listen on %s inside the container: add localhost to "
                        "listen_addresses, or let the socket take the password with `%s` in pg_hba.conf"
                        % (INSIDE_HOST, socket_line))
            return refused + "the login over TCP %s inside the container failed too" % INSIDE_HOST
        if any(mark in err for mark in SOCKET_REFUSALS):
            return ("the container's PostgreSQL does not let %s in over its local socket (a `local` line of "
                    "pg_hba.conf: peer, ident or reject): set login_password, and the tools connect to %s "
                    "inside the container with it (pg_hba.conf needs a line such as `%s`); or give the socket "
                    "`%s`" % (user, INSIDE_HOST, tcp_line, socket_line))
        if NO_PASSWORD in err:
            return ("the container's PostgreSQL asks for a password on its local socket (pg_hba.conf `local` "
                    "line scram-sha-256 or md5): set login_password (the password of %s)" % user)
        if WRONG_PASSWORD in err:
            return "login_password is not the password of %s" % user
        return ""

    def failure(self, tool, rc, err):
        """The PgCliError message of a failed run: tool, target, rc, the tool's words, what to change."""
        advice = self.advice(err)
        return "%s on %s failed (rc=%s): %s%s" % (tool, self.describe(), rc, err.strip() or "no output",
                                                  ". To fix: %s" % advice if advice else "")

    def run(self, tool, args, input_text=None, stdout=None, timeout=None):
        """Run `tool`; return (rc, stdout, stderr). `stdout` may be an open binary file to stream
        into (large dumps never pass through memory); stdout is then returned as ''. Run again over
        TCP inside the container when the local socket refused the login (route_after)."""
        tcp = self.over_tcp
        rc, out, err = self._run(tool, args, input_text, stdout, timeout)
        if self.route_after(rc, err, tcp) and (stdout is None or self._rewind(stdout)):
            rc, out, err = self._run(tool, args, input_text, stdout, timeout)
        return rc, out, err

    @staticmethod
    def _rewind(handle):
        """Back to the start of a file a failed run had (nothing to undo when it wrote nothing)."""
        try:
            handle.seek(0)
            handle.truncate()
        except (OSError, ValueError, AttributeError):
            return False
        return True

    def _run(self, tool, args, input_text=None, stdout=None, timeout=None):
        argv = self.argv(tool, args, stdin=input_text is not None)
        try:
            proc = subprocess.run(
                argv, input=input_text.encode("utf-8") if input_text is not None else None,
                stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                env=self.env(), timeout=timeout, check=False)
        except OSError as exc:
            return 127, "", self.scrub(exc)
        except subprocess.TimeoutExpired:
            return 124, "", "%s timed out after %ss" % (tool, timeout)
        out = proc.stdout.decode("utf-8", "replace") if stdout is None else ""
        return proc.returncode, out, self.scrub(proc.stderr.decode("utf-8", "replace"))

    def check(self, tool, args, input_text=None, stdout=None, timeout=None):
        """run(), raising PgCliError naming tool, target and stderr on a non-zero exit."""
        rc, out, err = self.run(tool, args, input_text=input_text, stdout=stdout, timeout=timeout)
        if rc != 0:
            raise PgCliError(self.failure(tool, rc, err.strip() or out.strip()))
        return out

    def run_io(self, tool, args, stdin=None, stdout=None, timeout=None):
        """run() with open binary files as stdin and/or stdout: an archive streams from a file into
        the tool (`docker exec -i` in a container) and a dump streams from the tool into a file,
        neither through memory. Returns (rc, stderr). Run again over TCP inside the container when
        the local socket refused the login (route_after) and the files can be rewound."""
        tcp = self.over_tcp
        rc, err = self._run_io(tool, args, stdin, stdout, timeout)
        if self.route_after(rc, err, tcp) and (stdin is None or self._seek_start(stdin)) \
                and (stdout is None or self._rewind(stdout)):
            rc, err = self._run_io(tool, args, stdin, stdout, timeout)
        return rc, err

    @staticmethod
    def _seek_start(handle):
        try:
            handle.seek(0)
        except (OSError, ValueError, AttributeError):
            return False
        return True

    def _run_io(self, tool, args, stdin=None, stdout=None, timeout=None):
        argv = self.argv(tool, args, stdin=stdin is not None)
        try:
            proc = subprocess.run(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  stdout=stdout if stdout is not None else subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=self.env(), timeout=timeout, check=False)
        except OSError as exc:
            return 127, self.scrub(exc)
        except subprocess.TimeoutExpired:
            return 124, "%s timed out after %ss" % (tool, timeout)
        return proc.returncode, self.scrub(proc.stderr.decode("utf-8", "replace"))

    def check_io(self, tool, args, stdin=None, stdout=None, timeout=None):
        """run_io(), raising PgCliError naming tool, target and stderr on a non-zero exit."""
        rc, err = self.run_io(tool, args, stdin=stdin, stdout=stdout, timeout=timeout)
        if rc != 0:
            raise PgCliError(self.failure(tool, rc, err))

    def check_stream(self, tool, args, consume, timeout=None, chunk=1 << 20):
        """Run `tool` and hand its stdout to `consume(bytes)` chunk by chunk as it arrives (a dump is
        written and hashed in one pass, never held in memory). Raises PgCliError naming tool, target
        and stderr on a non-zero exit or a timeout; when `consume` raises OSError (a full disk) the
        tool is stopped and the error names both; any other exception of `consume` stops the tool
        and is raised as it is. Run again over TCP inside the container when the
        local socket refused the login before the tool wrote anything (route_after)."""
        given = [0]

        def counted(block):
            given[0] += len(block)
            consume(block)

        tcp = self.over_tcp
        try:
            return self._check_stream(tool, args, counted, timeout, chunk)
        except PgCliError as exc:
            if given[0] or not self.route_after(getattr(exc, "rc", 0), getattr(exc, "stderr", ""), tcp):
                raise
        return self._check_stream(tool, args, consume, timeout, chunk)

    def _check_stream(self, tool, args, consume, timeout, chunk):
        argv = self.argv(tool, args)
        with tempfile.TemporaryFile() as errors:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
                                        env=self.env())
            except OSError as exc:
                raise PgCliError("%s on %s failed (rc=127): %s" % (tool, self.describe(), self.scrub(exc)))
            problem = None
            with kill_after(proc, timeout) as expired:
                try:
                    read = proc.stdout.read1 if hasattr(proc.stdout, "read1") else proc.stdout.read
                    while True:
                        block = read(chunk)
                        if not block:
                            break
                        consume(block)
                except OSError as exc:
                    problem = exc
                    proc.kill()
                except BaseException:
                    # consume refused the output (the free-space check): stop the tool, say why
                    proc.kill()
                    raise
                finally:
                    proc.stdout.close()
                    rc = proc.wait()
            errors.seek(0)
            err = self.scrub(errors.read().decode("utf-8", "replace")).strip()
        if problem is not None:
            raise PgCliError("%s on %s failed: writing its output failed: %s%s" % (
                tool, self.describe(), problem.strerror or problem, "; %s" % err if err else ""))
        if expired.is_set():
            raise PgCliError("%s on %s failed (rc=124): %s timed out after %ss"
                             % (tool, self.describe(), tool, timeout))
        if rc != 0:
            error = PgCliError(self.failure(tool, rc, err))
            error.rc, error.stderr = rc, err
            raise error

    def version(self, tool):
        """`tool --version` where the tool runs (the container's own or the host's), e.g. '15.18'."""
        if self.container:
            argv = [self.docker_cli, "exec", self.container, tool, "--version"]
        else:
            argv = [tool, "--version"]
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PgCliError("%s --version on %s failed: %s" % (tool, self.describe(), exc))
        out = proc.stdout.decode("utf-8", "replace").strip()
        if proc.returncode != 0 or not out:
            raise PgCliError("%s --version on %s failed (rc=%s): %s" % (
                tool, self.describe(), proc.returncode, proc.stderr.decode("utf-8", "replace").strip()))
        # "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> "15.18"
        parts = out.split()
        return parts[2] if len(parts) > 2 and parts[1] == "(PostgreSQL)" else out

    def query_json(self, sql, db=None, timeout=None):
        """Run one statement whose single row and column is JSON (build it with json_build_object /
        json_agg on the server) and return it decoded. The SQL goes on stdin, not argv."""
        out = self.check("psql", ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db or self.db],
                         input_text=sql, timeout=timeout)
        text = out.strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise PgCliError("psql on %s returned no JSON: %s" % (self.describe(), text[:200]))

    def scrub(self, text):
        return scrub(text, self.params)
