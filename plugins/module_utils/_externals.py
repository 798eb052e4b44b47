# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""External networks and volumes of Docker Compose stacks (`external: true`): compose never creates
them and fails late, in `up`, when one is missing ("network X declared as external, but could not
be found"), after the deploy has already changed other phases. Two halves:

- the preflight: which networks and volumes a resolved compose model needs from the host
  (external_objects) and a sentence for each one the host lacks (check);
- the host role's side: create the networks and volumes an operator lists (host_networks,
  host_volumes), idempotently, naming an existing one that differs from what was asked instead of
  recreating it (a network or volume cannot be changed in place, and recreating one cuts off the
  containers or the data that use it).

Reads go through _compose.Docker (the Engine API over the socket, else the CLI); writes through the
Docker CLI with argument lists. Private to this collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import DockerError

KINDS = ("networks", "volumes")
# Docker's own rule for network and volume names.
NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
NETWORK_FIELDS = ("name", "driver", "internal", "attachable", "enable_ipv6", "subnet", "gateway", "labels", "options")
VOLUME_FIELDS = ("name", "driver", "labels", "options")


class ExternalsError(ValueError):
    """Bad input, or a network or volume that exists but differs: the message names the entry and
    what was expected. Raised before anything is created."""


class CreateFailed(ExternalsError):
    """Docker refused to create one; `commands` holds what was created before it."""

    def __init__(self, message, commands):
        ExternalsError.__init__(self, message)
        self.commands = commands


# the preflight ----------------------------------------------------------------------------------

def external_objects(model):
    """The networks and volumes a resolved compose model (`docker compose config --format json`)
    marks external, by the name they have on the host:
    {"networks": {name: {"keys": [key in the compose files], "services": [service]}}, "volumes": {...}}.

    Compose writes `networks: {KEY: {name: NAME, external: true}}` (NAME is KEY unless the file gave
    another; the old `external: {name: NAME}` comes out the same) and leaves out networks and
    volumes no service uses."""
    model = model or {}
    users = {"networks": {}, "volumes": {}}
    for service_name, service in (model.get("services") or {}).items():
        service = service or {}
        networks = service.get("networks") or {}
        for key in (networks if isinstance(networks, (dict, list)) else []):
            users["networks"].setdefault(key, set()).add(service_name)
        for mount in service.get("volumes") or []:
            if isinstance(mount, dict) and mount.get("type") == "volume" and mount.get("source"):
                users["volumes"].setdefault(mount["source"], set()).add(service_name)
    found = {"networks": {}, "volumes": {}}
    for kind in KINDS:
        for key, spec in sorted((model.get(kind) or {}).items()):
            spec = spec or {}
            external = spec.get("external")
            name = spec.get("name") or key
            if isinstance(external, dict):
                name = external.get("name") or name
            elif external is not True:
                continue
            entry = found[kind].setdefault(name, {"keys": [], "services": []})
            entry["keys"].append(key)
            entry["services"] = sorted(set(entry["services"]) | users[kind].get(key, set()))
    return found


def describe(name, entry):
    """ (external, key K in the compose files, used by services a, b)"""
    parts = ["external"]
    keys = [k for k in entry["keys"] if k != name]
    if keys:
        parts.append("%s %s in the compose files" % ("key" if len(keys) == 1 else "keys", ", ".join(keys)))
    if entry["services"]:
        parts.append("used by %s %s" % ("service" if len(entry["services"]) == 1 else "services",
                                        ", ".join(entry["services"])))
    return "(%s)" % ", ".join(parts)


def missing_problems(externals, networks_present, volumes_present, swarm=False):
    """A sentence for each external network or volume the host lacks. networks_present: the names
    and IDs of the host's networks (compose takes a network's ID as its name too). On a swarm node
    compose itself does not check networks (an overlay network made on another node shows only
    once a container uses it), so neither is it done here."""
    problems = []
    for name, entry in sorted(externals["networks"].items()):
        if name not in networks_present and not swarm:
            problems.append("network %s %s does not exist on this host: create it (docker network create %s) or let "
                            "the host role create it (host_networks)." % (name, describe(name, entry), name))
    for name, entry in sorted(externals["volumes"].items()):
        if name not in volumes_present:
            problems.append("volume %s %s does not exist on this host: create it (docker volume create %s), restore "
                            "its data into it, or let the host role create it (host_volumes); compose never creates "
                            "an external volume." % (name, describe(name, entry), name))
    return problems


def ambiguous_problems(externals, networks):
    """Compose refuses an external network whose name several networks have."""
    problems = []
    for name, entry in sorted(externals["networks"].items()):
        ids = sorted(n["id"][:12] for n in networks if n["name"] == name)
        if len(ids) > 1:
            problems.append("network %s %s: %d networks have this name (IDs %s) and compose refuses to choose; remove "
                            "the extra ones or give the compose file the ID of the one to use as name."
                            % (name, describe(name, entry), len(ids), ", ".join(ids)))
    return problems


def check(docker, model):
    """(checks, problems): {"networks": {name: "present" | "missing" | "not checked (swarm)"},
    "volumes": {...}} for the external networks and volumes of the model, and a sentence for each
    missing (or, for a network, ambiguous) one. The host is read only when the model has any."""
    externals = external_objects(model)
    present = {"networks": set(), "volumes": set()}
    problems = []
    swarm = False
    if externals["networks"]:
        networks = docker.networks()
        present["networks"] = set(n["name"] for n in networks) | set(n["id"] for n in networks if n["id"])
        problems += ambiguous_problems(externals, networks)
        if any(name not in present["networks"] for name in externals["networks"]):
            swarm = docker.swarm_active()
    if externals["volumes"]:
        present["volumes"] = set(item["name"] for item in docker.volumes())
    checks = {"networks": dict((name, "present" if name in present["networks"] else
                                "not checked (swarm)" if swarm else "missing") for name in externals["networks"]),
              "volumes": dict((name, "present" if name in present["volumes"] else "missing")
                              for name in externals["volumes"])}
    return checks, problems + missing_problems(externals, present["networks"], present["volumes"], swarm)


# the host role's side ----------------------------------------------------------------------------

def network_spec():
    """The argument spec of one network (module option `networks`, role variable host_networks)."""
    return dict(
        name=dict(type="str", required=True),
        driver=dict(type="str"),
        internal=dict(type="bool"),
        attachable=dict(type="bool"),
        enable_ipv6=dict(type="bool"),
        subnet=dict(type="str"),
        gateway=dict(type="str"),
        labels=dict(type="dict", default={}),
        options=dict(type="dict", default={}),
    )


def volume_spec():
    """The argument spec of one volume (module option `volumes`, role variable host_volumes)."""
    return dict(
        name=dict(type="str", required=True),
        driver=dict(type="str"),
        labels=dict(type="dict", default={}),
        options=dict(type="dict", default={}),
    )


def argument_spec():
    return dict(
        networks=dict(type="list", elements="dict", default=[], options=network_spec()),
        volumes=dict(type="list", elements="dict", default=[], options=volume_spec()),
        docker_cli=dict(type="path", default="docker"),
    )


def validate(networks, volumes):
    """Raise ExternalsError naming every bad entry at once."""
    problems = []
    for kind, items in (("networks", networks), ("volumes", volumes)):
        seen = {}
        for index, item in enumerate(items or []):
            where = "%s[%d]" % (kind, index)
            name = item.get("name")
            if not name or not NAME.match(name):
                problems.append("%s: name must be a Docker %s name (letters, digits, '_', '.', '-', starting with a "
                                "letter or digit), got %r." % (where, kind[:-1], name))
                continue
            where = "%s[%d] (%s)" % (kind, index, name)
            if name in seen:
                problems.append("%s: %s is listed twice (also %s[%d])." % (where, name, kind, seen[name]))
            seen.setdefault(name, index)
            for option in ("labels", "options"):
                for key, value in sorted((item.get(option) or {}).items()):
                    if not key or "=" in key or isinstance(value, (dict, list)) or value is None:
                        problems.append("%s: %s must map names (without '=') to plain values, got %s: %r."
                                        % (where, option, key, value))
            if kind == "networks":
                problems += address_problems(where, item)
    if problems:
        raise ExternalsError(" ".join(problems))


def address_problems(where, item):
    problems = []
    subnet = None
    if item.get("subnet"):
        try:
            subnet = ipaddress.ip_network(item["subnet"], strict=False)
        except ValueError:
            problems.append("%s: subnet must be an address range in CIDR form (10.20.0.0/24), got %r."
                            % (where, item["subnet"]))
    if item.get("gateway"):
        try:
            gateway = ipaddress.ip_address(item["gateway"])
        except ValueError:
            problems.append("%s: gateway must be an IP address, got %r." % (where, item["gateway"]))
        else:
            if not item.get("subnet"):
                problems.append("%s: a gateway needs a subnet (Docker takes a gateway only with its subnet)." % where)
            elif subnet is not None and gateway not in subnet:
                problems.append("%s: gateway %s is not in subnet %s." % (where, gateway, item["subnet"]))
    return problems


def same_network(text):
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return text


def network_differences(wanted, present):
    """What an existing network has other than asked: ["driver overlay, not bridge", ...]; only what
    the entry sets is compared (labels and options: each one asked for)."""
    found = []
    if wanted.get("driver") and wanted["driver"] != present["driver"]:
        found.append("driver %s, not %s" % (present["driver"], wanted["driver"]))
    for field in ("internal", "attachable", "enable_ipv6"):
        if wanted.get(field) is not None and bool(wanted[field]) != present[field]:
            found.append("%s %s, not %s" % (field, str(present[field]).lower(), str(bool(wanted[field])).lower()))
    if wanted.get("subnet") and same_network(wanted["subnet"]) not in [same_network(s) for s in present["subnets"]]:
        found.append("subnet %s, not %s" % (", ".join(present["subnets"]) or "none set", wanted["subnet"]))
    if wanted.get("gateway") and wanted["gateway"] not in present["gateways"]:
        found.append("gateway %s, not %s" % (", ".join(present["gateways"]) or "none set", wanted["gateway"]))
    return found + mapping_differences(wanted, present)


def volume_differences(wanted, present):
    found = []
    if wanted.get("driver") and wanted["driver"] != present["driver"]:
        found.append("driver %s, not %s" % (present["driver"], wanted["driver"]))
    return found + mapping_differences(wanted, present)


def plain(value):
    """A label or option value as Docker keeps it: text (booleans as YAML writes them)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def plain_values(values):
    return dict((key, plain(value)) for key, value in (values or {}).items())


def mapping_differences(wanted, present):
    found = []
    for option, singular in (("labels", "label"), ("options", "option")):
        for key, value in sorted(plain_values(wanted.get(option)).items()):
            have = present[option].get(key)
            if have is None:
                found.append("no %s %s (asked: %s)" % (singular, key, value))
            elif str(have) != value:
                found.append("%s %s=%s, not %s" % (singular, key, have, value))
    return found


def plan(networks, volumes, present_networks, present_volumes):
    """({"networks": {name: "present" | "create"}, "volumes": {...}}, conflicts): what to create,
    and a sentence for each existing one that differs from its entry."""
    by_name = {"networks": dict((n["name"], n) for n in present_networks),
               "volumes": dict((v["name"], v) for v in present_volumes)}
    actions = {"networks": {}, "volumes": {}}
    conflicts = []
    for kind, items, differ in (("networks", networks, network_differences), ("volumes", volumes, volume_differences)):
        for item in items or []:
            name = item["name"]
            present = by_name[kind].get(name)
            if present is None:
                actions[kind][name] = "create"
                continue
            actions[kind][name] = "present"
            differences = differ(item, present)
            if differences:
                noun = kind[:-1]
                conflicts.append(
                    "%s %s exists with %s: Docker cannot change a %s in place, and recreating it would %s, so it "
                    "is left as it is; remove it (docker %s rm %s) once nothing uses it, or make the entry match "
                    "the host." % (noun, name, "; ".join(differences), noun,
                                   "lose the data in it" if kind == "volumes" else "cut off the containers attached "
                                   "to it", noun, name))
    return actions, conflicts


def ensure(docker, networks, volumes, check_mode=False):
    """Create the networks and volumes that do not exist; never change or remove one. Returns
    {"changed", "networks": {name: "present" | "created"}, "volumes": {...}, "commands": [argv],
    "diff"}; raises ExternalsError for bad entries or an existing one that differs (before
    anything is created)."""
    networks = list(networks or [])
    volumes = list(volumes or [])
    validate(networks, volumes)
    actions, conflicts = plan(networks, volumes, docker.networks() if networks else [],
                              docker.volumes() if volumes else [])
    if conflicts:
        raise ExternalsError(" ".join(conflicts))
    commands = []
    done = {"networks": {}, "volumes": {}}
    try:
        for item in networks:
            name = item["name"]
            if actions["networks"][name] == "create" and not check_mode:
                commands.append(docker.create_network(
                    name, driver=item.get("driver"), internal=item.get("internal"), attachable=item.get("attachable"),
                    enable_ipv6=item.get("enable_ipv6"), subnet=item.get("subnet"), gateway=item.get("gateway"),
                    labels=plain_values(item.get("labels")), options=plain_values(item.get("options"))))
            done["networks"][name] = "present" if actions["networks"][name] == "present" else "created"
        for item in volumes:
            name = item["name"]
            if actions["volumes"][name] == "create" and not check_mode:
                commands.append(docker.create_volume(name, driver=item.get("driver"),
                                                     labels=plain_values(item.get("labels")),
                                                     options=plain_values(item.get("options"))))
            done["volumes"][name] = "present" if actions["volumes"][name] == "present" else "created"
    except DockerError as exc:
        made = [argv[-1] for argv in commands]
        raise CreateFailed("%s%s" % (exc, "; created before it: %s" % ", ".join(made) if made else
                                     "; nothing was created"), commands)
    before = dict((kind, sorted(n for n, a in actions[kind].items() if a == "present")) for kind in KINDS)
    after = dict((kind, sorted(actions[kind])) for kind in KINDS)
    changed = before != after
    return {"changed": changed, "networks": done["networks"], "volumes": done["volumes"], "commands": commands,
            "diff": {"before": before, "after": after}}
