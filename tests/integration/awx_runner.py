"""Jobs run the way AWX runs them, for the integration tests: ansible-runner (`ansible_runner.run`)
over a private data directory laid out as AWX writes it, and what a finished job left (its status,
stdout and the job events ansible-runner stored, searched for secrets).

The private data directory of a job:
  project/          the checkout (AWX copies the project's revision into each job), or none when
                    the job runs the checkout in place (project_dir)
  inventory/hosts   an executable script that prints the inventory as JSON, as AWX writes it (or
                    an inventory path given as is)
  env/extravars     the template's extra variables, the survey answers and AWX's awx_* variables
  env/envvars       what AWX and its credentials put in the job's environment
  env/ssh_key       the Machine credential's key (ansible-runner loads it into an ssh-agent)
  env/cmdline       -u <the Machine credential's user>, --check for a job of type Check, ...
  env/settings      the job's timeout

Used by test_awx_jobs.py (every job template of docs/awx.md), test_awx_slices.py (two slices of one
template at once) and test_secrets_drill.py (the secrets searched in every event)."""

import json
import os
import shutil
import time

import ansible_runner

from conftest import ROOT, run

SSH_DIR = os.path.join(ROOT, ".lab", "ssh")
RESULT_EVENTS = {"runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable"}


def write(path, text, mode=0o600):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as handle:
        handle.write(text)


def copy_checkout(dest):
    """The checkout as a project update leaves it: the tracked and the new files, not the ignored ones."""
    files = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout.split("\0")
    for name in filter(None, files):
        src = os.path.join(ROOT, name)
        if not os.path.lexists(src):  # deleted in the working tree
            continue
        target = os.path.join(dest, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)


def collections_of(project, base):
    """The execution environment's collections: this collection from the project (a link in
    base/ansible_collections/vpsops/deploy). Returns the collections path."""
    path = os.path.join(base, "ansible_collections", "vpsops")
    if not os.path.isdir(path):
        os.makedirs(path)
        os.symlink(project, os.path.join(path, "deploy"))
    return base


def inventory_script(inventory):
    """An AWX inventory script: prints the inventory (ansible-inventory's JSON)."""
    return "#! /usr/bin/env python3\n# -*- coding: utf-8 -*-\nprint(%r)\n" % json.dumps(inventory)


def private_data_dir(pdd, extravars=None, envvars=None, inventory=None, project=None, ssh_key=True, cmdline=None,
                     timeout=600):
    """Lay out a job's private data directory. inventory: a dict (written as AWX's script) or None;
    project: a checkout copied into project/ (None: the job names its project_dir itself)."""
    if project:
        shutil.copytree(project, os.path.join(pdd, "project"), symlinks=True)
    if isinstance(inventory, dict):
        write(os.path.join(pdd, "inventory", "hosts"), inventory_script(inventory), mode=0o700)
    write(os.path.join(pdd, "env", "extravars"), json.dumps(extravars or {}))
    write(os.path.join(pdd, "env", "envvars"), json.dumps(envvars or {}))
    if ssh_key:
        with open(os.path.join(SSH_DIR, "id_ed25519")) as handle:
            write(os.path.join(pdd, "env", "ssh_key"), handle.read())
    if cmdline:
        write(os.path.join(pdd, "env", "cmdline"), cmdline)
    write(os.path.join(pdd, "env", "settings"), json.dumps({"job_timeout": timeout}))
    return pdd


def run_job(pdd, playbook, ident="job-1", number=1, template=None, job_type="run", answers=None, **runner_kw):
    """ansible_runner.run over the private data directory; the finished Job."""
    started = time.monotonic()
    result = ansible_runner.run(private_data_dir=pdd, playbook=playbook, ident=ident, quiet=True, **runner_kw)
    return Job(number, template or os.path.basename(playbook), job_type, answers or {}, pdd, result,
               time.monotonic() - started, ident=ident)


def event_order(path):
    """Numbered events by their counter, then the unnumbered ones by path."""
    head = os.path.basename(path).split("-", 1)[0]
    return (0, int(head), "") if head.isdigit() else (1, 0, path)


def strings(value, where="event"):
    """Every string in a JSON document (keys too), with where it is."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield "%s.%s" % (where, key), str(key)
            yield from strings(item, "%s.%s" % (where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, "%s[%d]" % (where, index))
    elif value is not None:
        yield where, str(value)


class Job:
    """One finished job: its private data directory, status and artifacts."""

    def __init__(self, number, template, job_type, answers, pdd, result, seconds, ident=None):
        self.number = number
        self.template = template
        self.job_type = job_type
        self.answers = answers
        self.pdd = pdd
        self.ident = ident or "job-%d" % number
        self.status = result.status
        self.rc = result.rc
        self.seconds = seconds
        self.artifacts = os.path.join(pdd, "artifacts", self.ident)

    def __repr__(self):
        return "<%s %s (%s) %s rc=%s %.0fs>" % (self.ident, self.template, self.job_type, self.status, self.rc,
                                                self.seconds)

    @property
    def stdout(self):
        with open(os.path.join(self.artifacts, "stdout"), errors="replace") as handle:
            return handle.read()

    def event_files(self):
        folder = os.path.join(self.artifacts, "job_events")
        # <counter>-<uuid>.json, and <uuid>-partial.json for what ansible-runner could not number
        # (output a plugin displays itself): every one is searched.
        return sorted((os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".json")),
                      key=event_order)

    def events(self):
        for path in self.event_files():
            with open(path) as handle:
                yield path, json.load(handle)

    def task_results(self):
        """(task name without its role, event_data, result) of every host result; a skipped task's
        event carries no result: it reads {"skipped": true}."""
        for _path, event in self.events():
            if event.get("event") in RESULT_EVENTS:
                data = event.get("event_data", {})
                res = dict(data.get("res") or {})
                if event["event"] == "runner_on_skipped":
                    res["skipped"] = True
                yield data.get("task", "").split(" : ", 1)[-1], data, res

    def results(self, task):
        """The host results of the tasks whose name starts with task."""
        return [res for name, _data, res in self.task_results() if name.startswith(task)]

    def result(self, task):
        found = [res for res in self.results(task) if not res.get("skipped")]
        assert found, "%r ran no task %r:\n%s" % (self, task, self.tail())
        return found[-1]

    def skipped(self, task):
        found = self.results(task)
        return bool(found) and all(res.get("skipped") for res in found)

    def tail(self, size=4000):
        return self.stdout[-size:]

    def assert_status(self, status="successful"):
        assert (self.status, self.rc) == (status, 0 if status == "successful" else self.rc), \
            "%r with answers %r:\n%s" % (self, self.answers, self.tail())

    def leaks(self, needles):
        """Where any needle (name -> secret value) shows in a job event or in the stdout."""
        found = []
        for path, event in self.events():
            for where, text in strings(event):
                for name, value in needles.items():
                    if value in text:
                        found.append("%s: %s, event %s, task %r, field %s holds %s"
                                     % (self.ident, os.path.relpath(path, self.artifacts), event.get("event"),
                                        event.get("event_data", {}).get("task"), where, name))
        for name, value in needles.items():
            if value in self.stdout:
                line = next(line for line in self.stdout.splitlines() if value in line)
                found.append("%s: stdout holds %s: %s" % (self.ident, name, line.replace(value, "<%s>" % name)[:300]))
        return found
