# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vpsops.deploy.project_files: reads the compose files on the controller and hands them, with the
.env, to the module in one run. The documentation is in plugins/modules/project_files.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase


def read_text(path, name):
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise AnsibleError("files: %s (%s) is not UTF-8 text" % (name, path))


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        names = args.get("files") or []
        src = args.get("src")
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            return dict(result, failed=True, msg="files must be a list of file names, got %r" % (names,))
        if names and not isinstance(src, str):
            return dict(result, failed=True, msg="src must be the directory of the files on the controller")
        contents = {}
        for name in names:
            try:
                local = self._find_needle("files", os.path.join(src, name))
                contents[name] = read_text(local, name)
            except (AnsibleError, OSError) as exc:
                return dict(result, failed=True,
                            msg="files: cannot read %s from src %s on the controller: %s" % (name, src, exc))
        args["contents"] = contents
        result.update(self._execute_module(module_name="vpsops.deploy.project_files", module_args=args,
                                           task_vars=task_vars))
        # The files' text is already in the diff when asked for: -vvv shows their sizes, not them again.
        invocation = result.get("invocation", {}).get("module_args")
        if isinstance(invocation, dict) and isinstance(invocation.get("contents"), dict):
            invocation["contents"] = dict((name, "(%d characters)" % len(text)) for name, text in contents.items())
        return result
