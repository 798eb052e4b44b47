# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Health probes and the concurrent wait engine behind vpsops.deploy.health_wait.

Private to this collection. Standard library only, so a bare VPS needs no extra Python package
for health checks. A probe type is one class registered with ``@register``: adding a check type
(for example a messaging gate) is adding one class here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import functools
import json
import re
import socket
import threading
import time

from urllib.error import URLError
from urllib.parse import urlsplit
from urllib.request import Request

from ansible_collections.vpsops.deploy.plugins.module_utils._http import http_opener
from ansible_collections.vpsops.deploy.plugins.module_utils._secrets import redact_argv, redact_url
from ansible_collections.vpsops.deploy.plugins.module_utils._runner import default_runner

PROBES = {}
TIMELINE_MAX = 20
LOG_SINCE_MARGIN = 0.5


class CheckSpecError(ValueError):
    """A check is malformed: the message names the check and the key."""


class FatalProbeError(Exception):
    """The thing probed can no longer become ready (container exited, crash loop ...): fail fast."""


def register(cls):
    PROBES[cls.type_name] = cls
    return cls


def probe_types():
    return sorted(PROBES)


def json_contains(actual, expected):
    """True when every key of `expected` is in `actual` with an equal (recursively contained) value."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and json_contains(actual[key], value) for key, value in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(
            json_contains(a, e) for a, e in zip(actual, expected))
    return actual == expected


# Numeric comparisons of a JSON body (an http check's json_compare): operator -> (sign, test).
COMPARE_OPS = {
    "gt": (">", lambda a, b: a > b),
    "ge": (">=", lambda a, b: a >= b),
    "lt": ("<", lambda a, b: a < b),
    "le": ("<=", lambda a, b: a <= b),
    "eq": ("==", lambda a, b: a == b),
    "ne": ("!=", lambda a, b: a != b),
}
COMPARE_HINT = ("each item is {path: a dot-separated path such as data or checks.db.latency_ms, "
                "and one of value or length: {gt|ge|lt|le|eq|ne: number}}")


def _number(value):
    """A JSON or YAML number as a float; None for anything else (booleans are not numbers here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def json_path_segments(path):
    """'data.0.name' -> ['data', '0', 'name']; '' or '.' -> [] (the whole document); a list is taken as
    its segments (for keys holding a dot)."""
    if isinstance(path, list):
        return [str(p) for p in path]
    path = str(path).strip()
    return [] if path in ("", ".") else path.split(".")


def json_at(document, segments):
    """(True, value) at the path, or (False, the part of the path that is missing)."""
    node = document
    for depth, segment in enumerate(segments):
        if isinstance(node, dict) and segment in node:
            node = node[segment]
        elif isinstance(node, list) and re.match(r"^-?[0-9]+$", segment) and -len(node) <= int(segment) < len(node):
            node = node[int(segment)]
        else:
            return False, ".".join(segments[:depth + 1])
    return True, node


def compile_json_compare(probe):
    """The check's json_compare as [(path text, segments, "value"|"length", [(op, number)])];
    CheckSpecError names the item and what was expected."""
    items = probe.spec.get("json_compare")
    if items is None or items == []:
        return []
    if not isinstance(items, list):
        raise CheckSpecError("%s: 'json_compare' must be a list of comparisons (%s), got %r"
                             % (probe.where(), COMPARE_HINT, items))
    compiled = []
    for index, item in enumerate(items):
        where = "%s: 'json_compare[%d]'" % (probe.where(), index)
        if not isinstance(item, dict):
            raise CheckSpecError("%s must be a mapping (%s), got %r" % (where, COMPARE_HINT, item))
        unknown = sorted(set(item) - {"path", "value", "length"})
        if unknown:
            raise CheckSpecError("%s has unknown key(s) %s (%s)" % (where, ", ".join(map(str, unknown)), COMPARE_HINT))
        path = item.get("path")
        if path is None or not isinstance(path, (str, list)):
            raise CheckSpecError("%s needs 'path' (%s)" % (where, COMPARE_HINT))
        kinds = [k for k in ("value", "length") if item.get(k) is not None]
        if len(kinds) != 1:
            raise CheckSpecError("%s needs exactly one of 'value' and 'length' (%s)" % (where, COMPARE_HINT))
        kind = kinds[0]
        ops = item[kind]
        if not isinstance(ops, dict) or not ops:
            raise CheckSpecError("%s: '%s' must be a mapping of comparisons such as {gt: 10}, got %r"
                                 % (where, kind, ops))
        tests = []
        for op in sorted(ops):
            if op not in COMPARE_OPS:
                raise CheckSpecError("%s: '%s' has the comparison %r; use gt, ge, lt, le, eq or ne"
                                     % (where, kind, op))
            number = _number(ops[op])
            if number is None:
                raise CheckSpecError("%s: '%s.%s' must be a number, got %r" % (where, kind, op, ops[op]))
            tests.append((op, number))
        segments = json_path_segments(path)
        compiled.append((".".join(segments) or ".", segments, kind, tests))
    return compiled


def json_compare_failures(document, compiled, seen=None):
    """Sentences for the comparisons the document fails; [] when it passes them all. `seen`, a
    list, gets what each comparison read ("length of data is 12")."""
    failures = []
    for text, segments, kind, tests in compiled:
        found, value = json_at(document, segments)
        if not found:
            failures.append("JSON has no %s" % value)
            continue
        if kind == "length":
            if not isinstance(value, (list, dict, str)):
                failures.append("%s is %s, which has no length" % (text, json.dumps(value)[:80]))
                continue
            shown, number = "length of %s is %d" % (text, len(value)), float(len(value))
        else:
            number = _number(value) if not isinstance(value, str) else None
            if number is None:
                failures.append("%s is %s, not a number" % (text, json.dumps(value)[:80]))
                continue
            shown = "%s is %s" % (text, json.dumps(value))
        if seen is not None:
            seen.append(shown)
        broken = ["%s %s" % (COMPARE_OPS[op][0], fmt_number(limit))
                  for op, limit in tests if not COMPARE_OPS[op][1](number, limit)]
        if broken:
            failures.append("%s, expected %s" % (shown, " and ".join(broken)))
    return failures


def fmt_number(value):
    return str(int(value)) if float(value).is_integer() else repr(value)


class Probe:
    """One check. Subclasses set type_name, validate their keys in __init__ and implement probe()."""

    type_name = None

    def __init__(self, spec, index, runner=None):
        self.spec = spec
        self.index = index
        self.runner = runner or default_runner
        self.name = spec.get("name") or self.default_name()
        for key in ("request_timeout", "interval"):
            if spec.get(key) is not None and float(spec[key]) <= 0:
                raise CheckSpecError("%s: '%s' must be a positive number of seconds, got %s"
                                     % (self.where(), key, spec[key]))
        if spec.get("consecutive") is not None and int(spec["consecutive"]) < 1:
            raise CheckSpecError("%s: 'consecutive' must be 1 or more, got %s" % (self.where(), spec["consecutive"]))
        if spec.get("running_for") is not None and float(spec["running_for"]) < 0:
            raise CheckSpecError("%s: 'running_for' must be 0 or more seconds, got %s"
                                 % (self.where(), spec["running_for"]))
        if spec.get("since") not in (None, ""):
            try:
                bad = float(spec["since"]) < 0
            except (TypeError, ValueError):
                bad = True
            if bad:
                raise CheckSpecError("%s: 'since' must be a time in epoch seconds, got %r" % (self.where(), spec["since"]))

    def default_name(self):
        return "%s#%d" % (self.type_name, self.index + 1)

    def where(self):
        """Who this check is, in error messages: its name or its position."""
        return "check %r" % self.spec["name"] if self.spec.get("name") else "checks[%d]" % self.index

    def require(self, key, kind=None):
        value = self.spec.get(key)
        if value is None or value == "":
            raise CheckSpecError("%s (type %s) needs '%s'" % (self.where(), self.type_name, key))
        if kind is not None and not isinstance(value, kind):
            raise CheckSpecError("%s: '%s' must be %s, got %r" % (self.where(), key, kind.__name__, value))
        return value

    def describe(self):
        return self.type_name

    def probe(self, timeout):
        """Return a short detail string when ready; raise an Exception saying why not."""
        raise NotImplementedError


@register
class HttpProbe(Probe):
    type_name = "http"

    def __init__(self, spec, index, runner=None):
        Probe.__init__(self, spec, index, runner)
        self.url = self.require("url")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CheckSpecError("%s: 'url' must be an http:// or https:// URL with a host, got %r"
                                 % (self.where(), redact_url(self.url)))
        status = spec.get("status") or [200]
        self.status = [int(s) for s in (status if isinstance(status, list) else [status])]
        self.method = (spec.get("method") or "GET").upper()
        self.body_re = compile_regex(self, "body")
        self.json = spec.get("json")
        self.json_compare = compile_json_compare(self)
        self.headers = spec.get("headers") or {}
        self.validate_certs = spec.get("validate_certs", True)
        self.request_timeout = float(spec.get("request_timeout") or 5)
        self.opener_key = (self.url.lower().startswith("https:"), self.validate_certs)
        self.opener = None  # shared with the other probes of the same kind by build_probes

    def default_name(self):
        return redact_url(self.spec.get("url") or "http#%d" % (self.index + 1))

    def describe(self):
        return "http %s %s" % (self.method, redact_url(self.url))

    def probe(self, timeout):
        request = Request(self.url, method=self.method, headers=dict(self.headers))
        try:
            response = (self.opener or http_opener(*self.opener_key)).open(
                request, timeout=min(self.request_timeout, timeout))
            try:
                status = response.status
                body = response.read(1024 * 1024).decode("utf-8", "replace")
            finally:
                response.close()
        except URLError as exc:
            raise Exception("request failed: %s" % getattr(exc, "reason", exc))
        except (socket.timeout, OSError) as exc:
            raise Exception("request failed: %s" % (exc or "timed out"))
        if status not in self.status:
            raise Exception("HTTP %d (expected %s): %s" % (status, "/".join(map(str, self.status)), body[:120].strip()))
        if self.body_re is not None and not self.body_re.search(body):
            raise Exception("HTTP %d but body does not match %r" % (status, self.body_re.pattern))
        if self.json is not None:
            try:
                parsed = json.loads(body)
            except ValueError:
                raise Exception("HTTP %d but body is not JSON: %s" % (status, body[:120].strip()))
            if not json_contains(parsed, self.json):
                raise Exception("HTTP %d but JSON %s does not contain %s"
                                % (status, json.dumps(parsed)[:200], json.dumps(self.json)))
        if self.json_compare:
            try:
                parsed = json.loads(body)
            except ValueError:
                raise Exception("HTTP %d but body is not JSON: %s" % (status, body[:120].strip()))
            seen = []
            failures = json_compare_failures(parsed, self.json_compare, seen)
            if failures:
                raise Exception("HTTP %d but %s" % (status, "; ".join(failures)))
            return "HTTP %d, %s" % (status, ", ".join(seen))
        return "HTTP %d" % status


@register
class TcpProbe(Probe):
    type_name = "tcp"

    def __init__(self, spec, index, runner=None):
        Probe.__init__(self, spec, index, runner)
        self.host = spec.get("host") or "127.0.0.1"
        self.port = port_of(self)
        self.request_timeout = float(spec.get("request_timeout") or 3)

    def default_name(self):
        return "tcp %s:%s" % (self.spec.get("host") or "127.0.0.1", self.spec.get("port"))

    def describe(self):
        return "tcp %s:%d" % (self.host, self.port)

    def probe(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout=min(self.request_timeout, timeout))
        sock.close()
        return "connected"


class DockerProbe(Probe):
    """A check about one container, read through the Docker wrapper (_compose.Docker): the Engine
    API over the local socket where it can, else the Docker CLI (argv), bounded by the deadline."""

    def __init__(self, spec, index, runner=None):
        Probe.__init__(self, spec, index, runner)
        self.container = self.require("container")
        self.docker = spec.get("docker_cli") or "docker"
        self.client = None

    def engine(self):
        """The Docker wrapper, made at the first read: validating checks reads nothing."""
        if self.client is None:
            from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Docker

            self.client = Docker(self.docker, runner=self.runner)
        return self.client


@register
class ContainerProbe(DockerProbe):
    """A container is running, healthy where it has a healthcheck, and up for `running_for` seconds."""

    type_name = "container"

    def __init__(self, spec, index, runner=None):
        DockerProbe.__init__(self, spec, index, runner)
        self.running_for = float(spec.get("running_for") or 0)
        self.since = None if spec.get("since") in (None, "") else float(spec["since"])
        self.own_health = spec.get("own_health", True) is not False
        self.restarts_seen = None
        # The StartedAt of the start whose own healthcheck passed here (check_container_state), and
        # one a gate just before this one proved (vouch_for): that start is not checked again.
        self.own_passed = None
        self.vouched = None

    def default_name(self):
        return "container %s" % self.spec.get("container")

    def describe(self):
        return "container %s" % self.container

    def probe(self, timeout):
        engine = self.engine()
        state, restarts, created = engine.container_state(self.container, timeout=max(timeout, 1))
        own = None
        if self.vouched and self.vouched == state.get("StartedAt"):
            own = vouched_health
        elif self.own_health:
            own = functools.partial(engine.own_healthcheck, self.container, timeout=max(timeout, 1))
        return check_container_state(self.container, state, restarts, self.running_for, self,
                                     created=parse_docker_time(created), since=self.since, own_health=own)


def vouched_health():
    return True, "", "healthy by its own healthcheck, passed for this start just before"


def vouch_for(proven):
    """adjust_probes for run_gate: the container probes of `proven` ({container: StartedAt}, from
    proven_starts of an earlier gate) accept those starts as healthy while Docker still says
    `starting`, without running the healthcheck again. Any other state is judged as always."""
    def adjust(probes):
        for probe in probes:
            if isinstance(probe, ContainerProbe) and probe.container in proven:
                probe.vouched = proven[probe.container]
    return adjust


def proven_starts(gate):
    """{container: StartedAt} of the container probes of a GateResult whose own healthcheck passed."""
    if gate is None:
        return {}
    return dict((p.container, p.own_passed) for p in gate.probes if isinstance(p, ContainerProbe) and p.own_passed)


def compile_regex(probe, key, required=False):
    """The check's regex under `key`, compiled; None when absent and not required."""
    pattern = probe.require(key) if required else probe.spec.get(key)
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise CheckSpecError("%s: '%s' is not a valid regular expression (%s): %r"
                             % (probe.where(), key, exc, pattern))


def port_of(probe, default=None):
    port = probe.spec.get("port")
    if port is None or port == "":
        if default is None:
            raise CheckSpecError("%s (type %s) needs 'port'" % (probe.where(), probe.type_name))
        return default
    try:
        port = int(port)
    except (TypeError, ValueError):
        port = -1
    if not 0 < port < 65536:
        raise CheckSpecError("%s: 'port' must be a TCP port 1-65535, got %r" % (probe.where(), probe.spec.get("port")))
    return port


@register
class PostgresProbe(Probe):
    """Connects and runs SELECT 1 (psycopg2; the password is a libpq keyword, never argv)."""

    type_name = "postgres"

    def __init__(self, spec, index, runner=None):
        Probe.__init__(self, spec, index, runner)
        from ansible_collections.vpsops.deploy.plugins.module_utils import _postgres

        self.pg = _postgres
        if not _postgres.has_driver():
            raise CheckSpecError("%s: postgres checks need psycopg2 on the managed host "
                                 "(pip install psycopg2-binary)" % self.where())
        self.params = dict(spec, port=port_of(self, 5432))
        self.request_timeout = float(spec.get("request_timeout") or 5)

    def default_name(self):
        return "postgres %s:%s/%s" % (self.spec.get("login_host") or "127.0.0.1", self.spec.get("port") or 5432,
                                      self.spec.get("db") or "postgres")

    def describe(self):
        return "postgres %s" % self.pg.describe(self.params)

    def probe(self, timeout):
        row = self.pg.query_one(self.params, "SELECT 1", timeout=min(self.request_timeout, timeout))
        if not row or row[0] != 1:
            raise Exception("SELECT 1 returned %r" % (row,))
        return "SELECT 1 ok"


@register
class RedisProbe(Probe):
    """PING answered by PONG, after AUTH when a password is given (RESP over a plain socket)."""

    type_name = "redis"

    def __init__(self, spec, index, runner=None):
        Probe.__init__(self, spec, index, runner)
        self.host = spec.get("host") or "127.0.0.1"
        self.port = port_of(self, 6379)
        self.request_timeout = float(spec.get("request_timeout") or 3)

    def default_name(self):
        return "redis %s:%s" % (self.spec.get("host") or "127.0.0.1", self.spec.get("port") or 6379)

    def describe(self):
        return "redis %s:%d" % (self.host, self.port)

    @staticmethod
    def command(*words):
        parts = ["*%d\r\n" % len(words)]
        for word in words:
            data = word.encode("utf-8")
            parts.append("$%d\r\n" % len(data))
            parts.append(data.decode("utf-8") + "\r\n")
        return "".join(parts).encode("utf-8")

    @staticmethod
    def reply(sock):
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = sock.recv(512)
            if not chunk:
                raise Exception("connection closed by the server")
            data += chunk
        return data.decode("utf-8", "replace").strip()

    def probe(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout=min(self.request_timeout, timeout))
        try:
            password = self.spec.get("password")
            if password:
                words = ["AUTH", self.spec["username"], password] if self.spec.get("username") else ["AUTH", password]
                sock.sendall(self.command(*words))
                answer = self.reply(sock)
                if answer != "+OK":
                    # the server's words, never the password
                    raise Exception("AUTH refused: %s" % answer.replace(password, "********")[:120])
            sock.sendall(self.command("PING"))
            answer = self.reply(sock)
        finally:
            sock.close()
        if answer != "+PONG":
            raise Exception("PING answered %r" % answer[:120])
        return "PONG"


@register
class NatsProbe(Probe):
    """The monitoring endpoint's /healthz (JetStream enabled) and, optionally, named streams."""

    type_name = "nats"

    def __init__(self, spec, index, runner=None):
        Probe.__init__(self, spec, index, runner)
        self.base = (spec.get("url") or "http://127.0.0.1:8222").rstrip("/")
        parts = urlsplit(self.base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CheckSpecError("%s: 'url' must be the http:// monitoring base URL of NATS, got %r"
                                 % (self.where(), redact_url(self.base)))
        streams = spec.get("streams") or []
        if isinstance(streams, str) or not all(isinstance(x, str) for x in streams):
            raise CheckSpecError("%s: 'streams' must be a list of stream names, got %r" % (self.where(), streams))
        self.streams = list(streams)
        self.jetstream = spec.get("jetstream", True) is not False
        self.request_timeout = float(spec.get("request_timeout") or 5)
        self.opener_key = (self.base.lower().startswith("https:"), spec.get("validate_certs", True) is not False)
        self.opener = None  # shared with the other probes of the same kind by build_probes

    def default_name(self):
        return "nats %s" % redact_url(self.spec.get("url") or "http://127.0.0.1:8222")

    def describe(self):
        return "nats %s" % redact_url(self.base)

    def get(self, path, timeout):
        request = Request(self.base + path)
        try:
            response = (self.opener or http_opener(*self.opener_key)).open(
                request, timeout=min(self.request_timeout, timeout))
            try:
                return response.status, response.read(4 * 1024 * 1024).decode("utf-8", "replace")
            finally:
                response.close()
        except (URLError, OSError) as exc:
            raise Exception("monitoring endpoint %s unreachable: %s"
                            % (redact_url(self.base), getattr(exc, "reason", exc) or "timed out"))

    def probe(self, timeout):
        path = "/healthz?js-enabled-only=true" if self.jetstream else "/healthz"
        status, body = self.get(path, timeout)
        if status != 200:
            raise Exception("healthz answered HTTP %d: %s" % (status, body[:160].strip()))
        if not self.streams:
            return "healthz ok"
        status, body = self.get("/jsz?streams=true", timeout)
        if status != 200:
            raise Exception("jsz answered HTTP %d: %s" % (status, body[:160].strip()))
        found = set()
        for account in json.loads(body).get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                found.add(stream.get("name"))
        missing = [name for name in self.streams if name not in found]
        if missing:
            raise Exception("JetStream stream(s) missing: %s (present: %s)"
                            % (", ".join(missing), ", ".join(sorted(found)) or "none"))
        return "healthz ok, streams present"


def non_negative_int(probe, key):
    """The check's `key` as an int >= 0, or None when absent."""
    value = probe.spec.get(key)
    if value is None:
        return None
    try:
        value = int(value)
    except (TypeError, ValueError):
        value = -1
    if value < 0:
        raise CheckSpecError("%s: '%s' must be a whole number 0 or more, got %r" % (probe.where(), key, probe.spec[key]))
    return value


@register
class NatsConsumerProbe(NatsProbe):
    """A JetStream consumer keeps up: pending and ack-pending at most their maximum; redeliveries
    growing by more than `max_redelivered_growth` during the wait fail fast."""

    type_name = "nats_consumer"

    def __init__(self, spec, index, runner=None):
        NatsProbe.__init__(self, dict(spec, streams=None), index, runner)
        from ansible_collections.vpsops.deploy.plugins.module_utils import _nats

        self.nats = _nats
        self.stream = self.require("stream", str)
        self.consumer = self.require("consumer", str)
        self.account = spec.get("account")
        self.max_pending = non_negative_int(self, "max_pending")
        self.max_ack_pending = non_negative_int(self, "max_ack_pending")
        self.max_growth = non_negative_int(self, "max_redelivered_growth")
        self.redelivered_at_start = None

    def default_name(self):
        return "nats_consumer %s/%s" % (self.spec.get("stream"), self.spec.get("consumer"))

    def describe(self):
        return "nats_consumer %s/%s at %s" % (self.stream, self.consumer, redact_url(self.base))

    def probe(self, timeout):
        try:
            jsz = self.nats.fetch_jsz(self.base, self.account, min(self.request_timeout, timeout), opener=self.opener)
            streams, missing = self.nats.summarize(jsz, [self.stream], [self.consumer], self.account)
        except self.nats.NatsError as exc:
            raise Exception(str(exc))
        if missing:
            raise Exception("%s not found (streams present: %s)" % (
                missing[0], ", ".join(sorted(s.get("name", "") for a in jsz.get("account_details") or []
                                             for s in a.get("stream_detail") or [])) or "none"))
        c = streams[self.stream]["consumers"][self.consumer]
        if self.redelivered_at_start is None:
            self.redelivered_at_start = c["num_redelivered"]
        growth = c["num_redelivered"] - self.redelivered_at_start
        if self.max_growth is not None and growth > self.max_growth:
            raise FatalProbeError("consumer %s/%s redelivered %d more messages during the wait (max_redelivered_growth "
                                  "%d): its handler keeps failing" % (self.stream, self.consumer, growth, self.max_growth))
        state = "pending %d, ack pending %d, redelivered +%d" % (c["num_pending"], c["num_ack_pending"], growth)
        if self.max_pending is not None and c["num_pending"] > self.max_pending:
            raise Exception("%s: num_pending above max_pending %d" % (state, self.max_pending))
        if self.max_ack_pending is not None and c["num_ack_pending"] > self.max_ack_pending:
            raise Exception("%s: num_ack_pending above max_ack_pending %d" % (state, self.max_ack_pending))
        return state


# Where the consumer-group tool is in the usual broker images: on PATH (bitnami and most others),
# apache/kafka's /opt/kafka/bin (not on its PATH), and Confluent's name without .sh.
KAFKA_CLIS = ("kafka-consumer-groups.sh", "/opt/kafka/bin/kafka-consumer-groups.sh", "kafka-consumer-groups")
KAFKA_BOOTSTRAP_RE = re.compile(r"^[^\s,]+:[0-9]+(,[^\s,]+:[0-9]+)*$")
KAFKA_MISSING = "-"  # the tool's mark for a value it does not have (ConsumerGroupCommand.MISSING_COLUMN_VALUE)


def _offset(value):
    return None if value in (None, KAFKA_MISSING) or not re.match(r"^-?[0-9]+$", value) else int(value)


def parse_consumer_group(out, err, group):
    """The output of `kafka-consumer-groups --describe --group GROUP` (Kafka 2.x to 4.x; the table
    ConsumerGroupCommand prints, with or without its GROUP column) -> dict:

    - missing: the group does not exist ("Consumer group 'G' does not exist.", or the
      GroupIdNotFoundException Kafka 4 raises), members: a row has a CONSUMER-ID (or the tool said
      "has no active members"), rebalancing: the tool said "is rebalancing";
    - rows: [{topic, partition, current, end, lag, consumer}], offsets and lag None where the tool
      printed "-" (no committed offset, or no log end offset);
    - error: the tool's "Error: ..." line when it failed otherwise (broker unreachable, not authorized).
    """
    text = "%s\n%s" % (out or "", err or "")
    seen = dict(missing=False, members=None, rebalancing=False, rows=[], error=None, table=False)
    if "has no active members" in text:
        seen["members"] = False
    if "is rebalancing" in text:
        seen["rebalancing"] = True
    lines = (out or "").splitlines()
    header = None
    for index, line in enumerate(lines):
        words = line.split()
        if "TOPIC" in words and "PARTITION" in words and "LAG" in words:
            header, start = words, index + 1
            break
    if header is not None:
        seen["table"] = True
        col = dict((name, header.index(name)) for name in header)
        for line in lines[start:]:
            if not line.strip():
                continue
            if line.split()[0] in ("Error:", "GROUP", "TOPIC"):
                break
            if "GROUP" in col and line.startswith(group + " "):
                # A group id may hold blanks; a topic, a partition or an offset never does.
                words = [group] + line[len(group):].split()
            else:
                words = line.split()

            def cell(name):
                at = col.get(name)
                return words[at] if at is not None and at < len(words) else None

            topic = cell("TOPIC")
            if topic in (None, KAFKA_MISSING):
                continue  # a member without partitions (older tools print one such row)
            consumer = cell("CONSUMER-ID")
            seen["rows"].append(dict(topic=topic, partition=cell("PARTITION"), current=_offset(cell("CURRENT-OFFSET")),
                                     end=_offset(cell("LOG-END-OFFSET")), lag=_offset(cell("LAG")),
                                     consumer=None if consumer in (None, KAFKA_MISSING) else consumer))
        if seen["members"] is None and "CONSUMER-ID" in col:
            seen["members"] = any(r["consumer"] for r in seen["rows"])
    for line in text.splitlines():
        line = line.strip()
        if "does not exist" in line or "GroupIdNotFoundException" in line:
            seen["missing"] = True
            break
        if line.startswith("Error:") and seen["error"] is None:
            seen["error"] = line[len("Error:"):].strip()
    return seen


@register
class KafkaConsumerProbe(DockerProbe):
    """A Kafka consumer group keeps up: its lag (summed over its partitions, or those of `topic`) is
    at most `max_lag`, read with the Kafka CLI inside `container` (docker exec; credentials stay in
    the `command_config` file in the container, never on the command line)."""

    type_name = "kafka_consumer"

    def __init__(self, spec, index, runner=None):
        DockerProbe.__init__(self, spec, index, runner)
        self.group = self.require("group", str)
        self.topic = spec.get("topic") or None
        if self.topic is not None and not isinstance(self.topic, str):
            raise CheckSpecError("%s: 'topic' must be a topic name, got %r" % (self.where(), self.topic))
        if spec.get("max_lag") is None or spec.get("max_lag") == "":
            raise CheckSpecError("%s (type kafka_consumer) needs 'max_lag' (the most messages the group may lag, "
                                 "summed over its partitions)" % self.where())
        self.max_lag = non_negative_int(self, "max_lag")
        self.bootstrap = spec.get("bootstrap_server") or "localhost:9092"
        if not isinstance(self.bootstrap, str) or not KAFKA_BOOTSTRAP_RE.match(self.bootstrap):
            raise CheckSpecError("%s: 'bootstrap_server' must be HOST:PORT[,HOST:PORT...] as the broker container "
                                 "reaches the broker, got %r" % (self.where(), self.bootstrap))
        self.command_config = spec.get("command_config") or None
        if self.command_config is not None and (not isinstance(self.command_config, str)
                                                or not self.command_config.startswith("/")):
            raise CheckSpecError("%s: 'command_config' must be the absolute path of a client properties file inside "
                                 "the container, got %r" % (self.where(), self.command_config))
        self.cli = spec.get("kafka_cli") or None
        if self.cli is not None and (not isinstance(self.cli, str) or not self.cli.strip()):
            raise CheckSpecError("%s: 'kafka_cli' must be the program's name or path in the container, got %r"
                                 % (self.where(), self.cli))
        members = spec.get("require_members")
        self.require_members = True if members is None else members
        if not isinstance(self.require_members, bool):
            raise CheckSpecError("%s: 'require_members' must be true or false, got %r" % (self.where(), members))
        self.request_timeout = float(spec.get("request_timeout") or 30)
        self.found_cli = None

    def default_name(self):
        return "kafka_consumer %s" % self.spec.get("group")

    def describe(self):
        return "kafka_consumer %s%s at %s in container %s" % (
            self.group, " on %s" % self.topic if self.topic else "", self.bootstrap, self.container)

    def argv(self, cli, seconds):
        # --timeout bounds the tool's own calls to the broker, so a JVM left behind by a docker exec
        # that timed out ends by itself; it gets half the time, the JVM's start the rest.
        argv = [cli, "--bootstrap-server", self.bootstrap, "--describe", "--group", self.group,
                "--timeout", str(max(int(seconds * 500), 1000))]
        if self.command_config:
            argv += ["--command-config", self.command_config]
        return argv

    def run_cli(self, timeout):
        """(stdout, stderr) of the tool, trying the usual names until one runs in the container."""
        from ansible_collections.vpsops.deploy.plugins.module_utils._compose import DockerError

        seconds = max(min(self.request_timeout, timeout), 1)
        tried = []
        for cli in [self.found_cli or self.cli] if (self.found_cli or self.cli) else KAFKA_CLIS:
            try:
                out, err = self.engine().cli_output(["exec", self.container] + self.argv(cli, seconds),
                                                    timeout=seconds + 5, what="docker exec %s %s" % (self.container, cli))
            except DockerError as exc:
                text = str(exc)
                if "OCI runtime exec failed" in text or "executable file not found" in text:
                    tried.append(cli)
                    continue
                raise Exception(text[-400:])
            self.found_cli = cli
            return out, err
        raise FatalProbeError("no Kafka CLI in container %s (tried %s); set kafka_cli to the path of "
                              "kafka-consumer-groups.sh in the broker image" % (self.container, ", ".join(tried)))

    def probe(self, timeout):
        out, err = self.run_cli(timeout)
        seen = parse_consumer_group(out, err, self.group)
        where = "consumer group %s" % self.group
        if seen["missing"]:
            raise Exception("%s does not exist (yet) at %s" % (where, self.bootstrap))
        if not seen["table"]:
            if seen["error"]:
                raise Exception("%s: the Kafka CLI failed: %s" % (where, seen["error"][:300]))
            if seen["members"] is False:
                raise Exception("%s has no active members and no committed offsets" % where)
            raise Exception("%s has no partitions assigned and no committed offsets yet%s"
                            % (where, (": " + (out + err).strip()[-200:]) if (out + err).strip() else ""))
        rows = seen["rows"]
        if self.topic:
            rows = [r for r in rows if r["topic"] == self.topic]
            if not rows:
                raise Exception("%s has no partitions of topic %s (its topics: %s)" % (
                    where, self.topic, ", ".join(sorted(set(r["topic"] for r in seen["rows"]))) or "none"))
        lag = sum(r["lag"] or 0 for r in rows)
        # No committed offset: its lag is unknown, unless its log is empty (nothing to lag behind).
        unknown = ["%s-%s" % (r["topic"], r["partition"]) for r in rows if r["lag"] is None and r["end"] != 0]
        behind = sorted((r for r in rows if r["lag"]), key=lambda r: -r["lag"])
        state = "lag %d on %d partition(s)%s" % (lag, len(rows), " of %s" % self.topic if self.topic else "")
        if behind:
            state += " (%s%s)" % (", ".join("%s-%s: %d" % (r["topic"], r["partition"], r["lag"]) for r in behind[:5]),
                                  ", ..." if len(behind) > 5 else "")
        if self.require_members and not seen["members"]:
            raise Exception("%s has no active members (its consumers are not running); %s" % (where, state))
        if seen["rebalancing"]:
            raise Exception("%s is rebalancing; %s" % (where, state))
        if unknown:
            raise Exception("%s has no committed offset on %s yet (lag unknown); %s"
                            % (where, ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else ""), state))
        if lag > self.max_lag:
            raise Exception("%s %s, above max_lag %d" % (where, state, self.max_lag))
        return "%s, max_lag %d" % (state, self.max_lag)


@register
class DlqProbe(Probe):
    """At most `max_new` failed events since a baseline (an earlier dlq_report result, or the
    table at the first probe). More fails fast: failed events do not go away by waiting."""

    type_name = "dlq"

    def __init__(self, spec, index, runner=None):
        Probe.__init__(self, spec, index, runner)
        from ansible_collections.vpsops.deploy.plugins.module_utils import _dlq, _pgcli

        self.dlq = _dlq
        self.db = self.require("db", str)
        self.max_new = non_negative_int(self, "max_new") or 0
        params = dict(spec, port=port_of(self, 5432))
        self.cli = _pgcli.PgCli(params)
        try:
            self.table = _dlq.Table(dict(table=spec.get("table"), columns=spec.get("columns"), outbox_table=""))
        except _dlq.DlqError as exc:
            raise CheckSpecError("%s: %s" % (self.where(), exc))
        baseline = spec.get("baseline")
        if baseline is not None and not isinstance(baseline, dict):
            raise CheckSpecError("%s: 'baseline' must be an earlier dlq_report result or one of its databases, got %r"
                                 % (self.where(), baseline))
        if baseline and "databases" in baseline:
            baseline = _dlq.baseline_entry(baseline, self.db)
        elif baseline:
            baseline = _dlq.baseline_entry({self.db: baseline}, self.db)
        self.baseline = baseline or None
        self.checked = False
        self.request_timeout = float(spec.get("request_timeout") or 10)

    def default_name(self):
        return "dlq %s" % self.spec.get("db")

    def describe(self):
        return "dlq %s in %s" % (self.table.table_name, self.cli.describe())

    def probe(self, timeout):
        max_id = self.baseline.get("max_id") if self.baseline else None
        try:
            if not self.checked:
                self.table.preflight(self.cli, need=["id"])
                self.checked = True
            counts = self.dlq.query(self.cli, self.dlq.counts_sql(self.table, max_id),
                                    timeout=max(min(self.request_timeout, timeout), 1))
        except self.dlq.SchemaError as exc:
            raise FatalProbeError(str(exc))
        except self.dlq.DlqError as exc:
            raise Exception(str(exc))
        if self.baseline is None:
            self.baseline = {"max_id": counts["max_id"] or 0, "total": counts["total"]}
            return "%d failed events, baseline taken" % counts["total"]
        new = self.dlq.new_since(self.baseline, counts)
        if new > self.max_new:
            raise FatalProbeError("%d new failed events in %s since the baseline (max_new %d)"
                                  % (new, self.describe(), self.max_new))
        return "%d new failed events (max_new %d)" % (new, self.max_new)


@register
class LogProbe(DockerProbe):
    """A container's log since it (last) started matches `pattern`; `fail_pattern` fails fast."""

    type_name = "log"

    def __init__(self, spec, index, runner=None):
        DockerProbe.__init__(self, spec, index, runner)
        self.pattern = compile_regex(self, "pattern", required=True)
        self.fail_pattern = compile_regex(self, "fail_pattern")

    def default_name(self):
        return "log %s" % self.spec.get("container")

    def describe(self):
        return "log of %s /%s/" % (self.container, self.pattern.pattern)

    def probe(self, timeout):
        started = parse_docker_time(self.engine().container_started_at(self.container, timeout=max(timeout, 1)))
        # A line written at once may carry a timestamp a little before Docker's StartedAt; a
        # restart is always more than this margin after the previous run's last line.
        since = "%.3f" % (started - LOG_SINCE_MARGIN) if started is not None else "0"
        out, err = self.engine().container_logs(self.container, since=since, timeout=max(timeout, 1))
        text = out + err
        if self.fail_pattern is not None:
            bad = self.fail_pattern.search(text)
            if bad:
                raise FatalProbeError("log of %s shows /%s/: %s"
                                      % (self.container, self.fail_pattern.pattern, line_at(text, bad.start())))
        found = self.pattern.search(text)
        if not found:
            raise Exception("no line of %s matches /%s/ yet" % (self.container, self.pattern.pattern))
        return line_at(text, found.start())


def line_at(text, offset):
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return text[start:end if end >= 0 else len(text)].strip()[:200]


@register
class CommandProbe(Probe):
    """A command (argv, never a shell) exits with `rc` (0) and, optionally, prints `stdout` (regex)."""

    type_name = "command"

    def __init__(self, spec, index, runner=None):
        Probe.__init__(self, spec, index, runner)
        argv = self.require("argv")
        if isinstance(argv, str) or not isinstance(argv, list) or not argv or \
                not all(isinstance(a, (str, int, float)) for a in argv):
            raise CheckSpecError("%s: 'argv' must be a non-empty list of strings (no shell), got %r"
                                 % (self.where(), argv))
        self.argv = [str(a) for a in argv]
        self.rc = int(spec.get("rc") or 0)
        self.stdout_re = compile_regex(self, "stdout")

    def default_name(self):
        # A name reaches the audit log and the webhook: a password on the command line is masked.
        return "command %s" % redact_argv(self.spec.get("argv") or "")

    def describe(self):
        return "command %s" % redact_argv(self.argv)

    def probe(self, timeout):
        rc, out, err = self.runner(self.argv, timeout=max(timeout, 1))
        if rc != self.rc:
            raise Exception("exited %d (expected %d): %s" % (rc, self.rc, (err or out).strip()[-200:]))
        if self.stdout_re is not None and not self.stdout_re.search(out):
            raise Exception("stdout does not match /%s/: %s" % (self.stdout_re.pattern, out.strip()[-160:]))
        return "exited %d" % rc


def parse_docker_time(value):
    """Docker's RFC 3339 time with nanoseconds -> epoch seconds (None for the zero time)."""
    if not value or value.startswith("0001-"):
        return None
    import calendar

    main, _dot, frac = value.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(main[:19], "%Y-%m-%dT%H:%M:%S"))
    digits = "".join(c for c in frac if c.isdigit())[:6]
    return seconds + (float("0." + digits) if digits else 0.0)


def check_container_state(name, state, restart_count, running_for, tracker, now=None, created=None, since=None,
                          own_health=None):
    """Judge one `docker inspect` State; raise FatalProbeError for states that cannot recover.

    A container whose healthcheck Docker has not run yet (health `starting`) is healthy when
    `own_health()` (the container's own healthcheck command run now) returns (True, output); it
    returns None when it cannot tell, and Docker's verdict is awaited. `unhealthy` is never
    overruled.

    A restart counts when the restart count grew since the first probe. With `since` (epoch seconds
    on the host, such as the start of a deploy), a container created after it counts every restart
    since its creation: a crash that came and went before the first probe is not missed."""
    status = state.get("Status")
    if state.get("OOMKilled"):
        raise FatalProbeError("container %s was OOM-killed (exit code %s)" % (name, state.get("ExitCode")))
    if status in ("exited", "dead"):
        raise FatalProbeError("container %s has %s with exit code %s%s"
                              % (name, status, state.get("ExitCode"),
                                 (": " + state["Error"]) if state.get("Error") else ""))
    if tracker.restarts_seen is None:
        fresh = since is not None and created is not None and created >= since
        tracker.restarts_seen = 0 if fresh else restart_count
    if state.get("Restarting") or status == "restarting":
        raise FatalProbeError("container %s is restarting (restart count %d, last exit code %s)"
                              % (name, restart_count, state.get("ExitCode")))
    if restart_count > tracker.restarts_seen:
        # Docker resets ExitCode to 0 when it starts the container again: only a stopped one has one to tell.
        raise FatalProbeError("container %s restarted %d time(s) %s%s"
                              % (name, restart_count - tracker.restarts_seen,
                                 "since it was created" if tracker.restarts_seen == 0 and since is not None
                                 else "while it was watched",
                                 "" if status == "running" else " (last exit code %s)" % state.get("ExitCode")))
    if status != "running":
        raise Exception("container %s is %s" % (name, status))
    health = (state.get("Health") or {}).get("Status")
    if health == "starting" and own_health is not None:
        # Docker runs the first check one interval after the start (30 s by default): the same
        # command run now tells the same, without waiting for it.
        verdict = own_health()
        if verdict is not None:
            passed, output = verdict[:2]
            if not passed:
                raise Exception("container %s is starting and its healthcheck does not pass yet%s"
                                % (name, (": " + output) if output else ""))
            health = verdict[2] if len(verdict) > 2 else "healthy by its own healthcheck, run now"
            tracker.own_passed = state.get("StartedAt") or None
    if health is not None and not health.startswith("healthy"):
        log = (state.get("Health") or {}).get("Log") or []
        last = (log[-1].get("Output") or "").strip()[:160] if log else ""
        raise Exception("container %s is %s%s" % (name, health, (": " + last) if last else ""))
    started = parse_docker_time(state.get("StartedAt"))
    now = time.time() if now is None else now
    if running_for and started is not None and now - started < running_for:
        raise Exception("container %s running for %.1fs of the %.1fs required" % (name, now - started, running_for))
    return "running" + (" (%s)" % health if health else "")


def check_argument_spec():
    """The keys a check may have (documented by the doc fragment vpsops.deploy.checks). Defaults that
    differ per type are applied by the probes."""
    options = dict(
        type=dict(type="str", required=True, choices=probe_types()),
        name=dict(type="str"),
        url=dict(type="str"),
        method=dict(type="str", default="GET"),
        status=dict(type="list", elements="int", default=[200]),
        body=dict(type="str"),
        json=dict(type="dict"),
        json_compare=dict(type="list", elements="dict"),
        headers=dict(type="dict", no_log=True),
        validate_certs=dict(type="bool", default=True),
        host=dict(type="str", default="127.0.0.1"),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        streams=dict(type="list", elements="str"),
        jetstream=dict(type="bool", default=True),
        stream=dict(type="str"),
        consumer=dict(type="str"),
        account=dict(type="str"),
        max_pending=dict(type="int"),
        max_ack_pending=dict(type="int"),
        max_redelivered_growth=dict(type="int"),
        group=dict(type="str"),
        topic=dict(type="str"),
        max_lag=dict(type="int"),
        bootstrap_server=dict(type="str"),
        command_config=dict(type="str"),
        kafka_cli=dict(type="str"),
        require_members=dict(type="bool"),
        table=dict(type="str"),
        columns=dict(type="dict"),
        baseline=dict(type="dict"),
        max_new=dict(type="int", default=0),
        container=dict(type="str"),
        running_for=dict(type="float", default=0),
        own_health=dict(type="bool", default=True),
        since=dict(type="float"),
        pattern=dict(type="str"),
        fail_pattern=dict(type="str"),
        argv=dict(type="list", elements="str"),
        rc=dict(type="int", default=0),
        stdout=dict(type="str"),
        request_timeout=dict(type="float"),
        interval=dict(type="float"),
        consecutive=dict(type="int"),
    )
    # The PostgreSQL connection keys are the collection's shared ones (port serves tcp and redis too).
    from ansible_collections.vpsops.deploy.plugins.module_utils._postgres import postgres_argument_spec

    for key, spec in postgres_argument_spec().items():
        if key == "connect_timeout":
            continue
        spec = dict(spec)
        spec.pop("default", None)
        options[key] = spec
    return options


def gate_specs(checks, containers, docker_cli="docker", since=None):
    """The checks of one gate: `checks` with the Docker CLI filled in, plus one `container` check per
    container name (running, healthy where it has a healthcheck, fail fast on exit or restart;
    restarts counted from `since` for the containers created after it)."""
    specs = []
    for check in checks or []:
        spec = dict(check)
        spec.setdefault("docker_cli", docker_cli)
        specs.append(spec)
    specs += [dict(type="container", name="container %s" % name, container=name, docker_cli=docker_cli, since=since)
              for name in containers or []]
    return specs


def validate_checks(checks, docker_cli="docker"):
    """Build the probes of `checks` without probing: CheckSpecError names the first check that
    cannot run. Modules call it before they change anything; no checks is fine."""
    if checks:
        build_probes(gate_specs(checks, [], docker_cli))


def build_probes(checks, runner=None):
    """Checks (list of dicts) -> probes; raise CheckSpecError naming the first bad one."""
    if not isinstance(checks, list) or not checks:
        raise CheckSpecError("'checks' must be a non-empty list of checks")
    probes, names = [], set()
    for index, spec in enumerate(checks):
        if not isinstance(spec, dict):
            raise CheckSpecError("checks[%d] must be a dict, got %r" % (index, spec))
        kind = spec.get("type")
        if kind not in PROBES:
            raise CheckSpecError("checks[%d]: 'type' must be one of %s, got %r"
                                 % (index, ", ".join(probe_types()), kind))
        probe = PROBES[kind](spec, index, runner)
        if probe.name in names:
            raise CheckSpecError("checks[%d]: the name %r is used by another check; names must be unique"
                                 % (index, probe.name))
        names.add(probe.name)
        probes.append(probe)
    openers = {}
    for probe in probes:
        key = getattr(probe, "opener_key", None)
        if key is not None:
            if key not in openers:
                openers[key] = http_opener(*key)
            probe.opener = openers[key]
    return probes


class CheckRun:
    """The running state of one check: attempts, successes in a row, timeline."""

    def __init__(self, probe, interval, max_interval, consecutive):
        self.probe = probe
        self.interval = float(probe.spec.get("interval") or interval)
        self.max_interval = max(float(max_interval), self.interval)
        self.consecutive = int(probe.spec.get("consecutive") or consecutive)
        self.attempts = 0
        self.in_a_row = 0
        self.ready = False
        self.fatal = None
        self.first_success = None
        self.ready_after = None
        self.last_error = None
        self.last_ok = None
        self.timeline = []

    def note(self, elapsed, ok, detail):
        previous = self.timeline[-1]["ok"] if self.timeline else None
        if ok != previous and len(self.timeline) < TIMELINE_MAX:
            self.timeline.append({"t": round(elapsed, 3), "ok": ok, "detail": detail[:200]})

    def result(self):
        """The check as modules return it, keyed by its name: the keys health_wait documents. A gate
        of hundreds of checks returns hundreds of these, and every key costs on the controller."""
        return {
            "ready": self.ready,
            "attempts": self.attempts,
            "first_success_after": self.first_success,
            "ready_after": self.ready_after,
            "last_error": None if self.ready else (self.fatal or self.last_error),
            "fatal": self.fatal is not None,
            "timeline": self.timeline,
        }


def wait_for(probes, timeout, interval=1.0, max_interval=5.0, consecutive=1, fail_fast=True,
             clock=time.monotonic):
    """Probe every check concurrently until all are ready, one is fatal (with fail_fast), or the deadline.

    Returns (ok, runs, elapsed). Each check backs off from its interval (x1.5, capped at max_interval)
    while failing and probes at its interval while collecting consecutive successes.
    """
    start = clock()
    deadline = start + float(timeout)
    stop = threading.Event()
    runs = [CheckRun(p, interval, max_interval, consecutive) for p in probes]

    def worker(run):
        delay = run.interval
        while not stop.is_set():
            remaining = deadline - clock()
            if remaining <= 0:
                return
            run.attempts += 1
            try:
                detail = run.probe.probe(max(remaining, 0.1))
            except FatalProbeError as exc:
                run.fatal = str(exc)
                run.note(clock() - start, False, run.fatal)
                if fail_fast:
                    stop.set()
                    return
                ok = False
            except Exception as exc:  # every probe failure is data, not a crash of the engine
                run.last_error = str(exc) or exc.__class__.__name__
                run.note(clock() - start, False, run.last_error)
                ok = False
            else:
                ok = True
                run.last_ok = detail
                now = clock() - start
                if run.first_success is None:
                    run.first_success = round(now, 3)
                run.note(now, True, detail)
            if ok:
                run.in_a_row += 1
                if run.in_a_row >= run.consecutive:
                    run.ready = True
                    run.ready_after = round(clock() - start, 3)
                    return
                delay = run.interval
            else:
                run.in_a_row = 0
            wait = min(delay, max(deadline - clock(), 0))
            if stop.wait(wait):
                return
            if not ok:
                delay = min(delay * 1.5, run.max_interval)

    # Each thread probes as soon as it starts: starting hundreds of threads takes tens of
    # milliseconds, and the first checks are probed meanwhile instead of after the last start.
    threads = [threading.Thread(target=worker, args=(r,), name="probe-%s" % r.probe.name) for r in runs]
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread in threads:
        # Each worker returns by the deadline; the margin covers one probe still in flight.
        thread.join(max(deadline - clock(), 0) + 10)
    stop.set()
    elapsed = round(clock() - start, 3)
    ok = all(r.ready for r in runs)
    return ok, runs, elapsed


def probe_budget(probe, interval):
    """Seconds one probe of the watch window may take: twice the interval, at least 5, and at least
    the check's own request_timeout (a kafka_consumer check starts a JVM in the broker container)."""
    return max(interval * 2, 5.0, float(getattr(probe, "request_timeout", 0) or 0))


def watch(probes, seconds, interval=1.0, failures_in_a_row=1, clock=time.monotonic):
    """Keep probing every check for `seconds` after a passed gate (the watch window).

    A fatal probe (a container that exited or restarted) ends the watch at once; any other check
    ends it after `failures_in_a_row` failed probes in a row. Returns (ok, failure, elapsed, probes
    made per check) where failure is None or {check, after, error}.
    """
    start = clock()
    deadline = start + float(seconds)
    stop = threading.Event()
    lock = threading.Lock()
    failure = {}
    made = dict((p.name, 0) for p in probes)

    def worker(probe):
        in_a_row = 0
        while not stop.is_set() and clock() < deadline:
            try:
                probe.probe(probe_budget(probe, interval))
                in_a_row = 0
            except Exception as exc:  # noqa: BLE001 - every probe failure is data
                in_a_row += 1
                if isinstance(exc, FatalProbeError) or in_a_row >= failures_in_a_row:
                    with lock:
                        if not failure:
                            failure.update(check=probe.name, after=round(clock() - start, 3),
                                           error=str(exc) or exc.__class__.__name__)
                    stop.set()
                    return
            with lock:
                made[probe.name] += 1
            if stop.wait(min(interval, max(deadline - clock(), 0))):
                return

    threads = [threading.Thread(target=worker, args=(p,), name="watch-%s" % p.name) for p in probes]
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread in threads:
        thread.join(max(deadline - clock(), 0) + max(probe_budget(p, interval) for p in probes) + 10)
    stop.set()
    return not failure, (failure or None), round(clock() - start, 3), made


def failure_message(runs, elapsed, timeout):
    """One readable sentence per check that is not ready."""
    fatal = [r for r in runs if r.fatal]
    pending = [r for r in runs if not r.ready]
    if fatal:
        head = "Health gate failed fast after %.1fs: %s." % (elapsed, "; ".join(r.fatal for r in fatal))
    else:
        head = "Health gate: %d of %d checks not ready after %.1fs (timeout %ss)." % (
            len(pending), len(runs), elapsed, timeout)
    lines = []
    for r in pending:
        if r.fatal:
            continue
        if r.in_a_row:
            why = "only %d of the %d successes in a row it needs" % (r.in_a_row, r.consecutive)
        else:
            why = r.last_error or "not probed before the deadline"
        lines.append("%s (%s) is not ready after %d attempts: %s." % (r.probe.name, r.probe.describe(), r.attempts, why))
    return " ".join([head] + lines)


class GateResult:
    """What one gate saw: `ok`, the per-check `runs`, `elapsed`, the `probes` (for a watch window
    after it) and, when not ok, the readable `message`."""

    def __init__(self, ok, runs, elapsed, probes, timeout):
        self.ok, self.runs, self.elapsed, self.probes = ok, runs, elapsed, probes
        self.message = "" if ok else failure_message(runs, elapsed, timeout)

    def summary(self):
        """The gate as modules return it: ready, elapsed, per-check results, what is not ready."""
        return dict(ready=self.ok, elapsed=self.elapsed, checks=dict((r.probe.name, r.result()) for r in self.runs),
                    not_ready=[r.probe.name for r in self.runs if not r.ready])


def run_gate(checks, containers, timeout, interval=1.0, max_interval=5.0, consecutive=1, since=None,
             docker_cli="docker", fail_fast=True, runner=None, adjust_specs=None, adjust_probes=None):
    """The one gate of the collection: `checks` and one container check per name in `containers`
    (gate_specs), built into probes (build_probes, CheckSpecError for a check that cannot run) and
    waited for at once under one deadline (wait_for). health_wait, a deploy's phase and its final
    gate, the rollout of new replicas and the rollback all gate through it. `adjust_specs(specs)`
    and `adjust_probes(probes)` let a caller tune them before the wait. Returns a GateResult, or None
    when there is nothing to gate."""
    specs = gate_specs(checks, containers, docker_cli, since)
    if not specs:
        return None
    if adjust_specs is not None:
        adjust_specs(specs)
    probes = build_probes(specs, runner=runner)
    if adjust_probes is not None:
        adjust_probes(probes)
    ok, runs, elapsed = wait_for(probes, timeout, interval, max_interval, consecutive, fail_fast)
    return GateResult(ok, runs, elapsed, probes, timeout)


def rollback_gate(docker_cli="docker"):
    """gate(checks, containers, timeout) -> (ok, message, details) for the rollback engine."""
    def gate(checks, containers, timeout):
        try:
            found = run_gate(checks, containers, timeout, docker_cli=docker_cli)
        except CheckSpecError as exc:
            return False, "bad check: %s" % exc, {"elapsed": 0, "checks": {}}
        if found is None:
            return True, "", {"elapsed": 0, "checks": {}}
        return found.ok, found.message, {"elapsed": found.elapsed,
                                         "checks": dict((r.probe.name, r.ready) for r in found.runs)}
    return gate
