"""The check keys are written twice in the checks doc fragment (fragments must be literal strings):
under `checks` and under `phases[].checks`. They must say the same, and match the argument spec; so
must the keys of a phase, which compose_plan and compose_release take from the fragment."""

import ast
import json
import os

import pytest
import yaml

from ansible_collections.vpsops.deploy.plugins.doc_fragments.checks import ModuleDocFragment
from ansible_collections.vpsops.deploy.plugins.module_utils._plan import phase_argument_spec
from ansible_collections.vpsops.deploy.plugins.module_utils._probes import check_argument_spec


def keys(fragment, *path):
    node = yaml.safe_load(fragment)["options"]
    for name in path:
        node = node[name]["suboptions"] if isinstance(node[name], dict) and "suboptions" in node[name] else node[name]
    return node


def test_the_phase_checks_say_what_the_checks_say():
    checks = keys(ModuleDocFragment.DOCUMENTATION, "checks")
    phase_checks = keys(ModuleDocFragment.PHASES, "phases", "checks")
    as_text = json.dumps(checks, sort_keys=True).replace("O(checks[].", "O(phases[].checks[].")
    assert json.loads(as_text) == phase_checks


def test_every_key_of_the_spec_is_documented_and_nothing_else():
    assert set(keys(ModuleDocFragment.DOCUMENTATION, "checks")) == set(check_argument_spec())


def test_every_key_of_a_phase_is_documented_and_nothing_else():
    assert set(keys(ModuleDocFragment.PHASES, "phases")) == set(phase_argument_spec())


@pytest.mark.parametrize("module", ["compose_plan", "compose_release"])
def test_the_modules_that_take_phases_document_them_from_the_fragment(module):
    """A module's own `phases` entry may set its description; its keys come from the fragment."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "plugins", "modules", module + ".py")
    with open(path) as handle:
        tree = ast.parse(handle.read())
    doc = next(yaml.safe_load(node.value.value) for node in tree.body
               if isinstance(node, ast.Assign) and node.targets[0].id == "DOCUMENTATION")
    assert "vpsops.deploy.checks.phases" in doc["extends_documentation_fragment"]
    assert set((doc.get("options") or {}).get("phases") or {}) <= {"description"}
