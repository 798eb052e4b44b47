#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: nats_stream_info
short_description: Read JetStream streams and consumers from the NATS monitoring endpoint
version_added: 0.1.0
description:
  - Reads C(/jsz) of the NATS monitoring endpoint and returns, per stream, messages, bytes, first
    and last sequence and consumer count, and per consumer the pending, ack-pending, redelivered
    and waiting counts, the delivered and ack-floor sequences and the last activity.
  - Results are keyed by name, so a playbook can read
    C(r.streams.AR_EVENTS.consumers.ar.num_pending).
  - An unreachable endpoint, a server without JetStream and an unknown account fail with a
    message saying so; unknown streams or consumers fail too unless O(missing_ok) is set.
author:
  - vpsops.deploy contributors (@vpsops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module only reads.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  url:
    description:
      - Base URL of the NATS monitoring endpoint (the server's C(-m) port). Credentials in the
        URL are never shown.
    type: str
    default: http://127.0.0.1:8222
  streams:
    description: Only these streams. All streams when empty.
    type: list
    elements: str
    default: []
  consumers:
    description: Only these consumers (of every selected stream). All consumers when empty.
    type: list
    elements: str
    default: []
  account:
    description: Only the streams of this account (for example V($G), the default account).
    type: str
  missing_ok:
    description:
      - Report streams and consumers named in O(streams) and O(consumers) that do not exist in
        RV(missing) instead of failing.
    type: bool
    default: false
  timeout:
    description: Seconds the request may take.
    type: float
    default: 10
  validate_certs:
    description: Verify the TLS certificate of an V(https) endpoint.
    type: bool
    default: true
notes:
  - Standard library only; the managed host needs no extra package.
seealso:
  - module: vpsops.deploy.health_wait
  - module: vpsops.deploy.dlq_report
"""

EXAMPLES = r"""
- name: Read the event streams
  vpsops.deploy.nats_stream_info:
    url: http://127.0.0.1:8222
    streams: [AR_EVENTS, PAYMENTS_EVENTS]
  register: bus

- name: Stop when the AR consumer lags
  ansible.builtin.assert:
    that: bus.streams.AR_EVENTS.consumers.ar.num_pending < 100
    fail_msg: "AR consumer lags by {{ bus.streams.AR_EVENTS.consumers.ar.num_pending }} messages"

- name: Look for a stream a release adds, without failing when it is not there yet
  vpsops.deploy.nats_stream_info:
    streams: [INVOICES]
    missing_ok: true
  register: invoices
"""

RETURN = r"""
streams:
  description: Per stream, keyed by stream name.
  returned: always
  type: dict
  contains:
    messages:
      description: Messages in the stream.
      type: int
    bytes:
      description: Bytes stored.
      type: int
    first_seq:
      description: First sequence in the stream.
      type: int
    last_seq:
      description: Last sequence in the stream.
      type: int
    consumer_count:
      description: Consumers of the stream (all of them, whatever O(consumers) selects).
      type: int
    subjects:
      description: Subjects the stream captures.
      type: list
      elements: str
    duplicate_window:
      description: Seconds within which a repeated C(Nats-Msg-Id) is dropped as duplicate.
      type: float
    consumers:
      description:
        - Per consumer, keyed by name, C(num_pending), C(num_ack_pending), C(num_redelivered),
          C(num_waiting), C(delivered_seq), C(ack_floor_seq) and C(last_active) (the last
          delivery or ack, or null).
      type: dict
  sample:
    AR_EVENTS:
      messages: 42
      bytes: 9120
      first_seq: 1
      last_seq: 42
      consumer_count: 1
      subjects: [ar.events.>]
      duplicate_window: 120.0
      consumers:
        ar:
          num_pending: 0
          num_ack_pending: 0
          num_redelivered: 3
          num_waiting: 1
          delivered_seq: 42
          ack_floor_seq: 42
          last_active: "2026-03-01T10:00:00.1234Z"
missing:
  description: Streams, and consumers as C(STREAM/consumer), that were asked for and do not exist.
  returned: always
  type: list
  elements: str
  sample: [INVOICES]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._nats import NatsError, fetch_jsz, summarize
from ansible_collections.vpsops.deploy.plugins.module_utils._secrets import redact_url


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", default="http://127.0.0.1:8222"),
            streams=dict(type="list", elements="str", default=[]),
            consumers=dict(type="list", elements="str", default=[]),
            account=dict(type="str"),
            missing_ok=dict(type="bool", default=False),
            timeout=dict(type="float", default=10),
            validate_certs=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["timeout"] <= 0:
        module.fail_json(msg="timeout must be a positive number of seconds, got %s" % p["timeout"])
    try:
        jsz = fetch_jsz(p["url"], p["account"], p["timeout"], p["validate_certs"])
        streams, missing = summarize(jsz, p["streams"], p["consumers"], p["account"])
    except NatsError as exc:
        module.fail_json(msg=str(exc))
    if missing and not p["missing_ok"]:
        module.fail_json(msg="not found on %s: %s (present streams: %s); set missing_ok to report them instead"
                         % (redact_url(p["url"]), ", ".join(missing), ", ".join(sorted(streams)) or "none"),
                         streams=streams, missing=missing)
    module.exit_json(changed=False, streams=streams, missing=missing)


if __name__ == "__main__":
    main()
