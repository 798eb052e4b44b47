"""PgCli's way into a container's PostgreSQL that does not trust its socket: when the socket refuses
the login (peer, ident, reject, no `local` line) and a password is given, the run goes again over
TCP inside the container; otherwise the failure says what to change. Server answers recorded from
the lab's PostgreSQL 15 with each pg_hba.conf."""

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils._pgcli import PgCli

SOCKET = 'psql: error: connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed: '
TCP = 'psql: error: connection to server at "127.0.0.1", port 5432 failed: '
PEER = SOCKET + 'FATAL:  Peer authentication failed for user "shopkeeper"'
REJECT = SOCKET + 'FATAL:  pg_hba.conf rejects connection for host "[local]", user "shopkeeper", database "shop", no encryption'
NO_PASSWORD = SOCKET + "fe_sendauth: no password supplied"
WRONG = SOCKET + 'FATAL:  password authentication failed for user "shopkeeper"'
TCP_NO_ENTRY = TCP + 'FATAL:  no pg_hba.conf entry for host "127.0.0.1", user "shopkeeper", database "shop", no encryption'
TCP_WRONG = TCP + 'FATAL:  password authentication failed for user "shopkeeper"'
TCP_DOWN = TCP + "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?"
SECRET = "pa55-" + "w0rd"


def cli(password=SECRET, container="shop-db"):
    return PgCli(dict(db="shop", login_user="shopkeeper", login_password=password, container=container))


@pytest.mark.parametrize("err", [PEER, REJECT])
def test_a_refusing_socket_with_a_password_switches_to_tcp_inside_the_container(err):
    target = cli()
    assert "-h" not in target.argv("pg_dump", [])
    assert target.route_after(2, err) is True
    assert target.over_tcp and target.socket_refusal == err
    argv = target.argv("pg_dump", ["-d", "shop"])
    assert argv[argv.index("-h") + 1] == "127.0.0.1" and "-p" not in argv
    assert "(TCP 127.0.0.1 inside it)" in target.describe()
    # once only: a failure over TCP is reported, not retried
    assert target.route_after(2, TCP_NO_ENTRY) is False


def test_runs_that_started_on_the_socket_together_are_each_tried_again_over_tcp():
    """A dump and its size query start at the same time on the socket and both are refused: the
    one that fails second is tried again over TCP too, though the first already switched."""
    target = cli()
    assert target.route_after(2, PEER, tcp=False) is True
    assert target.route_after(2, PEER, tcp=False) is True
    assert target.over_tcp and target.socket_refusal == PEER
    # a run that already went over TCP is reported, not retried
    assert target.route_after(2, PEER, tcp=True) is False


@pytest.mark.parametrize("target,err", [
    (cli(), NO_PASSWORD), (cli(), WRONG), (cli(password=""), PEER), (cli(container=None), PEER), (cli(), "")])
def test_other_failures_are_not_retried(target, err):
    assert target.route_after(2, err) is False
    assert not target.over_tcp
    assert target.route_after(0, PEER) is False


@pytest.mark.parametrize("password,first,then,words", [
    ("", PEER, None, ["set login_password", "`host all shopkeeper 127.0.0.1/32 scram-sha-256`"]),
    ("", NO_PASSWORD, None, ["scram-sha-256 or md5", "set login_password"]),
    (SECRET, WRONG, None, ["login_password is not the password of shopkeeper"]),
    (SECRET, PEER, TCP_NO_ENTRY, ["refused shopkeeper (%s)" % PEER, "add `host all shopkeeper 127.0.0.1/32 "
                                  "scram-sha-256` to pg_hba.conf", "`local all shopkeeper scram-sha-256`"]),
    (SECRET, PEER, TCP_WRONG, ["over TCP: login_password is not the password of shopkeeper"]),
    (SECRET, PEER, TCP_DOWN, ["does not listen on 127.0.0.1", "listen_addresses"]),
])
def test_the_failure_says_what_to_change(password, first, then, words):
    target = cli(password)
    err = first
    if then:
        assert target.route_after(2, first)
        err = then
    message = target.failure("psql", 2, err)
    assert message.startswith("psql on shopkeeper@container shop-db/shop")
    for word in words:
        assert word in message, message
    assert SECRET not in message


def test_host_mode_names_the_option():
    target = cli(password="", container=None)
    assert "set login_password" in target.failure("pg_dump", 1, "pg_dump: error: fe_sendauth: no password supplied")
    assert target.failure("pg_dump", 1, "could not translate host name") == (
        "pg_dump on shopkeeper@127.0.0.1:5432/shop failed (rc=1): could not translate host name")


def test_psql_never_prompts_for_a_password():
    for target in (cli(), cli(container=None)):
        assert "-w" in target.argv("psql", ["-d", "shop"])
