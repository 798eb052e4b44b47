# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of the SLO gate: option checks, percentiles, judging, and measuring a local server."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _slo as slo


def params(**overrides):
    base = dict(endpoints=[{"name": "auth", "url": "http://127.0.0.1:1/"}], requests=20, interval=0.0,
                request_timeout=5.0, baseline=None, max_error_rate=0.05, max_p95_ratio=2.0, min_p95_ms=50.0,
                fail_on_exceeded=True)
    base.update(overrides)
    return base


@pytest.mark.parametrize("values, pct, expected", [
    ([], 95, None),
    ([7.0], 95, 7.0),
    ([float(v) for v in range(1, 21)], 95, 19.0),
    ([float(v) for v in range(1, 21)], 50, 10.0),
    ([float(v) for v in range(1, 101)], 95, 95.0),
    ([1.0, 2.0, 3.0], 100, 3.0),
])
def test_nearest_rank_percentile(values, pct, expected):
    assert slo.percentile(values, pct) == expected


@pytest.mark.parametrize("endpoints, message", [
    ([], "endpoints must be a non-empty list"),
    (["http://x/"], "endpoints[0] must be a dict"),
    ([{"url": "http://127.0.0.1/"}], "endpoints[0] needs a 'name'"),
    ([{"name": "auth"}], "endpoints[0] (auth) needs a 'url'"),
    ([{"name": "auth", "url": "http://[::1/api"}], "endpoints[0] (auth): 'url' is not a valid URL"),
    ([{"name": "auth", "url": "http://127.0.0.1:99999/"}], "endpoints[0] (auth): 'url' is not a valid URL"),
    ([{"name": "auth", "url": "ftp://127.0.0.1/file"}], "must be an http:// or https:// URL, got scheme 'ftp'"),
    ([{"name": "auth", "url": "127.0.0.1:8080/api/health"}], "must be an http:// or https:// URL"),
    ([{"name": "auth", "url": "http:///api/health"}], "endpoints[0] (auth): 'url' has no host"),
    ([{"name": "auth", "url": "http://127.0.0.1:0/"}], "'url' has port 0"),
    ([{"name": "auth", "url": "http://a/", "method": "GET /x"}], "'method' must be an HTTP method"),
    ([{"name": "auth", "url": "http://a/", "status": [200, 42]}], "'status' must list HTTP status codes"),
    ([{"name": "auth", "url": "http://a/", "status": ["ok"]}], "'status' must list HTTP status codes"),
    ([{"name": "auth", "url": "http://a/"}, {"name": "ar", "url": "http://b/"}, {"name": "auth", "url": "http://c/"}],
     "endpoints[2]: the name 'auth' is already used by endpoints[0]; names must be unique"),
])
def test_bad_endpoints_are_refused_naming_the_option(endpoints, message):
    with pytest.raises(slo.SloSpecError) as err:
        slo.build_endpoints(endpoints)
    assert message in str(err.value)


def test_credentials_in_a_bad_url_are_not_shown():
    with pytest.raises(slo.SloSpecError) as err:
        slo.build_endpoints([{"name": "auth", "url": "ftp://admin:s3cret@127.0.0.1/"}])
    assert "s3cret" not in str(err.value)
    assert "***@127.0.0.1" in str(err.value)


@pytest.mark.parametrize("key, value", [
    ("requests", 0), ("requests", 1001), ("interval", -1), ("request_timeout", 0), ("max_error_rate", 1.5),
    ("max_error_rate", -0.1), ("max_p95_ratio", 0.5), ("min_p95_ms", -1),
])
def test_numeric_options_out_of_bounds_are_refused(key, value):
    with pytest.raises(slo.SloSpecError) as err:
        slo.check_bounds(params(**{key: value}))
    assert str(err.value).startswith("%s must be between" % key)


STATS = {"requests": 20, "errors": 0, "error_rate": 0.0, "p50_ms": 2.0, "p95_ms": 3.0, "max_ms": 4.0,
         "statuses": {"200": 20}, "errors_by_reason": {}}


@pytest.mark.parametrize("baseline, expected", [
    (None, {}),
    ({}, {}),
    ({"changed": False, "endpoints": {"auth": STATS}, "exceeded": [], "baseline_used": False}, {"auth": 3.0}),
    ({"auth": STATS, "ar": dict(STATS, p95_ms=None)}, {"auth": 3.0, "ar": None}),
    ({"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}, {}),
    ({"endpoints": {"p95_ms": 1.0}}, {"endpoints": 1.0}),  # an endpoint named "endpoints"
])
def test_baseline_is_a_result_or_its_endpoints(baseline, expected):
    assert slo.baseline_endpoints(baseline) == expected


@pytest.mark.parametrize("baseline, message", [
    ({"auth": {"p50_ms": 2}}, "baseline: the entry for endpoint 'auth' must be a dict with 'p95_ms'"),
    ({"auth": "fast"}, "baseline: the entry for endpoint 'auth'"),
    ({"auth": dict(STATS, p95_ms="fast")}, "baseline: 'p95_ms' of endpoint 'auth' must be a number or null"),
    ({"endpoints": ["auth"]}, "baseline: 'endpoints' must be a dict"),
    (["auth"], "baseline must be a previous result of slo_gate"),
])
def test_bad_baseline_is_refused(baseline, message):
    with pytest.raises(slo.SloSpecError) as err:
        slo.baseline_endpoints(baseline)
    assert message in str(err.value)


def stats(errors=0, p95=3.0, requests=20, reasons=None):
    return dict(STATS, requests=requests, errors=errors, error_rate=round(errors / float(requests), 4), p95_ms=p95,
                errors_by_reason=reasons or ({"HTTP 500": errors} if errors else {}))


@pytest.mark.parametrize("measured, baseline, expected, compared", [
    # error rate alone (no baseline)
    (stats(errors=1), {}, [], []),  # 5% is the limit and passes
    (stats(errors=2), {}, ["auth: error rate 10% (2 of 20 requests failed: 2 x HTTP 500) is above the limit 5%"], []),
    (stats(errors=20, p95=None, reasons={"connection refused": 20}), {},
     ["auth: error rate 100% (20 of 20 requests failed: 20 x connection refused) is above the limit 5%"], []),
    (stats(p95=900.0), {}, [], []),  # no baseline: latency is not judged
    # latency against a baseline
    (stats(p95=110.0), {"auth": 60.0}, [], ["auth"]),
    (stats(p95=130.0), {"auth": 60.0},
     ["auth: p95 latency 130 ms is above the limit 120 ms (2 x the baseline p95 of 60 ms)"], ["auth"]),
    (stats(p95=7.0), {"auth": 3.0}, [], ["auth"]),  # above 2x but under min_p95_ms: noise
    (stats(p95=51.0), {"auth": 3.0},
     ["auth: p95 latency 51 ms is above the limit 6 ms (2 x the baseline p95 of 3 ms)"], ["auth"]),
    (stats(p95=130.0), {"auth": None}, [], []),  # the baseline had no answer: not comparable
    (stats(p95=130.0), {"ar": 1.0}, [], []),  # no baseline for this endpoint
    (stats(errors=3, p95=130.0), {"auth": 60.0},
     ["auth: error rate 15% (3 of 20 requests failed: 3 x HTTP 500) is above the limit 5%",
      "auth: p95 latency 130 ms is above the limit 120 ms (2 x the baseline p95 of 60 ms)"], ["auth"]),
])
def test_judge(measured, baseline, expected, compared):
    exceeded, used = slo.judge({"auth": measured}, baseline, 0.05, 2.0, 50.0)
    assert exceeded == expected
    assert used == compared
    assert measured["baseline_p95_ms"] == baseline.get("auth")


def test_judge_compares_error_counts_not_floats():
    # 3 in 60 is exactly 5%; 0.05 * 60 is 3.0000000000000004 in floating point
    assert slo.judge({"a": stats(errors=3, requests=60)}, {}, 0.05, 2.0, 50.0)[0] == []
    assert slo.judge({"a": stats(errors=0)}, {}, 0.0, 2.0, 50.0)[0] == []
    assert len(slo.judge({"a": stats(errors=1)}, {}, 0.0, 2.0, 50.0)[0]) == 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    counter = {"n": 0}
    lock = threading.Lock()

    def log_message(self, *args):
        return

    def send(self, status, body=b"{}"):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        if self.path == "/ok":
            self.send(200, b'{"status": "ok"}')
        elif self.path == "/every-fourth-fails":
            with self.lock:
                self.counter["n"] += 1
                n = self.counter["n"]
            self.send(500 if n % 4 == 0 else 200)
        elif self.path == "/slow":
            time.sleep(0.12)
            self.send(200)
        elif self.path == "/hang":
            time.sleep(2)
            self.send(200)
        elif self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _i in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        elif self.path == "/auth":
            self.send(200 if self.headers.get("Authorization") == "Bearer t0k" else 401)
        else:
            self.send(404)

    def do_HEAD(self):  # noqa: N802
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def base():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % server.server_port
    server.shutdown()
    server.server_close()


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def endpoint(url, **extra):
    return slo.build_endpoints([dict(extra, name="e", url=url)])[0]


def test_measure_counts_statuses_and_errors(base):
    Handler.counter["n"] = 0
    result = slo.measure(endpoint(base + "/every-fourth-fails"), 20, 0, 5)
    assert result["requests"] == 20
    assert result["statuses"] == {"200": 15, "500": 5}
    assert result["errors"] == 5 and result["error_rate"] == 0.25
    assert result["errors_by_reason"] == {"HTTP 500": 5}
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["max_ms"]


def test_accepted_statuses_and_headers_and_method(base):
    assert slo.measure(endpoint(base + "/auth"), 3, 0, 5)["errors_by_reason"] == {"HTTP 401": 3}
    assert slo.measure(endpoint(base + "/auth", headers={"Authorization": "Bearer t0k"}), 3, 0, 5)["errors"] == 0
    assert slo.measure(endpoint(base + "/auth", status=[401]), 3, 0, 5)["errors"] == 0
    assert slo.measure(endpoint(base + "/ok", method="HEAD", status=[204]), 3, 0, 5)["statuses"] == {"204": 3}


def test_connection_refused_is_an_error_without_latency():
    result = slo.measure(endpoint("http://127.0.0.1:%d/" % closed_port()), 4, 0, 2)
    assert result["errors"] == 4 and result["error_rate"] == 1.0
    assert result["errors_by_reason"] == {"connection refused": 4}
    assert result["p95_ms"] is None and result["statuses"] == {}


@pytest.mark.parametrize("path", ["/hang", "/trickle"])
def test_a_request_is_bounded_by_the_request_timeout(base, path):
    result = slo.measure(endpoint(base + path), 2, 0, 0.3)
    assert result["errors_by_reason"] == {"timeout": 2}


def test_latency_is_measured(base):
    result = slo.measure(endpoint(base + "/slow"), 3, 0, 5)
    assert result["p50_ms"] >= 120


def test_interval_is_slept_between_requests_only(base):
    slept = []
    slo.measure(endpoint(base + "/ok"), 3, 0.25, 5, sleep=slept.append)
    assert slept == [0.25, 0.25]


def test_gate_measures_every_endpoint_and_judges_against_the_baseline(base):
    Handler.counter["n"] = 0
    first, warnings = slo.gate(params(endpoints=[{"name": "ok", "url": base + "/ok"},
                                                 {"name": "slow", "url": base + "/slow"}], requests=5))
    assert first["passed"] and first["exceeded"] == [] and not first["baseline_used"] and warnings == []
    assert list(first["endpoints"]) == ["ok", "slow"]
    # The slow endpoint measured against a baseline made from the fast one: a regression.
    baseline = {"endpoints": {"slow": first["endpoints"]["ok"], "ok": first["endpoints"]["ok"]}}
    second, warnings = slo.gate(params(endpoints=[{"name": "ok", "url": base + "/ok"},
                                                  {"name": "slow", "url": base + "/slow"},
                                                  {"name": "new", "url": base + "/ok"}],
                                       requests=5, baseline=baseline, min_p95_ms=50))
    assert second["baseline_used"] and not second["passed"]
    assert len(second["exceeded"]) == 1 and second["exceeded"][0].startswith("slow: p95 latency ")
    assert warnings == ["slo_gate: no baseline for endpoint(s) new: their latency was not judged"]


def test_gate_refuses_bad_options_before_any_request(base):
    Handler.counter["n"] = 0
    with pytest.raises(slo.SloSpecError):
        slo.gate(params(endpoints=[{"name": "a", "url": base + "/every-fourth-fails"}, {"name": "a", "url": "x"}]))
    with pytest.raises(slo.SloSpecError):
        slo.gate(params(endpoints=[{"name": "a", "url": base + "/every-fourth-fails"}], baseline={"a": 1}))
    assert Handler.counter["n"] == 0
