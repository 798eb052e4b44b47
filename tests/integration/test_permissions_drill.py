"""The permissions drill: what the collection writes on a host is owner-only, a non-root login with
become deploys, and modes an operator chose are never changed.

One module fixture runs, against lab1 over SSH: a deploy as root (the infrastructure phase, whose
`ar` database is backed up before the phase), a second deploy as the non-root `vpsops-op` with
become (a new release; this time the backup is taken), backup.yml into a backup directory the
operator made, a dlq.yml purge with export, and a deploy lock held while every path is read. The
state directory and a backup directory the operator made beforehand (with files of their own) sit
beside directories the collection creates itself, intermediate ones included.
"""

import fnmatch
import glob
import hashlib
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import warnings

import pytest

from conftest import ROOT, Stack, ansible_env, ansible_module, run, wait_until
from test_deploy_playbook import ANSIBLE, INVENTORY, recap, releases, stack_vars

PROJECT = "vpsops-itperm"
PORT_BASE = 26000
STATE_DIR = "/var/lib/vpsops/%s" % PROJECT
OP_USER = "vpsops-op"
SUDOERS = "/etc/sudoers.d/%s" % OP_USER
SSH_DIR = os.path.join(ROOT, ".lab", "ssh")
LAB_SSH_PORT = int(os.environ.get("VPSOPS_LAB_SSH_PORT", "2222"))
# The lab's sshd reads every user's keys from one file under .lab/ssh (0700 root), which sshd opens
# as the logging-in user: a non-root user cannot log in through it. Then the module starts an sshd
# of its own on this port (its block), reading ~/.ssh/authorized_keys. Only this module uses it.
PRIVATE_SSH_PORT = PORT_BASE + 22
LOCK_OWNER = "permissions-drill@pytest"

# `bin/lab setup` installs sudo (lab/lab.py APT_PACKAGES); a lab set up before it may lack it.
HAVE_SUDO = os.path.exists("/usr/bin/sudo")
if not HAVE_SUDO and not os.environ.get("CI"):
    pytest.skip("/usr/bin/sudo is missing: run `bin/lab setup` (or apt-get install -y sudo)", allow_module_level=True)

FAILED_EVENTS = """
CREATE TABLE IF NOT EXISTS failed_events (
    id BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL, subject TEXT NOT NULL, tenant_id TEXT,
    envelope_json JSONB NOT NULL, error TEXT NOT NULL, retry_count INTEGER NOT NULL DEFAULT 0,
    failed_at TIMESTAMPTZ NOT NULL DEFAULT now());
DELETE FROM failed_events;
INSERT INTO failed_events (event_id, subject, envelope_json, error, failed_at) VALUES
    ('perm-old-1', 'ar.events.x', '{"event_id": "perm-old-1"}', 'secret-ish payload', now() - interval '40 days'),
    ('perm-old-2', 'ar.events.x', '{"event_id": "perm-old-2"}', 'secret-ish payload', now() - interval '35 days'),
    ('perm-new-1', 'ar.events.x', '{"event_id": "perm-new-1"}', 'recent', now());
"""


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def walk(top):
    """{path: lstat} of top and of everything under it (symbolic links are not followed)."""
    found = {}
    if not os.path.lexists(top):
        return found
    found[top] = os.lstat(top)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            found[path] = os.lstat(path)
    return found


def wider_than_owner_only(entries, owner_uid):
    """One line per path that is not owner-only (directories 0700, files 0600 at most) or not owned
    by owner_uid. Symbolic links carry no mode of their own: their targets are walked."""
    problems = []
    for path, st in sorted(entries.items()):
        if stat.S_ISLNK(st.st_mode):
            continue
        mode = stat.S_IMODE(st.st_mode)
        limit = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if mode & ~limit:
            problems.append("%s is %04o (%04o at most)" % (path, mode, limit))
        if st.st_uid != owner_uid:
            problems.append("%s is owned by uid %d, not %d" % (path, st.st_uid, owner_uid))
    return problems


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def port_open(port):
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def uid_processes(uid):
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat("/proc/%s" % name).st_uid == uid:
                    pids.append(int(name))
            except OSError:
                continue
    return pids


def remove_user():
    """The drill's user and its sudoers file; its processes are the drill's own SSH sessions."""
    if os.path.exists(SUDOERS):
        os.unlink(SUDOERS)
    try:
        uid = pwd.getpwnam(OP_USER).pw_uid
    except KeyError:
        return
    try:
        wait_until("the SSH sessions of %s to end" % OP_USER, lambda: not uid_processes(uid), timeout=10)
    except AssertionError:
        for pid in uid_processes(uid):  # sessions this module opened: end them by their id
            try:
                os.kill(pid, 15)
            except OSError:
                pass
        time.sleep(1)
    run(["userdel", "-r", OP_USER], check=False)


def create_user(public_key):
    """A user with a home, the lab's client key in ~/.ssh/authorized_keys (0600, dir 0700), not
    locked (the lab's sshd runs without PAM: a locked account cannot log in even by key), and
    passwordless sudo through /etc/sudoers.d (0440, checked by visudo first)."""
    run(["useradd", "--create-home", "--shell", "/bin/bash", OP_USER])
    run(["usermod", "-p", "*", OP_USER])
    user = pwd.getpwnam(OP_USER)
    ssh = os.path.join(user.pw_dir, ".ssh")
    os.mkdir(ssh, 0o700)
    keys = os.path.join(ssh, "authorized_keys")
    with open(keys, "w") as handle:
        handle.write(public_key)
    os.chmod(ssh, 0o700)
    os.chmod(keys, 0o600)
    for path in (ssh, keys):
        os.chown(path, user.pw_uid, user.pw_gid)
    fd, tmp = tempfile.mkstemp(prefix=".vpsops-op.", dir="/etc/sudoers.d")
    with os.fdopen(fd, "w") as handle:
        handle.write("# vpsops.deploy permissions drill (tests/integration/test_permissions_drill.py)\n"
                     "%s ALL=(ALL:ALL) NOPASSWD: ALL\n" % OP_USER)
    os.chmod(tmp, 0o440)
    try:
        run(["visudo", "-c", "-f", tmp])
        os.rename(tmp, SUDOERS)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return user


class Drill:
    """Everything the module fixture did, and what it found."""

    def __init__(self, work, root):
        self.work = work
        self.root = root                                   # /var/tmp/vpsops-itperm-…, 0700, the drill's
        self.deploy_backups = os.path.join(root, "collection", "backups", "ar")   # made by pg_backup
        self.operator_backups = os.path.join(root, "operator-backups")           # made by the operator
        self.dlq_exports = os.path.join(root, "dlq-exports")                    # must exist: made by the operator
        self.audit_log = os.path.join(work, "audit", "audit.jsonl")             # the controller's log
        self.operator_paths = {}                           # path: (mode, uid, sha256 or None) before
        self.procs = {}
        self.connection = {}
        self.sshd_log = None
        self.op_uid = None
        self.lock_result = None
        self.lock_released = None
        self.released_lock_gone = None
        self.snapshot = {}
        self.first_release = None
        self.second_release = None
        self.releases = []
        self.via = None
        self.sshd_log_start = 0
        self.sshd_log_text = ""

    # paths the operator made, before anything ran
    def operator_made(self, path, mode, content=None):
        if content is None:
            os.mkdir(path, mode)
        else:
            with open(path, "w") as handle:
                handle.write(content)
        os.chmod(path, mode)  # exactly, whatever the umask
        self.operator_paths[path] = self.identity(path)

    @staticmethod
    def identity(path):
        st = os.lstat(path)
        return (stat.S_IMODE(st.st_mode), st.st_uid, None if stat.S_ISDIR(st.st_mode) else sha256(path))

    def env(self):
        env = ansible_env()
        env["VPSOPS_AUDIT_LOG"] = self.audit_log
        # Connections of the drill's user get masters of their own, closed at the end, so no SSH
        # session keeps the user busy when it is removed.
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = os.path.join(self.work, "cp")
        return env

    def playbook(self, name, extra_vars, *args):
        vars_file = os.path.join(self.work, "vars-%s-%d.json" % (name, len(self.procs)))
        with open(vars_file, "w") as handle:
            json.dump(extra_vars, handle)
        return run([os.path.join(ANSIBLE, "ansible-playbook"), "-i", INVENTORY,
                    os.path.join(ROOT, "playbooks", name + ".yml"), "-e", "@%s" % vars_file] + list(args),
                   check=False, env=self.env())

    def as_operator(self, become=True):
        """Extra variables that make lab1 log in as the drill's user (and become root)."""
        values = {"ansible_user": OP_USER, "ansible_become": become}
        values.update(self.connection)
        return values

    def ad_hoc(self, argv, extra):
        vars_file = os.path.join(self.work, "adhoc-%d.json" % len(os.listdir(self.work)))
        with open(vars_file, "w") as handle:
            json.dump(extra, handle)
        return run([os.path.join(ANSIBLE, "ansible"), "-i", INVENTORY, "lab1", "-m", "ansible.builtin.command",
                    "-a", json.dumps({"argv": argv}), "-e", "@%s" % vars_file, "-o"], check=False, env=self.env())

    def close_ssh_masters(self):
        for sock in glob.glob(os.path.join(self.work, "cp", "*")):
            run(["ssh", "-o", "ControlPath=%s" % sock, "-O", "exit", "lab1"], check=False, timeout=15)


def drill_stack(st, drill):
    """The infrastructure phase only, its `ar` database backed up before the phase changes."""
    values = stack_vars(st)
    stack = values["vpsops_stack"]
    stack["phases"] = stack["phases"][:1]
    stack["phases"][0]["backup"] = ["ar"]
    stack["databases"] = {"ar": {"container": st.container("ar-postgres"), "db": "ar_db", "login_user": "ar_user",
                                 "login_password": st.passwords["AR_DB_PASSWORD"]}}
    stack["backup"] = {"dest": drill.deploy_backups}
    return values


def ssh_probe(port, known_hosts):
    """`sudo -n id -u` as the drill's user over SSH with the lab's client key: (rc, output)."""
    proc = run(["ssh", "-p", str(port), "-i", os.path.join(SSH_DIR, "id_ed25519"), "-o", "IdentitiesOnly=yes",
                "-o", "UserKnownHostsFile=%s" % known_hosts, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=5", "-o", "ControlMaster=no", "%s@127.0.0.1" % OP_USER, "sudo", "-n", "id", "-u"],
               check=False, timeout=30)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def start_private_sshd(work):
    """An sshd of the module's own on PRIVATE_SSH_PORT that reads ~/.ssh/authorized_keys (strict
    modes on, so the 0700/0600 of the user's key files are checked too) and lets only the drill's
    user in. Returns (process, connection variables, log path)."""
    if port_open(PRIVATE_SSH_PORT):
        raise AssertionError("port %d (this module's block) is in use: a leftover sshd of an earlier run?"
                             % PRIVATE_SSH_PORT)
    host_key = os.path.join(SSH_DIR, "ssh_host_ed25519_key")
    conf, log = os.path.join(work, "sshd.conf"), os.path.join(work, "sshd.log")
    with open(conf, "w") as handle:
        handle.write("\n".join([
            "ListenAddress 127.0.0.1", "Port %d" % PRIVATE_SSH_PORT, "HostKey %s" % host_key,
            "PidFile %s" % os.path.join(work, "sshd.pid"), "AuthorizedKeysFile .ssh/authorized_keys",
            "AllowUsers %s" % OP_USER, "PermitRootLogin no", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes yes", "MaxStartups 50:30:100",
            "MaxSessions 50", ""]))
    os.chmod(conf, 0o600)
    run(["/usr/sbin/sshd", "-t", "-f", conf])
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", conf, "-E", log])
    wait_until("the drill's sshd on port %d" % PRIVATE_SSH_PORT, lambda: port_open(PRIVATE_SSH_PORT), timeout=15)
    known_hosts = os.path.join(work, "known_hosts")
    with open(os.path.join(SSH_DIR, "ssh_host_ed25519_key.pub")) as handle:
        key = " ".join(handle.read().split()[:2])
    with open(known_hosts, "w") as handle:
        handle.write("[127.0.0.1]:%d %s\n" % (PRIVATE_SSH_PORT, key))
    connection = {"ansible_port": PRIVATE_SSH_PORT,
                  "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes "
                                             "-o IdentitiesOnly=yes" % known_hosts}
    return proc, connection, log, known_hosts


# --------------------------------------------------------------------------------------------
# the module fixture: every run happens here, once
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def drill(lab, tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the permissions drill creates a user and a sudoers file: run it as root (as bin/lab does)")
    if not HAVE_SUDO:
        pytest.fail("CI is set and /usr/bin/sudo is missing on the lab host: lab/lab.py APT_PACKAGES needs "
                    "\"/usr/bin/sudo\": \"sudo\"")
    st = Stack(PROJECT, PORT_BASE)
    work = str(tmp_path_factory.mktemp("permissions"))
    os.chmod(work, 0o700)
    # What an interrupted run left.
    st.down()
    remove_user()
    run(["rm", "-rf", STATE_DIR])
    for old in glob.glob("/var/tmp/%s-*" % PROJECT):
        shutil.rmtree(old, ignore_errors=True)
    drill = Drill(work, tempfile.mkdtemp(prefix="%s-" % PROJECT, dir="/var/tmp"))
    sshd = None
    try:
        # What the operator made before the collection ever ran: the state directory (owner-only,
        # as the collection would make it) with a read-only note, a backup directory a backup
        # reader's group may list (0750) with the operator's own read-only file, and the directory
        # DLQ exports go to (dlq_purge wants it to exist).
        if not os.path.isdir(os.path.dirname(STATE_DIR)):
            os.makedirs(os.path.dirname(STATE_DIR), 0o700)
        drill.operator_made(STATE_DIR, 0o700)
        drill.operator_made(os.path.join(STATE_DIR, "OPERATOR-NOTES.txt"), 0o400, "restore drill: 2nd Tuesday\n")
        drill.operator_made(drill.operator_backups, 0o750)
        drill.operator_made(os.path.join(drill.operator_backups, "README.operator"), 0o440,
                            "copied off-site nightly by the backup-reader group\n")
        drill.operator_made(drill.dlq_exports, 0o700)

        with open(os.path.join(SSH_DIR, "id_ed25519.pub")) as handle:
            drill.op_uid = create_user(handle.read()).pw_uid
        rc, said = ssh_probe(LAB_SSH_PORT, os.path.join(SSH_DIR, "known_hosts"))
        if rc == 0 and said == "0":
            drill.sshd_log = os.path.join(SSH_DIR, "sshd_main.log")
            drill.via = "the lab's sshd on port %d" % LAB_SSH_PORT
        else:
            sshd, drill.connection, drill.sshd_log, known_hosts = start_private_sshd(work)
            rc, said2 = ssh_probe(PRIVATE_SSH_PORT, known_hosts)
            assert rc == 0 and said2 == "0", (
                "%s cannot log in and sudo even through the drill's own sshd (rc=%d): %s" % (OP_USER, rc, said2))
            drill.via = "the drill's own sshd on port %d" % PRIVATE_SSH_PORT
            warnings.warn("the lab's sshd refused %s (%s): its AuthorizedKeysFile is one file under .lab/ssh, "
                          "which a non-root user cannot read; used %s" % (OP_USER, said, drill.via))
        drill.sshd_log_start = os.path.getsize(drill.sshd_log) if os.path.exists(drill.sshd_log) else 0

        values = drill_stack(st, drill)
        drill.procs["deploy-root"] = first = drill.playbook("deploy", values)
        assert first.returncode == 0, "the first deploy (as root) failed:\n" + first.stdout[-4000:]
        drill.first_release = releases(st)["live"]

        # The second deploy: a new release (its .env changes), as the drill's user with become.
        # A release is live now and the database runs, so the phase's backup is taken.
        values_v2 = drill_stack(st, drill)
        values_v2["vpsops_stack"]["env"]["RELEASE_TAG"] = "v2"
        values_v2.update(drill.as_operator())
        drill.procs["whoami-plain"] = drill.ad_hoc(["id", "-u"], drill.as_operator(become=False))
        drill.procs["whoami-become"] = drill.ad_hoc(["id", "-u"], drill.as_operator())
        drill.procs["deploy-become"] = drill.playbook("deploy", values_v2)
        info = releases(st)
        drill.second_release = info["live"]
        drill.releases = info["releases"]

        # backup.yml into the operator's backup directory; a dlq purge exporting what it deletes.
        drill.procs["backup"] = drill.playbook("backup", dict(values, backup_dest=drill.operator_backups))
        import psycopg2
        conn = psycopg2.connect(connect_timeout=5, **st.psql_dsn("ar"))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(FAILED_EVENTS)
        finally:
            conn.close()
        drill.procs["dlq"] = drill.playbook("dlq", dict(values, dlq_action="purge", dlq_confirm=True,
                                                        dlq_databases=["ar"], dlq_export_dir=drill.dlq_exports))

        # Every path is read while a deploy holds the lock.
        rc, drill.lock_result = ansible_module("deploy_lock", {"stack": PROJECT, "owner": LOCK_OWNER, "ttl": 600})
        assert rc == 0, drill.lock_result
        try:
            for top in (STATE_DIR, drill.root, os.path.dirname(drill.audit_log)):
                drill.snapshot.update(walk(top))
        finally:
            rc, drill.lock_released = ansible_module("deploy_lock", {"stack": PROJECT, "owner": LOCK_OWNER,
                                                                     "state": "released"})
            drill.released_lock_gone = not os.path.exists(os.path.join(STATE_DIR, "lock.json"))
        drill.close_ssh_masters()
        with open(drill.sshd_log, "rb") as handle:
            handle.seek(drill.sshd_log_start)
            drill.sshd_log_text = handle.read().decode("utf-8", "replace")
        yield drill
    finally:
        drill.close_ssh_masters()
        if sshd is not None:
            sshd.terminate()
            try:
                sshd.wait(10)
            except subprocess.TimeoutExpired:
                sshd.kill()
        remove_user()
        st.down()
        run(["rm", "-rf", STATE_DIR])
        shutil.rmtree(drill.root, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# 1. owner-only modes
# --------------------------------------------------------------------------------------------
# What the walk must have met, so a run that wrote nothing cannot pass.
EXPECTED = [
    STATE_DIR + "/releases",
    STATE_DIR + "/releases/*",
    STATE_DIR + "/releases/*/manifest.json",
    STATE_DIR + "/releases/*/.env",
    STATE_DIR + "/releases/*/images.lock.yml",
    STATE_DIR + "/releases/*/docker-compose.infrastructure.yml",
    STATE_DIR + "/history.jsonl",
    STATE_DIR + "/lock.json",
    STATE_DIR + "/.guard",
    STATE_DIR + "/project",
    STATE_DIR + "/project/.env",
    STATE_DIR + "/project/docker-compose.infrastructure.yml",
    "{root}/collection",
    "{root}/collection/backups",
    "{root}/collection/backups/ar",
    "{root}/collection/backups/ar/ar_db_*.dump",
    "{root}/collection/backups/ar/ar_db_*.dump.json",
    "{root}/operator-backups/ar_db_*.dump",
    "{root}/operator-backups/ar_db_*.dump.json",
    "{root}/dlq-exports/%s-ar-failed-events-*.jsonl" % PROJECT,
    "{audit}",
]


def test_the_runs_the_walk_reads_succeeded(drill):
    for name in ("deploy-root", "deploy-become", "backup", "dlq"):
        proc = drill.procs[name]
        assert proc.returncode == 0, "%s failed:\n%s" % (name, proc.stdout[-4000:])
        assert recap(proc.stdout)["failed"] == 0
    assert drill.lock_result["lock"]["owner"] == LOCK_OWNER, drill.lock_result
    assert drill.lock_released.get("failed") is not True and drill.released_lock_gone, drill.lock_released
    exported = glob.glob(os.path.join(drill.dlq_exports, "*.jsonl"))
    assert len(exported) == 1
    assert sorted(json.loads(line)["event_id"] for line in open(exported[0])) == ["perm-old-1", "perm-old-2"]


def test_everything_the_collection_wrote_is_owner_only_and_owned_by_the_deploying_user(drill):
    expected = [p.format(root=drill.root, audit=drill.audit_log) for p in EXPECTED]
    missing = [p for p in expected if not fnmatch.filter(drill.snapshot, p)]
    assert not missing, "the walk did not meet %s; it saw:\n%s" % (missing, "\n".join(sorted(drill.snapshot)))
    assert len(glob.glob(STATE_DIR + "/releases/*/manifest.json")) == 2  # both deploys recorded a release

    made = {p: s for p, s in drill.snapshot.items() if p not in drill.operator_paths and p != drill.root}
    # The deploying user is root: directly on the first deploy, through sudo on the second.
    problems = wider_than_owner_only(made, 0)
    modes = sorted({"%04o %s" % (stat.S_IMODE(s.st_mode), "dir" if stat.S_ISDIR(s.st_mode) else "file")
                    for s in made.values() if not stat.S_ISLNK(s.st_mode)})
    print("walked %d paths the collection wrote; modes found: %s" % (len(made), ", ".join(modes)))
    assert not problems, "wider than owner-only:\n" + "\n".join(problems)


def test_the_lock_file_is_owner_only_while_a_deploy_holds_it(drill):
    lock = os.path.join(STATE_DIR, "lock.json")
    st = drill.snapshot[lock]
    assert stat.S_IMODE(st.st_mode) & ~0o600 == 0 and st.st_uid == 0, "%s is %04o uid %d" % (
        lock, stat.S_IMODE(st.st_mode), st.st_uid)


# --------------------------------------------------------------------------------------------
# 2. a non-root ansible_user with become
# --------------------------------------------------------------------------------------------
def test_a_non_root_user_with_become_deploys_and_what_it_writes_is_roots_and_owner_only(drill):
    # The connection really is the drill's user, and become really makes it root.
    plain, become = drill.procs["whoami-plain"], drill.procs["whoami-become"]
    assert plain.returncode == 0 and "(stdout) %d" % drill.op_uid in plain.stdout, plain.stdout + plain.stderr
    assert become.returncode == 0 and "(stdout) 0" in become.stdout, become.stdout + become.stderr
    print("%s logged in through %s" % (OP_USER, drill.via))
    assert "Accepted publickey for %s" % OP_USER in drill.sshd_log_text

    deployed = drill.procs["deploy-become"]
    assert deployed.returncode == 0, deployed.stdout[-4000:]
    assert recap(deployed.stdout)["changed"] > 0
    # It recorded a release of its own, took the phase's backup and pinned it to that release.
    assert drill.second_release and drill.second_release != drill.first_release
    newest = drill.releases[0]
    assert newest["id"] == drill.second_release and newest["status"] == "live"
    assert [b["name"] for b in newest["backups"]] == ["ar"], newest["backups"]
    backup = newest["backups"][0]["path"]
    assert backup.startswith(drill.deploy_backups + "/") and drill.second_release in os.path.basename(backup)

    written = walk(os.path.join(STATE_DIR, "releases", drill.second_release))
    for path in (backup, backup + ".json", os.path.join(STATE_DIR, "project", ".env"),
                 os.path.join(STATE_DIR, "history.jsonl")):
        written[path] = os.lstat(path)
    assert len(written) >= 8, sorted(written)
    problems = wider_than_owner_only(written, 0)
    assert not problems, "written through become:\n" + "\n".join(problems)
    history = [json.loads(line) for line in open(os.path.join(STATE_DIR, "history.jsonl"))]
    assert any(e.get("release") == drill.second_release for e in history), history[-5:]


# --------------------------------------------------------------------------------------------
# 3. never widen (or otherwise change) a mode the collection did not create
# --------------------------------------------------------------------------------------------
def test_modes_and_files_the_operator_made_are_kept(drill):
    changed = []
    for path, before in sorted(drill.operator_paths.items()):
        after = Drill.identity(path)
        if after != before:
            changed.append("%s: mode %04o uid %d -> mode %04o uid %d%s" % (
                path, before[0], before[1], after[0], after[1], " (content changed)" if after[2] != before[2] else ""))
    assert not changed, "the collection changed what the operator made:\n" + "\n".join(changed)
    # ... while what it wrote beside them is owner-only: the backups in the operator's 0750
    # directory, the release store in the operator's state directory, the export.
    beside = {p: s for p, s in drill.snapshot.items()
              if os.path.dirname(p) in drill.operator_paths and p not in drill.operator_paths}
    assert any(p.endswith(".dump") for p in beside) and any(p.endswith(".jsonl") for p in beside)
    assert not wider_than_owner_only(beside, 0)
