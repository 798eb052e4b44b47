# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The process runner of vpsops.deploy: one program from an argument list (never a shell),
bounded by a deadline. The ground floor of the shared code: it imports nothing of the collection.
Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import subprocess


def default_runner(argv, timeout=None, env=None):
    """Run argv (never a shell), in `env` when given (else this process's environment); return
    (rc, stdout, stderr)."""
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                              check=False, universal_newlines=True, env=env)
    except OSError as exc:
        return 127, "", str(exc)
    except subprocess.TimeoutExpired:
        return 124, "", "timed out after %ss" % timeout
    return proc.returncode, proc.stdout, proc.stderr
