#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: dlq_replay
short_description: Publish failed events back to JetStream, exactly once, then remove or mark them
version_added: 0.1.0
description:
  - Selects failed events (by row ids, event ids, subject, error pattern and age, with a limit)
    and publishes each envelope to its subject with the C(Nats-Msg-Id) header set to the event id.
  - Each publish waits for its JetStream PubAck; only acknowledged rows are then deleted (or
    marked with O(mark_column)), batch by batch. A PubAck saying C(duplicate) (the stream already
    holds the event, for example from a replay that was killed) counts in RV(duplicates) and the
    row is removed too.
  - Killed half way and run again, no row is lost and, within the stream's duplicate window, no
    event is published twice. If the connection to NATS is lost the module stops, fails, and the
    rows not acknowledged stay in the table.
  - A row whose envelope is not a JSON object, or whose subject no stream captures, is reported
    in RV(failures) and stays in the table; the others go on.
author:
  - vpsops.deploy contributors (@vpsops)
attributes:
  check_mode:
    support: full
    details: Selects the rows and counts what would be published; publishes nothing and changes no row.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  nats_url:
    description:
      - Client URL of the NATS server, V(nats://host:4222). TLS is not supported.
      - Credentials in the URL are refused (option values are logged); use O(nats_user) and
        O(nats_password), or O(nats_token).
    type: str
    default: nats://127.0.0.1:4222
  nats_user:
    description: User for NATS user/password authentication.
    type: str
  nats_password:
    description: Password of O(nats_user); never shown.
    type: str
  nats_token:
    description: Token for NATS token authentication; never shown.
    type: str
  nats_timeout:
    description: Seconds to wait for the server (connection and each PubAck).
    type: float
    default: 10
  ids:
    description: Only rows with these ids.
    type: list
    elements: int
  event_ids:
    description: Only rows with these event ids.
    type: list
    elements: str
  subject:
    description: Only rows whose subject matches this NATS subject filter (C(*) one token, C(>) the rest).
    type: str
  error_pattern:
    description: Only rows whose error matches this regular expression (PostgreSQL, case-insensitive).
    type: str
  older_than_days:
    description: Only rows that failed more than this many days ago.
    type: float
  newer_than_days:
    description: Only rows that failed less than this many days ago.
    type: float
  limit:
    description: Replay at most this many rows (oldest first).
    type: int
  on_success:
    description:
      - V(delete) removes a row once its event is acknowledged; V(mark) sets O(mark_column) to
        the time instead, and marked rows are not selected again.
    type: str
    default: delete
    choices: [delete, mark]
  mark_column:
    description: Timestamp column of O(table) set by O(on_success=mark).
    type: str
    default: replayed_at
  rate:
    description: Most messages per second; V(0) for no limit.
    type: float
    default: 0
  batch_size:
    description:
      - Rows read, published and removed per round (one C(psql) call per round). A killed replay
        publishes at most one batch again, which JetStream drops as duplicates.
    type: int
    default: 1000
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.postgres
  - vpsops.deploy.pgcli
  - vpsops.deploy.docker
  - vpsops.deploy.dlq
notes:
  - Speaks the NATS client protocol with the Python standard library; nats-py is not needed.
  - Needs C(psql) on the managed host when no O(container) is given.
seealso:
  - module: vpsops.deploy.dlq_report
  - module: vpsops.deploy.dlq_purge
"""

EXAMPLES = r"""
- name: Replay the AR events that failed while payments was down
  vpsops.deploy.dlq_replay:
    container: platform-ar-postgres-1
    db: ar_db
    login_user: ar_user
    nats_url: nats://127.0.0.1:4222
    subject: ar.events.>
    error_pattern: "payments.*(unavailable|timeout)"
    rate: 200
  register: replayed

- name: Replay two events and keep their rows, marked
  vpsops.deploy.dlq_replay:
    container: platform-ar-postgres-1
    db: ar_db
    login_user: ar_user
    event_ids: [8d8c6f0e-6f7a-4a57-bd0e-1d3a4f1d0c11, 0b6a2a55-0f0e-4f0e-9a53-9ef4a7a1b2c3]
    on_success: mark
    mark_column: replayed_at
"""

RETURN = r"""
selected:
  description: Rows selected.
  returned: always
  type: int
  sample: 12
replayed:
  description: Events stored by JetStream (in check mode, the events that would be published).
  returned: always
  type: int
  sample: 11
duplicates:
  description:
    - Events the stream already held (PubAck C(duplicate)), skipped by JetStream; their rows are
      removed too.
  returned: always
  type: int
  sample: 0
errors:
  description:
    - Rows not published (malformed envelope, no stream for the subject, refused); they stay.
      (Named so because Ansible reserves C(failed) and C(skipped).)
  returned: always
  type: int
  sample: 1
removed:
  description: Rows deleted (O(on_success=delete)).
  returned: always
  type: int
  sample: 11
marked:
  description: Rows marked (O(on_success=mark)).
  returned: always
  type: int
  sample: 0
failures:
  description: The first 100 rows not published, with C(id), C(event_id), C(subject) and C(error).
  returned: always
  type: list
  elements: dict
  sample: [{id: 7, event_id: ev-7, subject: ar.events.x, error: "malformed envelope_json: envelope is JSON but not an object"}]
event_ids:
  description: Event ids published or found duplicate (at most 1000).
  returned: always
  type: list
  elements: str
  sample: [ev-1, ev-2]
stopped:
  description: Why the replay stopped early (the connection to NATS was lost), or null.
  returned: always
  type: str
  sample: null
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._dlq import DlqError, Table, dlq_argument_spec, replay
from ansible_collections.vpsops.deploy.plugins.module_utils._nats import NatsClient, NatsError, url_secrets
from ansible_collections.vpsops.deploy.plugins.module_utils._pgcli import PgCli, pgcli_argument_spec


def main():
    spec = pgcli_argument_spec()
    spec.update(dlq_argument_spec())
    spec.update(
        nats_url=dict(type="str", default="nats://127.0.0.1:4222"),
        nats_user=dict(type="str"),
        nats_password=dict(type="str", no_log=True),
        nats_token=dict(type="str", no_log=True),
        nats_timeout=dict(type="float", default=10),
        ids=dict(type="list", elements="int"),
        event_ids=dict(type="list", elements="str"),
        subject=dict(type="str"),
        error_pattern=dict(type="str"),
        older_than_days=dict(type="float"),
        newer_than_days=dict(type="float"),
        limit=dict(type="int"),
        on_success=dict(type="str", default="delete", choices=["delete", "mark"]),
        mark_column=dict(type="str", default="replayed_at"),
        rate=dict(type="float", default=0),
        batch_size=dict(type="int", default=1000),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    module.no_log_values.update(url_secrets(p["nats_url"]))
    if not p["db"]:
        module.fail_json(msg="db is required: the database holding the failed events")
    for key, low in (("limit", 1), ("batch_size", 1)):
        if p[key] is not None and p[key] < low:
            module.fail_json(msg="%s must be %d or more, got %d" % (key, low, p[key]))
    for key in ("rate", "older_than_days", "newer_than_days"):
        if p[key] is not None and p[key] < 0:
            module.fail_json(msg="%s must be 0 or more, got %s" % (key, p[key]))
    if p["nats_timeout"] <= 0:
        module.fail_json(msg="nats_timeout must be a positive number of seconds, got %s" % p["nats_timeout"])
    keys = ("ids", "event_ids", "subject", "error_pattern", "older_than_days", "newer_than_days")
    filters = dict((k, p[k]) for k in keys)
    try:
        client = NatsClient(p["nats_url"], p["nats_user"], p["nats_password"], p["nats_token"], p["nats_timeout"])
        table = Table(p)
        result = replay(PgCli(p), table, client, filters, limit=p["limit"], batch_size=p["batch_size"],
                        on_success=p["on_success"], mark_column=p["mark_column"], rate=p["rate"],
                        check_mode=module.check_mode)
    except (DlqError, NatsError) as exc:
        module.fail_json(msg=str(exc))
    result["changed"] = bool(result["removed"] or result["marked"] or (module.check_mode and result["replayed"]))
    if result["errors"]:
        module.warn("%d failed event(s) could not be replayed and stay in %s; see 'failures'"
                    % (result["errors"], p["table"]))
    if result["stopped"]:
        left = result["selected"] - result["replayed"] - result["duplicates"] - result["errors"]
        module.fail_json(msg="replay stopped after %d published and %d duplicate events; the %d rows not acknowledged "
                             "stay in %s: %s" % (result["replayed"], result["duplicates"], left, p["table"],
                                                 result["stopped"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
