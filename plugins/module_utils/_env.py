# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The env files of a Docker Compose project (`.env`, `--env-file`), read as compose reads them:
the one parser of that format for the preflight, the release store and the deploy. The ground floor
of the shared code. Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ansible_collections.vpsops.deploy.plugins.module_utils._files import read_text


def read_env_file(path):
    """{NAME: value} of the env file at `path` (parse_env); {} when there is no path or no file."""
    if not path or not os.path.isfile(path):
        return {}
    return parse_env(read_text(path))


def parse_env(text):
    """{name: value} of a dotenv file as compose reads it: KEY=value, export KEY=value, KEY: value,
    'single' (literal) and "double" quoted values that may span lines, ` #` comments after unquoted
    values. A line holding only a name sets nothing (compose then looks in the environment)."""
    values = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[7:].lstrip()
        match = re.match(r"([A-Za-z_][A-Za-z0-9_.-]*)\s*(?:=|:\s)\s*(.*)$", line)
        if not match:
            continue
        name, raw = match.group(1), match.group(2)
        if raw[:1] in ("'", '"'):
            quote, body = raw[0], raw[1:]
            end = _closing_quote(body, quote)
            while end < 0 and i < len(lines):
                body += "\n" + lines[i]
                i += 1
                end = _closing_quote(body, quote)
            value = body[:end] if end >= 0 else body
            if quote == '"':
                value = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)), value)
        else:
            value = re.split(r"\s#", raw, 1)[0].strip()
        values[name] = value
    return values


def _closing_quote(body, quote):
    pos = 0
    while True:
        pos = body.find(quote, pos)
        if pos < 0 or quote == "'":
            return pos
        backslashes = len(body[:pos]) - len(body[:pos].rstrip("\\"))
        if backslashes % 2 == 0:
            return pos
        pos += 1
