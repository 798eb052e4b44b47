#!/usr/bin/env python3
"""Benchmark: vpsops.deploy.dlq_report's summary over 1,000,000 failed_events rows against the
runbook's hand-written SQL (seeds/000: check-dlq.sh's count and per-subject query, and the
"analyze the error pattern" query), measured in the same run on the same table.

  (a) _dlq.report_one: the whole summary (totals, by subject, by normalized error, by tenant,
      oldest/newest, age buckets, retry counts, outbox) in one statement, via docker exec psql;
  (a') the same with the host's psql over TCP;
  (b) the runbook: docker exec psql for SELECT COUNT(*), then subject counts with MAX(failed_at),
      then error counts (3 docker exec, far less information);
  and the floor of this machine: SELECT COUNT(*) alone through docker exec.
Medians of ROUNDS runs after one warm-up. Run: .venv/bin/python bench/dlq_report.py [ROWS] [ROUNDS]
"""

import statistics
import sys
import time

from events_lab import SCHEMA, Postgres

from ansible_collections.vpsops.deploy.plugins.module_utils import _dlq, _pgcli

FILL = """
INSERT INTO failed_events (event_id, subject, tenant_id, envelope_json, error, retry_count, failed_at)
SELECT md5(g::text), 'ar.events.ar.' || (ARRAY['invoice.created','invoice.paid','invoice.voided','payment.requested',
       'customer.created','credit.applied','refund.issued','dunning.started'])[1 + g % 8],
       'tenant-' || (g % 250),
       json_build_object('event_id', md5(g::text), 'tenant_id', 'tenant-' || (g % 250), 'amount_minor', g % 10000)::jsonb,
       (ARRAY['timeout after ' || (g % 30) || 's calling payments',
              'invoice ' || g || ' not found',
              'deadlock detected on relation ' || (16000 + g % 50),
              'schema validation failed: missing field amount_minor',
              'payments service unavailable (HTTP 503)'])[1 + g % 5],
       1 + g % 5, now() - make_interval(secs => (g % 5184000))
FROM generate_series(1, %d) g;
INSERT INTO events_outbox (event_id, subject, payload, published_at)
SELECT 'o' || g, 'ar.events.x', '{}', CASE WHEN g %% 10 = 0 THEN NULL ELSE now() END FROM generate_series(1, 1000) g;
ANALYZE failed_events;
ANALYZE events_outbox;
"""

RUNBOOK = [
    "SELECT COUNT(*) FROM failed_events;",
    "SELECT subject, COUNT(*) as count, MAX(failed_at) as last_failure FROM failed_events GROUP BY subject "
    "ORDER BY count DESC;",
    "SELECT error, COUNT(*) FROM failed_events GROUP BY error ORDER BY count DESC;",
]


def timed(func, rounds):
    func()  # warm-up: caches, plans
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    pg = Postgres().start()
    try:
        start = time.perf_counter()
        pg.psql_host(SCHEMA + FILL.replace("%d", str(rows)).replace("%%", "%"))
        print("filled %d failed_events rows in %.1f s" % (rows, time.perf_counter() - start))
        table = _dlq.Table({})
        in_container = _pgcli.PgCli(pg.params(container=True))
        from_host = _pgcli.PgCli(pg.params(container=False))
        baseline = {"max_id": rows - 1000, "total": rows - 1000}
        summary = _dlq.report_one(in_container, table, baseline)
        assert summary["total"] == rows and summary["new"] == 1000, summary
        a = timed(lambda: _dlq.report_one(in_container, table, baseline), rounds)
        a_host = timed(lambda: _dlq.report_one(from_host, table, baseline), rounds)
        b = timed(lambda: [pg.exec_psql(sql) for sql in RUNBOOK], rounds)
        floor = timed(lambda: pg.exec_psql(RUNBOOK[0]), rounds)
        print("dlq_report summary, docker exec psql  (a):  %.3f s" % a)
        print("dlq_report summary, host psql        (a'): %.3f s" % a_host)
        print("runbook SQL, 3 x docker exec psql    (b):  %.3f s" % b)
        print("floor: SELECT COUNT(*) alone, docker exec:  %.3f s" % floor)
        print("a / b = %.2fx (a gives %d subjects, %d error shapes, %d tenants (top 20), %d age buckets, "
              "%d retry counts, outbox %s)" % (a / b, len(summary["by_subject"]), len(summary["by_error"]),
                                               len(summary["by_tenant"]), len(summary["age_buckets"]),
                                               len(summary["retry_counts"]), summary["outbox_unpublished"]))
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
