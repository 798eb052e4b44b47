"""Hooks run on the host (real processes): order, environment, failure, timeout, secret output."""

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Docker
from ansible_collections.vpsops.deploy.plugins.module_utils._hooks import HookError, run_hooks, validate


def hooks(*commands, **extra):
    return [dict(extra, name="h%d" % i, command=c) for i, c in enumerate(commands)]


def test_hooks_run_in_order_with_their_environment(tmp_path):
    out = tmp_path / "out"
    runs = run_hooks(Docker("docker"), "stack", hooks(["sh", "-c", "echo one $VPSOPS_RELEASE >> %s" % out],
                                                      ["sh", "-c", "echo two $VPSOPS_PHASE >> %s; echo shown" % out]),
                     "before", env={"VPSOPS_RELEASE": "r1", "VPSOPS_PHASE": "app"})
    assert out.read_text() == "one r1\ntwo app\n"
    assert [(r["name"], r["rc"], r["output"]) for r in runs] == [("h0", 0, ""), ("h1", 0, "shown")]


def test_the_first_failing_hook_stops_the_others_with_its_masked_output(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(HookError) as caught:
        run_hooks(Docker("docker"), "stack", hooks(["sh", "-c", "echo pw=s3cret-77 >&2; exit 3"],
                                                   ["sh", "-c", "touch %s" % out]),
                  "before-deploy", redact=lambda text: text.replace("s3cret-77", "***"))
    assert str(caught.value) == "before-deploy hook 'h0' failed (exit code 3): pw=***"
    assert [r["rc"] for r in caught.value.runs] == [3]
    assert not out.exists()


def test_a_secret_hook_shows_no_output_and_a_slow_one_times_out():
    runs = run_hooks(Docker("docker"), "stack", hooks(["sh", "-c", "echo hidden-value"], secret=True), "after")
    assert "hidden-value" not in str(runs)
    with pytest.raises(HookError, match=r"hook 'h0' failed \(timed out after 1s\)"):
        run_hooks(Docker("docker"), "stack", hooks(["sleep", "5"], timeout=1), "after")


@pytest.mark.parametrize("hook, message", [
    ({"command": "echo hi"}, "'command' must be a non-empty list of arguments (no shell)"),
    ({"command": ["x"], "service": "a", "container": "b"}, "give 'service' or 'container', not both"),
    ({"command": ["x"], "timeout": 0}, "'timeout' must be between 1 and 86400 seconds"),
    ({"command": ["x"], "shell": True}, "unknown keys shell"),
])
def test_a_bad_hook_is_named(hook, message):
    assert message in validate(hook, "vpsops_stack.hooks.before[0]")
