# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Preflight of a host and of a Docker Compose stack, behind vpsops.deploy.compose_preflight.

Private to this collection. Only reads: the compose model (`docker compose config`), the env
files, the containers that run, the host's networks and volumes, /proc and the file systems.
Values of environment variables never leave this module: results and messages name variables,
never their values, and compose's own error text is redacted before it is shown.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
import re
import socket

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Compose, Docker, DockerError, raise_if_daemon_down
from ansible_collections.vpsops.deploy.plugins.module_utils import _externals
from ansible_collections.vpsops.deploy.plugins.module_utils._env import parse_env
from ansible_collections.vpsops.deploy.plugins.module_utils._files import read_text

SCOPES = ("all", "host", "stack")
DEFAULT_STATE_ROOT = "/var/lib/vpsops"
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Compose warns, once per variable, on stderr; newer versions with a terminal write WARN[0000] ...
UNSET_WARNING = re.compile(r'The \\?"([A-Za-z_][A-Za-z0-9_]*)\\?" variable is not set')
WARNING_LINE = re.compile(r'(^|\s)level=warning(\s|$)|^WARN\[')
# ${NAME}, ${NAME:-x}, $NAME in compose files ($$ escapes a dollar)
REFERENCE = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")
# Values shorter than this are not treated as secrets (ports, flags, "v1"); parts of longer values
# this long or longer are redacted wherever compose quotes them.
SECRET_MIN = 4
WILDCARD_IPS = ("", "0.0.0.0", "::")
TOKEN = re.compile(r"[^\s\"'`]+")
TOKEN_EDGES = ":,;.()[]{}<>"


class PreflightError(ValueError):
    """Bad input: the message names the option and what was expected."""


def argument_spec():
    return dict(
        scope=dict(type="str", default="all", choices=list(SCOPES)),
        project=dict(type="str"),
        project_dir=dict(type="path"),
        files=dict(type="list", elements="str"),
        env_files=dict(type="list", elements="str", default=[]),
        min_disk_free_mb=dict(type="int", default=2048),
        disk_paths=dict(type="list", elements="path", default=[]),
        min_memory_mb=dict(type="int", default=256),
        min_cores=dict(type="int", default=1),
        compose_min_version=dict(type="str"),
        allow_latest=dict(type="bool", default=False),
        required_env=dict(type="list", elements="str", default=[]),
        check_ports=dict(type="bool", default=True),
        fail_on_problems=dict(type="bool", default=True),
        docker_cli=dict(type="path", default="docker"),
    )


def validate(params):
    """Raise PreflightError for options that cannot be right whatever the host holds."""
    for name in ("min_disk_free_mb", "min_memory_mb", "min_cores"):
        if params[name] < 0:
            raise PreflightError("%s must be 0 or more, got %d" % (name, params[name]))
    for path in params["disk_paths"] or []:
        if not path or not os.path.isabs(path):
            raise PreflightError("disk_paths must hold absolute paths, got %r" % (path,))
    if params["scope"] == "host":
        return
    missing = [name for name in ("project", "project_dir", "files") if params.get(name) in (None, "", [])]
    if missing:
        raise PreflightError("scope=%s checks a stack and needs %s (project: the compose project name, "
                             "project_dir: the directory holding the compose files, files: at least one "
                             "compose file)" % (params["scope"], ", ".join(missing)))
    if not PROJECT_NAME.match(params["project"]):
        raise PreflightError("project must be a compose project name (lowercase letters, digits, '-' and '_', "
                             "starting with a letter or digit), got %r" % params["project"])
    if not os.path.isabs(params["project_dir"]):
        raise PreflightError("project_dir must be an absolute path, got %r" % params["project_dir"])
    for option in ("files", "env_files"):
        for item in params[option] or []:
            if not item or not item.strip():
                raise PreflightError("%s must hold file names or paths, got an empty entry" % option)
    for name in params["required_env"] or []:
        if not VARIABLE_NAME.match(name or ""):
            raise PreflightError("required_env must hold variable names (letters, digits and '_', not starting "
                                 "with a digit), got %r" % (name,))


# env files -----------------------------------------------------------------------------------

def referenced_variables(text):
    """Names a compose file interpolates."""
    return set(a or b for a, b in REFERENCE.findall(text or ""))


def effective_env(file_values, environ):
    """What compose interpolates with: the process environment wins over the env files, and a
    later env file over an earlier one. file_values: [(path, {name: value})] in order.
    Returns {name: (value, where)}."""
    merged = {}
    for path, values in file_values:
        for name, value in values.items():
            merged[name] = (value, path)
    for name, value in environ.items():
        merged[name] = (value, "the environment")
    return merged


class Redactor:
    """Removes the values of variables, and any part of them compose quotes, from a text.
    A value is shown as <value of NAME>, a part of one as <part of the value of NAME>."""

    def __init__(self, values):
        self.values = sorted(((n, v) for n, v in values.items() if v and len(v) >= SECRET_MIN),
                             key=lambda item: (-len(item[1]), item[0]))
        self.names = {}
        for name, value in self.values:
            self.names.setdefault(value, name)
        self.pattern = re.compile("|".join(re.escape(v) for v in self.names)) if self.names else None

    def __call__(self, text):
        if not text or self.pattern is None:
            return text
        pieces = []
        pos = 0
        for match in self.pattern.finditer(text):
            pieces.append(TOKEN.sub(self._token, text[pos:match.start()]))
            pieces.append("<value of %s>" % self.names[match.group(0)])
            pos = match.end()
        pieces.append(TOKEN.sub(self._token, text[pos:]))
        return "".join(pieces)

    def _token(self, match):
        token = match.group(0)
        core = token.strip(TOKEN_EDGES)
        if len(core) < SECRET_MIN:
            return token
        for name, value in self.values:
            if core in value:
                return token.replace(core, "<part of the value of %s>" % name)
        return token


# compose output ---------------------------------------------------------------------------------

def unset_variables(stderr):
    """Variables compose warned are not set, in the order it named them."""
    names = []
    for name in UNSET_WARNING.findall(stderr or ""):
        if name not in names:
            names.append(name)
    return names


def compose_error(stderr, redact=None):
    """Compose's error, without its warnings, redacted, bounded."""
    lines = [line.strip() for line in (stderr or "").splitlines()
             if line.strip() and not WARNING_LINE.search(line.strip())]
    text = " ".join(lines[-10:])[-1500:] or "no error text"
    return redact(text) if redact else text


def parse_model(model):
    """{service: {"image", "build", "ports": [{"host_ip", "published", "protocol", "target"}]}}
    from the JSON of `docker compose config --format json`."""
    services = {}
    for name, service in sorted(((model or {}).get("services") or {}).items()):
        service = service or {}
        ports = []
        for port in service.get("ports") or []:
            if not isinstance(port, dict):
                continue
            published = str(port.get("published") or "").strip()
            if not published:
                continue  # docker picks a free host port
            ports.append({"host_ip": port.get("host_ip") or "", "published": published,
                          "protocol": (port.get("protocol") or "tcp").lower(), "target": port.get("target")})
        services[name] = {"image": service.get("image"), "build": bool(service.get("build")), "ports": ports}
    return services


def image_tag(image):
    """(tag, digest) of an image reference; tag None when there is none."""
    image = image or ""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else None
    return tag, digest


def floating_image(image):
    """True when the reference can move under the same name: tag `latest` or no tag, unless a
    digest pins it."""
    tag, digest = image_tag(image)
    if digest:
        return False
    return tag is None or tag == "latest"


def image_problems(services, allow_latest):
    """Sentences for services whose image floats. Services built on the host (build: without
    image:) are left out: their image is made here, not pulled."""
    problems = []
    for name, service in sorted(services.items()):
        image = service["image"]
        if not image or allow_latest or not floating_image(image):
            continue
        how = "tag latest" if image_tag(image)[0] == "latest" else "no tag (so latest)"
        problems.append("service %s uses image %s with %s: pin a version tag or a digest "
                        "(or set allow_latest)." % (name, image, how))
    return problems


# ports ------------------------------------------------------------------------------------------

def published_ports(published):
    """[int] of a published port or range ("8080", "8000-8010")."""
    text = str(published).strip()
    match = re.match(r"^(\d+)(?:-(\d+))?$", text)
    if not match:
        return []
    first = int(match.group(1))
    last = int(match.group(2) or first)
    return list(range(first, last + 1)) if last >= first else []


def parse_container_lines(text):
    """Running containers from `docker inspect --format CONTAINER_FORMAT`, one JSON per line:
    [{"name", "project", "bindings": [(host_ip, port, protocol)]}]."""
    containers = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            item = json.loads(line)
        except ValueError:
            continue
        bindings = []
        for key, binds in sorted((item.get("ports") or {}).items()):
            protocol = key.split("/", 1)[1] if "/" in key else "tcp"
            for bind in binds or []:
                try:
                    bindings.append((bind.get("HostIp") or "", int(bind.get("HostPort")), protocol))
                except (TypeError, ValueError):
                    continue
        containers.append({"name": (item.get("name") or "").lstrip("/"),
                           "project": item.get("project") or None, "bindings": bindings})
    return containers


# Only what the port check needs: never the containers' environment.
CONTAINER_FORMAT = ('{"name":{{json .Name}},"project":{{json (index .Config.Labels "com.docker.compose.project")}},'
                    '"ports":{{json .NetworkSettings.Ports}}}')


def addresses_overlap(a, b):
    return a in WILDCARD_IPS or b in WILDCARD_IPS or a == b


def port_holders(host_ip, port, protocol, containers):
    """The running containers that publish host_ip:port/protocol (or a wildcard address of it)."""
    return [c for c in containers
            if any(p == port and proto == protocol and addresses_overlap(host_ip, ip) for ip, p, proto in c["bindings"])]


def judge_port(project, holders, bind_error=None, process=None):
    """(owner, acceptable) of one host port: held by a container of this project (fine, compose
    recreates it), by another container, by a process on the host, or free."""
    others = [c for c in holders if c["project"] != project]
    if others:
        c = others[0]
        return ("container %s (%s)" % (c["name"], "project %s" % c["project"] if c["project"]
                                       else "not a compose container"), False)
    if holders:
        return "this project (container %s)" % holders[0]["name"], True
    if bind_error is None:
        return "free", True
    if bind_error == errno.EADDRINUSE:
        return (process or "a process on the host"), False
    if bind_error == errno.EADDRNOTAVAIL:
        return "address not available on this host", False
    if bind_error in (errno.EACCES, errno.EPERM):
        return "unknown (no permission to test a port below 1024)", True
    return "unknown (bind test failed: %s)" % os.strerror(bind_error), True


def port_key(published, protocol):
    return published if protocol == "tcp" else "%s/%s" % (published, protocol)


def duplicate_ports(services):
    """Sentences for a host port that two services of the stack both publish (ranges, where
    docker picks one free port, are left out)."""
    published = []
    for name, service in sorted(services.items()):
        for spec in service["ports"]:
            numbers = published_ports(spec["published"])
            if len(numbers) == 1:
                published.append((name, spec["host_ip"], numbers[0], spec["protocol"]))
    problems = set()
    for index, (name, ip, port, protocol) in enumerate(published):
        for other, other_ip, other_port, other_protocol in published[:index]:
            if other != name and other_port == port and other_protocol == protocol and addresses_overlap(ip, other_ip):
                problems.add("port %d/%s is published by both service %s and service %s: only one can bind it."
                             % (port, protocol, other, name))
    return sorted(problems)


def bind_test(host_ip, port, protocol):
    """None when host_ip:port can be bound now, else the errno."""
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    address = host_ip or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    try:
        sock = socket.socket(family, kind)
    except OSError as exc:
        return exc.errno or errno.EINVAL
    try:
        if kind == socket.SOCK_STREAM:
            # As Docker and most servers bind: a port in TIME_WAIT is not in use.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        return None
    except OSError as exc:
        return exc.errno or errno.EADDRINUSE
    finally:
        sock.close()


def socket_inodes(port, protocol, proc="/proc"):
    """Inodes of the sockets bound to a local port (listening for TCP)."""
    inodes = set()
    for table in (protocol, protocol + "6"):
        try:
            with open(os.path.join(proc, "net", table)) as handle:
                rows = handle.read().splitlines()[1:]
        except (IOError, OSError):
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10:
                continue
            try:
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
            except (IndexError, ValueError):
                continue
            if local_port == port and (protocol != "tcp" or fields[3] == "0A") and fields[9] != "0":
                inodes.add(fields[9])
    return inodes


def socket_process(port, protocol, proc="/proc", limit=20000):
    """'process NAME (pid N)' holding a local port, when /proc tells (root sees every process)."""
    inodes = socket_inodes(port, protocol, proc)
    if not inodes:
        return None
    targets = set("socket:[%s]" % inode for inode in inodes)
    looked = 0
    for pid in sorted((p for p in os.listdir(proc) if p.isdigit()), key=int):
        fd_dir = os.path.join(proc, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except (IOError, OSError):
            continue
        for fd in fds:
            looked += 1
            if looked > limit:
                return None
            try:
                link = os.readlink(os.path.join(fd_dir, fd))
            except (IOError, OSError):
                continue
            if link in targets:
                try:
                    with open(os.path.join(proc, pid, "comm")) as handle:
                        comm = handle.read().strip()
                except (IOError, OSError):
                    comm = "?"
                return "process %s (pid %s)" % (comm, pid)
    return None


# host -------------------------------------------------------------------------------------------

def nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def free_mb(path):
    stat = os.statvfs(path)
    return int(stat.f_bavail * stat.f_frsize // (1024 * 1024))


def parse_meminfo(text):
    """MemAvailable in MB (MemFree + Buffers + Cached on kernels older than 3.14)."""
    fields = {}
    for line in (text or "").splitlines():
        match = re.match(r"^(\w+):\s+(\d+)", line)
        if match:
            fields[match.group(1)] = int(match.group(2))
    if "MemAvailable" in fields:
        kb = fields["MemAvailable"]
    elif "MemFree" in fields:
        kb = fields["MemFree"] + fields.get("Buffers", 0) + fields.get("Cached", 0)
    else:
        return None
    return kb // 1024


def cpu_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def version_tuple(text):
    parts = re.findall(r"\d+", text or "")[:3]
    return tuple(int(p) for p in parts) + (0,) * (3 - len(parts))


def runtime_checks(docker, compose_min_version):
    """(checks, problems): the Docker daemon answers and Compose v2 is at least compose_min_version.
    A daemon that does not answer is the only problem returned: nothing else can be checked then."""
    checks = {"docker": None, "compose": None}
    rc, out, err = docker.server_version(timeout=30)
    if rc != 0:
        return checks, ["docker: `%s version` failed (rc=%s): %s. Install Docker Engine and start the daemon (the "
                        "host role does both)." % (docker.cli, rc, (err or out or "").strip()[-500:])]
    checks["docker"] = out.strip()
    rc, out, err = docker.runner([docker.cli, "compose", "version", "--short"], timeout=30)
    checks["compose"] = out.strip() if rc == 0 else None
    if rc != 0 or version_tuple(out) < version_tuple(compose_min_version):
        found = ("found " + out.strip()) if rc == 0 else "`docker compose version` failed: " + (err or "").strip()[-300:]
        return checks, ["compose: Docker Compose v2 >= %s (compose_min_version) is needed: %s. Install the "
                        "docker-compose-plugin package." % (compose_min_version, found)]
    return checks, []


def host_checks(params, docker, proc="/proc"):
    """(checks, problems) for disk, memory and cores."""
    problems = []
    paths = list(params["disk_paths"] or [])
    if not paths:
        root = docker.root_dir(timeout=30)
        paths = [p for p in (root, DEFAULT_STATE_ROOT) if p]
    disk = {}
    for path in paths:
        measured = nearest_existing(path)
        disk[path] = free_mb(measured)
        if disk[path] < params["min_disk_free_mb"]:
            where = path if measured == path else "%s (measured on %s, the nearest existing directory)" % (path, measured)
            problems.append("disk: %s has %d MB free, at least %d MB (min_disk_free_mb) are needed."
                            % (where, disk[path], params["min_disk_free_mb"]))
    try:
        with open(os.path.join(proc, "meminfo")) as handle:
            memory = parse_meminfo(handle.read())
    except (IOError, OSError):
        memory = None
    if memory is not None and memory < params["min_memory_mb"]:
        problems.append("memory: %d MB available (MemAvailable), at least %d MB (min_memory_mb) are needed."
                        % (memory, params["min_memory_mb"]))
    cores = cpu_cores()
    if cores < params["min_cores"]:
        problems.append("cpu: %d core(s), at least %d (min_cores) are needed." % (cores, params["min_cores"]))
    return {"disk": disk, "memory_mb": memory, "cores": cores}, problems


# the stack --------------------------------------------------------------------------------------

class PreflightCompose(Compose):
    """`docker compose` with several env files, as `config` reads them."""

    def __init__(self, docker, project, files, project_dir, env_files):
        Compose.__init__(self, docker, project, files, project_dir=project_dir)
        self.env_files = list(env_files)

    def base(self):
        args = ["compose", "-p", self.project, "--project-directory", self.project_dir]
        for path in self.env_files:
            args += ["--env-file", path]
        for path in self.files:
            args += ["-f", path]
        return args

    def config_with_warnings(self):
        """(rc, model or None, stderr)."""
        argv = [self.docker.cli] + self.base() + ["config", "--format", "json"]
        rc, out, err = self.docker.runner(argv, timeout=self.docker.timeout)
        if rc != 0:
            raise_if_daemon_down(self.docker.cli, err)
            return rc, None, err or ""
        try:
            return rc, json.loads(out), err or ""
        except ValueError:
            # stdout holds interpolated values: never quoted
            return 1, None, "docker compose config printed no JSON model"


def resolve(project_dir, path):
    return path if os.path.isabs(path) else os.path.join(project_dir, path)


def running_containers(docker):
    ids = docker.container_ids(all=False)
    if not ids:
        return []
    if docker.engine_api() is not None:
        # The three fields CONTAINER_FORMAT picks, taken from the Engine API's inspect documents.
        lines = [json.dumps({"name": item.get("Name"),
                             "project": ((item.get("Config") or {}).get("Labels") or {}).get("com.docker.compose.project"),
                             "ports": (item.get("NetworkSettings") or {}).get("Ports")})
                 for item in docker.inspect_containers(ids)]
        return parse_container_lines("\n".join(lines))
    argv = [docker.cli, "inspect", "--type", "container", "--format", CONTAINER_FORMAT] + ids
    rc, out, err = docker.runner(argv, timeout=docker.timeout)
    if rc != 0:
        raise_if_daemon_down(docker.cli, err)
        # A container that stopped between ps and inspect is gone: the others were printed.
        if "No such container" not in (err or "") and not (out or "").strip():
            raise DockerError("docker inspect of the running containers failed (rc=%s): %s"
                              % (rc, (err or "").strip()[-1000:]))
    return parse_container_lines(out)


def port_checks(project, services, containers, binder=bind_test, owner_of=socket_process):
    """(ports: {port: owner}, problems)."""
    owners = {}
    problems = []
    for name, service in sorted(services.items()):
        for spec in service["ports"]:
            numbers = published_ports(spec["published"])
            if not numbers:
                continue
            verdicts = []
            for port in numbers:
                holders = port_holders(spec["host_ip"], port, spec["protocol"], containers)
                error = process = None
                if not holders:
                    error = binder(spec["host_ip"], port, spec["protocol"])
                    if error == errno.EADDRINUSE:
                        process = owner_of(port, spec["protocol"])
                verdicts.append(judge_port(project, holders, error, process))
            # A range with one container port needs one free port of the range.
            acceptable = any(ok for owner, ok in verdicts) if len(numbers) > 1 else verdicts[0][1]
            owner = verdicts[0][0] if len(numbers) == 1 else "; ".join(
                sorted(set(o for o, ok in verdicts if not ok)) or ["free"])
            key = port_key(spec["published"], spec["protocol"])
            where = spec["host_ip"] or "every address"
            owners[key] = owner if key not in owners or owners[key] == owner else "%s; %s" % (owners[key], owner)
            if not acceptable:
                if owner == "address not available on this host":
                    problems.append("port %s/%s of service %s: host address %s is not an address of this host."
                                    % (spec["published"], spec["protocol"], name, spec["host_ip"]))
                else:
                    problems.append("port %s/%s (%s) of service %s is already in use by %s, not by a container of "
                                    "project %s: free it or publish another port."
                                    % (spec["published"], spec["protocol"], where, name, owner, project))
    return owners, problems


def stack_checks(params, docker, environ, binder=bind_test, owner_of=socket_process, keep=None):
    """(checks, services, problems) for the compose files, variables, images, external networks and
    volumes, and ports. With `keep` (a dict), the resolved model is kept there as "model" for the
    caller's next reads."""
    project, project_dir = params["project"], params["project_dir"]
    checks = {"images": {}, "ports": {}, "externals": {"networks": {}, "volumes": {}}}
    problems = []
    if not os.path.isdir(project_dir):
        return checks, [], ["project_dir %s does not exist on this host: put the stack's files there first."
                            % project_dir]
    files = [resolve(project_dir, f) for f in params["files"]]
    env_files = [resolve(project_dir, f) for f in params["env_files"] or []]
    missing = [f for f in files if not os.path.isfile(f)]
    for path in missing:
        problems.append("compose file %s does not exist (files)." % path)
    file_values = []
    for path in env_files:
        if not os.path.isfile(path):
            problems.append("env file %s does not exist (env_files)." % path)
            continue
        try:
            file_values.append((path, parse_env(read_text(path))))
        except (IOError, OSError) as exc:
            problems.append("env file %s cannot be read: %s." % (path, exc.strerror))
    if not env_files:
        default = os.path.join(project_dir, ".env")
        if os.path.isfile(default):  # what compose reads when no --env-file is given
            try:
                file_values.append((default, parse_env(read_text(default))))
            except (IOError, OSError):
                pass
    referenced = set()
    for path in files:
        if path not in missing:
            try:
                referenced |= referenced_variables(read_text(path))
            except (IOError, OSError):
                pass
    env = effective_env(file_values, environ)
    secret_names = set(referenced) | set(params["required_env"] or [])
    for path, values in file_values:
        secret_names |= set(values)
    redact = Redactor(dict((n, env[n][0]) for n in secret_names if n in env))

    required_missing = set()
    sources = ", ".join(p for p, v in file_values) or "no env file"
    for name in params["required_env"] or []:
        if name not in env:
            required_missing.add(name)
            problems.append("variable %s is required but is set neither in %s nor in the environment."
                            % (name, sources))
        elif env[name][0] == "":
            required_missing.add(name)
            problems.append("variable %s is required but is empty (in %s)." % (name, env[name][1]))

    if missing:
        return checks, [], problems
    compose = PreflightCompose(docker, project, files, project_dir,
                               [p for p in env_files if os.path.isfile(p)])
    rc, model, stderr = compose.config_with_warnings()
    for name in unset_variables(stderr):
        if name not in required_missing:
            problems.append("variable %s is used by the compose files but is not set: compose would substitute "
                            "an empty string. Set it in %s." % (name, ", ".join(env_files) or os.path.join(project_dir, ".env")))
    if model is None:
        problems.append("docker compose config of project %s failed: %s" % (project, compose_error(stderr, redact)))
        return checks, [], problems
    if keep is not None:
        keep["model"] = model
    services = parse_model(model)
    checks["images"] = dict((n, s["image"] or "%s-%s (built on the host)" % (project, n)) for n, s in services.items())
    problems += image_problems(services, params["allow_latest"])
    # compose creates neither: `up` would fail on a missing one after earlier phases changed.
    checks["externals"], external_problems = _externals.check(docker, model)
    problems += external_problems
    if params["check_ports"]:
        problems += duplicate_ports(services)
        checks["ports"], port_problems = port_checks(project, services, running_containers(docker), binder, owner_of)
        problems += port_problems
    return checks, sorted(services), problems


def preflight(params, docker=None, environ=None, binder=bind_test, owner_of=socket_process, proc="/proc"):
    """The whole preflight: {"problems", "checks", "services"}. Raises PreflightError for bad input
    and DockerError when Docker does not answer."""
    validate(params)
    docker = docker or Docker(params.get("docker_cli") or "docker")
    environ = dict(os.environ) if environ is None else environ
    checks = {"disk": {}, "memory_mb": None, "cores": None, "images": {}, "ports": {},
              "externals": {"networks": {}, "volumes": {}}}
    problems = []
    services = []
    if params["scope"] in ("all", "host") and params.get("compose_min_version"):
        found, runtime_problems = runtime_checks(docker, params["compose_min_version"])
        checks.update(found)
        if runtime_problems:
            return {"problems": runtime_problems, "checks": checks, "services": services}
    if params["scope"] in ("all", "stack"):
        found, services, stack_problems = stack_checks(params, docker, environ, binder, owner_of)
        checks.update(found)
        problems += stack_problems
    if params["scope"] in ("all", "host"):
        found, host_problems = host_checks(params, docker, proc)
        checks.update(found)
        problems += host_problems
    return {"problems": problems, "checks": checks, "services": services}


def failure_message(params, problems):
    what = "project %s" % params["project"] if params["scope"] != "host" else "the host"
    return "preflight of %s found %d problem%s: %s" % (
        what, len(problems), "" if len(problems) == 1 else "s", " ".join(problems))


__all__ = ["DockerError", "PreflightError", "argument_spec", "failure_message", "preflight"]
