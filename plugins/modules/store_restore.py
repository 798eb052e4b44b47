#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: store_restore
short_description: Put a Redis or a named Docker volume back to a store_backup backup
version_added: 0.2.0
description:
  - Restores a backup made by M(vpsops.deploy.store_backup), in this order, stopping at the first failure.
  - Checks the backup's sha256 against its manifest (or O(sha256)); a damaged or truncated backup is never
    restored. A backup whose manifest names another store (C(redis:<container>), C(volume:<volume>)) is
    refused.
  - Takes a safety backup of the current state into O(safety_dest) (label C(pre-restore)), unless
    O(safety_backup=false).
  - V(redis) refuses a Redis with C(appendonly yes) (it would load its AOF); else it stops the container,
    puts the RDB file into its data directory as its C(dbfilename), starts it, waits until it answers
    C(PING) and compares its key count with the backup's.
  - V(volume) stops the running containers that use the volume, empties it and unpacks the tar into it
    (on the host for a local volume, else in a throwaway container), starts them again, and checks that the
    volume holds the backup's files with their sizes.
  - Every run restores, so the module always reports a change.
author:
  - vpsops.deploy contributors (@vpsops)
attributes:
  check_mode:
    support: full
    details: Checks the backup and returns what would be stopped; nothing is written or stopped.
  diff_mode:
    support: none
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
    description: The Redis password, if any (C(REDISCLI_AUTH), passed to C(docker exec) by name).
    type: str
    default: ""
  volume:
    description: The Docker volume (V(volume) only).
    type: str
  image:
    description: Image of the throwaway container for a volume that is not written on the host (needs C(sh), C(find), C(tar)).
    type: str
  access:
    description: How a volume is written, as in M(vpsops.deploy.store_backup).
    type: str
    default: auto
    choices: [auto, host, container]
  src:
    description: The backup file.
    type: path
    required: true
  sha256:
    description: Expected sha256 of O(src); needed when it has no manifest, overrides the manifest's.
    type: str
  safety_backup:
    description: Back up the current state before restoring.
    type: bool
    default: true
  safety_dest:
    description: Directory of the safety backup. Defaults to the directory of O(src).
    type: path
  timeout:
    description: Seconds each step may take; V(0) for no limit.
    type: float
    default: 600
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.docker
seealso:
  - module: vpsops.deploy.store_backup
"""

EXAMPLES = r"""
- name: Put the Redis back to the backup taken before the release
  vpsops.deploy.store_restore:
    type: redis
    container: payouts-redis-1
    src: "{{ redis_backup.path }}"
"""

RETURN = r"""
restored:
  description: The backup restored (in check mode, that would be restored).
  returned: always
  type: str
sha256:
  description: The checksum of the backup, checked before anything else.
  returned: always
  type: str
safety_backup:
  description: The safety backup (path, manifest, sha256, size); in check mode its C(dest); null when turned off.
  returned: always
  type: dict
stopped:
  description: Containers stopped for the restore and started again (in check mode, that would be).
  returned: always
  type: list
  elements: str
verification:
  description: For Redis C(keys) and C(expected_keys); for a volume C(files) and C(bytes) found after the restore.
  returned: success and not check mode
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._backup import run_module
from ansible_collections.vpsops.deploy.plugins.module_utils._stores import restore_store, store_restore_argument_spec


def main():
    run_module(AnsibleModule(argument_spec=store_restore_argument_spec(), supports_check_mode=True), restore_store)


if __name__ == "__main__":
    main()
