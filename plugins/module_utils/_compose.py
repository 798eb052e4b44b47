# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Docker and Compose CLIs for vpsops.deploy: argument lists (never a shell), bounded in time,
with failures turned into one readable error. Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ansible_collections.vpsops.deploy.plugins.module_utils._probes import default_runner

DAEMON_DOWN = ("Cannot connect to the Docker daemon", "Is the docker daemon running", "docker.sock: connect")


class DockerError(Exception):
    """A docker or docker compose command failed."""


class DaemonDown(DockerError):
    """The Docker daemon does not answer."""


def raise_if_daemon_down(cli, text):
    if any(mark in (text or "") for mark in DAEMON_DOWN):
        raise DaemonDown("the Docker daemon is not reachable through %s: %s" % (cli, text.strip()))


class Docker:
    """One Docker CLI on the managed host."""

    def __init__(self, docker_cli="docker", runner=None, timeout=120):
        self.cli = docker_cli or "docker"
        self.runner = runner or default_runner
        self.timeout = timeout

    def run(self, args, timeout=None, what=None):
        """Run `docker ARGS`; return stdout, or raise DockerError with stderr."""
        argv = [self.cli] + list(args)
        rc, out, err = self.runner(argv, timeout=timeout or self.timeout)
        if rc != 0:
            text = (err or out or "").strip()
            raise_if_daemon_down(self.cli, text)
            if rc == 127:
                raise DockerError("cannot run %s: %s" % (self.cli, text))
            raise DockerError("%s failed (rc=%s): %s" % (what or " ".join(argv[:3]), rc, text[-2000:]))
        return out

    def ping(self):
        self.run(["version", "--format", "{{.Server.Version}}"], timeout=15, what="docker version")

    # images -------------------------------------------------------------------------------------

    def images(self, refs):
        """{ref: {"id", "repo_digests", "repo_tags"}} for the refs present on the host; absent refs are
        left out. One `docker image inspect` for all of them."""
        refs = sorted(set(r for r in refs if r))
        if not refs:
            return {}
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
        result = {}
        for image in found or []:
            info = {"id": image.get("Id"), "repo_digests": image.get("RepoDigests") or [],
                    "repo_tags": image.get("RepoTags") or []}
            for ref in refs:
                if ref in info["repo_tags"] or ref in info["repo_digests"] or ref == info["id"] \
                        or (":" not in ref.rsplit("/", 1)[-1] and "@" not in ref and ref + ":latest" in info["repo_tags"]):
                    result[ref] = info
        return result

    def tag(self, image_id, ref):
        self.run(["image", "tag", image_id, ref], what="docker image tag")

    def untag(self, ref):
        """Remove a tag. Docker deletes the image only when no tag is left and no container uses it;
        an image still in use stays (that is not an error here)."""
        rc, out, err = self.runner([self.cli, "image", "rm", ref], timeout=self.timeout)
        text = (err or out or "").strip()
        if rc != 0 and "No such image" not in text and "conflict" not in text:
            raise_if_daemon_down(self.cli, text)
            raise DockerError("docker image rm %s failed: %s" % (ref, text))
        return rc == 0

    def pull(self, ref):
        self.run(["pull", "--quiet", ref], timeout=max(self.timeout, 600), what="docker pull %s" % ref)

    # containers ---------------------------------------------------------------------------------

    def project_containers(self, project):
        """The containers of a compose project (one-off `run` containers excluded):
        [{"id", "name", "service", "image_id", "image", "state", "health", "number"}]."""
        out = self.run(["ps", "-aq", "--no-trunc", "--filter", "label=com.docker.compose.project=%s" % project],
                       what="docker ps")
        ids = out.split()
        if not ids:
            return []
        rc, text, err = self.runner([self.cli, "inspect", "--type", "container"] + ids, timeout=self.timeout)
        try:
            found = json.loads(text or "[]")
        except ValueError:
            raise DockerError("docker inspect returned no JSON: %s" % (err or text)[:500])
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
            })
        return sorted(containers, key=lambda c: (c["service"] or "", c["name"]))


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
        """The resolved model (`config --format json`), with variables interpolated."""
        out = self.run(["config", "--format", "json"], what="docker compose config")
        try:
            return json.loads(out)
        except ValueError:
            raise DockerError("docker compose config returned no JSON: %s" % out[:500])

    def config_hashes(self, services):
        """{service: the config hash compose labels its containers with (com.docker.compose.config-hash)}."""
        out = self.run(["config", "--hash", ",".join(services)], what="docker compose config --hash")
        return parse_config_hashes(out)

    def services(self):
        return sorted(l.strip() for l in self.run(["config", "--services"]).splitlines() if l.strip())

    def up(self, services=(), wait_timeout=120, remove_orphans=False, pull="never", build=False, no_deps=False):
        """`up -d --wait`. build: False never builds, True always, None builds a missing image of a
        service with a build section (compose's own default)."""
        args = ["up", "-d", "--wait", "--wait-timeout", str(int(wait_timeout)), "--pull", pull]
        if build is False:
            args.append("--no-build")
        elif build is True:
            args.append("--build")
        if no_deps:
            args.append("--no-deps")
        if remove_orphans:
            args.append("--remove-orphans")
        return self.run(args + list(services), timeout=wait_timeout + 120, what="docker compose up")

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
