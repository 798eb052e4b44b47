"""Backups of PostgreSQL containers that do not trust their local socket: the lab's PostgreSQL with
`local all all peer` (Debian and Ubuntu clusters) and with `local all all scram-sha-256` (hardened
images) in pg_hba.conf. With the password, backup, verification and restore work (peer over TCP
inside the container, scram over the socket); without it, or when pg_hba.conf leaves no way in,
the failure says what to change and leaves nothing behind. Containers `vpsops-st-pg-*` (no port
published), files under /tmp/vpsops-st-*."""

import json
import os
import secrets
import shutil
import subprocess

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _backup as backup
from ansible_collections.vpsops.deploy.plugins.module_utils._pgcli import PgCli
from conftest import ROOT, ansible_env, run, wait_until

PG_IMAGE = "vpsops-lab/postgres:15"
USER = "shopkeeper"
DB = "shop"
PGDATA = "/var/lib/postgresql/data"
SEED = """
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 3000) g;
CREATE SCHEMA billing;
CREATE TABLE billing.lines (id int, amount numeric);
INSERT INTO billing.lines VALUES (1, 9.5), (2, 10.25);
"""
# The TCP lines the image's initdb wrote, and a Debian cluster's: 127.0.0.1 with a password.
TCP_LINES = "host all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n"


class Pg:
    """A PostgreSQL container whose pg_hba.conf the test writes."""

    def __init__(self, name, local):
        self.name = name
        self.local = local
        self.password = "st-" + secrets.token_hex(10)

    def start(self):
        run(["docker", "rm", "-f", self.name], check=False)
        run(["docker", "run", "-d", "--name", self.name, "-e", "POSTGRES_USER=" + USER, "-e", "POSTGRES_DB=" + DB,
             "-e", "POSTGRES_PASSWORD=" + self.password,
             "--health-cmd", "pg_isready -h 127.0.0.1 -U %s -d %s" % (USER, DB), "--health-interval", "1s",
             PG_IMAGE])
        wait_until("%s healthy" % self.name, lambda: run(
            ["docker", "inspect", "-f", "{{.State.Health.Status}}", self.name]).stdout.strip() == "healthy", 60)
        self.sql(SEED)
        self.hba("local all all %s\n%s" % (self.local, TCP_LINES))

    def hba(self, text):
        """Replace pg_hba.conf and reload the server."""
        subprocess.run(["docker", "exec", "-i", self.name, "sh", "-c", "cat > %s/pg_hba.conf" % PGDATA],
                       input=text.encode(), check=True, timeout=30)
        run(["docker", "exec", self.name, "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
             "pg_ctl", "-D", PGDATA, "reload"])

    def sql(self, text):
        """psql as the owner: over the socket while it is trusted, then over TCP with the password."""
        env = dict(os.environ, PGPASSWORD=self.password)
        proc = subprocess.run(["docker", "exec", "-i", "-e", "PGPASSWORD", self.name, "psql", "-X", "-q", "-A",
                               "-t", "-w", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", USER, "-d", DB],
                              input=text, capture_output=True, text=True, timeout=120, check=False, env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def params(self, **extra):
        params = dict(db=DB, login_user=USER, login_password=self.password, container=self.name, docker_cli="docker",
                      format="custom", jobs=1, verify="toc", space_factor=1.0, timeout=300, container_tmpdir="/tmp")
        params.update(extra)
        return params

    def remove(self):
        run(["docker", "rm", "-f", self.name], check=False)


@pytest.fixture(scope="module", params=["peer", "scram-sha-256"])
def pg(request, lab):
    server = Pg("vpsops-st-pg-%s" % request.param.split("-")[0], request.param)
    server.start()
    yield server
    server.remove()


@pytest.fixture
def workdir():
    path = "/tmp/vpsops-st-auth-" + secrets.token_hex(4)
    os.mkdir(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def restore_params(pg, src, workdir, **extra):
    params = dict((k, v.get("default")) for k, v in backup.restore_argument_spec().items())
    params.update(pg.params(), src=src, safety_dest=os.path.join(workdir, "safety"))
    params.update(extra)
    return params


@pytest.mark.parametrize("fmt,verify", [("custom", "toc"), ("custom", "restore"), ("directory", "full")])
def test_backup_verify_and_restore_work_with_the_password(pg, workdir, fmt, verify):
    cli = PgCli(pg.params())
    result = backup.make_backup(pg.params(dest=workdir, format=fmt, verify=verify), cli=cli)
    assert result["verified"] and result["sha256"] == backup.checksum(result["path"])[0]
    if verify == "restore":
        assert result["verification"]["row_counts"]["public.items"] == 3000
    # peer: the socket refused and TCP inside the container took over; scram: the socket took the password
    assert cli.over_tcp is (pg.local == "peer")
    assert pg.password not in json.dumps(result) and pg.password not in open(result["manifest"]).read()

    pg.sql("DELETE FROM items WHERE id > 100; INSERT INTO billing.lines VALUES (3, 1);")
    restored = backup.restore(restore_params(pg, result["path"], workdir))
    assert restored["tables"]["public.items"] == {"before": 100, "after": 3000}
    assert restored["tables"]["billing.lines"] == {"before": 3, "after": 2}
    assert os.path.exists(restored["safety_backup"]["path"])
    assert pg.sql("SELECT count(*) FROM items") == "3000"


def test_without_the_password_the_failure_says_to_set_it_and_leaves_nothing(pg, workdir):
    with pytest.raises(backup.BackupError) as caught:
        backup.make_backup(pg.params(dest=workdir, login_password=""))
    message = str(caught.value)
    assert "set login_password" in message, message
    if pg.local == "peer":
        assert "Peer authentication failed" in message and "host all %s 127.0.0.1/32 scram-sha-256" % USER in message
    else:
        assert "no password supplied" in message and "scram-sha-256 or md5" in message
    assert os.listdir(workdir) == []


def test_a_wrong_password_is_named(pg, workdir):
    with pytest.raises(backup.BackupError, match="login_password is not the password of %s" % USER) as caught:
        backup.make_backup(pg.params(dest=workdir, login_password="not-" + pg.password))
    assert pg.password not in str(caught.value)
    assert os.listdir(workdir) == []


def test_peer_without_a_tcp_line_names_the_pg_hba_line_to_add(pg, workdir):
    if pg.local != "peer":
        pytest.skip("the scram socket takes the password: no TCP needed")
    pg.hba("local all all peer\n")
    try:
        with pytest.raises(backup.BackupError) as caught:
            backup.make_backup(pg.params(dest=workdir))
        message = str(caught.value)
        assert "Peer authentication failed" in message and 'no pg_hba.conf entry for host "127.0.0.1"' in message
        assert "add `host all %s 127.0.0.1/32 scram-sha-256` to pg_hba.conf" % USER in message
        assert "`local all %s scram-sha-256`" % USER in message
        assert pg.password not in message and os.listdir(workdir) == []
    finally:
        pg.hba("local all all peer\n" + TCP_LINES)


def test_the_modules_back_up_and_restore_through_ansible_without_showing_the_password(pg, workdir):
    """pg_backup and pg_restore as a playbook runs them, -vvv: the password is in no output."""
    playbook = os.path.join(workdir, "play.yml")
    with open(playbook, "w") as handle:
        handle.write("""
- hosts: localhost
  gather_facts: false
  vars:
    conn: {container: %(c)s, db: %(db)s, login_user: %(u)s, login_password: "{{ lookup('env', 'ST_PW') }}"}
  tasks:
    - vpsops.deploy.pg_backup:
        container: "{{ conn.container }}"
        db: "{{ conn.db }}"
        login_user: "{{ conn.login_user }}"
        login_password: "{{ conn.login_password }}"
        dest: %(dest)s
      register: made
    - vpsops.deploy.pg_restore:
        container: "{{ conn.container }}"
        db: "{{ conn.db }}"
        login_user: "{{ conn.login_user }}"
        login_password: "{{ conn.login_password }}"
        src: "{{ made.path }}"
      register: back
    - ansible.builtin.assert:
        that: back.tables['public.items'].after == 3000
""" % dict(c=pg.name, db=DB, u=USER, dest=os.path.join(workdir, "dest")))
    env = dict(ansible_env(), ST_PW=pg.password)
    proc = run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-vvv", "-i", "localhost,", "-c", "local",
                "-e", "ansible_python_interpreter=" + os.path.join(ROOT, ".venv", "bin", "python"), playbook],
               env=env, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert pg.password not in proc.stdout + proc.stderr
