"""AWX job slicing: one job template ("vpsops deploy") sliced in two, both slices run at once, each
its own ansible-runner job over its part of the inventory (AWX deals the hosts out in turn: slice 1
gets hosts 1, 3, 5, slice 2 hosts 2, 4, 6), each its own private data directory, JOB_ID and
awx_job_id, as AWX runs the jobs of a sliced template (awx_runner.py holds the plumbing).

Six lab hosts (sl1-sl6, each its own sshd, Docker daemon and /var/lib/vpsops), the tiny stack of
fleet.py (`slicedemo`, ports 8080 and 8081 inside each host). While the jobs run, every host's lock
file is read every 0.05 s from this machine:
  1. v1 by both slices at once: every host live; each host was locked once, by its own slice's job
     and by no other; each job's audit lines name its hosts only.
  2. v2 by both slices at once, where sl4's release fails (slice 2's second wave): slice 1 ends
     successful with its hosts on v2; slice 2 fails and rolls back its own hosts only (sl2, its canary,
     went live first; sl6 deployed beside sl4), back on v1. No lock is left and none was taken twice.
All hosts are removed at the end."""

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import VENV_BIN

ansible_runner = pytest.importorskip("ansible_runner")

from awx_runner import collections_of, copy_checkout, private_data_dir, run_job  # noqa: E402
from fleet import LabFleet, audit_lines, outcomes, tiny_source, tiny_stack  # noqa: E402

NAMES = ["sl%d" % n for n in range(1, 7)]
SLICES = {1: NAMES[0::2], 2: NAMES[1::2]}
STACK = "slicedemo"
TEMPLATE = {"vpsops_serial": [1, "100%"]}  # the template's extra variables: the canary, then the others


class LockWatch:
    """Every content each host's lock file had while the jobs ran: {host: set of (owner, started)}."""

    def __init__(self, fleet):
        self.paths = dict((host, os.path.join(fleet.state_dir(host, STACK), "lock.json")) for host in NAMES)
        self.seen = dict((host, set()) for host in NAMES)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            for host, path in self.paths.items():
                try:
                    with open(path) as handle:
                        lock = json.load(handle)
                except (OSError, ValueError):  # no lock, or caught while it is written
                    continue
                self.seen[host].add((lock.get("owner"), lock.get("started")))
            self.samples += 1
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


class Slicer:
    """The stand-in for AWX: the project, the sliced template's jobs and their artifacts."""

    def __init__(self, base, fleet):
        self.base = str(base)
        self.fleet = fleet
        self.project = os.path.join(self.base, "project")
        copy_checkout(self.project)
        self.collections = collections_of(self.project, os.path.join(self.base, "ee", "collections"))
        self.source = tiny_source(os.path.join(self.base, "stack"))
        self.audit_log = os.path.join(self.base, "audit.jsonl")
        self.launched = 0

    def inventory(self, hosts, release, failing):
        """The slice's inventory as AWX's script prints it: only the slice's hosts."""
        stacks = dict((h, tiny_stack(STACK, self.source, release, fail=3 if h in failing else None)) for h in hosts)
        _path, content = self.fleet.inventory("slice-%s" % "-".join(hosts), stacks)
        group = content["vpsops_hosts"]
        return {"all": {"children": ["ungrouped", "vpsops_hosts"]}, "ungrouped": {"hosts": []},
                "vpsops_hosts": {"hosts": sorted(group["hosts"]), "vars": group["vars"]},
                "_meta": {"hostvars": group["hosts"]}}

    def launch(self, number, release, failing=()):
        job_id = 9500 + self.launched + number
        pdd = os.path.join(self.base, "job-%d" % job_id)
        extravars = dict(TEMPLATE, release_tag=release, awx_job_id=job_id, awx_user_name="admin",
                         awx_job_template_name="vpsops deploy", awx_workflow_job_name="vpsops deploy",
                         awx_workflow_job_id=9400 + self.launched)
        envvars = {"PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
                   "ANSIBLE_COLLECTIONS_PATH": self.collections,
                   "ANSIBLE_SSH_CONTROL_PATH_DIR": os.path.join(pdd, "cp"),
                   "JOB_ID": str(job_id),
                   "VPSOPS_AUDIT_LOG": self.audit_log}
        private_data_dir(pdd, extravars=extravars, envvars=envvars, inventory=self.inventory(SLICES[number], release, failing),
                         project=self.project, cmdline="-u root")
        job = run_job(pdd, "playbooks/deploy.yml", ident="job-%d" % job_id, number=job_id,
                      template="vpsops deploy slice %d/2" % number)
        job.slice, job.job_id = number, str(job_id)
        print(repr(job))
        return job

    def both(self, release, failing=()):
        """Both slices at once, the lock files watched meanwhile; ({slice: Job}, LockWatch)."""
        with LockWatch(self.fleet) as watch, ThreadPoolExecutor(max_workers=2) as pool:
            futures = dict((number, pool.submit(self.launch, number, release, failing)) for number in SLICES)
            jobs = dict((number, future.result()) for number, future in futures.items())
        self.launched += 10
        return jobs, watch

    def audit(self, job):
        return [line for line in audit_lines(self.audit_log) if line.get("awx_job_id") == job.job_id]


@pytest.fixture(scope="module")
def slicer(lab, tmp_path_factory):
    base = tmp_path_factory.mktemp("awx-slices")
    fleet = LabFleet(NAMES, base)
    fleet.remove()
    fleet.add()
    try:
        yield Slicer(base, fleet)
    finally:
        fleet.remove()


def assert_locked_once_by_its_slice(jobs, watch):
    assert watch.samples > 20, watch.samples
    for number, job in jobs.items():
        for host in SLICES[number]:
            seen = watch.seen[host]
            assert len(seen) == 1, (host, seen)  # one lock, taken once
            owner = next(iter(seen))[0]
            assert (":%s-" % job.job_id) in owner, (host, owner, job.job_id)  # user@controller:<job id>-<nonce>


def stores(slicer):
    return dict((host, slicer.fleet.store(host, STACK)) for host in NAMES)


@pytest.fixture(scope="module")
def first(slicer):
    jobs, watch = slicer.both("v1")
    return jobs, watch, stores(slicer)


def test_two_slices_at_once_each_deploy_their_own_hosts_and_lock_each_once(slicer, first):
    jobs, watch, found = first
    for job in jobs.values():
        job.assert_status()
    assert_locked_once_by_its_slice(jobs, watch)
    for host, store in found.items():
        assert store["releases"][store["live"]] == "live" and not store["lock"], (host, store)
        assert slicer.fleet.serving(host) == {"web": "v1", "api": "v1"}
    for number, job in jobs.items():
        lines = slicer.audit(job)
        assert set(line["host"] for line in lines) == set(SLICES[number]), lines
        assert [line["data"]["hosts"] for line in lines if line["event"] == "deploy_started"] == [SLICES[number]] * 3
        # Each slice is a deploy of its own: its canary is its first host.
        assert json.dumps(job.result("Decide whether this wave starts")["waves"][0]["hosts"]) == \
            json.dumps([SLICES[number][0]])


def test_a_failing_slice_rolls_back_its_own_hosts_and_the_other_slice_goes_on(slicer, first):
    v1 = dict((host, store["live"]) for host, store in first[2].items())
    jobs, watch = slicer.both("v2", failing=("sl4",))
    jobs[1].assert_status()
    jobs[2].assert_status("failed")
    assert_locked_once_by_its_slice(jobs, watch)
    found = stores(slicer)
    assert not any(store["lock"] for store in found.values()), found
    for host in SLICES[1]:
        assert found[host]["live"] != v1[host] and slicer.fleet.serving(host) == {"web": "v2", "api": "v2"}
    for host in SLICES[2]:
        assert found[host]["live"] == v1[host] and slicer.fleet.serving(host) == {"web": "v1", "api": "v1"}
    by_job = dict((number, dict((line["host"], (line["event"], line["data"].get("result")))
                                for line in slicer.audit(job) if line["event"] != "deploy_started"))
                  for number, job in jobs.items())
    assert by_job[1] == dict((host, ("deploy_succeeded", "deployed")) for host in SLICES[1])
    assert by_job[2] == {"sl2": ("deploy_rolled_back", "rolled_back"), "sl4": ("deploy_failed", "failed_rolled_back"),
                         "sl6": ("deploy_rolled_back", "rolled_back")}
    stdout = jobs[2].stdout
    assert "sl2: deployed" in stdout and "because sl4 failed" in stdout, stdout[-3000:]
    assert not any(host in stdout for host in SLICES[1]), "slice 2 names a host of slice 1"
    # The audit log both slices' jobs share: one outcome per host, each from the job of its slice.
    assert outcomes(slicer.audit_log) == dict(list(by_job[1].items()) + list(by_job[2].items()))
