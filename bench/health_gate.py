#!/usr/bin/env python3
"""Benchmark: one concurrent health gate (vpsops.deploy.health_wait) against the plain Ansible way.

For N local HTTP endpoints, each turning healthy at a random moment between 0.2 and 1.0 s after the
gate's first request, it measures ansible-playbook runs minus the same run with a no-op task
(`ansible.builtin.ping`, which pays the same module start-up):
  (a) vpsops.deploy.health_wait over all endpoints at once,
  (b) ansible.builtin.uri with until / retries: 10 / delay: 1 looped over the endpoints (what users
      write today),
  (c) the slowest endpoint's own ready time: the physical limit.
It prints a/c and b/a for N = 10, 50, 200. Then fail fast: a container that exits 1 s after start,
gated with a 120 s timeout and running_for 10 s (so the gate cannot pass first, however fast the
playbook starts); it prints how long after the container's start the gate failed.

Run: .venv/bin/python bench/health_gate.py [SIZES] [ROUNDS]   e.g. 10,50,200 2
"""

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAYBOOK_BIN = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")


class Endpoints:
    """N HTTP servers on loopback; the clock starts at the first request any of them gets."""

    def __init__(self, count, seed):
        rng = random.Random(seed)
        self.ready_at = [rng.uniform(0.2, 1.0) for _ in range(count)]
        self.start = None
        self.lock = threading.Lock()
        self.servers = []
        for index in range(count):
            server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler(index))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append(server)

    def handler(self, index):
        endpoints = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                return

            def do_GET(self):  # noqa: N802
                now = time.monotonic()
                with endpoints.lock:
                    if endpoints.start is None:
                        endpoints.start = now
                ready = now - endpoints.start >= endpoints.ready_at[index]
                body = json.dumps({"status": "ok" if ready else "starting"}).encode()
                self.send_response(200 if ready else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def urls(self):
        return ["http://127.0.0.1:%d/api/health" % s.server_port for s in self.servers]

    def reset(self):
        self.start = None

    def close(self):
        for server in self.servers:
            server.shutdown()
            server.server_close()


def play(name, task):
    return [{"name": name, "hosts": "localhost", "gather_facts": False, "tasks": [task]}]


def write_playbooks(urls, tmp):
    plays = {
        "noop": play("noop", {"name": "No-op with the same module start-up", "ansible.builtin.ping": {}}),
        "health_wait": play("gate", {
            "name": "Wait for every endpoint at once",
            "vpsops.deploy.health_wait": {
                "timeout": 120, "interval": 0.05, "max_interval": 0.1,
                "checks": [{"name": "svc%d" % i, "type": "http", "url": u, "json": {"status": "ok"}}
                           for i, u in enumerate(urls)]}}),
        "uri_until": play("plain", {
            "name": "Wait for each endpoint in turn",
            "ansible.builtin.uri": {"url": "{{ item }}", "return_content": True, "status_code": [200, 503]},
            "register": "r", "until": "r.status == 200 and r.json.status == 'ok'",
            "retries": 10, "delay": 1, "loop": urls}),
    }
    paths = {}
    for name, content in plays.items():
        paths[name] = os.path.join(tmp, name + ".yml")
        with open(paths[name], "w") as fh:
            json.dump(content, fh)
    return paths


def run_playbook(path, expect_ok=True):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    argv = [PLAYBOOK_BIN, "-i", "localhost,", "-c", "local", "-e",
            "ansible_python_interpreter=%s" % sys.executable, path]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    elapsed = time.monotonic() - started
    if (proc.returncode == 0) != expect_ok:
        raise SystemExit("%s: rc=%d\n%s" % (path, proc.returncode, proc.stdout[-3000:]))
    return elapsed


def measure_size(count, rounds, seed):
    endpoints = Endpoints(count, seed)
    times = {"noop": [], "health_wait": [], "uri_until": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_playbooks(endpoints.urls(), tmp)
            for _round in range(rounds):
                for name, path in paths.items():
                    endpoints.reset()
                    times[name].append(run_playbook(path))
    finally:
        endpoints.close()
    noop = statistics.median(times["noop"])
    gate = statistics.median(times["health_wait"]) - noop
    plain = statistics.median(times["uri_until"]) - noop
    limit = max(endpoints.ready_at)
    print("N=%-4d limit %.2fs | health_wait %.2fs (%.2fx the limit) | uri+until %.2fs | uri/health_wait %.1fx"
          % (count, limit, gate, gate / limit, plain, plain / gate), flush=True)
    return gate / limit, plain / gate


def measure_fail_fast(tmp):
    name = "vpsops-bench-failfast"
    path = os.path.join(tmp, "failfast.yml")
    with open(path, "w") as fh:
        # running_for: the gate cannot pass before the container has run 10 s, whenever the playbook
        # reaches it; the container exits after 1 s, so the gate must fail fast.
        json.dump(play("failfast", {"name": "Gate a container that exits", "vpsops.deploy.health_wait": {
            "timeout": 120, "interval": 0.2,
            "checks": [{"type": "container", "container": name, "running_for": 10}]}}), fh)
    noop_path = os.path.join(tmp, "noop.yml")
    with open(noop_path, "w") as fh:
        json.dump(play("noop", {"name": "No-op", "ansible.builtin.ping": {}}), fh)
    noop = run_playbook(noop_path)
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    try:
        started = time.monotonic()
        subprocess.run(["docker", "run", "-d", "--name", name, "vpsops-lab/base:bookworm", "sh", "-c",
                        "sleep 1; exit 1"], capture_output=True, check=True)
        run_playbook(path, expect_ok=False)
        total = time.monotonic() - started
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    print("fail fast: container exits 1 s after start, timeout 120 s: gate failed %.2fs after the start "
          "(%.2fs without playbook start-up)" % (total, total - noop), flush=True)


def main():
    sizes = [int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "10,50,200").split(",")]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    print("health gate: endpoints ready at random in 0.2-1.0 s; %d round(s), medians, minus a no-op playbook" % rounds)
    for count in sizes:
        measure_size(count, rounds, seed=count)
    with tempfile.TemporaryDirectory() as tmp:
        measure_fail_fast(tmp)


if __name__ == "__main__":
    main()
