# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reads of container state from the Docker Engine API over its unix socket: the containers of
a project, one container's or image's inspect document, its logs; the host's networks and volumes;
and three writes: running a container's own healthcheck command in it (exec_run), tagging an image
and removing a tag (the release pins, one per service). Standard
library only (http.client over AF_UNIX), so a bare VPS needs no extra Python package. A `docker
inspect` starts a Go process (about 20 ms); the same read over the socket takes well under a
millisecond, which matters to health gates that read every container on every probe round.

Only a local daemon is spoken to: DOCKER_HOST=unix://PATH or the default /var/run/docker.sock.
Anything else (tcp://, ssh://, a Docker context) raises Unavailable, and the caller keeps the CLI,
which knows how to reach it. Private to this collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import http.client
import json
import os
import socket
import struct

from urllib.parse import quote, urlencode

DEFAULT_SOCKET = "/var/run/docker.sock"
# The API version is the lower of the daemon's and this one, as the Docker CLI negotiates it.
# Every field read here has the same shape from 1.24 (Docker 1.12) to the newest daemons; the cap
# stays above the minimum recent daemons accept (1.44 for Docker 29).
MAX_API_VERSION = "1.47"
MIN_API_VERSION = "1.24"
DEFAULT_TIMEOUT = 30
# A response larger than this is not a state read: refuse it rather than hold it in memory.
MAX_BODY = 64 * 1024 * 1024

STDOUT, STDERR = 1, 2


class DockerAPIError(Exception):
    """The daemon answered a read with an error (status, message)."""

    def __init__(self, message, status=None):
        Exception.__init__(self, message)
        self.status = status


class NotFound(DockerAPIError):
    """The container (or other object) does not exist (HTTP 404)."""


class Unreachable(DockerAPIError):
    """The socket cannot be connected to, or the daemon stopped answering."""


class Unavailable(DockerAPIError):
    """The Engine API over a local socket is not the way to this daemon (remote DOCKER_HOST, a
    Docker context, an API version out of range): use the CLI."""


def version_tuple(text):
    try:
        return tuple(int(part) for part in str(text).split("."))
    except ValueError:
        return (0,)


def socket_path(environ=None, home=None):
    """The unix socket the Docker CLI would talk to with this environment, or Unavailable when it
    would talk to something else (a tcp:// or ssh:// DOCKER_HOST, a Docker context)."""
    environ = os.environ if environ is None else environ
    host = environ.get("DOCKER_HOST") or ""
    if host:
        if not host.startswith("unix://"):
            raise Unavailable("DOCKER_HOST is %s://..., not a unix socket" % host.split("://", 1)[0])
        return host[len("unix://"):] or DEFAULT_SOCKET
    context = environ.get("DOCKER_CONTEXT") or current_context(environ, home)
    if context and context != "default":
        raise Unavailable("the Docker context %r is in use" % context)
    return DEFAULT_SOCKET


def current_context(environ, home=None):
    """currentContext of the CLI's config.json ($DOCKER_CONFIG or ~/.docker), or None."""
    config_dir = environ.get("DOCKER_CONFIG") or os.path.join(
        home or environ.get("HOME") or os.path.expanduser("~"), ".docker")
    try:
        with open(os.path.join(config_dir, "config.json")) as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return None
    return config.get("currentContext") if isinstance(config, dict) else None


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over AF_UNIX: the host name only fills the Host header."""

    def __init__(self, path, timeout):
        http.client.HTTPConnection.__init__(self, "localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DockerAPI:
    """A client of one daemon's Engine API for reads. One connection per request: nothing is
    shared between threads, and a daemon restart between two reads costs nothing."""

    def __init__(self, path=DEFAULT_SOCKET, timeout=DEFAULT_TIMEOUT, version=None):
        self.path = path
        self.timeout = timeout
        self.version = version
        self.server_version = None

    @classmethod
    def from_env(cls, environ=None, timeout=DEFAULT_TIMEOUT, home=None):
        """The client for the daemon the Docker CLI would use, its API version negotiated.
        Unavailable when that daemon is not behind a local unix socket; Unreachable when the socket
        does not answer (missing, refused, no permission)."""
        client = cls(socket_path(environ, home), timeout=timeout)
        client.negotiate()
        return client

    def endpoint(self):
        return "unix://%s" % self.path

    # transport ----------------------------------------------------------------------------------

    def request(self, path, query=None, timeout=None, versioned=True, method="GET", body=None):
        """GET path (or `method` with a JSON `body`); return (status, headers, body bytes).
        Unreachable when the socket fails."""
        if versioned:
            path = "/v%s%s" % (self.version or MIN_API_VERSION, path)
        if query:
            path += "?" + urlencode(query)
        conn = UnixHTTPConnection(self.path, timeout=max(float(timeout or self.timeout), 0.1))
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > MAX_BODY:
                raise DockerAPIError("GET %s: the answer is %s bytes, more than %d" % (path, length, MAX_BODY),
                                     response.status)
            body = response.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise DockerAPIError("GET %s: the answer is more than %d bytes" % (path, MAX_BODY), response.status)
            return response.status, response, body
        except socket.timeout:
            raise Unreachable("GET %s on %s timed out after %ss" % (path, self.endpoint(), conn.timeout))
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable("cannot read %s from %s: %s" % (path, self.endpoint(), describe_os_error(exc)))
        finally:
            conn.close()

    def get_json(self, path, query=None, timeout=None, versioned=True, method="GET", body=None):
        status, _response, answer = self.request(path, query, timeout, versioned, method, body)
        if status >= 400:
            raise error_for(status, answer, path)
        try:
            return json.loads(answer.decode("utf-8"))
        except ValueError:
            raise DockerAPIError("%s %s returned no JSON: %r" % (method, path, answer[:200]), status)

    def negotiate(self):
        """Ask the daemon its API versions (GET /version) and pick min(its, MAX_API_VERSION)."""
        info = self.get_json("/version", timeout=min(self.timeout, 10), versioned=False)
        server = str(info.get("ApiVersion") or MIN_API_VERSION)
        version = min(version_tuple(server), version_tuple(MAX_API_VERSION))
        lowest = max(version_tuple(info.get("MinAPIVersion") or "0"), version_tuple(MIN_API_VERSION))
        if version < lowest:
            raise Unavailable("the daemon speaks API %s (minimum %s); this client speaks %s to %s"
                              % (server, info.get("MinAPIVersion"), MIN_API_VERSION, MAX_API_VERSION))
        self.version = ".".join(str(part) for part in version)
        self.server_version = str(info.get("Version") or "")
        return self.version

    # reads --------------------------------------------------------------------------------------

    def container_ids(self, labels=(), all=True, timeout=None):
        """Full IDs of the containers carrying every label ("key=value"), newest first, as
        `docker ps -q --no-trunc [-a] --filter label=…` prints them."""
        query = {"all": "1" if all else "0"}
        if labels:
            query["filters"] = json.dumps({"label": list(labels)})
        return [item.get("Id") for item in self.get_json("/containers/json", query, timeout) or []]

    def inspect_container(self, ref, timeout=None):
        """The inspect document of one container (by ID or name); NotFound when it is gone."""
        return self.get_json("/containers/%s/json" % quote(ref, safe=""), timeout=timeout)

    def info(self, timeout=None):
        """GET /info: what `docker info` prints about the daemon (Swarm, DockerRootDir, ...)."""
        return self.get_json("/info", timeout=timeout) or {}

    def networks(self, timeout=None):
        """Every network of the daemon as GET /networks lists it: the fields of `docker network
        inspect` (name, ID, driver, IPAM, internal, attachable, labels, options), without the
        attached containers."""
        return self.get_json("/networks", timeout=timeout) or []

    def volumes(self, timeout=None):
        """Every volume of the daemon as GET /volumes lists it: the fields of `docker volume
        inspect` (name, driver, labels, options, mount point)."""
        return (self.get_json("/volumes", timeout=timeout) or {}).get("Volumes") or []

    def container_logs(self, ref, tail=None, since=None, tty=None, timeout=None):
        """(stdout, stderr) text of a container's log, as `docker logs [--tail N] [--since S]`
        prints them. tty: whether the container has a TTY (its log is one raw stream then);
        None reads it from the container first."""
        if tty is None:
            tty = bool((self.inspect_container(ref, timeout).get("Config") or {}).get("Tty"))
        query = {"stdout": "1", "stderr": "1"}
        if tail is not None:
            query["tail"] = str(tail)
        if since is not None:
            query["since"] = str(since)
        path = "/containers/%s/logs" % quote(ref, safe="")
        status, _response, body = self.request(path, query, timeout)
        if status >= 400:
            raise error_for(status, body, path)
        if tty:
            return as_text(body), ""
        out, err = demultiplex(body)
        return as_text(out), as_text(err)

    def inspect_image(self, ref, timeout=None):
        """The inspect document of one image (by ID, name:tag or name@digest), as `docker image
        inspect` prints it; NotFound when the daemon has no such image."""
        return self.get_json("/images/%s/json" % quote(ref, safe="/:@"), timeout=timeout)

    # writes -------------------------------------------------------------------------------------
    def tag_image(self, image, ref, timeout=None):
        """`docker image tag IMAGE REF`: REF (repository[:tag], latest when no tag) names IMAGE."""
        repo, tag = split_ref(ref)
        path = "/images/%s/tag" % quote(image, safe="/:@")
        status, _response, body = self.request(path, {"repo": repo, "tag": tag}, timeout, method="POST")
        if status >= 400:
            raise error_for(status, body, path)

    def remove_image(self, ref, timeout=None):
        """`docker image rm REF`: the tag goes; the image goes with its last tag when no container
        uses it. NotFound for an unknown REF; HTTP 409 (DockerAPIError.status) when a container
        still uses the image it names."""
        path = "/images/%s" % quote(ref, safe="/:@")
        status, _response, body = self.request(path, timeout=timeout, method="DELETE")
        if status >= 400:
            raise error_for(status, body, path)

    def exec_run(self, ref, cmd, timeout=None):
        """Run `cmd` (argv list) in the running container as `docker exec` does (the container's
        user, environment and working directory, no TTY) and wait for it. Returns (exit code, output
        text). The command travels in the request body: it never appears in a process list on the
        host. Unreachable when the command outlives `timeout` (the socket read times out)."""
        created = self.get_json("/containers/%s/exec" % quote(ref, safe=""), method="POST", timeout=timeout,
                                body={"Cmd": list(cmd), "AttachStdout": True, "AttachStderr": True, "Tty": False})
        exec_id = quote(created.get("Id") or "", safe="")
        path = "/exec/%s/start" % exec_id
        status, _response, body = self.request(path, timeout=timeout, method="POST", body={"Detach": False, "Tty": False})
        if status >= 400:
            raise error_for(status, body, path)
        out, err = demultiplex(body)
        code = self.get_json("/exec/%s/json" % exec_id, timeout=timeout).get("ExitCode")
        return code, as_text(out + err)


def split_ref(ref):
    """(repository, tag) of an image reference without a digest: "reg:5000/a/b:v1" -> ("reg:5000/a/b",
    "v1"); "a/b" -> ("a/b", "latest")."""
    if "@" in ref:
        raise DockerAPIError("cannot tag with a digest reference: %s" % ref)
    name, _sep, last = ref.rpartition("/")
    if ":" in last:
        last, tag = last.rsplit(":", 1)
    else:
        tag = "latest"
    return (name + "/" + last) if name else last, tag


def demultiplex(data):
    """Split Docker's multiplexed stream (8-byte frame headers: stream, 0, 0, 0, size big-endian)
    into (stdout bytes, stderr bytes). A truncated last frame keeps what arrived."""
    streams = {STDOUT: [], STDERR: []}
    offset = 0
    while offset + 8 <= len(data):
        kind, size = struct.unpack(">BxxxL", data[offset:offset + 8])
        offset += 8
        chunk = data[offset:offset + size]
        offset += size
        streams.get(kind, streams[STDOUT]).append(chunk)
    return b"".join(streams[STDOUT]), b"".join(streams[STDERR])


def as_text(data):
    """Bytes as the CLI's output reads in Python: UTF-8 (bad bytes replaced), universal newlines."""
    return data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")


def error_for(status, body, path):
    try:
        message = json.loads(body.decode("utf-8")).get("message")
    except (ValueError, AttributeError):
        message = None
    message = (message or body.decode("utf-8", "replace").strip() or "HTTP %d" % status)[:2000]
    if status == 404:
        return NotFound(message, status)
    if status == 400 and "API version" in message:
        return Unavailable(message, status)
    return DockerAPIError("%s: %s (HTTP %d)" % (path, message, status), status)


def describe_os_error(exc):
    if isinstance(exc, PermissionError):
        return "permission denied (the user is not root nor in the docker group)"
    if isinstance(exc, FileNotFoundError):
        return "no such socket"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (the daemon is not running)"
    return str(exc) or exc.__class__.__name__
