#!/usr/bin/env python3
"""Benchmark: playbooks/deploy.yml on a 9-phase platform of N services, Docker's time against ours.

The platform comes from bench/scale_stack.py (the shape of a 50-service runbook: 9 phases,
PostgreSQL x2 and NATS in the infrastructure phase from N = 25 on, busybox httpd services with a
healthcheck every 4 s, one published port per phase on 127.0.0.1:29500-29508 with an http check).
For each N (default 10, 25, 50) under the stack name `benchscale` (state in a temporary
directory), starting from an empty host:
  (first) ansible-playbook playbooks/deploy.yml over SSH to the lab host;
  (again) the same run again, nothing changed;
  (plain) `docker compose -p benchscale -f <all 9 files> up -d --wait`: every service at once.
A run's time is split from the ansible.posix.json callback's task timings into Docker's time (the
`docker compose up --wait` of each phase, as the phase steps of `vpsops.deploy.deploy_host` report it in
`seconds.up`, with the container listings around it) and our overhead (everything else: Ansible's start-up, preflight, checks,
file copies, release record and pins, the lock, health gates, promotion). It prints per N: total,
Docker, overhead and overhead per service, the largest parts of the overhead, and first/plain.

The machine has 2 cores shared with other work: N = 50 runs once per invocation (rounds apply to
the smaller sizes only unless --rounds-50 says otherwise).

Run after `bin/lab up`: .venv/bin/python bench/scale_deploy.py [--sizes 10,25,50] [--rounds 1]
"""

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scale_stack  # noqa: E402
from deploy_demo import breakdown, median_breakdown, remove_pin_tags, run_playbook, sh, timed  # noqa: E402

STACK = "benchscale"
PORT_BASE = 29500
UP_ACTION = "vpsops.deploy.deploy_host"


def phase_results(tasks):
    """The result of every phase step (vpsops.deploy.deploy_host, step phase), loop items included."""
    found = []
    for task in tasks:
        if task["action"] != UP_ACTION and "Bring up the services of the phase" not in task["name"]:
            continue
        for result in task["result"].get("results") or [task["result"]]:
            if result.get("step") == "phase":
                found.append(result)
    return found


def step_seconds(tasks):
    """What each deploy_host step says it spent, by step: {step: {part: seconds}} (phases summed)."""
    steps = {}
    for task in tasks:
        if task["action"] != UP_ACTION:
            continue
        for result in task["result"].get("results") or [task["result"]]:
            step = result.get("step")
            if not step:
                continue
            into = steps.setdefault(step, {})
            for key, value in (result.get("seconds") or {}).items():
                if isinstance(value, (int, float)):
                    into[key] = round(into.get(key, 0.0) + value, 3)
    return steps


class Scale:
    def __init__(self, tmp, count, interval):
        self.tmp = tmp
        self.count = count
        self.source = os.path.join(tmp, "src-%d" % count)
        self.state_dir = os.path.join(tmp, "state")
        self.phases, self.published = scale_stack.write(self.source, count, PORT_BASE, interval)
        self.password = "scale-" + secrets.token_hex(8)
        self.files = [f for phase in self.phases for f in phase["compose_files"]]

    def extra_vars(self):
        return {
            "vpsops_stack": {"name": STACK, "source": self.source, "env": {"SCALE_DB_PASSWORD": self.password},
                             "phases": self.phases},
            "deploy_phase_timeout": 300,
            "deploy_phase_state_dir": self.state_dir,
            "deploy_phase_project_dir": os.path.join(self.state_dir, "project"),
            "lock_state_dir": self.state_dir,
            "rollback_state_dir": self.state_dir,
            "vpsops_audit_log": os.path.join(self.tmp, "audit.jsonl"),
        }

    def compose(self, *args, check=True):
        argv = ["docker", "compose", "-p", STACK]
        for name in self.files:
            argv += ["-f", os.path.join(self.source, name)]
        # Four containers at a time: Docker 20.10 can deadlock when many containers of one network
        # stop at once (moby/moby#46661).
        return sh(argv + list(args), check=check, cwd=self.source,
                  env=dict(os.environ, SCALE_DB_PASSWORD=self.password, COMPOSE_PARALLEL_LIMIT="4"))

    def reset(self):
        self.compose("down", "-v", "--remove-orphans", "-t", "3", check=False)
        remove_pin_tags(STACK)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def deploy(self):
        wall, tasks, stats = run_playbook(self.extra_vars(), self.tmp)
        ups = phase_results(tasks)
        # Docker's part of a phase step is its `up --wait` (with the two container listings around it);
        # the rest of the step (module start-up, plan, backups, the health gate) is ours.
        up_seconds = [float((r.get("seconds") or {}).get("up", 0.0)) for r in ups]
        docker = sum(up_seconds)
        parts = breakdown(wall, tasks)
        for key in [k for k in parts if "Bring up the services of the phase" in k]:
            parts[key] = max(parts[key] - docker, 0.0)
        return {"wall": wall, "docker": docker, "overhead": wall - docker, "ups": up_seconds,
                "up_changed": sum(1 for r in ups if r.get("changed")), "changed": stats.get("changed"),
                "parts": parts, "steps": step_seconds(tasks)}

    def plain(self):
        return timed(lambda: self.compose("up", "-d", "--wait", "--wait-timeout", "300"))[0]

    def running(self):
        out = sh(["docker", "ps", "--filter", "label=com.docker.compose.project=%s" % STACK, "--filter",
                  "health=healthy", "--format", "{{.Names}}"]).stdout.split()
        return len(out)


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,25,50")
    parser.add_argument("--rounds", type=int, default=1, help="rounds for sizes below 50")
    parser.add_argument("--rounds-50", type=int, default=1, help="rounds for 50 services or more")
    parser.add_argument("--interval", type=int, default=4, help="healthcheck interval of the services (s)")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    tmp = tempfile.mkdtemp(prefix="vpsops-benchscale-")
    results = {}
    scale = None
    try:
        for count in sizes:
            scale = Scale(tmp, count, args.interval)
            rounds = args.rounds_50 if count >= 50 else args.rounds
            first, again, plain = [], [], []
            for number in range(rounds):
                scale.reset()
                started = time.monotonic()
                first.append(scale.deploy())
                healthy = scale.running()
                again.append(scale.deploy())
                scale.reset()
                plain.append(scale.plain())
                plain_healthy = scale.running()
                scale.reset()
                print("N=%d round %d: first %.2fs (docker %.2fs, %d/%d healthy), again %.2fs (up tasks changed: %d), "
                      "plain %.2fs (%d healthy), %.0fs with resets, load average %.1f"
                      % (count, number + 1, first[-1]["wall"], first[-1]["docker"], healthy, count,
                         again[-1]["wall"], again[-1]["up_changed"], plain[-1], plain_healthy,
                         time.monotonic() - started, os.getloadavg()[0]), flush=True)
            results[count] = (first, again, plain, scale.phases)
        print()
        print("9 phases, first deploy on an empty host (medians; docker = the 9 `compose up --wait` tasks)")
        print("  %4s %9s %9s %9s %12s %9s %11s" % ("N", "total", "docker", "overhead", "overhead/svc", "plain",
                                                   "total/plain"))
        for count, (first, again, plain, _) in sorted(results.items()):
            total, docker, overhead = med(first, "wall"), med(first, "docker"), med(first, "overhead")
            p = statistics.median(plain)
            print("  %4d %8.2fs %8.2fs %8.2fs %11.3fs %8.2fs %10.2fx"
                  % (count, total, docker, overhead, overhead / count, p, total / p))
        print()
        print("the same deploy again, nothing changed")
        print("  %4s %9s %9s %9s %12s" % ("N", "total", "docker", "overhead", "overhead/svc"))
        for count, (first, again, plain, _) in sorted(results.items()):
            overhead = med(again, "overhead")
            print("  %4d %8.2fs %8.2fs %8.2fs %11.3fs"
                  % (count, med(again, "wall"), med(again, "docker"), overhead, overhead / count))
        for count, (first, again, plain, phases) in sorted(results.items()):
            print()
            sizes_text = ",".join(str(len(scale_stack.phases(count)[i][1])) for i in range(len(phases)))
            ups = first[0]["ups"]
            print("N=%d (services per phase %s), up --wait per phase, first deploy: %s"
                  % (count, sizes_text, " ".join("%.1f" % u for u in ups)))
            for label, runs in (("first", first), ("again", again)):
                wall = med(runs, "wall")
                parts = median_breakdown([r["parts"] for r in runs])
                print("  largest parts of the overhead, %s (wall %.2f s):" % (label, wall))
                for key, seconds in sorted(parts.items(), key=lambda kv: -kv[1])[:args.top]:
                    print("    %6.2f s  %s" % (seconds, key))
                print("  inside the steps, as the module timed them (%s, first round):" % label)
                for step, timed_parts in sorted(runs[0]["steps"].items()):
                    ordered = sorted(timed_parts.items(), key=lambda kv: -kv[1])
                    print("    %-7s %s" % (step, ", ".join("%s %.2f" % kv for kv in ordered)))
    finally:
        if scale is not None:
            scale.reset()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
