"""Every job template of docs/awx.md, run the way AWX runs a job: ansible-runner (`ansible_runner.run`)
over a private data directory laid out as AWX writes it, against the lab host over SSH.

The private data directory of each job:
  project/          the checkout (AWX copies the project's revision into each job)
  inventory/hosts   an executable script that prints the inventory as JSON, as AWX writes it: the
                    lab host, the stack (vpsops_stack), its vault_* secrets in clear (AWX holds the
                    synced, decrypted variables) and the webhook (vpsops_notify_url)
  env/extravars     the template's extra variables, the survey answers and AWX's awx_* variables
  env/envvars       what AWX and its credentials put in the job's environment: the execution
                    environment's collections (this checkout as the collection vpsops.deploy), the
                    known-hosts credential's file, the audit log
  env/ssh_key       the Machine credential's key (ansible-runner loads it into an ssh-agent)
  env/cmdline       -u <the Machine credential's user>, and --check for a job of type Check
Survey questions left blank are sent in each of the three ways AWX versions send them: null, the
empty string, or not at all. Each job asserts its status, its outcome on the host, and that no
planted secret (the two database passwords and the webhook's token) is in any file of
artifacts/<ident>/job_events/ nor in the job's stdout.

One stack is shared by every job (compose project vpsops-itawx on loopback ports 16xxx, webhook on
16990, state and backups under /var/lib/vpsops/vpsops-itawx and /var/backups/vpsops/vpsops-itawx):
deploy v1, the read-only and data templates on it, deploy v2, then roll back. Removed at the end.
"""

import json
import os
import re
import secrets
import shutil
import stat
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ROOT, SSH_PORT, VENV_BIN, Stack, ansible_module, remove_pin_tags, run
from test_deploy_playbook import images, stack_vars
from test_ops_playbooks import FAILED, psql
from test_slo_notify import receiving, webhook

ansible_runner = pytest.importorskip("ansible_runner")

# The runner plumbing (private data directory, job, events); Job is imported from here by other tests.
from awx_runner import SSH_DIR, Job, collections_of, copy_checkout, private_data_dir, run_job  # noqa: E402,F401

PROJECT = "vpsops-itawx"
PORT_BASE = 16000
RECEIVER_PORT = PORT_BASE + 990
STATE_DIR = "/var/lib/vpsops/%s" % PROJECT
BACKUP_DIR = "/var/backups/vpsops/%s" % PROJECT
DOCS = os.path.join(ROOT, "docs", "awx.md")

ABSENT = object()  # a survey question that AWX leaves out of the extra variables
BLANKS = {"null": None, "empty": "", "absent": ABSENT}

# The job templates of docs/awx.md: playbook and the template's own extra variables.
TEMPLATES = {
    "vpsops host": {"playbook": "playbooks/host.yml"},
    "vpsops deploy": {"playbook": "playbooks/deploy.yml",
                      # docs/awx.md: in AWX inventory_dir is not the project's; the template says
                      # where the compose files are (the lab's, here).
                      "extra_vars": {"platform_compose_dir": "{{ playbook_dir }}/../lab/stack"}},
    "vpsops rollback": {"playbook": "playbooks/rollback.yml"},
    "vpsops backup": {"playbook": "playbooks/backup.yml"},
    "vpsops restore": {"playbook": "playbooks/restore.yml"},
    "vpsops health": {"playbook": "playbooks/health.yml"},
    "vpsops dlq": {"playbook": "playbooks/dlq.yml"},
    "vpsops status": {"playbook": "playbooks/status.yml"},
}
# The job types this module runs each template as, and the optional survey questions it leaves
# blank in all three forms (the test of the docs below holds them to docs/awx.md).
JOB_TYPES = {
    "vpsops host": {"run", "check"}, "vpsops deploy": {"run", "check"}, "vpsops rollback": {"run", "check"},
    "vpsops backup": {"run"}, "vpsops restore": {"run", "check"}, "vpsops health": {"run"},
    "vpsops dlq": {"run", "check"}, "vpsops status": {"run"},
}
BLANKED = {
    "vpsops host": ["host_docker_source", "host_deploy_user"],
    "vpsops deploy": ["deploy_phase_timeout", "vpsops_max_fail_percentage"],
    "vpsops rollback": ["rollback_phases", "rollback_services"],
    "vpsops backup": ["backup_databases", "backup_label"],
    "vpsops restore": ["restore_src", "restore_release", "restore_confirm"],
    "vpsops health": ["health_phases", "health_timeout"],
    "vpsops dlq": ["dlq_databases", "dlq_subject", "dlq_older_than_days", "dlq_confirm"],
    "vpsops status": ["status_fail_unhealthy", "status_history"],
}


def blank(template, form, *keep):
    """Survey answers: every question of BLANKED[template] left blank in the given form, but keep."""
    return {name: BLANKS[form] for name in BLANKED[template] if name not in keep}


# --------------------------------------------------------------------------------------------
# docs/awx.md
# --------------------------------------------------------------------------------------------
def documented_templates():
    """{template: (playbook, {"run", "check"}, {survey variable: optional})} from the table of docs/awx.md."""
    found = {}
    with open(DOCS) as handle:
        for line in handle:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) != 4 or not cells[0].startswith("vpsops "):
                continue
            playbook = re.search(r"`([^`]+\.yml)`", cells[1]).group(1)
            types = set(kind.lower() for kind in re.findall(r"\b(Run|Check)\b", cells[2]))
            survey = {}
            for item in re.finditer(r"`([a-z_]+)` \(([^)]*)\)", cells[3]):
                survey[item.group(1)] = "optional" in item.group(2) or "default" in item.group(2)
            found[cells[0]] = (playbook, types, survey)
    return found


def test_every_job_template_of_the_docs_is_run_with_its_blank_answers():
    documented = documented_templates()
    assert set(documented) == set(TEMPLATES), "docs/awx.md lists %s" % sorted(documented)
    for name, (playbook, types, survey) in documented.items():
        assert TEMPLATES[name]["playbook"] == playbook, name
        assert JOB_TYPES[name] == types, "%s: docs/awx.md runs it as %s" % (name, sorted(types))
        optional = set(var for var, is_optional in survey.items() if is_optional)
        # restore_src and restore_release share one template: either may be left blank.
        if name == "vpsops restore":
            optional |= {"restore_src", "restore_release"}
        assert optional - {"rollback_to", "dlq_action"} <= set(BLANKED[name]), \
            "%s: optional survey questions %s are never left blank here" % (name, sorted(optional - set(BLANKED[name])))
        assert set(BLANKED[name]) <= set(survey), \
            "%s: %s are not survey questions in docs/awx.md" % (name, BLANKED[name])


def test_the_search_finds_a_secret_in_any_event_file_and_in_the_stdout(tmp_path):
    """The search itself, on artifacts written like ansible-runner's: it names file, event, task and field."""
    events = tmp_path / "artifacts" / "job-1" / "job_events"
    events.mkdir(parents=True)
    (events / "1-aaaa.json").write_text(json.dumps({"event": "playbook_on_start", "event_data": {}}))
    (events / "2-bbbb.json").write_text(json.dumps({"event": "runner_item_on_ok", "event_data": {
        "task": "Bring up", "res": {"invocation": {"module_args": {"checks": [{"login_password": "pw-1"}]}}}}}))
    (events / "cccc-partial.json").write_text(json.dumps({"event": "verbose", "stdout": "token tok-2"}))
    (tmp_path / "artifacts" / "job-1" / "stdout").write_text("ok\nurl https://h/tok-2\n")
    job = Job(1, "vpsops deploy", "run", {}, str(tmp_path), type("Result", (), {"status": "successful", "rc": 0}), 0)
    found = job.leaks({"password": "pw-1", "token": "tok-2", "absent": "nowhere-3"})
    assert found == [
        "job-1: job_events/2-bbbb.json, event runner_item_on_ok, task 'Bring up', field "
        "event.event_data.res.invocation.module_args.checks[0].login_password holds password",
        "job-1: job_events/cccc-partial.json, event verbose, task None, field event.stdout holds token",
        "job-1: stdout holds token: url https://h/<token>"], found


# --------------------------------------------------------------------------------------------
# jobs as AWX runs them
# --------------------------------------------------------------------------------------------
class Awx:
    """The stand-in for AWX: the project, the inventory, the credentials, and every job it ran."""

    def __init__(self, base):
        self.base = str(base)
        self.st = Stack(PROJECT, PORT_BASE)
        token = "tok" + secrets.token_hex(16)
        self.needles = {"vault_ar_db_password": "S3CRET-ar-" + secrets.token_hex(12),
                        "vault_payments_db_password": "S3CRET-pay-" + secrets.token_hex(12),
                        "the webhook token": token}
        self.st.passwords = {"AR_DB_PASSWORD": self.needles["vault_ar_db_password"],
                             "PAYMENTS_DB_PASSWORD": self.needles["vault_payments_db_password"]}
        self.notify_url = webhook(token, RECEIVER_PORT)
        self.audit_log = os.path.join(self.base, "audit.jsonl")
        self.host_roots = {"host_state_root": os.path.join(self.base, "host", "lib", "vpsops"),
                           "host_backup_root": os.path.join(self.base, "host", "backups", "vpsops")}
        self.jobs = []
        self.launched = 0
        self.lock = threading.Lock()
        self.receiver = None
        # The project's revision, checked out once (AWX copies it into each job) ...
        self.project = os.path.join(self.base, "project")
        copy_checkout(self.project)
        # ... and the execution environment's collections: this collection, built from the checkout.
        self.collections = collections_of(self.project, os.path.join(self.base, "ee", "collections"))

    def stack(self):
        """vpsops_stack as the inventory source holds it: secrets only through vault_* variables."""
        stack = stack_vars(self.st)["vpsops_stack"]
        p = self.st.ports
        stack["source"] = "{{ platform_compose_dir }}"
        # A release changes the ar module only: the second deploy and the rollback recreate one service.
        stack["env"].update(RELEASE_TAG="v1", AR_TAG="{{ release_tag | default('v1', true) }}",
                            AR_DB_PASSWORD="{{ vault_ar_db_password }}",
                            PAYMENTS_DB_PASSWORD="{{ vault_payments_db_password }}")
        infrastructure, platform = stack["phases"][0], stack["phases"][1]
        for check in infrastructure["checks"]:
            if check["name"] == "ar-db":
                check["login_password"] = "{{ vault_ar_db_password }}"
        infrastructure["checks"].append({"name": "payments-db-login", "type": "postgres", "port": p["PAYMENTS_DB_PORT"],
                                         "db": "payments_db", "login_user": "payments_user",
                                         "login_password": "{{ vault_payments_db_password }}"})
        stack["databases"] = {
            "ar": {"container": self.st.container("ar-postgres"), "db": "ar_db", "login_user": "ar_user",
                   "login_password": "{{ vault_ar_db_password }}"},
            "payments": {"login_host": "127.0.0.1", "port": p["PAYMENTS_DB_PORT"], "db": "payments_db",
                         "login_user": "payments_user", "login_password": "{{ vault_payments_db_password }}"}}
        stack["backup"] = {"dest": BACKUP_DIR, "keep": 10}
        stack["nats_url"] = "nats://127.0.0.1:%d" % p["NATS_PORT"]
        platform["backup"] = ["ar", "payments"]  # every deploy pins a backup of both to its release
        return stack

    def inventory(self):
        """The job's inventory as AWX's script prints it (ansible-inventory's JSON)."""
        group_vars = {
            "ansible_user": "root",
            "ansible_python_interpreter": "/usr/bin/python3",
            # The known-hosts credential of docs/awx.md sets VPSOPS_EXAMPLE_KNOWN_HOSTS.
            "ansible_ssh_common_args": ("-o StrictHostKeyChecking=yes -o UserKnownHostsFile="
                                        "{{ lookup('ansible.builtin.env', 'VPSOPS_EXAMPLE_KNOWN_HOSTS') }}"),
            # What the source's group_vars say; in AWX it points nowhere, the deploy template corrects it.
            "platform_compose_dir": "{{ inventory_dir }}/../../files/platform",
            "vpsops_stack": self.stack(),
            "vpsops_notify_url": "{{ vault_notify_url }}",
            "vault_notify_url": self.notify_url,
        }
        group_vars.update((name, value) for name, value in self.needles.items() if name.startswith("vault_"))
        return {"all": {"children": ["ungrouped", "vpsops_hosts"]},
                "ungrouped": {"hosts": []},
                "vpsops_hosts": {"hosts": ["lab1"], "vars": group_vars},
                "_meta": {"hostvars": {"lab1": {"ansible_host": "127.0.0.1", "ansible_port": SSH_PORT,
                                                "remote_tower_enabled": "true", "remote_tower_id": 1}}}}

    def launch(self, template, job_type, answers):
        """Run one job of a template with the survey answers (ABSENT: left out) and wait for it."""
        with self.lock:
            self.launched += 1
            number = self.launched
        pdd = os.path.join(self.base, "job-%d" % number)
        extra_vars = {"awx_job_id": 9000 + number, "awx_job_template_name": template, "awx_user_name": "admin",
                      "awx_job_launch_type": "manual", "awx_project_revision": "0" * 40,
                      "tower_job_id": 9000 + number, "tower_user_name": "admin"}
        extra_vars.update(TEMPLATES[template].get("extra_vars", {}))
        if template == "vpsops host":
            extra_vars.update(self.host_roots, host_apt_cache_valid_time=10 * 365 * 86400)
        extra_vars.update((name, value) for name, value in answers.items() if value is not ABSENT)
        known_hosts = os.path.join(pdd, "env", "known_hosts_credential")
        os.makedirs(os.path.dirname(known_hosts))
        shutil.copyfile(os.path.join(SSH_DIR, "known_hosts"), known_hosts)
        envvars = {
            "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
            "ANSIBLE_COLLECTIONS_PATH": self.collections,
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": os.path.join(pdd, "cp"),
            "JOB_ID": str(9000 + number),
            "AWX_HOST": "https://awx.example.com",
            "VPSOPS_EXAMPLE_KNOWN_HOSTS": known_hosts,
            "VPSOPS_AUDIT_LOG": self.audit_log,
        }
        private_data_dir(pdd, extravars=extra_vars, envvars=envvars, inventory=self.inventory(), project=self.project,
                         cmdline="-u root" + (" --check" if job_type == "check" else ""))
        job = run_job(pdd, TEMPLATES[template]["playbook"], ident="job-%d" % number, number=number, template=template,
                      job_type=job_type, answers=answers)
        with self.lock:
            self.jobs.append(job)
        print(repr(job))
        return job

    def launch_all(self, jobs, workers=4):
        """Jobs {key: (template, job_type, answers)} at once, as AWX runs the jobs of templates that
        allow concurrent jobs (these only read); {key: Job}."""
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = dict((key, pool.submit(self.launch, *job)) for key, job in jobs.items())
            return dict((key, future.result()) for key, future in futures.items())

    def assert_no_secret(self, job):
        leaks = job.leaks(self.needles)
        assert not leaks, "secrets in the job's events or stdout:\n" + "\n".join(leaks[:20])

    def info(self):
        rc, info = ansible_module("compose_release_info", {"stack": PROJECT, "state_dir": STATE_DIR, "history": 1000})
        assert rc == 0, info
        return info

    def audit(self, job):
        """The audit log lines of a job."""
        if not os.path.exists(self.audit_log):
            return []
        with open(self.audit_log) as handle:
            lines = [json.loads(line) for line in handle if line.strip()]
        return [line for line in lines if line.get("awx_job_id") == str(9000 + job.number)]

    def sql(self, which, text):
        return psql(self.st, which, text)

    def cleanup(self):
        self.st.down()
        remove_pin_tags(PROJECT)
        run(["rm", "-rf", STATE_DIR, BACKUP_DIR])


@pytest.fixture(scope="module")
def awx(lab, tmp_path_factory):
    base = tmp_path_factory.mktemp("awx")
    os.chmod(str(base), 0o700)
    awx = Awx(base)
    awx.cleanup()
    receiver = receiving(RECEIVER_PORT)
    awx.receiver = next(receiver, None)
    assert awx.receiver is not None, "the webhook receiver did not start"
    try:
        # The first deploy of the stack, shared by every test here (asserted by the first test).
        awx.deployed = awx.launch("vpsops deploy", "run", {"release_tag": "v1", "deploy_phase_timeout": 240,
                                                           "vpsops_max_fail_percentage": None})
        awx.v1 = awx.info()["live"]
        yield awx
    finally:
        receiver.close()
        awx.cleanup()
        print("jobs: %s" % ", ".join("%s %s %.0fs" % (job.template, job.job_type, job.seconds) for job in awx.jobs))


def running_images():
    return images(PROJECT)


def image_id(ref):
    return run(["docker", "image", "inspect", "--format", "{{.Id}}", ref]).stdout.strip()


def assert_runs(tag):
    """The ar module runs the image of release tag, auth and payments those of v1."""
    now = running_images()
    for service, want in (("auth", "v1"), ("ar", tag), ("payments", "v1")):
        assert now["%s-%s-1" % (PROJECT, service)] == image_id("vpsops-demo/%s:%s" % (service, want)), (service, now)


@pytest.fixture(scope="module")
def data(awx):
    """A ledger in ar (20 rows) and failed events in both databases (3 each, 2 of them older than 30 days)."""
    awx.sql("ar", "CREATE TABLE awx_ledger (id SERIAL PRIMARY KEY, amount INT NOT NULL);"
                  "INSERT INTO awx_ledger (amount) SELECT g FROM generate_series(1, 20) g;")
    awx.sql("ar", "DELETE FROM failed_events;" + FAILED.format(p="ar", s="ar.events.ar.invoice.created"))
    awx.sql("payments", "DELETE FROM failed_events;"
            + FAILED.format(p="pay", s="payments.events.payments.refund.failed"))
    return awx


# The jobs that only read or run in check mode, every blank form of each: run at once on the
# stack of v1, with what they must leave unchanged measured before and after.
READS = {}
for _form in BLANKS:
    READS[("deploy", "check", _form)] = ("vpsops deploy", "check",
                                         dict(blank("vpsops deploy", _form), release_tag="v2"))
    READS[("host", "check", _form)] = ("vpsops host", "check", blank("vpsops host", _form))
    READS[("status", "run", _form)] = ("vpsops status", "run", blank("vpsops status", _form))
    READS[("health", "run", _form)] = ("vpsops health", "run", blank("vpsops health", _form))
    READS[("dlq", "run", _form)] = ("vpsops dlq", "run", dict(blank("vpsops dlq", _form), dlq_action="report"))
    READS[("restore", "check", _form)] = ("vpsops restore", "check", dict(
        blank("vpsops restore", _form, "restore_release"), restore_database="ar", restore_release="live"))
READS[("dlq", "check", "empty")] = ("vpsops dlq", "check", dict(blank("vpsops dlq", "empty"), dlq_action="purge"))


def unchanged_state(awx):
    """What a read-only or check job must leave as it is."""
    return {"store": awx.info(), "containers": running_images(),
            "ledger": awx.sql("ar", "SELECT count(*), sum(amount) FROM awx_ledger"),
            "failed_events": [awx.sql(db, "SELECT count(*) FROM failed_events") for db in ("ar", "payments")],
            "host_roots": [os.path.exists(root) for root in awx.host_roots.values()]}


@pytest.fixture(scope="module")
def reads(data):
    before = unchanged_state(data)
    jobs = data.launch_all(READS)
    jobs["before"], jobs["after"] = before, unchanged_state(data)
    return jobs


def key_id(key):
    return "-".join(key)


# --------------------------------------------------------------------------------------------
# deploy v1, then every read-only and check job on it
# --------------------------------------------------------------------------------------------
def test_deploy_run_deploys_the_release_records_the_job_and_shows_no_secret(awx):
    job = awx.deployed
    job.assert_status()
    assert awx.v1, "no live release after %r" % job
    assert_runs("v1")
    info = awx.info()
    assert info["lock"] is None and [r["id"] for r in info["releases"]] == [awx.v1]
    events = [line["event"] for line in awx.audit(job)]
    assert events[0] == "deploy_started" and events[-1] == "deploy_succeeded", events
    assert all(line["user"] == "admin" for line in awx.audit(job)), awx.audit(job)
    assert len(awx.receiver.posts) == 1 and awx.receiver.posts[0]["path"].endswith(awx.needles["the webhook token"])
    # The planted values are the secrets the job used: the stack's .env on the host holds them.
    with open(os.path.join(STATE_DIR, "project", ".env")) as handle:
        env = handle.read()
    assert awx.needles["vault_ar_db_password"] in env and awx.needles["vault_payments_db_password"] in env
    awx.assert_no_secret(job)


def test_the_read_only_and_check_jobs_changed_nothing(reads):
    after, before = reads["after"], reads["before"]
    assert after["store"]["live"] == before["store"]["live"]
    assert after["store"]["releases"] == before["store"]["releases"]
    assert after["store"]["lock"] is None
    assert after == before


@pytest.mark.parametrize("form", BLANKS)
def test_deploy_check_with_a_blank_timeout_prints_the_plan(reads, awx, form):
    job = reads[("deploy", "check", form)]
    job.assert_status()
    assert "vpsops-itawx" in job.stdout
    awx.assert_no_secret(job)


@pytest.mark.parametrize("form", BLANKS)
def test_host_check_with_blank_answers_takes_the_defaults_and_installs_nothing(reads, awx, form):
    job = reads[("host", "check", form)]
    job.assert_status()
    assert_host_job(job)
    awx.assert_no_secret(job)


def assert_host_job(job):
    assert job.skipped("Create the deploy user"), "a blank host_deploy_user made a user"
    for name, data, res in job.task_results():
        if data.get("resolved_action") in ("ansible.builtin.apt", "ansible.builtin.get_url"):
            assert res.get("skipped"), "%s ran on the lab host" % name
    assert "Docker CLI" in job.result("Report what the host runs")["msg"]


@pytest.mark.parametrize("form", BLANKS)
def test_status_with_blank_answers_shows_the_live_release(reads, awx, form):
    job = reads[("status", "run", form)]
    job.assert_status()
    status = job.result("Keep the status of the host")["ansible_facts"]["vpsops_status"]
    assert status["live"]["id"] == awx.v1
    # Probed once with the default timeout; whether each check answered in time is the machine's load.
    assert {name.split("/")[0] for name in status["health"]["checks"]} == {"infrastructure", "platform", "modules"}
    assert 0 < len(status["history"]) <= 10
    awx.assert_no_secret(job)


@pytest.mark.parametrize("form", BLANKS)
def test_health_with_blank_answers_probes_every_phase(reads, awx, form):
    job = reads[("health", "run", form)]
    job.assert_status()
    checks = job.result("Probe every check of the phases")["checks"]
    assert {name.split("/")[0] for name in checks} == {"infrastructure", "platform", "modules"}
    assert all(check["ready"] for check in checks.values()), checks
    awx.assert_no_secret(job)


@pytest.mark.parametrize("form", BLANKS)
def test_dlq_report_with_blank_answers_reports_every_database(reads, awx, form):
    job = reads[("dlq", "run", form)]
    job.assert_status()
    report = job.result("Keep the report")["ansible_facts"]["dlq_result"]
    assert report["total"] == 6 and sorted(report["databases"]) == ["ar", "payments"]
    awx.assert_no_secret(job)


def test_dlq_check_counts_a_purge_of_the_default_age(reads, awx):
    job = reads[("dlq", "check", "empty")]
    job.assert_status()
    purge = job.result("Purge the old failed events")["results"]
    assert [(r["__dlq_name"], r["matched"], r["purged"]) for r in purge] == [("ar", 2, 0), ("payments", 2, 0)]
    awx.assert_no_secret(job)


@pytest.mark.parametrize("form", BLANKS)
def test_restore_check_of_the_live_release_with_blank_answers(reads, awx, form):
    job = reads[("restore", "check", form)]
    job.assert_status()
    assert "would restore ar (ar_db) from %s/" % BACKUP_DIR in " ".join(job.stdout.split())
    awx.assert_no_secret(job)


# --------------------------------------------------------------------------------------------
# the jobs that change the host, one at a time
# --------------------------------------------------------------------------------------------
def test_host_run_with_blank_answers_creates_the_roots_and_no_user(reads, awx):
    job = awx.launch("vpsops host", "run", blank("vpsops host", "null"))
    job.assert_status()
    assert_host_job(job)
    for root in awx.host_roots.values():
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    awx.assert_no_secret(job)


@pytest.mark.parametrize("form", BLANKS)
def test_backup_with_blank_answers_backs_up_every_database(reads, awx, form):
    job = awx.launch("vpsops backup", "run", blank("vpsops backup", form))
    job.assert_status()
    taken = job.result("Keep the backups in the shape compose_release pins to a release")["ansible_facts"]
    taken = taken["backup_results"]
    assert [entry["name"] for entry in taken] == ["ar", "payments"]
    for entry in taken:
        assert entry["verified"] and os.path.isfile(entry["path"]) and entry["path"].startswith(BACKUP_DIR + "/")
        assert os.path.basename(entry["path"]).startswith(entry["database"] + "_"), entry  # no label in the name
    awx.backup_of_ar = taken[0]["path"]
    awx.assert_no_secret(job)


def test_restore_run_with_a_blank_release_restores_the_backup_given(reads, awx):
    assert getattr(awx, "backup_of_ar", None), "no backup of ar was taken by the backup template"
    awx.sql("ar", "INSERT INTO awx_ledger (amount) VALUES (2000), (3000);")
    job = awx.launch("vpsops restore", "run", dict(blank("vpsops restore", "null", "restore_src", "restore_confirm"),
                                                   restore_database="ar", restore_src=awx.backup_of_ar,
                                                   restore_confirm="true"))
    job.assert_status()
    assert awx.sql("ar", "SELECT count(*), sum(amount) FROM awx_ledger") == "20|210"
    assert awx.info()["lock"] is None
    awx.assert_no_secret(job)


def test_deploy_run_of_a_second_release_with_the_timeout_left_out(reads, awx):
    job = awx.launch("vpsops deploy", "run", dict(blank("vpsops deploy", "absent"), release_tag="v2"))
    job.assert_status()
    info = awx.info()
    assert info["live"] != awx.v1 and info["previous"] == awx.v1
    assert_runs("v2")
    awx.v2 = info["live"]
    awx.assert_no_secret(job)


@pytest.fixture(scope="module")
def rollback_checks(awx):
    assert getattr(awx, "v2", None), "the second release was not deployed"
    before = unchanged_state(awx)
    jobs = awx.launch_all(dict(
        (form, ("vpsops rollback", "check", dict(blank("vpsops rollback", form), rollback_to="previous")))
        for form in BLANKS))
    jobs["before"], jobs["after"] = before, unchanged_state(awx)
    return jobs


@pytest.mark.parametrize("form", BLANKS)
def test_rollback_check_with_blank_phases_and_services_changes_nothing(rollback_checks, awx, form):
    job = rollback_checks[form]
    job.assert_status()
    assert rollback_checks["after"] == rollback_checks["before"]
    awx.assert_no_secret(job)


def test_rollback_run_with_blank_phases_and_services_rolls_the_whole_stack_back(rollback_checks, awx):
    job = awx.launch("vpsops rollback", "run", dict(blank("vpsops rollback", "null"), rollback_to="previous"))
    job.assert_status()
    assert awx.info()["live"] == awx.v1
    assert_runs("v1")
    assert [line["event"] for line in awx.audit(job)] == ["rollback_succeeded"]
    awx.assert_no_secret(job)
