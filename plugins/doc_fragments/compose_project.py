# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The compose project a module runs `docker compose` for: its name, directory, files and env files."""

    DOCUMENTATION = r"""
options:
  project:
    description: The compose project name (C(docker compose -p)).
    type: str
    required: true
  project_dir:
    description:
      - The project directory (C(docker compose --project-directory)) on the managed host. Relative
        paths in O(files) and O(env_files) are taken from here, and so is C(.env) when O(env_files)
        is empty.
    type: path
    required: true
  files:
    description: The compose files, in order (C(docker compose -f)).
    type: list
    elements: path
    required: true
  env_files:
    description: Env files, in order (C(docker compose --env-file)); a later one overrides an earlier one.
    type: list
    elements: path
    default: []
"""
