#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: compose_preflight
short_description: Check a host and a Docker Compose stack before a deploy changes anything
version_added: 0.1.0
description:
  - Runs C(docker compose -p PROJECT --project-directory DIR --env-file ... -f ... config --format json)
    on the stack's files as they are on the host and reports every problem it finds at once, each as a
    sentence naming the service, variable, port or path and what was expected.
  - "Stack checks: the compose model is valid (compose's own error otherwise); every variable the files
    use is set (compose's C(The \"X\" variable is not set) warnings); every variable of O(required_env)
    is set and non-empty in the env files or the environment; no image floats (tag C(latest) or no tag,
    unless pinned by a digest; services built on the host are not judged); no published host port is
    held by anything but a container of this compose project (a running container of another project,
    or a process on the host, found by a bind test on the published address); no host port is
    published twice by the stack; every network and volume the model marks C(external: true)
    exists on the host (compose never creates one, and C(up) would fail on it only after earlier
    phases changed; C(vpsops.deploy.docker_externals) and the host role's C(host_networks) and
    C(host_volumes) create them)."
  - Host checks (O(scope=all) or O(scope=host)) are free disk space on O(disk_paths), available memory
    (C(MemAvailable)) and CPU cores.
  - Values of environment variables never leave the module. Results name variables only, and compose's
    error text has every value of the env files and of the variables the files use, and any part of
    one that compose quotes, replaced by C(<value of NAME>) or C(<part of the value of NAME>).
  - Only reads; it runs fully in check mode.
author:
  - vpsops.deploy contributors (@vpsops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.docker
attributes:
  check_mode:
    support: full
    details: Only reads; the same checks run in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  scope:
    description:
      - What to check. V(all) checks the stack and the host, V(stack) the stack only, V(host) the
        host only (then O(project), O(project_dir) and O(files) are not needed).
    type: str
    choices: [all, host, stack]
    default: all
  project:
    description:
      - The compose project name (C(-p)). Containers carrying the label
        C(com.docker.compose.project) with this value may hold the stack's ports.
      - Required unless O(scope=host).
    type: str
  project_dir:
    description:
      - Absolute path of the directory on the host that holds the compose files; the compose
        project directory. Relative O(files) and O(env_files) are relative to it.
      - Required unless O(scope=host).
    type: path
  files:
    description:
      - The compose files, in order (C(-f) each). Required unless O(scope=host).
    type: list
    elements: str
  env_files:
    description:
      - Env files compose reads for interpolation (C(--env-file) each, later ones win). Empty means
        what compose reads by itself, C(.env) in O(project_dir). A missing file is a problem.
      - The process environment wins over them, as with compose.
    type: list
    elements: str
    default: []
  min_disk_free_mb:
    description: Free disk space (MB, for unprivileged users) each of O(disk_paths) needs.
    type: int
    default: 2048
  disk_paths:
    description:
      - Absolute paths whose file systems need O(min_disk_free_mb) free. A path that does not exist
        yet is measured on its nearest existing parent.
      - Empty means Docker's root directory (C(docker info)) and C(/var/lib/vpsops).
    type: list
    elements: path
    default: []
  min_memory_mb:
    description: Available memory (C(MemAvailable) of C(/proc/meminfo), MB) needed.
    type: int
    default: 256
  min_cores:
    description: CPU cores this process may run on that are needed.
    type: int
    default: 1
  allow_latest:
    description: Accept images with tag C(latest) or no tag.
    type: bool
    default: false
  required_env:
    description:
      - Names of variables that must be set and non-empty in the env files or the environment.
        Only names; values are read on the host and never returned.
    type: list
    elements: str
    default: []
  compose_min_version:
    description:
      - With O(scope=all) or O(scope=host), check first that the Docker daemon answers (C(docker version))
        and that the Compose v2 plugin is at least this version; a daemon that does not answer is then
        the only problem reported. Omit to skip both.
    type: str
  check_ports:
    description: Check the published host ports.
    type: bool
    default: true
  fail_on_problems:
    description:
      - Fail with every problem in the message when there is any. With V(false) the problems are
        only returned.
    type: bool
    default: true
notes:
  - A port held by a container of this project is fine, compose recreates that container. A port
    range published for one container port (C(8000-8010:80)) needs one free port of the range.
  - Run as root to have the process that holds a port named (C(/proc) shows other users' sockets
    to root only).
seealso:
  - module: vpsops.deploy.compose_release
  - module: vpsops.deploy.health_wait
  - module: vpsops.deploy.docker_externals
"""

EXAMPLES = r"""
- name: Check the stack whose files are on the host, and the host
  vpsops.deploy.compose_preflight:
    project: platform
    project_dir: /opt/vpsops/platform
    files: [docker-compose.infrastructure.yml, docker-compose.platform.yml, docker-compose.modules.yml]
    env_files: [/opt/vpsops/platform/.env]
    required_env: [AR_DB_PASSWORD, PAYMENTS_DB_PASSWORD]
    min_disk_free_mb: 4096

- name: Check only the host
  vpsops.deploy.compose_preflight:
    scope: host
    disk_paths: [/var/lib/docker, /var/backups]

- name: Collect the problems without failing
  vpsops.deploy.compose_preflight:
    project: platform
    project_dir: /opt/vpsops/platform
    files: [docker-compose.yml]
    fail_on_problems: false
  register: preflight

- name: Show them
  ansible.builtin.debug:
    var: preflight.problems
"""

RETURN = r"""
problems:
  description: One sentence per problem, naming the service, variable, port or path and what was expected.
  returned: always
  type: list
  elements: str
  sample: ["service web uses image nginx with tag latest: pin a version tag or a digest (or set allow_latest)."]
checks:
  description: What was measured.
  returned: always
  type: dict
  contains:
    disk:
      description: Free MB per path of O(disk_paths) (empty with O(scope=stack)).
      type: dict
      sample: {"/var/lib/docker": 77823, "/var/lib/vpsops": 77823}
    memory_mb:
      description: Available memory in MB (null with O(scope=stack)).
      type: int
    cores:
      description: CPU cores (null with O(scope=stack)).
      type: int
    images:
      description: Per service, its image as compose resolved it.
      type: dict
      sample: {"web": "nginx:1.27"}
    ports:
      description:
        - Per published host port (C(8080), C(53/udp), C(8000-8010)), who holds it now. V(free),
          C(this project (container NAME)), C(container NAME (project P)), C(process NAME (pid N)), ...
      type: dict
      sample: {"8080": "this project (container platform-auth-lb-1)", "5434": "free"}
    externals:
      description:
        - The networks and volumes the compose model marks external, by their name on the host,
          each V(present) or V(missing) (empty when there are none, and with O(scope=host)).
        - On a node of an active swarm a network the host does not list is reported as "not checked (swarm)",
          as compose does not check it either (an overlay network made on another node shows only
          once a container uses it). A name several networks have is a problem (compose refuses it).
      type: dict
      sample: {"networks": {"7d-platform": "present"}, "volumes": {"7d-ar-pgdata": "missing"}}
services:
  description: The services of the resolved compose model (empty with O(scope=host) or an invalid model).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._preflight import (
    DockerError, PreflightError, argument_spec, failure_message, preflight,
)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    try:
        result = preflight(params)
    except (PreflightError, DockerError) as exc:
        module.fail_json(msg=str(exc))
    if result["problems"] and params["fail_on_problems"]:
        module.fail_json(msg=failure_message(params, result["problems"]), changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
