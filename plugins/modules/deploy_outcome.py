#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: deploy_outcome
short_description: The decisions of a deploy across its hosts, on the controller
version_added: 0.3.0
description:
  - Runs on the controller only (an action plugin); C(playbooks/deploy.yml) calls it once per wave and
    a few times per run. The decisions are plain Python (C(plugins/module_utils/_outcome.py)), not Jinja.
  - With O(stage=start), before any host is touched, checks O(serial) and O(max_fail_percentage), the
    stack (C(vpsops_stack)) of every host (once per distinct stack) and each host's C(deploy_phase_*)
    variables against the C(deploy_phase) role's argument specs, and returns the waves and the
    C(deploy_started) lines of the audit log (one per host).
  - With O(stage=wave), at the start of a wave (O(batch)), says whether the wave starts and which of its
    hosts go. The waves are those Ansible's C(serial) makes of O(hosts) with O(serial). A wave is over
    the failure budget when more than O(max_fail_percentage) percent of its hosts failed (Ansible's
    rule for a play's C(max_fail_percentage)); a host that failed its checks or its lock counts in its
    own wave. When any wave is over the budget the deploy stops, and no later wave starts.
  - With O(stage=decide), says for each host whether its end step runs and rolls it back. A failed
    host that this run changed is always rolled back; when the deploy stopped, so is every host this
    run changed that has a live release to return to.
  - With O(stage=report), says for each host what happened (C(deployed), C(failed_rolled_back),
    C(failed), C(rolled_back), C(not_started), C(unreachable)), its event and line, and for the run the
    event (C(deploy_succeeded), C(deploy_partial) when hosts failed within the budget,
    C(deploy_failed)), the status, the message that the webhook and the play's failure carry, and the
    audit log's lines (one per host).
  - Reads what the deploy registers per host (C(deploy_phase_release), C(deploy_phase_finished),
    C(deploy_phase_ended), C(__vpsops_wave), C(__vpsops_failed)); nothing secret is returned.
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
    details: The same decisions in check mode; it changes nothing.
  connection:
    support: none
  delegation:
    support: none
    details: Always runs on the controller.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  stage:
    description: What to compute.
    type: str
    required: true
    choices: [start, wave, decide, report]
  hosts:
    description: Every host of the deploy (C(ansible_play_hosts_all)), in the play's order.
    type: list
    elements: str
    required: true
  reachable:
    description: The hosts still in the play (C(ansible_play_hosts)); the others count as unreachable.
    type: list
    elements: str
  batch:
    description: The hosts of the current wave (C(ansible_play_batch)), with O(stage=wave).
    type: list
    elements: str
  serial:
    description:
      - The waves, as the play's C(serial) (C(vpsops_serial)) gives them to Ansible - a number of hosts, a
        percentage such as V(25%) or a list of them, the last repeated.
      - Null, empty or absent means V([1, '100%']) (the first host alone, then the others).
    type: raw
  max_fail_percentage:
    description:
      - The share of a wave's hosts that may fail, 0 to 100 (C(vpsops_max_fail_percentage)), as a number or
        a text such as V(10) or V(10%).
      - Null, empty or absent means 0 - any failed host stops the deploy.
    type: raw
  release_tag:
    description: The release tag the deploy was asked for, kept in the C(deploy_started) lines (O(stage=start)).
    type: str
  stack:
    description: The stack's name, for the messages.
    type: str
  stack_variable:
    description: The variable that holds each host's stack (O(stage=start)).
    type: str
    default: vpsops_stack
"""

EXAMPLES = r"""
- name: Check the waves, the failure budget and every host's stack before anything changes
  vpsops.deploy.deploy_outcome:
    stage: start
    hosts: "{{ ansible_play_hosts_all }}"
    serial: "{{ vpsops_serial | default(omit, true) }}"
    max_fail_percentage: "{{ vpsops_max_fail_percentage | default(omit, true) }}"
  run_once: true
  register: start

- name: Decide whether this wave starts
  vpsops.deploy.deploy_outcome:
    stage: wave
    hosts: "{{ ansible_play_hosts_all }}"
    batch: "{{ ansible_play_batch }}"
    serial: "{{ vpsops_serial | default(omit, true) }}"
    max_fail_percentage: "{{ vpsops_max_fail_percentage | default(omit, true) }}"
  run_once: true
  register: __vpsops_wave

- name: Decide what each host needs
  vpsops.deploy.deploy_outcome:
    stage: decide
    hosts: "{{ ansible_play_hosts_all }}"
    reachable: "{{ ansible_play_hosts }}"
  run_once: true
  register: decision
"""

RETURN = r"""
hosts:
  description:
    - Per host, the decision (O(stage=wave) and O(stage=decide) - C(go), C(rollback), C(end), C(reason),
      C(wave)) or what happened (O(stage=report) - C(result), C(event), C(line), C(fail), C(wave)).
  returned: wave, decide, report
  type: dict
waves:
  description: The waves, each with its C(number), C(hosts) (start - the hosts only), C(failed) and C(over).
  returned: always
  type: list
  elements: raw
stop:
  description: Whether a wave went over the failure budget, so that no later wave starts.
  returned: wave, decide, report
  type: bool
failed_hosts:
  description: The hosts that failed.
  returned: wave, decide, report
  type: list
  elements: str
unreachable:
  description: The hosts that are no longer reachable.
  returned: wave, decide, report
  type: list
  elements: str
event:
  description: V(deploy_succeeded), V(deploy_partial) (hosts failed within the budget) or V(deploy_failed).
  returned: report
  type: str
message:
  description: What the play's failure says - every host and what happened to it, and why the deploy stopped.
  returned: report
  type: str
audit:
  description:
    - The audit log's lines, one per host (C(deploy_started) at start, the outcome at report).
    - For O(vpsops.deploy.audit#module:entries).
  returned: start, report
  type: list
  elements: dict
"""
