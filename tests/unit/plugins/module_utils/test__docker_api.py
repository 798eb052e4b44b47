# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Engine API client (_docker_api) and the reads of _compose.Docker that use it.

fixtures/docker_reads.json holds every container read done once through the Engine API and once
through the Docker CLI against the lab's Docker 20.10 (fixtures/record_docker_reads.py records it):
replaying both, each read must return the same value either way. The transport is tested against
a real HTTP server on a unix socket that answers with the recorded bodies."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import os
import socket
import socketserver
import struct
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlencode

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _docker_api as api_mod
from ansible_collections.vpsops.deploy.plugins.module_utils import _preflight, _probes, _rollout
from ansible_collections.vpsops.deploy.plugins.module_utils._compose import (
    DaemonDown, Docker, DockerError, NoSuchContainer, plain_cli,
)

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "docker_reads.json")
with open(FIXTURE) as _handle:
    RECORDED = json.load(_handle)
PROJECT = RECORDED["project"]


def body_of(answer):
    return base64.b64decode(answer["body"]) if answer["base64"] else answer["body"].encode("utf-8")


def request_key(version, path, query=None, versioned=True):
    return ("/v%s" % version if versioned else "") + path + ("?" + urlencode(query) if query else "")


class ReplayAPI(api_mod.DockerAPI):
    """The Engine API client with its transport replaced by the recorded answers."""

    def __init__(self, answers=None):
        api_mod.DockerAPI.__init__(self, path="/recorded.sock")
        self.answers = RECORDED["api"] if answers is None else answers
        self.asked = []
        self.negotiate()

    def request(self, path, query=None, timeout=None, versioned=True, method="GET", body=None):
        key = request_key(self.version, path, query, versioned)
        self.asked.append(key)
        if key not in self.answers:
            raise AssertionError("no recorded API answer for %s" % key)
        return self.answers[key]["status"], None, body_of(self.answers[key])


class ReplayRunner:
    """The runner with `docker ARGS` answered from the recorded CLI output."""

    def __init__(self):
        self.calls = []

    def __call__(self, argv, timeout=None):
        self.calls.append(argv)
        key = json.dumps(argv[1:])
        if key not in RECORDED["cli"]:
            raise AssertionError("no recorded CLI answer for %s" % key)
        return tuple(RECORDED["cli"][key])


def read(docker, method, args, kwargs):
    try:
        if method == "service_containers":
            return _rollout.service_containers(docker, *args, **kwargs)
        if method == "running_containers":
            return _preflight.running_containers(docker)
        return getattr(docker, method)(*args, **kwargs)
    except DockerError as exc:
        return {"error": type(exc).__name__}


def both():
    runner = ReplayRunner()
    return Docker(api=ReplayAPI()), Docker(api=False, runner=runner), runner


def recorded_read(label):
    return [r for r in RECORDED["reads"] if r["label"] == label][0]


@pytest.mark.parametrize("case", RECORDED["reads"], ids=[r["label"] for r in RECORDED["reads"]])
def test_the_api_and_the_cli_give_the_same_value(case):
    with_api, with_cli, runner = both()
    from_api = read(with_api, case["method"], case["args"], case["kwargs"])
    from_cli = read(with_cli, case["method"], case["args"], case["kwargs"])
    assert from_api == from_cli
    assert from_api not in ([], "", ("", ""), None)
    assert with_api.engine_api().asked and runner.calls
    # The API path never started a docker process; the CLI path asked no API.
    assert with_cli.engine_api() is None


def test_the_recorded_reads_cover_every_state_the_gates_judge():
    with_api = Docker(api=ReplayAPI())
    found = dict((c["name"], c) for c in with_api.project_containers(PROJECT))
    assert "%s-oneoff" % PROJECT not in found
    assert sorted(found) == ["%s-%s" % (PROJECT, n) for n in
                             ("exits-1", "plain-1", "restarts-1", "sick-1", "tty-1", "web-1", "web-2")]
    assert found["%s-web-1" % PROJECT]["health"] == "healthy" and found["%s-web-2" % PROJECT]["number"] == "2"
    assert found["%s-sick-1" % PROJECT]["health"] == "unhealthy"
    assert found["%s-plain-1" % PROJECT]["health"] is None and found["%s-plain-1" % PROJECT]["state"] == "running"
    state, restarts, created = with_api.container_state("%s-restarts-1" % PROJECT)
    assert (state["Status"], state["ExitCode"], restarts) == ("exited", 1, 2) and created.endswith("Z")
    state, restarts, _created = with_api.container_state("%s-exits-1" % PROJECT)
    assert (state["Status"], state["ExitCode"], restarts) == ("exited", 3, 0)
    out, err = with_api.container_logs("%s-web-1" % PROJECT, tail=3)
    assert (out, err) == ("out-line-2\n", "err-line-1\nerr-line-2\n")
    # A TTY has one stream; the CLI's universal newlines turn its \r\n into \n.
    assert with_api.container_logs("%s-tty-1" % PROJECT, tail=3) == ("tty-line-1\ntty-err\ntty-line-2\n", "")
    ports = [c for c in _preflight.running_containers(with_api) if c["name"] == "%s-plain-1" % PROJECT][0]
    assert [(ip, proto) for ip, _port, proto in ports["bindings"]] == [("127.0.0.1", "tcp"), ("127.0.0.1", "udp")]


def test_a_container_gone_between_ps_and_inspect_is_left_out():
    case = recorded_read("inspect, one id gone")
    for docker in both()[:2]:
        found = docker.inspect_containers(*case["args"])
        assert [d["Id"] for d in found] == case["args"][0][:2]


@pytest.mark.parametrize("method, args", [("container_state", ["%s-nosuch-1" % PROJECT]),
                                          ("container_logs", ["%s-nosuch-1" % PROJECT])])
def test_a_missing_container_is_the_same_error_either_way(method, args):
    kwargs = {"tail": 3} if method == "container_logs" else {}
    messages = []
    for docker in both()[:2]:
        with pytest.raises(NoSuchContainer) as info:
            getattr(docker, method)(*args, **kwargs)
        messages.append(str(info.value))
    assert all("No such container: %s-nosuch-1" % PROJECT in m for m in messages), messages


@pytest.mark.parametrize("container, spec, outcome", [
    ("web-1", {}, "healthy"),
    ("sick-1", {}, "is unhealthy"),
    ("exits-1", {}, "fatal: container vpsops-apirec-exits-1 has exited with exit code 3"),
    ("restarts-1", {"since": 1}, "fatal: container vpsops-apirec-restarts-1 has exited with exit code 1"),
    ("web-1", {"type": "log", "pattern": "err-line-2"}, "err-line-2"),
    ("exits-1", {"type": "log", "pattern": "ready", "fail_pattern": "boom"}, "fatal: log of vpsops-apirec-exits-1 shows /boom/: boom"),
    ("tty-1", {"type": "log", "pattern": "tty-line-2"}, "tty-line-2"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_probes_judge_the_same_over_the_api_and_the_cli(container, spec, outcome):
    spec = dict({"type": "container", "container": "%s-%s" % (PROJECT, container)}, **spec)
    results = []
    for docker in both()[:2]:
        probe = _probes.build_probes([dict(spec)])[0]
        probe.client = docker
        try:
            results.append(probe.probe(5))
        except _probes.FatalProbeError as exc:
            results.append("fatal: %s" % exc)
        except Exception as exc:  # a not-ready probe raises; the engine records its text
            results.append("not ready: %s" % exc)
    assert results[0] == results[1]
    assert outcome in results[0]


# Choosing the API or the CLI ----------------------------------------------------------------------

@pytest.mark.parametrize("environ, expected", [
    ({}, "/var/run/docker.sock"),
    ({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}, "/run/user/1000/docker.sock"),
    ({"DOCKER_HOST": "unix://"}, "/var/run/docker.sock"),
    ({"DOCKER_HOST": "unix:///x.sock", "DOCKER_CONTEXT": "remote"}, "/x.sock"),  # DOCKER_HOST wins, as in the CLI
    ({"DOCKER_CONTEXT": "default"}, "/var/run/docker.sock"),
    ({"DOCKER_HOST": "tcp://10.0.0.5:2376"}, api_mod.Unavailable),
    ({"DOCKER_HOST": "ssh://deploy@vps"}, api_mod.Unavailable),
    ({"DOCKER_CONTEXT": "remote"}, api_mod.Unavailable),
    ({"config": {"currentContext": "remote"}}, api_mod.Unavailable),
    ({"config": {"currentContext": "default", "auths": {}}}, "/var/run/docker.sock"),
    ({"config": "not json"}, "/var/run/docker.sock"),
], ids=["default", "unix", "unix-empty", "host-over-context", "context-default", "tcp", "ssh", "context",
        "config-context", "config-default", "config-broken"])
def test_the_socket_is_the_one_the_cli_would_use(tmp_path, environ, expected):
    environ = dict(environ, HOME=str(tmp_path / "home"))
    config = environ.pop("config", None)
    if config is not None:
        (tmp_path / "cfg").mkdir()
        (tmp_path / "cfg" / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
        environ["DOCKER_CONFIG"] = str(tmp_path / "cfg")
    if isinstance(expected, str):
        assert api_mod.socket_path(environ) == expected
    else:
        with pytest.raises(expected):
            api_mod.socket_path(environ)


def script(path, text):
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def test_only_the_plain_docker_binary_is_bypassed(tmp_path):
    (tmp_path / "bin").mkdir()
    binary = tmp_path / "bin" / "docker"
    binary.write_bytes(b"\x7fELF\x02\x01")
    binary.chmod(0o755)
    assert plain_cli(str(binary))
    # A wrapper may set DOCKER_HOST or a context of its own: reads must go through it.
    (tmp_path / "wrap").mkdir()
    assert not plain_cli(script(tmp_path / "wrap" / "docker", "#!/bin/sh\nDOCKER_HOST=tcp://x exec docker \"$@\"\n"))
    assert not plain_cli(script(tmp_path / "docker-down", "#!/bin/sh\nexec docker \"$@\"\n"))
    assert not plain_cli(str(tmp_path / "nowhere" / "docker"))


def test_a_runner_given_by_the_caller_keeps_reads_on_the_cli():
    docker = Docker(runner=ReplayRunner())
    assert docker.engine_api() is None and docker.reads == "cli: the caller gave its own runner"


def test_the_choice_is_made_once_per_docker_object(monkeypatch):
    made = []

    def from_env(cls, environ=None, timeout=None, home=None):
        made.append(timeout)
        return ReplayAPI()

    monkeypatch.setattr(api_mod.DockerAPI, "from_env", classmethod(from_env))
    monkeypatch.setattr("ansible_collections.vpsops.deploy.plugins.module_utils._compose.plain_cli", lambda cli: True)
    docker = Docker()
    docker.project_containers(PROJECT)
    docker.container_state("%s-web-1" % PROJECT)
    assert made == [30] and docker.reads.startswith("api unix:///recorded.sock (API 1.41)")
    Docker().container_state("%s-web-1" % PROJECT)
    assert len(made) == 2


def test_an_unreachable_socket_falls_back_to_the_cli(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", "unix://%s" % (tmp_path / "nothing.sock"))
    monkeypatch.setattr("ansible_collections.vpsops.deploy.plugins.module_utils._compose.plain_cli", lambda cli: True)
    docker = Docker()
    assert docker.engine_api() is None
    assert docker.reads.startswith("cli: cannot read /version from unix://%s" % (tmp_path / "nothing.sock"))
    assert "no such socket" in docker.reads


def test_a_daemon_that_stops_answering_later_is_daemon_down(tmp_path):
    docker = Docker(api=api_mod.DockerAPI(path=str(tmp_path / "gone.sock"), version="1.41"))
    with pytest.raises(DaemonDown) as info:
        docker.container_state("web")
    assert "Docker daemon is not reachable through unix://%s" % (tmp_path / "gone.sock") in str(info.value)


@pytest.mark.parametrize("server, minimum, chosen", [
    ("1.41", "1.12", "1.41"),      # Docker 20.10
    ("1.52", "1.44", "1.47"),      # Docker 29: the cap, above its minimum
    ("1.30", "1.12", "1.30"),
    ("1.20", "1.12", api_mod.Unavailable),
    ("1.60", "1.50", api_mod.Unavailable),
])
def test_the_api_version_is_negotiated(server, minimum, chosen):
    answers = {"/version": {"status": 200, "base64": False,
                            "body": json.dumps({"ApiVersion": server, "MinAPIVersion": minimum})}}
    if isinstance(chosen, str):
        assert ReplayAPI(answers).version == chosen
    else:
        with pytest.raises(chosen):
            ReplayAPI(answers)


# The stream format -------------------------------------------------------------------------------

def frame(kind, data):
    return struct.pack(">BxxxL", kind, len(data)) + data


@pytest.mark.parametrize("data, out, err", [
    (b"", b"", b""),
    (frame(1, b"a\n") + frame(2, b"b\n") + frame(1, b"c\n"), b"a\nc\n", b"b\n"),
    (frame(1, b"x" * 70000), b"x" * 70000, b""),
    (frame(2, b"only err"), b"", b"only err"),
    (frame(1, b"whole\n") + frame(2, b"cut short")[:-5], b"whole\n", b"cut "),
    (frame(1, b"a") + b"\x01\x00\x00", b"a", b""),
], ids=["empty", "interleaved", "large", "stderr-only", "truncated-frame", "truncated-header"])
def test_demultiplex(data, out, err):
    assert api_mod.demultiplex(data) == (out, err)


def test_log_text_reads_as_the_cli_output_does():
    assert api_mod.as_text(b"a\r\nb\rc\n\xff") == "a\nb\nc\n\ufffd"


# The transport: a real HTTP server on a unix socket ---------------------------------------------

class Daemon(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve(path, answers, chunked_logs=True, hang=False):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if hang:
                threading.Event().wait(5)
                return
            key = self.path
            answer = answers.get(key) or answers.get(key.split("/", 2)[-1] if key.startswith("/v") else key)
            if answer is None:
                answer = {"status": 404, "base64": False, "body": json.dumps({"message": "page not found"})}
            body = body_of(answer)
            self.send_response(answer["status"])
            if chunked_logs and "/logs" in key:
                self.send_header("Content-Type", "application/vnd.docker.raw-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(body), 7):
                    piece = body[start:start + 7]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

        def address_string(self):
            return "unix"

    server = Daemon(path, Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def daemon(tmp_path):
    servers = []

    def start(answers=None, **kwargs):
        path = str(tmp_path / ("d%d.sock" % len(servers)))
        servers.append(serve(path, RECORDED["api"] if answers is None else answers, **kwargs))
        return path

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_reads_over_a_unix_socket_match_the_recording(daemon):
    path = daemon()
    client = api_mod.DockerAPI.from_env({"DOCKER_HOST": "unix://%s" % path}, timeout=5)
    assert client.version == "1.41" and client.endpoint() == "unix://%s" % path
    over_socket, replayed = Docker(api=client), Docker(api=ReplayAPI())
    for case in RECORDED["reads"]:
        assert read(over_socket, case["method"], case["args"], case["kwargs"]) == \
            read(replayed, case["method"], case["args"], case["kwargs"]), case["label"]


def test_a_daemon_that_does_not_answer_is_bounded(daemon):
    client = api_mod.DockerAPI(path=daemon(hang=True), timeout=0.3, version="1.41")
    with pytest.raises(api_mod.Unreachable) as info:
        client.inspect_container("web")
    assert "timed out after 0.3s" in str(info.value)


def test_an_error_answer_is_a_readable_error(daemon):
    failed = {"status": 500, "base64": False, "body": json.dumps({"message": "driver failed"})}
    answers = {"/v1.41/containers/web/json": failed}
    client = api_mod.DockerAPI(path=daemon(answers), version="1.41")
    with pytest.raises(api_mod.DockerAPIError) as info:
        client.inspect_container("web")
    assert info.value.status == 500 and "driver failed (HTTP 500)" in str(info.value)
    with pytest.raises(DockerError) as info:
        Docker(api=client).container_state("web")
    assert str(info.value).startswith("docker inspect failed (HTTP 500)")


def test_a_socket_without_permission_is_unreachable(monkeypatch, tmp_path):
    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(api_mod.UnixHTTPConnection, "connect", refuse)
    with pytest.raises(api_mod.Unreachable) as info:
        api_mod.DockerAPI.from_env({"DOCKER_HOST": "unix://%s" % (tmp_path / "s.sock")})
    assert "permission denied" in str(info.value)


def test_the_socket_is_a_real_af_unix_connection(tmp_path):
    """No TCP anywhere: the client connects the path itself."""
    path = str(tmp_path / "raw.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    seen = []

    def answer():
        conn, _addr = listener.accept()
        seen.append(conn.recv(4096))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]")
        conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        assert api_mod.DockerAPI(path=path, timeout=5, version="1.41").container_ids(["a=b"], all=False) == []
    finally:
        thread.join(5)
        listener.close()
    request_line = seen[0].split(b"\r\n", 1)[0]
    assert request_line == (b"GET /v1.41/containers/json?all=0&filters=%7B%22label%22%3A+%5B%22a%3Db%22%5D%7D "
                            b"HTTP/1.1")


def test_a_containers_own_healthcheck_never_runs_through_the_cli():
    # Its command may hold a secret (compose interpolates it): on the CLI it would be argv.
    runner = ReplayRunner()
    assert Docker(api=False, runner=runner).own_healthcheck("%s-web-1" % PROJECT, timeout=5) is None
    assert runner.calls == []


def test_the_daemon_version_is_the_negotiated_answer_not_a_process():
    api = ReplayAPI()
    api.server_version = "20.10.24"

    def runner(argv, timeout=None):
        raise AssertionError("ran %s" % argv)

    assert Docker(api=api, runner=runner).server_version() == (0, "20.10.24", "")
    assert Docker(api=False, runner=lambda argv, timeout=None: (0, "24.0.7\n", "")).server_version() == (0, "24.0.7", "")
