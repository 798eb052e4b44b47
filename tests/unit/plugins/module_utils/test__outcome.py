"""The decisions of a deploy across hosts (vpsops.deploy.deploy_outcome): who failed, who is unreachable,
who is rolled back, and what the report says about each host."""

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils._outcome import decide, report

HOSTS = ["a", "b", "c"]


def begun(release="R2", live="R1"):
    return {"release": release, "live": live, "owner": "me"}


def promoted(release="R2", live="R1"):
    return {"begin": begun(release, live), "touched": True, "promoted": release}


def test_all_hosts_live_means_no_rollback_and_a_success():
    states = dict((h, promoted()) for h in HOSTS)
    decided = decide(HOSTS, HOSTS, states)
    assert decided["ok"] and decided["failed_hosts"] == []
    assert not any(d["rollback"] for d in decided["hosts"].values())
    out = report("shop", HOSTS, HOSTS, dict((h, dict(s, end={"lock_released": True})) for h, s in states.items()))
    assert out["event"] == "deploy_succeeded" and out["status"] == "ok"
    assert out["summary"] == "Release R2 is live on a, b, c."


def test_a_failed_canary_rolls_back_only_the_canary_and_skips_the_others():
    states = {"a": {"begin": begun(), "touched": True,
                    "failed": {"task": "Bring up the services of the phase web", "msg": "Health gate: 1 of 1"}},
              "b": {"begin": begun(), "skipped": True},
              "c": {"begin": begun(), "skipped": True}}
    decided = decide(HOSTS, HOSTS, states)
    assert decided["failed_hosts"] == ["a"]
    assert [h for h, d in decided["hosts"].items() if d["rollback"]] == ["a"]
    for host in HOSTS:
        states[host]["end"] = {"rolled_back": {"to": "R1"} if host == "a" else None, "marked": "failed",
                               "lock_released": True, "errors": []}
    out = report("shop", HOSTS, HOSTS, states)
    assert out["event"] == "deploy_failed"
    assert out["hosts"]["a"]["line"] == ("a failed at Bring up the services of the phase web: Health gate: 1 of 1; "
                                         "rolled back to the live release R1, release R2 is marked failed")
    assert out["hosts"]["b"]["line"] == "b: not deployed (another host failed)"
    assert out["hosts"]["b"]["event"] == "deploy_skipped"
    assert out["message"].startswith("Deploy of shop failed. a failed at")


def test_a_later_host_unreachable_rolls_back_the_canary_and_names_the_lost_host():
    states = {"a": promoted(),
              "b": {"begin": begun(), "touched": True,
                    "failed": {"task": "Bring up the services of the phase web",
                               "msg": "the host became unreachable during the phase step: ssh: timed out",
                               "unreachable": True}},
              "c": {"begin": begun(), "touched": True,
                    "failed": {"task": "x", "msg": "the host became unreachable"}}}
    decided = decide(HOSTS, HOSTS, states)
    assert decided["hosts"]["a"]["rollback"] and decided["hosts"]["a"]["reason"] == "b, c failed"
    states["a"]["end"] = {"rolled_back": {"to": "R1"}, "marked": "failed", "lock_released": True, "errors": []}
    states["b"]["end"] = {"host_unreachable": True, "failed": True}
    states["c"]["end"] = {"host_unreachable": True, "failed": True}
    out = report("shop", HOSTS, HOSTS, states)
    assert out["hosts"]["a"]["line"] == "a: deployed R2, then rolled back to R1 because b, c failed"
    assert out["hosts"]["a"]["event"] == "deploy_rolled_back"
    assert "unreachable: nothing more could be done there" in out["hosts"]["b"]["line"]
    assert out["failed_hosts"] == ["b", "c"]


def test_a_host_gone_from_the_play_counts_as_unreachable_and_failed():
    states = {"a": promoted(), "b": promoted(), "c": {}}
    decided = decide(HOSTS, ["a", "b"], states)
    assert decided["unreachable"] == ["c"] and decided["failed_hosts"] == ["c"]
    assert decided["hosts"]["a"]["rollback"] and decided["hosts"]["b"]["rollback"]
    assert not decided["hosts"]["c"]["rollback"]


def test_a_failed_rollback_says_the_release_stays_pending_and_what_to_run():
    states = {"a": {"begin": begun(), "touched": True, "failed": {"task": "t", "msg": "boom"},
                    "end": {"rolled_back": None, "errors": ["the rollback to R1 failed: disk full"],
                            "lock_released": True}}}
    out = report("shop", ["a"], ["a"], states)
    assert ("the automatic rollback to R1 failed too (the rollback to R1 failed: disk full); release R2 stays "
            "pending: once the cause is fixed, run rollback.yml, which returns to R1") in out["hosts"]["a"]["line"]


def test_a_first_deploy_that_fails_has_nothing_to_roll_back():
    states = {"a": {"begin": begun(live=None), "touched": True, "failed": {"task": "t", "msg": "boom"},
                    "end": {"marked": "failed", "lock_released": True, "errors": []}}}
    assert not decide(["a"], ["a"], states)["hosts"]["a"]["rollback"]
    out = report("shop", ["a"], ["a"], states)
    assert out["hosts"]["a"]["line"].endswith("there was no live release to roll back to; release R2 is marked failed")


def test_a_first_deploy_that_succeeds_says_only_that_it_is_live():
    states = {"a": {"begin": begun(live=None), "touched": True, "promoted": "R2", "end": {"lock_released": True}}}
    out = report("shop", ["a"], ["a"], states)
    assert out["hosts"]["a"]["line"] == "a: release R2 is live", out["hosts"]["a"]["line"]
    assert out["event"] == "deploy_succeeded"


def test_a_lock_held_by_another_run_is_named_and_no_host_is_rolled_back():
    states = {"a": {"begin": {"failed": True, "msg": "cannot lock: stack shop is locked by x@y"}},
              "b": {"begin": begun()}}
    decided = decide(["a", "b"], ["a", "b"], states)
    assert decided["failed_hosts"] == ["a"]
    assert not any(d["rollback"] for d in decided["hosts"].values())
    out = report("shop", ["a", "b"], ["a", "b"], states)
    assert "a failed at Begin the deploy: cannot lock: stack shop is locked by x@y" in out["message"]


@pytest.mark.parametrize("end,note", [
    ({"lock_note": "the lock is held by another run and was left alone: z"}, "left alone: z"),
    ({"errors": ["cannot release the lock: EIO"]}, "cannot release the lock: EIO"),
])
def test_what_the_end_step_could_not_do_reaches_the_line(end, note):
    states = {"a": dict(promoted(), end=end)}
    out = report("shop", ["a"], ["a"], states)
    assert note in out["hosts"]["a"]["line"] or note in out["message"]
