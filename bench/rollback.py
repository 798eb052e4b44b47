#!/usr/bin/env python3
"""Benchmark: compose_rollback against a raw `docker compose up -d --wait` with the same files and images.

A phase of N services (default 10), all from one image built here in two variants (A and B, each a
new image ID under the same tag). Releases A and B are recorded and deployed. Each round, with B
running:
  (a) compose_rollback to A, the module's own code path run in this process (resolve the target,
      check files and images, `up --wait`, prove the image IDs, health gate on every container,
      write the history and move `current`);
  (e) the same rollback as Ansible runs it: `ansible -m vpsops.deploy.compose_rollback` over SSH to
      the lab host, minus a no-op module run (`ansible.builtin.ping`) on the same host;
  (r) `docker compose -p … -f <A's files> up -d --wait --no-build --pull never`: the raw command a
      person would type, with A's files and lock override.
Between measurements the stack goes back to B (not timed). It prints the medians and a/r, e/r.

Run after `bin/lab up`: .venv/bin/python bench/rollback.py [SERVICES] [ROUNDS]   e.g. 10 3
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".lab", "collections"))

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Compose, Docker  # noqa: E402
from ansible_collections.vpsops.deploy.plugins.module_utils._releases import Store, snapshot  # noqa: E402
from ansible_collections.vpsops.deploy.plugins.module_utils._rollback import rollback  # noqa: E402
from ansible_collections.vpsops.deploy.plugins.module_utils._probes import rollback_gate  # noqa: E402

STACK = "vpsops-benchrb"
IMAGE = "vpsops-benchrb/app:cur"
ANSIBLE = os.path.join(ROOT, ".venv", "bin", "ansible")


def sh(argv, **kw):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    if proc.returncode != 0:
        raise SystemExit("%s failed: %s %s" % (" ".join(argv[:4]), proc.stdout[-2000:], proc.stderr[-2000:]))
    return proc.stdout


def build(variant):
    sh(["docker", "build", "-q", "-t", IMAGE, "-"], input="FROM vpsops-demo/auth:v1\nLABEL bench.variant=%s\n" % variant)


def timed(func):
    started = time.monotonic()
    func()
    return time.monotonic() - started


def ansible_run(module, args, inner=None):
    """Wall time of an ad hoc run; with `inner`, the module's own `seconds.total` is appended to it."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    argv = [ANSIBLE, "-i", os.path.join(ROOT, "inventories", "lab"), "lab1", "-m", module]
    if args:
        argv += ["-a", json.dumps(args)]
    out = []
    elapsed = timed(lambda: out.append(sh(argv, env=env, cwd=ROOT)))
    if inner is not None:
        inner.append(json.loads(out[0])["plays"][0]["tasks"][0]["hosts"]["lab1"]["seconds"]["total"])
    return elapsed


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    tmp = tempfile.mkdtemp(prefix="vpsops-benchrb-")
    project = os.path.join(tmp, "project")
    os.makedirs(project)
    compose_file = os.path.join(project, "phase.yml")
    with open(compose_file, "w") as handle:
        handle.write("services:\n")
        for index in range(count):
            handle.write("  svc%d:\n    image: %s\n    init: true\n    environment: {SERVICE_NAME: svc%d, SERVICE_ROLE: auth}\n"
                         % (index, IMAGE, index))
    docker = Docker()
    store = Store(STACK, os.path.join(tmp, "state"))
    gate = rollback_gate("docker")
    releases = {}
    try:
        for variant in ("A", "B"):
            build("%s-%s" % (variant, time.time()))
            compose = Compose(docker, STACK, [compose_file], project_dir=project)
            manifest, _ = snapshot(store, docker, compose, "rel-%s" % variant, [compose_file], project)
            Compose(docker, STACK, store.compose_files(manifest), project_dir=project).up(wait_timeout=300)
            store.make_live(store.load(manifest["id"]))
            releases[variant] = store.load(manifest["id"])
        a_files = store.compose_files(releases["A"])

        def to(variant):
            return rollback(store, docker, to="rel-%s" % variant, timeout=300, gate=gate)

        def raw_a():
            sh(["docker", "compose", "-p", STACK, "--project-directory", project]
               + sum((["-f", f] for f in a_files), [])
               + ["up", "-d", "--wait", "--wait-timeout", "300", "--no-build", "--pull", "never"])

        module_times, ansible_times, raw_times, noop_times, inner_times = [], [], [], [], []
        for _ in range(rounds):
            module_times.append(timed(lambda: to("A")))
            to("B")
            ansible_times.append(ansible_run("vpsops.deploy.compose_rollback", {
                "stack": STACK, "state_dir": store.state_dir, "to": "rel-A", "timeout": 300}, inner_times))
            noop_times.append(ansible_run("ansible.builtin.ping", {}))
            to("B")
            raw_times.append(timed(raw_a))
            to("B")
        a, r = statistics.median(module_times), statistics.median(raw_times)
        e = statistics.median(ansible_times) - statistics.median(noop_times)
        print("phase of %d services, %d rounds (medians)" % (count, rounds))
        print("  raw docker compose up -d --wait (r):         %6.2f s" % r)
        print("  compose_rollback, module code (a):           %6.2f s   a/r = %.2fx" % (a, a / r))
        print("  compose_rollback via Ansible minus ping (e): %6.2f s   e/r = %.2fx" % (e, e / r))
        print("  (ansible ping alone: %.2f s; the module's own total under Ansible: %.2f s)"
              % (statistics.median(noop_times), statistics.median(inner_times)))
    finally:
        subprocess.run(["docker", "compose", "-p", STACK, "-f", compose_file, "down", "-t", "2"], capture_output=True,
                       check=False)
        refs = sh(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]).split()
        doomed = [x for x in refs if x.startswith(("vpsops-benchrb/", "vpsops/%s/" % STACK))]
        if doomed:
            subprocess.run(["docker", "image", "rm", "-f"] + doomed, capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
