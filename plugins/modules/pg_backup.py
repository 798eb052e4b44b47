#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_backup
short_description: Verified, atomic PostgreSQL backups with retention that keeps the last good one
version_added: 0.1.0
description:
  - Dumps one database with C(pg_dump), either inside the database's container (C(docker exec) with
    the server's own C(pg_dump)) or from the managed host to O(login_host):O(port).
  - The dump streams to a temporary name in O(dest) (a custom dump is hashed as it is written), is
    fsynced and verified, and only then renamed to its final name C(<db>_<UTC time>[_<label>].dump)
    (or C(.dir) for O(format=directory)). Any failure removes the temporary name, so a file under a
    final name is always a complete, verified backup. A sidecar manifest C(<backup>.json) records
    database, server and pg_dump versions, size, sha256, start and end time, label and the
    verification.
  - Backups and manifests are created 0600; a missing O(dest) is created 0700.
  - Before anything of the dump is written, the free space of O(dest) is compared with an estimate of
    the dump, from what it holds (the user tables with their indexes and TOAST and the large objects,
    as they lie on disk, none of them for O(schema_only); plus 1 MiB for the schema) times
    O(space_factor); the call fails early, saying the estimate, when it does not fit. A custom dump
    starts while the size is read and waits for the check before its first byte is written. The system catalogs, which C(pg_database_size) counts
    (about 7.5 MB in an empty database), are no part of a dump.
  - Every run takes a new backup, so the module always reports a change.
  - Restore is the separate module M(vpsops.deploy.pg_restore).
author:
  - vpsops.deploy contributors (@vpsops)
attributes:
  check_mode:
    support: full
    details:
      - Connects and reads the database size, checks free space and returns the path it would write
        and the backups retention would delete; nothing is written or deleted.
  diff_mode:
    support: full
    details: The list of backups of O(db) in O(dest) (and O(copy_to)) before and after.
  platform:
    platforms: posix
options:
  db:
    description: Database to back up.
    required: true
  dest:
    description:
      - Directory for the backup and its manifest. Created 0700 when missing.
    type: path
    required: true
  format:
    description:
      - V(custom) is C(pg_dump -Fc), one compressed file.
      - V(directory) is C(pg_dump -Fd), one directory, dumped in parallel with O(jobs). In a container it
        is dumped into O(container_tmpdir) inside the container, verified there, streamed out with
        C(docker cp CONTAINER:DIR -) and removed from the container in every case.
    type: str
    default: custom
    choices: [custom, directory]
  jobs:
    description: Parallel C(pg_dump) jobs (C(-j)); more than 1 needs O(format=directory).
    type: int
    default: 1
  compress:
    description: Compression level 0-9 (C(-Z)); pg_dump's default when unset.
    type: int
  schema_only:
    description: Dump only the schema (C(--schema-only)).
    type: bool
    default: false
  tables:
    description: Dump only tables matching these C(pg_dump -t) patterns.
    type: list
    elements: str
    default: []
  exclude_tables:
    description: Leave out tables matching these C(pg_dump -T) patterns.
    type: list
    elements: str
    default: []
  verify:
    description:
      - V(toc) reads the table of contents with C(pg_restore --list). For O(format=custom) it reads the
        temporary file while the dump is still being written (pg_dump writes the header and table of contents
        first and never rewrites them), so it adds no wait after the dump.
      - V(full) also reads every data block (C(pg_restore -f /dev/null)).
      - V(restore) also restores into a scratch database (created next to O(db), dropped afterwards; the
        role needs C(CREATEDB)) and returns the row counts of O(verify_tables).
      - V(none) only refuses an empty dump. The backup is then not counted as verified by retention.
      - A failed verification fails the call and leaves no backup under a final name.
    type: str
    default: toc
    choices: [none, toc, full, restore]
  verify_tables:
    description:
      - With O(verify=restore), the tables (C(schema.table), C(public) when no schema is given) whose row
        counts are returned; each must be in the backup. All tables when empty.
    type: list
    elements: str
    default: []
  label:
    description:
      - Free text stored in the manifest, for example the release id; also part of the file name (characters
        other than letters, digits and C(._+-) become C(_)).
    type: str
  copy_to:
    description:
      - A second directory that gets a copy of the backup and its manifest. The copy is written under a
        temporary name, fsynced, compared by sha256 with the backup and then renamed.
      - Retention applies to it as to O(dest).
    type: path
  keep:
    description:
      - Keep the newest N backups of O(db) in O(dest) (and O(copy_to)); older ones may be deleted.
      - A backup is kept when any of O(keep), O(keep_days) or "referenced by a release" keeps it. Whatever
        they say, the newest verified full backup (not schema-only, made without O(tables) and
        O(exclude_tables)), the newest verified backup of any kind, and the backup the run just made (and its
        copy) are always kept. Only backups with a valid manifest for O(db) are ever considered.
      - Without O(keep) and O(keep_days) nothing is deleted.
    type: int
  keep_days:
    description: Keep backups of O(db) finished less than this many days ago.
    type: float
  release_state_dir:
    description:
      - State directory of the stack's release store; backups its releases reference are never deleted.
      - When the store cannot be read, retention deletes nothing and warns.
    type: path
  space_factor:
    description:
      - Free space O(dest) must have before the dump, as a multiple of the estimate of the dump (the user
        tables with their indexes and TOAST and the large objects on disk, plus 1 MiB for the schema). A
        dump holds no index data and is compressed, so 1.0 is an upper bound in practice. V(0) turns the
        check off.
    type: float
    default: 1.0
  container_tmpdir:
    description: Directory inside the container for O(format=directory) dumps in a container.
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
  - The password travels only in the environment (C(PGPASSWORD); passed to C(docker exec) by name), never in
    argv, results, the manifest or logs.
  - In a container the tools use the server's local socket, where many images trust local connections; a
    wrong O(login_password) is then only noticed from the host. When the socket refuses the login (C(peer) of
    Debian and Ubuntu clusters, C(ident), C(reject)) and O(login_password) is set, they connect over TCP to
    127.0.0.1 inside the container instead; a socket that asks for a password (C(scram-sha-256)) gets
    O(login_password). When neither works the failure names the option or the C(pg_hba.conf) line to change.
  - Needs the C(pg_dump) and C(pg_restore) of the server's major version or newer on the managed host when
    O(container) is not set.
seealso:
  - module: vpsops.deploy.pg_restore
  - module: community.postgresql.postgresql_db
"""

EXAMPLES = r"""
- name: Back up the AR database inside its container before the modules phase
  vpsops.deploy.pg_backup:
    container: platform-ar-postgres-1
    db: ar_db
    login_user: ar_user
    login_password: "{{ vault_ar_db_password }}"
    dest: /var/backups/vpsops/ar
    label: "{{ release_id }}"
    copy_to: /mnt/offsite/ar
    keep: 7
    keep_days: 14
    release_state_dir: /var/lib/vpsops/platform
  register: ar_backup

- name: Parallel directory dump from the host, restored into a scratch database to verify it
  vpsops.deploy.pg_backup:
    login_host: 127.0.0.1
    port: 5434
    db: ar_db
    login_user: ar_user
    login_password: "{{ vault_ar_db_password }}"
    dest: /var/backups/vpsops/ar
    format: directory
    jobs: 2
    verify: restore
    verify_tables: [invoices, failed_events]
"""

RETURN = r"""
path:
  description: The backup (a file, or a directory for O(format=directory)); in check mode the path it would write.
  returned: always
  type: str
  sample: /var/backups/vpsops/ar/ar_db_20260212T101500Z_r42.dump
manifest:
  description: Path of the sidecar manifest.
  returned: always
  type: str
  sample: /var/backups/vpsops/ar/ar_db_20260212T101500Z_r42.dump.json
size:
  description: Size in bytes (sum of the files for a directory backup).
  returned: success and not check mode
  type: int
  sample: 1048576
sha256:
  description:
    - sha256 of the file; for a directory backup the sha256 of the lines C(<sha256>  <name>) of its files in
      bytewise name order (C(cd DIR && sha256sum $(LC_ALL=C ls) | sha256sum)).
  returned: success and not check mode
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
verified:
  description: Whether the backup passed a verification other than V(none).
  returned: success and not check mode
  type: bool
  sample: true
verification:
  description: Level, result, TOC entries, versions from the archive header and, for V(restore), row counts.
  returned: success and not check mode
  type: dict
  sample: {level: toc, ok: true, toc_entries: 42, format: CUSTOM, pg_dump_version: "15.18"}
copy:
  description: The verified second copy (path, manifest, sha256, size), or null without O(copy_to).
  returned: success and not check mode
  type: dict
deleted:
  description: Backups retention removed (in check mode, would remove).
  returned: always
  type: list
  elements: str
  sample: []
database:
  description: The database backed up.
  returned: always
  type: str
server_version:
  description: The server's version.
  returned: always
  type: str
  sample: "15.18"
pg_dump_version:
  description: The version of the pg_dump that made the backup (from the archive header when it was verified).
  returned: success and not check mode
  type: str
database_size:
  description: C(pg_database_size) before the dump, in bytes.
  returned: always
  type: int
estimate:
  description:
    - Free bytes the space check asked for, the estimate of the dump times O(space_factor) (see O(space_factor)).
  returned: always
  type: int
started:
  description: UTC start of the dump.
  returned: success and not check mode
  type: str
finished:
  description: UTC end of the verification.
  returned: success and not check mode
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._backup import (
    backup_argument_spec,
    make_backup,
    run_module,
)


def main():
    run_module(AnsibleModule(argument_spec=backup_argument_spec(), supports_check_mode=True), make_backup)


if __name__ == "__main__":
    main()
