# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of _nats: /jsz as recorded from nats-server 2.15, PubAck parsing, URLs, pacing."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _nats

# GET /jsz?streams=true&consumers=true&config=true of nats-server 2.15 (trimmed to what is read).
JSZ = json.loads("""{
  "server_id": "NAE6N2LI2YEORXDIEMNRK2XTIQ2J6S7COMK7WA65IY7JK5ZDB5ZGLPNN", "streams": 2, "consumers": 2,
  "account_details": [{"name": "$G", "id": "$G", "stream_detail": [
    {"name": "AR_EVENTS",
     "config": {"name": "AR_EVENTS", "subjects": ["ar.events.>"], "duplicate_window": 120000000000},
     "state": {"messages": 3, "bytes": 228, "first_seq": 1, "last_seq": 3, "consumer_count": 2},
     "consumer_detail": [
       {"stream_name": "AR_EVENTS", "name": "ar", "config": {"durable_name": "ar"},
        "delivered": {"consumer_seq": 2, "stream_seq": 2, "last_active": "2026-11-23T16:30:24.1Z"},
        "ack_floor": {"consumer_seq": 1, "stream_seq": 1, "last_active": "2026-11-23T16:30:25.5Z"},
        "num_ack_pending": 1, "num_redelivered": 4, "num_waiting": 1, "num_pending": 1},
       {"stream_name": "AR_EVENTS", "name": "audit", "config": {"durable_name": "audit"},
        "delivered": {"consumer_seq": 0, "stream_seq": 0}, "ack_floor": {"consumer_seq": 0, "stream_seq": 0},
        "num_ack_pending": 0, "num_redelivered": 0, "num_waiting": 0, "num_pending": 3}]},
    {"name": "PAYMENTS_EVENTS", "config": {"subjects": ["payments.events.>"], "duplicate_window": 60000000000},
     "state": {"messages": 0, "bytes": 0, "first_seq": 0, "last_seq": 0, "consumer_count": 0}}]}]
}""")


def test_summarize_keys_streams_and_consumers_by_name():
    streams, missing = _nats.summarize(JSZ)
    assert missing == []
    assert sorted(streams) == ["AR_EVENTS", "PAYMENTS_EVENTS"]
    ar = streams["AR_EVENTS"]
    assert (ar["messages"], ar["bytes"], ar["first_seq"], ar["last_seq"], ar["consumer_count"]) == (3, 228, 1, 3, 2)
    assert ar["duplicate_window"] == 120.0 and ar["subjects"] == ["ar.events.>"]
    assert ar["consumers"]["ar"] == dict(num_pending=1, num_ack_pending=1, num_redelivered=4, num_waiting=1,
                                         delivered_seq=2, ack_floor_seq=1, last_active="2026-11-23T16:30:25.5Z")
    assert ar["consumers"]["audit"]["last_active"] is None
    assert streams["PAYMENTS_EVENTS"]["consumers"] == {}


def test_summarize_filters_and_names_what_is_missing():
    streams, missing = _nats.summarize(JSZ, ["AR_EVENTS", "INVOICES"], ["ar", "billing"])
    assert list(streams) == ["AR_EVENTS"] and list(streams["AR_EVENTS"]["consumers"]) == ["ar"]
    assert missing == ["INVOICES", "AR_EVENTS/billing"]


def test_summarize_account():
    assert list(_nats.summarize(JSZ, account="$G")[0]) == ["AR_EVENTS", "PAYMENTS_EVENTS"]
    with pytest.raises(_nats.NatsError, match="account 'OPS' has no JetStream on this server"):
        _nats.summarize(JSZ, account="OPS")


@pytest.mark.parametrize("url", ["127.0.0.1:8222", "nats://127.0.0.1:4222", "http:///x"])
def test_monitor_url_must_be_http(url):
    with pytest.raises(_nats.NatsError, match="'url' must be the http:// monitoring base URL"):
        _nats.check_monitor_url(url)


def test_monitor_url_credentials_are_not_shown():
    with pytest.raises(_nats.NatsError) as err:
        _nats.check_monitor_url("ftp://admin:s3cret@host/")
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize("url, expect", [
    (None, ("127.0.0.1", 4222, None, None, None)),
    ("nats://10.0.0.5", ("10.0.0.5", 4222, None, None, None)),
    ("127.0.0.1:4333", ("127.0.0.1", 4333, None, None, None)),
])
def test_parse_nats_url(url, expect):
    assert _nats.parse_nats_url(url) == expect


@pytest.mark.parametrize("url", ["https://bus:4222", "tls://bus:4222", "nats://:4222", "nats://bus:port"])
def test_parse_nats_url_refuses(url):
    with pytest.raises(_nats.NatsError, match="'nats_url' must look like nats://host:4222"):
        _nats.parse_nats_url(url)


@pytest.mark.parametrize("url", ["https://app:hunter2@bus:4222", "nats://app:hunter2@bus:4222",
                                 "nats://hunter2@bus:4222"])
def test_parse_nats_url_refuses_credentials_without_showing_them(url):
    with pytest.raises(_nats.NatsError) as err:
        _nats.parse_nats_url(url)
    assert "hunter2" not in str(err.value)
    assert _nats.url_secrets(url)[-1] == "hunter2"


# PubAck replies as nats-server 2.15 sends them (status line of the header block, JSON body).
@pytest.mark.parametrize("status, body, expect", [
    ("", b'{"stream":"AR_EVENTS","seq":7}', ("AR_EVENTS", 7, False, None)),
    ("", b'{"stream":"AR_EVENTS","seq":2,"duplicate":true}', ("AR_EVENTS", 2, True, None)),
    ("NATS/1.0 503", b"", (None, None, False, "no JetStream stream captures subject a.b (no responders)")),
    ("", b'{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}',
     (None, None, False, "JetStream refused subject a.b: expected stream does not match (code 10060)")),
    ("", b"not json", (None, None, False, "unreadable PubAck for subject a.b: b'not json'")),
    ("", b'{"ok":1}', (None, None, False, "reply for subject a.b is not a PubAck: %r" % b'{"ok":1}')),
    ("NATS/1.0 408 Request Timeout", b"", (None, None, False, "server answered NATS/1.0 408 Request Timeout for subject a.b")),
])
def test_parse_puback(status, body, expect):
    assert _nats.parse_puback("a.b", status, body) == expect


def test_hpub_frames_headers_and_payload():
    client = _nats.NatsClient("nats://127.0.0.1:4222")
    frame = client.hpub("ar.x", "_INBOX.1", {"Nats-Msg-Id": "ev-1"}, b'{"a":1}')
    head, rest = frame.split(b"\r\n", 1)
    hdr = b"NATS/1.0\r\nNats-Msg-Id: ev-1\r\n\r\n"
    assert head == b"HPUB ar.x _INBOX.1 %d %d" % (len(hdr), len(hdr) + 7)
    assert rest == hdr + b'{"a":1}\r\n'


@pytest.mark.parametrize("pattern, subject, ok", [
    ("ar.events.>", "ar.events.x.y", True),
    ("ar.events.>", "ar.events", False),
    ("ar.*.created", "ar.invoice.created", True),
    ("ar.*.created", "ar.invoice.paid", False),
    ("ar.x", "ar.x", True),
    ("ar.x", "ar.x.y", False),
])
def test_match_subject(pattern, subject, ok):
    assert _nats.match_subject(pattern, subject) is ok


def test_pacer_spaces_messages_by_the_rate():
    now = [100.0]
    pacer = _nats.Pacer(4, clock=lambda: now[0])
    delays = []
    for _round in range(3):
        delays.append(pacer.delay())
        pacer.took()
    assert delays == [0.0, 0.25, 0.5]
    now[0] += 0.5
    assert pacer.delay() == 0.25
    assert _nats.Pacer(0).delay() == 0
