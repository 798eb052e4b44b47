#!/usr/bin/env python3
"""Benchmark: a phase whose services wait for one another healthy (`depends_on: condition:
service_healthy`), on the lab's Docker, from nothing each round:
  (a) plain: `docker compose up -d --wait` of the chain (what an operator runs by hand: compose
      starts each service once Docker calls its dependency healthy, one `interval` after its start);
  (b) ours, one `up`: the phase engine (_phase.run_phase) without the release's `waits`, as a phase
      ran before it brought such services up in steps (compose still waits for Docker inside `up`);
  (c) ours: the phase engine with the `waits` the release records: the services come up in steps,
      each dependency proven by its own healthcheck at once.
The chain: store <- api <- edge (edge also waits for store started), healthchecks every INTERVAL s
(Docker's default is 30 s; 10 s is common in compose files). Prints a/c and b/c.

Run (lab up): .venv/bin/python bench/depends_healthy.py [--interval 10] [--rounds 2]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".lab", "collections"))

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Compose, Docker  # noqa: E402
from ansible_collections.vpsops.deploy.plugins.module_utils._phase import run_phase  # noqa: E402

PROJECT = "vpsops-bench-depends"
SERVICE = """
  %(name)s:
    image: vpsops-lab/redis:7
    command: ["redis-server", "--save", "", "--appendonly", "no"]
    healthcheck: {test: ["CMD", "redis-cli", "ping"], interval: %(interval)ss, timeout: 5s, retries: 3}
"""
WAITS = {"api": {"store": "service_healthy"}, "edge": {"api": "service_healthy", "store": "service_started"}}
SERVICES = ["api", "edge", "store"]


def compose_text(interval):
    text = "services:"
    for name in ("store", "api", "edge"):
        text += SERVICE % {"name": name, "interval": interval}
        deps = WAITS.get(name)
        if deps:
            text += "    depends_on: {%s}\n" % ", ".join("%s: {condition: %s}" % (d, c) for d, c in sorted(deps.items()))
    return text


def down(path):
    subprocess.run(["docker", "compose", "-p", PROJECT, "-f", path, "down", "-t", "0"], check=True,
                   capture_output=True)


def timed(func):
    start = time.monotonic()
    func()
    return time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "compose.yml")
        with open(path, "w") as handle:
            handle.write(compose_text(args.interval))
        compose = Compose(Docker(), PROJECT, [path], project_dir=tmp)
        runs = {"a": [], "b": [], "c": []}
        ways = {
            "a": lambda: subprocess.run(["docker", "compose", "-p", PROJECT, "-f", path, "up", "-d", "--wait"],
                                        check=True, capture_output=True),
            "b": lambda: run_phase(compose, SERVICES, timeout=300, pull="never"),
            "c": lambda: run_phase(compose, SERVICES, timeout=300, pull="never", waits=WAITS, changing=set(SERVICES)),
        }
        try:
            for number in range(args.rounds):
                for key in ("a", "b", "c"):
                    down(path)
                    runs[key].append(timed(ways[key]))
                print("round %d: plain %.2f s, ours one up %.2f s, ours in steps %.2f s"
                      % (number + 1, runs["a"][-1], runs["b"][-1], runs["c"][-1]), flush=True)
        finally:
            down(path)
    med = dict((k, statistics.median(v)) for k, v in runs.items())
    print("interval %d s, median of %d rounds: plain up --wait %.2f s, ours one up %.2f s, ours in steps %.2f s"
          % (args.interval, args.rounds, med["a"], med["b"], med["c"]))
    print("plain / ours in steps: %.2fx; ours one up / ours in steps: %.2fx" % (med["a"] / med["c"], med["b"] / med["c"]))


if __name__ == "__main__":
    main()
