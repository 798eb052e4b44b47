# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Every Python package the collection declares for the hosts and the execution environment is
imported by its plugins: no dependency is declared and never used."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Distribution name -> the module it installs, where they differ.
MODULES = {"ansible-core": "ansible", "psycopg2-binary": "psycopg2"}


def declared(path):
    with open(os.path.join(ROOT, path)) as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                yield re.split(r"[<>=!~;\[ ]", line, 1)[0]


def plugin_sources():
    for base, _dirs, files in os.walk(os.path.join(ROOT, "plugins")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(base, name)) as handle:
                    yield handle.read()


SOURCES = list(plugin_sources())


@pytest.mark.parametrize("path, package", [(path, package) for path in ("requirements.txt", "meta/ee-requirements.txt")
                                           for package in declared(path)])
def test_every_declared_package_is_imported(path, package):
    module = MODULES.get(package, package).replace("-", "_")
    pattern = re.compile(r"^\s*(import|from)\s+%s\b|import_module\([\"']%s[\".']" % (re.escape(module), re.escape(module)),
                         re.M)
    assert any(pattern.search(text) for text in SOURCES), "%s declares %s, which no plugin imports" % (path, package)
