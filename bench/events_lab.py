"""The parts the event bus benchmarks need, started and removed by them: a PostgreSQL container of
the lab image and a nats-server with JetStream, on loopback ports 27500-27999 (prefix vpsops-ev)."""

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".lab", "collections"))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")

SCHEMA = """
DROP TABLE IF EXISTS failed_events;
CREATE TABLE failed_events (
    id BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL, subject TEXT NOT NULL, tenant_id TEXT,
    envelope_json JSONB NOT NULL, error TEXT NOT NULL, retry_count INTEGER NOT NULL DEFAULT 0,
    failed_at TIMESTAMPTZ NOT NULL DEFAULT now());
DROP TABLE IF EXISTS events_outbox;
CREATE TABLE events_outbox (
    id BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, subject TEXT NOT NULL, payload JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(), published_at TIMESTAMPTZ);
"""


def wait(what, func, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if func():
                return
        except Exception:  # noqa: BLE001 - retried until the deadline
            pass
        time.sleep(0.2)
    raise SystemExit("%s not ready within %ss" % (what, timeout))


class Postgres:
    def __init__(self, name="vpsops-ev-bench-pg", port=27532, user="ev_user", db="ar_db"):
        self.name, self.port, self.user, self.db = name, port, user, db
        self.password = "bench-" + secrets.token_hex(8)

    def params(self, container=True):
        if container:
            return dict(container=self.name, db=self.db, login_user=self.user, login_password=self.password)
        return dict(login_host="127.0.0.1", port=self.port, db=self.db, login_user=self.user,
                    login_password=self.password)

    def start(self):
        subprocess.run(["docker", "rm", "-f", "-v", self.name], capture_output=True, check=False)
        subprocess.run(["docker", "run", "-d", "--name", self.name, "-e", "POSTGRES_USER=" + self.user,
                        "-e", "POSTGRES_DB=" + self.db, "-e", "POSTGRES_PASSWORD=" + self.password,
                        "-p", "127.0.0.1:%d:5432" % self.port, "vpsops-lab/postgres:15"],
                       capture_output=True, check=True)
        wait("PostgreSQL", lambda: self.psql_host("SELECT 1") == "1")
        return self

    def psql_host(self, sql):
        proc = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", self.db,
                               "-Atq", "-v", "ON_ERROR_STOP=1"], input=sql, capture_output=True, text=True,
                              env=dict(os.environ, PGPASSWORD=self.password), check=False)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        return proc.stdout.strip()

    def exec_psql(self, sql):
        """What the runbook does: docker exec -i CONTAINER psql -U user -d db << SQL."""
        proc = subprocess.run(["docker", "exec", "-i", self.name, "psql", "-U", self.user, "-d", self.db],
                              input=sql, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        return proc.stdout

    def stop(self):
        subprocess.run(["docker", "rm", "-f", "-v", self.name], capture_output=True, check=False)


class Nats:
    def __init__(self, port=27522, monitor=27922):
        self.port, self.monitor = port, monitor
        self.dir = tempfile.mkdtemp(prefix="vpsops-ev-bench-")
        self.proc = None

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    def start(self):
        self.proc = subprocess.Popen([os.path.join(VENV_BIN, "nats-server"), "-a", "127.0.0.1", "-p", str(self.port),
                                      "-m", str(self.monitor), "-js", "-sd", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait("nats-server", lambda: urllib.request.urlopen(
            "http://127.0.0.1:%d/healthz?js-enabled-only=true" % self.monitor, timeout=1).status == 200)
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
