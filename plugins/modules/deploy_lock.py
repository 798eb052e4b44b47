#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: deploy_lock
short_description: The per-host deploy lock of a stack
version_added: 0.1.0
description:
  - Takes, refreshes or releases the deploy lock of a stack on a host (C(<state_dir>/lock.json)).
  - A second owner is refused with the holder's details (owner, controller, pid, start, last
    heartbeat). A lock whose last heartbeat is older than its TTL is taken over, with a warning.
  - Acquiring a lock one already holds refreshes it; releasing a free lock is not an error.
  - Every read-modify-write happens under an exclusive C(flock) on the host, so two deploys that
    race for the lock cannot both win.
author:
  - vpsops.deploy contributors (@vpsops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.release_store
attributes:
  check_mode:
    support: full
    details: Reports whether the lock could be taken, without taking it.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  state:
    description: V(acquired) takes the lock, V(heartbeat) refreshes it, V(released) frees it.
    type: str
    default: acquired
    choices: [acquired, heartbeat, released]
  owner:
    description:
      - Who holds the lock. Use a value unique per run, for example the user, controller host and
        a run id; a lock is ours when its owner equals this.
      - One line of printable text, not empty.
    type: str
    required: true
  ttl:
    description:
      - Seconds after the last heartbeat at which the lock counts as stale and may be taken over,
        between 1 and 604800 (a week).
    type: int
    default: 1800
  controller:
    description:
      - The controller's host name, recorded in the lock. The action plugin fills in the
        controller's host name when it is not given.
    type: str
  pid:
    description:
      - The controller process id, recorded in the lock. The action plugin fills in the process id
        of the running ansible-playbook when it is not given.
    type: int
  identity:
    description:
      - The identity of the controller's run, recorded in the lock (C(machine_id), C(boot_id), C(pid_ns),
        C(pid), C(start), C(nonce)), which O(takeover_dead) of a later run compares to prove this run
        dead. The action plugin fills it in; a lock taken without it is never taken over as dead,
        only after its TTL.
    type: dict
  takeover:
    description:
      - With O(state=acquired), the owner of a lock that may be taken over even though its heartbeat
        is recent (a holder known to be dead, or one the operator decided to break). A lock held by
        anyone else is still refused. The takeover is warned about and recorded in the history.
    type: str
  takeover_dead:
    description:
      - With O(state=acquired), when the lock is held by a run of this same controller whose
        ansible-playbook process no longer exists (killed, crashed), take it over at once instead of
        waiting for its TTL. Decided on the controller by the action plugin; the holder's recorded
        O(identity) must name this machine (machine id), this boot and this PID namespace, and its
        process must be gone or be another process now (another start time). A host name proves
        nothing (two containers, such as AWX execution nodes, can share one), so a lock of another
        container or machine, or one recorded without an identity, waits for its TTL.
    type: bool
    default: false
  force:
    description:
      - With O(state=released), release a lock that belongs to another owner, or a lock file that is not
        a lock (JSON that is not the lock object, which every other call refuses).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Lock the stack for this run
  vpsops.deploy.deploy_lock:
    stack: platform
    owner: "{{ lookup('ansible.builtin.env', 'USER') }}@{{ inventory_hostname }}:{{ run_id }}"
    ttl: 900

- name: Release it
  vpsops.deploy.deploy_lock:
    stack: platform
    owner: "{{ lookup('ansible.builtin.env', 'USER') }}@{{ inventory_hostname }}:{{ run_id }}"
    state: released
"""

RETURN = r"""
lock:
  description: The lock after the call (before it, for O(state=released)); null when it was free.
  returned: always
  type: dict
  sample: {"owner": "ops@ctl:42", "controller": "ctl", "pid": 4242, "started": "2026-11-23T16:29:00Z", "ttl": 900}
took_over:
  description: The stale lock that was taken over, or null.
  returned: always
  type: dict
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._releases import (
    LockHeld, ReleaseError, Store, lock_is_live, lock_message, store_argument_spec,
)


MAX_TTL = 7 * 24 * 3600


def main():
    spec = store_argument_spec(docker=False)
    spec.update(
        state=dict(type="str", default="acquired", choices=["acquired", "heartbeat", "released"]),
        owner=dict(type="str", required=True),
        ttl=dict(type="int", default=1800),
        controller=dict(type="str"),
        pid=dict(type="int"),
        force=dict(type="bool", default=False),
        takeover=dict(type="str"),
        takeover_dead=dict(type="bool", default=False),
        identity=dict(type="dict"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = module.params
    # A ttl beyond a week would keep the lock of a dead run from ever going stale.
    if not 1 <= params["ttl"] <= MAX_TTL:
        module.fail_json(msg="ttl must be between 1 and %d seconds (a week), got %d" % (MAX_TTL, params["ttl"]))
    if not params["owner"].strip():
        module.fail_json(msg="owner must not be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in params["owner"]):
        module.fail_json(msg="owner must be one line of printable text (it is shown in every lock message), got %r"
                         % params["owner"])
    controller = params["controller"] or (os.environ.get("SSH_CLIENT") or "").split(" ")[0] or None
    try:
        store = Store(params["stack"], params["state_dir"])
        if module.check_mode:
            lock = store.read_lock() if store.exists() else None
            if params["state"] == "acquired" and lock and lock.get("owner") != params["owner"]:
                if lock_is_live(lock, time.time()) and lock.get("owner") != params["takeover"]:
                    module.fail_json(msg="cannot lock: " + lock_message(lock, time.time()), lock=lock)
            changed = params["state"] != "released" or lock is not None
            module.exit_json(changed=changed, lock=lock, took_over=None)
        if params["state"] == "acquired":
            lock, changed, took_over = store.acquire(params["owner"], params["ttl"], controller, params["pid"],
                                                     takeover=params["takeover"], identity=params["identity"])
            if took_over:
                module.warn("took over the deploy lock (%s): %s"
                            % ("its holder is gone" if took_over.get("owner") == params["takeover"] else "stale",
                               lock_message(took_over, lock["heartbeat_epoch"])))
            module.exit_json(changed=changed, lock=lock, took_over=took_over)
        if params["state"] == "heartbeat":
            module.exit_json(changed=True, lock=store.heartbeat(params["owner"], params["ttl"]), took_over=None)
        lock, changed = store.release_lock(params["owner"], params["force"])
        module.exit_json(changed=changed, lock=lock, took_over=None)
    except LockHeld as exc:
        module.fail_json(msg="cannot lock: %s" % exc if params["state"] == "acquired" else str(exc), lock=exc.lock)
    except ReleaseError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
