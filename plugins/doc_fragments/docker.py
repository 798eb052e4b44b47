# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The Docker CLI option shared by every module that talks to Docker on the managed host."""

    DOCUMENTATION = r"""
options:
  docker_cli:
    description:
      - The Docker CLI on the managed host. The modules call it with argument lists, never
        through a shell.
    type: path
    default: docker
"""
