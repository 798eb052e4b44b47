#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_restore
short_description: Restore a pg_backup backup after checking it and taking a safety backup
version_added: 0.1.0
description:
  - Restores a backup made by M(vpsops.deploy.pg_backup) into O(db), in this order, stopping at the first
    failure.
  - Checks the backup's sha256 against its manifest (or O(sha256)); a damaged backup is never restored.
  - Compares the backup's manifest with the target and refuses, naming why and changing nothing, a
    backup of another database (its manifest's C(database) is not O(db)), one taken on another
    PostgreSQL cluster (its C(system_identifier) is not the target's), and a partial one
    (C(schema_only), or made with C(tables) or C(exclude_tables)), unless O(force_mismatch=true).
  - Takes a safety backup of the current database into O(safety_dest) with the same machinery as
    M(vpsops.deploy.pg_backup) (verified, atomic, label C(pre-restore)), unless O(safety_backup=false).
  - Terminates the other sessions on O(db) (O(terminate_sessions)).
  - Restores with C(pg_restore --clean --if-exists --exit-on-error --single-transaction); the objects of
    the backup are dropped and recreated in one transaction, so a failed restore leaves the database as it
    was. With O(jobs) > 1 the restore runs in parallel and is not one transaction.
  - Also restores plain SQL dumps of C(pg_dump) (C(.sql), or C(.sql.gz) gzip'd by hand), told by their
    content. The file must begin with pg_dump's C(-- PostgreSQL database dump) line and end with its
    C(-- PostgreSQL database dump complete) line (a truncated dump, a damaged gzip stream, a
    C(pg_dumpall) cluster dump or any other file is refused before anything changes). C(psql
    -v ON_ERROR_STOP=1) replays it in one transaction that is committed only after the whole file was
    read and hashed to the checked sha256. Such a dump has no manifest, so it needs O(sha256) and
    O(force_mismatch=true) (the database it came from cannot be proven to be O(db)); one made without
    C(--clean) needs O(sql_clean) when O(db) has tables.
  - Returns the exact row count of every table in the user schemas before and after (O(row_counts)).
  - Every run restores, so the module always reports a change.
author:
  - vpsops.deploy contributors (@vpsops)
attributes:
  check_mode:
    support: full
    details:
      - Checks the backup's sha256 and compares its manifest with the target (a mismatch fails as it
        would without check mode), counts rows and sessions and returns the plan; nothing is written,
        terminated or restored.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  db:
    description: Database to restore into. It must exist.
    required: true
  src:
    description:
      - The backup, a file (custom format), a directory (directory format), or a plain SQL dump of
        C(pg_dump), gzip'd or not.
    type: path
    required: true
  sha256:
    description:
      - Expected sha256 of O(src) (see the C(sha256) that M(vpsops.deploy.pg_backup) returns). Needed when
        O(src) has no manifest; overrides the manifest's when given.
    type: str
  force_mismatch:
    description:
      - Restore a backup whose manifest does not match the target all the same, that is one of another
        database, one taken on another cluster (for example when moving to a new server) or a partial one
        (schema-only, some tables). The reasons are returned in RV(mismatches) and as a warning.
      - With V(false) such a backup is refused before anything is changed.
      - A backup without a manifest (restored with O(sha256)) cannot be compared; it is restored with a warning.
    type: bool
    default: false
  sql_clean:
    description:
      - For a plain SQL dump made without C(--clean) (it has no C(DROP) statements), drop every user schema
        of O(db) (C(CASCADE)) and create C(public) again (owner C(pg_database_owner), C(USAGE) for all, as
        PostgreSQL 15 makes it) first, in the restore's transaction. Objects the dump does not hold are
        gone afterwards (the safety backup keeps them).
      - Without it such a dump is refused when O(db) has tables, naming them. Ignored for other backups and
        for dumps made with C(--clean).
    type: bool
    default: false
  safety_backup:
    description: Back up the current database before restoring.
    type: bool
    default: true
  safety_dest:
    description: Directory of the safety backup. Defaults to the directory of O(src).
    type: path
  terminate_sessions:
    description:
      - Terminate the other sessions on O(db) before restoring, so that the restore's locks are not blocked
        by clients. Clients that reconnect at once may still block it until O(timeout).
    type: bool
    default: true
  row_counts:
    description:
      - V(exact) counts the rows of every table in the user schemas before and after with C(count(*)),
        computed on the server in one query; it reads every table twice, which costs time on a large
        database (see C(bench/README.md)).
      - V(estimate) returns the statistics' C(n_live_tup) instead and reads no table.
      - V(none) returns no tables.
    type: str
    default: exact
    choices: [exact, estimate, none]
  jobs:
    description:
      - Parallel C(pg_restore) jobs (C(-j)). More than 1 gives up the single transaction, and needs a
        directory backup when O(container) is set.
    type: int
    default: 1
  space_factor:
    description: Free space check of the safety backup, as in M(vpsops.deploy.pg_backup).
    type: float
    default: 1.0
  container_tmpdir:
    description:
      - Directory inside the container a directory backup is copied to for the restore (removed afterwards).
    type: path
    default: /tmp
  timeout:
    description: Seconds one C(pg_dump) or C(pg_restore) run may take; V(0) for no limit.
    type: float
    default: 3600
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.postgres
  - vpsops.deploy.pgcli
  - vpsops.deploy.docker
notes:
  - C(--clean) drops and recreates the objects that are in the backup; objects created after the backup
    (for example a table a later migration added) stay. The safety backup keeps them either way.
  - The password travels only in the environment, never in argv, results or logs.
seealso:
  - module: vpsops.deploy.pg_backup
"""

EXAMPLES = r"""
- name: Put the AR database back to the backup taken before the failed release
  vpsops.deploy.pg_restore:
    container: platform-ar-postgres-1
    db: ar_db
    login_user: ar_user
    login_password: "{{ vault_ar_db_password }}"
    src: "{{ ar_backup.path }}"
  register: restored

- name: Restore a gzip'd plain SQL dump an earlier script made (no manifest)
  vpsops.deploy.pg_restore:
    container: clipper-postgres-1
    db: clipper
    login_user: clipper
    login_password: "{{ vault_clipper_db_password }}"
    src: /var/backups/clipper/db-20240101-120000.sql.gz
    sha256: "{{ clipper_backup_sha256 }}"   # sha256sum of the file, recorded when it was made
    force_mismatch: true                      # nothing proves it is a dump of this very database

- name: Show the row counts before and after
  ansible.builtin.debug:
    var: restored.tables
"""

RETURN = r"""
restored:
  description: The backup restored (in check mode, that would be restored).
  returned: always
  type: str
  sample: /var/backups/vpsops/ar/ar_db_20260212T101500Z_r42.dump
db:
  description: The database restored into.
  returned: always
  type: str
sha256:
  description: The checksum of the backup, checked before anything else.
  returned: always
  type: str
format:
  description: V(custom), V(directory) or V(sql) (a plain SQL dump, gzip'd or not).
  returned: always
  type: str
method:
  description: How the restore ran.
  returned: always
  type: str
  sample: pg_restore --clean --if-exists --single-transaction
safety_backup:
  description:
    - The safety backup (path, manifest, sha256, size); in check mode its C(dest); null when turned off.
  returned: always
  type: dict
mismatches:
  description:
    - Why the backup does not match the target (another database, another cluster, schema-only, some tables);
      empty when it matches. Non-empty only with O(force_mismatch=true), else the module fails.
  returned: always
  type: list
  elements: str
  sample: []
terminated_sessions:
  description: Other sessions terminated on O(db).
  returned: always
  type: int
sessions_to_terminate:
  description: Other sessions on O(db) that would be terminated.
  returned: check mode
  type: int
tables:
  description:
    - Per table (C(schema.table)), row counts C(before) and C(after) (null when absent), exact unless
      O(row_counts=estimate).
  returned: always
  type: dict
  sample: {public.invoices: {before: 1200, after: 1180}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._backup import (
    restore,
    restore_argument_spec,
    run_module,
)


def main():
    run_module(AnsibleModule(argument_spec=restore_argument_spec(), supports_check_mode=True), restore)


if __name__ == "__main__":
    main()
