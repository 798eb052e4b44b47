#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: stack_check
short_description: Check the stack variable before anything changes, on the controller
version_added: 0.3.0
description:
  - Runs on the controller only (an action plugin); no connection to the host is made.
  - Checks O(stack) (C(vpsops_stack), see C(docs/stack.md)) in one task - its keys and types (a wrong type,
    a missing or an unknown key is named, as C(ansible.builtin.validate_argument_spec) names it), the
    connection keys of each database, that every database a phase backs up is defined, its name and
    source, that its phases have unique names and compose files, and that every value of its C(env) can
    be written literally to C(.env).
  - No message shows a value of C(env) or a password.
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
    details: The same check in check mode; it changes nothing.
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
  stack:
    description: The stack.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Check the stack before anything changes
  vpsops.deploy.stack_check:
    stack: "{{ vpsops_stack }}"
"""

RETURN = r"""
msg:
  description: C(the stack is valid), or what is wrong.
  returned: always
  type: str
"""
