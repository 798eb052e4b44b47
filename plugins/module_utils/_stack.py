# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The shape of the stack variable (`vpsops_stack`, docs/stack.md) and its check, run on the
controller before anything changes: a wrong type, a missing or an unknown key is named. Private to
this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

STACK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

STACK_OPTIONS = dict(
    name=dict(type="str", required=True),
    source=dict(type="str", required=True),
    project_dir=dict(type="str"),
    env=dict(type="dict", default={}),
    databases=dict(type="dict", default={}),
    nats_url=dict(type="str"),
    backup=dict(type="dict", options=dict(
        dest=dict(type="str"),
        keep=dict(type="int"),
        keep_days=dict(type="float"),
        copy_to=dict(type="str"),
        verify=dict(type="str", choices=["none", "toc", "full", "restore"]),
        format=dict(type="str", choices=["custom", "directory"]),
    )),
    phases=dict(type="list", elements="dict", required=True, options=dict(
        name=dict(type="str", required=True),
        compose_files=dict(type="list", elements="str", required=True),
        checks=dict(type="list", elements="dict", default=[]),
        backup=dict(type="list", elements="str", default=[]),
        rollout=dict(type="list", elements="str", default=[]),
        jobs=dict(type="list", elements="str", default=[]),
        timeout=dict(type="int"),
        migration=dict(type="dict", options=dict(
            service=dict(type="str", required=True),
            command=dict(type="list", elements="str"),
            timeout=dict(type="int", default=600),
            restore_on_failure=dict(type="bool", default=False),
        )),
    )),
    smoke_tests=dict(type="list", elements="dict", default=[]),
    slo=dict(type="dict", options=dict(
        endpoints=dict(type="list", elements="dict", required=True),
        requests=dict(type="int", default=20),
        max_error_rate=dict(type="float", default=0.05),
        max_p95_ratio=dict(type="float", default=2.0),
        min_p95_ms=dict(type="float", default=50),
    )),
)

# The connection keys of one database of vpsops_stack.databases (those of vpsops.deploy.pg_backup).
DATABASE_OPTIONS = dict(
    container=dict(type="str"),
    db=dict(type="str", required=True),
    login_host=dict(type="str"),
    port=dict(type="int"),
    login_user=dict(type="str"),
    login_password=dict(type="str", no_log=True),
    ssl_mode=dict(type="str"),
)


class StackError(ValueError):
    """The stack is not valid; the message names the key and what was expected."""


def _validate(spec, provided):
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    result = ArgumentSpecValidator(spec).validate(provided)
    if result.error_messages:
        messages = []
        for message in result.error_messages:
            if message not in messages:
                messages.append(message)
        raise StackError("Validation of arguments failed:\n%s" % "\n".join(messages))


def check_stack(stack, variable="vpsops_stack"):
    """Raise StackError for the first thing wrong with the stack, in the order an operator fixes
    them: its keys and types, each database's connection keys, the databases the phases back up,
    its name and source, its phases, its environment. No message shows a value of the env or a
    password."""
    if not isinstance(stack, dict):
        raise StackError("%s must be a mapping (the stack: name, source, env, phases ...), got %s"
                         % (variable, type(stack).__name__))
    # Containers of the wrong kind first: the validator's own words for them are hard to act on.
    for key, kind, what in (("phases", list, "list of phases (mappings with name and compose_files)"),
                            ("env", dict, "mapping of variable names to values"),
                            ("databases", dict, "mapping of database names to their connection keys"),
                            ("smoke_tests", list, "list of checks")):
        if stack.get(key) is not None and not isinstance(stack[key], kind):
            raise StackError("%s.%s must be a %s, got %s" % (variable, key, what, type(stack[key]).__name__))
    for index, phase in enumerate(stack.get("phases") or []):
        if not isinstance(phase, dict):
            raise StackError("%s.phases[%d] must be a mapping with name and compose_files, got %s"
                             % (variable, index, type(phase).__name__))
    _validate({variable: dict(type="dict", required=True, options=STACK_OPTIONS)}, {variable: stack})
    databases = stack.get("databases") or {}
    for name in databases:
        value = databases[name]
        if isinstance(value, dict) and "login_password" in value:
            value = dict(value, login_password="********")
        _validate({"%s.databases.%s" % (variable, name): dict(type="dict", required=True, options=DATABASE_OPTIONS)},
                  {"%s.databases.%s" % (variable, name): value})
    for phase in stack.get("phases") or []:
        unknown = [b for b in phase.get("backup") or [] if b not in databases]
        restore = (phase.get("migration") or {}).get("restore_on_failure")
        if unknown or (restore and not phase.get("backup")):
            raise StackError(
                "%s.phases[%s]: backup names %s that %s.databases does not define (it defines %s), or "
                "migration.restore_on_failure is set while the phase backs up no database."
                % (variable, phase.get("name"), json.dumps(unknown), variable, json.dumps(list(databases))))
    name, source = stack.get("name"), stack.get("source")
    if not isinstance(name, str) or not STACK_NAME_RE.match(name) or not isinstance(source, str):
        raise StackError(
            "%s needs 'name' (lowercase letters, digits, '-' or '_'; it is the compose project name) and "
            "'source' (the directory of the compose files on the controller); got name=%s, source=%s."
            % (variable, name if name is not None else "<missing>", source if source is not None else "<missing>"))
    phases = stack.get("phases")
    names = [p.get("name") for p in phases or []]
    if not phases or not all(names) or len(set(names)) != len(names) \
            or not all(p.get("compose_files") for p in phases):
        raise StackError("%s.phases must be a non-empty list of phases, each with a unique 'name' and a non-empty "
                         "'compose_files' list." % variable)
    for key, value in (stack.get("env") or {}).items():
        if not ENV_NAME_RE.match(str(key)) or "\r" in str(value) or "\0" in str(value):
            raise StackError("%s.env.%s must be a valid variable name whose value holds no carriage return and no "
                             "NUL character (compose's .env format cannot hold those)." % (variable, key))
