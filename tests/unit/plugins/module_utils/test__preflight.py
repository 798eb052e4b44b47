# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of the preflight logic: env files, compose's warnings and errors, the compose model,
floating images, port ownership, host figures, option validation."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _preflight as pf
from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Docker

# `docker compose config --format json` of Compose 2.40.3 (lab), with SECRETV='s3cr3t-x' in .env.
MODEL = json.loads("""
{"name": "pfx", "networks": {"default": {"name": "pfx_default", "ipam": {}}},
 "services": {
  "b": {"build": {"context": "/tmp/pfx", "dockerfile": "Dockerfile"}, "command": null, "entrypoint": null,
        "networks": {"default": null}},
  "web": {"command": null, "entrypoint": null, "environment": {"A": "s3cr3t-x"}, "image": "busybox",
          "networks": {"default": null},
          "ports": [
            {"mode": "ingress", "host_ip": "127.0.0.1", "target": 80, "published": "32001", "protocol": "tcp"},
            {"mode": "ingress", "target": 81, "published": "32002", "protocol": "tcp"},
            {"mode": "ingress", "target": 82, "published": "32003", "protocol": "tcp"},
            {"mode": "ingress", "target": 90, "published": "32010-32012", "protocol": "tcp"},
            {"mode": "ingress", "target": 9000, "protocol": "tcp"}]}}}
""")

# stderr of `docker compose config` (2.40.3) without a terminal, and the WARN[...] form of a terminal.
STDERR_UNSET = ('time="2026-11-23T19:27:10Z" level=warning msg="The \\"TAGX\\" variable is not set. '
                'Defaulting to a blank string."\n'
                'time="2026-11-23T19:27:10Z" level=warning msg="The \\"DB_HOST\\" variable is not set. '
                'Defaulting to a blank string."\n'
                'time="2026-11-23T19:27:10Z" level=warning msg="The \\"TAGX\\" variable is not set. '
                'Defaulting to a blank string."\n')
STDERR_TTY = 'WARN[0000] The "API_KEY" variable is not set. Defaulting to a blank string.\n'

# `docker inspect --format CONTAINER_FORMAT` of running lab containers (one not from compose).
INSPECT = "\n".join([
    '{"name":"/benchscale-dry-postgres-1","project":"benchscale-dry","ports":{"5432/tcp":null}}',
    '{"name":"/vpsops-pf-own-web-1","project":"vpsops-pf-own","ports":{"4222/tcp":[{"HostIp":"127.0.0.1",'
    '"HostPort":"32101"}],"8222/tcp":null}}',
    '{"name":"/other-dns-1","project":"other","ports":{"53/udp":[{"HostIp":"0.0.0.0","HostPort":"32153"},'
    '{"HostIp":"::","HostPort":"32153"}]}}',
    '{"name":"/loose","project":"","ports":{"80/tcp":[{"HostIp":"127.0.0.2","HostPort":"32180"}]}}',
    'not json',
])


def test_referenced_variables_skip_escaped_dollars():
    text = 'image: app:${TAG:-v1}\ncommand: ["sh", "-c", "echo $$HOME $USER_X ${A:?set A}"]\n'
    assert pf.referenced_variables(text) == {"TAG", "USER_X", "A"}


def test_the_environment_wins_over_env_files_and_later_files_over_earlier():
    env = pf.effective_env([("/a/.env", {"X": "file-a", "Y": "file-a"}), ("/b/.env", {"Y": "file-b", "Z": ""})],
                           {"X": "from-env"})
    assert env == {"X": ("from-env", "the environment"), "Y": ("file-b", "/b/.env"), "Z": ("", "/b/.env")}


@pytest.mark.parametrize("text, expected", [
    # recorded compose errors that quote a value, whole or in part
    ("invalid hostPort: s3cr3t-x", "invalid hostPort: <value of SECRETV>"),
    ("'services[web].mem_limit' strconv.ParseFloat: parsing \"s3cr3\": invalid syntax",
     "'services[web].mem_limit' strconv.ParseFloat: parsing \"<part of the value of SECRETV>\": invalid syntax"),
    ("error while interpolating services.web.cpus: failed to cast to expected type: strconv.ParseFloat: "
     "parsing \"s3cr3t-x\": invalid syntax",
     "error while interpolating services.web.cpus: failed to cast to expected type: strconv.ParseFloat: "
     "parsing \"<value of SECRETV>\": invalid syntax"),
    ("bad value open sesame now", "bad value <value of PHRASE> now"),
    ("bad value open sesa", "bad value <part of the value of PHRASE> <part of the value of PHRASE>"),
    # short values (ports, v1) are not secrets and stay readable
    ("image vpsops-demo/ar:v1 not found on line 1", "image vpsops-demo/ar:v1 not found on line 1"),
    ("yaml: line 3: did not find expected key", "yaml: line 3: did not find expected key"),
])
def test_redactor(text, expected):
    redact = pf.Redactor({"SECRETV": "s3cr3t-x", "PHRASE": "open sesame", "TAG": "v1", "N": "1", "E": ""})
    assert redact(text) == expected


def test_redactor_with_many_values_and_values_inside_others():
    values = dict(("V%d" % i, "value-%04d-x" % i) for i in range(1200))
    values["URL"] = "postgres://u:value-0007-x@db/app"
    redact = pf.Redactor(values)
    assert redact("a value-1100-x, value-0007-x and postgres://u:value-0007-x@db/app; value-11") == (
        "a <value of V1100>, <value of V7> and <value of URL>; <part of the value of V1100>")


def test_unset_variables_in_order_once_each():
    assert pf.unset_variables(STDERR_UNSET) == ["TAGX", "DB_HOST"]
    assert pf.unset_variables(STDERR_TTY) == ["API_KEY"]
    assert pf.unset_variables("") == []


def test_compose_error_drops_warnings_and_redacts():
    stderr = STDERR_UNSET + STDERR_TTY + "invalid hostPort: s3cr3t-x\n"
    text = pf.compose_error(stderr, pf.Redactor({"SECRETV": "s3cr3t-x"}))
    assert text == "invalid hostPort: <value of SECRETV>"
    assert pf.compose_error("") == "no error text"


def test_parse_model():
    services = pf.parse_model(MODEL)
    assert sorted(services) == ["b", "web"]
    assert services["b"] == {"image": None, "build": True, "ports": []}
    assert services["web"]["image"] == "busybox"
    # the ephemeral port (no published) is left out; host_ip defaults to every address
    assert [(p["host_ip"], p["published"], p["protocol"]) for p in services["web"]["ports"]] == [
        ("127.0.0.1", "32001", "tcp"), ("", "32002", "tcp"), ("", "32003", "tcp"), ("", "32010-32012", "tcp")]


@pytest.mark.parametrize("image, floating", [
    ("nginx", True),
    ("nginx:latest", True),
    ("ghcr.io/org/app:latest", True),
    ("registry.local:5000/app", True),
    ("nginx:1.27", False),
    ("registry.local:5000/app:2.1", False),
    ("nginx@sha256:" + "a" * 64, False),
    ("nginx:latest@sha256:" + "a" * 64, False),
    ("vpsops-demo/ar:v1", False),
    ("nginx:LATEST", False),
])
def test_floating_image(image, floating):
    assert pf.floating_image(image) is floating


def test_image_problems_name_service_and_image_and_skip_built_services():
    services = {"web": {"image": "nginx:latest", "build": False, "ports": []},
                "api": {"image": "app", "build": False, "ports": []},
                "db": {"image": "postgres:15", "build": False, "ports": []},
                "local": {"image": None, "build": True, "ports": []}}
    problems = pf.image_problems(services, allow_latest=False)
    assert len(problems) == 2
    assert "service api uses image app with no tag" in problems[0]
    assert "service web uses image nginx:latest with tag latest" in problems[1]
    assert pf.image_problems(services, allow_latest=True) == []


@pytest.mark.parametrize("published, ports", [
    ("8080", [8080]), ("8000-8002", [8000, 8001, 8002]), (" 53 ", [53]), ("", []), ("x", []), ("9-8", []),
])
def test_published_ports(published, ports):
    assert pf.published_ports(published) == ports


def test_parse_container_lines():
    containers = pf.parse_container_lines(INSPECT)
    assert containers == [
        {"name": "benchscale-dry-postgres-1", "project": "benchscale-dry", "bindings": []},
        {"name": "vpsops-pf-own-web-1", "project": "vpsops-pf-own", "bindings": [("127.0.0.1", 32101, "tcp")]},
        {"name": "other-dns-1", "project": "other", "bindings": [("0.0.0.0", 32153, "udp"), ("::", 32153, "udp")]},
        {"name": "loose", "project": None, "bindings": [("127.0.0.2", 32180, "tcp")]},
    ]


@pytest.mark.parametrize("host_ip, port, protocol, holders", [
    ("127.0.0.1", 32101, "tcp", ["vpsops-pf-own-web-1"]),
    ("", 32101, "tcp", ["vpsops-pf-own-web-1"]),        # every address overlaps 127.0.0.1
    ("127.0.0.2", 32101, "tcp", []),                    # another loopback address does not
    ("127.0.0.1", 32101, "udp", []),                    # nor another protocol
    ("127.0.0.5", 32153, "udp", ["other-dns-1"]),       # a container on every address holds all
    ("127.0.0.2", 32180, "tcp", ["loose"]),
    ("127.0.0.1", 32180, "tcp", []),
])
def test_port_holders(host_ip, port, protocol, holders):
    containers = pf.parse_container_lines(INSPECT)
    assert [c["name"] for c in pf.port_holders(host_ip, port, protocol, containers)] == holders


@pytest.mark.parametrize("holders, bind_error, process, owner, ok", [
    ([{"name": "p-web-1", "project": "p"}], None, None, "this project (container p-web-1)", True),
    ([{"name": "q-web-1", "project": "q"}], None, None, "container q-web-1 (project q)", False),
    ([{"name": "p-web-1", "project": "p"}, {"name": "q-web-1", "project": "q"}], None, None,
     "container q-web-1 (project q)", False),
    ([{"name": "loose", "project": None}], None, None, "container loose (not a compose container)", False),
    ([], None, None, "free", True),
    ([], errno.EADDRINUSE, "process python3 (pid 42)", "process python3 (pid 42)", False),
    ([], errno.EADDRINUSE, None, "a process on the host", False),
    ([], errno.EADDRNOTAVAIL, None, "address not available on this host", False),
    ([], errno.EACCES, None, "unknown (no permission to test a port below 1024)", True),
])
def test_judge_port(holders, bind_error, process, owner, ok):
    assert pf.judge_port("p", holders, bind_error, process) == (owner, ok)


def test_port_checks_name_service_port_and_owner():
    services = {
        "web": {"image": "x:1", "build": False, "ports": [
            {"host_ip": "127.0.0.1", "published": "32101", "protocol": "tcp", "target": 4222},   # own container
            {"host_ip": "127.0.0.1", "published": "32102", "protocol": "tcp", "target": 80},     # a process
            {"host_ip": "", "published": "32153", "protocol": "udp", "target": 53},              # other project
            {"host_ip": "127.0.0.1", "published": "32103", "protocol": "tcp", "target": 81},     # free
            {"host_ip": "10.255.0.9", "published": "32104", "protocol": "tcp", "target": 82},    # not here
            {"host_ip": "127.0.0.1", "published": "32110-32112", "protocol": "tcp", "target": 90}]}}
    busy = {32102, 32110, 32111}
    calls = []

    def binder(host_ip, port, protocol):
        calls.append(port)
        if host_ip == "10.255.0.9":
            return errno.EADDRNOTAVAIL
        return errno.EADDRINUSE if port in busy else None

    def owner_of(port, protocol):
        return "process nc (pid 7)" if port == 32102 else None

    owners, problems = pf.port_checks("vpsops-pf-own", services, pf.parse_container_lines(INSPECT), binder, owner_of)
    assert owners == {"32101": "this project (container vpsops-pf-own-web-1)", "32102": "process nc (pid 7)",
                      "32153/udp": "container other-dns-1 (project other)", "32103": "free",
                      "32104": "address not available on this host", "32110-32112": "a process on the host"}
    assert 32101 not in calls and 32153 not in calls  # a port a container holds is not bind-tested
    assert len(problems) == 3
    assert problems[0].startswith("port 32102/tcp (127.0.0.1) of service web is already in use by process nc (pid 7)")
    assert "port 32153/udp (every address) of service web is already in use by container other-dns-1 (project " \
           "other), not by a container of project vpsops-pf-own" in problems[1]
    assert "host address 10.255.0.9 is not an address of this host" in problems[2]

    busy.add(32112)  # the whole range is taken now
    problems = pf.port_checks("vpsops-pf-own", services, [], binder, owner_of)[1]
    assert any(p.startswith("port 32110-32112/tcp (127.0.0.1) of service web is already in use") for p in problems)


def test_duplicate_ports():
    services = {"a": {"ports": [{"host_ip": "127.0.0.1", "published": "8080", "protocol": "tcp"}]},
                "b": {"ports": [{"host_ip": "", "published": "8080", "protocol": "tcp"},
                                {"host_ip": "", "published": "8081", "protocol": "tcp"}]},
                "c": {"ports": [{"host_ip": "127.0.0.2", "published": "8081", "protocol": "udp"},
                                {"host_ip": "", "published": "9000-9001", "protocol": "tcp"}]},
                "d": {"ports": [{"host_ip": "", "published": "9000-9001", "protocol": "tcp"}]}}
    assert pf.duplicate_ports(services) == [
        "port 8080/tcp is published by both service a and service b: only one can bind it."]


def test_socket_inodes_read_listening_sockets(tmp_path):
    (tmp_path / "net").mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    # recorded rows: 127.0.0.1:24902 listening, the same port established (not listening), another port
    (tmp_path / "net" / "tcp").write_text(
        header
        + "   0: 0100007F:6146 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4780783 1 x\n"
        + "   1: 0100007F:6146 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0        0 4780999 1 x\n"
        + "   2: 0100007F:6145 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4757045 1 x\n")
    assert pf.socket_inodes(0x6146, "tcp", str(tmp_path)) == {"4780783"}
    assert pf.socket_inodes(0x6146, "udp", str(tmp_path)) == set()


def test_bind_test_sees_a_listening_socket():
    import socket
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        assert pf.bind_test("127.0.0.1", port, "tcp") == errno.EADDRINUSE
        assert pf.bind_test("", port, "tcp") == errno.EADDRINUSE
        assert pf.socket_process(port, "tcp").startswith("process ")
    finally:
        sock.close()
    assert pf.bind_test("127.0.0.1", port, "tcp") is None


@pytest.mark.parametrize("text, mb", [
    ("MemTotal:       24569012 kB\nMemFree:          312000 kB\nMemAvailable:   23851784 kB\n", 23292),
    ("MemTotal: 1000000 kB\nMemFree: 102400 kB\nBuffers: 10240 kB\nCached: 51200 kB\n", 160),
    ("", None),
])
def test_parse_meminfo(text, mb):
    assert pf.parse_meminfo(text) == mb


def test_nearest_existing(tmp_path):
    assert pf.nearest_existing(str(tmp_path / "a" / "b")) == str(tmp_path)
    assert pf.nearest_existing(str(tmp_path)) == str(tmp_path)


def params(**overrides):
    values = dict((name, spec.get("default")) for name, spec in pf.argument_spec().items())
    values.update(project="p", project_dir="/tmp", files=["c.yml"])
    values.update(overrides)
    return values


@pytest.mark.parametrize("overrides, option", [
    (dict(min_disk_free_mb=-1), "min_disk_free_mb"),
    (dict(min_memory_mb=-5), "min_memory_mb"),
    (dict(min_cores=-1), "min_cores"),
    (dict(disk_paths=["relative/path"]), "disk_paths"),
    (dict(project=None), "project"),
    (dict(files=[]), "files"),
    (dict(project_dir=None), "project_dir"),
    (dict(project="Bad Name"), "project"),
    (dict(project_dir="relative"), "project_dir"),
    (dict(files=[" "]), "files"),
    (dict(env_files=[""]), "env_files"),
    (dict(required_env=["1BAD"]), "required_env"),
    (dict(required_env=["A-B"]), "required_env"),
])
def test_bad_options_are_named(overrides, option):
    with pytest.raises(pf.PreflightError) as err:
        pf.validate(params(**overrides))
    assert option in str(err.value)


def test_host_scope_needs_no_stack():
    pf.validate(params(scope="host", project=None, project_dir=None, files=None))


def test_failure_message_joins_every_problem():
    message = pf.failure_message(params(), ["variable A is not set.", "service web uses image x with tag latest."])
    assert message == ("preflight of project p found 2 problems: variable A is not set. "
                       "service web uses image x with tag latest.")
    assert pf.failure_message(params(scope="host"), ["cpu: 1 core(s)."]).startswith("preflight of the host found 1 problem:")


class RuntimeDocker(Docker):
    """A Docker whose CLI answers `version` and `compose version` as recorded (a runner of its
    own keeps it on the CLI)."""

    def __init__(self, server=(0, "20.10.24\n", ""), compose=(0, "2.40.3\n", "")):
        Docker.__init__(self, "docker", runner=self.answer)
        self.answers = {"version": server, "compose": compose}

    def answer(self, argv, timeout=None):
        return self.answers["compose" if argv[1] == "compose" else "version"]


@pytest.mark.parametrize("docker, minimum, problem", [
    (RuntimeDocker(), "2.20.0", None),
    (RuntimeDocker(compose=(0, "v2.19.1\n", "")), "2.20.0",
     "compose: Docker Compose v2 >= 2.20.0 (compose_min_version) is needed: found v2.19.1."),
    (RuntimeDocker(compose=(1, "", "docker: 'compose' is not a docker command.")), "2.20.0",
     "compose: Docker Compose v2 >= 2.20.0 (compose_min_version) is needed: `docker compose version` failed: "
     "docker: 'compose' is not a docker command.."),
    (RuntimeDocker(server=(1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")), "2.20.0",
     "docker: `docker version` failed (rc=1): Cannot connect to the Docker daemon"),
])
def test_runtime_checks_name_what_is_missing(docker, minimum, problem):
    from ansible_collections.vpsops.deploy.plugins.module_utils._preflight import runtime_checks

    checks, problems = runtime_checks(docker, minimum)
    if problem is None:
        assert problems == [] and checks == {"docker": "20.10.24", "compose": "2.40.3"}
    else:
        assert len(problems) == 1 and problems[0].startswith(problem), problems
