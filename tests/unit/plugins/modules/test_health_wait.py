# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""health_wait's result as the controller receives it: the module run as its own process, the way
the managed host runs it, with secrets in the checks."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

COLLECTIONS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    __import__("ansible_collections.vpsops.deploy", fromlist=["x"]).__path__[0])))))
DOCUMENTED = {"ready", "attempts", "first_success_after", "ready_after", "last_error", "fatal", "timeline"}
HEADER_SECRET = "Bearer hdr-Secret-7f3a"
REDIS_SECRET = "redis-Secret-91c2"
PG_SECRET = "pg-Secret-c0de"


def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture(scope="module")
def ok_url():
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            return

        def do_GET(self):  # noqa: N802
            body = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d/health" % server.server_port
    server.shutdown()


def run_module(tmp_path, args):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([COLLECTIONS] + sys.path))
    proc = subprocess.run([sys.executable, "-m", "ansible_collections.vpsops.deploy.plugins.modules.health_wait",
                           str(path)], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.stdout.strip(), proc.stderr
    return proc.stdout, json.loads(proc.stdout.strip().splitlines()[-1])


def test_result_holds_the_documented_keys_and_an_invocation_without_unset_options(tmp_path, ok_url):
    out, result = run_module(tmp_path, {"interval": 0.05, "checks": [
        {"name": "web", "type": "http", "url": ok_url, "json": {"status": "ok"}},
        {"name": "port", "type": "tcp", "port": closed_port()}], "timeout": 0.5})
    assert result["failed"] and result["not_ready"] == ["port"]
    assert set(result["checks"]) == {"web", "port"}
    for check in result["checks"].values():
        assert set(check) == DOCUMENTED
    assert result["checks"]["web"]["ready"] is True and result["checks"]["web"]["timeline"][-1]["ok"] is True
    assert "refused" in result["checks"]["port"]["last_error"]
    web, port = result["invocation"]["module_args"]["checks"]
    assert web["url"] == ok_url and web["json"] == {"status": "ok"} and web["method"] == "GET"
    assert None not in web.values() and None not in port.values()
    assert "since" not in result["invocation"]["module_args"]
    assert result["invocation"]["module_args"]["timeout"] == 0.5


def test_secrets_of_the_checks_never_appear_in_the_result(tmp_path, ok_url):
    out, result = run_module(tmp_path, {"timeout": 0.5, "interval": 0.05, "checks": [
        {"name": "web", "type": "http", "url": ok_url, "headers": {"Authorization": HEADER_SECRET}},
        {"name": "cache", "type": "redis", "port": closed_port(), "password": REDIS_SECRET},
        {"name": "db", "type": "postgres", "port": closed_port(), "db": "app", "login_user": "app",
         "login_password": PG_SECRET}]})
    for secret in (HEADER_SECRET, REDIS_SECRET, PG_SECRET):
        assert secret not in out
    checks = dict((c["name"], c) for c in result["invocation"]["module_args"]["checks"])
    assert checks["cache"]["password"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert checks["db"]["login_password"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert checks["web"]["headers"] == {"Authorization": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"}


def test_a_bad_argument_fails_with_the_same_invocation(tmp_path):
    out, result = run_module(tmp_path, {"timeout": 0, "checks": [
        {"type": "redis", "port": 1, "password": REDIS_SECRET}]})
    assert result["failed"] and "timeout must be between" in result["msg"]
    assert REDIS_SECRET not in out
    assert result["invocation"]["module_args"]["checks"][0]["password"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
