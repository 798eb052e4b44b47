# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Where the PostgreSQL client tools run (plugins/module_utils/_pgcli.py)."""

    DOCUMENTATION = r"""
options:
  container:
    description:
      - Run the client tools (C(psql), C(pg_dump), C(pg_restore)) inside this container with
        C(docker exec), using the server's own tools and its local socket. O(login_host) and
        O(port) are then ignored.
      - Without it the tools installed on the managed host connect to O(login_host):O(port).
      - The password is passed to C(docker exec) by variable name (C(-e PGPASSWORD)), never by value.
      - When the local socket refuses the login whatever the password (C(local ... peer), C(ident) or
        C(reject) in C(pg_hba.conf)) and O(login_password) is set, the tools connect over TCP to 127.0.0.1
        inside the container (the server's own port) for this run; the failure names what to change
        (O(login_password), or the C(pg_hba.conf) line) when that does not work either.
    type: str
"""
