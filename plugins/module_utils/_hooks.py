# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Hooks: commands the stack runs before and after its deploy and around each phase (pause a
consumer, turn on a maintenance page, register a webhook). A hook runs on the host or in a running
container of a service, with a timeout; its output is masked, or not shown at all when the stack
marks it secret. Private to this collection.

    hooks: {before: [hook, ...], after: [hook, ...]}    (vpsops_stack.hooks and phases[].hooks)
    hook:  {name, command: [argv], service | container (else the host), timeout (60),
            secret (false), on_rollback (false: an `after` hook of the deploy that also runs when
            the deploy failed and rolled back, or stopped before changing anything)}
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import DockerError
from ansible_collections.vpsops.deploy.plugins.module_utils._runner import default_runner

DEFAULT_TIMEOUT = 60
KEYS = ("name", "command", "service", "container", "timeout", "secret", "on_rollback")


class HookError(Exception):
    """A hook failed or is not valid; `runs` holds what ran before it."""

    def __init__(self, message, runs=None):
        super(HookError, self).__init__(message)
        self.runs = list(runs or [])


def hooks_of(spec, when):
    """The hooks of `spec` (the stack's or a phase's `hooks`) for `when` (before, after)."""
    found = ((spec or {}).get(when) or []) if isinstance(spec, dict) else []
    return [h for h in found if isinstance(h, dict)]


def validate(hook, where):
    """A hook's problems as one message naming where it is, or None."""
    unknown = sorted(set(hook) - set(KEYS))
    if unknown:
        return "%s: unknown keys %s (a hook has %s)" % (where, ", ".join(unknown), ", ".join(KEYS))
    command = hook.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, (str, int, float)) for a in command):
        return "%s: 'command' must be a non-empty list of arguments (no shell), got %r" % (where, type(command).__name__)
    if hook.get("service") and hook.get("container"):
        return "%s: give 'service' or 'container', not both" % where
    try:
        timeout = int(DEFAULT_TIMEOUT if hook.get("timeout") is None else hook["timeout"])
    except (TypeError, ValueError):
        return "%s: 'timeout' must be a number of seconds, got %r" % (where, hook.get("timeout"))
    if not 1 <= timeout <= 86400:
        return "%s: 'timeout' must be between 1 and 86400 seconds, got %d" % (where, timeout)
    return None


def name_of(hook, index):
    return str(hook.get("name") or "hook %d (%s)" % (index + 1, str((hook.get("command") or ["?"])[0])))


def run_hooks(docker, project, hooks, where, env=None, redact=None, clock=time.monotonic):
    """Run `hooks` in order; stop at the first that fails (HookError with the runs so far). Returns
    [{name, where, rc, seconds, output}]: `output` is the last lines, masked by `redact`, or a note
    when the hook is secret. `env` ({name: value}) is given to every hook (VPSOPS_STACK, ...)."""
    runs = []
    env = dict((str(k), str(v)) for k, v in (env or {}).items() if v is not None)
    for index, hook in enumerate(hooks):
        name = name_of(hook, index)
        problem = validate(hook, "%s hook %r" % (where, name))
        if problem:
            raise HookError(problem, runs)
        argv = [str(a) for a in hook["command"]]
        timeout = int(DEFAULT_TIMEOUT if hook.get("timeout") is None else hook["timeout"])
        target = hook.get("container") or hook.get("service")
        if target:
            container = hook.get("container") or running_container(docker, project, hook["service"])
            if not container:
                raise HookError("%s hook %r: service %s has no running container to run it in"
                                % (where, name, hook["service"]), runs)
            command = [docker.cli, "exec"] + sum([["-e", "%s=%s" % (k, v)] for k, v in sorted(env.items())], []) \
                + [container] + argv
            run_env = None
        else:
            command = argv
            run_env = dict(os.environ, **env)
        started = clock()
        try:
            rc, out, err = default_runner(command, timeout=timeout, env=run_env) if run_env is not None \
                else docker.runner(command, timeout=timeout)
        except (OSError, DockerError) as exc:
            rc, out, err = 127, "", str(exc)
        text = ("%s\n%s" % (out or "", err or "")).strip()
        if hook.get("secret"):
            shown = "(output not shown: the hook is marked secret)"
        else:
            shown = "\n".join(text.splitlines()[-15:])
            shown = redact(shown) if redact else shown
        entry = dict(name=name, where=where, rc=rc, seconds=round(clock() - started, 3), output=shown[-1500:],
                     on=target or "host")
        runs.append(entry)
        if rc != 0:
            timed_out = rc == 124 and "timed out" in (err or "")
            raise HookError("%s hook %r failed (%s)%s" % (
                where, name, "timed out after %ss" % timeout if timed_out else "exit code %s" % rc,
                (": " + entry["output"]) if entry["output"] else ""), runs)
    return runs


def running_container(docker, project, service):
    """The name of a running container of the service (the first by number), or None."""
    running = [c for c in docker.project_containers(project) if c["service"] == service and c["state"] == "running"]
    running.sort(key=lambda c: int(c.get("number") or 0))
    return running[0]["name"] if running else None
