"""The decisions of a deploy across hosts (vpsops.deploy.deploy_outcome): who failed, who is unreachable,
who is rolled back, and what the report says about each host."""

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils._outcome import (
    OutcomeError,
    decide,
    over_budget,
    parse_max_fail,
    parse_serial,
    plan_waves,
    report,
    started,
)

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


# --------------------------------------------------------------------------------------------
# Waves and the failure budget (vpsops_serial, vpsops_max_fail_percentage)
# --------------------------------------------------------------------------------------------
FLEET = ["h%d" % n for n in range(1, 21)]
WAVES = [1, 5, "100%"]


@pytest.mark.parametrize("serial", [None, "", [], [1, "100%"], [1, 5, "100%"], 3, "25%", [1, "10%"], [2, 1], ["1", "50%"],
                                    [1, 5, "25%", "100%"], "100%", 25])
@pytest.mark.parametrize("count", [1, 2, 7, 20])
def test_the_waves_are_the_batches_ansible_makes(serial, count):
    from ansible.executor.playbook_executor import PlaybookExecutor

    hosts = FLEET[:count]
    sizes = parse_serial(serial)

    class Inventory:
        @staticmethod
        def get_hosts(pattern, order=None):
            return list(hosts)

    play = type("Play", (), {"hosts": "all", "order": None, "serial": sizes})()
    executor = type("Executor", (), {"_inventory": Inventory()})()
    assert plan_waves(hosts, serial) == PlaybookExecutor._get_serialized_batches(executor, play)


@pytest.mark.parametrize("value", [0, -1, "0", "0%", "101%", "x", True, 1.5, [1, "two"], {"a": 1}, ["150%"]])
def test_a_wrong_serial_is_refused_naming_the_variable(value):
    with pytest.raises(OutcomeError, match=r"vpsops_serial must be a number of hosts .* got"):
        parse_serial(value)


@pytest.mark.parametrize("value, parsed", [(None, None), ("", None), ("  ", None), ([], None), (0, 0), ("0", 0),
                                           (20, 20), ("20", 20), ("20%", 20), (12.5, 12.5), (100, 100)])
def test_the_budget_reads_numbers_and_percentages_and_a_blank_as_unset(value, parsed):
    assert parse_max_fail(value) == parsed


@pytest.mark.parametrize("value", [-1, 101, "x", "120%", True, float("nan"), [10]])
def test_a_wrong_budget_is_refused_naming_the_variable(value):
    with pytest.raises(OutcomeError, match=r"vpsops_max_fail_percentage must be a percentage from 0 to 100 .*, got"):
        parse_max_fail(value)


@pytest.mark.parametrize("failed, size, budget, over", [
    (0, 1, None, False), (1, 1, None, True), (1, 1, 50, True), (1, 1, 100, False),
    (1, 5, 20, False), (2, 5, 20, True), (1, 5, 19, True), (1, 14, 10, False), (2, 14, 10, True), (5, 5, 100, False),
])
def test_a_wave_is_over_budget_when_more_than_the_share_failed_as_ansible_counts(failed, size, budget, over):
    assert over_budget(failed, size, budget) is over


def fleet_states(promoted_hosts=(), failed_hosts=(), begin_failed=(), skipped=(), unreachable=()):
    states = {}
    for host in FLEET:
        if host in begin_failed:
            states[host] = {"begin": {"failed": True, "msg": "cannot lock: held by x"},
                            "failed": {"task": "Begin the deploy", "msg": "cannot lock: held by x"}}
        elif host in failed_hosts or host in unreachable:
            states[host] = {"begin": begun(), "touched": True,
                            "failed": {"task": "Bring up the services of the phase web", "msg": "gate failed",
                                       "unreachable": host in unreachable}}
        elif host in promoted_hosts:
            states[host] = promoted()
        elif host in skipped:
            states[host] = {"begin": begun(), "skipped": True}
        else:
            states[host] = {"begin": begun()}
    return states


def test_within_the_budget_the_failed_host_alone_is_rolled_back_and_the_later_waves_go_on():
    states = fleet_states(promoted_hosts=FLEET[:6], failed_hosts=["h3"])
    wave = decide(FLEET, FLEET, states, serial=WAVES, max_fail=20, batch=FLEET[6:])
    assert not wave["stop"] and wave["wave"] == 3 and wave["failed_hosts"] == ["h3"]
    assert all(wave["hosts"][h]["go"] for h in FLEET[6:])
    assert [h for h in FLEET if wave["hosts"][h]["rollback"]] == ["h3"]
    assert wave["waves"][1] == {"number": 2, "hosts": FLEET[1:6], "failed": ["h3"], "over": False}
    # The last wave deploys; the failed host was rolled back in its rescue.
    for host in FLEET[6:]:
        states[host] = promoted()
    states["h3"]["end"] = {"rolled_back": {"to": "R1"}, "marked": "failed", "lock_released": True, "errors": []}
    out = report("shop", FLEET, FLEET, states, serial=WAVES, max_fail=20)
    assert (out["event"], out["status"], out["ok"], out["stop"]) == ("deploy_partial", "partial", False, False)
    assert out["results"]["deployed"] == [h for h in FLEET if h != "h3"]
    assert out["results"]["failed_rolled_back"] == ["h3"]
    assert out["hosts"]["h3"]["fail"] and not any(out["hosts"][h]["fail"] for h in FLEET if h != "h3")
    assert out["message"].startswith("Deploy of shop partly failed: release live on 19 of 20 hosts. h1: release R2 is live")
    assert ("h3 failed at Bring up the services of the phase web: gate failed; rolled back to the live release R1, "
            "release R2 is marked failed") in out["message"]
    assert "h3 failed within vpsops_max_fail_percentage 20 %" in out["message"]
    assert out["message"].endswith("By host: deployed: %s; failed and rolled back: h3."
                                   % ", ".join(h for h in FLEET if h != "h3"))
    assert [(e["host"], e["event"], e["data"]["result"]) for e in out["audit"] if e["host"] in ("h2", "h3")] == [
        ("h2", "deploy_succeeded", "deployed"), ("h3", "deploy_failed", "failed_rolled_back")]
    assert all(e["status"] == "partial" for e in out["audit"])


def test_beyond_the_budget_the_later_waves_do_not_start_and_every_changed_host_is_rolled_back():
    states = fleet_states(promoted_hosts=FLEET[:6], failed_hosts=["h3", "h4"])
    wave = decide(FLEET, FLEET, states, serial=WAVES, max_fail=20, batch=FLEET[6:])
    assert wave["stop"] and wave["over_budget"] == [{"number": 2, "failed": ["h3", "h4"], "size": 5}]
    assert not any(wave["hosts"][h]["go"] for h in FLEET[6:])
    for host in FLEET[6:]:
        states[host]["skipped"] = True
    final = decide(FLEET, FLEET, states, serial=WAVES, max_fail=20)
    assert [h for h in FLEET if final["hosts"][h]["rollback"]] == FLEET[:6]
    assert final["hosts"]["h1"]["reason"] == "h3, h4 failed"
    # The not started hosts still end: their locks are released.
    assert all(final["hosts"][h]["end"] for h in FLEET)
    for host in FLEET[:6]:
        states[host]["end"] = {"rolled_back": {"to": "R1"}, "marked": "failed", "lock_released": True, "errors": []}
    for host in FLEET[6:]:
        states[host]["end"] = {"rolled_back": None, "marked": "failed", "lock_released": True, "errors": []}
    out = report("shop", FLEET, FLEET, states, serial=WAVES, max_fail=20)
    assert (out["event"], out["status"]) == ("deploy_failed", "failed")
    assert out["results"] == {"deployed": [], "failed_rolled_back": ["h3", "h4"], "failed": [],
                              "rolled_back": ["h1", "h2", "h5", "h6"], "not_started": FLEET[6:], "unreachable": []}
    assert out["message"].startswith("Deploy of shop failed. h1: deployed R2, then rolled back to R1 because h3, h4 failed")
    assert "h7: not deployed (another host failed)" in out["message"]
    assert ("Wave 2 of 3 had 2 failed host(s) of 5, more than vpsops_max_fail_percentage 20 % allows: the later "
            "waves were not started and every host this run changed was rolled back.") in out["message"]
    assert out["message"].endswith("By host: failed and rolled back: h3, h4; rolled back because another host failed: "
                                   "h1, h2, h5, h6; not started: %s." % ", ".join(FLEET[6:]))
    assert all(out["hosts"][h]["fail"] for h in FLEET)
    events = dict((e["host"], e["event"]) for e in out["audit"])
    assert events["h1"] == "deploy_rolled_back" and events["h3"] == "deploy_failed" and events["h20"] == "deploy_skipped"


def test_exactly_the_budget_is_within_it():
    states = fleet_states(promoted_hosts=FLEET[:6], failed_hosts=["h6"])
    assert not decide(FLEET, FLEET, states, serial=WAVES, max_fail=20, batch=FLEET[6:])["stop"]
    assert decide(FLEET, FLEET, states, serial=WAVES, max_fail=19, batch=FLEET[6:])["stop"]


@pytest.mark.parametrize("budget", [None, "", 0, 50, 99])
def test_a_failed_canary_stops_the_deploy_unless_the_budget_is_100(budget):
    states = fleet_states(failed_hosts=["h1"])
    assert decide(FLEET, FLEET, states, serial=WAVES, max_fail=budget, batch=FLEET[1:6])["stop"]
    assert not decide(FLEET, FLEET, states, serial=WAVES, max_fail=100, batch=FLEET[1:6])["stop"]


@pytest.mark.parametrize("budget", [None, "", 0])
def test_unset_any_host_that_failed_its_lock_stops_the_deploy_before_the_canary(budget):
    states = fleet_states(begin_failed=["h15"])
    wave = decide(FLEET, FLEET, states, serial=WAVES, max_fail=budget, batch=["h1"])
    assert wave["stop"] and not wave["hosts"]["h1"]["go"] and wave["over_budget"][0]["number"] == 3


def test_a_host_that_failed_its_lock_counts_in_its_own_wave_and_does_not_go():
    states = fleet_states(begin_failed=["h15"])
    first = decide(FLEET, FLEET, states, serial=WAVES, max_fail=10, batch=["h1"])
    assert not first["stop"] and first["hosts"]["h1"]["go"]
    last = decide(FLEET, FLEET, states, serial=WAVES, max_fail=10, batch=FLEET[6:])
    assert [h for h in FLEET[6:] if not last["hosts"][h]["go"]] == ["h15"]
    assert not last["hosts"]["h15"]["rollback"] and not last["hosts"]["h15"]["end"]  # never locked, never changed


def test_an_unreachable_host_within_the_budget_is_reported_as_unreachable():
    states = fleet_states(promoted_hosts=[h for h in FLEET if h != "h9"], unreachable=["h9"])
    states["h9"]["end"] = {"host_unreachable": True, "failed": True}
    out = report("shop", FLEET, FLEET, states, serial=WAVES, max_fail=10)
    assert out["event"] == "deploy_partial" and out["results"]["unreachable"] == ["h9"]
    assert out["message"].endswith("; unreachable: h9.") and "run rollback.yml once it is back" in out["hosts"]["h9"]["line"]
    assert not out["hosts"]["h1"]["fail"] and out["hosts"]["h9"]["fail"]


def test_a_wave_decision_names_its_wave_and_each_host_its_own():
    decided = decide(FLEET, FLEET, fleet_states(), serial=WAVES, batch=FLEET[1:6])
    assert decided["wave"] == 2 and [w["hosts"] for w in decided["waves"]] == [FLEET[:1], FLEET[1:6], FLEET[6:]]
    assert decided["hosts"]["h20"]["wave"] == 3 and decided["max_fail_percentage"] is None


def test_the_start_lines_name_each_host_and_leave_out_a_blank_release_tag():
    lines = started({"a": "shop", "b": "shop"}, ["a", "b"], release_tag="", phases={"a": ["web"], "b": ["web"]})
    assert lines[0] == {"host": "a", "event": "deploy_started", "stack": "shop",
                        "data": {"phases": ["web"], "hosts": ["a", "b"]}}
    assert started({"a": "shop"}, ["a"], release_tag="v2")[0]["data"]["release_tag"] == "v2"
