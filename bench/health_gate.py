#!/usr/bin/env python3
"""Benchmark: one concurrent health gate (vpsops.deploy.health_wait) against the plain Ansible way,
an `ansible.builtin.uri` task with `until`/`retries` per endpoint, one after another.

Both gate the same N HTTP endpoints on loopback, each answering 503 until its own moment (spread
over the first few seconds after the play starts), then 200 {"status": "ok"}. Each round runs both
playbooks; the ratio of their medians is printed. Run: .venv/bin/python bench/health_gate.py [N] [ROUNDS]
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAYBOOK_BIN = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
READY_SPREAD = 4.0  # endpoint i becomes ready at i/N * READY_SPREAD seconds after the epoch file is written


class Endpoints:
    """N HTTP servers on loopback; each turns healthy at its own offset from a shared start time."""

    def __init__(self, count):
        self.count = count
        self.start = None
        self.servers = []
        for index in range(count):
            server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler(index))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append(server)

    def handler(self, index):
        endpoints = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                return

            def do_GET(self):  # noqa: N802
                ready = endpoints.start is not None and \
                    time.monotonic() - endpoints.start >= READY_SPREAD * (index + 1) / endpoints.count
                body = json.dumps({"status": "ok" if ready else "starting"}).encode()
                self.send_response(200 if ready else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def urls(self):
        return ["http://127.0.0.1:%d/api/health" % s.server_port for s in self.servers]

    def close(self):
        for server in self.servers:
            server.shutdown()
            server.server_close()


def playbooks(urls, tmp):
    gate = [{"name": "gate", "hosts": "localhost", "gather_facts": False, "tasks": [{
        "name": "Wait for every endpoint at once",
        "vpsops.deploy.health_wait": {
            "timeout": 60, "interval": 0.5, "max_interval": 1,
            "checks": [{"name": "svc%d" % i, "type": "http", "url": u, "json": {"status": "ok"}}
                       for i, u in enumerate(urls)]}}]}]
    plain = [{"name": "plain", "hosts": "localhost", "gather_facts": False, "tasks": [{
        "name": "Wait for each endpoint in turn",
        "ansible.builtin.uri": {"url": "{{ item }}", "return_content": True, "status_code": [200, 503]},
        "register": "r", "until": "r.status == 200 and r.json.status == 'ok'",
        "retries": 120, "delay": 0.5, "loop": urls}]}]
    paths = {}
    for name, play in (("health_wait", gate), ("uri_until", plain)):
        paths[name] = os.path.join(tmp, name + ".yml")
        with open(paths[name], "w") as fh:
            json.dump(play, fh)
    return paths


def timed(endpoints, playbook):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    argv = [PLAYBOOK_BIN, "-i", "localhost,", "-c", "local", "-e",
            "ansible_python_interpreter=%s" % sys.executable, playbook]
    endpoints.start = time.monotonic()
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    elapsed = time.monotonic() - started
    endpoints.start = None
    if proc.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (playbook, proc.stdout[-3000:]))
    return elapsed


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    endpoints = Endpoints(count)
    results = {"health_wait": [], "uri_until": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            paths = playbooks(endpoints.urls(), tmp)
            for _round in range(rounds):
                for name, path in paths.items():
                    results[name].append(timed(endpoints, path))
    finally:
        endpoints.close()
    gate = statistics.median(results["health_wait"])
    plain = statistics.median(results["uri_until"])
    print("health gate over %d endpoints ready within %.0f s, %d rounds (median seconds)" % (count, READY_SPREAD, rounds))
    print("  uri + until, one after another: %6.2f s  %s" % (plain, " ".join("%.2f" % t for t in results["uri_until"])))
    print("  vpsops.deploy.health_wait:      %6.2f s  %s" % (gate, " ".join("%.2f" % t for t in results["health_wait"])))
    print("  ratio (uri_until / health_wait): %.2fx" % (plain / gate))


if __name__ == "__main__":
    main()
