"""The lab is real: Compose with healthchecks, PostgreSQL, JetStream, the demo consumers, SSH."""

import asyncio
import json
import os
import subprocess
import uuid

import psycopg2
import pytest

from conftest import ROOT, SSH_PORT, Stack, ansible_env, http_json, load_lab_module, run, wait_until

LAB = [os.path.join(ROOT, "bin", "lab")]


def container_state(name):
    out = run(["docker", "inspect", "--format", "{{json .State}}", name]).stdout
    return json.loads(out)


def test_every_service_is_up_and_healthy_under_compose(stack):
    out = stack.compose("ps", "--format", "json").stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    if len(rows) == 1 and isinstance(rows[0], list):
        rows = rows[0]
    services = sorted(r["Service"] for r in rows)
    assert services == sorted(["nats", "ar-postgres", "payments-postgres", "auth", "auth", "auth-lb",
                               "ar", "payments"])
    for row in rows:
        state = container_state(row["Name"])
        assert state["Status"] == "running", row["Name"]
        # every service of the demo has a healthcheck, and compose --wait saw it healthy
        assert state["Health"]["Status"] == "healthy", row["Name"]


@pytest.mark.parametrize("port_key, service", [("AUTH_PORT", "auth"), ("AR_PORT", "ar"), ("PAYMENTS_PORT", "payments")])
def test_api_health_answers_ok(stack, port_key, service):
    status, body = http_json(stack.url(port_key))
    assert status == 200
    assert body["status"] == "ok"
    assert body["service"] == service
    assert body["release"] == "v1"


def test_load_balancer_spreads_over_two_auth_replicas(stack):
    instances = set()
    for _request in range(30):
        instances.add(http_json(stack.url("AUTH_PORT"))[1]["instance"])
        if len(instances) == 2:
            break
    assert len(instances) == 2


@pytest.mark.parametrize("which", ["ar", "payments"])
def test_postgres_answers_queries(stack, which):
    with psycopg2.connect(connect_timeout=5, **stack.psql_dsn(which)) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_database(), version()")
        db, version = cur.fetchone()
        assert db == "%s_db" % which
        assert "PostgreSQL 15" in version
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'failed_events' "
                    "ORDER BY ordinal_position")
        assert [r[0] for r in cur.fetchall()] == ["id", "event_id", "subject", "tenant_id", "envelope_json",
                                                  "error", "retry_count", "failed_at"]


def test_jetstream_streams_and_durable_consumers_exist(stack):
    _status, jsz = http_json(stack.url("NATS_MONITOR_PORT", "/jsz?streams=true&consumers=true"))
    streams = {}
    for account in jsz["account_details"]:
        for stream in account.get("stream_detail", []):
            streams[stream["name"]] = sorted(c["name"] for c in stream.get("consumer_detail", []))
    assert streams["AR_EVENTS"] == ["payments"]
    assert streams["PAYMENTS_EVENTS"] == ["ar"]
    status, _body = http_json(stack.url("NATS_MONITOR_PORT", "/healthz?js-enabled-only=true"))
    assert status == 200


@pytest.mark.parametrize("service", ["ar", "payments"])
def test_modules_log_their_subscription(stack, service):
    logs = run(["docker", "logs", stack.container(service)]).stdout
    subject = {"ar": "payments.events.payments.payment.succeeded",
               "payments": "ar.events.ar.payment.collection.requested"}[service]
    assert "Subscribed to %s" % subject in logs


def publish(stack, subject, payload):
    import nats

    async def go():
        nc = await nats.connect("nats://127.0.0.1:%d" % stack.ports["NATS_PORT"], connect_timeout=5)
        try:
            ack = await nc.jetstream().publish(subject, json.dumps(payload).encode())
            return ack.seq
        finally:
            await nc.close()

    return asyncio.run(go())


def query(stack, which, sql, args=()):
    with psycopg2.connect(connect_timeout=5, **stack.psql_dsn(which)) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def test_published_event_is_consumed_written_and_answered(stack):
    event_id = "it-" + uuid.uuid4().hex
    assert publish(stack, "ar.events.ar.payment.collection.requested", {"event_id": event_id, "tenant_id": "t-1"}) > 0
    rows = wait_until("payments stores the event", lambda: query(
        stack, "payments", "SELECT subject, tenant_id, release FROM processed_events WHERE event_id = %s", (event_id,)))
    assert rows == [("ar.events.ar.payment.collection.requested", "t-1", "v1")]
    # payments answers through its outbox with payment.succeeded, which AR consumes
    reply = wait_until("AR stores the payment.succeeded answer", lambda: query(
        stack, "ar", "SELECT subject FROM processed_events WHERE payload->>'caused_by' = %s", (event_id,)))
    assert reply == [("payments.events.payments.payment.succeeded",)]
    published = query(stack, "payments", "SELECT published_at IS NOT NULL FROM events_outbox WHERE event_id = %s",
                      (event_id + "-payment.succeeded",))
    assert published == [(True,)]


def test_event_that_cannot_be_processed_lands_in_failed_events(stack):
    event_id = "it-fail-" + uuid.uuid4().hex
    publish(stack, "ar.events.ar.payment.collection.requested",
            {"event_id": event_id, "tenant_id": "t-9", "fail": True, "reason": "card declined"})
    rows = wait_until("the failure lands in failed_events", lambda: query(
        stack, "payments", "SELECT subject, tenant_id, error, retry_count, envelope_json->>'event_id' "
        "FROM failed_events WHERE event_id = %s", (event_id,)))
    assert len(rows) == 1
    subject, tenant, error, retries, envelope_event = rows[0]
    assert (subject, tenant, envelope_event) == ("ar.events.ar.payment.collection.requested", "t-9", event_id)
    assert "card declined" in error
    assert retries == 3
    assert query(stack, "payments", "SELECT count(*) FROM processed_events WHERE event_id = %s", (event_id,)) == [(0,)]


def test_ansible_pings_and_runs_a_task_over_ssh(lab):
    env = ansible_env()
    inv = os.path.join(ROOT, "inventories", "lab")
    ping = run([os.path.join(ROOT, ".venv", "bin", "ansible"), "-i", inv, "all", "-m", "ansible.builtin.ping"], env=env)
    assert "pong" in ping.stdout
    cmd = run([os.path.join(ROOT, ".venv", "bin", "ansible"), "-i", inv, "all", "-m", "ansible.builtin.command",
               "-a", "printenv SSH_CONNECTION"], env=env)
    # the task ran in a session of the lab's sshd: SSH_CONNECTION is "client port server port"
    assert "lab1 | CHANGED" in cmd.stdout
    assert "127.0.0.1 %d" % SSH_PORT in cmd.stdout


def on_hosts(names, command):
    """{host: stdout} of a shell command run over SSH on lab hosts (.lab/hosts.yml)."""
    env = ansible_env()
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    proc = run([os.path.join(ROOT, ".venv", "bin", "ansible"), "-i", os.path.join(ROOT, "inventories", "lab"),
                "-i", os.path.join(ROOT, ".lab", "hosts.yml"), ":".join(names), "-m", "ansible.builtin.shell",
                "-a", "true; {%% raw %%}%s{%% endraw %%}" % command], env=env)
    results = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]
    return dict((name, results[name]["stdout"]) for name in names)


def test_lab_hosts_are_hosts_of_their_own(lab):
    """Two lab hosts reached over SSH: each its own address, hostname, Docker daemon (with the lab's
    images), containers and /var/lib/vpsops; `host del` leaves nothing behind, even of a host
    whose dockerd died."""
    run(LAB + ["host", "add", "ittest", "ittest2"])
    try:
        hosts = dict((h["name"], h) for h in json.loads(run(LAB + ["host", "list"]).stdout))
        one, two = hosts["ittest"], hosts["ittest2"]
        assert one["address"].startswith("10.213.") and one["address"] != two["address"]
        mark = "itmark-" + uuid.uuid4().hex[:8]
        seen = on_hosts(["ittest", "ittest2"], (
            "ip -o -4 addr show; echo host=$(hostname) docker=$(docker info --format '{{.Name}}'); "
            "docker image inspect --format 'auth={{.Id}}' vpsops-demo/auth:v1; "
            "test \"$(hostname)\" != ittest || { docker run -d --name %s vpsops-lab/base:bookworm sleep 300 "
            ">/dev/null && touch /var/lib/vpsops/%s; }; "
            "docker ps --format 'ps={{.Names}}'; ls /var/lib/vpsops" % (mark, mark)))
        auth_v1 = run(["docker", "image", "inspect", "--format", "{{.Id}}", "vpsops-demo/auth:v1"]).stdout.strip()
        for name, host in hosts.items():
            if name not in ("ittest", "ittest2"):
                continue
            other = two if host is one else one
            out = seen[name]
            # the task ran inside the host's namespaces: its address only, its hostname, its daemon
            assert host["address"] in out and other["address"] not in out, out
            assert "host=%s docker=%s" % (name, name) in out, out
            # the lab's images are in every host's daemon, with the lab daemon's image IDs
            assert "auth=%s" % auth_v1 in out, out
        # the container and the file are ittest's alone: not ittest2's, not this machine's
        assert "ps=%s" % mark in seen["ittest"] and mark in seen["ittest"].split("ps=%s" % mark)[1]
        assert mark not in seen["ittest2"]
        assert mark not in run(["docker", "ps", "-a", "--format", "{{.Names}}"]).stdout
        assert not os.path.exists("/var/lib/vpsops/%s" % mark)
        assert os.path.exists(os.path.join(one["root"], "vpsops", mark))
        # this machine reaches a host's daemon through the socket `host list` names
        names = run(["docker", "-H", one["docker_host"], "ps", "--format", "{{.Names}}"]).stdout.split()
        assert names == [mark]
        # a host whose dockerd died is removed as completely as a running one
        os.kill(int(open("/run/vpsops-lab/hosts/ittest2/docker.pid").read()), 9)
    finally:
        run(LAB + ["host", "del", "ittest", "ittest2"])
    listed = run(LAB + ["host", "list"]).stdout
    assert "ittest" not in listed
    assert "vpsops-ittest" not in run(["ip", "netns", "list"]).stdout
    processes = run(["ps", "-eo", "args"]).stdout
    for host in (one, two):
        assert not os.path.exists(host["root"]), host["root"]
        assert not os.path.exists(host["docker_host"][len("unix://"):])
        # no dockerd, sshd or container of the host runs any more
        assert "--cgroup-parent=/vpsops-lab-%s\n" % host["name"] not in processes
        assert "sshd_%s.conf" % host["name"] not in processes
        assert not os.path.exists("/sys/fs/cgroup/pids/vpsops-lab-%s" % host["name"])


@pytest.mark.parametrize("argv, message", [
    (["build-release", "bad/tag"], "is not a valid image tag"),
    (["build-release", "x1", "--behaviour", "sleepy"], "--behaviour must be one of good, never_healthy"),
    (["build-release", "x1", "--services", "ar,billing"], "--services: unknown service(s) billing"),
    (["host", "add", "Bad Name!"], "host name 'Bad Name!': expected 1-10 letters"),
    (["host", "del", "nosuchhost"], "no lab host named 'nosuchhost'"),
    (["host", "add", "0"], "host add N: N from 1 to 249, got 0"),
    (["host", "exec", "nosuchhost", "--", "true"], "no lab host named 'nosuchhost'"),
])
def test_lab_bad_input_is_named_without_traceback(lab, argv, message):
    proc = run(LAB + argv, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_lab_refuses_an_ssh_port_in_use(lab):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        env = dict(os.environ, VPSOPS_LAB_SSH_PORT=str(port))
        # a separate state dir for this check is not needed: the port check comes before any start
        proc = run(LAB + ["up"], check=False, env=env)
    assert proc.returncode == 2
    assert "port 127.0.0.1:%d is already in use" % port in proc.stderr
    assert "VPSOPS_LAB_SSH_PORT" in proc.stderr


# --------------------------------------------------------------------------------------------
# Releases: tags are parameters, and the broken releases really break
# --------------------------------------------------------------------------------------------
def image_id(ref):
    return run(["docker", "image", "inspect", "--format", "{{.Id}}", ref]).stdout.strip()


def test_a_tag_can_be_rebuilt_with_other_content(lab):
    run(LAB + ["build-release", "it-reuse", "--services", "ar", "--label", "first"])
    first = image_id("vpsops-demo/ar:it-reuse")
    run(LAB + ["build-release", "it-reuse", "--services", "ar", "--label", "second", "--behaviour", "never_healthy"])
    second = image_id("vpsops-demo/ar:it-reuse")
    assert first != second
    labels = json.loads(run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}",
                             "vpsops-demo/ar:it-reuse"]).stdout)
    assert labels["org.opencontainers.image.version"] == "second"
    assert labels["vpsops.demo.behaviour"] == "never_healthy"


def judged(state):
    """The state once the healthcheck has given a verdict, else None."""
    return state if state["Health"]["Status"] != "starting" else None


def exited(state):
    return state if state["Status"] == "exited" else None


def test_never_healthy_release_stays_unhealthy(stack):
    name = "vpsops-it-unhealthy"
    run(["docker", "rm", "-f", name], check=False)
    run(["docker", "run", "-d", "--name", name, "-e", "SERVICE_ROLE=auth", "-e", "SERVICE_NAME=auth",
         "vpsops-demo/auth:v3-unhealthy"])
    try:
        state = wait_until("the healthcheck judges the container",
                           lambda: judged(container_state(name)), timeout=90)
        assert state["Health"]["Status"] == "unhealthy"
        assert state["Running"] is True
    finally:
        run(["docker", "rm", "-f", name], check=False)


def test_crash_release_is_healthy_then_exits(stack):
    run(LAB + ["build-release", "it-crash", "--services", "auth", "--behaviour", "crash_after", "--crash-after", "6"])
    name = "vpsops-it-crash"
    run(["docker", "rm", "-f", name], check=False)
    run(["docker", "run", "-d", "--name", name, "-e", "SERVICE_ROLE=auth", "vpsops-demo/auth:it-crash"])
    try:
        wait_until("healthy first", lambda: container_state(name).get("Health", {}).get("Status") == "healthy",
                   timeout=20)
        state = wait_until("exited later", lambda: exited(container_state(name)), timeout=30)
        assert state["ExitCode"] == 1
        assert "FATAL" in run(["docker", "logs", name]).stdout
    finally:
        run(["docker", "rm", "-f", name], check=False)


def test_stuck_release_is_healthy_but_stops_consuming(lab):
    st = Stack("vpsops-it-stuck", 21000)
    st.down()
    try:
        st.compose("up", "-d", "--wait", "--wait-timeout", "180", "nats", "payments-postgres", "payments",
                   PAYMENTS_TAG="v3-stuck")
        status, body = http_json(st.url("PAYMENTS_PORT"))
        assert status == 200 and body["release"] == "v3"
        assert "Subscribed to ar.events.ar.payment.collection.requested" in run(
            ["docker", "logs", st.container("payments")]).stdout
        for n in range(5):
            publish(st, "ar.events.ar.payment.collection.requested", {"event_id": "stuck-%d" % n})

        def pending():
            jsz = http_json(st.url("NATS_MONITOR_PORT", "/jsz?streams=true&consumers=true"))[1]
            for account in jsz["account_details"]:
                for stream in account.get("stream_detail", []):
                    for consumer in stream.get("consumer_detail", []):
                        if consumer["name"] == "payments":
                            return consumer["num_pending"]
            return None

        assert wait_until("five messages pending", lambda: pending() == 5, timeout=20)
        assert query(st, "payments", "SELECT count(*) FROM processed_events") == [(0,)]
    finally:
        st.down()


def test_lab_as_a_user_without_rights_says_what_to_do(lab):
    proc = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + LAB + ["up"], check=False,
               env=dict(os.environ, HOME="/tmp"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "run bin/lab as root" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_source_digest_follows_content(tmp_path):
    lab_module = load_lab_module()
    (tmp_path / "a.py").write_text("print(1)\n")
    first = lab_module.source_digest(str(tmp_path))
    assert lab_module.source_digest(str(tmp_path)) == first
    (tmp_path / "a.py").write_text("print(2)\n")
    assert lab_module.source_digest(str(tmp_path)) != first


@pytest.mark.parametrize("tag", ["v1", "v2", "v3-unhealthy", "v3-crash", "v3-stuck"])
def test_standard_release_images_are_built_from_the_current_sources(lab, tag):
    """`bin/lab up` rebuilds a standard release whose image predates a change of the demo's code."""
    lab_module = load_lab_module()
    for service in ("auth", "ar", "payments", "lb"):
        assert lab_module.image_current("vpsops-demo/%s:%s" % (service, tag), lab_module.app_digest()), service


def test_process_running_counts_an_unreaped_child_as_stopped():
    """dockerd started by `bin/lab test` stays its unreaped child once stopped: a zombie must not
    count as running, or stopping it (bin/lab down, the daemon restart drill) waits forever."""
    lab_module = load_lab_module()
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert lab_module.process_running(child.pid)
        child.terminate()
        wait_until("the child exited", lambda: open("/proc/%d/stat" % child.pid).read().split(")")[-1].split()[0] == "Z",
                   timeout=10, interval=0.05)
        assert not lab_module.process_running(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not lab_module.process_running(child.pid)


@pytest.mark.parametrize("argv, extra", [
    (["demo", "-e", "release_tag=v2"], ["-e", "release_tag=v2"]),
    (["demo", "--", "-e", "release_tag=v2", "--check"], ["-e", "release_tag=v2", "--check"]),
    (["test", "pytest", "--", "-k", "rollout"], ["pytest", "--", "-k", "rollout"]),
    (["demo"], []),
])
def test_demo_and_test_pass_their_arguments_through_in_order(argv, extra):
    lab_module = load_lab_module()
    args = lab_module.parse_args(lab_module.build_parser(), argv)
    assert args.command == argv[0]
    assert args.extra == extra
