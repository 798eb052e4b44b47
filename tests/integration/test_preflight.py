"""compose_preflight and the preflight role, run by Ansible over SSH against the lab host, on compose
files each test writes into its own directory (projects vpsops-pf-*, host ports 32000-32999)."""

import json
import os
import secrets
import socket

import pytest

from conftest import ROOT, ansible_env, ansible_module, container_names, run

INVENTORY = os.path.join(ROOT, "inventories", "lab")
ANSIBLE_PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
IMAGE = "vpsops-lab/nats:2.15"  # built by the lab, starts in a blink, stops on SIGTERM


def nats_service(port, image=IMAGE, extra=""):
    return ("    image: %s\n    command: [\"-p\", \"4222\"]\n    ports: [\"127.0.0.1:%d:4222\"]\n%s"
            % (image, port, extra))


def write_stack(directory, services, env=None, name="compose.yml"):
    """A compose file with the given services ({name: body}) and, when env is given, a .env as the
    deploy writes it (KEY='value', mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = "services:\n" + "".join("  %s:\n%s" % (svc, body) for svc, body in services.items())
    (directory / name).write_text(text)
    if env is not None:
        env_file = directory / ".env"
        env_file.write_text("".join("%s='%s'\n" % item for item in env.items()))
        env_file.chmod(0o600)
    return directory


def preflight(directory, project="vpsops-pf-test", *options, raw=False, **args):
    values = {"project": project, "project_dir": str(directory), "files": ["compose.yml"]}
    values.update(args)
    values = dict((k, v) for k, v in values.items() if v is not None)
    return ansible_module("compose_preflight", values, *options, raw=raw)


def test_a_clean_stack_passes_in_check_mode_too(lab, tmp_path):
    secret = "pf-" + secrets.token_hex(12)
    write_stack(tmp_path, {"bus": nats_service(32001, extra="    environment:\n      TOKEN: ${PF_TOKEN}\n")},
                env={"PF_TOKEN": secret})
    for options in ((), ("--check",)):
        rc, result = preflight(tmp_path, "vpsops-pf-clean", *options, required_env=["PF_TOKEN"],
                               env_files=[".env"])
        assert rc == 0, result
        assert result["problems"] == [] and result["changed"] is False
        assert result["services"] == ["bus"]
        checks = result["checks"]
        assert checks["images"] == {"bus": IMAGE}
        assert checks["ports"] == {"32001": "free"}
        assert set(checks["disk"]) == {"/var/lib/docker", "/var/lib/vpsops"}
        assert all(free > 0 for free in checks["disk"].values())
        assert checks["memory_mb"] > 0 and checks["cores"] >= 1
        assert secret not in json.dumps(result)


def test_latest_and_untagged_images_are_named_unless_pinned_by_digest(lab, tmp_path):
    digest = "vpsops-lab/nats@sha256:" + "0" * 64
    write_stack(tmp_path, {"tagged-latest": nats_service(32011, image="vpsops-lab/nats:latest"),
                           "untagged": nats_service(32012, image="vpsops-lab/nats"),
                           "by-digest": nats_service(32013, image=digest),
                           "pinned": nats_service(32014)})
    rc, result = preflight(tmp_path)
    assert rc != 0
    assert len(result["problems"]) == 2, result["problems"]
    assert "service tagged-latest uses image vpsops-lab/nats:latest with tag latest" in result["msg"]
    assert "service untagged uses image vpsops-lab/nats with no tag" in result["msg"]
    assert "by-digest" not in result["msg"] and "service pinned" not in result["msg"]
    assert result["checks"]["images"]["by-digest"] == digest

    rc, result = preflight(tmp_path, allow_latest=True)
    assert rc == 0 and result["problems"] == [], result


def test_unset_variables_are_named_and_values_never_leave_the_host(lab, tmp_path):
    secret = "pf-" + secrets.token_hex(12)
    write_stack(tmp_path, {"bus": nats_service(32021, extra=(
        "    environment:\n      TOKEN: ${PF_SECRET}\n      HOST: ${PF_UNSET_HOST}\n      EMPTY: ${PF_EMPTY}\n"))},
        env={"PF_SECRET": secret, "PF_EMPTY": ""})
    rc, result, proc = preflight(tmp_path, "vpsops-pf-test", "-vvv", raw=True,
                                 required_env=["PF_SECRET", "PF_EMPTY", "PF_MISSING"])
    assert rc != 0
    problems = result["problems"]
    assert len(problems) == 3, problems
    assert problems[0].startswith("variable PF_EMPTY is required but is empty (in %s/.env)" % tmp_path)
    assert problems[1].startswith("variable PF_MISSING is required but is set neither in %s/.env" % tmp_path)
    assert problems[2].startswith("variable PF_UNSET_HOST is used by the compose files but is not set")
    for text in (json.dumps(result), proc.stdout, proc.stderr):
        assert secret not in text


@pytest.mark.parametrize("field, quoted", [
    ("    ports: [\"${PF_SECRET}:4222\"]\n", "invalid hostPort: <value of PF_SECRET>"),
    ("    cpus: ${PF_SECRET}\n", 'parsing "<value of PF_SECRET>": invalid syntax'),
    ("    mem_limit: ${PF_SECRET}\n", 'parsing "<part of the value of PF_SECRET>": invalid syntax'),
])
def test_compose_errors_that_quote_a_value_are_redacted(lab, tmp_path, field, quoted):
    # The value is shaped so that compose quotes it, or a part of it, in its error.
    secret = "7%st" % secrets.token_hex(8)
    write_stack(tmp_path, {"bus": "    image: %s\n%s" % (IMAGE, field)}, env={"PF_SECRET": secret})
    rc, result, proc = preflight(tmp_path, "vpsops-pf-test", "-vvv", raw=True)
    assert rc != 0
    assert quoted in result["msg"], result["msg"]
    for text in (proc.stdout, proc.stderr):
        assert secret not in text and secret[:-1] not in text


@pytest.mark.parametrize("compose_text, message", [
    ("services:\n  bus:\n   image: x\n  - nope\n", "yaml: line"),
    ("services:\n  bus:\n    image: vpsops-lab/nats:2.15\n    colour: blue\n", "additional properties 'colour' not allowed"),
    ("services:\n  bus:\n    image: x:1\n    environment:\n      A: ${PF_NEEDED:?PF_NEEDED must be set}\n",
     "required variable PF_NEEDED is missing a value: PF_NEEDED must be set"),
    (None, "compose.yml does not exist (files)"),
])
def test_an_invalid_compose_file_fails_with_composes_message(lab, tmp_path, compose_text, message):
    if compose_text is not None:
        (tmp_path / "compose.yml").write_text(compose_text)
    rc, result = preflight(tmp_path)
    assert rc != 0
    assert message in result["msg"], result["msg"]
    assert result["services"] == []


@pytest.fixture
def own_stack(lab, tmp_path):
    """Project vpsops-pf-own running one container that publishes 127.0.0.1:32101."""
    directory = write_stack(tmp_path / "own", {"bus": nats_service(32101)})
    compose = ["docker", "compose", "-p", "vpsops-pf-own", "--project-directory", str(directory),
               "-f", str(directory / "compose.yml")]
    run(compose + ["down", "-v", "-t", "2"], check=False)
    try:
        run(compose + ["up", "-d", "--pull", "never"])
        assert container_names("vpsops-pf-own") == ["vpsops-pf-own-bus-1"]
        yield directory
    finally:
        run(compose + ["down", "-v", "-t", "2"], check=False)


def test_ports_held_by_others_are_named_and_the_projects_own_container_is_fine(own_stack):
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 32102))
        holder.listen(1)
        # The stack of own_stack plus a service on the port this test holds.
        services = {"bus": nats_service(32101), "api": nats_service(32102), "free": nats_service(32103)}
        write_stack(own_stack, services)

        rc, result = preflight(own_stack, "vpsops-pf-own")
        assert rc != 0
        assert result["checks"]["ports"]["32101"] == "this project (container vpsops-pf-own-bus-1)"
        assert result["checks"]["ports"]["32103"] == "free"
        owner = result["checks"]["ports"]["32102"]
        assert owner.startswith("process ") and owner.endswith("(pid %d)" % os.getpid()), owner
        assert result["problems"] == [
            "port 32102/tcp (127.0.0.1) of service api is already in use by %s, not by a container of project "
            "vpsops-pf-own: free it or publish another port." % owner]

        # The same files as another project: the running container is someone else's now.
        rc, result = preflight(own_stack, "vpsops-pf-other")
        assert rc != 0
        assert "port 32101/tcp (127.0.0.1) of service bus is already in use by container vpsops-pf-own-bus-1 " \
               "(project vpsops-pf-own)" in result["msg"]

        rc, result = preflight(own_stack, "vpsops-pf-own", check_ports=False)
        assert rc == 0 and result["checks"]["ports"] == {}, result
    finally:
        holder.close()
    rc, result = preflight(own_stack, "vpsops-pf-own")
    assert rc == 0, result


def test_a_port_published_twice_by_the_stack_is_named(lab, tmp_path):
    write_stack(tmp_path, {"a": nats_service(32111), "b": nats_service(32111)})
    rc, result = preflight(tmp_path)
    assert rc != 0
    assert "port 32111/tcp is published by both service a and service b" in result["msg"]


def test_host_minimums_name_the_path_memory_and_cores(lab, tmp_path):
    write_stack(tmp_path, {"bus": nats_service(32031)})
    not_yet = str(tmp_path / "not" / "yet")
    rc, result = preflight(tmp_path, min_disk_free_mb=10 ** 9, disk_paths=[not_yet])
    assert rc != 0
    assert result["problems"] == [
        "disk: %s (measured on %s, the nearest existing directory) has %d MB free, at least 1000000000 MB "
        "(min_disk_free_mb) are needed." % (not_yet, tmp_path, result["checks"]["disk"][not_yet])]

    rc, result = ansible_module("compose_preflight", {"scope": "host", "min_disk_free_mb": 10 ** 9,
                                                      "min_memory_mb": 10 ** 9, "min_cores": 4096})
    assert rc != 0
    assert result["msg"].startswith("preflight of the host found 4 problems: ")
    for part in ("disk: /var/lib/docker has", "disk: /var/lib/vpsops", "(min_memory_mb)", "(min_cores)"):
        assert part in result["msg"]
    assert result["services"] == [] and result["checks"]["images"] == {}

    rc, result = ansible_module("compose_preflight", {"scope": "host"})
    assert rc == 0 and result["problems"] == [], result


@pytest.mark.parametrize("args, message", [
    ({"min_disk_free_mb": "lots"}, "min_disk_free_mb"),
    ({"check_ports": "perhaps"}, "check_ports"),
    ({"files": "compose.yml", "min_cores": -1}, "min_cores must be 0 or more"),
    ({"project": "Not A Project"}, "project must be a compose project name"),
    ({"project": None}, "needs project"),
    ({"required_env": ["1BAD"]}, "required_env must hold variable names"),
])
def test_bad_options_fail_naming_the_option(lab, tmp_path, args, message):
    write_stack(tmp_path, {"bus": nats_service(32041)})
    rc, result = preflight(tmp_path, **args)
    assert rc != 0
    assert message in result["msg"], result["msg"]


# The role ----------------------------------------------------------------------------------------

PLAY = """
- name: Preflight of a stack whose files are on the host
  hosts: lab1
  gather_facts: false
  tasks:
    - name: Check the host
      ansible.builtin.include_role:
        name: vpsops.deploy.preflight
    - name: Check the stack
      ansible.builtin.include_role:
        name: vpsops.deploy.preflight
        tasks_from: stack
    - name: Show what was checked
      ansible.builtin.debug:
        var: preflight_stack_result
"""


def role_playbook(tmp_path, extra_vars, *options, as_json=False):
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(extra_vars))
    env = ansible_env()
    if as_json:
        env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
        env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    return run([ANSIBLE_PLAYBOOK, "-i", INVENTORY, str(play), "-e", "@%s" % vars_file] + list(options),
               check=False, env=env)


def shown_result(proc):
    """preflight_stack_result as the play's last task showed it (JSON callback)."""
    tasks = json.loads(proc.stdout)["plays"][0]["tasks"]
    return [t for t in tasks if t["task"]["name"] == "Show what was checked"][0]["hosts"]["lab1"]["preflight_stack_result"]


def test_role_checks_a_stack_on_the_host_from_its_phases(lab, tmp_path):
    secret = "pf-" + secrets.token_hex(12)
    project_dir = tmp_path / "project"
    write_stack(project_dir, {"bus": nats_service(32051, extra="    environment:\n      TOKEN: ${PF_TOKEN}\n")},
                name="one.yml", env={"PF_TOKEN": secret})
    write_stack(project_dir, {"web": nats_service(32052, image="vpsops-lab/nats:latest")}, name="two.yml")
    stack = {"name": "vpsops-pf-role", "source": "unused", "env": {"PF_TOKEN": secret},
             "phases": [{"name": "one", "compose_files": ["one.yml"]},
                        {"name": "two", "compose_files": ["two.yml", "one.yml"]}]}
    base = {"vpsops_stack": stack, "preflight_project_dir": str(project_dir)}

    failed = role_playbook(tmp_path, base, "-vvv")
    assert failed.returncode != 0
    assert "service web uses image vpsops-lab/nats:latest with tag latest" in failed.stdout
    assert secret not in failed.stdout and secret not in failed.stderr

    passed = role_playbook(tmp_path, dict(base, preflight_allow_latest=True), "--check", as_json=True)
    assert passed.returncode == 0, passed.stdout[-3000:]
    result = shown_result(passed)
    assert result["services"] == ["bus", "web"]  # both files, each once
    assert result["checks"]["ports"] == {"32051": "free", "32052": "free"}
    assert result["problems"] == [] and secret not in passed.stdout

    # A required variable the env file lacks (the keys of vpsops_stack.env by default).
    (project_dir / ".env").write_text("PF_TOKEN=''\n")
    empty = role_playbook(tmp_path, dict(base, preflight_allow_latest=True))
    assert empty.returncode != 0
    assert "variable PF_TOKEN is required but is empty" in empty.stdout


def test_role_main_fails_naming_the_host_minimum(lab, tmp_path):
    project_dir = write_stack(tmp_path / "project", {"bus": nats_service(32061)}, env={})
    stack = {"name": "vpsops-pf-role", "phases": [{"name": "one", "compose_files": ["compose.yml"]}]}
    result = role_playbook(tmp_path, {"vpsops_stack": stack, "preflight_project_dir": str(project_dir),
                                      "preflight_min_cores": 4096})
    assert result.returncode != 0
    assert "cpu: " in result.stdout and "at least 4096 (min_cores)" in result.stdout
    assert "Check the host's free disk, available memory and CPU cores" in result.stdout
