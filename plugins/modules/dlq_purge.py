#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: dlq_purge
short_description: Delete old failed events, optionally exporting them first
version_added: 0.1.0
description:
  - Deletes the failed events older than O(older_than_days) (30 by default), optionally only
    those whose subject matches O(subject).
  - The cutoff is fixed on the server when the module starts; rows that fail later are never
    touched.
  - With O(export) the rows are first written as JSON lines to a file (a temp file in the same
    directory, mode 0600, fsynced, then renamed into place); nothing is deleted unless the export
    is complete.
  - Deletes in batches of O(batch_size) rows, each in its own transaction, so a large purge never
    holds long locks.
author:
  - vpsops.deploy contributors (@vpsops)
attributes:
  check_mode:
    support: full
    details: Counts the rows that would be deleted; writes and deletes nothing.
  diff_mode:
    support: full
    details: The number of matching rows before and after.
  platform:
    platforms: posix
options:
  older_than_days:
    description: Delete rows that failed more than this many days ago.
    type: float
    default: 30
  subject:
    description: Only rows whose subject matches this NATS subject filter (C(*) one token, C(>) the rest).
    type: str
  dry_run:
    description: Count only, like check mode.
    type: bool
    default: false
  export:
    description:
      - Path of a JSON lines file (one row per line, as C(to_jsonb) of the row) written before
        anything is deleted. Its directory must exist. An existing file is replaced.
    type: path
  batch_size:
    description: Rows deleted per transaction.
    type: int
    default: 1000
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.postgres
  - vpsops.deploy.pgcli
  - vpsops.deploy.docker
  - vpsops.deploy.dlq
notes:
  - Needs C(psql) on the managed host when no O(container) is given.
seealso:
  - module: vpsops.deploy.dlq_report
  - module: vpsops.deploy.dlq_replay
"""

EXAMPLES = r"""
- name: Purge failed events older than 30 days, keeping a copy
  vpsops.deploy.dlq_purge:
    container: platform-ar-postgres-1
    db: ar_db
    login_user: ar_user
    export: /var/backups/dlq/ar-{{ ansible_date_time.date }}.jsonl
  register: purged

- name: Count what a 7-day purge of the invoice events would delete
  vpsops.deploy.dlq_purge:
    container: platform-ar-postgres-1
    db: ar_db
    login_user: ar_user
    older_than_days: 7
    subject: ar.events.ar.invoice.>
    dry_run: true
"""

RETURN = r"""
matched:
  description: Rows older than the cutoff (and matching O(subject)).
  returned: always
  type: int
  sample: 120
purged:
  description: Rows deleted (0 in check mode and with O(dry_run)).
  returned: always
  type: int
  sample: 120
batches:
  description: Delete transactions run.
  returned: always
  type: int
  sample: 1
cutoff:
  description: Rows that failed before this time (server time) were selected.
  returned: always
  type: str
  sample: "2026-02-01 10:00:00.123+00"
exported:
  description: Rows written to O(export) (null without it).
  returned: always
  type: int
  sample: 120
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._dlq import (
    DlqError,
    Table,
    dlq_argument_spec,
    export_rows,
    purge,
    purge_plan,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._pgcli import PgCli, pgcli_argument_spec


def main():
    spec = pgcli_argument_spec()
    spec.update(dlq_argument_spec())
    spec.update(
        older_than_days=dict(type="float", default=30),
        subject=dict(type="str"),
        dry_run=dict(type="bool", default=False),
        export=dict(type="path"),
        batch_size=dict(type="int", default=1000),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    if not p["db"]:
        module.fail_json(msg="db is required: the database holding the failed events")
    if p["older_than_days"] < 0:
        module.fail_json(msg="older_than_days must be 0 or more, got %s" % p["older_than_days"])
    if p["batch_size"] < 1:
        module.fail_json(msg="batch_size must be 1 or more, got %d" % p["batch_size"])
    count_only = module.check_mode or p["dry_run"]
    cli = PgCli(p)
    try:
        table = Table(p)
        plan = purge_plan(cli, table, p["older_than_days"], p["subject"])
        exported = None
        purged = batches = 0
        if not count_only and plan["count"]:
            if p["export"]:
                exported = export_rows(cli, table, plan, p["export"])
            purged, batches = purge(cli, table, plan, p["batch_size"])
    except (DlqError, OSError) as exc:
        module.fail_json(msg=str(exc))
    result = dict(changed=bool(plan["count"]) and not p["dry_run"], matched=plan["count"],
                  purged=purged, batches=batches, cutoff=plan["cutoff"], exported=exported)
    if module._diff:
        result["diff"] = dict(before="%s: %d rows failed before %s\n" % (p["table"], plan["count"], plan["cutoff"]),
                              after="%s: %d rows failed before %s\n" % (
                                  p["table"], plan["count"] if p["dry_run"] else 0,
                                  plan["cutoff"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
