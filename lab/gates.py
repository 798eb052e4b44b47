#!/usr/bin/env python3
"""Every test gate of vpsops.deploy, in one command (run by `bin/lab test` and CI).

Gates: ansible-lint (production profile), the changelog lint, collection build + install +
ansible-doc of every module, ansible-test sanity on the built collection, galaxy-importer on the
tarball, Molecule, pytest (unit + integration on the lab), and `alone`: the drills that disturb the
whole lab (the Docker daemon restarted), run after every other gate has finished. One line per gate
closes the output. Pass gate names to run
only those: `bin/lab test pytest sanity`. Extra pytest arguments go after `--`.

Molecule and the integration tests spend most of their time waiting for containers to become
healthy, each on its own stacks and ports. When pytest runs with other gates, those others run
beside it in their own processes: Molecule at nice 10, the static gates (lint to importer, CPU
work that needs no lab) at nice 19, so they take the CPU the tests leave idle. Their output is
kept in files and printed after pytest's, followed by one line per gate.
"""

import glob
import os
import xml.etree.ElementTree as ElementTree
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
SANITY_PYTHON = "%d.%d" % sys.version_info[:2]


def tool(name):
    return os.path.join(VENV_BIN, name)


def sh(argv, cwd=ROOT, env=None):
    print("$ " + " ".join(argv), flush=True)
    return subprocess.call(argv, cwd=cwd, env=env)


def module_names(collection_dir):
    names = []
    for path in sorted(glob.glob(os.path.join(collection_dir, "plugins", "modules", "*.py"))):
        base = os.path.basename(path)[:-3]
        if not base.startswith("_") and base != "__init__":
            names.append(base)
    return names


def build_collection(tmp):
    """The collection tarball, built once per run into tmp/dist and shared by the gates."""
    out_dir = os.path.join(tmp, "dist")
    tarballs = glob.glob(os.path.join(out_dir, "vpsops-deploy-*.tar.gz"))
    if len(tarballs) == 1:
        return tarballs[0]
    rc = sh([tool("ansible-galaxy"), "collection", "build", "--force", "--output-path", out_dir, ROOT])
    tarballs = glob.glob(os.path.join(out_dir, "vpsops-deploy-*.tar.gz"))
    if rc != 0 or len(tarballs) != 1:
        print("collection build failed (rc=%s, tarballs=%s)" % (rc, tarballs))
        return None
    return tarballs[0]


def gate_lint(_tmp):
    return sh([tool("ansible-lint"), "--profile", "production", "--strict"])


def gate_changelog(_tmp):
    return sh([tool("antsibull-changelog"), "lint"])


def gate_build(tmp):
    """Build the tarball, install it into an empty path, and render every module with ansible-doc."""
    tarball = build_collection(tmp)
    if tarball is None:
        return 1
    install_path = os.path.join(tmp, "installed")
    # Only the temporary path: the checkout's own link must not stand in for the tarball.
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=install_path)
    env.pop("ANSIBLE_CONFIG", None)
    rc = sh([tool("ansible-galaxy"), "collection", "install", "--offline", "--no-deps", "--force",
             "-p", install_path, tarball], cwd=tmp, env=env)
    if rc != 0:
        return rc
    installed = os.path.join(install_path, "ansible_collections", "vpsops", "deploy")
    modules = module_names(installed)
    if not modules:
        print("the installed collection has no modules")
        return 1
    failed = 0
    for name in modules:
        proc = subprocess.run([tool("ansible-doc"), "-t", "module", "vpsops.deploy." + name], env=env,
                              cwd=tmp, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or "OPTIONS" not in proc.stdout or "EXAMPLES" not in proc.stdout:
            print("ansible-doc vpsops.deploy.%s failed (rc=%d): %s" % (name, proc.returncode, proc.stderr[-2000:]))
            failed += 1
        else:
            print("ansible-doc vpsops.deploy.%s: rendered %d lines" % (name, proc.stdout.count("\n")))
    return 1 if failed else 0


def gate_sanity(tmp):
    """ansible-test sanity on exactly what the tarball ships, in an ansible_collections tree."""
    tarball = build_collection(tmp)
    if tarball is None:
        return 1
    tree = os.path.join(tmp, "sanity", "ansible_collections", "vpsops", "deploy")
    os.makedirs(tree)
    with tarfile.open(tarball) as tar:
        tar.extractall(tree)
    return sh([tool("ansible-test"), "sanity", "--python", SANITY_PYTHON, "--requirements", "--color", "no"],
              cwd=tree)


def gate_importer(tmp):
    """galaxy-importer on the tarball: what Galaxy checks on upload. Any warning fails the gate."""
    tarball = build_collection(tmp)
    if tarball is None:
        return 1
    env = dict(os.environ, GALAXY_IMPORTER_CONFIG=os.path.join(ROOT, "lab", "galaxy-importer.cfg"),
               PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    argv = [tool("python"), "-m", "galaxy_importer.main", tarball]
    print("$ " + " ".join(argv), flush=True)
    proc = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, check=False)
    print(proc.stdout + proc.stderr)
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines()
                  if line.startswith(("WARNING", "ERROR"))]
    if proc.returncode != 0 or complaints or "Importer processing completed successfully" not in proc.stdout:
        print("galaxy-importer: rc=%d, %d warning/error line(s)" % (proc.returncode, len(complaints)))
        return 1
    return 0


def gate_molecule(_tmp):
    return sh([tool("molecule"), "test", "--all"])


def junit(tmp, name):
    return ["--junitxml=%s" % os.path.join(tmp, "junit-%s.xml" % name)]


def failures(tmp):
    """(test id, last lines of its failure) for every failed or erroring test of the pytest gates."""
    found = []
    for path in sorted(glob.glob(os.path.join(tmp, "junit-*.xml"))):
        try:
            tree = ElementTree.parse(path)
        except (OSError, ElementTree.ParseError):
            continue
        for case in tree.iter("testcase"):
            for kind in ("failure", "error"):
                for node in case.findall(kind):
                    text = (node.text or node.get("message") or "").strip().splitlines()
                    found.append(("%s::%s (%s)" % (case.get("classname"), case.get("name"), kind),
                                  "\n".join(text[-20:])))
    return found


def gate_pytest(tmp, extra=()):
    # Two workers: the integration tests mostly wait on containers (tests/integration/conftest.py
    # keeps the modules that share lab state on one worker).
    return no_tests_is_a_failure(sh([tool("pytest"), "-p", "no:cacheprovider", "-ra", "--durations=25", "-n", "2",
                                     "-m", "not alone", "tests/unit", "tests/integration"]
                                    + junit(tmp, "pytest") + list(extra)))


def gate_alone(tmp, extra=()):
    # Drills that disturb the whole lab (the Docker daemon restarted): after every other gate, alone.
    rc = sh([tool("pytest"), "-p", "no:cacheprovider", "-ra", "--durations=5", "-m", "alone", "tests/integration"]
            + junit(tmp, "alone") + list(extra))
    # Extra arguments (-k ...) may select none of these drills: that is not a failure then.
    return 0 if rc == 5 and extra else no_tests_is_a_failure(rc)


def no_tests_is_a_failure(rc):
    if rc == 5:
        print("pytest collected no tests: that is a failure")
        return 1
    return rc


STATIC = ("lint", "changelog", "build", "sanity", "importer")

GATES = [
    ("lint", gate_lint),
    ("changelog", gate_changelog),
    ("build", gate_build),
    ("sanity", gate_sanity),
    ("importer", gate_importer),
    ("molecule", gate_molecule),
    ("pytest", gate_pytest),
    ("alone", gate_alone),
]


def verdict(rc):
    return "ok" if rc == 0 else "FAILED (rc=%s)" % rc


def start_beside(tmp, names, niceness):
    """Gates in their own process at a lower CPU priority, output to a file."""
    log_path = os.path.join(tmp, "%s.log" % "-".join(names))
    print("==== gates %s run beside pytest (nice %d); their output comes after it ====" % (", ".join(names), niceness),
          flush=True)
    log = open(log_path, "w")
    proc = subprocess.Popen(["nice", "-n", str(niceness), sys.executable, os.path.abspath(__file__)] + names,
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc, log_path, names, time.monotonic()


def finish_beside(proc, log_path, names, started):
    rc = proc.wait()
    seconds = time.monotonic() - started
    with open(log_path) as log:
        print("\n==== output of the gates %s (run beside pytest) ====" % ", ".join(names))
        print(log.read(), flush=True)
    print("==== gates %s: %s, ended within %.0fs (their own times are above) ===="
          % (", ".join(names), verdict(rc), seconds), flush=True)
    return ("+".join(names), rc, None)


def main(argv):
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    known = [name for name, _func in GATES]
    unknown = [a for a in argv if a not in known]
    if unknown:
        print("unknown gate(s) %s; choose from %s" % (", ".join(unknown), ", ".join(known)), file=sys.stderr)
        return 2
    selected = [(name, func) for name, func in GATES if not argv or name in argv]
    results = []
    with tempfile.TemporaryDirectory(prefix="vpsops-gates-") as tmp:
        beside = []
        names = [name for name, _func in selected]
        if "pytest" in names and len(names) > 1:
            groups = (([n for n in names if n in STATIC], 19), ([n for n in names if n == "molecule"], 10))
            for group, niceness in groups:
                if group:
                    beside.append(start_beside(tmp, group, niceness))
            selected = [(name, func) for name, func in selected if name in ("pytest", "alone")]
        for name, func in selected:
            if name == "alone":
                # It restarts the Docker daemon: nothing else may run then.
                while beside:
                    results.append(finish_beside(*beside.pop(0)))
            print("\n==== gate: %s ====" % name, flush=True)
            started = time.monotonic()
            rc = func(tmp, extra) if name in ("pytest", "alone") else func(tmp)
            results.append((name, rc, time.monotonic() - started))
            print("==== gate %s: %s in %.0fs ====" % (name, verdict(rc), time.monotonic() - started), flush=True)
        for running in beside:
            results.append(finish_beside(*running))
        # The failing tests once more, last, where a log cut to its tail still shows them.
        failed_tests = failures(tmp)
        for test_id, tail in failed_tests:
            print("\n==== failed test: %s ====\n%s" % (test_id, tail))
    print("\n" + "\n".join("gate %-40s %-16s %s" % (name, verdict(rc),
                                                    "beside pytest" if seconds is None else "%.0fs" % seconds)
                           for name, rc, seconds in results), flush=True)
    for test_id, tail in failed_tests:
        lines = tail.splitlines() or [""]
        said = [line for line in lines if line.startswith("E ")] or lines
        print("failed: %s: %s" % (test_id, said[0][:300]))
    failed = [name for name, rc, _seconds in results if rc != 0]
    if failed:
        print("\nFAILED gates: %s" % ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
