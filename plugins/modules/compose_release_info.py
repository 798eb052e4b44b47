#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: compose_release_info
short_description: List the releases of a Docker Compose stack on a host
version_added: 0.1.0
description:
  - Reads the release store of a stack (see M(vpsops.deploy.compose_release)) and returns its
    releases newest first, which one is live, the one a rollback would go back to, the deploy lock
    and the latest history events. Only reads; a missing store is an empty list.
  - A release whose manifest cannot be trusted is listed in RV(corrupt), not in RV(releases).
author:
  - vpsops.deploy contributors (@vpsops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.release_store
attributes:
  check_mode:
    support: full
    details: Only reads.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  history:
    description: How many of the latest C(history.jsonl) events to return.
    type: int
    default: 20
"""

EXAMPLES = r"""
- name: What runs, and what a rollback would go back to
  vpsops.deploy.compose_release_info:
    stack: platform
  register: releases

- name: Show it
  ansible.builtin.debug:
    msg: "live {{ releases.live }}, previous {{ releases.previous }}"
"""

RETURN = r"""
releases:
  description: The releases, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The release id.
      type: str
    status:
      description: pending, live, superseded, failed or rolled_back.
      type: str
    time:
      description: When it was recorded (UTC, ISO 8601).
      type: str
    seq:
      description: Its place in the order of releases.
      type: int
    user:
      description: Who recorded it.
      type: str
    git_sha:
      description: The recorded source revision.
      type: str
    services:
      description: Per service, the image reference, image ID and pinned reference.
      type: dict
    backups:
      description: The backups pinned to the release.
      type: list
live:
  description: The live release id, or null.
  returned: always
  type: str
previous:
  description: The release C(to=previous) of M(vpsops.deploy.compose_rollback) would choose, or null.
  returned: always
  type: str
corrupt:
  description: Releases whose manifest cannot be trusted, with the reason.
  returned: always
  type: dict
lock:
  description: The deploy lock, or null when free.
  returned: always
  type: dict
history:
  description: The latest history events, oldest first.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._releases import ReleaseError, Store, store_argument_spec


def summary(manifest):
    return dict(
        id=manifest["id"], status=manifest["status"], time=manifest.get("created"), seq=manifest["seq"],
        user=manifest.get("user"), git_sha=manifest.get("git_sha"),
        services=dict((n, dict(image=s.get("image"), image_id=s.get("image_id"), ref=s.get("ref")))
                      for n, s in manifest["services"].items()),
        backups=[dict((k, b.get(k)) for k in ("name", "path", "size", "sha256", "verified", "database"))
                 for b in manifest.get("backups") or []],
    )


def main():
    spec = store_argument_spec(docker=False)
    spec.update(history=dict(type="int", default=20))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    try:
        store = Store(module.params["stack"], module.params["state_dir"])
        manifests, corrupt = store.releases()
        try:
            previous = store.resolve("previous")
        except ReleaseError:
            previous = None
        lock = store.read_lock() if store.exists() else None
        history = store.history(max(module.params["history"], 0)) if module.params["history"] > 0 else []
    except ReleaseError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, releases=[summary(m) for m in manifests], live=store.live_id(),
                     previous=previous, corrupt=corrupt, lock=lock, history=history)


if __name__ == "__main__":
    main()
