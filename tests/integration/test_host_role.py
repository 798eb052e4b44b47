"""The host role (playbooks/host.yml) over SSH against the lab host.

The lab host already has Docker (without systemd), the Compose v2 plugin and psycopg2, so the role
must find them and install nothing: every scenario checks that no apt, systemd or download task
ran. State and backup roots are temporary directories, never the real /var/lib/vpsops.

Each scenario is an inventory host of its own that points at the lab's sshd, with its own
variables, so a whole set of scenarios runs in one ansible-playbook call (three calls in all:
check mode, apply, apply again). Branches the lab cannot reach by itself (no Compose plugin, a
daemon that does not answer) use a stand-in `docker` CLI passed as host_docker_cli: a script that
hides the plugin or fails `docker info`, and otherwise runs the real docker.
"""

import grp
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess

import pytest

from conftest import ROOT, SSH_PORT, ansible_env, run

PLAYBOOK = os.path.join(ROOT, "playbooks", "host.yml")
ANSIBLE_PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
SSH_DIR = os.path.join(ROOT, ".lab", "ssh")
# An apt index refresh is network traffic the tests have no business causing.
NO_APT_REFRESH = 10 * 365 * 86400
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1R5Rk0xYz7n2cUyP9OQ3cDZ0v6l6l0m3YQx7wq9m1a ops@example"


class HostRun:
    """One scenario host's part of a playbook run: its stats and its task results."""

    def __init__(self, stats, tasks, output):
        self.stats = stats
        self.tasks = tasks
        self.output = output

    @property
    def ok(self):
        return self.stats.get("failures", 1) == 0 and self.stats.get("unreachable", 1) == 0

    def changed_tasks(self):
        return [name for name, res in self.tasks if res.get("changed")]

    def task(self, name):
        """The result of the first task whose name is or starts with name."""
        found = [res for task_name, res in self.tasks if task_name.startswith(name)]
        assert found, "no task %r in %s" % (name, [n for n, r in self.tasks])
        return found[0]

    def failure(self):
        failed = [(name, res.get("msg", "")) for name, res in self.tasks if res.get("failed")]
        assert failed, "no task failed: %s" % self.output[-2000:]
        return failed[0]

    def assert_nothing_installed(self, strict=True):
        """No apt, systemd or download task ran (strict) or changed anything."""
        for name, res in self.tasks:
            if res.get("action") in ("ansible.builtin.apt", "ansible.builtin.systemd_service",
                                     "ansible.builtin.get_url"):
                assert res.get("skipped") or (not strict and not res.get("changed")), \
                    "%s ran on the lab host: %r" % (name, res)


def run_hosts(base, hosts, *args):
    """playbooks/host.yml on every scenario host at once; returns {host: HostRun}."""
    inventory = base / ("inventory-%s.json" % secrets.token_hex(4))
    inventory.write_text(json.dumps({"vpsops_hosts": {
        "hosts": hosts,
        "vars": {
            "ansible_host": "127.0.0.1",
            "ansible_port": SSH_PORT,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": os.path.join(SSH_DIR, "id_ed25519"),
            "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
                                       % os.path.join(SSH_DIR, "known_hosts"),
            "ansible_python_interpreter": "/usr/bin/python3",
        }}}))
    env = ansible_env()
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    proc = run([ANSIBLE_PLAYBOOK, "-i", str(inventory), PLAYBOOK] + list(args), check=False, env=env)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("no JSON from ansible-playbook (rc=%d): %s %s"
                             % (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:]))
    runs = {}
    for host in hosts:
        tasks = []
        for task_play in data["plays"]:
            for task in task_play["tasks"]:
                result = task["hosts"].get(host)
                if result is not None:
                    tasks.append((task["task"]["name"].split(" : ", 1)[-1], result))
        runs[host] = HostRun(data["stats"].get(host, {}), tasks, proc.stdout + proc.stderr)
    return runs


def roots(base, name):
    return {"host_state_root": str(base / name / "lib" / "vpsops"),
            "host_backup_root": str(base / name / "backups" / "vpsops")}


def fake_docker(base, name, plugin_dir=None, broken_info=False):
    """A docker CLI that has the Compose plugin only in plugin_dir (none without it) and, with
    broken_info, a daemon that does not answer; everything else goes to the real docker."""
    real = shutil.which("docker")
    assert real, "the lab's docker CLI is not on PATH"
    path = base / name / "bin" / "docker"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["#!/bin/sh", 'if [ "$1" = compose ]; then', "  shift"]
    if plugin_dir:
        lines.append('  if [ -x "%s/docker-compose" ]; then exec "%s/docker-compose" "$@"; fi' % (plugin_dir, plugin_dir))
    lines += ["  echo \"docker: 'compose' is not a docker command.\" >&2", "  exit 1", "fi"]
    if broken_info:
        lines += ['if [ "$1" = info ]; then',
                  '  echo "Cannot connect to the Docker daemon at unix:///nonexistent.sock." >&2',
                  "  exit 1", "fi"]
    lines.append('exec "%s" "$@"' % real)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return str(path)


def compose_binary():
    """The real Compose v2 binary behind the lab's CLI plugin."""
    for base in ("/usr/local/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins", "/usr/lib/docker/cli-plugins",
                 os.path.expanduser("~/.docker/cli-plugins")):
        candidate = os.path.join(base, "docker-compose")
        if os.path.exists(candidate):
            return os.path.realpath(candidate)
    pytest.fail("no Compose v2 plugin on the lab host: run `bin/lab up`")
    return None


def dpkg_installed(package):
    proc = run(["dpkg-query", "-W", "-f", "${Status}", package], check=False)
    return proc.returncode == 0 and "install ok installed" in proc.stdout


BAD_VARIABLES = {
    "bad_docker_source": ({"host_docker_source": "foo"}, ["host_docker_source", "distribution", "docker", "foo"]),
    "bad_wait_seconds": ({"host_docker_wait_seconds": "soon"}, ["host_docker_wait_seconds"]),
    "bad_state_root": ({"host_state_root": "/"}, ["host_state_root", "absolute path"]),
    "bad_backup_root": ({"host_backup_root": "var/backups"}, ["host_backup_root", "absolute path"]),
    "bad_deploy_user": ({"host_deploy_user": "root"}, ["host_deploy_user"]),
}


@pytest.fixture(scope="module")
def scenarios(lab, tmp_path_factory):
    base = tmp_path_factory.mktemp("host-role")
    binary = compose_binary()
    user = "vpsopst" + secrets.token_hex(3)
    had_v1 = dpkg_installed("docker-compose")
    v1 = base / "docker-compose-v1"
    v1.write_text("#!/bin/sh\necho 1.29.2\n")
    v1.chmod(0o755)

    def linked(name):
        return dict(roots(base, name), host_docker_cli=fake_docker(base, name, plugin_dir=str(base / name / "plugins")),
                    host_compose_plugin_path=binary, host_compose_plugin_dir=str(base / name / "plugins"),
                    host_apt_cache_valid_time=NO_APT_REFRESH)

    loose = roots(base, "loose")
    os.makedirs(loose["host_state_root"])
    os.chmod(loose["host_state_root"], 0o755)
    applied = {
        "plain": roots(base, "plain"),
        "loose": loose,
        "linked": linked("linked"),
        "deploy_user": dict(roots(base, "deploy_user"), host_deploy_user=user, host_deploy_user_authorized_keys=[KEY]),
        "v1_binary": dict(roots(base, "v1_binary"), host_docker_cli=fake_docker(base, "v1_binary", str(base / "v1_binary" / "plugins")),
                          host_compose_plugin_path=str(v1), host_compose_plugin_dir=str(base / "v1_binary" / "plugins")),
        "no_package": dict(roots(base, "no_package"), host_docker_cli=fake_docker(base, "no_package"),
                           host_apt_cache_valid_time=NO_APT_REFRESH),
        "no_daemon": dict(roots(base, "no_daemon"),
                          host_docker_cli=fake_docker(base, "no_daemon", os.path.dirname(binary), broken_info=True)),
        "no_import": dict(roots(base, "no_import"), host_python_imports=["psycopg2", "vpsops_no_such_module"],
                          host_python_packages=[]),
    }
    for name, (extra, _words) in BAD_VARIABLES.items():
        applied[name] = dict(roots(base, name), **extra)
    checked = {"check_fresh": roots(base, "check_fresh"), "check_linked": linked("check_linked"),
               # A host without Docker: the role would install docker.io (present here, so apt has
               # nothing to do even for real) and link the Compose binary.
               "check_no_docker": dict(linked("check_no_docker"), host_docker_cli=str(base / "no" / "docker"))}
    try:
        check = run_hosts(base, checked, "--check", "--diff")
        first = run_hosts(base, applied, "--diff")
        second = run_hosts(base, {name: applied[name] for name in ("plain", "linked", "deploy_user")})
        yield {"base": base, "vars": dict(applied, **checked), "check": check, "first": first, "second": second,
               "user": user, "had_v1": had_v1, "binary": binary}
    finally:
        subprocess.run(["userdel", "--remove", user], capture_output=True, check=False)
        subprocess.run(["groupdel", user], capture_output=True, check=False)


def test_applies_with_private_roots_and_installs_nothing(scenarios):
    result = scenarios["first"]["plain"]
    assert result.ok, result.output[-3000:]
    assert result.changed_tasks() == ["Create the state and backup roots"]
    result.assert_nothing_installed()
    for key in ("host_state_root", "host_backup_root"):
        info = os.stat(scenarios["vars"]["plain"][key])
        assert stat.S_ISDIR(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o700, oct(info.st_mode)
        assert info.st_uid == 0 and info.st_gid == 0
    report = result.task("Report what the host runs")["msg"]
    server = run(["docker", "info", "--format", "{{.ServerVersion}}"]).stdout.strip()
    assert server in report and "without systemd" in report, report


def test_second_run_changes_nothing(scenarios):
    for name in ("plain", "linked", "deploy_user"):
        result = scenarios["second"][name]
        assert result.ok, result.output[-3000:]
        assert result.stats["changed"] == 0, (name, result.changed_tasks())
        result.assert_nothing_installed()


def test_a_root_with_a_loose_mode_is_made_private(scenarios):
    result = scenarios["first"]["loose"]
    assert result.ok, result.output[-3000:]
    assert stat.S_IMODE(os.stat(scenarios["vars"]["loose"]["host_state_root"]).st_mode) == 0o700


def test_check_mode_changes_nothing(scenarios):
    fresh = scenarios["check"]["check_fresh"]
    assert fresh.ok, fresh.output[-3000:]
    # It says it would create both roots, and creates neither.
    assert fresh.changed_tasks() == ["Create the state and backup roots"]
    assert [item["changed"] for item in fresh.task("Create the state and backup roots")["results"]] == [True, True]
    fresh.assert_nothing_installed()
    linked = scenarios["check"]["check_linked"]
    assert linked.ok, linked.output[-3000:]
    assert "Link the Compose binary as the docker compose plugin" in linked.changed_tasks()
    linked.assert_nothing_installed()
    no_docker = scenarios["check"]["check_no_docker"]
    assert no_docker.ok, no_docker.output[-3000:]
    install = no_docker.task("Install Docker Engine from")
    assert install["action"] == "ansible.builtin.apt" and not install.get("skipped") and not install["changed"]
    assert "Link the Compose binary as the docker compose plugin" in no_docker.changed_tasks()
    assert "Docker CLI (to be installed)" in no_docker.task("Report what the host runs")["msg"]
    for name in ("check_fresh", "check_linked", "check_no_docker"):
        assert not os.path.exists(os.path.join(scenarios["base"], name, "lib"))
        assert not os.path.exists(os.path.join(scenarios["base"], name, "backups"))
    assert not os.path.exists(os.path.join(scenarios["base"], "check_linked", "plugins"))
    assert not os.path.exists(os.path.join(scenarios["base"], "check_no_docker", "plugins"))


@pytest.mark.parametrize("name", sorted(BAD_VARIABLES))
def test_a_bad_variable_fails_naming_it_before_anything_changes(scenarios, name):
    result = scenarios["first"][name]
    assert not result.ok
    task, msg = result.failure()
    for word in BAD_VARIABLES[name][1]:
        assert word in msg, (task, msg)
    assert result.stats["changed"] == 0
    assert not os.path.exists(os.path.join(scenarios["base"], name, "lib"))


def test_compose_plugin_linked_from_host_compose_plugin_path(scenarios):
    result = scenarios["first"]["linked"]
    assert result.ok, result.output[-3000:]
    result.assert_nothing_installed(strict=False)
    link = scenarios["base"] / "linked" / "plugins" / "docker-compose"
    assert link.is_symlink() and os.readlink(link) == scenarios["binary"]
    docker = scenarios["vars"]["linked"]["host_docker_cli"]
    assert run([docker, "compose", "version", "--short"]).stdout.strip().lstrip("v").startswith("2.")
    assert result.task("Keep the Compose version")["ansible_facts"]["__host_compose_version"].startswith("2.")


def test_a_compose_v1_binary_is_refused(scenarios):
    result = scenarios["first"]["v1_binary"]
    assert not result.ok
    task, msg = result.failure()
    assert "host_compose_plugin_path" in msg and "1.29.2" in msg and "v2" in msg, msg
    assert not (scenarios["base"] / "v1_binary" / "plugins").exists()
    assert not (scenarios["base"] / "v1_binary" / "lib").exists()


def test_no_compose_v2_package_fails_naming_host_compose_plugin_path(scenarios):
    """Debian 12's apt offers only the v1 docker-compose: the role refuses it and installs nothing."""
    result = scenarios["first"]["no_package"]
    assert not result.ok
    task, msg = result.failure()
    assert "host_compose_plugin_path" in msg and "docker-compose-v2" in msg, msg
    assert dpkg_installed("docker-compose") == scenarios["had_v1"]
    result.assert_nothing_installed(strict=False)
    assert not [res for name, res in result.tasks if name == "Install the Compose package" and not res.get("skipped")]
    assert not (scenarios["base"] / "no_package" / "lib").exists()


def test_a_daemon_that_does_not_answer_without_systemd_fails_clearly(scenarios):
    result = scenarios["first"]["no_daemon"]
    assert not result.ok
    task, msg = result.failure()
    assert "does not answer" in msg and "no systemd" in msg and "nonexistent.sock" in msg, msg
    result.assert_nothing_installed()


def test_a_python_library_that_does_not_import_fails_clearly(scenarios):
    result = scenarios["first"]["no_import"]
    assert not result.ok
    task, msg = result.failure()
    assert "vpsops_no_such_module" in msg and "psycopg2," not in msg and "host_python_packages" in msg, msg
    result.assert_nothing_installed()


def test_deploy_user_in_the_docker_group(scenarios):
    result = scenarios["first"]["deploy_user"]
    assert result.ok, result.output[-3000:]
    user = pwd.getpwnam(scenarios["user"])
    assert user.pw_uid != 0
    assert scenarios["user"] in grp.getgrnam("docker").gr_mem
    with open(os.path.join(user.pw_dir, ".ssh", "authorized_keys")) as handle:
        assert KEY in handle.read()
