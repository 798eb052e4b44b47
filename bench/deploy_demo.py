#!/usr/bin/env python3
"""Benchmark: the demo platform deployed with playbooks/deploy.yml, a plain playbook and by hand.

The lab platform (lab/stack: 3 phases, 8 containers, 2 PostgreSQL databases) under the stack name
`benchdemo` (host ports 29000-29499, state, backups and audit log in a temporary directory) is
deployed over SSH to the lab host by
  (ours) `ansible-playbook playbooks/deploy.yml` with the phases' health checks and both databases
         backed up before the modules phase changes (as the stack schema's `databases` and
         `phases[].backup` describe them; the playbook on disk at each run is the one measured);
  (peer) bench/peer/deploy_peer.yml, the plain playbook operators write: the compose files and the
         same .env copied to the host, then per phase `community.docker.docker_compose_v2`
         (state present, wait) with the same project name, `ansible.builtin.uri` with
         until/retries/delay on the phase's health URLs, and `docker exec … pg_dump -Fc` of both
         databases (`ansible.builtin.shell`) before the modules phase;
  (hand) a shell script with what a runbook operator types: per phase in order
         `docker compose -p benchdemo --env-file .env -f <phase file> up -d --wait`, the
         `pg_dump -Fc` of both databases through `docker exec` before the modules phase, and `curl`
         on the health endpoints after each phase.
Three scenarios, each round starting from an empty host (containers, volumes, state and pin tags
removed, not timed): first deploy (v1), redeploy v2 (auth, ar and payments images change), and a
redeploy of v2 again (no change). Rounds rotate which side goes first. After every deploy, not
timed, the end state is checked the same way for all three sides: the eight containers of the
project running, each on the image of the release (by image ID), auth (through its load balancer),
ar and payments healthy and reporting the release, and two new non-empty dumps for the peer and
the hand script. It prints the medians, ours/peer (the rule: at most 0.5x) and ours/hand per
scenario, then where the time of the playbook and of the peer goes: every task's duration
from the ansible.posix.json callback (the same timings profile_tasks prints), the time between
tasks (includes, templating, the strategy) and Ansible's start-up and shutdown outside the first
and last task.

Run after `bin/lab up`: .venv/bin/python bench/deploy_demo.py [--rounds 3] [--top 12]
"""

import argparse
import datetime
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAYBOOK_BIN = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
PLAYBOOK = os.path.join(ROOT, "playbooks", "deploy.yml")
PEER_PLAYBOOK = os.path.join(ROOT, "bench", "peer", "deploy_peer.yml")
INVENTORY = os.path.join(ROOT, "inventories", "lab")
STACK_DIR = os.path.join(ROOT, "lab", "stack")
PHASE_FILES = ["docker-compose.infrastructure.yml", "docker-compose.platform.yml", "docker-compose.modules.yml"]

STACK = "benchdemo"
PORTS = {"NATS_PORT": 29022, "NATS_MONITOR_PORT": 29082, "AR_DB_PORT": 29034, "PAYMENTS_DB_PORT": 29036,
         "AUTH_PORT": 29080, "AR_PORT": 29086, "PAYMENTS_PORT": 29088}
SIDES = ("ours", "peer", "hand")
PEER_RULE = 0.5  # ours / peer at most
# The image each service runs: release-tagged services by tag, the rest fixed.
RELEASED = ("auth", "ar", "payments")
FIXED_IMAGES = {"nats": "vpsops-lab/nats:2.15", "ar-postgres": "vpsops-lab/postgres:15",
                "payments-postgres": "vpsops-lab/postgres:15", "auth-lb": "vpsops-demo/lb:v1"}
REPLICAS = {"auth": 2}
SCENARIOS = (("first", "first deploy v1 (empty host)", "v1"),
             ("v2", "redeploy v2 (auth, ar, payments change)", "v2"),
             ("same", "redeploy v2 again (no change)", "v2"))


class RunFailed(Exception):
    """A deploy (either way) that did not finish: reported, and the round is tried again."""


def sh(argv, check=True, **kw):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    if check and proc.returncode != 0:
        raise SystemExit("%s failed (rc=%d):\n%s\n%s" % (" ".join(argv[:6]), proc.returncode, proc.stdout[-4000:],
                                                         proc.stderr[-4000:]))
    return proc


def timed(func):
    started = time.monotonic()
    value = func()
    return time.monotonic() - started, value


def remove_pin_tags(stack):
    """Untag the images a stack's releases pinned (vpsops/<stack>/<service>:id-...)."""
    refs = sh(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
               "reference=vpsops/%s/*" % stack], check=False).stdout.split()
    if refs:
        sh(["docker", "image", "rm"] + refs, check=False)


# --------------------------------------------------------------------------------------------
# ansible-playbook runs and their task timings (shared with bench/scale_deploy.py)
# --------------------------------------------------------------------------------------------
def parse_time(text):
    return datetime.datetime.strptime(text.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def run_playbook(extra_vars, tmp, host="lab1", playbook=PLAYBOOK):
    """Run ansible-playbook with the json callback. Returns (wall seconds, tasks, stats) where tasks
    is a list of {name, action, seconds, start, end, changed, result} in run order."""
    vars_file = os.path.join(tmp, "vars-%s.json" % secrets.token_hex(4))
    with open(vars_file, "w") as handle:
        json.dump(extra_vars, handle)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_NOCOLOR="1")
    env["PATH"] = os.path.join(ROOT, ".venv", "bin") + os.pathsep + env.get("PATH", "")
    argv = [PLAYBOOK_BIN, "-i", INVENTORY, playbook, "-e", "@" + vars_file]
    wall, proc = timed(lambda: subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False))
    os.unlink(vars_file)
    text = proc.stdout[proc.stdout.find("{"):]
    try:
        data = json.loads(text)
    except ValueError:
        raise RunFailed("ansible-playbook gave no JSON (rc=%d):\n%s\n%s"
                        % (proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:]))
    tasks = []
    for play in data["plays"]:
        for task in play["tasks"]:
            duration = task["task"]["duration"]
            result = task["hosts"].get(host, {})
            start = parse_time(duration["start"])
            end = parse_time(duration["end"]) if "end" in duration else start
            tasks.append({"name": task["task"]["name"], "action": result.get("action", "?"), "start": start,
                          "end": end, "seconds": end - start, "changed": bool(result.get("changed")),
                          "skipped": bool(result.get("skipped")), "result": result})
    stats = data["stats"].get(host, {})
    if proc.returncode != 0 or stats.get("failures") or stats.get("unreachable"):
        failed = [t for t in tasks if t["result"].get("failed")]
        cause = [t for t in failed if t["action"] != "ansible.builtin.fail"] or failed
        raise RunFailed("ansible-playbook failed (rc=%d) at %s: %s\n%s\n%s"
                        % (proc.returncode, cause[0]["name"] if cause else "?",
                           " | ".join(" ".join(str(t["result"].get("msg", "")).split()) for t in failed),
                           json.dumps(cause[0]["result"], default=str)[-3000:] if cause else "",
                           proc.stderr[-2000:]))
    return wall, tasks, stats


def breakdown(wall, tasks):
    """{category: seconds} of one run: each task by name (summed over loops and phases), plus
    the gaps between tasks and what lies outside the first and last task."""
    parts = {}
    for task in tasks:
        key = "task: %s [%s]" % (task["name"], task["action"].split(".")[-1])
        parts[key] = parts.get(key, 0.0) + task["seconds"]
    if tasks:
        span = max(t["end"] for t in tasks) - min(t["start"] for t in tasks)
        busy = sum(t["seconds"] for t in tasks)
        parts["between tasks (includes, templating, strategy)"] = max(span - busy, 0.0)
        parts["ansible start-up and shutdown (outside first/last task)"] = max(wall - span, 0.0)
    return parts


def median_breakdown(runs):
    keys = set()
    for parts in runs:
        keys.update(parts)
    return dict((k, statistics.median([parts.get(k, 0.0) for parts in runs])) for k in keys)


def print_top(parts, wall, top):
    for key, seconds in sorted(parts.items(), key=lambda kv: -kv[1])[:top]:
        print("    %6.2f s  %5.1f %%  %s" % (seconds, 100.0 * seconds / wall if wall else 0.0, key))


def count_dumps(path):
    """Non-empty `*.dump` files (custom format) and `*.dir` directories (directory format) under path."""
    found = 0
    for top, dirs, files in os.walk(path):
        found += sum(1 for name in files if name.endswith(".dump") and os.path.getsize(os.path.join(top, name)) > 0)
        found += sum(1 for name in dirs if name.endswith(".dir"))
    return found


# --------------------------------------------------------------------------------------------
# the demo stack, three ways
# --------------------------------------------------------------------------------------------
class Demo:
    def __init__(self, tmp):
        self.tmp = tmp
        self.state_dir = os.path.join(tmp, "state")
        self.backup_dir = os.path.join(tmp, "backups")
        self.hand_backups = os.path.join(tmp, "hand-backups")
        self.peer_dir = os.path.join(tmp, "peer-project")
        self.peer_backups = os.path.join(tmp, "peer-backups")
        self.passwords = {"AR_DB_PASSWORD": "ar-" + secrets.token_hex(8),
                          "PAYMENTS_DB_PASSWORD": "pay-" + secrets.token_hex(8)}

    def env(self, tag):
        env = {"RELEASE_TAG": tag}
        env.update(dict((k, str(v)) for k, v in PORTS.items()))
        env.update(self.passwords)
        return env

    def stack_vars(self, tag):
        p = PORTS
        phases = [
            {"name": "infrastructure", "compose_files": [PHASE_FILES[0]],
             "checks": [{"name": "nats", "type": "http",
                         "url": "http://127.0.0.1:%d/healthz?js-enabled-only=true" % p["NATS_MONITOR_PORT"]},
                        {"name": "ar-db", "type": "postgres", "port": p["AR_DB_PORT"], "db": "ar_db",
                         "login_user": "ar_user", "login_password": self.passwords["AR_DB_PASSWORD"]},
                        {"name": "payments-db", "type": "postgres", "port": p["PAYMENTS_DB_PORT"],
                         "db": "payments_db", "login_user": "payments_user",
                         "login_password": self.passwords["PAYMENTS_DB_PASSWORD"]}]},
            {"name": "platform", "compose_files": [PHASE_FILES[1]],
             "checks": [{"name": "auth", "type": "http", "url": "http://127.0.0.1:%d/api/health" % p["AUTH_PORT"],
                         "json": {"status": "ok"}}]},
            {"name": "modules", "compose_files": [PHASE_FILES[2]], "backup": ["ar", "payments"],
             "checks": [{"name": "ar", "type": "http", "url": "http://127.0.0.1:%d/api/health" % p["AR_PORT"],
                         "json": {"status": "ok"}},
                        {"name": "payments", "type": "http",
                         "url": "http://127.0.0.1:%d/api/health" % p["PAYMENTS_PORT"], "json": {"status": "ok"}},
                        {"name": "streams", "type": "nats", "url": "http://127.0.0.1:%d" % p["NATS_MONITOR_PORT"],
                         "streams": ["AR_EVENTS", "PAYMENTS_EVENTS"]}]},
        ]
        return {
            "vpsops_stack": {
                "name": STACK, "source": STACK_DIR, "env": self.env(tag), "phases": phases,
                "databases": {
                    "ar": {"container": "%s-ar-postgres-1" % STACK, "db": "ar_db", "login_user": "ar_user",
                           "login_password": self.passwords["AR_DB_PASSWORD"]},
                    "payments": {"container": "%s-payments-postgres-1" % STACK, "db": "payments_db",
                                 "login_user": "payments_user",
                                 "login_password": self.passwords["PAYMENTS_DB_PASSWORD"]}},
                "backup": {"dest": self.backup_dir, "keep": 10, "verify": "toc"},
            },
            "deploy_phase_timeout": 120,
            "deploy_phase_state_dir": self.state_dir,
            "deploy_phase_project_dir": os.path.join(self.state_dir, "project"),
            "lock_state_dir": self.state_dir,
            "rollback_state_dir": self.state_dir,
            "vpsops_audit_log": os.path.join(self.tmp, "audit.jsonl"),
        }

    def ours(self, tag):
        return run_playbook(self.stack_vars(tag), self.tmp)

    def peer(self, tag):
        wall, tasks, stats = run_playbook({"release_tag": tag, "compose_project": STACK,
                                           "compose_env": self.env(tag), "compose_dir": self.peer_dir,
                                           "backup_dir": self.peer_backups}, self.tmp, playbook=PEER_PLAYBOOK)
        return wall, (breakdown(wall, tasks), stats.get("changed"))

    def end_state(self, tag, backups=None, dumps_before=0):
        """Raise RunFailed unless the project runs release `tag` as a deploy must leave it. With
        `backups`, that directory must hold two more non-empty dumps than `dumps_before`.
        Returns the number of dumps there."""
        problems = []
        ids = sh(["docker", "ps", "-q", "--filter", "label=com.docker.compose.project=%s" % STACK],
                 check=False).stdout.split()
        running = {}
        if ids:
            fmt = '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.Image}}'
            for line in sh(["docker", "inspect", "--format", fmt] + ids, check=False).stdout.splitlines():
                service, status, image = line.split()
                if status == "running":
                    running.setdefault(service, []).append(image)
        wanted = dict(FIXED_IMAGES, **dict((s, "vpsops-demo/%s:%s" % (s, tag)) for s in RELEASED))
        refs = sorted(set(wanted.values()))
        ref_ids = dict(zip(refs, sh(["docker", "image", "inspect", "--format", "{{.Id}}"] + refs).stdout.split()))
        image_ids = dict((service, ref_ids[ref]) for service, ref in wanted.items())
        for service, ref in sorted(wanted.items()):
            images = running.get(service, [])
            if len(images) != REPLICAS.get(service, 1):
                problems.append("%s: %d running" % (service, len(images)))
            elif any(image != image_ids.get(service) for image in images):
                problems.append("%s: not on %s" % (service, ref))
        extra = sorted(set(running) - set(wanted))
        if extra:
            problems.append("unexpected services: %s" % ", ".join(extra))
        port_of = {"auth": PORTS["AUTH_PORT"], "ar": PORTS["AR_PORT"], "payments": PORTS["PAYMENTS_PORT"]}
        for service in RELEASED:
            for _ in range(2 * REPLICAS.get(service, 1)):
                try:
                    with urllib.request.urlopen("http://127.0.0.1:%d/api/health" % port_of[service], timeout=5) as r:
                        body = json.load(r)
                except (OSError, ValueError) as exc:
                    body = {"error": str(exc)}
                if body.get("status") != "ok" or body.get("service") != service or body.get("release") != tag:
                    problems.append("%s health: %s" % (service, json.dumps(body)))
                    break
        dumps = 0
        if backups is not None:
            names = os.listdir(backups) if os.path.isdir(backups) else []
            dumps = count_dumps(backups)
            if dumps != dumps_before + 2 or len(names) != dumps:
                problems.append("%s: %d non-empty of %d dumps, %d before" % (backups, dumps, len(names), dumps_before))
        if problems:
            raise RunFailed("end state of release %s: %s" % (tag, "; ".join(problems)))
        return dumps

    def hand_script(self, tag):
        """What the runbook operator types, with the .env the playbook would write."""
        env_file = os.path.join(self.tmp, "hand.env")
        with open(env_file, "w") as handle:
            handle.write("".join("%s=%s\n" % kv for kv in sorted(self.env(tag).items())))
        os.chmod(env_file, 0o600)
        p = PORTS
        curl = "curl -fsS -o /dev/null --max-time 5 --retry 10 --retry-connrefused --retry-delay 1"
        return "\n".join([
            "set -euo pipefail",
            "cd %s" % STACK_DIR,
            "dc() { docker compose -p %s --env-file %s \"$@\"; }" % (STACK, env_file),
            "mkdir -p %s" % self.hand_backups,
            "stamp=$(date -u +%Y%m%dT%H%M%S%N)",
            "dc -f %s up -d --wait --wait-timeout 120" % PHASE_FILES[0],
            "%s 'http://127.0.0.1:%d/healthz?js-enabled-only=true'" % (curl, p["NATS_MONITOR_PORT"]),
            "dc -f %s up -d --wait --wait-timeout 120" % PHASE_FILES[1],
            "%s http://127.0.0.1:%d/api/health" % (curl, p["AUTH_PORT"]),
            "docker exec %s-ar-postgres-1 pg_dump -U ar_user -Fc ar_db > %s/ar_db_$stamp.dump"
            % (STACK, self.hand_backups),
            "docker exec %s-payments-postgres-1 pg_dump -U payments_user -Fc payments_db > %s/payments_db_$stamp.dump"
            % (STACK, self.hand_backups),
            "dc -f %s up -d --wait --wait-timeout 120" % PHASE_FILES[2],
            "%s http://127.0.0.1:%d/api/health" % (curl, p["AR_PORT"]),
            "%s http://127.0.0.1:%d/api/health" % (curl, p["PAYMENTS_PORT"]),
            "%s 'http://127.0.0.1:%d/jsz?streams=true'" % (curl, p["NATS_MONITOR_PORT"]),
            "",
        ])

    def hand(self, tag):
        script = self.hand_script(tag)
        wall, proc = timed(lambda: subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False))
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise RunFailed("the hand script failed (rc=%d): %s\n%s" % (proc.returncode, last, proc.stderr[-3000:]))
        return wall

    def reset(self):
        argv = ["docker", "compose", "-p", STACK]
        for name in PHASE_FILES:
            argv += ["-f", os.path.join(STACK_DIR, name)]
        sh(argv + ["down", "-v", "--remove-orphans", "-t", "3"], check=False, env=dict(os.environ, **self.env("v1")),
           cwd=STACK_DIR)
        remove_pin_tags(STACK)
        for path in (self.state_dir, self.backup_dir, self.hand_backups, self.peer_dir, self.peer_backups):
            shutil.rmtree(path, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=12, help="tasks and parts of the playbook's time to list")
    parser.add_argument("--attempts", type=int, default=2, help="tries of one side of a round before giving up")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="vpsops-benchdemo-")
    demo = Demo(tmp)
    times = dict((who, dict((key, []) for key, _, _ in SCENARIOS)) for who in SIDES)
    parts = dict((who, dict((key, []) for key, _, _ in SCENARIOS)) for who in ("ours", "peer"))
    changed = dict((who, dict((key, []) for key, _, _ in SCENARIOS)) for who in ("ours", "peer"))
    backups = dict((key, []) for key, _, _ in SCENARIOS)
    failures = []

    def side(who):
        """The three scenarios one way from an empty host, each followed by the end-state check:
        {scenario: (seconds, extra)}."""
        demo.reset()
        done = {}
        dumps = 0
        for key, _, tag in SCENARIOS:
            try:
                if who == "hand":
                    done[key] = (demo.hand(tag), None)
                    dumps = demo.end_state(tag, demo.hand_backups, dumps)
                elif who == "peer":
                    done[key] = demo.peer(tag)
                    dumps = demo.end_state(tag, demo.peer_backups, dumps)
                else:
                    wall, tasks, stats = demo.ours(tag)
                    made = count_dumps(demo.backup_dir)
                    done[key] = (wall, (breakdown(wall, tasks), stats.get("changed"), made - dumps))
                    dumps = made
                    demo.end_state(tag)
            except RunFailed as exc:
                raise RunFailed("scenario %s (after %s): %s" % (
                    key, ", ".join("%s %.1fs" % (k, v[0]) for k, v in done.items()) or "nothing", exc))
        return done

    try:
        for number in range(args.rounds):
            shift = number % len(SIDES)
            order = SIDES[shift:] + SIDES[:shift]
            line = []
            for who in order:
                for attempt in range(args.attempts):
                    try:
                        done = side(who)
                        break
                    except RunFailed as exc:
                        failures.append("round %d %s attempt %d: %s" % (number + 1, who, attempt + 1,
                                                                        str(exc).strip().splitlines()[0][:400]))
                        print("  " + failures[-1], flush=True)
                else:
                    raise SystemExit("%s failed %d times in round %d" % (who, args.attempts, number + 1))
                for key, _, _ in SCENARIOS:
                    seconds, extra = done[key]
                    times[who][key].append(seconds)
                    if who != "hand":
                        parts[who][key].append(extra[0])
                        changed[who][key].append(extra[1])
                    if who == "ours":
                        backups[key].append(extra[2])
                    line.append("%s %s %.2fs" % (who, key, seconds))
            print("round %d: %s (load average %.1f)" % (number + 1, ", ".join(line), os.getloadavg()[0]), flush=True)
        print()
        print("demo platform (3 phases, 8 containers), %d round(s), medians" % args.rounds)
        print("  %-42s %8s %8s %8s %10s %10s" % ("scenario", "ours", "peer", "hand", "ours/peer", "ours/hand"))
        met = []
        for key, title, _ in SCENARIOS:
            o, p, h = (statistics.median(times[who][key]) for who in SIDES)
            met.append(o / p <= PEER_RULE)
            print("  %-42s %7.2fs %7.2fs %7.2fs %9.2fx %9.2fx" % (title, o, p, h, o / p, o / h))
        print("  rule: ours <= %.1fx the peer's time: %s" % (
            PEER_RULE, ", ".join("%s %s" % (key, "met" if ok else "NOT met")
                                 for (key, _, _), ok in zip(SCENARIOS, met))))
        print("  (goal vs hand <= 1.3x; changed tasks per round: ours %s, peer %s; dumps ours made: %s)"
              % ("/".join(str(changed["ours"][k]) for k, _, _ in SCENARIOS),
                 "/".join(str(changed["peer"][k]) for k, _, _ in SCENARIOS),
                 "/".join(str(backups[k]) for k, _, _ in SCENARIOS)))
        if failures:
            print("  failed attempts, tried again from an empty host: %d" % len(failures))
        for key, title, _ in SCENARIOS:
            for who, label, top in (("ours", "the playbook's", args.top), ("peer", "the peer's", args.top // 2)):
                wall = statistics.median(times[who][key])
                print()
                print("where %s time goes, %s (medians over rounds; wall %.2f s):" % (label, title, wall))
                print_top(median_breakdown(parts[who][key]), wall, top)
    finally:
        demo.reset()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
