#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: store_backup
short_description: Verified, checksummed backups of a Redis or a named Docker volume
version_added: 0.2.0
description:
  - Backs up the state of a store that is not PostgreSQL, the counterpart of M(vpsops.deploy.pg_backup)
    for the other stores a stack keeps state in.
  - V(redis) runs C(BGSAVE) in O(container), waits until C(LASTSAVE) moves (a save already running is
    waited for first), checks the RDB file with C(redis-check-rdb) in the container (its key count is
    recorded), then copies it out (C(docker cp)) to C(redis-<container>_<UTC time>[_<label>].rdb).
  - V(volume) writes a tar of O(volume) to C(volume-<volume>_<UTC time>[_<label>].tar), read from the
    volume's directory on the host when the volume is local (O(access)), else through a throwaway
    container (C(--network none), read-only mount) of O(image) or of the image of a container that uses
    the volume; the tar is then read back whole.
  - The file is written under a temporary name in O(dest) (0600), hashed as it is written, fsynced,
    verified, renamed, and gets a sidecar manifest C(<backup>.json) in the format of
    M(vpsops.deploy.pg_backup)'s (its C(database) is C(redis:<container>) or C(volume:<volume>)), so the
    same retention applies, O(keep) and O(keep_days) never delete the newest verified backup, the one
    just made or one a release in O(release_state_dir) references.
  - Restore is M(vpsops.deploy.store_restore).
author:
  - vpsops.deploy contributors (@vpsops)
attributes:
  check_mode:
    support: full
    details: Checks the Redis answers (or the volume exists) and returns the path it would write and what
      retention would delete; nothing is written.
  diff_mode:
    support: full
    details: The list of backups of the store in O(dest) before and after.
  platform:
    platforms: posix
options:
  type:
    description: The kind of store.
    type: str
    required: true
    choices: [redis, volume]
  container:
    description: The Redis container (V(redis) only).
    type: str
  login_password:
    description:
      - The Redis password (C(requirepass)), if any. It reaches C(redis-cli) as C(REDISCLI_AUTH), passed to
        C(docker exec) by name, never in argv.
    type: str
    default: ""
  volume:
    description: The Docker volume (V(volume) only), its full name (compose prefixes the project name).
    type: str
  image:
    description:
      - Image of the throwaway container that reads a volume that is not read on the host; it needs C(tar)
        (and C(sh) and C(find) for a restore). Default the image of a container that uses the volume.
    type: str
  access:
    description:
      - How a volume is read. V(auto) reads a local volume's directory on the host and any other through a
        throwaway container; V(host) and V(container) force one way.
    type: str
    default: auto
    choices: [auto, host, container]
  dest:
    description: Directory of the backups on the managed host (created 0700 when missing).
    type: path
    required: true
  label:
    description: Free text stored with the backup and part of its file name, for example the release id.
    type: str
  keep:
    description: Keep the newest N backups of this store in O(dest) (see the rules above); unset keeps all.
    type: int
  keep_days:
    description: Also keep backups finished less than this many days ago.
    type: float
  release_state_dir:
    description: The stack's release store; backups its releases reference are never deleted.
    type: path
  timeout:
    description: Seconds the save and the copy may take; V(0) for no limit.
    type: float
    default: 600
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.docker
notes:
  - A Redis with C(appendonly yes) is backed up (the RDB holds the same data) but the restore refuses it,
    since Redis would load its AOF and not the RDB.
seealso:
  - module: vpsops.deploy.store_restore
  - module: vpsops.deploy.pg_backup
"""

EXAMPLES = r"""
- name: Back up the Redis of the payouts before the deploy
  vpsops.deploy.store_backup:
    type: redis
    container: payouts-redis-1
    login_password: "{{ vault_redis_password }}"
    dest: /var/backups/vpsops/payouts
    label: "{{ release_id }}"
    keep: 7

- name: Back up the JetStream store (a named volume)
  vpsops.deploy.store_backup:
    type: volume
    volume: platform_nats-data
    dest: /var/backups/vpsops/platform
"""

RETURN = r"""
path:
  description: The backup file (in check mode, the file it would write).
  returned: always
  type: str
  sample: /var/backups/vpsops/payouts/redis-payouts-redis-1_20260212T101500Z_r42.rdb
manifest:
  description: Its sidecar manifest.
  returned: always
  type: str
type:
  description: V(redis) or V(volume).
  returned: always
  type: str
database:
  description: The store's key in the manifests, C(redis:<container>) or C(volume:<volume>).
  returned: always
  type: str
sha256:
  description: sha256 of the backup file.
  returned: success and not check mode
  type: str
size:
  description: Size of the backup file in bytes.
  returned: success and not check mode
  type: int
verified:
  description: The backup passed its verification.
  returned: success and not check mode
  type: bool
verification:
  description:
    - For Redis C(keys) (what C(redis-check-rdb) read) and C(bgsave_seconds); for a volume C(entries),
      C(files), C(data_bytes) and how it was C(read).
  returned: success and not check mode
  type: dict
deleted:
  description: Backups retention deleted (in check mode, would delete).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._backup import run_module
from ansible_collections.vpsops.deploy.plugins.module_utils._stores import make_store_backup, store_argument_spec


def main():
    run_module(AnsibleModule(argument_spec=store_argument_spec(), supports_check_mode=True), make_store_backup)


if __name__ == "__main__":
    main()
