#!/usr/bin/env python3
"""Benchmark: one small stack deployed with playbooks/deploy.yml to 1, 5 and 20 lab hosts.

Each lab host (`bin/lab host add`) is a host of its own: its network namespace and address, its
sshd, its Docker daemon and its /var/lib/vpsops. The stack is the platform phase of the lab
(lab/stack/docker-compose.platform.yml: auth x2 behind its nginx load balancer, 3 containers) with
its HTTP check on 127.0.0.1:8080, the same `vpsops_stack` for every host. The fleet grows with the
sizes: hosts mh1..mhN exist while N is measured (each new host gets v1 first, not timed), so no idle
host's healthchecks (a `runc exec` every 3 s per container) weigh on a smaller size.

Every timed deploy changes the release on its hosts (v1 -> v2 -> v1 ...; auth is recreated, one
replica at a time, then the load balancer's check and the release record), from a state where
the hosts run the other release, so every size does the same work per host:
  (ours)  ansible-playbook playbooks/deploy.yml on mh1..mhN, its default waves: the canary alone,
          then the others at once (serial [1, '100%'], forks from ansible.cfg);
  (floor) what Docker alone needs for the same change on the same hosts at once: per host, in
          parallel, `ssh host docker compose -p benchplain ... up -d --wait` of the same compose
          file on its own project (ports 8180), then `curl` of its health URL. The files are in
          place beforehand. This is the machine's floor for N hosts' containers on 2 cores.
After every run, not timed, each host's auth answers the release it was given (ours and floor).

It prints, per N, the medians of ours and floor, ours/floor, and the goal of issue 19: the time
beyond one host's deploy per extra host, ((ours N) - (ours 1)) / (N - 1), and the wave of N-1
hosts against one host's deploy, ((ours N) - (ours 1)) / (ours 1) (goal: at most 3x at N = 20).
Then where the time of the largest run goes: each play and the largest tasks (the ansible.posix.json
callback's timings), the CPU the controller's Ansible processes used (their user+sys against the
wall time) and how busy the machine's 2 cores were over the run (/proc/stat).

Run after `bin/lab up`: .venv/bin/python bench/multi_host.py [--sizes 1,5,20] [--rounds 2] [--keep] [--playbook P]
It adds the hosts it needs (and removes them at the end unless --keep).
"""

import argparse
import json
import os
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from deploy_demo import parse_time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB = os.path.join(ROOT, "bin", "lab")
PLAYBOOK_BIN = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
PLAYBOOK = os.path.join(ROOT, "playbooks", "deploy.yml")
STACK_DIR = os.path.join(ROOT, "lab", "stack")
KEY_DIR = os.path.join(ROOT, ".lab", "ssh")
COMPOSE_FILE = "docker-compose.platform.yml"
STACK = "benchmh"
PLAIN = "benchplain"
AUTH_PORT = 8080
PLAIN_PORT = 8180
GOAL = 3.0  # the wave of 19 hosts at most 3x one host's deploy


def sh(argv, check=True, **kw):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    if check and proc.returncode != 0:
        raise SystemExit("%s failed (rc=%d):\n%s\n%s" % (" ".join(argv[:8]), proc.returncode, proc.stdout[-4000:],
                                                         proc.stderr[-4000:]))
    return proc


def cpu_ticks():
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Measure:
    """Wall time, the CPU of the processes this one started and waited for (Ansible, ssh), the CPU
    the given hosts used (their daemons and containers), the machine's busy share."""

    def __init__(self, names=()):
        self.names = list(names)

    def __enter__(self):
        self.hosts0 = host_cpu_seconds(self.names)
        self.wall0, self.cpu0, self.ticks0 = time.monotonic(), children_cpu(), cpu_ticks()
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self.wall0
        self.cpu = children_cpu() - self.cpu0
        busy, total = cpu_ticks()
        self.busy = (busy - self.ticks0[0]) / float(max(total - self.ticks0[1], 1))
        after = host_cpu_seconds(self.names)
        self.hosts_cpu = sum(after[n] - self.hosts0[n] for n in self.names)


def stack(tag):
    return {
        "name": STACK,
        "source": STACK_DIR,
        "env": {"RELEASE_TAG": tag, "AUTH_PORT": str(AUTH_PORT)},
        "phases": [{"name": "platform", "compose_files": [COMPOSE_FILE],
                    "checks": [{"name": "auth", "type": "http", "json": {"status": "ok"},
                                "url": "http://127.0.0.1:%d/api/health" % AUTH_PORT}]}],
    }


def ssh_args():
    return ["-i", os.path.join(KEY_DIR, "id_ed25519"),
            "-o", "UserKnownHostsFile=%s" % os.path.join(KEY_DIR, "known_hosts"),
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]


def inventory(tmp, hosts, tags):
    inv = {"vpsops_hosts": {"hosts": {}, "vars": {
        "ansible_user": "root", "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_private_key_file": os.path.join(KEY_DIR, "id_ed25519"),
        "ansible_ssh_common_args": " ".join(ssh_args()[2:]),
        "deploy_phase_timeout": 180}}}
    for host in hosts:
        inv["vpsops_hosts"]["hosts"][host["name"]] = {"ansible_host": host["address"],
                                                      "vpsops_stack": stack(tags[host["name"]])}
    path = os.path.join(tmp, "inventory-%s.json" % secrets.token_hex(4))
    with open(path, "w") as handle:
        json.dump(inv, handle)
    return path


def deploy(tmp, hosts, tags, playbook=PLAYBOOK):
    """deploy.yml on the hosts, each to tags[name]. Returns (Measure, plays, tasks)."""
    inv = inventory(tmp, hosts, tags)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_NOCOLOR="1",
               VPSOPS_AUDIT_LOG=os.path.join(tmp, "audit.jsonl"))
    env["PATH"] = os.path.join(ROOT, ".venv", "bin") + os.pathsep + env.get("PATH", "")
    with Measure(h["name"] for h in hosts) as measure:
        proc = subprocess.run([PLAYBOOK_BIN, "-i", inv, playbook], capture_output=True, text=True, env=env,
                              cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit("deploy.yml on %d hosts failed (rc=%d):\n%s\n%s"
                         % (len(hosts), proc.returncode, proc.stdout[-5000:], proc.stderr[-3000:]))
    data = json.loads(proc.stdout[proc.stdout.find("{"):])
    plays, tasks, runs = [], [], {}
    for play in data["plays"]:
        duration = play["play"]["duration"]
        plays.append((play["play"]["name"], parse_time(duration["end"]) - parse_time(duration["start"])))
        for task in play["tasks"]:
            duration = task["task"]["duration"]
            if "end" in duration:
                tasks.append((task["task"]["name"], parse_time(duration["end"]) - parse_time(duration["start"])))
            for host in task.get("hosts", {}):
                runs[host] = runs.get(host, 0) + 1
    # Task runs per host, skipped ones included (each is a worker process and a templating pass on
    # the controller); a run_once task counts once, for the host it ran on.
    measure.task_runs = statistics.median(runs.values()) if runs else 0
    return measure, plays, tasks


def floor_env(tmp, tag):
    env_file = os.path.join(tmp, "plain-%s.env" % tag)
    with open(env_file, "w") as handle:
        handle.write("RELEASE_TAG=%s\nAUTH_PORT=%d\n" % (tag, PLAIN_PORT))
    return "docker compose -p %s --env-file %s -f %s" % (PLAIN, env_file, os.path.join(STACK_DIR, COMPOSE_FILE))


def on_hosts(hosts, command):
    """The command over SSH on every host at once; SystemExit naming the hosts where it failed."""
    procs = [subprocess.Popen(["ssh"] + ssh_args() + ["root@" + h["address"], command],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for h in hosts]
    failed = [h["name"] for h, p in zip(hosts, procs) if p.wait() != 0]
    if failed:
        raise SystemExit("%r failed on %s" % (command, ", ".join(failed)))


def floor(tmp, hosts, tag):
    """The same change by Docker alone on every host at once, over SSH: `up --wait` of `tag` where
    the other release runs, then curl. Its project exists only around the timed run (the previous
    release brought up before, everything removed after, neither timed), so that ours is measured
    with its own containers only on the hosts."""
    on_hosts(hosts, "%s up -d --wait --wait-timeout 180 >/dev/null 2>&1" % floor_env(tmp, other(tag)))
    command = ("%s up -d --wait --wait-timeout 180 >/dev/null 2>&1 && "
               "curl -sf --max-time 5 http://127.0.0.1:%d/api/health >/dev/null" % (floor_env(tmp, tag), PLAIN_PORT))
    with Measure(h["name"] for h in hosts) as measure:
        on_hosts(hosts, command)
    check_release(hosts, PLAIN_PORT, tag)
    on_hosts(hosts, "%s down -t 2 >/dev/null 2>&1" % floor_env(tmp, tag))
    return measure


def answers(host, port):
    out = sh([LAB, "host", "exec", host["name"], "--", "curl", "-sf", "--max-time", "5",
              "http://127.0.0.1:%d/api/health" % port], check=False).stdout
    try:
        return json.loads(out).get("release")
    except ValueError:
        return None


def check_release(hosts, port, tag):
    wrong = dict((h["name"], answers(h, port)) for h in hosts)
    wrong = dict((k, v) for k, v in wrong.items() if v != tag)
    if wrong:
        raise SystemExit("after the deploy of %s these hosts answer otherwise on :%d: %s" % (tag, port, wrong))


def lab_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("vpsops_lab", os.path.join(ROOT, "lab", "lab.py"))
    lab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lab)
    return lab


def host_memory(names):
    """PSS (MiB) of each host's processes: its daemons (mount namespace) and its containers (cgroup)."""
    lab = lab_module()

    def pss(pid):
        try:
            with open("/proc/%d/smaps_rollup" % pid) as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return 0.0
    return dict((name, sum(pss(pid) for pid in lab.host_processes(name))) for name in names)


def host_cpu_seconds(names):
    """{host: CPU seconds so far}: its containers' cgroup (cpuacct) and its daemons' processes with
    the children they reaped (the runc of every healthcheck exec)."""
    lab = lab_module()
    tick = float(os.sysconf("SC_CLK_TCK"))

    def sample(name):
        total = 0.0
        try:
            with open("/sys/fs/cgroup/cpuacct%s/cpuacct.usage" % lab.host_cgroup(name)) as handle:
                total += int(handle.read()) / 1e9
        except OSError:
            pass
        for pid in lab.host_processes(name):
            try:
                with open("/proc/%d/stat" % pid) as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                total += sum(int(x) for x in fields[11:15]) / tick
            except (OSError, ValueError):
                pass
        return total
    return dict((name, sample(name)) for name in names)


def host_cpu(names, seconds):
    """Cores each host uses at rest over `seconds`."""
    before = host_cpu_seconds(names)
    time.sleep(seconds)
    after = host_cpu_seconds(names)
    return dict((name, (after[name] - before[name]) / seconds) for name in names)


def other(tag):
    return "v2" if tag == "v1" else "v1"


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # so that the hosts are removed
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--sizes", default="1,5,20")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the hosts (mh1..) afterwards")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--playbook", default=PLAYBOOK,
                        help="another deploy playbook to time in the same way (for example an older deploy.yml "
                             "from `git show REV:playbooks/deploy.yml`), default playbooks/deploy.yml")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if sizes[0] != 1:
        sizes.insert(0, 1)
    names = ["mh%d" % i for i in range(1, sizes[-1] + 1)]
    tmp = tempfile.mkdtemp(prefix="bench-multi-host-")
    print("load average at start: %s" % open("/proc/loadavg").read().split()[:3])
    hosts, tags = [], {}
    results = dict((n, {"ours": [], "floor": []}) for n in sizes)
    detail = {}
    try:
        for size in sizes:
            new = names[len(hosts):size]
            with Measure() as added:
                sh([LAB, "host", "add"] + new)
            listed = dict((h["name"], h) for h in json.loads(sh([LAB, "host", "list"]).stdout))
            fresh = [listed[n] for n in new]
            idle = host_memory(new)
            print("%d lab host(s) added in %.1f s (%.2f s a host); idle, each host's processes: %.1f MiB PSS (median)"
                  % (len(new), added.wall, added.wall / len(new), statistics.median(idle.values())))
            # The new hosts get v1 (not timed): the first deploy onto an empty host.
            tags.update((n, "v1") for n in new)
            first, _plays, _tasks = deploy(tmp, fresh, tags)
            check_release(fresh, AUTH_PORT, "v1")
            hosts += fresh
            loaded = host_memory(names[:size])
            cpu = host_cpu(names[:size], 20)
            print("first deploy of v1 to %d empty host(s): %.1f s; with the stack (3 containers) each host's "
                  "processes: %.1f MiB PSS (median); at rest they use %.3f of a core (median), %.2f cores for all %d"
                  % (len(fresh), first.wall, statistics.median(loaded.values()), statistics.median(cpu.values()),
                     sum(cpu.values()), size))
            for rnd in range(args.rounds):
                sides = ("ours", "floor") if rnd % 2 == 0 else ("floor", "ours")
                for side in sides:
                    if side == "ours":
                        for host in hosts:
                            tags[host["name"]] = other(tags[host["name"]])
                        measure, plays, tasks = deploy(tmp, hosts, tags, os.path.abspath(args.playbook))
                        for host in hosts:
                            check_release([host], AUTH_PORT, tags[host["name"]])
                        detail[size] = (measure, plays, tasks)
                    else:
                        measure = floor(tmp, hosts, "v2" if rnd % 2 == 0 else "v1")
                    results[size][side].append(measure)
                    load = open("/proc/loadavg").read().split()[0]
                    line = "  round %d, %2d hosts, %-5s %6.1f s" % (rnd + 1, size, side, measure.wall)
                    runs = (", %d task runs a host" % measure.task_runs) if side == "ours" else ""
                    print("%s  (CPU: controller %5.1f s, hosts %5.1f s; machine busy %3.0f %%, load %s%s)"
                          % (line, measure.cpu, measure.hosts_cpu, 100 * measure.busy, load, runs), flush=True)
        one = statistics.median(m.wall for m in results[1]["ours"])
        print("\nmedians over %d round(s); 'beyond one host' = ((ours N) - (ours 1)) / (N - 1); "
              "'wave/one' = ((ours N) - (ours 1)) / (ours 1), goal at most %.0fx at N = 20" % (args.rounds, GOAL))
        print("CPU: ours = the controller's Ansible and ssh processes + the hosts' daemons and containers; "
              "floor = ssh + the hosts'; both in CPU seconds, and that CPU spread over the machine's 2 cores")
        print("| N | ours | floor | ours/floor | beyond one host, per extra host | wave/one | CPU ours "
              "(controller + hosts) | CPU floor | ours CPU / 2 cores | machine busy |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for size in sizes:
            ours = statistics.median(m.wall for m in results[size]["ours"])
            low = statistics.median(m.wall for m in results[size]["floor"])
            cpu = statistics.median(m.cpu for m in results[size]["ours"])
            hosts_cpu = statistics.median(m.hosts_cpu for m in results[size]["ours"])
            floor_cpu = statistics.median(m.cpu + m.hosts_cpu for m in results[size]["floor"])
            busy = statistics.median(m.busy for m in results[size]["ours"])
            extra = "%.2f s" % ((ours - one) / (size - 1)) if size > 1 else "-"
            wave = "%.2fx" % ((ours - one) / one) if size > 1 else "-"
            print("| %d | %.1f s | %.1f s | %.2fx | %s | %s | %.1f + %.1f s | %.1f s | %.1f s | %.0f %% |"
                  % (size, ours, low, ours / low, extra, wave, cpu, hosts_cpu, floor_cpu, (cpu + hosts_cpu) / 2,
                     100 * busy))
        largest = sizes[-1]
        measure, plays, tasks = detail[largest]
        print("\nwhere the last run on %d hosts went (%.1f s):" % (largest, measure.wall))
        for name, seconds in plays:
            print("  play %6.1f s  %s" % (seconds, name))
        merged = {}
        for name, seconds in tasks:
            merged[name] = merged.get(name, 0.0) + seconds
        for name, seconds in sorted(merged.items(), key=lambda kv: -kv[1])[:args.top]:
            print("  task %6.1f s  %s" % (seconds, name))
    finally:
        if not args.keep:
            present = [h["name"] for h in json.loads(sh([LAB, "host", "list"]).stdout) if h["name"] in names]
            if present:
                sh([LAB, "host", "del"] + present, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
