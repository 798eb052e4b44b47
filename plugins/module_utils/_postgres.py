# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""PostgreSQL access for vpsops.deploy: one argument spec for the connection options (documented
by the doc fragment vpsops.deploy.postgres) and one way to connect. Private to this collection.

The password goes to libpq as a keyword, never in argv, and never into a message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib

SSL_MODES = ["allow", "disable", "prefer", "require", "verify-ca", "verify-full"]


def postgres_argument_spec():
    """The connection options, with the names community.postgresql uses."""
    return dict(
        db=dict(type="str", aliases=["login_db"]),
        login_host=dict(type="str", default="127.0.0.1"),
        port=dict(type="int", default=5432, aliases=["login_port"]),
        login_user=dict(type="str", default="postgres"),
        login_password=dict(type="str", default="", no_log=True),
        ssl_mode=dict(type="str", default="prefer", choices=SSL_MODES),
        connect_timeout=dict(type="int", default=5),
    )


class PostgresError(Exception):
    """A connection or query failed; the message never holds the password."""


def driver():
    """psycopg2, imported on first use: modules that only take the options (health_wait without a
    postgres check) do not pay for loading libpq."""
    try:
        return importlib.import_module("psycopg2")
    except ImportError:
        raise PostgresError("psycopg2 is not installed on the managed host: pip install psycopg2-binary")


def has_driver():
    try:
        driver()
        return True
    except PostgresError:
        return False


def connect_kwargs(params, timeout=None):
    kwargs = dict(
        host=params.get("login_host") or "127.0.0.1",
        port=int(params.get("port") or 5432),
        user=params.get("login_user") or "postgres",
        dbname=params.get("db") or "postgres",
        sslmode=params.get("ssl_mode") or "prefer",
        connect_timeout=max(1, int(timeout if timeout is not None else params.get("connect_timeout") or 5)),
        application_name="vpsops.deploy",
    )
    if params.get("login_password"):
        kwargs["password"] = params["login_password"]
    return kwargs


def describe(params):
    """user@host:port/db, for messages."""
    kw = connect_kwargs(params)
    return "%s@%s:%s/%s" % (kw["user"], kw["host"], kw["port"], kw["dbname"])


def scrub(text, params):
    password = params.get("login_password")
    text = str(text).strip()
    if password:
        text = text.replace(password, "********")
    return text


def connect(params, timeout=None):
    psycopg2 = driver()
    try:
        return psycopg2.connect(**connect_kwargs(params, timeout))
    except psycopg2.Error as exc:
        raise PostgresError("cannot connect to %s: %s" % (describe(params), scrub(exc, params)))


def query_one(params, sql, timeout=None):
    """Connect, run one read-only statement, return its first row."""
    conn = connect(params, timeout)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()
    except driver().Error as exc:
        raise PostgresError("query on %s failed: %s" % (describe(params), scrub(exc, params)))
    finally:
        conn.close()
