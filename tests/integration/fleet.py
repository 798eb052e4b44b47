"""A fleet of lab hosts and a tiny stack for it, for the tests that deploy to many hosts at once
(test_fleet_drill.py: 20 hosts in waves; test_awx_slices.py: two AWX slices at once).

Each lab host (`bin/lab host add`) is a host of its own: network namespace, sshd, Docker daemon,
/var/lib/vpsops. The same inventory group and the same `vpsops_stack` deploy to every one of them.
The tiny stack is two busybox httpd services (the static busybox of the lab's NATS image), no
healthcheck and `init: true`, so that twenty hosts at rest cost nothing and stop at once. Each
release runs an image of its own, `vpsops-test/fleet:<release>` (the NATS image with a label, built
here once and given to the hosts with VPSOPS_LAB_HOST_IMAGES), as releases do: `web` on 127.0.0.1:8080 and `api` on 127.0.0.1:8081 of each host, each answering
/health with {"status": "ok", "release": <FLEET_RELEASE>}. A release whose FLEET_EXIT is set exits
at start with that code: its phase fails at once (the container exited), which is how a host's
release fails here.

What a host runs and holds is read from this machine, without SSH: its stack's state directory
(/var/lib/vpsops-lab/hosts/NAME/vpsops/STACK) and its HTTP answers (`ip netns exec`)."""

import json
import os
import subprocess

from conftest import ROOT, VENV_BIN, ansible_env, load_lab_module, run

LAB = os.path.join(ROOT, "bin", "lab")
KEY_DIR = os.path.join(ROOT, ".lab", "ssh")
PORTS = {"web": 8080, "api": 8081}

COMPOSE = """\
# Two tiny services per host (see tests/integration/fleet.py).
x-httpd: &httpd
  image: vpsops-test/fleet:${FLEET_RELEASE:?FLEET_RELEASE must be set}
  init: true
  environment:
    FLEET_RELEASE: ${FLEET_RELEASE:?FLEET_RELEASE must be set}
    FLEET_EXIT: ${FLEET_EXIT:-}
  labels:
    vpsops.test: fleet
services:
%s"""
SERVICE = """\
  %(name)s:
    <<: *httpd
    entrypoint:
      - /bin/busybox
      - sh
      - -c
      - |
        if [ -n "$$FLEET_EXIT" ]; then echo "release $$FLEET_RELEASE refuses to start" >&2; exit "$$FLEET_EXIT"; fi
        /bin/busybox mkdir -p /www
        echo "{\\"status\\": \\"ok\\", \\"service\\": \\"%(name)s\\", \\"release\\": \\"$$FLEET_RELEASE\\"}" > /www/health
        exec /bin/busybox httpd -f -p %(port)d -h /www
    ports: ["127.0.0.1:%(port)d:%(port)d"]
"""


IMAGE = "vpsops-test/fleet"


def release_images(releases):
    """The image of each release in the lab's daemon (built when missing): its references."""
    refs = []
    for release in releases:
        ref = "%s:%s" % (IMAGE, release)
        if run(["docker", "image", "inspect", ref], check=False).returncode != 0:
            dockerfile = "FROM vpsops-lab/nats:2.15\nLABEL vpsops.test.fleet.release=%s\n" % release
            proc = subprocess.run(["docker", "build", "-q", "-t", ref, "-"], input=dockerfile, capture_output=True,
                                  text=True, timeout=300, check=False)
            assert proc.returncode == 0, "docker build of %s failed: %s" % (ref, proc.stderr[-2000:])
        refs.append(ref)
    return refs


def tiny_source(directory):
    """The tiny stack's compose file in directory (its `source`)."""
    os.makedirs(directory, exist_ok=True)
    text = COMPOSE % "".join(SERVICE % {"name": name, "port": port} for name, port in PORTS.items())
    with open(os.path.join(directory, "docker-compose.fleet.yml"), "w") as handle:
        handle.write(text)
    return directory


def tiny_stack(name, source, release, fail=None):
    """vpsops_stack of the tiny stack at a release; fail: the exit code its services start with."""
    env = {"FLEET_RELEASE": release}
    if fail:
        env["FLEET_EXIT"] = str(fail)
    return {"name": name, "source": source, "env": env,
            "phases": [{"name": "app", "compose_files": ["docker-compose.fleet.yml"],
                        "checks": [{"name": service, "type": "http", "url": "http://127.0.0.1:%d/health" % port,
                                    "json": {"status": "ok", "release": release}}
                                   for service, port in PORTS.items()]}]}


class LabFleet:
    """Lab hosts made for a test and removed by it."""

    def __init__(self, names, tmp, releases=("v1", "v2", "v3")):
        self.names = list(names)
        self.tmp = str(tmp)
        self.releases = list(releases)
        self.hosts = {}

    def add(self):
        images = ",".join(release_images(self.releases))
        run([LAB, "host", "add"] + self.names, timeout=900, env=dict(os.environ, VPSOPS_LAB_HOST_IMAGES=images))
        listed = dict((h["name"], h) for h in json.loads(run([LAB, "host", "list"]).stdout))
        self.hosts = dict((name, listed[name]) for name in self.names)
        return self

    def remove(self):
        present = [h["name"] for h in json.loads(run([LAB, "host", "list"], check=False).stdout or "[]")
                   if h["name"] in self.names]
        if present:
            run([LAB, "host", "del"] + present, check=False, timeout=900)

    def inventory(self, label, stacks, **group_vars):
        """An inventory of the hosts (group vpsops_hosts) with each host's vpsops_stack; JSON is YAML."""
        common = {"ansible_user": "root", "ansible_python_interpreter": "/usr/bin/python3",
                  "ansible_ssh_private_key_file": os.path.join(KEY_DIR, "id_ed25519"),
                  "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes "
                                             "-o IdentitiesOnly=yes" % os.path.join(KEY_DIR, "known_hosts"),
                  "deploy_phase_timeout": 120}
        common.update(group_vars)
        hosts = dict((name, {"ansible_host": self.hosts[name]["address"], "vpsops_stack": stacks[name]})
                     for name in self.names if name in stacks)
        inventory = {"vpsops_hosts": {"hosts": hosts, "vars": common}}
        path = os.path.join(self.tmp, "inventory-%s.json" % label)
        with open(path, "w") as handle:
            json.dump(inventory, handle)
        return path, inventory

    def playbook(self, playbook, inventory, audit_log, *args, extra=None, env=None):
        """ansible-playbook over the inventory; the finished process."""
        environ = ansible_env()
        environ["VPSOPS_AUDIT_LOG"] = audit_log
        environ.update(env or {})
        argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory,
                os.path.join(ROOT, "playbooks", playbook)] + list(args)
        if extra:
            vars_file = os.path.join(self.tmp, "vars-%d.json" % len(os.listdir(self.tmp)))
            with open(vars_file, "w") as handle:
                json.dump(extra, handle)
            argv += ["-e", "@" + vars_file]
        return run(argv, check=False, env=environ, timeout=1800)

    def state_dir(self, name, stack):
        return os.path.join(load_lab_module().host_dir(name), "vpsops", stack)

    def store(self, name, stack):
        """What the host's release store holds: live release, releases by status and their tags, lock."""
        state = self.state_dir(name, stack)
        current = os.path.join(state, "current")
        live = os.path.basename(os.readlink(current)) if os.path.islink(current) else None
        releases = {}
        for release in sorted(os.listdir(os.path.join(state, "releases"))):
            with open(os.path.join(state, "releases", release, "manifest.json")) as handle:
                manifest = json.load(handle)
            releases[release] = manifest.get("status")
        lock = os.path.join(state, "lock.json")
        return {"live": live, "releases": releases, "lock": os.path.exists(lock)}

    def history(self, name, stack):
        with open(os.path.join(self.state_dir(name, stack), "history.jsonl")) as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def containers(self, name, stack):
        """{container name: container id} of the stack in the host's own Docker daemon."""
        out = run(["docker", "-H", self.hosts[name]["docker_host"], "ps", "-a", "--no-trunc", "--filter",
                   "label=com.docker.compose.project=%s" % stack, "--format", "{{.Names}} {{.ID}}"]).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def serving(self, name):
        """{service: the release it answers} inside the host (None when it does not answer)."""
        found = {}
        for service, port in PORTS.items():
            proc = run(["ip", "netns", "exec", self.hosts[name]["netns"], "curl", "-sf", "--max-time", "5",
                        "http://127.0.0.1:%d/health" % port], check=False)
            try:
                found[service] = json.loads(proc.stdout).get("release")
            except ValueError:
                found[service] = None
        return found


def audit_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def outcomes(path):
    """{host: (event, result)} of the deploy's outcome lines in an audit log."""
    return dict((e["host"], (e["event"], e["data"].get("result"))) for e in audit_lines(path)
                if e["event"].startswith("deploy_") and e["event"] != "deploy_started")
