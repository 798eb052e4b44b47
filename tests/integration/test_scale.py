"""The deploy playbook on a platform of 50 services in 9 phases (bench/scale_stack.py), over SSH to the lab host.

One deploy of the whole platform, then the same deploy again: everything runs the image its release
pinned, the release is live with its 9 phases, and the second run changes nothing. The platform is
busybox httpd services (healthcheck every 4 s), two PostgreSQL and one NATS, published only on
127.0.0.1:29750-29758. VPSOPS_SCALE_SERVICES sets another size (9 to 53).
"""

import json
import os
import secrets
import sys

import pytest

from conftest import ROOT, ansible_env, ansible_module, compose_down, container_names, http_json, remove_pin_tags, run

sys.path.insert(0, os.path.join(ROOT, "bench"))
import scale_stack  # noqa: E402 pylint: disable=wrong-import-position

PLAYBOOK = os.path.join(ROOT, "playbooks", "deploy.yml")
INVENTORY = os.path.join(ROOT, "inventories", "lab")
STACK = "benchscale-it"
PORT_BASE = 29750
SERVICES = int(os.environ.get("VPSOPS_SCALE_SERVICES", "50"))


class Platform:
    def __init__(self, tmp_path):
        self.source = str(tmp_path / "src")
        self.state_dir = str(tmp_path / "state")
        self.tmp_path = tmp_path
        self.phases, self.published = scale_stack.write(self.source, SERVICES, PORT_BASE, interval=4)
        self.files = [f for phase in self.phases for f in phase["compose_files"]]
        self.password = "scale-" + secrets.token_hex(8)

    def deploy(self):
        """ansible-playbook deploy.yml with the json callback: (rc, tasks of lab1, stats of lab1, output)."""
        extra = {
            "vpsops_stack": {"name": STACK, "source": self.source, "env": {"SCALE_DB_PASSWORD": self.password},
                             "phases": self.phases},
            "deploy_phase_timeout": 300,
            "deploy_phase_state_dir": self.state_dir,
            "deploy_phase_project_dir": os.path.join(self.state_dir, "project"),
            "lock_state_dir": self.state_dir,
            "rollback_state_dir": self.state_dir,
            "vpsops_audit_log": str(self.tmp_path / "audit.jsonl"),
        }
        vars_file = self.tmp_path / ("vars-%s.json" % secrets.token_hex(4))
        vars_file.write_text(json.dumps(extra))
        env = ansible_env()
        env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
        env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
        proc = run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", INVENTORY, PLAYBOOK,
                    "-e", "@%s" % vars_file], check=False, env=env, timeout=1200)
        try:
            data = json.loads(proc.stdout[proc.stdout.find("{"):])
        except ValueError:
            raise AssertionError("no JSON from ansible-playbook (rc=%d): %s %s"
                                 % (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
        tasks = [dict(task["hosts"]["lab1"], task_name=task["task"]["name"])
                 for play in data["plays"] for task in play["tasks"] if "lab1" in task["hosts"]]
        return proc.returncode, tasks, data["stats"].get("lab1", {}), proc.stdout

    def down(self):
        if os.path.isdir(self.source):
            argv = ["docker", "compose", "-p", STACK]
            for name in self.files:
                argv += ["-f", os.path.join(self.source, name)]
            compose_down(argv, env=dict(os.environ, SCALE_DB_PASSWORD=self.password), cwd=self.source)
        remove_pin_tags(STACK)


@pytest.fixture
def platform(lab, tmp_path):
    plat = Platform(tmp_path)
    plat.down()
    yield plat
    plat.down()
    assert container_names(STACK) == []


def phase_steps(tasks):
    """The result of each phase of the deploy (the items of its phase loop), in order."""
    found = []
    for task in tasks:
        if "Bring up the services of the phase" in task["task_name"] and not task.get("skipped"):
            found.extend(task.get("results") or [task])
    return found


def containers(project):
    """{container name: (service, running, health, image id)} of a compose project."""
    names = container_names(project)
    fmt = ('{{.Name}} {{index .Config.Labels "com.docker.compose.service"}} {{.State.Running}} '
           '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.Image}}')
    out = run(["docker", "inspect", "--format", fmt] + names).stdout if names else ""
    result = {}
    for line in out.splitlines():
        name, service, running, health, image = line.split()
        result[name.lstrip("/")] = (service, running == "true", health, image)
    return result


def test_fifty_services_in_nine_phases_deploy_and_redeploy_without_change(platform):
    expected = dict((name, phase) for phase, names in scale_stack.phases(SERVICES) for name in names)
    assert len(expected) == SERVICES and len(platform.phases) == 9

    rc, tasks, stats, out = platform.deploy()
    failed = [t for t in tasks if t.get("failed")]
    assert rc == 0 and not failed, (failed[-1:] or out[-3000:])
    ups = phase_steps(tasks)
    assert len(ups) == 9 and all(t["changed"] for t in ups)
    assert platform.password not in out

    # The release is live, holds the 9 phases and pins every service.
    rc, info = ansible_module("compose_release_info", {"stack": STACK, "state_dir": platform.state_dir})
    assert rc == 0, info
    assert info["live"] is not None and info["lock"] is None
    assert [r["status"] for r in info["releases"]] == ["live"]
    live = info["releases"][0]
    assert live["id"] == info["live"] and sorted(live["services"]) == sorted(expected)
    with open(os.path.join(platform.state_dir, "releases", info["live"], "manifest.json")) as handle:
        manifest = json.load(handle)
    assert [p["name"] for p in manifest["phases"]] == [shape[0] for shape in scale_stack.SHAPE]

    # Every container of every service runs the image its release pinned, and the pin tag names
    # that image. (Health was the deploy's gate; read now it would depend on the machine's load.)
    running = containers(STACK)
    assert sorted(entry[0] for entry in running.values()) == sorted(expected)
    for name, (service, is_running, _health, image) in running.items():
        assert is_running, name
        assert image == live["services"][service]["image_id"], name
        pinned = run(["docker", "image", "inspect", "--format", "{{.Id}}", live["services"][service]["ref"]]).stdout
        assert pinned.strip() == image, name
    for name, port in platform.published.items():
        assert http_json("http://127.0.0.1:%d/healthz" % port)[1] == {"service": name, "status": "ok"}

    # The same deploy again: no compose up changes anything, no container moves, no new release.
    before = dict((name, c[3]) for name, c in running.items())
    ids = run(["docker", "inspect", "--format", "{{.Name}} {{.Id}}"] + sorted(running)).stdout
    rc, tasks, stats, out = platform.deploy()
    assert rc == 0, out[-3000:]
    ups = phase_steps(tasks)
    assert len(ups) == 9
    assert [t["changed"] for t in ups] == [False] * 9, [(t.get("phase"), t.get("actions")) for t in ups if t["changed"]]
    # Planned unchanged by begin: no backup, no up, not even a module run for the phase.
    assert all(t.get("unchanged") for t in ups), ups
    assert stats.get("changed") == 0, [t["task_name"] for t in tasks if t.get("changed")]
    assert run(["docker", "inspect", "--format", "{{.Name}} {{.Id}}"] + sorted(running)).stdout == ids
    assert dict((name, c[3]) for name, c in containers(STACK).items()) == before
    rc, again = ansible_module("compose_release_info", {"stack": STACK, "state_dir": platform.state_dir})
    assert rc == 0 and again["live"] == info["live"] and len(again["releases"]) == 1, again
