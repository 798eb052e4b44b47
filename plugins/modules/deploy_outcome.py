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
  - Runs on the controller only (an action plugin); C(playbooks/deploy.yml) calls it once per run.
  - With O(stage=decide), says for each host whether its end step rolls it back. When any host of the
    run failed or became unreachable, every host this run changed that has a live release to return to is
    rolled back.
  - With O(stage=report), says for each host what happened and what was done (its event and line), and
    for the run the event, the status and the message that the audit log, the webhook and the play's
    failure carry.
  - Reads the facts the deploy keeps per host (C(__vpsops_begin), C(__vpsops_failed), C(__vpsops_touched),
    C(__vpsops_promoted), C(__vpsops_skipped), C(__vpsops_end)); nothing secret is among them.
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
    choices: [decide, report]
  hosts:
    description: Every host of the deploy.
    type: list
    elements: str
    required: true
  reachable:
    description: The hosts still in the play (C(ansible_play_hosts)); the others count as unreachable.
    type: list
    elements: str
  stack:
    description: The stack's name, for the messages.
    type: str
"""

EXAMPLES = r"""
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
  description: Per host, the decision (decide) or its event, line and outcome (report).
  returned: always
  type: dict
failed_hosts:
  description: The hosts that failed.
  returned: always
  type: list
  elements: str
unreachable:
  description: The hosts that are no longer reachable.
  returned: always
  type: list
  elements: str
event:
  description: deploy_succeeded or deploy_failed.
  returned: report
  type: str
message:
  description: What the webhook and the play's failure say.
  returned: report
  type: str
"""
