#!/usr/bin/env python3
"""Benchmark: reads of container state through the Docker CLI against the Engine API over the socket.

It starts its own compose project (vpsops-bench-reads: CONTAINERS containers of the lab's base
image, each with a healthcheck and a few log lines), then times in the same run, alternating the
two ways call by call, what vpsops.deploy reads (_compose.Docker, api=False for the CLI):
  - one container's state (the read of a `container` check on every probe round),
  - one gate round: the state of every container of the project,
  - the project's containers (ps + inspect: compose_phase, releases, plan),
  - the last 20 log lines of a container (the log tails a failed rollout reports),
and prints the medians per call and the ratio CLI / API. Then it removes the project.

Run: .venv/bin/python bench/docker_reads.py [CALLS] [CONTAINERS]   e.g. 50 10
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".lab", "collections"))

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Docker  # noqa: E402

PROJECT = "vpsops-bench-reads"
IMAGE = "vpsops-lab/base:bookworm"
COMPOSE = """
name: %(project)s
services:
  app:
    image: %(image)s
    init: true
    stop_grace_period: 1s
    command: ["sh", "-c", "for i in $$(seq 1 50); do echo line $$i; done; echo warn >&2; exec sleep 3600"]
    deploy: {replicas: %(containers)d}
    # Healthchecks cost CPU (a runc exec each); one every 30 s is enough to have a Health state.
    healthcheck: {test: ["CMD", "true"], interval: 30s, timeout: 5s, retries: 3, start_period: 1s}
"""


def timed(call, calls):
    """Seconds per call of call(), each call timed alone."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def main():
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    containers = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    work = tempfile.mkdtemp(prefix="vpsops-bench-reads-")
    path = os.path.join(work, "compose.yml")
    with open(path, "w") as handle:
        handle.write(COMPOSE % {"project": PROJECT, "image": IMAGE, "containers": containers})
    compose = ["docker", "compose", "-p", PROJECT, "-f", path]
    # A few at a time: Docker 20.10 can deadlock when many containers of one network stop at once.
    env = dict(os.environ, COMPOSE_PARALLEL_LIMIT="4")
    try:
        subprocess.run(compose + ["up", "-d", "--wait", "--wait-timeout", "120"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        api, cli = Docker(), Docker(api=False)
        names = [c["name"] for c in api.project_containers(PROJECT)]
        one = names[0]
        cases = [
            ("state of one container (inspect)", lambda d: d.container_state(one), calls),
            ("gate round: state of %d containers" % len(names), lambda d: [d.container_state(n) for n in names],
             max(calls // 5, 3)),
            ("project containers (ps + inspect)", lambda d: d.project_containers(PROJECT), max(calls // 5, 3)),
            ("last 20 log lines", lambda d: d.container_logs(one, tail=20), calls),
        ]
        if api.engine_api() is None:
            raise SystemExit("the Engine API is not reachable here (%s): nothing to compare" % api.reads)
        for _label, read, _n in cases:
            assert read(api) == read(cli), "the API and the CLI disagree: %s" % _label
        print("reads: %s; CLI: %s; %d containers, Docker %s"
              % (api.reads, cli.cli, len(names), cli.run(["version", "--format", "{{.Server.Version}}"]).strip()))
        print("| read | calls | CLI (ms per call) | API (ms per call) | CLI / API |")
        print("| --- | --- | --- | --- | --- |")
        for label, read, n in cases:
            by_cli, by_api = [], []
            # Alternate in blocks of 5 so both ways see the same machine load.
            for _ in range(0, n, 5):
                by_cli += timed(lambda: read(cli), min(5, n - len(by_cli)))
                by_api += timed(lambda: read(api), min(5, n - len(by_api)))
            c_ms, a_ms = statistics.median(by_cli) * 1000, statistics.median(by_api) * 1000
            print("| %s | %d | %.2f | %.3f | %.0fx |" % (label, n, c_ms, a_ms, c_ms / a_ms))
    finally:
        subprocess.run(compose + ["down", "-t", "1", "--remove-orphans"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
