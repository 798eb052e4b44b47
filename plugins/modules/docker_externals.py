#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: docker_externals
short_description: Create the Docker networks and volumes that stacks use as external
version_added: 0.3.0
description:
  - "Compose never creates a network or volume a compose file marks C(external: true); C(up) fails
    when one is missing. This module creates the ones listed that the host does not have yet
    (C(docker network create), C(docker volume create)), as a runbook's
    C(docker network create 7d-platform) does, and leaves the others as they are."
  - It never changes, recreates or removes a network or volume. An existing one that differs from
    its entry in what the entry sets (driver, internal, attachable, IPv6, subnet, gateway, a label
    or an option) fails the module naming each difference, before anything is created. Docker
    cannot change one in place, and recreating it would cut off its containers or lose its data.
  - Every entry is checked before anything is created; bad entries are named together.
  - The C(vpsops.deploy.host) role runs it for C(host_networks) and C(host_volumes); the
    C(vpsops.deploy.compose_preflight) module and the deploy check that every external network and
    volume of a stack exists.
  - Reads the host's networks and volumes over the Docker Engine API socket when the CLI would
    talk to that daemon, else with the CLI; creates with the Docker CLI. Needs no Python library
    beyond the standard library (community.docker's modules need C(requests) on the host).
author:
  - vpsops.deploy contributors (@vpsops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vpsops.deploy.docker
attributes:
  check_mode:
    support: full
    details: Reads the host and reports what it would create; creates nothing.
  diff_mode:
    support: full
    details: The names of the listed networks and volumes present before and after.
  platform:
    platforms: posix
options:
  networks:
    description:
      - Networks that must exist. A field left out is not compared with an existing network and
        is Docker's default when the network is created.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The network's name on the host (the C(name) of the compose file's entry, else its key).
        type: str
        required: true
      driver:
        description: Network driver (C(bridge) when left out).
        type: str
      internal:
        description: No access to the outside (C(--internal)).
        type: bool
      attachable:
        description: Standalone containers may attach (C(--attachable), overlay networks).
        type: bool
      enable_ipv6:
        description: IPv6 networking (C(--ipv6)).
        type: bool
      subnet:
        description: Address range in CIDR form (C(10.20.0.0/24)); Docker picks one when left out.
        type: str
      gateway:
        description: Gateway address; needs O(networks[].subnet) and must be in it.
        type: str
      labels:
        description: Labels; an existing network must carry each one with this value.
        type: dict
        default: {}
      options:
        description: Driver options (C(--opt)); an existing network must have each one with this value.
        type: dict
        default: {}
  volumes:
    description:
      - Volumes that must exist. A field left out is not compared with an existing volume.
      - A volume created here is empty. A volume whose data a stack needs is restored, not created.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The volume's name on the host.
        type: str
        required: true
      driver:
        description: Volume driver (C(local) when left out).
        type: str
      labels:
        description: Labels; an existing volume must carry each one with this value.
        type: dict
        default: {}
      options:
        description: Driver options (C(--opt), for example C(type), C(device), C(o) of the local driver).
        type: dict
        default: {}
notes:
  - Label and option values are text; C(true) and C(false) are written in lowercase.
seealso:
  - module: vpsops.deploy.compose_preflight
"""

EXAMPLES = r"""
- name: Create the platform's network and database volumes (seed runbook step "Create External Resources")
  vpsops.deploy.docker_externals:
    networks:
      - name: 7d-platform
    volumes:
      - name: 7d-nats-data
      - name: 7d-ar-pgdata
        labels: {com.example.backup: daily}

- name: An internal network with a fixed subnet
  vpsops.deploy.docker_externals:
    networks:
      - name: backend
        driver: bridge
        internal: true
        subnet: 10.231.0.0/24
        gateway: 10.231.0.1
"""

RETURN = r"""
networks:
  description: Per listed network, V(present) (it existed) or V(created) (in check mode, would be).
  returned: always
  type: dict
  sample: {"7d-platform": "created"}
volumes:
  description: Per listed volume, V(present) or V(created) (in check mode, would be).
  returned: always
  type: dict
  sample: {"7d-nats-data": "present", "7d-ar-pgdata": "created"}
commands:
  description: The Docker commands run, as argument lists (none in check mode).
  returned: always
  type: list
  elements: list
  sample: [["docker", "network", "create", "--", "7d-platform"]]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Docker, DockerError
from ansible_collections.vpsops.deploy.plugins.module_utils._externals import (
    CreateFailed, ExternalsError, argument_spec, ensure,
)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    try:
        result = ensure(Docker(params["docker_cli"]), params["networks"], params["volumes"], module.check_mode)
    except CreateFailed as exc:
        module.fail_json(msg=str(exc), changed=bool(exc.commands), commands=exc.commands)
    except (ExternalsError, DockerError) as exc:
        module.fail_json(msg=str(exc), changed=False)
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
