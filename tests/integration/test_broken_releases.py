"""The broken releases of the lab (never healthy, a crash after the gates, a stuck consumer) deployed
over a live v2 while events flow: each rolls itself back to v2, and no row is lost, the consumers
catch up and the dead-letter tables do not grow."""

import re
import threading

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _nats
from conftest import Stack, run, wait_until
from test_deploy_flow import db_rows
from test_deploy_playbook import images, playbook, releases, stack_vars


DATA_TABLES = {"processed_events": "event_id", "failed_events": "id", "events_outbox": "id"}
REQUESTED = "ar.events.ar.payment.collection.requested"


def guarded_stack(st, tag):
    """The lab platform with the gates that catch each broken release: payments' consumer of
    AR_EVENTS must keep up (a stuck consumer), the modules' logs must show no FATAL/panic (a crash),
    and a watch window after the cutover (a crash that comes after the gates passed)."""
    values = stack_vars(st, tag=tag)
    modules = values["vpsops_stack"]["phases"][2]
    modules["timeout"] = 45
    modules["checks"] += [
        {"name": "payments-subscribed", "type": "log", "container": st.container("payments"),
         "pattern": "Subscribed to", "fail_pattern": "FATAL|panic"},
        {"name": "payments-consumer", "type": "nats_consumer",
         "url": "http://127.0.0.1:%d" % st.ports["NATS_MONITOR_PORT"], "stream": "AR_EVENTS",
         "consumer": "payments", "max_pending": 5},
    ]
    values["vpsops_watch_seconds"] = 20
    return values


def data_rows(st):
    """Every row of the modules' data tables: {(database, table): {key: row}}."""
    rows = {}
    for which in ("ar", "payments"):
        for table, key in DATA_TABLES.items():
            result = db_rows(st, which, "SELECT %s::text, to_jsonb(t)::text FROM %s t" % (key, table))
            rows[(which, table)] = dict(result)
    return rows


class Events:
    """Publishes a payment request to AR_EVENTS every `interval` seconds until stopped."""

    def __init__(self, st, prefix, interval=0.5):
        self.st, self.prefix, self.interval = st, prefix, interval
        self.sent, self.errors = [], []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        from test_lab import publish

        while not self.stop.is_set():
            event_id = "%s-%d" % (self.prefix, len(self.sent))
            try:
                publish(self.st, REQUESTED, {"event_id": event_id, "tenant_id": "t-drill"})
                self.sent.append(event_id)
            except Exception as exc:  # noqa: BLE001 - recorded, asserted on
                self.errors.append(repr(exc))
            self.stop.wait(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def consumers_pending(st):
    """{"STREAM/consumer": num_pending}, read as nats_stream_info reads it."""
    streams, _missing = _nats.summarize(_nats.fetch_jsz("http://127.0.0.1:%d" % st.ports["NATS_MONITOR_PORT"]))
    return dict(("%s/%s" % (stream, name), consumer["num_pending"])
                for stream, info in streams.items() for name, consumer in info["consumers"].items())


# v3-unhealthy never becomes healthy; v3-crash is healthy, then its modules exit after 15 s and are
# restarted (caught as a restart since the deploy started, in the gate or the watch window, wherever
# the crash falls); v3-stuck runs but its payments consumer stops consuming.
CAUGHT_BY = {
    "v3-unhealthy": r"is unhealthy|not ready",
    "v3-crash": r"restarted \d+ time\(s\) since it was created|is restarting \(restart count|FATAL|has exited",
    "v3-stuck": r"payments-consumer",
}


@pytest.mark.parametrize("broken", sorted(CAUGHT_BY))
def test_a_broken_release_under_traffic_rolls_back_and_loses_nothing(broken, flow_v2, tmp_path):
    st, good, live = flow_v2
    wait_until("the consumers are caught up before the deploy",
               lambda: all(n == 0 for n in consumers_pending(st).values()), timeout=60)
    before = data_rows(st)

    with Events(st, "drill-%s" % broken) as events:
        bad = playbook(tmp_path, guarded_stack(st, broken))
    assert bad.returncode != 0
    assert "rolled back to the live release %s" % live in bad.stdout, bad.stdout[-4000:]
    # ... caught by the protection meant for it.
    assert re.search(CAUGHT_BY[broken], bad.stdout), bad.stdout[-4000:]
    assert events.errors == [] and len(events.sent) > 10, events.errors[:3]

    # v2 runs again, container for container; the broken release is failed, the lock free.
    assert images(st.project) == good
    info = releases(st)
    assert info["live"] == live and info["lock"] is None
    assert info["releases"][0]["status"] == "failed"
    # The consumers caught up: every event sent during the deploy was processed, none is pending.
    wait_until("payments processed every event sent during the deploy", lambda: set(events.sent) <= set(
        row[0] for row in db_rows(st, "payments", "SELECT event_id FROM processed_events")), timeout=90)
    wait_until("no consumer has pending messages",
               lambda: all(n == 0 for n in consumers_pending(st).values()), timeout=60)
    after = data_rows(st)
    # Every row that was there before is still there, unchanged; the dead-letter tables did not grow.
    for (which, table), rows in before.items():
        kept = dict((key, after[(which, table)].get(key)) for key in rows)
        assert kept == rows, (which, table)
    for which in ("ar", "payments"):
        assert after[(which, "failed_events")] == before[(which, "failed_events")], which


@pytest.fixture(scope="module")
def flow_v2(lab, tmp_path_factory):
    """The guarded platform at v2, live, shared by the broken-release drills (each rolls back to it)."""
    st = Stack("vpsops-itbr", 30000)
    st.down()
    run(["rm", "-rf", "/var/lib/vpsops/%s" % st.project])
    first = playbook(tmp_path_factory.mktemp("flow-v2"), guarded_stack(st, "v2"))
    assert first.returncode == 0, first.stdout[-4000:]
    yield st, images(st.project), releases(st)["live"]
    st.down()
    run(["rm", "-rf", "/var/lib/vpsops/%s" % st.project])


def config_hashes(project):
    """{container name: compose config hash label} of the project."""
    ids = run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=%s" % project]).stdout.split()
    out = run(["docker", "inspect", "--format",
               '{{.Name}} {{index .Config.Labels "com.docker.compose.config-hash"}} {{.State.Status}}'] + ids).stdout
    return dict((line.split()[0].lstrip("/"), tuple(line.split()[1:])) for line in out.splitlines())


def test_a_release_that_changes_only_the_env_is_rolled_back_to_the_live_configuration(flow_v2, tmp_path):
    """Same images, another AR_DB_PASSWORD (the database keeps its own): AR cannot connect and
    the modules phase fails. The rollback has no image to change, and still puts back what ran:
    every container on the live release's configuration, running."""
    st, good, live = flow_v2
    before = config_hashes(st.project)
    values = guarded_stack(st, "v2")
    values["vpsops_stack"]["env"]["AR_DB_PASSWORD"] = "not-the-database-password-4411"
    values["vpsops_stack"]["phases"][2]["timeout"] = 20
    values["vpsops_stack"]["phases"][2]["checks"].append(
        {"name": "ar-no-fatal", "type": "log", "container": st.container("ar"), "pattern": "Connected to database",
         "fail_pattern": "password authentication failed"})
    bad = playbook(tmp_path, values)
    assert bad.returncode != 0
    assert "rolled back to the live release %s" % live in bad.stdout, bad.stdout[-4000:]
    assert "not-the-database-password-4411" not in bad.stdout
    assert images(st.project) == good
    assert config_hashes(st.project) == before
    info = releases(st)
    assert info["live"] == live and info["lock"] is None and info["releases"][0]["status"] == "failed"
