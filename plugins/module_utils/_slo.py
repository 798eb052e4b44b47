# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The SLO gate behind vpsops.deploy.slo_gate: measure endpoints, compare with a baseline, judge.

Private to this collection. Standard library only (the HTTP opener of _probes), so a bare VPS
needs nothing extra. The thresholds default to the rollback rule of the runbooks: error rate above
5%, or p95 latency above twice its baseline.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import re
import socket
import threading
import time

from urllib.error import URLError
from urllib.parse import urlsplit
from urllib.request import Request

from ansible_collections.vpsops.deploy.plugins.module_utils._http import http_opener
from ansible_collections.vpsops.deploy.plugins.module_utils._secrets import redact_url

MAX_REQUESTS = 1000
READ_CHUNK = 64 * 1024
METHOD_RE = re.compile(r"^[A-Z][A-Z0-9_-]*$")
# Bounds of the numeric options: (low, high), both inclusive.
BOUNDS = {
    "requests": (1, MAX_REQUESTS),
    "interval": (0, 60),
    "request_timeout": (0.1, 120),
    "max_error_rate": (0, 1),
    "max_p95_ratio": (1, 1000),
    "min_p95_ms": (0, 600000),
}


class SloSpecError(ValueError):
    """An option is malformed: the message names the option and what was expected."""


def slo_argument_spec():
    """The module's options (documented in plugins/modules/slo_gate.py)."""
    return dict(
        endpoints=dict(type="list", elements="dict", required=True, options=dict(
            name=dict(type="str", required=True),
            url=dict(type="str", required=True),
            method=dict(type="str", default="GET"),
            status=dict(type="list", elements="int", default=[200]),
            headers=dict(type="dict", no_log=True),
            validate_certs=dict(type="bool", default=True),
        )),
        requests=dict(type="int", default=20),
        interval=dict(type="float", default=0.05),
        request_timeout=dict(type="float", default=5),
        baseline=dict(type="dict"),
        max_error_rate=dict(type="float", default=0.05),
        max_p95_ratio=dict(type="float", default=2.0),
        min_p95_ms=dict(type="float", default=50),
        fail_on_exceeded=dict(type="bool", default=True),
    )


def check_bounds(params):
    """Raise SloSpecError for a numeric option outside its bounds."""
    for key, (low, high) in BOUNDS.items():
        value = params.get(key)
        if value is None or not low <= value <= high:
            raise SloSpecError("%s must be between %s and %s, got %r" % (key, low, high, value))


class Endpoint:
    """One endpoint to measure, validated."""

    def __init__(self, spec, index):
        if not isinstance(spec, dict):
            raise SloSpecError("endpoints[%d] must be a dict with 'name' and 'url', got %r" % (index, spec))
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip():
            raise SloSpecError("endpoints[%d] needs a 'name' (a non-empty string)" % index)
        self.name = name
        where = "endpoints[%d] (%s)" % (index, name)
        url = spec.get("url")
        if not isinstance(url, str) or not url.strip():
            raise SloSpecError("%s needs a 'url'" % where)
        try:
            parts = urlsplit(url)
            host = parts.hostname
            port = parts.port  # raises ValueError for a port out of range or not a number
        except ValueError as exc:
            raise SloSpecError("%s: 'url' is not a valid URL (%s): %r" % (where, exc, redact_url(url)))
        if parts.scheme not in ("http", "https"):
            raise SloSpecError("%s: 'url' must be an http:// or https:// URL, got scheme %r in %r"
                               % (where, parts.scheme, redact_url(url)))
        if not host:
            raise SloSpecError("%s: 'url' has no host: %r" % (where, redact_url(url)))
        if port == 0:
            raise SloSpecError("%s: 'url' has port 0: %r" % (where, redact_url(url)))
        self.url = url
        self.shown_url = redact_url(url)
        self.method = str(spec.get("method") or "GET").upper()
        if not METHOD_RE.match(self.method):
            raise SloSpecError("%s: 'method' must be an HTTP method such as GET or HEAD, got %r"
                               % (where, spec.get("method")))
        status = spec.get("status")
        if status is None or status == []:
            status = [200]
        if not isinstance(status, list):
            status = [status]
        try:
            self.status = [int(code) for code in status]
        except (TypeError, ValueError):
            self.status = []
        if not self.status or any(not 100 <= code <= 599 for code in self.status):
            raise SloSpecError("%s: 'status' must list HTTP status codes (100-599), got %r" % (where, status))
        headers = spec.get("headers") or {}
        if not isinstance(headers, dict):
            raise SloSpecError("%s: 'headers' must be a dict" % where)
        self.headers = dict((str(k), str(v)) for k, v in headers.items())
        validate_certs = spec.get("validate_certs")
        self.validate_certs = True if validate_certs is None else bool(validate_certs)
        self.https = parts.scheme == "https"


def build_endpoints(specs):
    """endpoints option -> [Endpoint]; raise SloSpecError naming the first bad one."""
    if not isinstance(specs, list) or not specs:
        raise SloSpecError("endpoints must be a non-empty list of {name, url} dicts")
    endpoints, seen = [], {}
    for index, spec in enumerate(specs):
        endpoint = Endpoint(spec, index)
        if endpoint.name in seen:
            raise SloSpecError("endpoints[%d]: the name %r is already used by endpoints[%d]; names must be unique"
                               % (index, endpoint.name, seen[endpoint.name]))
        seen[endpoint.name] = index
        endpoints.append(endpoint)
    return endpoints


def percentile(sorted_values, pct):
    """Nearest-rank percentile of an ascending list (None when empty): the smallest value with at
    least pct% of the values at or below it. For 20 samples p95 is the 19th, p50 the 10th."""
    if not sorted_values:
        return None
    rank = max(int(math.ceil(pct / 100.0 * len(sorted_values))), 1)
    return sorted_values[rank - 1]


def one_request(endpoint, opener, timeout, clock=time.monotonic):
    """Send one request; return (status or None, seconds, error reason or None).

    The body is read (so latency covers the whole answer) in chunks, each bounded by the socket
    timeout; a body still arriving after `timeout` seconds counts as a timeout.
    """
    request = Request(endpoint.url, method=endpoint.method, headers=dict(endpoint.headers))
    started = clock()
    try:
        response = opener.open(request, timeout=timeout)
        try:
            status = response.status
            while True:
                chunk = response.read1(READ_CHUNK) if hasattr(response, "read1") else response.read(READ_CHUNK)
                if not chunk:
                    break
                if clock() - started > timeout:
                    return None, clock() - started, "timeout"
        finally:
            response.close()
    except URLError as exc:
        return None, clock() - started, error_reason(getattr(exc, "reason", exc))
    except (socket.timeout, OSError, ValueError) as exc:
        return None, clock() - started, error_reason(exc)
    except Exception as exc:  # an HTTP protocol error (BadStatusLine, IncompleteRead ...) is an error too
        return None, clock() - started, error_reason(exc)
    return status, clock() - started, None


def error_reason(exc):
    """A short, stable reason for a failed request, used to count errors by kind."""
    if isinstance(exc, socket.timeout) or "timed out" in str(exc):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    text = str(exc).strip() or exc.__class__.__name__
    return text[:120]


def measure(endpoint, requests, interval, request_timeout, opener=None, clock=time.monotonic, sleep=time.sleep):
    """Send `requests` requests one after the other, `interval` seconds apart; return the statistics.

    An error is a connection error, a timeout or a status not in the endpoint's `status`. Latency
    percentiles cover the requests that got an HTTP answer (any status); failed connections and
    timeouts count only as errors.
    """
    opener = opener or http_opener(endpoint.https, endpoint.validate_certs)
    latencies, statuses, reasons = [], {}, {}
    errors = 0
    for number in range(requests):
        if number and interval:
            sleep(interval)
        status, seconds, reason = one_request(endpoint, opener, request_timeout, clock)
        if status is not None:
            latencies.append(seconds * 1000.0)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status not in endpoint.status:
                reason = "HTTP %d" % status
        if reason is not None:
            errors += 1
            reasons[reason] = reasons.get(reason, 0) + 1
    latencies.sort()

    def ms(value):
        return None if value is None else round(value, 3)

    return {
        "requests": requests,
        "errors": errors,
        "error_rate": round(errors / float(requests), 4),
        "p50_ms": ms(percentile(latencies, 50)),
        "p95_ms": ms(percentile(latencies, 95)),
        "max_ms": ms(latencies[-1] if latencies else None),
        "statuses": statuses,
        "errors_by_reason": reasons,
    }


def measure_all(endpoints, requests, interval, request_timeout):
    """Measure every endpoint, each in its own thread (requests to one endpoint stay sequential).
    Returns {name: statistics} in the order of `endpoints`."""
    openers, results = {}, {}
    for endpoint in endpoints:
        key = (endpoint.https, endpoint.validate_certs)
        if key not in openers:
            openers[key] = http_opener(*key)

    def worker(endpoint):
        try:
            results[endpoint.name] = measure(endpoint, requests, interval, request_timeout,
                                             openers[(endpoint.https, endpoint.validate_certs)])
        except Exception as exc:  # a bug must not hang or hide: report the endpoint as all errors
            results[endpoint.name] = {
                "requests": requests, "errors": requests, "error_rate": 1.0, "p50_ms": None, "p95_ms": None,
                "max_ms": None, "statuses": {}, "errors_by_reason": {error_reason(exc): requests}}

    threads = [threading.Thread(target=worker, args=(e,), name="slo-%s" % e.name) for e in endpoints]
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread in threads:
        thread.join()
    return dict((e.name, results[e.name]) for e in endpoints)


def baseline_endpoints(baseline):
    """The per-endpoint statistics in `baseline`: a previous result of the module (with its
    `endpoints`) or that `endpoints` dict itself. Empty or missing: {}."""
    if not baseline:
        return {}
    if not isinstance(baseline, dict):
        raise SloSpecError("baseline must be a previous result of slo_gate or its 'endpoints' dict, got %s"
                           % type(baseline).__name__)
    inner = baseline.get("endpoints")
    if isinstance(inner, dict) and "p95_ms" not in inner:
        baseline = inner
    elif "endpoints" in baseline and not isinstance(inner, dict):
        raise SloSpecError("baseline: 'endpoints' must be a dict of endpoint statistics, got %s"
                           % type(inner).__name__)
    entries = {}
    for name, stats in baseline.items():
        if name in ("changed", "failed", "msg", "exceeded", "baseline_used", "passed", "invocation",
                    "warnings", "skipped", "skip_reason"):
            continue  # keys of a whole result that has no 'endpoints' (a skipped task, for example)
        if not isinstance(stats, dict) or "p95_ms" not in stats:
            raise SloSpecError("baseline: the entry for endpoint %r must be a dict with 'p95_ms' "
                               "(as slo_gate returns it), got %r" % (name, stats))
        p95 = stats.get("p95_ms")
        if p95 is not None:
            try:
                p95 = float(p95)
            except (TypeError, ValueError):
                raise SloSpecError("baseline: 'p95_ms' of endpoint %r must be a number or null, got %r"
                                   % (name, stats.get("p95_ms")))
            if p95 < 0:
                raise SloSpecError("baseline: 'p95_ms' of endpoint %r must be 0 or more, got %r" % (name, p95))
        entries[name] = p95
    return entries


def pct(value):
    return ("%.1f%%" % (value * 100)).replace(".0%", "%")


def number(value):
    return ("%.3f" % value).rstrip("0").rstrip(".")


def judge(measured, baseline, max_error_rate, max_p95_ratio, min_p95_ms):
    """Compare measured statistics with the limits. Returns (exceeded sentences, compared names).

    Error rate: above max_error_rate exceeds. Latency, only for endpoints with a baseline p95:
    a p95 above max_p95_ratio times the baseline exceeds, unless it is below min_p95_ms (a few
    milliseconds of noise on a fast endpoint are not a regression).
    """
    exceeded, compared = [], []
    for name, stats in measured.items():
        requests = stats["requests"]
        # Compare counts, not floats: 1 error in 20 is exactly the 5% limit and passes.
        if stats["errors"] > max_error_rate * requests + 1e-9:
            reasons = ", ".join("%d x %s" % (count, reason) for reason, count in
                                sorted(stats.get("errors_by_reason", {}).items(), key=lambda i: (-i[1], i[0])))
            exceeded.append("%s: error rate %s (%d of %d requests failed%s) is above the limit %s"
                            % (name, pct(stats["error_rate"]), stats["errors"], requests,
                               (": " + reasons) if reasons else "", pct(max_error_rate)))
        before = baseline.get(name)
        stats["baseline_p95_ms"] = before
        if before is None or stats["p95_ms"] is None:
            continue
        compared.append(name)
        limit = before * max_p95_ratio
        if stats["p95_ms"] > limit and stats["p95_ms"] >= min_p95_ms:
            exceeded.append("%s: p95 latency %s ms is above the limit %s ms (%s x the baseline p95 of %s ms)"
                            % (name, number(stats["p95_ms"]), number(limit), number(max_p95_ratio), number(before)))
    return exceeded, compared


def gate(params):
    """The whole gate for the module's params. Returns (result dict, warnings); raises SloSpecError."""
    check_bounds(params)
    endpoints = build_endpoints(params["endpoints"])
    baseline = baseline_endpoints(params.get("baseline"))
    measured = measure_all(endpoints, params["requests"], params["interval"], params["request_timeout"])
    exceeded, compared = judge(measured, baseline, params["max_error_rate"], params["max_p95_ratio"],
                               params["min_p95_ms"])
    warnings = []
    if baseline:
        missing = [e.name for e in endpoints if e.name not in baseline]
        if missing:
            warnings.append("slo_gate: no baseline for endpoint(s) %s: their latency was not judged"
                            % ", ".join(missing))
        unusable = [e.name for e in endpoints if e.name in baseline and e.name not in compared]
        if unusable:
            warnings.append("slo_gate: endpoint(s) %s had no answered request in the baseline or now: "
                            "their latency was not judged" % ", ".join(unusable))
    result = dict(
        endpoints=measured,
        exceeded=exceeded,
        passed=not exceeded,
        baseline_used=bool(compared),
    )
    return result, warnings
