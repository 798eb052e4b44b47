"""External networks and volumes on the lab's real Docker, as seed 000's runbook has them
(`docker network create 7d-platform`, `docker volume create 7d-nats-data`): a stack whose default
network and data volume are `external: true`.

While they are missing, compose_preflight and deploy.yml fail naming each of them, and the deploy
changes nothing (no container, no release, the network still absent). The host role creates them
from host_networks and host_volumes through playbooks/host.yml: check mode shows it and creates
nothing, the run creates them, a second run changes nothing, a bad name fails at the role's start;
docker_externals fails naming how an entry differs from the network or volume on the host. Then the same deploy passes, its container on
the external network with the external volume mounted.

Its own names: project vpsops-itext, network vpsops-itext-net, volume vpsops-itext-data, port
11480. Everything it creates is removed.
"""

import json
import os

import pytest

from conftest import ROOT, ansible_env, ansible_module, compose_down, container_names, remove_pin_tags, run
from test_deploy_playbook import ANSIBLE, INVENTORY, PLAYBOOK

PROJECT = "vpsops-itext"
NETWORK = "vpsops-itext-net"
VOLUME = "vpsops-itext-data"
PORT = 11480
STATE = "/var/lib/vpsops/%s" % PROJECT
HOST_PLAYBOOK = os.path.join(ROOT, "playbooks", "host.yml")

COMPOSE = """services:
  bus:
    image: vpsops-lab/nats:2.15
    init: true
    command: ["-js", "-m", "8222", "-sd", "/data", "-n", "itext-${RELEASE_TAG}"]
    ports: ["127.0.0.1:%(port)d:8222"]
    volumes: ["store:/data"]
    healthcheck:
      test: ["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8222/healthz"]
      interval: 2s
      timeout: 5s
      retries: 5
      start_period: 90s
networks:
  default:
    external: true
    name: %(network)s
volumes:
  store:
    external: true
    name: %(volume)s
""" % dict(port=PORT, network=NETWORK, volume=VOLUME)

MISSING_NETWORK = ("network %s (external, key default in the compose files, used by service bus) does not exist on "
                   "this host: create it (docker network create %s) or let the host role create it (host_networks)."
                   % (NETWORK, NETWORK))
MISSING_VOLUME = ("volume %s (external, key store in the compose files, used by service bus) does not exist on this "
                  "host: create it (docker volume create %s), restore its data into it, or let the host role create "
                  "it (host_volumes); compose never creates an external volume." % (VOLUME, VOLUME))


def exists(kind, name):
    return run(["docker", kind, "inspect", name], check=False).returncode == 0


def cleanup(source):
    compose_down(["docker", "compose", "-p", PROJECT, "-f", os.path.join(source, "compose.yml")],
                 env=dict(os.environ, RELEASE_TAG="v1"))
    run(["docker", "network", "rm", NETWORK], check=False)
    run(["docker", "volume", "rm", "-f", VOLUME], check=False)
    run(["rm", "-rf", STATE])
    remove_pin_tags(PROJECT)


def deploy(tmp, name):
    stack = {
        "name": PROJECT, "source": os.path.join(tmp, "source"), "env": {"RELEASE_TAG": "v1"},
        "phases": [{"name": "bus", "compose_files": ["compose.yml"],
                    "checks": [{"name": "bus", "type": "http", "url": "http://127.0.0.1:%d/healthz" % PORT}]}]}
    values = {"vpsops_stack": stack, "deploy_phase_timeout": 150}
    vars_file = os.path.join(tmp, "%s-vars.json" % name)
    with open(vars_file, "w") as handle:
        json.dump(values, handle)
    proc = run([os.path.join(ANSIBLE, "ansible-playbook"), "-i", INVENTORY, PLAYBOOK, "-e", "@%s" % vars_file],
               check=False, env=ansible_env())
    return proc.returncode, proc.stdout + proc.stderr


def host_role(tmp, name, networks, volumes, *options):
    """playbooks/host.yml on the lab host with these host_networks and host_volumes (its state and
    backup roots in tmp): (rc, stats, {task name: result})."""
    values = {"host_state_root": os.path.join(tmp, "roots", "lib"), "host_backup_root": os.path.join(tmp, "roots", "bak"),
              "host_networks": networks, "host_volumes": volumes}
    vars_file = os.path.join(tmp, "%s-host-vars.json" % name)
    with open(vars_file, "w") as handle:
        json.dump(values, handle)
    env = ansible_env()
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    proc = run([os.path.join(ANSIBLE, "ansible-playbook"), "-i", INVENTORY, HOST_PLAYBOOK, "-e", "@%s" % vars_file]
               + list(options), check=False, env=env)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("no JSON from host.yml (rc=%d): %s %s"
                             % (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:]))
    tasks = {}
    for play in data["plays"]:
        for task in play["tasks"]:
            if "lab1" in task["hosts"]:
                tasks[task["task"]["name"].split(" : ", 1)[-1]] = task["hosts"]["lab1"]
    return proc.returncode, data["stats"]["lab1"], tasks


CREATE_TASK = "Create the external networks and volumes of the host's stacks (host_networks, host_volumes)"
WANTED_NETWORKS = [{"name": NETWORK, "driver": "bridge", "labels": {"vpsops.test": "itext"}}]
WANTED_VOLUMES = [{"name": VOLUME, "labels": {"vpsops.test": "itext"}}]


@pytest.fixture(scope="module")
def runs(lab, tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("externals"))
    source = os.path.join(tmp, "source")
    os.makedirs(source)
    with open(os.path.join(source, "compose.yml"), "w") as handle:
        handle.write(COMPOSE)
    with open(os.path.join(source, ".env"), "w") as handle:
        handle.write("RELEASE_TAG='v1'\n")
    cleanup(source)
    done = {}
    try:
        done["preflight-missing"] = ansible_module("compose_preflight", {
            "project": PROJECT, "project_dir": source, "files": ["compose.yml"], "scope": "stack"})
        done["deploy-missing"] = deploy(tmp, "missing")
        done["after-failed-deploy"] = {
            "containers": container_names(PROJECT), "network": exists("network", NETWORK),
            "volume": exists("volume", VOLUME),
            "releases": os.listdir(os.path.join(STATE, "releases")) if os.path.isdir(os.path.join(STATE, "releases"))
            else []}
        done["role-check"] = host_role(tmp, "check", WANTED_NETWORKS, WANTED_VOLUMES, "--check", "--diff")
        done["after-check"] = {"network": exists("network", NETWORK), "volume": exists("volume", VOLUME)}
        done["role-apply"] = host_role(tmp, "apply", WANTED_NETWORKS, WANTED_VOLUMES)
        done["labels"] = {
            "network": json.loads(run(["docker", "network", "inspect", NETWORK, "--format", "{{json .Labels}}"]).stdout),
            "volume": json.loads(run(["docker", "volume", "inspect", VOLUME, "--format", "{{json .Labels}}"]).stdout)}
        done["role-again"] = host_role(tmp, "again", WANTED_NETWORKS, WANTED_VOLUMES)
        done["differs"] = ansible_module("docker_externals", {"networks": [{"name": NETWORK, "internal": True}],
                                                              "volumes": [{"name": VOLUME, "driver": "vpsops-none"}]})
        done["role-bad-name"] = host_role(tmp, "bad", [{"name": "-" + NETWORK}], [])
        done["preflight-present"] = ansible_module("compose_preflight", {
            "project": PROJECT, "project_dir": source, "files": ["compose.yml"], "scope": "stack"})
        done["deploy-present"] = deploy(tmp, "present")
        ids = run(["docker", "ps", "-q", "--no-trunc", "--filter", "label=com.docker.compose.project=%s" % PROJECT]).stdout.split()
        done["containers"] = json.loads(run(["docker", "inspect"] + ids).stdout) if ids else []
        yield done
    finally:
        cleanup(source)


def test_preflight_names_the_missing_network_and_volume(runs):
    rc, result = runs["preflight-missing"]
    assert rc != 0
    assert result["problems"] == [MISSING_NETWORK, MISSING_VOLUME], result["problems"]
    assert result["checks"]["externals"] == {"networks": {NETWORK: "missing"}, "volumes": {VOLUME: "missing"}}


def test_the_deploy_fails_naming_them_before_anything_changes(runs):
    rc, out = runs["deploy-missing"]
    assert rc != 0, out[-3000:]
    assert MISSING_NETWORK in out and MISSING_VOLUME in out, out[-4000:]
    after = runs["after-failed-deploy"]
    assert after == {"containers": [], "network": False, "volume": False, "releases": []}, after


def test_the_host_role_in_check_mode_shows_them_and_creates_nothing(runs):
    rc, stats, tasks = runs["role-check"]
    assert rc == 0, tasks
    result = tasks[CREATE_TASK]
    assert result["changed"] is True
    assert result["networks"] == {NETWORK: "created"} and result["volumes"] == {VOLUME: "created"}
    assert result["commands"] == []
    assert result["diff"]["after"] == {"networks": [NETWORK], "volumes": [VOLUME]}
    assert runs["after-check"] == {"network": False, "volume": False}


def test_the_host_role_creates_them_and_a_second_run_changes_nothing(runs):
    rc, stats, tasks = runs["role-apply"]
    assert rc == 0, tasks
    result = tasks[CREATE_TASK]
    assert result["changed"] is True and result["networks"] == {NETWORK: "created"}, result
    assert result["commands"] == [
        ["docker", "network", "create", "--driver", "bridge", "--label", "vpsops.test=itext", "--", NETWORK],
        ["docker", "volume", "create", "--label", "vpsops.test=itext", "--", VOLUME]]
    assert runs["labels"] == {"network": {"vpsops.test": "itext"}, "volume": {"vpsops.test": "itext"}}
    rc, stats, tasks = runs["role-again"]
    assert rc == 0 and stats["changed"] == 0, [name for name, res in tasks.items() if res.get("changed")]
    assert tasks[CREATE_TASK]["networks"] == {NETWORK: "present"}
    assert tasks[CREATE_TASK]["volumes"] == {VOLUME: "present"}


def test_an_entry_that_differs_from_the_host_fails_naming_it(runs):
    rc, result = runs["differs"]
    assert rc != 0 and result["changed"] is False
    msg = result["msg"]
    assert msg.startswith("network %s exists with internal false, not true: Docker cannot change a network in place"
                          % NETWORK), msg
    assert "docker network rm %s" % NETWORK in msg
    assert "volume %s exists with driver local, not vpsops-none" % VOLUME in msg, msg
    rc, stats, tasks = runs["role-bad-name"]
    assert rc != 0
    msg = tasks["Check the role's paths and names"]["msg"]
    assert "host_networks names must be Docker names" in msg and "-" + NETWORK in msg, msg
    assert CREATE_TASK not in tasks


def test_the_deploy_passes_once_they_exist_on_the_external_network_and_volume(runs):
    rc, result = runs["preflight-present"]
    assert rc == 0 and result["problems"] == [], result
    assert result["checks"]["externals"] == {"networks": {NETWORK: "present"}, "volumes": {VOLUME: "present"}}
    rc, out = runs["deploy-present"]
    assert rc == 0, out[-4000:]
    [container] = runs["containers"]
    assert list(container["NetworkSettings"]["Networks"]) == [NETWORK]
    assert [(m["Type"], m["Name"], m["Destination"]) for m in container["Mounts"]] == [("volume", VOLUME, "/data")]
