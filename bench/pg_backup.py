#!/usr/bin/env python3
"""Benchmark: vpsops.deploy.pg_backup / pg_restore against the plain commands, in one run.

A PostgreSQL 15 container of the lab (`vpsops-bk-bench`, 127.0.0.1:26435) holds a database of
about 1 GB made with generate_series (made once; reused when the container is still there; removed
at the end unless --keep). Then, per round:
  (a) raw:        docker exec … pg_dump -Fc > file
  (b) pg_backup:  format custom, default verification (pg_restore --list), sha256, fsync, manifest
  (c) pg_backup:  format directory, jobs 2, default verification, streamed out of the container
  (d) raw:        docker exec -i … pg_restore --clean --if-exists --single-transaction < file
  (e) pg_restore: the same restore with safety_backup false (sha256 check, session termination,
                  exact row counts before and after: count(*) reads every table twice)
  (f) pg_restore: as (e) with row_counts: estimate (n_live_tup, no table read)
Every other round runs the dumps and the restores in reverse order; a CHECKPOINT before the first
round writes out what making the database dirtied. After every restore an untimed
VACUUM sets the hint bits of the freshly loaded tables, so each step starts from a database like a
live one.
pg_backup and pg_restore are called through their module_utils (_backup.make_backup and
_backup.restore, exactly what the modules run), so Ansible's start-up (about 1-2 s) is not in the
figures. It prints medians and the ratios b/a (goal <= 1.3), c/a, e/d (goal <= 1.2) and f/d.

Run: .venv/bin/python bench/pg_backup.py [--rounds N] [--keep]
"""

import argparse
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
WORK = "/tmp/vpsops-bk-bench"


def sh(argv, **kwargs):
    kwargs.setdefault("check", True)
    return subprocess.run(argv, stdout=kwargs.pop("stdout", subprocess.PIPE), stderr=subprocess.PIPE, **kwargs)


def psql(sql):
    return sh(["docker", "exec", "-i", NAME, "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", USER,
               "-d", DB], input=sql.encode()).stdout.decode().strip()


def password():
    """The password of a container made earlier is in its environment; a new one gets a new one."""
    out = sh(["docker", "inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", NAME], check=False)
    for line in out.stdout.decode().splitlines():
        if line.startswith("POSTGRES_PASSWORD="):
            return line.split("=", 1)[1]
    return None


def database_size():
    try:
        return int(psql("SELECT pg_database_size(current_database())"))
    except (subprocess.CalledProcessError, ValueError):
        return 0


def ensure_database():
    secret = password()
    if secret and database_size() >= TARGET:
        print("reusing %s (%.2f GB)" % (NAME, database_size() / 1e9))
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
    psql("CREATE TABLE events AS SELECT g AS id, now() - g * interval '1 second' AS at, md5(g::text) AS a, "
         "md5((g * 7)::text) AS b, mod(g, 1000) AS n FROM generate_series(1, %d) g;"
         "ALTER TABLE events ADD PRIMARY KEY (id);"
         "CREATE TABLE customers AS SELECT g AS id, 'customer ' || g AS name FROM generate_series(1, 100000) g;"
         "VACUUM ANALYZE;" % ROWS)
    print("made %s: %.2f GB in %.0fs" % (NAME, database_size() / 1e9, time.monotonic() - started))
    return secret


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, 0o700)
    return path


def settle():
    """Untimed, after every restore: VACUUM sets the hint bits of the freshly loaded tables, so the
    next step starts from a database like a live one, not one only just loaded."""
    psql("VACUUM")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark container and its database")
    args = parser.parse_args()
    secret = ensure_database()
    size = database_size()
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
    try:
        # the load and VACUUM leave about 1 GB of dirty buffers: write them out before any timing
        psql("VACUUM ANALYZE")
        psql("CHECKPOINT")
        for index in range(args.rounds):
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
    med = dict((k, statistics.median(v)) for k, v in times.items())
    print("database of %.2f GB, %d round(s), medians" % (size / 1e9, args.rounds))
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
