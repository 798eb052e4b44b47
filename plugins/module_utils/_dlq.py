# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The dead-letter table of the platform (`failed_events`) and its `events_outbox`: a summary
computed on the server, growth against a baseline, replay to JetStream and purge. Private to this
collection.

Every statement goes through `_pgcli.PgCli` (psql in the database's container, or the host's psql),
so the managed host needs no Python driver. Table and column names are options: each is checked
against a strict identifier pattern and double-quoted; values are SQL literals built by `literal()`
(an escape string, independent of standard_conforming_strings). SQL travels on stdin, never argv.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import tempfile

from ansible_collections.vpsops.deploy.plugins.module_utils._nats import NatsConnectionError, Pacer
from ansible_collections.vpsops.deploy.plugins.module_utils._pgcli import PgCliError

COLUMNS = dict(
    id="id",
    event_id="event_id",
    subject="subject",
    tenant_id="tenant_id",
    envelope="envelope_json",
    error="error",
    retry_count="retry_count",
    failed_at="failed_at",
)
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
SUBJECT_TOKEN_RE = re.compile(r"^[^\s.*>]+$")
AGE_BUCKETS = [("lt_1h", "1 hour"), ("1h_24h", "24 hours"), ("1d_7d", "7 days"), ("7d_30d", "30 days")]
DEFAULT_TOP = 20


class DlqError(Exception):
    """Bad options or a failed statement; the message names the option or the database."""


class SchemaError(DlqError):
    """The table or a column named by the options does not exist: waiting will not fix it."""


def dlq_argument_spec():
    """Table, column and outbox options (documented by the doc fragment vpsops.deploy.dlq)."""
    return dict(
        table=dict(type="str", default="failed_events"),
        columns=dict(type="dict", default={}, options=dict(
            (key, dict(type="str", default=value)) for key, value in COLUMNS.items())),
        outbox_table=dict(type="str", default="events_outbox"),
        outbox_published_column=dict(type="str", default="published_at"),
    )


# --------------------------------------------------------------------------------------------
# SQL building blocks
# --------------------------------------------------------------------------------------------
def ident(name, option):
    """A (schema-qualified) identifier, double-quoted; DlqError naming `option` otherwise."""
    parts = str(name).split(".") if name else []
    if not parts or len(parts) > 2 or not all(IDENT_RE.match(p) for p in parts):
        raise DlqError("'%s' must be a table or column name (letters, digits, _ and $, optionally "
                       "schema.name), got %r" % (option, name))
    return ".".join('"%s"' % p for p in parts)


def literal(value):
    """A SQL literal for a string or number."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if "\x00" in text:
        raise DlqError("values cannot contain NUL characters")
    return "E'%s'" % text.replace("\\", "\\\\").replace("'", "''")


def subject_regex(pattern):
    """A NATS subject filter (`*` one token, `>` the rest) -> an anchored POSIX regex."""
    tokens = str(pattern).split(".")
    out = []
    for i, tok in enumerate(tokens):
        if tok == "*":
            out.append("[^.]+")
        elif tok == ">" and i == len(tokens) - 1:
            out.append(".+")
        elif SUBJECT_TOKEN_RE.match(tok):
            out.append("".join(c if c.isalnum() else "\\" + c for c in tok))
        else:
            raise DlqError("'subject' must be a NATS subject filter such as ar.events.> or ar.*.created, "
                           "got %r" % pattern)
    return "^" + "\\.".join(out) + "$"


class Table:
    """The quoted names of one dead-letter table and its outbox, from the module's options."""

    def __init__(self, params):
        self.table = ident(params.get("table") or "failed_events", "table")
        self.table_name = params.get("table") or "failed_events"
        columns = dict(COLUMNS)
        columns.update(dict((k, v) for k, v in (params.get("columns") or {}).items() if v))
        unknown = sorted(set(columns) - set(COLUMNS))
        if unknown:
            raise DlqError("'columns' has unknown keys %s; known: %s" % (", ".join(unknown), ", ".join(sorted(COLUMNS))))
        self.names = columns
        self.col = dict((k, ident(v, "columns.%s" % k)) for k, v in columns.items())
        outbox = params.get("outbox_table", "events_outbox")
        self.outbox = ident(outbox, "outbox_table") if outbox else None
        self.outbox_name = outbox or None
        self.published = ident(params.get("outbox_published_column") or "published_at", "outbox_published_column")
        self.published_name = params.get("outbox_published_column") or "published_at"

    def preflight_sql(self):
        def columns_of(quoted):
            return ("(SELECT coalesce(json_agg(attname::text), '[]') FROM pg_attribute WHERE attrelid = "
                    "to_regclass(%s) AND attnum > 0 AND NOT attisdropped)" % literal(quoted))

        parts = ["'table', to_regclass(%s) IS NOT NULL" % literal(self.table),
                 "'columns', " + columns_of(self.table)]
        if self.outbox:
            parts += ["'outbox', to_regclass(%s) IS NOT NULL" % literal(self.outbox),
                      "'outbox_columns', " + columns_of(self.outbox)]
        return "SELECT json_build_object(%s)" % ", ".join(parts)

    def preflight(self, cli, need=None):
        """Check the table and columns exist; return whether the outbox can be counted.
        `need`: the column keys this caller uses (all by default)."""
        found = query(cli, self.preflight_sql())
        if not found.get("table"):
            raise SchemaError("table %s does not exist in %s (option 'table')" % (self.table_name, cli.describe()))
        have = set(found.get("columns") or [])
        missing = ["columns.%s=%s" % (k, self.names[k]) for k in (need or sorted(COLUMNS)) if self.names[k] not in have]
        if missing:
            raise SchemaError("table %s in %s has no column %s (its columns: %s)"
                              % (self.table_name, cli.describe(), ", ".join(missing), ", ".join(sorted(have))))
        if not self.outbox:
            return False
        if not found.get("outbox"):
            return False
        if self.published_name not in (found.get("outbox_columns") or []):
            raise SchemaError("table %s in %s has no column %s (option 'outbox_published_column')"
                              % (self.outbox_name, cli.describe(), self.published_name))
        return True

    def where(self, ids=None, event_ids=None, subject=None, error_pattern=None, older_than_days=None,
              newer_than_days=None, cutoff=None, extra=None):
        """A WHERE clause (or '') selecting rows by the replay/purge filters."""
        c = self.col
        cond = []
        if ids:
            cond.append("%s IN (%s)" % (c["id"], ", ".join(str(int(i)) for i in ids)))
        if event_ids:
            cond.append("%s IN (%s)" % (c["event_id"], ", ".join(literal(e) for e in event_ids)))
        if subject:
            cond.append("%s ~ %s" % (c["subject"], literal(subject_regex(subject))))
        if error_pattern:
            cond.append("%s ~* %s" % (c["error"], literal(error_pattern)))
        if cutoff is not None:
            cond.append("%s < %s::timestamptz" % (c["failed_at"], literal(cutoff)))
        elif older_than_days is not None:
            cond.append("%s < now() - make_interval(secs => %s)" % (c["failed_at"], literal(float(older_than_days) * 86400)))
        if newer_than_days is not None:
            cond.append("%s >= now() - make_interval(secs => %s)" % (c["failed_at"], literal(float(newer_than_days) * 86400)))
        cond += list(extra or [])
        return (" WHERE " + " AND ".join(cond)) if cond else ""


def query(cli, sql, timeout=None):
    """query_json with PgCliError turned into DlqError (same message)."""
    try:
        return cli.query_json(sql, timeout=timeout)
    except PgCliError as exc:
        raise DlqError(str(exc))


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def normalized(expr):
    """Errors grouped by their shape: numbers (and UUIDs) replaced by <n>, cut at 200 characters.
    Applied to the distinct errors after grouping: translate() folds every digit to '#' (cheap),
    the regexp then runs only on the few shapes left."""
    uuid = "[#a-fA-F]{8}-[#a-fA-F]{4}-[#a-fA-F]{4}-[#a-fA-F]{4}-[#a-fA-F]{12}"
    return ("left(regexp_replace(translate(%s, '0123456789', '##########'), '%s|#+', '<n>', 'g'), 200)"
            % (expr, uuid))


def report_sql(t, baseline_max_id=None, top=DEFAULT_TOP, outbox=False):
    """One statement -> the summary as one JSON value, from two plain aggregates over the table
    that PostgreSQL runs with parallel workers (GROUPING SETS cannot be): counts by (subject,
    tenant, retry count) with age-bucket counts and min/max, rolled up every way; counts by error,
    normalized per distinct error."""
    c = t.col
    top = int(top)
    new = "count(*) FILTER (WHERE %s > %d)" % (c["id"], int(baseline_max_id)) if baseline_max_id is not None \
        else "NULL::bigint"
    cond = []
    for i, (_name, span) in enumerate(AGE_BUCKETS):
        cond.append("%s >= now() - interval '%s'" % (c["failed_at"], span))
        if i:
            cond[-1] += " AND %s < now() - interval '%s'" % (c["failed_at"], AGE_BUCKETS[i - 1][1])
    cond.append("%s < now() - interval '%s'" % (c["failed_at"], AGE_BUCKETS[-1][1]))
    names = [name for name, _span in AGE_BUCKETS] + ["gt_30d"]
    per_bucket = ", ".join("count(*) FILTER (WHERE %s) AS b%d" % (x, i) for i, x in enumerate(cond))
    buckets = ", ".join("'%s', coalesce(sum(b%d), 0)::bigint" % (name, i) for i, name in enumerate(names))

    def rollup(key, limit=True, order="n DESC, k"):
        return ("(SELECT coalesce(json_object_agg(k, n ORDER BY {order}), '{{}}') FROM (SELECT coalesce({key}::text, '') "
                "AS k, sum(n)::bigint AS n FROM g GROUP BY {key} ORDER BY {inner}{limit}) s)").format(
            order=order, key=key, inner="sum(n) DESC, %s" % key if limit else key,
            limit=" LIMIT %d" % top if limit else "")

    outbox_sql = ("(SELECT count(*) FROM %s WHERE %s IS NULL)" % (t.outbox, t.published)) if outbox else "NULL"
    # Hash aggregates of a large table spill to disk at the default work_mem of 4 MB.
    return """SET work_mem = '64MB';
WITH g AS MATERIALIZED (
  SELECT {subject} AS s, {tenant} AS tn, {retry} AS rc, count(*) AS n, {new} AS new, {per_bucket},
         max({id}) AS max_id, min({failed_at}) AS oldest, max({failed_at}) AS newest
  FROM {table} GROUP BY 1, 2, 3),
e AS (SELECT {norm} AS k, sum(n)::bigint AS n
      FROM (SELECT translate(e, '0123456789', '##########') AS e, sum(n) AS n
            FROM (SELECT {error} AS e, count(*) AS n FROM {table} GROUP BY 1) x GROUP BY 1) y
      GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {top})
SELECT json_build_object(
  'total', coalesce(sum(n), 0)::bigint, 'new', sum(new)::bigint, 'max_id', max(max_id), 'oldest', min(oldest),
  'newest', max(newest), 'age_buckets', json_build_object({buckets}),
  'by_subject', {by_subject},
  'by_error', (SELECT coalesce(json_object_agg(k, n ORDER BY n DESC, k), '{{}}') FROM e),
  'by_tenant', {by_tenant},
  'retry_counts', {retries},
  'outbox_unpublished', {outbox})
FROM g""".format(
        per_bucket=per_bucket, new=new, id=c["id"], failed_at=c["failed_at"], buckets=buckets, table=t.table,
        subject=c["subject"], tenant=c["tenant_id"], retry=c["retry_count"], error=c["error"], top=top,
        norm=normalized("e").replace("translate(e, '0123456789', '##########')", "e"), by_subject=rollup("s"),
        by_tenant=rollup("tn"), retries=rollup("rc", limit=False, order="k::int"), outbox=outbox_sql)


def counts_sql(t, baseline_max_id=None):
    """Total, max id and rows newer than the baseline: the cheap query of the health gate."""
    new = "count(*) FILTER (WHERE %s > %d)" % (t.col["id"], int(baseline_max_id)) if baseline_max_id is not None \
        else "NULL::bigint"
    return "SELECT json_build_object('total', count(*), 'max_id', max(%s), 'new', %s) FROM %s" % (
        t.col["id"], new, t.table)


def baseline_entry(baseline, name):
    """The baseline of one database: {max_id, total} from an earlier dlq_report result, its
    `databases`, or {name: total}."""
    if not baseline:
        return None
    if isinstance(baseline, dict) and isinstance(baseline.get("databases"), dict):
        baseline = baseline["databases"]
    entry = baseline.get(name) if isinstance(baseline, dict) else None
    if entry is None:
        return {"max_id": 0, "total": 0}
    if isinstance(entry, dict):
        max_id = entry.get("max_id")
        return {"max_id": int(max_id) if max_id is not None else None, "total": int(entry.get("total") or 0)}
    try:
        return {"max_id": None, "total": int(entry)}
    except (TypeError, ValueError):
        raise DlqError("'baseline' for database %r must be an earlier dlq_report result or a count, got %r"
                       % (name, entry))


def new_since(entry, current):
    """Failed events since the baseline: rows above its max id, or else the growth of the total."""
    if entry is None:
        return None
    if entry.get("max_id") is not None and current.get("new") is not None:
        return int(current["new"])
    return max(0, int(current.get("total") or 0) - entry["total"])


def report_one(cli, t, baseline=None, top=DEFAULT_TOP):
    """The summary of one database; `baseline` is its baseline_entry (or None)."""
    outbox = t.preflight(cli, need=["id", "subject", "tenant_id", "error", "retry_count", "failed_at"])
    max_id = baseline.get("max_id") if baseline else None
    summary = query(cli, report_sql(t, max_id, top, outbox))
    summary["new"] = new_since(baseline, summary)
    summary["max_id"] = summary.get("max_id") or (baseline or {}).get("max_id") or 0
    return summary


def judge(total, new, max_total=None, max_new=None):
    """Sentences for the thresholds exceeded."""
    exceeded = []
    if max_total is not None and total > max_total:
        exceeded.append("total %d failed events > max_total %d" % (total, max_total))
    if max_new is not None and new is not None and new > max_new:
        exceeded.append("%d new failed events since the baseline > max_new %d" % (new, max_new))
    return exceeded


# --------------------------------------------------------------------------------------------
# replay
# --------------------------------------------------------------------------------------------
def select_batch_sql(t, where, after_id, size, mark_column=None):
    c = t.col
    cond = "%s > %d" % (c["id"], int(after_id))
    if mark_column:
        cond += " AND %s IS NULL" % mark_column
    where = (where + " AND " + cond) if where else " WHERE " + cond
    return ("SELECT coalesce(json_agg(json_build_object('id', i, 'event_id', ev, 'subject', s, 'envelope', env) "
            "ORDER BY i), '[]') FROM (SELECT {id} AS i, {ev} AS ev, {s} AS s, {env}::text AS env FROM {table}{where} "
            "ORDER BY {id} LIMIT {size}) r").format(id=c["id"], ev=c["event_id"], s=c["subject"], env=c["envelope"],
                                                    table=t.table, where=where, size=int(size))


def done_sql(t, ids, on_success, mark_column, next_batch=None):
    """Delete (or mark) the acknowledged rows and, in the same round trip, read the next batch:
    -> {"done": count, "rows": [...]}. The next batch has higher ids, so it never holds a row
    this statement removes."""
    id_list = ", ".join(str(int(i)) for i in ids) or "NULL"
    if on_success == "mark":
        change = "UPDATE %s SET %s = now() WHERE %s IN (%s) RETURNING 1" % (t.table, mark_column, t.col["id"], id_list)
    else:
        change = "DELETE FROM %s WHERE %s IN (%s) RETURNING 1" % (t.table, t.col["id"], id_list)
    return "WITH d AS (%s) SELECT json_build_object('done', (SELECT count(*) FROM d), 'rows', (%s))" % (
        change, next_batch or "SELECT '[]'::json")


def envelope_payload(text):
    """The bytes to publish for one row's envelope, or raise ValueError saying why not."""
    if text is None:
        raise ValueError("envelope is NULL")
    parsed = json.loads(text)
    if isinstance(parsed, str):
        # JSON stored as a JSON string (double-encoded): publish the inner document if it is JSON.
        parsed = json.loads(parsed)
        text = json.dumps(parsed)
    if not isinstance(parsed, dict):
        raise ValueError("envelope is JSON but not an object")
    return text.encode("utf-8")


def replay(cli, t, client, filters, limit=None, batch_size=1000, on_success="delete", mark_column=None,
           rate=0, window=256, check_mode=False, max_failures=100):
    """Publish the selected rows to JetStream (Nats-Msg-Id = event id), then delete or mark the
    acknowledged ones batch by batch (one psql round trip per batch: this batch's removal and the
    next batch's rows). Returns the result dict; a lost connection stops the replay cleanly
    (`stopped` says why): rows without a PubAck stay in the table."""
    t.preflight(cli, need=["id", "event_id", "subject", "envelope"])
    mark = None
    if on_success == "mark":
        mark = ident(mark_column, "mark_column")
        found = query(cli, "SELECT json_build_object('has', EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
                           "to_regclass(%s) AND attname = %s AND NOT attisdropped))"
                      % (literal(t.table), literal(mark_column)))
        if not found.get("has"):
            raise DlqError("table %s in %s has no column %s to mark replayed rows (option 'mark_column')"
                           % (t.table_name, cli.describe(), mark_column))
    where = t.where(**filters)
    result = dict(selected=0, replayed=0, duplicates=0, errors=0, removed=0, marked=0, failures=[], stopped=None,
                  event_ids=[])
    pacer = Pacer(rate)
    remaining = limit
    size = batch_size if remaining is None else min(batch_size, remaining)
    rows = query(cli, select_batch_sql(t, where, 0, size, mark))
    connected = False
    try:
        while rows:
            after = rows[-1]["id"]
            result["selected"] += len(rows)
            if remaining is not None:
                remaining -= len(rows)
            messages = []
            for row in rows:
                try:
                    payload = envelope_payload(row["envelope"])
                except ValueError as exc:
                    fail(result, row, "malformed envelope_json: %s" % exc, max_failures)
                    continue
                if not row.get("event_id"):
                    fail(result, row, "no event id to use as Nats-Msg-Id", max_failures)
                    continue
                messages.append((row, row["subject"], {"Nats-Msg-Id": row["event_id"]}, payload))
            done = []
            if check_mode:
                result["replayed"] += len(messages)
                result["event_ids"] += [m[0]["event_id"] for m in messages][:1000 - len(result["event_ids"])]
            else:
                acked = []
                try:
                    if not connected:
                        client.connect()
                        connected = True
                    client.publish_many(messages, window=window, pacer=pacer, on_result=acked.append)
                except NatsConnectionError as exc:
                    result["stopped"] = str(exc)
                for res in acked:
                    row = res.key
                    if not res.ok:
                        fail(result, row, res.error, max_failures)
                        continue
                    result["duplicates" if res.duplicate else "replayed"] += 1
                    if len(result["event_ids"]) < 1000:
                        result["event_ids"].append(row["event_id"])
                    done.append(row["id"])
            more = not result["stopped"] and len(rows) == size and (remaining is None or remaining > 0)
            if more:
                size = batch_size if remaining is None else min(batch_size, remaining)
            next_batch = select_batch_sql(t, where, after, size, mark) if more else None
            if done:
                answer = query(cli, done_sql(t, done, on_success, mark, next_batch))
                result["marked" if on_success == "mark" else "removed"] += int(answer["done"])
                rows = answer["rows"]
            else:
                rows = query(cli, next_batch) if next_batch else []
    finally:
        if connected:
            client.close()
    return result


def fail(result, row, error, max_failures):
    result["errors"] += 1
    if len(result["failures"]) < max_failures:
        result["failures"].append({"id": row["id"], "event_id": row.get("event_id"), "subject": row.get("subject"),
                                   "error": error})


# --------------------------------------------------------------------------------------------
# purge
# --------------------------------------------------------------------------------------------
def purge_plan(cli, t, older_than_days, subject=None):
    """Fix the cutoff on the server and count what matches: {cutoff, count, max_id}."""
    t.preflight(cli, need=["id", "subject", "failed_at"])
    plan = query(cli, "SELECT json_build_object('cutoff', (now() - make_interval(secs => %s))::text)"
                 % literal(float(older_than_days) * 86400))
    where = t.where(subject=subject, cutoff=plan["cutoff"])
    counts = query(cli, "SELECT json_build_object('count', count(*), 'max_id', max(%s)) FROM %s%s"
                   % (t.col["id"], t.table, where))
    plan.update(count=int(counts["count"]), max_id=counts["max_id"], where=where)
    return plan


def export_rows(cli, t, plan, path, timeout=None):
    """Write the planned rows as JSON lines to `path`: a 0600 temp file in the same directory,
    fsynced, then renamed; returns the number of lines. Nothing is left behind on failure."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise DlqError("'export': directory %s does not exist" % directory)
    where = plan["where"] + (" AND " if plan["where"] else " WHERE ") + "%s <= %d" % (t.col["id"], int(plan["max_id"] or 0))
    sql = "SELECT to_jsonb(r)::text FROM %s r%s ORDER BY %s" % (t.table, where, t.col["id"])
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            rc, _out, err = cli.run("psql", ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", cli.db],
                                    input_text=sql, stdout=handle, timeout=timeout)
            if rc != 0:
                raise DlqError("export of %s on %s failed (rc=%s): %s" % (t.table_name, cli.describe(), rc, err.strip()))
            handle.flush()
            os.fsync(handle.fileno())
        with open(tmp, "rb") as handle:
            lines = sum(1 for line in handle if line.strip())
        os.rename(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return lines


def purge(cli, t, plan, batch_size=1000):
    """Delete the planned rows (id <= the planned max id) in batches, one transaction each."""
    deleted, batches = 0, 0
    if not plan["count"]:
        return deleted, batches
    cond = "%s <= %d" % (t.col["id"], int(plan["max_id"]))
    where = plan["where"] + (" AND " if plan["where"] else " WHERE ") + cond
    sql = ("WITH d AS (DELETE FROM {table} WHERE {id} IN (SELECT {id} FROM {table}{where} ORDER BY {id} LIMIT {n}) "
           "RETURNING 1) SELECT count(*) FROM d").format(table=t.table, id=t.col["id"], where=where, n=int(batch_size))
    while True:
        count = int(query(cli, sql) or 0)
        if not count:
            return deleted, batches
        deleted += count
        batches += 1
