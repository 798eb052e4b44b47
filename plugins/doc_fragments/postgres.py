# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """PostgreSQL connection options (plugins/module_utils/_postgres.py postgres_argument_spec)."""

    DOCUMENTATION = r"""
options:
  db:
    description: Database to connect to.
    type: str
    aliases: [login_db]
  login_host:
    description: Host of the PostgreSQL server.
    type: str
    default: 127.0.0.1
  port:
    description: Port of the PostgreSQL server.
    type: int
    default: 5432
    aliases: [login_port]
  login_user:
    description: Role to connect as.
    type: str
    default: postgres
  login_password:
    description:
      - Password of O(login_user). Passed to libpq as a keyword, never on a command line, and never
        shown in results or messages.
    type: str
    default: ''
  ssl_mode:
    description: libpq C(sslmode).
    type: str
    default: prefer
    choices: [allow, disable, prefer, require, verify-ca, verify-full]
  connect_timeout:
    description: Seconds to wait for a connection.
    type: int
    default: 5
requirements:
  - psycopg2 (C(psycopg2-binary)) on the managed host
"""
