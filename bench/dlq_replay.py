#!/usr/bin/env python3
"""Benchmark: vpsops.deploy.dlq_replay's engine replaying 10,000 failed events, unthrottled, against
a plain nats-py loop publishing the same events with acks, in the same run on the same server.

  (a) _dlq.replay: rows read from PostgreSQL in batches, each envelope published with its
      Nats-Msg-Id and confirmed by its PubAck (standard-library client, pipelined), rows deleted
      per batch; psql in the container (docker exec) and from the host;
  (b) nats-py: `await js.publish(subject, payload, headers={"Nats-Msg-Id": id})` in a loop (each
      waits for its PubAck), payloads already in memory, no database at all.
Throughput = events / second; the goal is a / b >= 0.8. Each round uses a fresh stream.
Run: .venv/bin/python bench/dlq_replay.py [EVENTS] [ROUNDS]
"""

import asyncio
import json
import statistics
import sys
import time

from events_lab import SCHEMA, Nats, Postgres

from ansible_collections.vpsops.deploy.plugins.module_utils import _dlq, _nats, _pgcli

FILL = """
INSERT INTO failed_events (event_id, subject, tenant_id, envelope_json, error, retry_count)
SELECT 'ev-%(round)s-' || g, 'bench.events.ar.invoice.created', 'tenant-' || (g %% 50),
       json_build_object('event_id', 'ev-%(round)s-' || g, 'tenant_id', 'tenant-' || (g %% 50), 'amount_minor', g,
                         'currency', 'EUR', 'lines', json_build_array(json_build_object('sku', 'A-' || g, 'qty', 1)))::jsonb,
       'payments unavailable', 3
FROM generate_series(1, %(rows)s) g;
"""


async def fresh_stream(url):
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        await js.delete_stream("BENCH_EVENTS")
    except Exception:  # noqa: BLE001 - absent the first time
        pass
    await js.add_stream(StreamConfig(name="BENCH_EVENTS", subjects=["bench.events.>"]))
    await nc.close()


async def nats_py_loop(url, messages):
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    start = time.perf_counter()
    for event_id, subject, payload in messages:
        ack = await js.publish(subject, payload, headers={"Nats-Msg-Id": event_id})
        assert not ack.duplicate
    took = time.perf_counter() - start
    await nc.close()
    return took


def main():
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    pg, bus = Postgres(), Nats()
    pg.start()
    bus.start()
    try:
        pg.psql_host(SCHEMA)
        table = _dlq.Table({})
        results = {"container": [], "host": [], "nats-py": []}
        for rnd in range(rounds):
            for mode in ("container", "host"):
                asyncio.run(fresh_stream(bus.url))
                pg.psql_host("TRUNCATE failed_events;" + FILL % {"round": "%s%d" % (mode, rnd), "rows": events})
                cli = _pgcli.PgCli(pg.params(container=(mode == "container")))
                start = time.perf_counter()
                r = _dlq.replay(cli, table, _nats.NatsClient(bus.url), {})
                took = time.perf_counter() - start
                assert r["replayed"] == events and r["removed"] == events and not r["errors"], r
                results[mode].append(events / took)
            # the same envelopes, already in memory
            asyncio.run(fresh_stream(bus.url))
            pg.psql_host("TRUNCATE failed_events;" + FILL % {"round": "py%d" % rnd, "rows": events})
            rows = json.loads(pg.psql_host(
                "SELECT json_agg(json_build_object('id', event_id, 's', subject, 'p', envelope_json::text) ORDER BY id) "
                "FROM failed_events"))
            messages = [(r["id"], r["s"], r["p"].encode()) for r in rows]
            results["nats-py"].append(events / asyncio.run(nats_py_loop(bus.url, messages)))
        a_c, a_h, b = (statistics.median(results[k]) for k in ("container", "host", "nats-py"))
        print("replay of %d events, median of %d rounds (events/s):" % (events, rounds))
        print("  dlq_replay, psql via docker exec (a):  %8.0f" % a_c)
        print("  dlq_replay, host psql            (a'): %8.0f" % a_h)
        print("  nats-py publish loop with acks   (b):  %8.0f" % b)
        print("  a / b = %.2fx   a' / b = %.2fx   (goal >= 0.8x)" % (a_c / b, a_h / b))
    finally:
        bus.stop()
        pg.stop()


if __name__ == "__main__":
    main()
