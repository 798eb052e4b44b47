#!/usr/bin/env python3
"""Benchmark: vpsops.deploy.pg_backup / pg_restore against the plain commands, in one run.

A PostgreSQL 15 container of the lab (`vpsops-bk-bench`, 127.0.0.1:26435) holds a database of
about 1 GB (`bench`) and one of about 70 MB (`small`), both made with generate_series (made once;
reused when the container is still there; removed at the end unless --keep).

At about 70 MB the fixed costs of a backup show (module start, checksum, verification, docker
exec round trips). Per small round, in alternating order:
  (g) raw:        docker exec … pg_dump -Fc > file, of `small`
  (h) pg_backup:  format custom, default verification, sha256, fsync, manifest (make_backup)
  (i) pg_backup:  the same as the module's own process on the managed host: interpreter start,
                  imports, argument parsing, JSON result (what Ansible runs there, without the
                  controller and SSH)
  (j) pg_backup:  the same as an Ansible task: ansible-playbook over SSH to the lab host (lab1) runs
                  ping (to open the connection), pg_backup, ping; (j) is the pg_backup task's
                  duration from the ansible.posix.json callback, (n) the second ping's (what any
                  module run costs: the controller's side, SSH, AnsiballZ, the interpreter)
Then, per round on the 1 GB database (skipped with --small-only):
  (a) raw:        docker exec … pg_dump -Fc > file
  (b) pg_backup:  format custom, default verification (pg_restore --list), sha256, fsync, manifest
  (c) pg_backup:  format directory, jobs 2, default verification, streamed out of the container
  (d) raw:        docker exec -i … pg_restore --clean --if-exists --single-transaction < file
  (e) pg_restore: the same restore with safety_backup false (sha256 check, session termination,
                  exact row counts before and after: count(*) reads every table twice)
  (f) pg_restore: as (e) with row_counts: estimate (n_live_tup, no table read)
Every other round runs the dumps and the restores in reverse order; a CHECKPOINT before the first
round writes out what making the databases dirtied. After every restore an untimed
VACUUM sets the hint bits of the freshly loaded tables, so each step starts from a database like a
live one.
pg_backup and pg_restore are called through their module_utils (_backup.make_backup and
_backup.restore, exactly what the modules run), except (i), so Ansible's start-up (about 1-2 s) is
not in the figures. It prints medians and the ratios h/g and i/g (goal <= 1.3), b/a (goal <= 1.3),
c/a, e/d (goal <= 1.2) and f/d; j/g and (j-n)/g (the task beyond a no-op module run).

Run: .venv/bin/python bench/pg_backup.py [--rounds N] [--small-rounds N] [--small-only] [--keep] [--no-ansible]
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
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".lab", "collections"))

from ansible_collections.vpsops.deploy.plugins.module_utils import _backup as backup  # noqa: E402

NAME = "vpsops-bk-bench"
PORT = 26435
USER = "bench"
DB = "bench"
IMAGE = "vpsops-lab/postgres:15"
ROWS = 7000000
TARGET = 900 * 1024 * 1024
SMALL_DB = "small"
SMALL_ROWS = 420000
SMALL_TARGET = 65 * 1024 * 1024
WORK = "/tmp/vpsops-bk-bench"
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
PLAYBOOK_BIN = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
MODULE = "ansible_collections.vpsops.deploy.plugins.modules.pg_backup"
LAB_HOST = "lab1"
# (j): the password comes from a vars file (0600), never argv
PLAYBOOK = """- name: One pg_backup task between two no-op module runs
  hosts: %(host)s
  gather_facts: false
  vars_files: [%(vars)s]
  tasks:
    - name: Open the connection
      ansible.builtin.ping:
    - name: Back up
      vpsops.deploy.pg_backup: "{{ bench_pg_backup }}"
    - name: No-op
      ansible.builtin.ping:
"""


def sh(argv, **kwargs):
    kwargs.setdefault("check", True)
    return subprocess.run(argv, stdout=kwargs.pop("stdout", subprocess.PIPE), stderr=subprocess.PIPE, **kwargs)


def psql(sql, db=DB):
    return sh(["docker", "exec", "-i", NAME, "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", USER,
               "-d", db], input=sql.encode()).stdout.decode().strip()


def password():
    """The password of a container made earlier is in its environment; a new one gets a new one."""
    out = sh(["docker", "inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", NAME], check=False)
    for line in out.stdout.decode().splitlines():
        if line.startswith("POSTGRES_PASSWORD="):
            return line.split("=", 1)[1]
    return None


def database_size(db=DB):
    try:
        return int(psql("SELECT pg_database_size(%s)" % "'%s'" % db))
    except (subprocess.CalledProcessError, ValueError):
        return 0


def fill(db, rows):
    psql("CREATE TABLE events AS SELECT g AS id, now() - g * interval '1 second' AS at, md5(g::text) AS a, "
         "md5((g * 7)::text) AS b, mod(g, 1000) AS n FROM generate_series(1, %d) g;"
         "ALTER TABLE events ADD PRIMARY KEY (id);"
         "CREATE TABLE customers AS SELECT g AS id, 'customer ' || g AS name FROM generate_series(1, 100000) g;"
         "VACUUM ANALYZE;" % rows, db=db)


def ensure_small():
    """The ~70 MB database, made beside the big one (in a container made earlier too)."""
    if database_size(SMALL_DB) >= SMALL_TARGET:
        return
    psql("DROP DATABASE IF EXISTS %s" % SMALL_DB)
    psql("CREATE DATABASE %s" % SMALL_DB)
    fill(SMALL_DB, SMALL_ROWS)
    print("made database %s: %.0f MB" % (SMALL_DB, database_size(SMALL_DB) / 1e6))


def ensure_database(big=True):
    secret = password()
    if secret and database_size("postgres") and (not big or database_size() >= TARGET):
        if big:
            print("reusing %s (%.2f GB)" % (NAME, database_size() / 1e9))
        ensure_small()
        return secret
    sh(["docker", "rm", "-f", NAME], check=False)
    secret = "bench-" + secrets.token_hex(8)
    sh(["docker", "run", "-d", "--name", NAME, "-e", "POSTGRES_USER=" + USER, "-e", "POSTGRES_DB=" + DB,
        "-e", "POSTGRES_PASSWORD=" + secret, "-p", "127.0.0.1:%d:5432" % PORT, IMAGE])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # over TCP: the init's temporary server listens only on the socket
        if sh(["docker", "exec", NAME, "pg_isready", "-h", "127.0.0.1", "-U", USER, "-d", DB],
              check=False).returncode == 0:
            break
        time.sleep(1)
    started = time.monotonic()
    if big:
        fill(DB, ROWS)
        print("made %s: %.2f GB in %.0fs" % (NAME, database_size() / 1e9, time.monotonic() - started))
    ensure_small()
    return secret


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, 0o700)
    return path


def settle():
    """Untimed, after every restore: VACUUM sets the hint bits of the freshly loaded tables, so the
    next step starts from a database like a live one, not one only just loaded."""
    psql("VACUUM")


def private_file(path, text):
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(text)


def task_seconds(task):
    times = task["task"]["duration"]
    start, end = (datetime.datetime.fromisoformat(times[k].replace("Z", "+00:00")) for k in ("start", "end"))
    return (end - start).total_seconds()


def small_rounds(secret, rounds, ansible=True):
    """(g), (h), (i), (j) on the ~70 MB database, in an order that rotates each round; their times
    (and (n), the no-op task beside (j))."""
    params = dict(db=SMALL_DB, login_user=USER, login_password=secret, container=NAME, docker_cli="docker",
                  format="custom", jobs=1, verify="toc", space_factor=1.0, timeout=0, container_tmpdir="/tmp")
    raw_file = os.path.join(WORK, "small-raw", "raw.dump")
    args_file = os.path.join(WORK, "module-args.json")
    made = {}
    private_file(args_file, json.dumps({"ANSIBLE_MODULE_ARGS": dict(params, dest=os.path.join(WORK, "small-module"))}))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, ".lab", "collections"))
    vars_file, playbook = os.path.join(WORK, "ansible-vars.json"), os.path.join(WORK, "pg_backup.yml")
    private_file(vars_file, json.dumps({"bench_pg_backup": dict(params, dest=os.path.join(WORK, "small-ansible"))}))
    private_file(playbook, PLAYBOOK % dict(host=LAB_HOST, vars=vars_file))
    ansible_env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                       ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_NOCOLOR="1")

    def raw_dump():
        fresh(os.path.dirname(raw_file))
        with open(raw_file, "wb") as out:
            sh(["docker", "exec", NAME, "pg_dump", "-U", USER, "-Fc", "-d", SMALL_DB], stdout=out)

    def make_backup():
        made["h"] = backup.make_backup(dict(params, dest=fresh(os.path.join(WORK, "small-backup"))))

    def module_process():
        fresh(os.path.join(WORK, "small-module"))
        proc = sh([PYTHON, "-m", MODULE, args_file], env=env, check=False)
        result = json.loads(proc.stdout.decode() or "{}")
        if proc.returncode != 0 or not result.get("verified"):
            raise SystemExit("the pg_backup module failed (rc=%d): %s" % (proc.returncode, result.get("msg")))
        made["i"] = result

    def ansible_task():
        fresh(os.path.join(WORK, "small-ansible"))
        proc = sh([PLAYBOOK_BIN, playbook], env=ansible_env, cwd=ROOT, check=False)
        text = proc.stdout.decode()
        try:
            tasks = json.loads(text[text.find("{"):])["plays"][0]["tasks"]
            result = tasks[1]["hosts"][LAB_HOST]
        except (ValueError, KeyError, IndexError):
            raise SystemExit("ansible-playbook gave no result (rc=%d): %s %s"
                             % (proc.returncode, text[-2000:], proc.stderr.decode()[-2000:]))
        if proc.returncode != 0 or not result.get("verified"):
            raise SystemExit("the pg_backup task failed (rc=%d): %s" % (proc.returncode, result.get("msg")))
        times["n"].append(task_seconds(tasks[2]))
        return task_seconds(tasks[1])

    steps = [("g", raw_dump), ("h", make_backup), ("i", module_process)] + ([("j", ansible_task)] if ansible else [])
    times = dict((key, []) for key, _step in steps)
    times["n"] = []
    for index in range(rounds):
        turn = steps[index % len(steps):] + steps[:index % len(steps)]
        for key, step in turn:
            started = time.monotonic()
            seconds = step()
            times[key].append(seconds if seconds is not None else time.monotonic() - started)
        last = dict((key, values[-1]) for key, values in times.items() if values)
        print("small round %d: raw dump %.2fs, pg_backup %.2fs (%.0f MB, h/g %.2fx), module process %.2fs (i/g %.2fx)%s, "
              "load average %.1f"
              % (index + 1, last["g"], last["h"], made["h"]["size"] / 1e6, last["h"] / last["g"], last["i"],
                 last["i"] / last["g"], ", ansible task %.2fs (j/g %.2fx), no-op task %.2fs ((j-n)/g %.2fx)"
                 % (last["j"], last["j"] / last["g"], last["n"], (last["j"] - last["n"]) / last["g"]) if ansible else "",
                 os.getloadavg()[0]), flush=True)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds on the 1 GB database")
    parser.add_argument("--small-rounds", type=int, default=9, help="rounds on the ~70 MB database")
    parser.add_argument("--small-only", action="store_true", help="only the ~70 MB database (no 1 GB one is made)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark container and its database")
    parser.add_argument("--no-ansible", action="store_true", help="leave out (j), the pg_backup task through Ansible")
    args = parser.parse_args()
    secret = ensure_database(big=not args.small_only)
    size, small_size = database_size(), database_size(SMALL_DB)
    params = dict(db=DB, login_user=USER, login_password=secret, container=NAME, docker_cli="docker",
                  jobs=1, verify="toc", space_factor=1.0, timeout=0, container_tmpdir="/tmp")
    raw_file = os.path.join(WORK, "raw", "raw.dump")
    made = {}

    def raw_dump():
        fresh(os.path.dirname(raw_file))
        with open(raw_file, "wb") as out:
            sh(["docker", "exec", NAME, "pg_dump", "-U", USER, "-Fc", "-d", DB], stdout=out)

    def module_dump(fmt, jobs):
        made[fmt] = backup.make_backup(dict(params, dest=fresh(os.path.join(WORK, fmt)), format=fmt, jobs=jobs))

    def raw_restore():
        with open(raw_file, "rb") as stdin:
            sh(["docker", "exec", "-i", NAME, "pg_restore", "-U", USER, "-d", DB, "--clean", "--if-exists",
                "--exit-on-error", "--single-transaction"], stdin=stdin)
        settle()

    def module_restore(counting):
        backup.restore(dict(params, src=made["custom"]["path"], safety_backup=False, row_counts=counting))
        settle()

    steps = [("a", raw_dump), ("b", lambda: module_dump("custom", 1)), ("c", lambda: module_dump("directory", 2)),
             ("d", raw_restore), ("e", lambda: module_restore("exact")), ("f", lambda: module_restore("estimate"))]
    times = dict((key, []) for key, _step in steps)
    rounds = 0 if args.small_only else args.rounds
    try:
        fresh(WORK)
        # the load and VACUUM leave dirty buffers (about 1 GB): write them out before any timing
        psql("VACUUM ANALYZE")
        psql("VACUUM ANALYZE", db=SMALL_DB)
        psql("CHECKPOINT")
        times.update(small_rounds(secret, args.small_rounds, ansible=not args.no_ansible))
        for index in range(rounds):
            # every other round runs the steps of each group in reverse, so neither side is always first
            dumps, restores = steps[:3], steps[3:]
            if index % 2:
                dumps, restores = dumps[::-1], restores[::-1]
            for key, step in dumps + restores:
                started = time.monotonic()
                step()
                times[key].append(time.monotonic() - started)
            last = dict((key, values[-1]) for key, values in times.items())
            print("round %d: raw dump %.1fs, pg_backup custom %.1fs (%.0f MB, b/a %.2fx), pg_backup directory -j2 "
                  "%.1fs (c/a %.2fx), raw restore %.1fs, pg_restore exact counts %.1fs (e/d %.2fx), estimated "
                  "counts %.1fs (f/d %.2fx)"
                  % (index + 1, last["a"], last["b"], made["custom"]["size"] / 1e6, last["b"] / last["a"], last["c"],
                     last["c"] / last["a"], last["d"], last["e"], last["e"] / last["d"], last["f"],
                     last["f"] / last["d"]))
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
        if not args.keep:
            sh(["docker", "rm", "-f", "-v", NAME], check=False)
    med = dict((k, statistics.median(v)) for k, v in times.items() if v)
    print("database of %.0f MB, %d round(s), medians" % (small_size / 1e6, args.small_rounds))
    print("(g) raw docker exec pg_dump -Fc > file             %7.2fs" % med["g"])
    print("(h) pg_backup custom, verify toc                   %7.2fs   h/g = %.2fx (goal <= 1.3x)"
          % (med["h"], med["h"] / med["g"]))
    print("(i) pg_backup module process, verify toc           %7.2fs   i/g = %.2fx (goal <= 1.3x)"
          % (med["i"], med["i"] / med["g"]))
    if "j" in med:
        print("(j) pg_backup task through Ansible over SSH        %7.2fs   j/g = %.2fx" % (med["j"], med["j"] / med["g"]))
        print("(n) no-op task (ping) in the same runs             %7.2fs   (j-n)/g = %.2fx (goal <= 1.3x)"
              % (med["n"], (med["j"] - med["n"]) / med["g"]))
    if not rounds:
        return
    print("database of %.2f GB, %d round(s), medians" % (size / 1e9, rounds))
    print("(a) raw docker exec pg_dump -Fc > file             %7.1fs" % med["a"])
    print("(b) pg_backup custom, verify toc                   %7.1fs   b/a = %.2fx (goal <= 1.3x)"
          % (med["b"], med["b"] / med["a"]))
    print("(c) pg_backup directory -j 2, verify toc           %7.1fs   c/a = %.2fx" % (med["c"], med["c"] / med["a"]))
    print("(d) raw docker exec pg_restore --clean             %7.1fs" % med["d"])
    print("(e) pg_restore, no safety backup, exact counts     %7.1fs   e/d = %.2fx (goal <= 1.2x)"
          % (med["e"], med["e"] / med["d"]))
    print("(f) pg_restore, no safety backup, estimated counts %7.1fs   f/d = %.2fx" % (med["f"], med["f"] / med["d"]))


if __name__ == "__main__":
    main()
