"""The check keys are written twice in the checks doc fragment (fragments must be literal strings):
under `checks` and under `phases[].checks`. They must say the same, and match the argument spec."""

import json

import yaml

from ansible_collections.vpsops.deploy.plugins.doc_fragments.checks import ModuleDocFragment
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
