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
import os
import re

STACK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Commands before and after the deploy and around each phase (see _hooks; each hook is checked there).
HOOKS_OPTIONS = dict(
    before=dict(type="list", elements="dict", default=[]),
    after=dict(type="list", elements="dict", default=[]),
)

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
        hooks=dict(type="dict", options=HOOKS_OPTIONS),
        timeout=dict(type="int"),
        migration=dict(type="dict", options=dict(
            service=dict(type="str", required=True),
            command=dict(type="list", elements="str"),
            timeout=dict(type="int", default=600),
            restore_on_failure=dict(type="bool", default=False),
        )),
    )),
    smoke_tests=dict(type="list", elements="dict", default=[]),
    hooks=dict(type="dict", options=HOOKS_OPTIONS),
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
    type=dict(type="str", choices=["postgres"]),
)
# The other stores `databases` may name (type: redis | volume; see _stores): keys of vpsops.deploy.store_backup.
STORE_OPTIONS = dict(
    redis=dict(type=dict(type="str", required=True, choices=["redis"]), container=dict(type="str", required=True),
               login_password=dict(type="str", no_log=True)),
    volume=dict(type=dict(type="str", required=True, choices=["volume"]), volume=dict(type="str", required=True),
                image=dict(type="str"), access=dict(type="str", choices=["auto", "host", "container"])),
)
STORE_TYPES = ["postgres"] + sorted(STORE_OPTIONS)


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
        kind = value.get("type") if isinstance(value, dict) else None
        if kind is not None and kind not in STORE_TYPES:
            raise StackError("%s.databases.%s.type must be one of %s (default postgres), got %r"
                             % (variable, name, ", ".join(STORE_TYPES), kind))
        options = STORE_OPTIONS.get(kind, DATABASE_OPTIONS)
        _validate({"%s.databases.%s" % (variable, name): dict(type="dict", required=True, options=options)},
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
    check_hooks(stack, variable)


def check_hooks(stack, variable="vpsops_stack"):
    """Raise StackError naming the first hook that is not valid (_hooks.validate)."""
    from ansible_collections.vpsops.deploy.plugins.module_utils._hooks import hooks_of, name_of, validate

    owners = [("%s.hooks" % variable, stack.get("hooks"))] + [
        ("%s.phases[%s].hooks" % (variable, p.get("name")), p.get("hooks")) for p in stack.get("phases") or []]
    for where, spec in owners:
        for when in ("before", "after"):
            for index, hook in enumerate(hooks_of(spec, when)):
                problem = validate(hook, "%s.%s[%d] (%s)" % (where, when, index, name_of(hook, index)))
                if problem:
                    raise StackError(problem)


# files the compose files reference -------------------------------------------------------------

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ${NAME?err}, $NAME; $$ is a literal $.
INTERPOLATION_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
MAX_FILES = 500
MAX_BYTES = 20 * 1024 * 1024


def interpolate(text, env):
    """A path of a compose file with its variables replaced as compose does (from the stack's env)."""
    def replace(match):
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        value = env.get(name)
        operator, default = match.group(2), match.group(3) or ""
        if operator in (":-",) and not value:
            return default
        if operator == "-" and value is None:
            return default
        return "" if value is None else str(value)
    return INTERPOLATION_RE.sub(replace, text)


def _relative(path):
    """A compose path that names a file of the project (relative), not of the host (absolute, ~)."""
    return isinstance(path, str) and bool(path) and not path.startswith(("/", "~"))


def compose_yaml(text):
    """A compose file's YAML as a dict (compose's own tags, !reset and !override, read as the value
    they tag), or None when it is not a YAML mapping."""
    import yaml

    class Loader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
        """Compose's own tags read as the value they tag."""

    def untagged(loader, _suffix, node):
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_scalar(node)

    Loader.add_multi_constructor("!", untagged)
    try:
        model = yaml.load(text, Loader=Loader)  # nosec B506 - a SafeLoader subclass
    except yaml.YAMLError:
        return None
    if model is None:
        return {}
    return model if isinstance(model, dict) else None


def file_services(compose_texts):
    """{compose file name: [the services it defines]}, or None for a file whose services only compose
    can tell (not YAML, `include:`, a service that `extends` one of another file). The deploy splits
    the stack into phases by these: a phase's services are those its files define, so a service may
    depend on one of an earlier phase's file, which compose cannot resolve from the phase's files alone."""
    found = {}
    for compose_name, text in compose_texts.items():
        model = compose_yaml(text)
        services = model.get("services") if isinstance(model, dict) else None
        if model is None or model.get("include") or (services is not None and not isinstance(services, dict)):
            found[compose_name] = None
            continue
        services = services or {}
        if any(isinstance(spec, dict) and isinstance(spec.get("extends"), dict) and spec["extends"].get("file")
               for spec in services.values()):
            found[compose_name] = None
            continue
        found[compose_name] = sorted(str(name) for name in services)
    return found


def file_references(compose_texts, env=None):
    """The files of the stack's source directory its compose files reference, as
    ({relative path: kind}, {service: [relative paths]}): bind-mount sources (short `./x:/y` and long
    `type: bind` syntax), `env_file`, and the `file` of top-level `configs` and `secrets` (their
    services are those that list them). Paths are normalised, relative to the source directory;
    one that leaves it raises StackError naming the compose file."""
    env = dict((str(k), "" if v is None else str(v)) for k, v in (env or {}).items())
    kinds, by_service = {}, {}

    def add(raw, kind, compose_name, services):
        path = interpolate(raw, env)
        if not _relative(path):
            return
        norm = os.path.normpath(path)
        if norm == ".." or norm.startswith("../") or os.path.isabs(norm):
            raise StackError("%s references %r, which is outside vpsops_stack.source: the files a release "
                             "carries must be below it" % (compose_name, raw))
        if norm == ".":
            raise StackError("%s %s the whole project directory (%r): %s" % (
                compose_name, "builds from" if kind == "build" else "mounts", raw,
                "put the build's files in a directory of their own" if kind == "build"
                else "name the files or directories to mount instead"))
        # The strictest use wins: a file that is a secret or an env file anywhere stays owner-only.
        if kinds.get(norm) not in ("secret", "env_file"):
            kinds[norm] = kind
        for service in services:
            if norm not in by_service.setdefault(service, []):
                by_service[service].append(norm)

    for compose_name, text in compose_texts.items():
        model = compose_yaml(text)
        if model is None:
            # Not YAML: `docker compose config` says why in the begin step, in compose's words.
            continue
        top = dict(configs=model.get("configs") or {}, secrets=model.get("secrets") or {})
        for service, spec in (model.get("services") or {}).items():
            if not isinstance(spec, dict):
                continue
            for volume in spec.get("volumes") or []:
                if isinstance(volume, str):
                    source = volume.split(":", 1)[0] if ":" in volume else None
                    if source and (source.startswith(".") or "/" in source or "$" in source):
                        add(source, "bind", compose_name, [service])
                elif isinstance(volume, dict) and volume.get("type") == "bind":
                    add(str(volume.get("source") or ""), "bind", compose_name, [service])
            build = spec.get("build")
            context = build if isinstance(build, str) else (build or {}).get("context") if isinstance(build, dict) else None
            if isinstance(context, str) and "://" not in context and not context.startswith("git@"):
                # A build context below the source travels with the release; the host builds from it.
                add(context, "build", compose_name, [service])
            env_files = spec.get("env_file") or []
            for entry in [env_files] if isinstance(env_files, str) else env_files:
                path = entry.get("path") if isinstance(entry, dict) else entry
                if isinstance(path, str):
                    add(path, "env_file", compose_name, [service])
            for key in ("configs", "secrets"):
                for use in spec.get(key) or []:
                    name = use.get("source") if isinstance(use, dict) else use
                    defined = top[key].get(name) if isinstance(top[key], dict) else None
                    if isinstance(defined, dict) and isinstance(defined.get("file"), str):
                        add(defined["file"], "secret" if key == "secrets" else "config", compose_name, [service])
        for key in ("configs", "secrets"):
            for _name, defined in (top[key].items() if isinstance(top[key], dict) else []):
                if isinstance(defined, dict) and isinstance(defined.get("file"), str):
                    add(defined["file"], "secret" if key == "secrets" else "config", compose_name, [])
    return kinds, dict((s, sorted(p)) for s, p in by_service.items())


def read_referenced(source, kinds):
    """{relative path: (bytes, mode, kind)} of every referenced file below `source` on the controller;
    a directory contributes every file below it. Missing files, too many or too large raise StackError."""
    found, total = {}, 0
    for path, kind in sorted(kinds.items()):
        full = os.path.join(source, path)
        if os.path.isdir(full):
            members = []
            for base, dirs, names in os.walk(full):
                dirs.sort()
                members += [os.path.join(base, n) for n in sorted(names)]
        elif os.path.isfile(full):
            members = [full]
        else:
            raise StackError("the compose files reference %s, which is not a file or directory in "
                             "vpsops_stack.source (%s)" % (path, source))
        for member in members:
            rel = os.path.relpath(member, source)
            try:
                with open(member, "rb") as handle:
                    data = handle.read()
                mode = os.stat(member).st_mode & 0o777
            except (IOError, OSError) as exc:
                raise StackError("cannot read %s from vpsops_stack.source: %s" % (rel, exc.strerror or exc))
            total += len(data)
            # Secrets and env files are owner-only on the host; the others keep their mode, at most
            # 0755 (a container user other than root may have to read a config).
            found[rel] = (data, 0o600 if kind in ("secret", "env_file") else (mode & 0o755) | 0o400, kind)
    if len(found) > MAX_FILES or total > MAX_BYTES:
        raise StackError("the compose files reference %d files of %d bytes in all: a release carries at most %d "
                         "files and %d MB (mount large data as a volume instead)"
                         % (len(found), total, MAX_FILES, MAX_BYTES // (1024 * 1024)))
    return found
