"""Fixtures for the integration tests: the real lab (Docker, Compose, PostgreSQL, NATS, SSH).

`bin/lab up` must have run (bin/lab test does it). Every stack a test starts uses its own compose
project and its own loopback ports, and is removed by the test (down -v).
"""

import functools
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STACK_DIR = os.path.join(ROOT, "lab", "stack")
PHASE_FILES = ["docker-compose.infrastructure.yml", "docker-compose.platform.yml", "docker-compose.modules.yml"]
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
SSH_PORT = int(os.environ.get("VPSOPS_LAB_SSH_PORT", "2222"))

# `bin/lab test` runs pytest on two workers (pytest-xdist): each integration test module runs whole
# on one worker, so its module fixtures (stacks on fixed ports and project names) exist once.
# Modules that share something beyond their own stacks run as one group, on one worker, one after
# the other: the session's `stack` (project vpsops-it: test_lab, test_probes_real,
# test_deploy_playbook), the lab's namespace hosts, whose list `bin/lab host add/del` rewrites
# (test_lab, test_deploy_flow), and image builds against `docker image prune` (test_lab,
# test_probes_real, test_releases). Unit tests go one by one to whichever worker is free.
SHARED = "lab-shared"
GROUPS = {"test_lab": SHARED, "test_probes_real": SHARED, "test_deploy_playbook": SHARED,
          "test_deploy_flow": SHARED, "test_releases": SHARED}


def scope_of(nodeid):
    """The unit of scheduling of a test: its module or group for integration tests, else itself."""
    path = nodeid.split("::", 1)[0]
    if not path.startswith("tests/integration/"):
        return nodeid
    name = os.path.splitext(os.path.basename(path))[0]
    return GROUPS.get(name, path)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    # A scheduler of our own: pytest-xdist's `loadgroup` marks do not reach pytest 9's node ids.
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return scope_of(nodeid)

    return ModuleGroups(config, log)


@functools.lru_cache(maxsize=None)
def load_lab_module():
    """lab/lab.py as a module (it is a script, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vpsops_lab", os.path.join(ROOT, "lab", "lab.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def process_running(pid):
    """True while the process runs; an exited one its parent has not reaped yet counts as stopped."""
    return load_lab_module().process_running(pid)


def run(argv, check=True, env=None, timeout=600, cwd=ROOT):
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("command failed (rc=%d): %s\nstdout: %s\nstderr: %s"
                             % (proc.returncode, " ".join(argv), proc.stdout[-3000:], proc.stderr[-3000:]))
    return proc


def compose_down(argv, env=None, cwd=ROOT, parallel=4, timeout=300):
    """`ARGV down -v --remove-orphans -t 3` for a compose command line, `parallel` containers at a time.

    The lab's Docker (Debian's docker.io 20.10.24) can deadlock in libnetwork when many containers
    of one network stop at once (moby/moby#46661, fixed upstream after this version): every later
    container operation then hangs. Stopping fewer at a time makes it rarer; when it happens all the
    same, the lab's daemon is killed and started again and the `down` runs once more."""
    env = dict(env or os.environ, COMPOSE_PARALLEL_LIMIT=str(parallel))
    command = list(argv) + ["down", "-v", "--remove-orphans", "-t", "3"]
    try:
        return run(command, check=False, env=env, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        restart_hung_dockerd()
        return run(command, check=False, env=env, cwd=cwd, timeout=timeout)


def restart_hung_dockerd():
    lab_module = load_lab_module()
    if not os.path.exists(lab_module.DOCKERD_MARK):
        raise AssertionError("the Docker daemon hangs and was not started by the lab: restart it by hand")
    with open(lab_module.DOCKERD_MARK) as handle:
        pid = int(handle.read().strip())
    print("the Docker daemon (pid %d) hangs: killing it and starting it again" % pid)
    os.kill(pid, signal.SIGKILL)
    wait_until("the hung dockerd is gone", lambda: not process_running(pid), timeout=60, interval=0.2)
    run([os.path.join(ROOT, "bin", "lab"), "up"])


def http_json(url, timeout=3):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read().decode())


def wait_until(what, func, timeout=60, interval=0.5):
    """Poll func() until it returns a truthy value; bounded in time."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = func()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        time.sleep(interval)
    raise AssertionError("%s not reached within %ss (last: %r)" % (what, timeout, last))


def ansible_env():
    env = dict(os.environ)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env["ANSIBLE_CONFIG"] = os.path.join(ROOT, "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    return env


def ansible_module(module, args, *options, host="lab1", inventory=None, raw=False):
    """Run one module of the collection ad hoc on a lab host over SSH, as Ansible runs it.
    Returns (rc, the host's result dict), and the finished process too when raw is true."""
    env = ansible_env()
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    proc = run([os.path.join(VENV_BIN, "ansible"), "-i", inventory or os.path.join(ROOT, "inventories", "lab"),
                host, "-m", module if "." in module else "vpsops.deploy." + module, "-a", json.dumps(args)]
               + list(options), check=False, env=env)
    # With -v the connection log comes first on stdout; the JSON document starts at a line "{".
    text = proc.stdout
    start = text.find("\n{\n")
    if not text.startswith("{") and start >= 0:
        text = text[start + 1:]
    try:
        data = json.loads(text)
        result = data["plays"][0]["tasks"][0]["hosts"][host]
    except (ValueError, KeyError, IndexError):
        raise AssertionError("no JSON result from %s (rc=%d): %s %s"
                             % (module, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:]))
    return (proc.returncode, result, proc) if raw else (proc.returncode, result)


class Stack:
    """The lab platform under its own compose project and port block. Keep new blocks below 32768:
    above it, Linux hands ports out as the local ends of outgoing connections, and a busy run
    (two workers, Molecule beside) once took one of a stack's ports before its database bound it."""

    def __init__(self, project, port_base):
        self.project = project
        self.ports = {
            "NATS_PORT": port_base + 222,
            "NATS_MONITOR_PORT": port_base + 822,
            "AR_DB_PORT": port_base + 434,
            "PAYMENTS_DB_PORT": port_base + 436,
            "AUTH_PORT": port_base + 80,
            "AR_PORT": port_base + 86,
            "PAYMENTS_PORT": port_base + 88,
        }
        self.passwords = {"AR_DB_PASSWORD": "ar-" + secrets.token_hex(8),
                          "PAYMENTS_DB_PASSWORD": "pay-" + secrets.token_hex(8)}

    def env(self, **extra):
        env = dict(os.environ)
        env.update({k: str(v) for k, v in self.ports.items()})
        env.update(self.passwords)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def compose(self, *args, check=True, **extra_env):
        argv = ["docker", "compose", "-p", self.project]
        for name in PHASE_FILES:
            argv += ["-f", os.path.join(STACK_DIR, name)]
        return run(argv + list(args), check=check, env=self.env(**extra_env), cwd=STACK_DIR)

    def url(self, port_key, path="/api/health"):
        return "http://127.0.0.1:%d%s" % (self.ports[port_key], path)

    def container(self, service, index=1):
        return "%s-%s-%d" % (self.project, service, index)

    def psql_dsn(self, which):
        user = {"ar": "ar_user", "payments": "payments_user"}[which]
        return dict(host="127.0.0.1", port=self.ports["%s_DB_PORT" % which.upper()], user=user,
                    dbname="%s_db" % which, password=self.passwords["%s_DB_PASSWORD" % which.upper()])

    def down(self):
        self.compose("down", "-v", "--remove-orphans", "-t", "3", check=False)
        remove_pin_tags(self.project)


def remove_pin_tags(stack):
    """Untag the images releases of a stack pinned (vpsops/<stack>/<service>:<release>)."""
    refs = run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}",
                "--filter", "reference=vpsops/%s/*" % stack], check=False).stdout.split()
    if refs:
        run(["docker", "image", "rm"] + refs, check=False)


@pytest.fixture(scope="session")
def lab():
    proc = run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False)
    if proc.returncode != 0:
        pytest.fail("the Docker daemon of the lab is not running: run `bin/lab up` (%s)" % proc.stderr.strip())
    if run(["docker", "compose", "version"], check=False).returncode != 0:
        pytest.fail("the Compose v2 plugin is missing: run `bin/lab up`")
    return True


@pytest.fixture(scope="session")
def stack(lab):
    """The whole lab platform, up and healthy, for the session."""
    st = Stack("vpsops-it", 20000)
    st.down()
    st.compose("up", "-d", "--wait", "--wait-timeout", "180")
    yield st
    st.down()


def container_names(project):
    out = run(["docker", "ps", "-a", "--filter", "label=com.docker.compose.project=%s" % project,
               "--format", "{{.Names}}"]).stdout
    return sorted(out.split())
