# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""External networks and volumes (_externals): which ones a resolved compose model needs, the
preflight's sentence for each missing one, the reads of the host's networks and volumes through
the Engine API and the CLI (recorded from the lab's Docker 20.10.24 and Compose 2.40.3), and the
host role's side: entries checked, what to create, an existing one that differs named, nothing
created in check mode or before every entry is known good."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _externals as ex
from ansible_collections.vpsops.deploy.plugins.module_utils._compose import (
    DaemonDown, Docker, DockerError, network_info, volume_info,
)

# `docker compose config --format json` (2.40.3) of a file with every way to mark a network or a
# volume external: plain (front), another name (back -> real-back), the deprecated
# `external: {name: old-style}`, an unused one (compose leaves it out), a project network and volume.
MODEL_ALL_WAYS = json.loads("""
{"name": "extt",
 "networks": {"back": {"name": "real-back", "ipam": {}, "external": true},
              "front": {"name": "front", "ipam": {}, "external": true},
              "legacy": {"name": "old-style", "ipam": {}, "external": true}},
 "services": {"a": {"command": null, "entrypoint": null, "image": "vpsops-lab/nats:2.15",
                    "networks": {"back": null, "front": null, "legacy": null},
                    "volumes": [{"type": "volume", "source": "data", "target": "/data", "volume": {}},
                                {"type": "volume", "source": "named", "target": "/n", "volume": {}},
                                {"type": "volume", "source": "plain", "target": "/p", "volume": {}}]}},
 "volumes": {"data": {"name": "data", "external": true},
             "named": {"name": "real-vol", "external": true},
             "plain": {"name": "extt_plain"}}}
""")

# Seed 000's shape: the default network is the external 7d-platform, a database volume is external;
# a bind mount, a project volume and a service on the host's network beside them.
MODEL_SEED = json.loads("""
{"name": "extd", "networks": {"default": {"name": "7d-platform", "ipam": {}, "external": true}},
 "services": {"auth": {"command": null, "entrypoint": null, "image": "vpsops-lab/nats:2.15",
                       "networks": {"default": null},
                       "volumes": [{"type": "volume", "source": "pgdata", "target": "/var/lib/postgresql/data",
                                    "volume": {}},
                                   {"type": "bind", "source": "/tmp/extd/conf", "target": "/conf",
                                    "bind": {"create_host_path": true}},
                                   {"type": "volume", "source": "scratch", "target": "/tmp/s", "volume": {}}]},
              "lb": {"command": null, "entrypoint": null, "image": "vpsops-lab/nats:2.15", "network_mode": "host"}},
 "volumes": {"pgdata": {"name": "7d-auth-pgdata", "external": true}, "scratch": {"name": "extd_scratch"}}}
""")

# GET /v1.41/networks (cut to two networks) and `docker network inspect` of the same two: the same
# documents; and GET /v1.41/volumes with `docker volume inspect`.
API_NETWORKS = json.loads("""
[{"Name": "vpsops-rec-net", "Id": "03058908940a9475887f6cbbca85586e6b44a323b6ae4c01c69cc95c3c7e4c95",
  "Created": "2026-12-06T22:25:33.031597125Z", "Scope": "local", "Driver": "bridge", "EnableIPv6": false,
  "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": "10.231.0.0/24"}]}, "Internal": false,
  "Attachable": false, "Ingress": false, "ConfigFrom": {"Network": ""}, "ConfigOnly": false, "Containers": {},
  "Options": {"com.docker.network.bridge.enable_icc": "true"}, "Labels": {"vpsops.test": "1"}},
 {"Name": "none", "Id": "f00c3f1902afcb6587702c5b43f5e35841442070c85e3a8e67388d75a806cc83",
  "Created": "2026-12-06T18:15:59.615317854Z", "Scope": "local", "Driver": "null", "EnableIPv6": false,
  "IPAM": {"Driver": "default", "Options": null, "Config": []}, "Internal": false, "Attachable": false,
  "Ingress": false, "ConfigFrom": {"Network": ""}, "ConfigOnly": false, "Containers": {}, "Options": {},
  "Labels": {}}]
""")
CLI_NETWORK_IDS = "03058908940a9475887f6cbbca85586e6b44a323b6ae4c01c69cc95c3c7e4c95\n" \
                  "f00c3f1902afcb6587702c5b43f5e35841442070c85e3a8e67388d75a806cc83\n"
CLI_NETWORKS = json.dumps(API_NETWORKS, indent=4)  # the CLI prints the same documents, indented
API_VOLUMES = json.loads("""
{"Volumes": [{"CreatedAt": "2026-12-06T22:25:33Z", "Driver": "local", "Labels": {"vpsops.test": "1"},
              "Mountpoint": "/var/lib/docker/volumes/vpsops-rec-vol/_data", "Name": "vpsops-rec-vol",
              "Options": null, "Scope": "local"}],
 "Warnings": null}
""")
CLI_VOLUMES = json.dumps(API_VOLUMES["Volumes"], indent=4)
# GET /v1.41/info's Swarm (cut to it) and `docker info --format {{.Swarm.LocalNodeState}}`.
API_INFO_SWARM = ('{"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, '
                  '"Error": "", "RemoteManagers": null}')

REC_NET = {"name": "vpsops-rec-net", "id": "03058908940a9475887f6cbbca85586e6b44a323b6ae4c01c69cc95c3c7e4c95",
           "driver": "bridge", "scope": "local", "internal": False, "attachable": False, "enable_ipv6": False,
           "subnets": ["10.231.0.0/24"], "gateways": [], "labels": {"vpsops.test": "1"},
           "options": {"com.docker.network.bridge.enable_icc": "true"}}
REC_VOL = {"name": "vpsops-rec-vol", "driver": "local", "scope": "local", "labels": {"vpsops.test": "1"},
           "options": {}}


# the model ------------------------------------------------------------------------------------

def test_every_way_to_mark_a_network_or_volume_external_is_found_by_its_host_name():
    found = ex.external_objects(MODEL_ALL_WAYS)
    assert found == {
        "networks": {"front": {"keys": ["front"], "services": ["a"]},
                     "old-style": {"keys": ["legacy"], "services": ["a"]},
                     "real-back": {"keys": ["back"], "services": ["a"]}},
        "volumes": {"data": {"keys": ["data"], "services": ["a"]},
                    "real-vol": {"keys": ["named"], "services": ["a"]}}}


def test_the_seed_stack_needs_its_default_network_and_database_volume():
    assert ex.external_objects(MODEL_SEED) == {
        "networks": {"7d-platform": {"keys": ["default"], "services": ["auth"]}},
        "volumes": {"7d-auth-pgdata": {"keys": ["pgdata"], "services": ["auth"]}}}


@pytest.mark.parametrize("model, expected", [
    (None, {"networks": {}, "volumes": {}}),
    ({"services": {"a": {"image": "x"}}}, {"networks": {}, "volumes": {}}),
    # project networks and volumes are compose's own to create
    ({"networks": {"default": {"name": "p_default", "ipam": {}}}, "volumes": {"v": {"name": "p_v"}},
      "services": {"a": {"networks": {"default": None}}}}, {"networks": {}, "volumes": {}}),
    ({"networks": {"n": {"name": "n", "external": False}}}, {"networks": {}, "volumes": {}}),
    # the form older files had, should a model still carry it; no service uses it
    ({"networks": {"n": {"external": {"name": "shared"}}}},
     {"networks": {"shared": {"keys": ["n"], "services": []}}, "volumes": {}}),
    # two keys for one network on the host
    ({"networks": {"a": {"name": "shared", "external": True}, "b": {"name": "shared", "external": True}},
      "services": {"x": {"networks": {"a": None}}, "y": {"networks": {"b": None}}}},
     {"networks": {"shared": {"keys": ["a", "b"], "services": ["x", "y"]}}, "volumes": {}}),
])
def test_external_objects_edge_cases(model, expected):
    assert ex.external_objects(model) == expected


class HostDocker:
    """_compose.Docker's reads of networks and volumes, answered with what a host has."""

    def __init__(self, networks=(), volumes=(), swarm=False):
        self.present = {"networks": [dict(REC_NET, name=n, id="%064x" % (index + 1)) for index, n in enumerate(networks)],
                        "volumes": [dict(REC_VOL, name=v) for v in volumes]}
        self.swarm = swarm
        self.reads = []
        self.created = []

    def swarm_active(self):
        self.reads.append("swarm")
        return self.swarm

    def networks(self):
        self.reads.append("networks")
        return self.present["networks"]

    def volumes(self):
        self.reads.append("volumes")
        return self.present["volumes"]

    def create_network(self, name, **fields):
        self.created.append(("network", name, fields))
        return ["docker", "network", "create", "--", name]

    def create_volume(self, name, **fields):
        self.created.append(("volume", name, fields))
        return ["docker", "volume", "create", "--", name]


def test_the_preflight_names_each_missing_one_and_what_to_do():
    checks, problems = ex.check(HostDocker(networks=["front", "bridge"], volumes=["data"]), MODEL_ALL_WAYS)
    assert checks == {"networks": {"front": "present", "old-style": "missing", "real-back": "missing"},
                      "volumes": {"data": "present", "real-vol": "missing"}}
    assert problems == [
        "network old-style (external, key legacy in the compose files, used by service a) does not exist on this "
        "host: create it (docker network create old-style) or let the host role create it (host_networks).",
        "network real-back (external, key back in the compose files, used by service a) does not exist on this "
        "host: create it (docker network create real-back) or let the host role create it (host_networks).",
        "volume real-vol (external, key named in the compose files, used by service a) does not exist on this "
        "host: create it (docker volume create real-vol), restore its data into it, or let the host role create it "
        "(host_volumes); compose never creates an external volume."]


def test_the_seed_stack_passes_once_its_network_and_volume_exist():
    docker = HostDocker(networks=["7d-platform"], volumes=["7d-auth-pgdata"])
    assert ex.check(docker, MODEL_SEED) == (
        {"networks": {"7d-platform": "present"}, "volumes": {"7d-auth-pgdata": "present"}}, [])
    checks, problems = ex.check(HostDocker(volumes=["7d-auth-pgdata"]), MODEL_SEED)
    assert problems == ["network 7d-platform (external, key default in the compose files, used by service auth) "
                        "does not exist on this host: create it (docker network create 7d-platform) or let the host "
                        "role create it (host_networks)."]


def test_a_name_is_matched_whole_never_as_a_part():
    _checks, problems = ex.check(HostDocker(networks=["front-old", "xfront"], volumes=["data2"]), MODEL_ALL_WAYS)
    assert [p.split(" (")[0] for p in problems] == [
        "network front", "network old-style", "network real-back", "volume data", "volume real-vol"]


def test_a_network_given_by_its_id_is_present():
    docker = HostDocker(networks=["7d-platform"], volumes=["7d-auth-pgdata"])
    model = json.loads(json.dumps(MODEL_SEED))
    model["networks"]["default"]["name"] = "%064x" % 1
    checks, problems = ex.check(docker, model)
    assert problems == [] and checks["networks"] == {"%064x" % 1: "present"}
    assert "swarm" not in docker.reads  # asked only when a network is missing


def test_on_a_swarm_node_networks_are_left_to_compose_as_compose_does():
    # an overlay network made on another node shows on this one only once a container uses it
    docker = HostDocker(swarm=True)
    checks, problems = ex.check(docker, MODEL_SEED)
    assert checks == {"networks": {"7d-platform": "not checked (swarm)"}, "volumes": {"7d-auth-pgdata": "missing"}}
    assert [p.split(" (")[0] for p in problems] == ["volume 7d-auth-pgdata"]


def test_a_name_several_networks_have_is_named_as_compose_refuses_it():
    docker = HostDocker(networks=["7d-platform", "7d-platform"], volumes=["7d-auth-pgdata"])
    checks, problems = ex.check(docker, MODEL_SEED)
    assert checks["networks"] == {"7d-platform": "present"}
    assert problems == [
        "network 7d-platform (external, key default in the compose files, used by service auth): 2 networks have "
        "this name (IDs 000000000000, 000000000000) and compose refuses to choose; remove the extra ones or give the "
        "compose file the ID of the one to use as name."]


def test_a_stack_without_externals_costs_no_read():
    docker = HostDocker()
    assert ex.check(docker, {"services": {"a": {"networks": {"default": None}}},
                             "networks": {"default": {"name": "p_default"}}}) == (
        {"networks": {}, "volumes": {}}, [])
    assert docker.reads == []


# reads through the Engine API and the CLI -------------------------------------------------------

class RecordedAPI:
    """The Engine API client's reads answered with the recorded bodies."""

    def endpoint(self):
        return "unix:///recorded.sock"

    def networks(self, timeout=None):
        return json.loads(json.dumps(API_NETWORKS))

    def volumes(self, timeout=None):
        return json.loads(json.dumps(API_VOLUMES))["Volumes"]

    def info(self, timeout=None):
        return {"Swarm": json.loads(API_INFO_SWARM)}


class RecordedCLI:
    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv, timeout=None):
        self.calls.append(argv[1:])
        return self.answers[" ".join(argv[1:3])]


CLI_ANSWERS = {"network ls": (0, CLI_NETWORK_IDS, ""), "network inspect": (0, CLI_NETWORKS, ""),
               "volume ls": (0, "vpsops-rec-vol\n", ""), "volume inspect": (0, CLI_VOLUMES, ""),
               "info --format": (0, "inactive\n", "")}


def test_the_api_and_the_cli_read_the_same_networks_and_volumes():
    over_api = Docker(api=RecordedAPI())
    runner = RecordedCLI(CLI_ANSWERS)
    over_cli = Docker(api=False, runner=runner)
    assert over_api.networks() == over_cli.networks() == sorted(
        [REC_NET, dict(network_info(API_NETWORKS[1]))], key=lambda n: n["name"])
    assert over_api.volumes() == over_cli.volumes() == [REC_VOL]
    assert runner.calls == [["network", "ls", "-q", "--no-trunc"], ["network", "inspect"] + CLI_NETWORK_IDS.split(),
                            ["volume", "ls", "-q"], ["volume", "inspect", "vpsops-rec-vol"]]
    assert network_info(API_NETWORKS[1])["driver"] == "null" and network_info(API_NETWORKS[1])["subnets"] == []
    assert volume_info({}) == {"name": "", "driver": "", "scope": "", "labels": {}, "options": {}}


def test_the_swarm_state_reads_the_same_either_way():
    assert Docker(api=RecordedAPI()).swarm_active() is False
    assert Docker(api=False, runner=RecordedCLI(CLI_ANSWERS)).swarm_active() is False
    active = dict(CLI_ANSWERS, **{"info --format": (0, "active\n", "")})
    assert Docker(api=False, runner=RecordedCLI(active)).swarm_active() is True


def test_a_host_without_networks_or_volumes_is_not_inspected():
    runner = RecordedCLI({"network ls": (0, "", ""), "volume ls": (0, "\n", "")})
    docker = Docker(api=False, runner=runner)
    assert docker.networks() == [] and docker.volumes() == []
    assert runner.calls == [["network", "ls", "-q", "--no-trunc"], ["volume", "ls", "-q"]]


def test_one_removed_between_ls_and_inspect_is_left_out():
    answers = dict(CLI_ANSWERS, **{"network inspect": (1, json.dumps(API_NETWORKS[:1]),
                                                       "Error: No such network: f00c3f1902af")})
    assert [n["name"] for n in Docker(api=False, runner=RecordedCLI(answers)).networks()] == ["vpsops-rec-net"]


@pytest.mark.parametrize("answer, error, words", [
    ((1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"),
     DaemonDown, "not reachable"),
    ((1, "", "permission denied while trying to connect"), DockerError, "docker network ls failed (rc=1)"),
])
def test_a_failed_read_is_a_readable_error(answer, error, words):
    docker = Docker(api=False, runner=RecordedCLI(dict(CLI_ANSWERS, **{"network ls": answer})))
    with pytest.raises(error) as caught:
        docker.networks()
    assert words in str(caught.value)


def test_create_builds_argument_lists_and_runs_them():
    runner = RecordedCLI({"network create": (0, "abc\n", ""), "volume create": (0, "v\n", "")})
    docker = Docker(api=False, runner=runner)
    argv = docker.create_network("7d-platform", driver="bridge", internal=True, attachable=True, enable_ipv6=True,
                                 subnet="10.20.0.0/24", gateway="10.20.0.1", labels={"b": "2", "a": "1"},
                                 options={"com.docker.network.driver.mtu": "1400"})
    assert argv == ["docker", "network", "create", "--driver", "bridge", "--internal", "--attachable", "--ipv6",
                    "--subnet", "10.20.0.0/24", "--gateway", "10.20.0.1", "--label", "a=1", "--label", "b=2",
                    "--opt", "com.docker.network.driver.mtu=1400", "--", "7d-platform"]
    assert docker.create_network("plain") == ["docker", "network", "create", "--", "plain"]
    assert docker.create_volume("7d-ar-pgdata", driver="local", options={"type": "tmpfs", "device": "tmpfs"}) == [
        "docker", "volume", "create", "--driver", "local", "--opt", "device=tmpfs", "--opt", "type=tmpfs", "--",
        "7d-ar-pgdata"]
    assert runner.calls == [argv[1:], ["network", "create", "--", "plain"],
                            ["volume", "create", "--driver", "local", "--opt", "device=tmpfs", "--opt", "type=tmpfs",
                             "--", "7d-ar-pgdata"]]


# the host role's side ---------------------------------------------------------------------------

def network(name, **fields):
    entry = dict((k, None) for k in ex.network_spec())
    entry.update(name=name, labels={}, options={})
    entry.update(fields)
    return entry


def volume(name, **fields):
    entry = dict((k, None) for k in ex.volume_spec())
    entry.update(name=name, labels={}, options={})
    entry.update(fields)
    return entry


@pytest.mark.parametrize("networks, volumes, words", [
    ([network("-x")], [], "networks[0]: name must be a Docker network name"),
    ([network("a b")], [], "got 'a b'"),
    ([], [volume("")], "volumes[0]: name must be a Docker volume name"),
    ([network("n"), network("n")], [], "networks[1] (n): n is listed twice (also networks[0])"),
    ([network("n", subnet="10.0.0.300/24")], [], "networks[0] (n): subnet must be an address range in CIDR form"),
    ([network("n", gateway="10.0.0.1")], [], "a gateway needs a subnet"),
    ([network("n", subnet="10.0.0.0/24", gateway="10.0.1.1")], [], "gateway 10.0.1.1 is not in subnet 10.0.0.0/24"),
    ([network("n", subnet="10.0.0.0/24", gateway="nope")], [], "gateway must be an IP address"),
    ([], [volume("v", labels={"a=b": "c"})], "volumes[0] (v): labels must map names (without '=')"),
    ([], [volume("v", options={"o": {"x": 1}})], "options must map names"),
])
def test_bad_entries_are_named_before_anything_is_read(networks, volumes, words):
    docker = HostDocker()
    with pytest.raises(ex.ExternalsError) as caught:
        ex.ensure(docker, networks, volumes)
    assert words in str(caught.value)
    assert docker.reads == [] and docker.created == []


def test_every_bad_entry_is_named_at_once():
    with pytest.raises(ex.ExternalsError) as caught:
        ex.validate([network("-a"), network("b", gateway="1.2.3.4")], [volume("c d")])
    assert "networks[0]" in str(caught.value) and "networks[1] (b)" in str(caught.value) \
        and "volumes[0]" in str(caught.value)


@pytest.mark.parametrize("entry, differences", [
    (network("vpsops-rec-net"), []),
    (network("vpsops-rec-net", driver="bridge", internal=False, attachable=False, enable_ipv6=False,
             subnet="10.231.0.0/24", labels={"vpsops.test": "1"},
             options={"com.docker.network.bridge.enable_icc": True}), []),
    (network("vpsops-rec-net", subnet="10.231.0.7/24"), []),  # the same range, written loosely
    (network("vpsops-rec-net", driver="overlay"), ["driver bridge, not overlay"]),
    (network("vpsops-rec-net", internal=True, attachable=True),
     ["internal false, not true", "attachable false, not true"]),
    (network("vpsops-rec-net", subnet="10.232.0.0/24", gateway="10.232.0.1"),
     ["subnet 10.231.0.0/24, not 10.232.0.0/24", "gateway none set, not 10.232.0.1"]),
    (network("vpsops-rec-net", labels={"vpsops.test": 2, "team": "ops"}),
     ["no label team (asked: ops)", "label vpsops.test=1, not 2"]),
    (network("vpsops-rec-net", options={"com.docker.network.driver.mtu": 1400}),
     ["no option com.docker.network.driver.mtu (asked: 1400)"]),
])
def test_network_differences(entry, differences):
    assert ex.network_differences(entry, REC_NET) == differences


@pytest.mark.parametrize("entry, differences", [
    (volume("vpsops-rec-vol", driver="local", labels={"vpsops.test": 1}), []),
    (volume("vpsops-rec-vol", driver="nfs"), ["driver local, not nfs"]),
    (volume("vpsops-rec-vol", options={"type": "tmpfs"}), ["no option type (asked: tmpfs)"]),
])
def test_volume_differences(entry, differences):
    assert ex.volume_differences(entry, REC_VOL) == differences


def test_check_mode_reports_what_it_would_create_and_creates_nothing():
    docker = HostDocker(networks=["7d-platform"])
    result = ex.ensure(docker, [network("7d-platform"), network("7d-backend", internal=True)],
                       [volume("7d-ar-pgdata")], check_mode=True)
    assert docker.created == []
    assert result == {"changed": True, "networks": {"7d-platform": "present", "7d-backend": "created"},
                      "volumes": {"7d-ar-pgdata": "created"}, "commands": [],
                      "diff": {"before": {"networks": ["7d-platform"], "volumes": []},
                               "after": {"networks": ["7d-backend", "7d-platform"], "volumes": ["7d-ar-pgdata"]}}}


def test_missing_ones_are_created_and_a_second_run_changes_nothing():
    docker = HostDocker(networks=["7d-platform"])
    result = ex.ensure(docker, [network("7d-platform"), network("7d-backend", internal=True, labels={"a": True})],
                       [volume("7d-ar-pgdata", options={"type": "tmpfs"})])
    assert result["changed"] is True
    assert result["commands"] == [["docker", "network", "create", "--", "7d-backend"],
                                  ["docker", "volume", "create", "--", "7d-ar-pgdata"]]
    created = dict((name, fields) for _kind, name, fields in docker.created)
    assert created["7d-backend"]["internal"] is True and created["7d-backend"]["labels"] == {"a": "true"}
    assert created["7d-ar-pgdata"]["options"] == {"type": "tmpfs"}
    again = HostDocker(networks=["7d-platform", "7d-backend"], volumes=["7d-ar-pgdata"])
    result = ex.ensure(again, [network("7d-platform"), network("7d-backend")], [volume("7d-ar-pgdata")])
    assert result["changed"] is False and result["commands"] == [] and again.created == []
    assert result["networks"] == {"7d-platform": "present", "7d-backend": "present"}


def test_an_existing_one_that_differs_fails_before_anything_is_created():
    docker = HostDocker(networks=["vpsops-rec-net"], volumes=["vpsops-rec-vol"])
    with pytest.raises(ex.ExternalsError) as caught:
        ex.ensure(docker, [network("new-net"), network("vpsops-rec-net", driver="overlay")],
                  [volume("vpsops-rec-vol", driver="nfs")])
    message = str(caught.value)
    assert docker.created == []
    assert message.startswith("network vpsops-rec-net exists with driver bridge, not overlay: Docker cannot change a "
                              "network in place, and recreating it would cut off the containers attached to it")
    assert "remove it (docker network rm vpsops-rec-net) once nothing uses it" in message
    assert "volume vpsops-rec-vol exists with driver local, not nfs" in message and "lose the data in it" in message


def test_a_create_docker_refuses_names_what_was_created_before_it():
    class Refusing(HostDocker):
        def create_volume(self, name, **fields):
            raise DockerError("docker volume create v failed (rc=1): plugin \"nfs\" not found")

    docker = Refusing()
    with pytest.raises(ex.CreateFailed) as caught:
        ex.ensure(docker, [network("n")], [volume("v", driver="nfs")])
    assert str(caught.value) == ('docker volume create v failed (rc=1): plugin "nfs" not found; created before it: n')
    assert caught.value.commands == [["docker", "network", "create", "--", "n"]]


def test_nothing_listed_reads_nothing():
    docker = HostDocker()
    assert ex.ensure(docker, [], [])["changed"] is False
    assert docker.reads == []
