"""The bad-input drill: wrong input to the collection's modules and playbooks fails, says what was wrong, and
changes nothing. Every case feeds one module or playbook a wrong type, a missing key, an unknown name, a
malformed URL or regular expression, an empty or duplicated list, an absurd timeout, an invalid compose file,
a bad port or a bad stack name, then asserts that the run failed, that its message names the option or
variable and what was expected, that no Python traceback reached the output, and that nothing changed: the
case's directory tree (paths, modes, sha256 of files, symlink targets) is the same before and after, and a
deploy left no container of its compose project and no release and no lock in its state directory.

The module cases run as one play, one task per case (`ignore_errors`), on the lab host over SSH as an operator
runs them: one Ansible start-up instead of one per case keeps the drill fast; each case has a directory of its
own (a copy of a seeded release store where it needs one) and fails as its task (`failed`, the per-task rc).
The playbook cases run ansible-playbook each. Stacks and directories are this module's own (projects
vpsops-itbi*, /var/lib/vpsops/vpsops-itbi*, loopback ports 17000-17999) and are removed at the end.
"""

import hashlib
import json
import os
import shutil
import stat
import tempfile

import pytest

from conftest import ROOT, Stack, ansible_env, container_names, remove_pin_tags, run
from test_deploy_playbook import PLAYBOOK, ROLLBACK_PLAYBOOK, playbook, stack_vars

TRACEBACK = "Traceback (most recent call last)"
PLAYBOOKS = os.path.join(ROOT, "playbooks")
ANSIBLE_PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
INVENTORY = os.path.join(ROOT, "inventories", "lab")
SEED = "vpsops-itbi"  # the stack of the seeded release store (releases r1 and r2, r2 live)
PORT_BASE = 17000

APP = """services:
  web:
    image: vpsops-lab/base:bookworm
    command: ["sleep", "%s"]
    init: true
"""
BROKEN = "services:\n  web: [unclosed\n"


def snapshot(path):
    """{relative path: (mode, sha256 of a file | target of a symlink | 'dir')} of a tree; {} when absent."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                what = "-> " + os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as handle:
                    what = hashlib.sha256(handle.read()).hexdigest()
            else:
                what = "dir"
            tree[os.path.relpath(full, path)] = (stat.S_IMODE(st.st_mode), what)
    return tree


class StateChanged(AssertionError):
    """A case changed its state directory (the one failure a case may be marked xfail for)."""


def assert_unchanged(before, after, what):
    if after != before:
        raise StateChanged("%s changed %s" % (what, sorted(set(after.items()) ^ set(before.items()))))


def said(text):
    """Output with every run of whitespace as one space and YAML's doubled quotes undone (the default
    callback wraps long messages and quotes them)."""
    return " ".join(text.split()).replace("''", "'")


def state_dir(project):
    return "/var/lib/vpsops/%s" % project


def forget(project):
    """Remove what a run of a project may have left: containers, volumes, pin tags, state."""
    names = container_names(project)
    if names:
        run(["docker", "rm", "-f", "-v"] + names, check=False)
    networks = run(["docker", "network", "ls", "-q", "--filter", "label=com.docker.compose.project=%s" % project],
                   check=False).stdout.split()
    if networks:
        run(["docker", "network", "rm"] + networks, check=False)
    remove_pin_tags(project)
    shutil.rmtree(state_dir(project), ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the module cases: (id, module, args, substrings of the message)
# {store}: a copy of the seeded store, {dir}: an empty directory, {project}: a compose project
# directory (app.yml, broken.yml); each case has its own.
# --------------------------------------------------------------------------------------------
def case(case_id, module, args, *message, marks=()):
    return pytest.param(module, args, message, id=case_id, marks=marks)


TCP = {"type": "tcp", "port": 2222}
APP_PHASE = {"name": "app", "compose_files": ["app.yml"]}
STORE = {"stack": SEED, "state_dir": "{store}"}
PG = {"login_host": "127.0.0.1", "port": PORT_BASE + 999, "login_user": "nobody"}
ENDPOINT = {"name": "api", "url": "http://127.0.0.1:%d/" % (PORT_BASE + 998)}

MODULE_CASES = [
    # health_wait: malformed regular expressions and URLs
    case("health_wait-body-bad-regex", "health_wait",
         {"checks": [{"name": "web", "type": "http", "url": "http://127.0.0.1:2222/", "body": "([unclosed"}]},
         "check 'web'", "'body' is not a valid regular expression"),
    case("health_wait-fail_pattern-bad-regex", "health_wait",
         {"checks": [{"type": "log", "container": "vpsops-itbi-web-1", "pattern": "ok", "fail_pattern": "*boom"}]},
         "checks[0]", "'fail_pattern' is not a valid regular expression"),
    case("health_wait-ftp-url", "health_wait", {"checks": [{"type": "http", "url": "ftp://127.0.0.1/x"}]},
         "checks[0]", "'url' must be an http:// or https:// URL with a host", "ftp://127.0.0.1/x"),
    case("health_wait-nats-client-url", "health_wait", {"checks": [{"type": "nats", "url": "nats://127.0.0.1:4222"}]},
         "checks[0]", "'url' must be the http:// monitoring base URL of NATS"),
    # health_wait: bad ports, missing keys, unknown type, duplicate names, wrong types
    case("health_wait-port-0", "health_wait", {"checks": [{"type": "tcp", "port": 0}]},
         "checks[0]", "'port' must be a TCP port 1-65535, got 0"),
    case("health_wait-port-70000", "health_wait", {"checks": [{"name": "db", "type": "tcp", "port": 70000}]},
         "check 'db'", "'port' must be a TCP port 1-65535, got 70000"),
    case("health_wait-port-not-a-number", "health_wait", {"checks": [{"type": "tcp", "port": "http"}]},
         "argument 'port' is of type str found in 'checks'", "unable to convert to int"),
    case("health_wait-tcp-without-port", "health_wait", {"checks": [{"name": "db", "type": "tcp"}]},
         "check 'db' (type tcp) needs 'port'"),
    case("health_wait-unknown-type", "health_wait", {"checks": [{"name": "mail", "type": "smtp", "port": 25}]},
         "value of type must be one of: command, container", "got: smtp found in checks"),
    case("health_wait-duplicate-names", "health_wait",
         {"checks": [dict(TCP, name="ssh"), dict(TCP, name="ssh")]},
         "checks[1]: the name 'ssh' is used by another check; names must be unique"),
    case("health_wait-no-checks", "health_wait", {"checks": []},
         "give at least one check in 'checks' or one container in 'containers'"),
    case("health_wait-unknown-check-key", "health_wait", {"checks": [dict(TCP, retries=3)]},
         "Unsupported parameters", "checks.retries"),
    # health_wait: absurd timeouts
    case("health_wait-timeout-negative", "health_wait", {"checks": [TCP], "timeout": -1},
         "timeout must be between 0.1 and 86400 seconds, got -1"),
    case("health_wait-timeout-zero", "health_wait", {"checks": [TCP], "timeout": 0},
         "timeout must be between 0.1 and 86400 seconds, got 0"),
    case("health_wait-timeout-huge", "health_wait", {"checks": [TCP], "timeout": 10 ** 9},
         "timeout must be between 0.1 and 86400 seconds"),
    case("health_wait-request_timeout-negative", "health_wait", {"checks": [dict(TCP, request_timeout=-3)]},
         "checks[0]: 'request_timeout' must be a positive number of seconds, got -3"),
    # nats_stream_info and slo_gate: URLs, bounds, duplicate endpoints
    case("nats_stream_info-client-url", "nats_stream_info", {"url": "nats://127.0.0.1:4222"},
         "'url' must be the http:// monitoring base URL of NATS", "nats://127.0.0.1:4222"),
    case("nats_stream_info-timeout-zero", "nats_stream_info",
         {"url": "http://127.0.0.1:%d" % (PORT_BASE + 822), "timeout": 0},
         "timeout must be a positive number of seconds, got 0"),
    case("slo_gate-max_error_rate-2", "slo_gate", {"endpoints": [ENDPOINT], "max_error_rate": 2},
         "max_error_rate must be between 0 and 1, got 2"),
    case("slo_gate-requests-0", "slo_gate", {"endpoints": [ENDPOINT], "requests": 0},
         "requests must be between 1 and 1000, got 0"),
    case("slo_gate-ftp-url", "slo_gate", {"endpoints": [dict(ENDPOINT, url="ftp://127.0.0.1/")]},
         "endpoints[0] (api): 'url' must be an http:// or https:// URL", "ftp"),
    case("slo_gate-duplicate-endpoints", "slo_gate", {"endpoints": [ENDPOINT, ENDPOINT]},
         "endpoints[1]: the name 'api' is already used by endpoints[0]"),
    case("slo_gate-no-endpoints", "slo_gate", {"endpoints": []},
         "endpoints must be a non-empty list of {name, url} dicts"),
    # the release store: unknown release, phase and service names; bad stack names; retention
    case("compose_release-unknown-release", "compose_release", dict(STORE, release="r9", state="live"),
         "release r9 does not exist in", "known releases: r1, r2"),
    case("compose_release-live-keep-1", "compose_release", dict(STORE, release="r1", state="live", keep=1),
         "keep must be 2 or more", "got 1"),
    case("compose_release-release-id-with-slash", "compose_release", dict(STORE, release="../r1", state="failed"),
         "release '../r1' is not a valid release id"),
    case("compose_release-stack-with-space", "compose_release",
         dict(STORE, stack="Bad Stack", project_dir="{project}", files=["app.yml"], pull="never"),
         "stack must be a compose project name", "got 'Bad Stack'"),
    case("compose_release-missing-compose-file", "compose_release",
         dict(STORE, project_dir="{project}", files=["nope.yml"], pull="never"),
         "files: ", "nope.yml does not exist on the host"),
    case("compose_release-invalid-compose-yaml", "compose_release",
         dict(STORE, project_dir="{project}", files=["broken.yml"], pull="never",
              phases=[{"name": "app", "compose_files": ["broken.yml"]}]),
         "docker compose config failed", "failed to parse", "broken.yml"),
    case("compose_release-duplicate-phase", "compose_release",
         dict(STORE, project_dir="{project}", files=["app.yml"], pull="never",
              phases=[{"name": "app", "compose_files": ["app.yml"]}, {"name": "app", "compose_files": ["app.yml"]}]),
         "phases: the name 'app' is used by more than one phase"),
    case("compose_release-phase-check-port-0", "compose_release",
         dict(STORE, project_dir="{project}", files=["app.yml"], pull="never",
              phases=[dict(APP_PHASE, checks=[{"name": "db", "type": "tcp", "port": 0}])]),
         "phases[app].checks: check 'db': 'port' must be a TCP port 1-65535, got 0"),
    case("compose_release_info-stack-is-a-path", "compose_release_info", {"stack": "../etc"},
         "stack must be a compose project name", "got '../etc'"),
    case("compose_rollback-unknown-release", "compose_rollback", dict(STORE, to="20200101T000000Z-dead"),
         "release 20200101T000000Z-dead does not exist in", "known releases: r1, r2"),
    case("compose_rollback-unknown-service", "compose_rollback", dict(STORE, to="r1", services=["billing"]),
         "services: 'billing' is not a service of release r1; its services are web"),
    case("compose_rollback-unknown-phase", "compose_rollback", dict(STORE, to="r1", phases=["cache"]),
         "phases: 'cache' is not a phase of release r1; its phases are app"),
    case("compose_rollback-too-far-back", "compose_rollback", dict(STORE, to="-7"),
         "to=-7: stack vpsops-itbi has only"),
    case("compose_rollback-bad-check", "compose_rollback",
         dict(STORE, to="r1", checks=[{"name": "web", "type": "http", "url": "ftp://127.0.0.1/"}]),
         "checks: check 'web': 'url' must be an http:// or https:// URL", "nothing was rolled back"),
    case("compose_rollback-timeout-zero", "compose_rollback", dict(STORE, to="r1", timeout=0),
         "timeout must be 1 second or more, got 0"),
    # deploy_lock: absurd ttls, bad owners
    case("deploy_lock-ttl-zero", "deploy_lock", dict(STORE, owner="drill@ci:1", ttl=0),
         "ttl must be between 1 and 604800 seconds", "got 0"),
    case("deploy_lock-ttl-huge", "deploy_lock", dict(STORE, owner="drill@ci:1", ttl=10 ** 12),
         "ttl must be between 1 and 604800 seconds", "got 1000000000000"),
    case("deploy_lock-ttl-not-a-number", "deploy_lock", dict(STORE, owner="drill@ci:1", ttl="forever"),
         "argument 'ttl' is of type str", "unable to convert to int"),
    case("deploy_lock-owner-blank", "deploy_lock", dict(STORE, owner="   "), "owner must not be empty"),
    case("deploy_lock-owner-two-lines", "deploy_lock", dict(STORE, owner="drill\nci:1"),
         "owner must be one line of printable text"),
    # pg_backup and pg_restore: missing db, bad format, relative paths, negative retention
    case("pg_backup-missing-db", "pg_backup", dict(PG, dest="{dir}"), "missing required arguments: db"),
    case("pg_backup-format-tar", "pg_backup", dict(PG, db="ar_db", dest="{dir}", format="tar"),
         "value of format must be one of: custom, directory, got: tar"),
    case("pg_backup-dest-relative", "pg_backup", dict(PG, db="ar_db", dest="backups/ar"),
         "dest must be an absolute path, got 'backups/ar'"),
    case("pg_backup-keep_days-negative", "pg_backup", dict(PG, db="ar_db", dest="{dir}", keep_days=-1),
         "keep_days must be 0 or more, got -1"),
    case("pg_backup-timeout-negative", "pg_backup", dict(PG, db="ar_db", dest="{dir}", timeout=-5),
         "timeout must be 0 (no limit) or more seconds, got -5"),
    case("pg_restore-src-relative", "pg_restore", dict(PG, db="ar_db", src="ar.dump"),
         "src must be an absolute path, got 'ar.dump'"),
    case("pg_restore-sha256-not-hex", "pg_restore", dict(PG, db="ar_db", src="{dir}/ar.dump", sha256="xyz"),
         "sha256 must be 64 hexadecimal digits"),
    # dead letters: SQL metacharacters in table and column names, bounds, NATS URL
    case("dlq_report-table-with-sql", "dlq_report",
         {"databases": [dict(PG, db="ar_db")], "table": "failed_events; DROP TABLE ledger"},
         "'table' must be a table or column name", "failed_events; DROP TABLE ledger"),
    case("dlq_report-column-with-quote", "dlq_report",
         {"databases": [dict(PG, db="ar_db")], "columns": {"subject": 'subject"--'}},
         "'columns.subject' must be a table or column name"),
    case("dlq_purge-table-with-sql", "dlq_purge", dict(PG, db="ar_db", table="x'); DELETE FROM ledger; --"),
         "'table' must be a table or column name"),
    case("dlq_purge-older_than_days-negative", "dlq_purge", dict(PG, db="ar_db", older_than_days=-3),
         "older_than_days must be 0 or more, got -3"),
    case("dlq_replay-limit-negative", "dlq_replay", dict(PG, db="ar_db", limit=-1), "limit must be 1 or more, got -1"),
    case("dlq_replay-http-nats-url", "dlq_replay", dict(PG, db="ar_db", nats_url="http://127.0.0.1:4222"),
         "'nats_url' must look like nats://host:4222"),
    # compose_plan, compose_preflight, compose_rollout, audit
    case("compose_plan-stack-with-space", "compose_plan",
         {"stack": "my stack", "project_dir": "{project}", "files": ["app.yml"]},
         "stack must be a compose project name", "got 'my stack'"),
    case("compose_preflight-project-dir-relative", "compose_preflight",
         {"scope": "stack", "project": SEED, "project_dir": "stack", "files": ["app.yml"], "check_ports": False},
         "project_dir must be an absolute path, got 'stack'"),
    case("compose_preflight-min_cores-negative", "compose_preflight", {"scope": "host", "min_cores": -1},
         "min_cores must be 0 or more, got -1"),
    case("compose_rollout-timeout-zero", "compose_rollout",
         {"project": SEED, "project_dir": "{project}", "files": ["app.yml"], "services": ["web"], "timeout": 0},
         "timeout must be 1 second or more", "got 0"),
    case("audit-data-not-a-dict", "audit", {"path": "{dir}/audit.jsonl", "event": "drill", "data": "x=1 y"},
         "argument 'data' is of type str", "unable to convert to dict"),
    case("audit-missing-event", "audit", {"path": "{dir}/audit.jsonl"}, "one of the following is required: event, entries"),
]


@pytest.fixture(scope="module")
def seed(lab):
    """A compose project directory and a release store of stack vpsops-itbi with releases r1 and r2
    (r2 live), recorded by compose_release; no container runs."""
    base = tempfile.mkdtemp(prefix="vpsops-itbi-")
    project = os.path.join(base, "project")
    os.mkdir(project)
    with open(os.path.join(project, "broken.yml"), "w") as handle:
        handle.write(BROKEN)
    forget(SEED)
    record = {"stack": SEED, "project_dir": project, "files": ["app.yml"], "pull": "never",
              "phases": [{"name": "app", "compose_files": ["app.yml"]}]}
    tasks = []
    for release, sleep in (("r1", "infinity"), ("r2", "99999")):
        write = {"dest": os.path.join(project, "app.yml"), "content": APP % sleep, "mode": "0644"}
        tasks += [{"name": "Write the compose file of %s" % release, "ansible.builtin.copy": write},
                  {"name": "Record %s" % release, "vpsops.deploy.compose_release": dict(record, release=release)}]
    tasks.append({"name": "Make r2 live", "vpsops.deploy.compose_release": {"stack": SEED, "release": "r2",
                                                                            "state": "live"}})
    play = os.path.join(base, "seed.yml")
    with open(play, "w") as handle:
        json.dump([{"name": "Seed", "hosts": "lab1", "gather_facts": False, "tasks": tasks}], handle)
    run([ANSIBLE_PLAYBOOK, "-i", INVENTORY, play], env=ansible_env())
    yield {"base": base, "project": project, "store": state_dir(SEED)}
    forget(SEED)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def module_runs(seed):
    """Every module case as one task of one play: {case id: (task result, before, after)}, and the
    output of the whole run under the key None."""
    cases_dir = os.path.join(seed["base"], "cases")
    os.mkdir(cases_dir)
    tasks, before, dirs = [], {}, {}
    for param in MODULE_CASES:
        case_id, module, args = param.id, param.values[0], param.values[1]
        where = dirs[case_id] = os.path.join(cases_dir, case_id)
        os.mkdir(where)
        text = json.dumps(args)
        if "{store}" in text:
            shutil.copytree(seed["store"], os.path.join(where, "store"), symlinks=True)
        if "{dir}" in text:
            os.mkdir(os.path.join(where, "dir"), 0o700)
        text = (text.replace("{store}", os.path.join(where, "store")).replace("{dir}", os.path.join(where, "dir"))
                .replace("{project}", seed["project"]))
        before[case_id] = snapshot(where)
        tasks.append({"name": case_id, "vpsops.deploy." + module: json.loads(text), "ignore_errors": True,
                      "timeout": 120})
    play = os.path.join(seed["base"], "cases.yml")
    with open(play, "w") as handle:
        json.dump([{"name": "Bad input", "hosts": "lab1", "gather_facts": False, "tasks": tasks}], handle)
    env = ansible_env()
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    proc = run([ANSIBLE_PLAYBOOK, "-i", INVENTORY, play], check=False, env=env)
    try:
        data = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        raise AssertionError("no JSON from the bad-input play (rc=%d): %s %s"
                             % (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
    results = {None: proc}
    for task in data["plays"][0]["tasks"]:
        name = task["task"]["name"]
        results[name] = (task["hosts"].get("lab1"), before[name], snapshot(dirs[name]))
    results["containers"] = container_names(SEED)
    return results


@pytest.mark.parametrize("module, args, message", MODULE_CASES)
def test_a_module_refuses_bad_input(module_runs, request, module, args, message):
    case_id = request.node.callspec.id
    proc = module_runs[None]
    assert TRACEBACK not in proc.stdout + proc.stderr
    assert case_id in module_runs, "the play did not run %s: %s" % (case_id, proc.stdout[-2000:])
    result, before, after = module_runs[case_id]
    assert result is not None and result.get("failed") is True, result
    text = json.dumps(result)
    assert TRACEBACK not in text and "module_stderr" not in result, result
    for part in message:
        assert part in result["msg"], result["msg"]
    assert_unchanged(before, after, case_id)
    assert module_runs["containers"] == [], "a case started containers of %s" % SEED


# --------------------------------------------------------------------------------------------
# the playbook cases: (id, playbook, vars for a project name, substrings of the message)
# --------------------------------------------------------------------------------------------
def lab_stack(project, **changes):
    """stack_vars of the lab platform under project, with top-level keys of vpsops_stack changed."""
    values = stack_vars(Stack(project, PORT_BASE))
    values["vpsops_stack"].update(changes)
    return values


def drop(key):
    def build(project, seed):
        values = lab_stack(project)
        del values["vpsops_stack"][key]
        return values
    return build


def small_stack(phases, extra=None, **changes):
    """A one-service stack from the drill's project directory (fails, if it fails late, in seconds)."""
    def build(project, seed):
        values = lab_stack(project, source=seed["project"], env={"DRILL": "1"}, phases=phases, **changes)
        values["deploy_phase_timeout"] = 20
        values.update(extra or {})
        return values
    return build


def with_stack(**changes):
    return lambda project, seed: lab_stack(project, **changes)


def with_vars(stack, full=False, **extra):
    """vpsops_stack as `stack` (with the project's name; over the lab platform's when full), plus extra vars."""
    def build(project, seed):
        values = lab_stack(project, **stack) if full else {"vpsops_stack": dict(stack, name=project)}
        values.update(extra)
        return values
    return build


def pcase(case_id, path, build, *message, project=None, marks=()):
    return pytest.param(path, build, message, project, id=case_id, marks=marks)


DATABASES = {"ar": {"login_host": "127.0.0.1", "port": PORT_BASE + 434, "db": "ar_db", "login_user": "ar_user",
                    "login_password": "drill-not-a-secret"}}

PLAYBOOK_CASES = [
    # deploy.yml: missing, empty, unknown and duplicate keys of vpsops_stack (fail at the check, in seconds)
    pcase("deploy-no-phases", PLAYBOOK, drop("phases"), "missing required arguments: phases"),
    pcase("deploy-no-source", PLAYBOOK, drop("source"), "missing required arguments: source"),
    pcase("deploy-unknown-stack-key", PLAYBOOK, with_stack(services=["ar"]),
          "vpsops_stack.services. Supported parameters include"),
    pcase("deploy-phase-empty-compose-files", PLAYBOOK, with_stack(phases=[{"name": "app", "compose_files": []}]),
          "vpsops_stack.phases must be a non-empty list of phases", "non-empty 'compose_files' list"),
    pcase("deploy-phases-not-a-list", PLAYBOOK, with_stack(phases="infrastructure,modules"),
          "phases", "list"),
    pcase("deploy-stack-name-with-spaces", PLAYBOOK, with_stack(), "vpsops_stack needs 'name' (lowercase letters",
          project="vpsops itbi"),
    pcase("deploy-env-name-with-dash", PLAYBOOK, with_stack(env={"RELEASE-TAG": "v1"}),
          "vpsops_stack.env.RELEASE-TAG must be a valid variable name"),
    pcase("deploy-database-without-db", PLAYBOOK, with_stack(databases={"ar": {"login_host": "127.0.0.1"}}),
          "missing required arguments: db found in vpsops_stack.databases.ar"),
    pcase("deploy-backup-format-tar", PLAYBOOK, with_stack(backup={"dest": "/var/backups/x", "format": "tar"}),
          "value of format must be one of: custom, directory, got: tar"),
    # deploy.yml: compose files that do not exist or are not YAML, checks that cannot run (fail on the host,
    # before the release is recorded or anything is started)
    pcase("deploy-compose-file-missing", PLAYBOOK, small_stack([dict(APP_PHASE, compose_files=["nope.yml"])]),
          "nope.yml"),
    pcase("deploy-compose-file-not-yaml", PLAYBOOK, small_stack([dict(APP_PHASE, compose_files=["broken.yml"])]),
          "docker compose config", "broken.yml"),
    pcase("deploy-check-bad-regex", PLAYBOOK,
          small_stack([dict(APP_PHASE, checks=[{"name": "started", "type": "log", "container": "x",
                                                "pattern": "(["}])]),
          "check 'started': 'pattern' is not a valid regular expression"),
    # rollback.yml: unknown release and service names (the seeded store of vpsops-itbi)
    pcase("rollback-unknown-release", ROLLBACK_PLAYBOOK, with_vars({}, rollback_to="20200101T000000Z-dead"),
          "release 20200101T000000Z-dead does not exist", project=SEED),
    pcase("rollback-unknown-service", ROLLBACK_PLAYBOOK, with_vars({}, rollback_to="r1", rollback_services=["billing"]),
          "services: 'billing' is not a service of release r1", project=SEED),
    # health.yml, restore.yml and dlq.yml
    pcase("health-timeout-huge", os.path.join(PLAYBOOKS, "health.yml"),
          small_stack([dict(APP_PHASE, checks=[{"name": "ssh", "type": "tcp", "port": 2222}])],
                      extra={"health_timeout": 10 ** 9}),
          "timeout must be between 0.1 and 86400 seconds"),
    pcase("health-check-bad-regex", os.path.join(PLAYBOOKS, "health.yml"),
          small_stack([dict(APP_PHASE, checks=[{"name": "home", "type": "http", "url": "http://127.0.0.1:2222/",
                                                "body": "*ok"}])]),
          "'body' is not a valid regular expression"),
    pcase("restore-database-list", os.path.join(PLAYBOOKS, "restore.yml"),
          with_vars({"databases": DATABASES}, full=True, restore_database=["ar"],
                    restore_src="/nonexistent/ar.dump"), "restore_database"),
    pcase("dlq-database-without-db", os.path.join(PLAYBOOKS, "dlq.yml"),
          with_vars({"databases": {"ar": {"login_host": "127.0.0.1"}}}, dlq_action="report"),
          "vpsops_stack.databases.ar needs 'db'"),
]


@pytest.mark.parametrize("path, build, message, project", PLAYBOOK_CASES)
def test_a_playbook_refuses_bad_input(seed, tmp_path, request, path, build, message, project):
    project = project or "vpsops-itbi-%s" % request.node.callspec.id.split("-", 1)[1][:40].rstrip("-")
    values = build(project, seed)
    if project != SEED:
        forget(project)
    before = snapshot(state_dir(project))
    try:
        proc = playbook(tmp_path, values, path=path)
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, proc.stdout[-3000:]
        assert TRACEBACK not in output
        for part in message:
            assert part in said(output), said(proc.stdout)[-3000:]
        assert container_names(project) == []
        if path == PLAYBOOK:
            # A deploy that stops at its checks leaves no release and no lock behind.
            releases = os.path.join(state_dir(project), "releases")
            assert not os.path.exists(os.path.join(state_dir(project), "lock.json"))
            assert not os.path.isdir(releases) or os.listdir(releases) == []
        else:
            assert_unchanged(before, snapshot(state_dir(project)), state_dir(project))
    finally:
        if project != SEED:
            forget(project)
