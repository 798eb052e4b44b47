#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: slo_gate
short_description: Gate a deploy on the error rate and p95 latency of HTTP endpoints
version_added: 0.1.0
description:
  - Sends O(requests) requests to each endpoint, O(interval) seconds apart, and measures the error
    rate and the latency (p50, p95, max) of each.
  - An error is a connection error, a timeout or a status not in O(endpoints[].status).
  - The gate fails when an endpoint's error rate is above O(max_error_rate), or, when a
    O(baseline) is given, when its p95 latency is above O(max_p95_ratio) times the baseline's p95.
    The defaults are the rollback rule of the runbooks (error rate above 5%, p95 above twice
    normal).
  - A p95 below O(min_p95_ms) is never judged a regression, so that 3 ms becoming 7 ms on a fast
    endpoint does not fail a deploy.
  - Without a baseline it measures and judges the error rate only. A typical deploy measures
    before the change with O(fail_on_exceeded=false), then after it with the first result as
    O(baseline).
  - Endpoints are measured at the same time, one thread each; the requests to one endpoint are
    sent one after the other. Each request, body included, is bounded by O(request_timeout), so
    a call takes at most about O(requests) times (O(request_timeout) + O(interval)) seconds.
author:
  - vpsops.deploy contributors (@vpsops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module only sends requests and reads the answers; it makes no change, so it measures in check mode too.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  endpoints:
    description: The endpoints to measure. Their names must be unique.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Name of the endpoint in the result, in RV(exceeded) and in O(baseline).
        type: str
        required: true
      url:
        description:
          - An V(http://) or V(https://) URL, requested from the managed host. Credentials in the
            URL are never shown in messages.
        type: str
        required: true
      method:
        description: HTTP method.
        type: str
        default: GET
      status:
        description: Statuses that count as a success; any other status is an error.
        type: list
        elements: int
        default: [200]
      headers:
        description: Request headers (for example an C(Authorization) header). Never shown in results or logs.
        type: dict
      validate_certs:
        description: Verify the TLS certificate of an V(https) URL.
        type: bool
        default: true
  requests:
    description: Requests sent to each endpoint, 1 to 1000.
    type: int
    default: 20
  interval:
    description: Seconds between two requests to one endpoint, 0 to 60.
    type: float
    default: 0.05
  request_timeout:
    description:
      - Seconds one request may take, answer body included (0.1 to 120). A request that takes longer
        counts as an error.
    type: float
    default: 5
  baseline:
    description:
      - A previous result of this module (registered), or its RV(endpoints) dict. The p95 of each
        endpoint is compared with the baseline's p95 of the endpoint of the same name.
      - Empty or omitted, latency is not judged. An endpoint missing from the baseline, or with no
        answered request in it, is not judged on latency (a warning says so).
    type: dict
  max_error_rate:
    description: Highest error rate that passes, from 0 to 1 (V(0.05) is 5%; 1 error in 20 requests passes).
    type: float
    default: 0.05
  max_p95_ratio:
    description: Highest p95 latency that passes, as a multiple of the baseline's p95 (1 or more).
    type: float
    default: 2.0
  min_p95_ms:
    description: A p95 below this many milliseconds is never judged a regression.
    type: float
    default: 50
  fail_on_exceeded:
    description:
      - Fail when a limit is exceeded. With V(false) the module reports RV(exceeded) and
        RV(passed) and succeeds, for example to take a baseline or to only warn.
    type: bool
    default: true
notes:
  - Standard library only; the managed host needs no extra package.
  - Percentiles are nearest-rank over the requests that got an HTTP answer (any status); with 20
    requests the p95 is the second slowest. Connection errors and timeouts count as errors only.
seealso:
  - module: vpsops.deploy.health_wait
"""

EXAMPLES = r"""
- name: Measure the live release before the deploy (the baseline)
  vpsops.deploy.slo_gate:
    endpoints:
      - name: auth
        url: http://127.0.0.1:8080/api/health
      - name: ar
        url: http://127.0.0.1:8086/api/health
    fail_on_exceeded: false
  register: slo_before

# ... deploy ...

- name: Gate the new release on the runbook's rollback thresholds
  vpsops.deploy.slo_gate:
    endpoints:
      - name: auth
        url: http://127.0.0.1:8080/api/health
      - name: ar
        url: http://127.0.0.1:8086/api/health
    baseline: "{{ slo_before }}"
    max_error_rate: 0.05
    max_p95_ratio: 2.0

- name: Measure an authenticated endpoint with more requests
  vpsops.deploy.slo_gate:
    endpoints:
      - name: payments-list
        url: http://127.0.0.1:8088/api/payments
        headers:
          Authorization: "Bearer {{ vault_smoke_token }}"
        status: [200, 204]
    requests: 100
    interval: 0.02
    fail_on_exceeded: false
  register: slo
"""

RETURN = r"""
endpoints:
  description: Statistics per endpoint, keyed by name. Pass them (or the whole result) as O(baseline) of a later call.
  returned: always
  type: dict
  contains:
    requests:
      description: Requests sent.
      type: int
    errors:
      description: Requests that failed (connection error, timeout or unexpected status).
      type: int
    error_rate:
      description: errors / requests, from 0 to 1.
      type: float
    p50_ms:
      description: Median latency in milliseconds of the answered requests; null when none was answered.
      type: float
    p95_ms:
      description: 95th percentile latency in milliseconds of the answered requests; null when none was answered.
      type: float
    max_ms:
      description: Slowest answered request in milliseconds; null when none was answered.
      type: float
    statuses:
      description: Count of answers per HTTP status code.
      type: dict
    errors_by_reason:
      description: Count of errors per reason (C(HTTP 500), C(timeout), C(connection refused) ...).
      type: dict
    baseline_p95_ms:
      description: The baseline's p95 for this endpoint; null when latency was not compared with a baseline.
      type: float
  sample:
    auth:
      requests: 20
      errors: 0
      error_rate: 0.0
      p50_ms: 2.113
      p95_ms: 3.87
      max_ms: 4.02
      statuses: {"200": 20}
      errors_by_reason: {}
      baseline_p95_ms: 3.5
exceeded:
  description: One sentence per limit exceeded, naming the endpoint, the measured value and the limit.
  returned: always
  type: list
  elements: str
  sample: ["auth: error rate 15% (3 of 20 requests failed: 3 x HTTP 500) is above the limit 5%"]
passed:
  description: Whether no limit was exceeded.
  returned: always
  type: bool
  sample: true
baseline_used:
  description: Whether the latency of at least one endpoint was compared with a baseline.
  returned: always
  type: bool
  sample: true
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._slo import SloSpecError, gate, slo_argument_spec


def main():
    module = AnsibleModule(argument_spec=slo_argument_spec(), supports_check_mode=True)
    try:
        result, warnings = gate(module.params)
    except SloSpecError as exc:
        module.fail_json(msg=str(exc))
    for warning in warnings:
        module.warn(warning)
    if result["exceeded"] and module.params["fail_on_exceeded"]:
        module.fail_json(msg="SLO gate failed: %s." % "; ".join(result["exceeded"]), changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
