# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of _dlq: identifiers and literals, filters, baselines and thresholds, envelopes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _dlq


@pytest.mark.parametrize("name, quoted", [
    ("failed_events", '"failed_events"'),
    ("dlq.failed_events", '"dlq"."failed_events"'),
    ("Ev$2", '"Ev$2"'),
])
def test_ident_quotes(name, quoted):
    assert _dlq.ident(name, "table") == quoted


@pytest.mark.parametrize("name", ["", None, "a b", 'x"; DROP TABLE t; --', "a.b.c", "1abc", "a" * 64, "t;"])
def test_ident_refuses_anything_else(name):
    with pytest.raises(_dlq.DlqError, match="'columns.error' must be a table or column name"):
        _dlq.ident(name, "columns.error")


@pytest.mark.parametrize("value, sql", [
    ("plain", "E'plain'"),
    ("it's", "E'it''s'"),
    ("back\\slash'; DROP TABLE t; --", "E'back\\\\slash''; DROP TABLE t; --'"),
    (5, "5"),
    (1.5, "1.5"),
    (None, "NULL"),
    (True, "true"),
])
def test_literal(value, sql):
    assert _dlq.literal(value) == sql


def test_literal_refuses_nul():
    with pytest.raises(_dlq.DlqError, match="NUL"):
        _dlq.literal("a\x00b")


@pytest.mark.parametrize("pattern, matches, misses", [
    ("ar.events.>", ["ar.events.x", "ar.events.x.y"], ["ar.events", "ar.eventsx.y", "xar.events.y"]),
    ("ar.*.created", ["ar.invoice.created"], ["ar.invoice.paid", "ar.a.b.created"]),
    ("pay-ments.ok", ["pay-ments.ok"], ["pay-mentsXok"]),
])
def test_subject_regex_follows_nats_wildcards(pattern, matches, misses):
    # POSIX ERE and Python agree on these constructs
    regex = re.compile(_dlq.subject_regex(pattern))
    assert all(regex.match(s) for s in matches)
    assert not any(regex.match(s) for s in misses)


@pytest.mark.parametrize("pattern", ["ar events", "ar.>.x", "ar..x", "ar.ev*", ""])
def test_subject_regex_refuses_bad_filters(pattern):
    with pytest.raises(_dlq.DlqError, match="'subject' must be a NATS subject filter"):
        _dlq.subject_regex(pattern)


def test_table_columns_and_outbox_options():
    t = _dlq.Table({"table": "dlq.dead", "columns": {"error": "reason", "id": None}, "outbox_table": ""})
    assert t.table == '"dlq"."dead"' and t.col["error"] == '"reason"' and t.col["id"] == '"id"'
    assert t.outbox is None
    assert _dlq.Table({}).outbox == '"events_outbox"'
    with pytest.raises(_dlq.DlqError, match="'columns' has unknown keys payload"):
        _dlq.Table({"columns": {"payload": "x"}})


def test_where_combines_filters_with_literals_only():
    t = _dlq.Table({})
    where = t.where(ids=[3, "4"], event_ids=["e'1"], subject="ar.>", error_pattern="time.?out", older_than_days=2,
                    newer_than_days=0.5)
    assert where == (' WHERE "id" IN (3, 4) AND "event_id" IN (E\'e\'\'1\') AND "subject" ~ E\'^ar\\\\..+$\' '
                     'AND "error" ~* E\'time.?out\' AND "failed_at" < now() - make_interval(secs => 172800.0) '
                     'AND "failed_at" >= now() - make_interval(secs => 43200.0)')
    assert t.where() == ""
    assert t.where(cutoff="2026-01-01 00:00:00+00", older_than_days=30) == \
        ' WHERE "failed_at" < E\'2026-01-01 00:00:00+00\'::timestamptz'
    with pytest.raises(ValueError):
        t.where(ids=["1; DROP TABLE x"])


@pytest.mark.parametrize("baseline, name, entry", [
    ({"databases": {"ar": {"total": 5, "max_id": 40}}}, "ar", {"max_id": 40, "total": 5}),
    ({"ar": {"total": 5, "max_id": 40}}, "ar", {"max_id": 40, "total": 5}),
    ({"ar": 5}, "ar", {"max_id": None, "total": 5}),
    ({"ar": {"total": 5}}, "ar", {"max_id": None, "total": 5}),
    ({"databases": {"ar": {"total": 5, "max_id": 40}}}, "payments", {"max_id": 0, "total": 0}),
    (None, "ar", None),
])
def test_baseline_entry(baseline, name, entry):
    assert _dlq.baseline_entry(baseline, name) == entry


def test_baseline_entry_refuses_junk():
    with pytest.raises(_dlq.DlqError, match="'baseline' for database 'ar' must be an earlier dlq_report result"):
        _dlq.baseline_entry({"ar": "lots"}, "ar")


@pytest.mark.parametrize("entry, current, new", [
    ({"max_id": 40, "total": 5}, {"total": 4, "new": 2}, 2),  # purged 3, 2 new: ids tell
    ({"max_id": None, "total": 5}, {"total": 8, "new": None}, 3),
    ({"max_id": None, "total": 5}, {"total": 2, "new": None}, 0),
    (None, {"total": 8}, None),
])
def test_new_since(entry, current, new):
    assert _dlq.new_since(entry, current) == new


@pytest.mark.parametrize("total, new, max_total, max_new, exceeded", [
    (5, 1, None, None, []),
    (5, 1, 5, 1, []),
    (6, 1, 5, None, ["total 6 failed events > max_total 5"]),
    (6, 2, 5, 1, ["total 6 failed events > max_total 5", "2 new failed events since the baseline > max_new 1"]),
    (6, None, None, 0, []),
])
def test_judge(total, new, max_total, max_new, exceeded):
    assert _dlq.judge(total, new, max_total, max_new) == exceeded


@pytest.mark.parametrize("text, payload", [
    ('{"event_id": "e1", "n": 1}', b'{"event_id": "e1", "n": 1}'),
    (json.dumps('{"event_id": "e1"}'), b'{"event_id": "e1"}'),
])
def test_envelope_payload(text, payload):
    assert _dlq.envelope_payload(text) == payload


@pytest.mark.parametrize("text, error", [
    ("{not json", "Expecting property name"),
    ("[1, 2]", "envelope is JSON but not an object"),
    (None, "envelope is NULL"),
    ('"just a string"', "Expecting value"),
])
def test_envelope_payload_refuses(text, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        _dlq.envelope_payload(text)


def test_report_sql_scans_the_table_twice_with_quoted_names():
    t = _dlq.Table({"table": "dead", "columns": {"subject": "subj"}})
    sql = _dlq.report_sql(t, baseline_max_id=41, top=5, outbox=True)
    assert sql.count('FROM "dead"') == 2
    assert '"subj" AS s' in sql and "FILTER (WHERE \"id\" > 41)" in sql and "LIMIT 5" in sql
    assert 'FROM "events_outbox" WHERE "published_at" IS NULL' in sql
    assert "FILTER (WHERE \"id\"" not in _dlq.report_sql(t)


@pytest.mark.parametrize("error, shape", [
    ("timeout after 30s calling payments 3f2b8c1e-9d4a-4f6b-8a2e-1c5d7e9f0a1b", "timeout after <n>s calling payments <n>"),
    ("invoice 991 not found", "invoice <n> not found"),
])
def test_normalized_error_shapes(error, shape):
    # the same folding in Python: digits to '#', then the SQL regexp (POSIX and Python agree here)
    expr = _dlq.normalized("e")
    regex = re.search(r"'(\[#a-fA-F\]\{8\}.*?\|#\+)'", expr).group(1)
    assert re.sub(regex, "<n>", error.translate(str.maketrans("0123456789", "#" * 10))) == shape
