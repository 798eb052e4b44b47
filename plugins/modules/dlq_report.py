#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: dlq_report
short_description: Summarize the failed events of one or many databases, with growth and thresholds
version_added: 0.1.0
description:
  - Per database, the total of failed events, counts by subject, by normalized error (numbers and
    UUIDs folded to V(<n>)) and by tenant, the oldest and newest, age buckets, the retry count
    distribution and the number of unpublished rows of the outbox.
  - The summary is computed on the server in one statement (two parallel scans of the table); rows
    are never pulled to the managed host.
  - With O(baseline) (an earlier result, for example kept in the release manifest) it returns the
    failed events added since; O(max_total) and O(max_new) give RV(exceeded) and, with
    O(fail_on_exceeded), a failure.
  - Runs C(psql) in each database's container (O(databases[].container)) or on the managed host.
author:
  - vpsops.deploy contributors (@vpsops)
attributes:
  check_mode:
    support: full
    details: The module only reads.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  databases:
    description: The databases to summarize.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Key of this database in the result (and in O(baseline)). Defaults to O(databases[].db).
        type: str
      db:
        description: Database name.
        type: str
        required: true
        aliases: [login_db]
      container:
        description:
          - Run C(psql) in this container with C(docker exec); O(databases[].login_host) and
            O(databases[].port) are then ignored.
        type: str
      login_host:
        description: Host of the server when no container is given.
        type: str
        default: 127.0.0.1
      port:
        description: Port of the server when no container is given.
        type: int
        default: 5432
        aliases: [login_port]
      login_user:
        description: Role to connect as.
        type: str
        default: postgres
      login_password:
        description: Password of the role; only in the environment of C(psql), never shown.
        type: str
        default: ''
      ssl_mode:
        description: libpq C(sslmode) when no container is given.
        type: str
        default: prefer
        choices: [allow, disable, prefer, require, verify-ca, verify-full]
      connect_timeout:
        description: Seconds to wait for a connection.
        type: int
        default: 5
  baseline:
    description:
      - An earlier result of this module (or its RV(databases)). New failed events are the rows
        with an id above the baseline's RV(databases.max_id); a database missing from the
        baseline counts all its rows as new.
    type: dict
  max_total:
    description: Most failed events allowed over all databases.
    type: int
  max_new:
    description: Most failed events allowed since O(baseline) over all databases.
    type: int
  fail_on_exceeded:
    description: Fail when a threshold is exceeded (the result is returned with the failure).
    type: bool
    default: false
  top:
    description: Entries kept in RV(databases.by_subject), RV(databases.by_error) and RV(databases.by_tenant).
    type: int
    default: 20
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.dlq
  - vpsops.deploy.docker
notes:
  - Needs C(psql) on the managed host when a database has no O(databases[].container).
seealso:
  - module: vpsops.deploy.dlq_replay
  - module: vpsops.deploy.dlq_purge
"""

EXAMPLES = r"""
- name: Take the DLQ baseline before the modules phase
  vpsops.deploy.dlq_report:
    databases:
      - {name: ar, db: ar_db, container: platform-ar-postgres-1, login_user: ar_user}
      - {name: payments, db: payments_db, container: platform-payments-postgres-1, login_user: payments_user}
  register: dlq_before

- name: Fail the release when new failed events appear
  vpsops.deploy.dlq_report:
    databases:
      - {name: ar, db: ar_db, container: platform-ar-postgres-1, login_user: ar_user}
      - {name: payments, db: payments_db, container: platform-payments-postgres-1, login_user: payments_user}
    baseline: "{{ dlq_before }}"
    max_new: 0
    fail_on_exceeded: true
"""

RETURN = r"""
databases:
  description: Per database, keyed by O(databases[].name).
  returned: always
  type: dict
  contains:
    total:
      description: Failed events in the table.
      type: int
    new:
      description: Failed events since O(baseline) (null without one).
      type: int
    max_id:
      description: Highest row id (the next baseline).
      type: int
    by_subject:
      description: Counts by subject, largest first, at most O(top).
      type: dict
    by_error:
      description: Counts by error with numbers and UUIDs folded to V(<n>), at most O(top).
      type: dict
    by_tenant:
      description: Counts by tenant, at most O(top).
      type: dict
    oldest:
      description: Oldest C(failed_at), or null.
      type: str
    newest:
      description: Newest C(failed_at), or null.
      type: str
    age_buckets:
      description: Counts by age, C(lt_1h), C(1h_24h), C(1d_7d), C(7d_30d) and C(gt_30d) (all five, 0 when empty).
      type: dict
    retry_counts:
      description: Counts by retry count.
      type: dict
    outbox_unpublished:
      description: Unpublished rows of O(outbox_table) (null when it is skipped or does not exist).
      type: int
  sample:
    ar:
      total: 3
      new: 1
      max_id: 17
      by_subject: {ar.events.ar.invoice.created: 3}
      by_error: {"timeout after <n>s calling payments": 3}
      by_tenant: {t1: 2, t2: 1}
      oldest: "2026-03-01T10:00:00+00:00"
      newest: "2026-03-01T10:05:00+00:00"
      age_buckets: {lt_1h: 1, 1h_24h: 0, 1d_7d: 2, 7d_30d: 0, gt_30d: 0}
      retry_counts: {"3": 3}
      outbox_unpublished: 0
total:
  description: Failed events over all databases.
  returned: always
  type: int
  sample: 3
new:
  description: Failed events since O(baseline) over all databases (null without a baseline).
  returned: always
  type: int
  sample: 1
exceeded:
  description: One sentence per threshold exceeded; empty when none is.
  returned: always
  type: list
  elements: str
  sample: ["1 new failed events since the baseline > max_new 0"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._dlq import (
    DlqError,
    Table,
    baseline_entry,
    dlq_argument_spec,
    judge,
    report_one,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._pgcli import PgCli, pgcli_argument_spec


def database_options():
    options = pgcli_argument_spec()
    options.pop("docker_cli")
    options["db"] = dict(options["db"], required=True)
    options["name"] = dict(type="str")
    return options


def main():
    spec = dict(
        databases=dict(type="list", elements="dict", required=True, options=database_options()),
        baseline=dict(type="dict"),
        max_total=dict(type="int"),
        max_new=dict(type="int"),
        fail_on_exceeded=dict(type="bool", default=False),
        top=dict(type="int", default=20),
        docker_cli=dict(type="path", default="docker"),
    )
    spec.update(dlq_argument_spec())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    if not p["databases"]:
        module.fail_json(msg="databases must list at least one database")
    if p["top"] < 1:
        module.fail_json(msg="top must be 1 or more, got %d" % p["top"])
    for key in ("max_total", "max_new"):
        if p[key] is not None and p[key] < 0:
            module.fail_json(msg="%s must be 0 or more, got %d" % (key, p[key]))
    names = [d["name"] or d["db"] for d in p["databases"]]
    dupes = sorted(set(n for n in names if names.count(n) > 1))
    if dupes:
        module.fail_json(msg="databases: the name(s) %s are used twice; give each database a unique 'name'"
                         % ", ".join(dupes))
    try:
        table = Table(p)
        databases = {}
        for name, target in zip(names, p["databases"]):
            cli = PgCli(dict(target, docker_cli=p["docker_cli"]))
            entry = baseline_entry(p["baseline"], name) if p["baseline"] else None
            databases[name] = report_one(cli, table, entry, p["top"])
    except DlqError as exc:
        module.fail_json(msg=str(exc))
    total = sum(d["total"] for d in databases.values())
    new = sum(d["new"] for d in databases.values()) if p["baseline"] else None
    exceeded = judge(total, new, p["max_total"], p["max_new"])
    result = dict(changed=False, databases=databases, total=total, new=new, exceeded=exceeded)
    if exceeded and p["fail_on_exceeded"]:
        module.fail_json(msg="DLQ threshold exceeded: %s" % "; ".join(exceeded), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
