# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The release store of a stack on the managed host (plugins/module_utils/_releases.py)."""

    DOCUMENTATION = r"""
options:
  stack:
    description:
      - The stack, which is also its compose project name (lowercase letters, digits, C(-) and C(_)).
    type: str
    required: true
  state_dir:
    description:
      - The stack's state directory on the managed host, holding C(releases/), the C(current)
        pointer, C(history.jsonl) and C(lock.json). Created with mode 0700 when needed.
      - Defaults to C(/var/lib/vpsops/<stack>).
    type: path
notes:
  - "The store keeps one directory per release: the exact compose files, the env file (mode 0600),
    C(images.lock.yml) (a compose override pinning every service to an image that cannot move) and
    C(manifest.json). Every write is atomic (temporary file, fsync, rename); releases are ordered by a
    counter in their manifests, never by file times."
"""

    # Modules that change the stack: they refuse to act on a lock another run holds.
    LOCK_OWNER = r"""
options:
  lock_owner:
    description:
      - The owner of the stack's deploy lock that this task acts for (the C(owner) given to
        M(vpsops.deploy.deploy_lock), e.g. C(lock_owner_effective) of the C(lock) role).
      - While the lock's TTL runs, the module refuses to change anything unless the lock is this
        owner's; without O(lock_owner) it refuses whenever the stack is locked. A stack without a
        lock is changed as asked.
    type: str
"""
