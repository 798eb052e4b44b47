# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Docker and Compose CLIs for vpsops.deploy: argument lists (never a shell), bounded in time,
with failures turned into one readable error. Reads of container state (ps, inspect, logs) and of
the host's networks and volumes go to the Engine API over the local socket when the CLI would talk
to that same daemon (_docker_api), else to the CLI; either way they return the same values.
Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import shutil

from ansible_collections.vpsops.deploy.plugins.module_utils import _docker_api
from ansible_collections.vpsops.deploy.plugins.module_utils._runner import default_runner

DAEMON_DOWN = ("Cannot connect to the Docker daemon", "Is the docker daemon running", "docker.sock: connect")


class DockerError(Exception):
    """A docker or docker compose command failed."""


class DaemonDown(DockerError):
    """The Docker daemon does not answer."""


class NoSuchContainer(DockerError):
    """The container named in a read does not exist (any more)."""


def images_by_ref(refs, found):
    """{ref: {"id", "repo_digests", "repo_tags"}} of the image inspect documents `found`, for each of
    `refs` one of them answers to (by tag, digest, ID, or name meaning name:latest)."""
    result = {}
    for image in found or []:
        info = {"id": image.get("Id"), "repo_digests": image.get("RepoDigests") or [],
                "repo_tags": image.get("RepoTags") or []}
        for ref in refs:
            if ref in info["repo_tags"] or ref in info["repo_digests"] or ref == info["id"] \
                    or (":" not in ref.rsplit("/", 1)[-1] and "@" not in ref and ref + ":latest" in info["repo_tags"]):
                result[ref] = info
    return result


def raise_if_daemon_down(cli, text):
    if any(mark in (text or "") for mark in DAEMON_DOWN):
        raise DaemonDown("the Docker daemon is not reachable through %s: %s" % (cli, text.strip()))


def plain_cli(cli):
    """True when `cli` is the Docker CLI binary itself (a bare name is looked up on PATH). A script
    in its place may set its own DOCKER_HOST or context, so reads must go through it."""
    if os.path.basename(cli) != "docker":
        return False
    path = cli if os.path.sep in cli else shutil.which(cli)
    try:
        with open(path or "", "rb") as handle:
            return handle.read(2) != b"#!"
    except (OSError, TypeError):
        return False


class Docker:
    """One Docker CLI on the managed host, and the Engine API behind it for reads.

    api: None chooses on the first read, once for this object: the Engine API over the local
    socket when the CLI is the plain `docker` binary, the runner is the default one (a runner given
    by the caller replays or wraps the CLI, so reads go through it too) and the socket answers;
    else the CLI. False always uses the CLI; a _docker_api.DockerAPI is used as given."""

    def __init__(self, docker_cli="docker", runner=None, timeout=120, api=None):
        self.cli = docker_cli or "docker"
        self.runner = runner or default_runner
        self.timeout = timeout
        self._api = api
        # How reads are done, for results and benchmarks ("api unix://... (API 1.41)" or "cli: why").
        self.reads = None if api is None else ("cli" if api is False else "api %s" % api.endpoint())

    def run(self, args, timeout=None, what=None):
        """Run `docker ARGS`; return stdout, or raise DockerError with stderr."""
        return self.cli_output(args, timeout=timeout, what=what)[0]

    def cli_output(self, args, timeout=None, what=None):
        """Run `docker ARGS`; return (stdout, stderr), or raise DockerError as run() does."""
        argv = [self.cli] + list(args)
        rc, out, err = self.runner(argv, timeout=timeout or self.timeout)
        if rc != 0:
            text = (err or out or "").strip()
            raise_if_daemon_down(self.cli, text)
            if rc == 127:
                raise DockerError("cannot run %s: %s" % (self.cli, text))
            error = NoSuchContainer if "No such container" in text else DockerError
            raise error("%s failed (rc=%s): %s" % (what or " ".join(argv[:3]), rc, without_progress(text)[-2000:]))
        return out, err

    # the Engine API -----------------------------------------------------------------------------

    def engine_api(self):
        """The Engine API client reads use, or None when they use the CLI (chosen once)."""
        if self._api is None:
            self._api = self.choose_api() or False
        return self._api or None

    def choose_api(self):
        if self.runner is not default_runner:
            self.reads = "cli: the caller gave its own runner"
            return None
        if not plain_cli(self.cli):
            self.reads = "cli: %s is not the plain docker binary" % self.cli
            return None
        try:
            api = _docker_api.DockerAPI.from_env(timeout=min(self.timeout or 30, 30))
        except _docker_api.DockerAPIError as exc:
            self.reads = "cli: %s" % exc
            return None
        self.reads = "api %s (API %s)" % (api.endpoint(), api.version)
        return api

    def api_call(self, what, call, *args, **kwargs):
        """call(*args, **kwargs) on the API, its errors turned into the ones the CLI path raises."""
        try:
            return call(*args, **kwargs)
        except _docker_api.DockerAPIError as exc:
            raise self.api_error(what, exc)

    def api_error(self, what, exc):
        """The error the CLI path raises for the Engine API's error `exc` in `what`."""
        if isinstance(exc, _docker_api.Unreachable):
            return DaemonDown("the Docker daemon is not reachable through %s: %s" % (self._api.endpoint(), exc))
        if isinstance(exc, _docker_api.NotFound):
            return NoSuchContainer("%s failed (HTTP %s): %s" % (what, exc.status, exc))
        return DockerError("%s failed (HTTP %s): %s" % (what, exc.status, exc))

    def ping(self):
        self.run(["version", "--format", "{{.Server.Version}}"], timeout=15, what="docker version")

    # images -------------------------------------------------------------------------------------

    def images(self, refs):
        """{ref: {"id", "repo_digests", "repo_tags"}} for the refs present on the host; absent refs are
        left out. Over the Engine API one read per ref, else one `docker image inspect` for all of them."""
        refs = sorted(set(r for r in refs if r))
        if not refs:
            return {}
        api = self.engine_api()
        if api is not None:
            found = []
            for ref in refs:
                try:
                    found.append(api.inspect_image(ref))
                except _docker_api.NotFound:
                    continue
                except _docker_api.DockerAPIError as exc:
                    raise self.api_error("docker image inspect", exc)
            return images_by_ref(refs, found)
        argv = [self.cli, "image", "inspect"] + refs
        rc, out, err = self.runner(argv, timeout=self.timeout)
        if rc != 0:
            raise_if_daemon_down(self.cli, err)
        try:
            found = json.loads(out or "[]")
        except ValueError:
            raise DockerError("docker image inspect returned no JSON: %s" % (err or out)[:500])
        if rc != 0 and not found and len(refs) > 1:
            # One missing ref makes docker print nothing for the others on some versions: ask one by one.
            result = {}
            for ref in refs:
                result.update(self.images([ref]))
            return result
        return images_by_ref(refs, found)

    def tag(self, image_id, ref):
        api = self.engine_api()
        if api is not None:
            self.api_call("docker image tag", api.tag_image, image_id, ref)
            return
        self.run(["image", "tag", image_id, ref], what="docker image tag")

    def untag(self, ref):
        """Remove a tag. Docker deletes the image only when no tag is left and no container uses it;
        an image still in use stays (that is not an error here)."""
        api = self.engine_api()
        if api is not None:
            try:
                api.remove_image(ref)
            except _docker_api.NotFound:
                return False
            except _docker_api.DockerAPIError as exc:
                if exc.status == 409:  # conflict: a container uses the image
                    return False
                raise self.api_error("docker image rm %s" % ref, exc)
            return True
        rc, out, err = self.runner([self.cli, "image", "rm", ref], timeout=self.timeout)
        text = (err or out or "").strip()
        if rc != 0 and "No such image" not in text and "conflict" not in text:
            raise_if_daemon_down(self.cli, text)
            raise DockerError("docker image rm %s failed: %s" % (ref, text))
        return rc == 0

    def pull(self, ref):
        self.run(["pull", "--quiet", ref], timeout=max(self.timeout, 600), what="docker pull %s" % ref)

    # containers ---------------------------------------------------------------------------------

    def container_ids(self, labels=(), all=True, timeout=None):
        """Full IDs of the containers carrying every label ("key=value"), stopped ones too unless
        all is False: `docker ps -[a]q --no-trunc --filter label=…`."""
        api = self.engine_api()
        if api is not None:
            return self.api_call("docker ps", api.container_ids, labels, all=all, timeout=timeout)
        args = ["ps", "-aq" if all else "-q", "--no-trunc"]
        for label in labels:
            args += ["--filter", "label=%s" % label]
        return self.run(args, timeout=timeout, what="docker ps").split()

    def inspect_containers(self, ids, timeout=None):
        """The `docker inspect` documents of these containers; one removed meanwhile is left out."""
        ids = list(ids)
        if not ids:
            return []
        api = self.engine_api()
        if api is not None:
            found = []
            for ref in ids:
                try:
                    found.append(self.api_call("docker inspect", api.inspect_container, ref, timeout=timeout))
                except NoSuchContainer:
                    continue
            return found
        rc, text, err = self.runner([self.cli, "inspect", "--type", "container"] + ids, timeout=timeout or self.timeout)
        if rc != 0:
            raise_if_daemon_down(self.cli, err)
        try:
            found = json.loads(text or "[]")
        except ValueError:
            raise DockerError("docker inspect returned no JSON: %s" % (err or text)[:500])
        if rc != 0 and not found and "No such" not in (err or ""):
            raise DockerError("docker inspect failed (rc=%s): %s" % (rc, (err or "").strip()[-2000:]))
        return found or []

    def container_state(self, container, timeout=None):
        """(State, RestartCount, Created) of one container as `docker inspect` gives them: the State
        object, an int, the creation time as Docker's RFC 3339 text."""
        api = self.engine_api()
        if api is not None:
            item = self.api_call("docker inspect", api.inspect_container, container, timeout=timeout)
            return item.get("State") or {}, int(item.get("RestartCount") or 0), item.get("Created") or ""
        out = self.run(["inspect", "--type", "container", "--format", "{{json .State}}|{{.RestartCount}}|{{.Created}}",
                        container], timeout=timeout, what="docker inspect")
        rest, _sep, created = out.strip().rpartition("|")
        state_json, _sep, restarts = rest.rpartition("|")
        return json.loads(state_json), int(restarts or 0), created

    def own_healthcheck(self, container, timeout=None):
        """Run the container's own healthcheck command in it now, as Docker runs it at each interval
        (`CMD` as argv, `CMD-SHELL` through the container's shell, its own timeout, capped at
        `timeout`). Returns (passed, output), or None when the container has no healthcheck or the
        reads do not go through the Engine API (the command, which may hold a secret, is then not
        put on a command line: the caller waits for Docker's own verdict)."""
        api = self.engine_api()
        if api is None:
            return None
        item = self.api_call("docker inspect", api.inspect_container, container, timeout=timeout)
        config = item.get("Config") or {}
        test = list((config.get("Healthcheck") or {}).get("Test") or [])
        if not test or test[0] == "NONE":
            return None
        if test[0] == "CMD-SHELL":
            cmd = list(config.get("Shell") or ["/bin/sh", "-c"]) + [" ".join(test[1:])]
        elif test[0] == "CMD":
            cmd = test[1:]
        else:
            cmd = test
        if not cmd:
            return None
        own = float((config.get("Healthcheck") or {}).get("Timeout") or 0) / 1e9 or 30.0
        limit = min(own, float(timeout)) if timeout else own
        try:
            code, output = api.exec_run(item.get("Id") or container, cmd, timeout=max(limit, 0.5))
        except _docker_api.Unreachable as exc:
            return False, "its healthcheck did not answer: %s" % exc
        except _docker_api.DockerAPIError as exc:
            return False, "its healthcheck could not run: %s" % exc
        return code == 0, (output or "").strip()[-160:]

    def container_started_at(self, container, timeout=None):
        """When the container (last) started, as Docker's RFC 3339 text (State.StartedAt)."""
        api = self.engine_api()
        if api is not None:
            item = self.api_call("docker inspect", api.inspect_container, container, timeout=timeout)
            return (item.get("State") or {}).get("StartedAt") or ""
        return self.run(["inspect", "--type", "container", "--format", "{{.State.StartedAt}}", container],
                        timeout=timeout, what="docker inspect").strip()

    def container_logs(self, container, tail=None, since=None, timeout=None):
        """(stdout, stderr) of `docker logs [--since S] [--tail N] CONTAINER`."""
        api = self.engine_api()
        if api is not None:
            return self.api_call("docker logs", api.container_logs, container, tail=tail, since=since, timeout=timeout)
        args = ["logs"]
        if since is not None:
            args += ["--since", str(since)]
        if tail is not None:
            args += ["--tail", str(tail)]
        return self.cli_output(args + [container], timeout=timeout, what="docker logs")

    def project_containers(self, project):
        """The containers of a compose project (one-off `run` containers excluded):
        [{"id", "name", "service", "image_id", "image", "state", "health", "number", "exit_code",
        "started_at", "config_hash"}] (config_hash: the label compose puts on the container)."""
        found = self.inspect_containers(self.container_ids(["com.docker.compose.project=%s" % project]))
        containers = []
        for item in found:
            labels = (item.get("Config") or {}).get("Labels") or {}
            if labels.get("com.docker.compose.oneoff") == "True":
                continue
            state = item.get("State") or {}
            containers.append({
                "id": item.get("Id"),
                "name": (item.get("Name") or "").lstrip("/"),
                "service": labels.get("com.docker.compose.service"),
                "number": labels.get("com.docker.compose.container-number"),
                "image_id": item.get("Image"),
                "image": (item.get("Config") or {}).get("Image"),
                "state": state.get("Status"),
                "health": (state.get("Health") or {}).get("Status"),
                "exit_code": state.get("ExitCode"),
                "started_at": state.get("StartedAt"),
                "config_hash": labels.get("com.docker.compose.config-hash"),
            })
        return sorted(containers, key=lambda c: (c["service"] or "", c["name"]))

    # networks and volumes -----------------------------------------------------------------------

    def networks(self, timeout=None):
        """Every network on the host, [network_info] sorted by name: GET /networks, or
        `docker network ls -q` and `docker network inspect` of what it lists."""
        api = self.engine_api()
        if api is not None:
            found = self.api_call("docker network ls", api.networks, timeout=timeout)
        else:
            ids = self.run(["network", "ls", "-q", "--no-trunc"], timeout=timeout, what="docker network ls").split()
            found = self.inspect_objects("network", ids, timeout)
        return sorted((network_info(item) for item in found), key=lambda item: (item["name"], item["id"]))

    def volumes(self, timeout=None):
        """Every volume on the host, [volume_info] sorted by name: GET /volumes, or
        `docker volume ls -q` and `docker volume inspect` of what it lists."""
        api = self.engine_api()
        if api is not None:
            found = self.api_call("docker volume ls", api.volumes, timeout=timeout)
        else:
            names = self.run(["volume", "ls", "-q"], timeout=timeout, what="docker volume ls").split()
            found = self.inspect_objects("volume", names, timeout)
        return sorted((volume_info(item) for item in found), key=lambda item: item["name"])

    def server_version(self, timeout=None):
        """(rc, version, error) of the daemon as `docker version --format {{.Server.Version}}` gives
        them; over the Engine API it is the answer the client negotiated with (no process)."""
        api = self.engine_api()
        if api is not None and api.server_version:
            return 0, api.server_version, ""
        rc, out, err = self.runner([self.cli, "version", "--format", "{{.Server.Version}}"], timeout=timeout or 30)
        return rc, out.strip(), err

    def root_dir(self, timeout=None):
        """The daemon's data root (`docker info`'s DockerRootDir)."""
        api = self.engine_api()
        if api is not None:
            return str(self.api_call("docker info", api.info, timeout=timeout).get("DockerRootDir") or "")
        return self.run(["info", "--format", "{{.DockerRootDir}}"], timeout=timeout, what="docker info").strip()

    def swarm_active(self, timeout=None):
        """True when this daemon is a node of an active swarm (`docker info`'s Swarm.LocalNodeState)."""
        api = self.engine_api()
        if api is not None:
            state = (self.api_call("docker info", api.info, timeout=timeout).get("Swarm") or {}).get("LocalNodeState")
        else:
            state = self.run(["info", "--format", "{{.Swarm.LocalNodeState}}"], timeout=timeout,
                             what="docker info").strip()
        return state == "active"

    def inspect_objects(self, kind, refs, timeout=None):
        """`docker KIND inspect REFS` documents; one removed since it was listed is left out."""
        if not refs:
            return []
        rc, text, err = self.runner([self.cli, kind, "inspect"] + list(refs), timeout=timeout or self.timeout)
        if rc != 0:
            raise_if_daemon_down(self.cli, err)
        try:
            found = json.loads(text or "[]")
        except ValueError:
            raise DockerError("docker %s inspect returned no JSON: %s" % (kind, (err or text)[:500]))
        if rc != 0 and not found and "No such" not in (err or ""):
            raise DockerError("docker %s inspect failed (rc=%s): %s" % (kind, rc, (err or "").strip()[-2000:]))
        return found or []

    def create_network(self, name, driver=None, internal=False, attachable=False, enable_ipv6=False, subnet=None,
                       gateway=None, labels=None, options=None):
        """`docker network create`; returns the argv it ran (for the caller's audit trail)."""
        args = ["network", "create"]
        if driver:
            args += ["--driver", driver]
        if internal:
            args.append("--internal")
        if attachable:
            args.append("--attachable")
        if enable_ipv6:
            args.append("--ipv6")
        if subnet:
            args += ["--subnet", subnet]
        if gateway:
            args += ["--gateway", gateway]
        args += key_values("--label", labels) + key_values("--opt", options) + ["--", name]
        self.run(args, what="docker network create %s" % name)
        return [self.cli] + args

    def create_volume(self, name, driver=None, labels=None, options=None):
        """`docker volume create`; returns the argv it ran."""
        args = ["volume", "create"]
        if driver:
            args += ["--driver", driver]
        args += key_values("--label", labels) + key_values("--opt", options) + ["--", name]
        self.run(args, what="docker volume create %s" % name)
        return [self.cli] + args


def key_values(flag, values):
    args = []
    for key, value in sorted((values or {}).items()):
        args += [flag, "%s=%s" % (key, value)]
    return args


def network_info(item):
    """What the collection reads of a network, the same from the Engine API and the CLI:
    {"name", "id", "driver", "scope", "internal", "attachable", "enable_ipv6", "subnets",
    "gateways", "labels", "options"}."""
    ipam = (item.get("IPAM") or {}).get("Config") or []
    return {"name": item.get("Name") or "", "id": item.get("Id") or "", "driver": item.get("Driver") or "",
            "scope": item.get("Scope") or "", "internal": bool(item.get("Internal")),
            "attachable": bool(item.get("Attachable")), "enable_ipv6": bool(item.get("EnableIPv6")),
            "subnets": [c["Subnet"] for c in ipam if c.get("Subnet")],
            "gateways": [c["Gateway"] for c in ipam if c.get("Gateway")],
            "labels": dict(item.get("Labels") or {}), "options": dict(item.get("Options") or {})}


def volume_info(item):
    """What the collection reads of a volume, the same from the Engine API and the CLI:
    {"name", "driver", "scope", "labels", "options"}."""
    return {"name": item.get("Name") or "", "driver": item.get("Driver") or "", "scope": item.get("Scope") or "",
            "labels": dict(item.get("Labels") or {}), "options": dict(item.get("Options") or {})}


# The lines compose prints while it works ("Container x  Started"): not the reason it failed.
PROGRESS_RE = re.compile(r"^\s*(Container|Network|Volume|Image|Service)\s+\S+\s+(Creating|Created|Starting|Started|"
                         r"Waiting|Healthy|Running|Recreate|Recreated|Stopping|Stopped|Removing|Removed|Pulling|"
                         r"Pulled|Exited|Building|Built|Skipped|Warning|Restarting)\b.*$")


def without_progress(text):
    """A compose error without its progress lines (kept when nothing else is left), so that the
    reason comes first in a message that may be cut."""
    lines = (text or "").splitlines()
    kept = [line for line in lines if not PROGRESS_RE.match(line)]
    return "\n".join(kept).strip() if kept else (text or "")


class Compose:
    """`docker compose` for one project: its name, files, project directory and env file."""

    def __init__(self, docker, project, files, project_dir=None, env_file=None, env_files=None):
        self.docker = docker
        self.project = project
        self.files = list(files)
        self.project_dir = project_dir
        self.env_file = env_file
        # More env files after env_file, in order; compose lets a later file override an earlier one.
        self.env_files = list(env_files or [])
        # The resolved model when a caller already read it with these same files (see config()).
        self.model = None

    def base(self):
        args = ["compose", "-p", self.project]
        if self.project_dir:
            args += ["--project-directory", self.project_dir]
        for path in ([self.env_file] if self.env_file else []) + self.env_files:
            args += ["--env-file", path]
        for path in self.files:
            args += ["-f", path]
        return args

    def run(self, args, timeout=None, what=None):
        return self.docker.run(self.base() + list(args), timeout=timeout, what=what or "docker compose %s" % args[0])

    def config(self):
        """The resolved model (`config --format json`), with variables interpolated; the one a caller
        set as `model` (read with these files and env file) when there is one."""
        if self.model is not None:
            return self.model
        out = self.run(["config", "--format", "json"], what="docker compose config")
        try:
            return json.loads(out)
        except ValueError:
            # Not quoted: the resolved model holds the env file's values, secrets included.
            raise DockerError("docker compose config returned no JSON (%d characters of output, not shown: they "
                              "hold the stack's interpolated variables)" % len(out))

    def config_hashes(self, services):
        """{service: the config hash compose labels its containers with (com.docker.compose.config-hash)}."""
        out = self.run(["config", "--hash", ",".join(services)], what="docker compose config --hash")
        return parse_config_hashes(out)

    def services(self):
        return sorted(line.strip() for line in self.run(["config", "--services"]).splitlines() if line.strip())

    def up(self, services=(), wait_timeout=120, remove_orphans=False, pull="never", build=False, no_deps=False,
           wait=True):
        """`up -d --wait` (without --wait when wait is false: one-shot services, see _phase.run_jobs).
        build: False never builds, True always, None builds a missing image of a service with a
        build section (compose's own default)."""
        args = ["up", "-d"] + (["--wait", "--wait-timeout", str(int(wait_timeout))] if wait else []) + ["--pull", pull]
        if build is False:
            args.append("--no-build")
        elif build is True:
            args.append("--build")
        if no_deps:
            args.append("--no-deps")
        if remove_orphans:
            args.append("--remove-orphans")
        return self.run(args + list(services), timeout=wait_timeout + 120, what="docker compose up")

    def build(self, services, timeout=1800):
        """`docker compose build` of these services (their images are then on the host, as compose
        names them: the service's `image`, else <project>-<service>)."""
        return self.run(["build"] + list(services), timeout=timeout, what="docker compose build")

    def dry_run_up(self, services=(), pull="never"):
        """What `up -d` would do (`docker compose --dry-run up`): its output, one line per container."""
        argv = [self.docker.cli, "compose", "--dry-run"] + self.base()[1:] + ["up", "-d", "--pull", pull] + list(services)
        rc, out, err = self.docker.runner(argv, timeout=self.docker.timeout)
        text = "%s\n%s" % (out or "", err or "")
        if rc != 0:
            raise_if_daemon_down(self.docker.cli, text)
            raise DockerError("docker compose --dry-run up failed (rc=%s): %s" % (rc, text.strip()[-2000:]))
        return text


def resolve_files(project_dir, paths, option):
    """Paths relative to the project directory, each a file on the host; ValueError names `option`."""
    resolved = []
    for path in paths:
        full = path if os.path.isabs(path) else os.path.join(project_dir, path)
        if not os.path.isfile(full):
            raise ValueError("%s: %s is not a file on the host (relative paths are taken from project_dir %s)"
                             % (option, full, project_dir))
        resolved.append(full)
    return resolved


def service_image(project, name, service):
    """The image reference compose uses for a service of the resolved model."""
    return service.get("image") or "%s-%s" % (project, name)


def parse_config_hashes(text):
    """`docker compose config --hash` output ("service hash" per line) -> {service: hash}."""
    hashes = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            hashes[parts[0]] = parts[1]
    return hashes
