#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: project_files
short_description: Put a stack's compose files and its .env in the project directory, in one task
version_added: 0.1.0
description:
  - Reads the stack's compose files on the controller and writes them, and the stack's C(.env), to
    the project directory on the host in one module run (a loop of M(ansible.builtin.copy) costs
    two module runs per file).
  - Each file is written owner-only (C(0600)) through a temporary file and a rename, and only when
    its content differs; a file whose content is right but whose mode is wider is narrowed to
    C(0600). A replaced file keeps its owner and group. Missing directories are created C(0700).
  - The C(.env) holds secrets; its values are never returned, shown in a diff or logged.
author:
  - vpsops.deploy contributors (@vpsops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
    details: The action reads O(files) from O(src) on the controller.
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: Reports what would be written and changes nothing.
  diff_mode:
    support: partial
    details: Shows the compose files' changes; never the C(.env).
  platform:
    platforms: posix
options:
  path:
    description: The project directory on the host.
    type: path
    required: true
  src:
    description:
      - The directory of the compose files on the controller (O(files) are relative to it). A
        relative directory is searched for as M(ansible.builtin.copy) searches its C(src).
    type: str
  files:
    description: The compose files, relative to O(src); each is written under the same name below O(path).
    type: list
    elements: str
    default: []
  env:
    description:
      - The variables of the stack's C(.env), one C(KEY='value') entry each. Names must be valid
        variable names. Values are kept exactly, quotes, dollar signs and newlines included (a value
        with a single quote is written double-quoted and escaped); a carriage return or a NUL
        character is refused.
      - Omitted, the C(.env) is left as it is.
    type: dict
  contents:
    description:
      - The text of each file of O(files), by name. The action sets it from O(src); not set by hand.
    type: dict
    default: {}
notes:
  - Files are text (UTF-8); compose files are.
"""

EXAMPLES = r"""
- name: Put the stack's files on the host
  vpsops.deploy.project_files:
    path: /opt/platform
    src: "{{ playbook_dir }}/stack"
    files:
      - docker-compose.infrastructure.yml
      - docker-compose.platform.yml
    env:
      RELEASE_TAG: v2
      POSTGRES_PASSWORD: "{{ vault_postgres_password }}"
"""

RETURN = r"""
written:
  description: The files written (or, in check mode, that would be), or whose mode was narrowed.
  returned: always
  type: list
  elements: str
  sample: [docker-compose.platform.yml, .env]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsops.deploy.plugins.module_utils._project import ProjectError, sync


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            src=dict(type="str"),
            files=dict(type="list", elements="str", default=[]),
            env=dict(type="dict", no_log=True),
            contents=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        missing = [name for name in params["files"] if not isinstance(params["contents"].get(name), str)]
        if missing:
            raise ProjectError("files: no content for %s: this module runs through its action, which reads "
                               "them from src on the controller" % ", ".join(missing))
        files = dict((name, params["contents"][name]) for name in params["files"])
        written, diffs = sync(params["path"], files, env=params["env"], check_mode=module.check_mode,
                              want_diff=module._diff)
    except ProjectError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="cannot write the project directory %s: %s" % (params["path"], exc))
    result = dict(changed=bool(written), written=written)
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
