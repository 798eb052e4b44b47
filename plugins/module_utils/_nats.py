# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""NATS for vpsops.deploy: the monitoring endpoint (`/jsz`) read into per-stream and per-consumer
figures, and a small JetStream publisher speaking the NATS client protocol over a plain socket.
Private to this collection.

Standard library only: modules run on the managed host, where nats-py is usually not installed.
The publisher does what a replay needs and nothing more: CONNECT (with headers and no-responders),
HPUB with a reply inbox, the PubAck (or the 503 no-responders status when no stream captures the
subject), PING/PONG. Publishes are pipelined within a window and every one waits for its PubAck.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import socket
import time

from urllib.error import URLError
from urllib.parse import quote, unquote, urlsplit

from ansible_collections.vpsops.deploy.plugins.module_utils._http import http_opener
from ansible_collections.vpsops.deploy.plugins.module_utils._secrets import redact_url

DEFAULT_MONITOR_URL = "http://127.0.0.1:8222"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
MAX_JSZ_BYTES = 64 * 1024 * 1024


class NatsError(Exception):
    """The monitoring endpoint or the server failed; the message never holds a password."""


class NatsConnectionError(NatsError):
    """The connection to the server is gone: nothing more can be published on it."""


# --------------------------------------------------------------------------------------------
# monitoring endpoint
# --------------------------------------------------------------------------------------------
def check_monitor_url(url):
    """The monitoring base URL without a trailing slash; NatsError when it is not http(s)."""
    base = (url or DEFAULT_MONITOR_URL).rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NatsError("'url' must be the http:// monitoring base URL of NATS (port 8222 by default), got %r"
                        % redact_url(base))
    return base


def fetch_jsz(base, account=None, timeout=5.0, validate_certs=True, opener=None):
    """GET /jsz with streams, consumers and config (one account with `account`) -> dict."""
    base = check_monitor_url(base)
    path = "/jsz?streams=true&consumers=true&config=true"
    if account:
        path += "&acc=" + quote(account, safe="")
    opener = opener or http_opener(base.lower().startswith("https:"), validate_certs)
    try:
        response = opener.open(base + path, timeout=timeout)
        try:
            status = response.status
            body = response.read(MAX_JSZ_BYTES).decode("utf-8", "replace")
        finally:
            response.close()
    except (URLError, OSError) as exc:
        raise NatsError("NATS monitoring endpoint %s unreachable: %s (is the server running with -m, "
                        "the monitoring port?)" % (redact_url(base), getattr(exc, "reason", exc) or "timed out"))
    if status != 200:
        raise NatsError("NATS monitoring endpoint %s answered HTTP %d to /jsz: %s"
                        % (redact_url(base), status, body[:160].strip()))
    try:
        data = json.loads(body)
    except ValueError:
        raise NatsError("NATS monitoring endpoint %s returned no JSON for /jsz: %s"
                        % (redact_url(base), body[:160].strip()))
    if not isinstance(data, dict):
        raise NatsError("NATS monitoring endpoint %s returned unexpected /jsz data" % redact_url(base))
    if data.get("disabled"):
        raise NatsError("JetStream is disabled on the NATS server behind %s (start it with -js)" % redact_url(base))
    return data


def last_active(consumer):
    """The latest of the delivered / ack floor activity times, or None."""
    times = [(consumer.get(key) or {}).get("last_active") for key in ("delivered", "ack_floor")]
    times = [t for t in times if t]
    return max(times) if times else None


def consumer_summary(consumer):
    delivered = consumer.get("delivered") or {}
    ack_floor = consumer.get("ack_floor") or {}
    return dict(
        num_pending=int(consumer.get("num_pending") or 0),
        num_ack_pending=int(consumer.get("num_ack_pending") or 0),
        num_redelivered=int(consumer.get("num_redelivered") or 0),
        num_waiting=int(consumer.get("num_waiting") or 0),
        delivered_seq=int(delivered.get("stream_seq") or 0),
        ack_floor_seq=int(ack_floor.get("stream_seq") or 0),
        last_active=last_active(consumer),
    )


def stream_summary(stream, consumers=None):
    state = stream.get("state") or {}
    config = stream.get("config") or {}
    found = {}
    for consumer in stream.get("consumer_detail") or []:
        name = consumer.get("name") or (consumer.get("config") or {}).get("durable_name")
        if consumers is None or name in consumers:
            found[name] = consumer_summary(consumer)
    return dict(
        messages=int(state.get("messages") or 0),
        bytes=int(state.get("bytes") or 0),
        first_seq=int(state.get("first_seq") or 0),
        last_seq=int(state.get("last_seq") or 0),
        consumer_count=int(state.get("consumer_count") or 0),
        subjects=list(config.get("subjects") or []),
        duplicate_window=(config.get("duplicate_window") or 0) / 1e9,
        consumers=found,
    )


def summarize(jsz, streams=None, consumers=None, account=None):
    """/jsz -> ({stream: summary}, missing) where missing names the filtered streams and consumers
    ("STREAM/consumer") that do not exist. Raises NatsError for an unknown account."""
    accounts = jsz.get("account_details") or []
    if account:
        accounts = [a for a in accounts if account in (a.get("name"), a.get("id"))]
        if not accounts:
            raise NatsError("account %r has no JetStream on this server (no such account, or JetStream not "
                            "enabled for it)" % account)
    wanted = set(streams) if streams else None
    result = {}
    for acc in accounts:
        for stream in acc.get("stream_detail") or []:
            name = stream.get("name")
            if wanted is None or name in wanted:
                result[name] = stream_summary(stream, set(consumers) if consumers else None)
    missing = [name for name in (streams or []) if name not in result]
    for name, info in result.items():
        missing += ["%s/%s" % (name, c) for c in (consumers or []) if c not in info["consumers"]]
    return result, missing


# --------------------------------------------------------------------------------------------
# client protocol
# --------------------------------------------------------------------------------------------
def url_secrets(url):
    """The user info of a URL (user, password or token), to be masked wherever the URL shows."""
    try:
        parts = urlsplit(url or "")
    except ValueError:
        return []
    return [unquote(x) for x in (parts.username, parts.password) if x]


def parse_nats_url(url, user=None, password=None, token=None):
    """nats://host[:port] -> (host, port, user, password, token). Credentials in the URL are refused:
    Ansible logs option values, so they belong in the options marked no_log."""
    url = url or DEFAULT_NATS_URL
    if "://" not in url:
        url = "nats://" + url
    try:
        parts = urlsplit(url)
        port = parts.port or 4222
    except ValueError:
        raise NatsError("'nats_url' must look like nats://host:4222, got %r" % redact_url(url))
    if parts.scheme not in ("nats", "tcp") or not parts.hostname:
        raise NatsError("'nats_url' must look like nats://host:4222 (TLS is not supported), got %r"
                        % redact_url(url))
    if parts.username is not None or parts.password is not None:
        raise NatsError("'nats_url' must not carry credentials (option values are logged): give them in "
                        "nats_user/nats_password or nats_token, got %r" % redact_url(url))
    return parts.hostname, port, user, password, token


def match_subject(pattern, subject):
    """NATS subject matching with `*` (one token) and `>` (the rest)."""
    ptoks, stoks = pattern.split("."), subject.split(".")
    for i, tok in enumerate(ptoks):
        if tok == ">":
            return len(stoks) > i
        if i >= len(stoks) or (tok != "*" and tok != stoks[i]):
            return False
    return len(ptoks) == len(stoks)


class PubResult:
    """The outcome of one publish: ok (stored or duplicate) or error (a sentence)."""

    __slots__ = ("key", "stream", "seq", "duplicate", "error")

    def __init__(self, key, stream=None, seq=None, duplicate=False, error=None):
        self.key, self.stream, self.seq, self.duplicate, self.error = key, stream, seq, duplicate, error

    @property
    def ok(self):
        return self.error is None


def parse_puback(subject, status_line, body):
    """A PubAck reply -> (stream, seq, duplicate, error)."""
    status = status_line.split(None, 2)[1] if status_line and len(status_line.split()) > 1 else ""
    if status == "503":
        return None, None, False, "no JetStream stream captures subject %s (no responders)" % subject
    if status and status != "200":
        return None, None, False, "server answered %s for subject %s" % (status_line.strip(), subject)
    try:
        ack = json.loads(body.decode("utf-8", "replace")) if body else {}
    except ValueError:
        return None, None, False, "unreadable PubAck for subject %s: %r" % (subject, body[:120])
    if not isinstance(ack, dict):
        return None, None, False, "unreadable PubAck for subject %s: %r" % (subject, body[:120])
    if ack.get("error"):
        err = ack["error"]
        return None, None, False, "JetStream refused subject %s: %s (code %s)" % (
            subject, err.get("description", err), err.get("err_code", err.get("code")))
    if "stream" not in ack:
        return None, None, False, "reply for subject %s is not a PubAck: %r" % (subject, body[:120])
    return ack["stream"], ack.get("seq"), bool(ack.get("duplicate")), None


class NatsClient:
    """One connection to a NATS server for JetStream publishes (synchronous, standard library)."""

    def __init__(self, url=None, user=None, password=None, token=None, timeout=5.0, name="vpsops.deploy"):
        self.host, self.port, self.user, self.password, self.token = parse_nats_url(url, user, password, token)
        self.timeout = float(timeout)
        self.name = name
        self.sock = None
        self.buf = b""
        self.inbox = "_INBOX.%s" % os.urandom(8).hex()
        self.server_info = {}
        self.sequence = 0

    def describe(self):
        return "nats://%s:%d" % (self.host, self.port)

    def scrub(self, text):
        text = str(text)
        for secret in (self.password, self.token):
            if secret:
                text = text.replace(secret, "********")
        return text

    # -- socket ----------------------------------------------------------------------------
    def connect(self):
        self.buf = b""
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            line = self.readline()
        except (OSError, socket.timeout) as exc:
            self.close()
            raise NatsConnectionError("cannot connect to NATS at %s: %s" % (self.describe(), exc or "timed out"))
        if not line.startswith(b"INFO "):
            self.close()
            raise NatsConnectionError("%s is not a NATS server (greeting %r)" % (self.describe(), line[:60]))
        self.server_info = json.loads(line[5:].decode("utf-8", "replace"))
        if self.server_info.get("tls_required"):
            self.close()
            raise NatsConnectionError("NATS at %s requires TLS, which this client does not speak" % self.describe())
        if not self.server_info.get("headers", False):
            self.close()
            raise NatsConnectionError("NATS at %s does not support headers (server 2.2 or later needed)"
                                      % self.describe())
        opts = {"verbose": False, "pedantic": False, "lang": "python-stdlib", "version": "0.1.0",
                "protocol": 1, "headers": True, "no_responders": True, "name": self.name}
        if self.token:
            opts["auth_token"] = self.token
        if self.user:
            opts["user"], opts["pass"] = self.user, self.password or ""
        self.send(b"CONNECT " + json.dumps(opts).encode("utf-8") + b"\r\nPING\r\n")
        self.expect_pong()
        self.send(("SUB %s.* 1\r\n" % self.inbox).encode("ascii"))
        return self

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        try:
            self.sock.sendall(data)
        except (OSError, socket.timeout) as exc:
            self.close()
            raise NatsConnectionError("connection to NATS at %s lost while sending: %s" % (self.describe(), exc))

    def fill(self):
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise NatsConnectionError("NATS at %s did not answer within %ss" % (self.describe(), self.timeout))
        except OSError as exc:
            self.close()
            raise NatsConnectionError("connection to NATS at %s lost: %s" % (self.describe(), exc))
        if not chunk:
            self.close()
            raise NatsConnectionError("NATS at %s closed the connection" % self.describe())
        self.buf += chunk

    def readline(self):
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 2:]
                return line
            self.fill()

    def readexact(self, size):
        while len(self.buf) < size:
            self.fill()
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def next_message(self):
        """Handle protocol lines until a message: -> (subject, headers_block, payload)."""
        while True:
            line = self.readline()
            op = line.split(b" ", 1)[0].upper()
            if op == b"PING":
                self.send(b"PONG\r\n")
            elif op in (b"PONG", b"+OK", b"INFO"):
                continue
            elif op == b"-ERR":
                self.refused(line, "refused")
            elif op == b"MSG":
                args = line.split()
                size = int(args[-1])
                payload = self.readexact(size + 2)[:-2]
                return args[1].decode(), b"", payload
            elif op == b"HMSG":
                args = line.split()
                hdr_len, total = int(args[-2]), int(args[-1])
                data = self.readexact(total + 2)[:-2]
                return args[1].decode(), data[:hdr_len], data[hdr_len:]
            elif line:
                raise NatsConnectionError("unexpected protocol line from %s: %r" % (self.describe(), line[:80]))

    def refused(self, line, what):
        """The server's -ERR line (without any secret) as a NatsConnectionError; the connection closes."""
        message = self.scrub(line[5:].decode("utf-8", "replace").strip().strip("'"))
        self.close()
        raise NatsConnectionError("NATS at %s %s: %s" % (self.describe(), what, message))

    def expect_pong(self):
        while True:
            line = self.readline()
            op = line.split(b" ", 1)[0].upper()
            if op == b"PONG":
                return
            if op == b"-ERR":
                self.refused(line, "refused the connection")

    # -- JetStream publish -----------------------------------------------------------------------
    def hpub(self, subject, reply, headers, payload):
        hdr = "NATS/1.0\r\n" + "".join("%s: %s\r\n" % (k, v) for k, v in headers.items()) + "\r\n"
        hdr = hdr.encode("utf-8")
        return b"".join([("HPUB %s %s %d %d\r\n" % (subject, reply, len(hdr), len(hdr) + len(payload))).encode("utf-8"),
                         hdr, payload, b"\r\n"])

    def publish_many(self, messages, window=256, pacer=None, on_result=None):
        """Publish [(key, subject, headers, payload)] to JetStream, `window` in flight at most,
        paced by `pacer` (a Pacer; None: unlimited). Returns [PubResult] in order. A lost connection
        raises NatsConnectionError after on_result was called for every acknowledged message;
        messages without a PubAck have no result."""
        results = [None] * len(messages)
        pending = {}
        sent = 0
        while sent < len(messages) or pending:
            batch = []
            while sent < len(messages) and len(pending) < window:
                delay = pacer.delay() if pacer is not None else 0
                if delay > 0:
                    if pending or batch:
                        break  # collect the acks in flight first, then come back for the wait
                    time.sleep(delay)
                if pacer is not None:
                    pacer.took()
                key, subject, headers, payload = messages[sent]
                token = "%s.%d" % (self.inbox, self.sequence)
                self.sequence += 1
                pending[token] = sent
                batch.append(self.hpub(subject, token, headers, payload))
                sent += 1
            if batch:
                self.send(b"".join(batch))
            if not pending:
                continue
            reply_to, hdr, body = self.next_message()
            index = pending.pop(reply_to, None)
            if index is None:
                continue  # a late reply to an earlier call
            key, subject = messages[index][0], messages[index][1]
            status_line = hdr.split(b"\r\n", 1)[0].decode("utf-8", "replace") if hdr else ""
            stream, seq, duplicate, error = parse_puback(subject, status_line, body)
            results[index] = PubResult(key, stream, seq, duplicate, error)
            if on_result is not None:
                on_result(results[index])
        return results


class Pacer:
    """At most `rate` messages per second over a whole replay (0 or None: unlimited)."""

    def __init__(self, rate=0, clock=time.monotonic):
        self.rate = float(rate or 0)
        self.clock = clock
        self.start = None
        self.count = 0

    def delay(self):
        """Seconds to wait before the next message may go."""
        if not self.rate:
            return 0
        now = self.clock()
        if self.start is None:
            self.start = now
        return max(0.0, self.start + self.count / self.rate - now)

    def took(self):
        self.count += 1
