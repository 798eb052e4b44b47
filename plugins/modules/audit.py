# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: audit
short_description: Append one event to the deploy audit log on the controller
version_added: 0.1.0
description:
  - Appends one JSON line to an audit log on the Ansible controller (never on the managed host), for
    example when a deploy starts, a phase is done, a rollback runs or a deploy ends. Each line holds
    C(time) (UTC, ISO 8601 with microseconds), C(event), C(stack), C(release), C(phase), C(host) (the
    inventory host name), C(controller) (the controller's host name), C(user) (the AWX/Tower user when
    set, else the controller's login name), C(pid) (of the C(ansible-playbook) process, the same for
    every host of a run), C(awx_job_id) (the variable C(awx_job_id) or C(tower_job_id), else the
    controller's C(JOB_ID) environment variable, else null), C(status), C(check_mode) and C(data).
  - Secrets are masked in O(data), at any depth, before anything is written or returned. Values
    under keys that look like secrets (containing C(password), C(passwd), C(pwd), C(pass), C(secret),
    C(token), C(api_key), C(private_key), C(credential), C(authorization), C(cookie), C(session_id),
    C(hook), C(notify_url) or C(dsn)) become C(********); in every string, the user and password of a
    URL and its query string are masked too. O(status) gets the URL masking as well.
  - Each line is written with a single C(write()) on a descriptor opened with C(O_APPEND), under an
    exclusive C(flock), then fsynced. On a local POSIX filesystem lines of concurrent writers (every
    fork of a run, several runs at once) therefore never interleave, whatever their length; the
    guarantee POSIX gives without the lock is for writes up to C(PIPE_BUF) bytes. Network
    filesystems (NFS) do not honour C(O_APPEND) or C(flock) reliably; keep the log on a local disk.
  - A new file is created with mode 0600 and a new directory with mode 0700. The mode of an existing
    file or directory is never changed (never widened).
  - In check mode the line is written too, with C(check_mode=true), since the audit of a dry run is worth
    keeping and the log is not state the collection manages.
  - The task never reports a change. When the line cannot be written (a path that is not writable,
    a full disk) the task warns and succeeds, unless O(fail_on_error) is set.
author:
  - vpsops.deploy contributors (@vpsops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.conn
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
    details: Runs entirely on the controller as an action plugin; this file only documents it.
  async:
    support: none
  become:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: Writes the line with C(check_mode=true).
  connection:
    support: none
  delegation:
    support: none
    details: Always runs on the controller; C(host) is the inventory host of the task.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  path:
    description:
      - The audit log on the controller. C(~) is expanded.
      - Defaults to the environment variable C(VPSOPS_AUDIT_LOG) of the controller when it is set,
        else C(~/.vpsops/audit.jsonl).
    type: path
  event:
    description:
      - What happened, for example V(deploy_started), V(phase_done), V(rolled_back), V(deploy_failed).
      - Required unless O(entries) is given; not with O(entries).
    type: str
  stack:
    description: The stack (compose project) the event is about.
    type: str
  release:
    description: The release id the event is about.
    type: str
  phase:
    description: The phase the event is about.
    type: str
  status:
    description: An outcome, for example V(ok), V(failed), V(rolled_back).
    type: str
  data:
    description: Anything else worth keeping with the event; secrets in it are masked (see above).
    type: dict
    default: {}
  fail_on_error:
    description: Fail the task when the line cannot be written, instead of warning.
    type: bool
    default: false
  entries:
    description:
      - Several lines in one task, for example one per host of a deploy from a task that runs once
        (C(run_once)). Each line names its own host; O(stack), O(release), O(phase) and O(status) of the
        task stand for those an entry leaves out. All lines are appended with one C(write()).
      - Not with O(event).
    type: list
    elements: dict
    suboptions:
      host:
        description: The inventory host the line is about.
        type: str
        required: true
      event:
        description: What happened.
        type: str
        required: true
      stack:
        description: The stack the line is about.
        type: str
      release:
        description: The release the line is about.
        type: str
      phase:
        description: The phase the line is about.
        type: str
      status:
        description: An outcome.
        type: str
      data:
        description: Anything else worth keeping; secrets in it are masked.
        type: dict
        default: {}
notes:
  - One line per host and call, or one per entry of O(entries). Read the log with any JSON lines tool, for example
    C(jq -c 'select(.stack == "platform")' ~/.vpsops/audit.jsonl).
seealso:
  - module: vpsops.deploy.compose_release_info
    description: The per-host history (C(history.jsonl)) of a stack's releases, on each host.
"""

EXAMPLES = r"""
- name: Record that the deploy starts
  vpsops.deploy.audit:
    event: deploy_started
    stack: "{{ vpsops_stack.name }}"
    data:
      release_tag: "{{ release_tag | default('') }}"

- name: Record the outcome of a phase, in a log of the team's choosing
  vpsops.deploy.audit:
    path: /var/log/vpsops/audit.jsonl
    event: phase_done
    stack: platform
    release: "{{ release.release }}"
    phase: modules
    status: ok
    data:
      summary: "{{ plan.summary }}"
      notify_url: "{{ vpsops_notify_url }}"  # written as ********
    fail_on_error: true
"""

RETURN = r"""
path:
  description: The audit log the line was (or would have been) appended to.
  returned: always
  type: str
  sample: /home/ops/.vpsops/audit.jsonl
written:
  description: Whether the line was written.
  returned: always
  type: bool
entry:
  description: The entry as written, secrets masked.
  returned: without O(entries)
  type: dict
  sample:
    time: "2026-11-23T16:29:00.123456Z"
    event: phase_done
    stack: platform
    release: 20261123T162900Z-4f1c
    phase: modules
    host: vps1
    controller: ops-laptop
    user: ops
    pid: 41233
    awx_job_id: null
    status: ok
    check_mode: false
    data: {notify_url: "********"}
entries:
  description: The entries as written, secrets masked, one per item of O(entries).
  returned: with O(entries)
  type: list
  elements: dict
"""
