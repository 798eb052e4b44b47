"""The deploy plan without Docker: phases, hashes, per-service decisions, drift, removals, the diff.
(The module's documentation of phases: tests/unit/plugins/doc_fragments/test_checks.py.)"""

import os

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _plan as plan

IMG1 = "sha256:" + "1" * 64
IMG2 = "sha256:" + "2" * 64


def container(service, number, image_id=IMG1, state="running", image="demo/%s:v1"):
    return {"id": "c-%s-%d" % (service, number), "name": "st-%s-%d" % (service, number), "service": service,
            "number": str(number), "image_id": image_id, "image": image % service if "%s" in image else image,
            "state": state, "health": None}


def new(image_id=IMG1, config_hash="h1", replicas=1, image="demo/x:v2"):
    return {"image": image, "image_id": image_id, "pull": image_id is None, "replicas": replicas,
            "pinned": None, "config_hash": config_hash}


def current_of(*containers, hashes=None):
    hashes = hashes or dict((c["id"], "h1") for c in containers)
    return plan.group_current(list(containers), hashes)


# --- input ---------------------------------------------------------------------------------------

def test_stack_files_default_to_every_phase_file_in_phase_order():
    phases = [{"name": "a", "compose_files": ["infra.yml"]},
              {"name": "b", "compose_files": ["platform.yml", "infra.yml"]},
              {"name": "c", "compose_files": ["modules.yml"]}]
    assert plan.stack_files(phases, []) == ["infra.yml", "platform.yml", "modules.yml"]
    assert plan.stack_files(phases, ["x.yml"]) == ["x.yml"]


@pytest.mark.parametrize("phases, files, message", [
    ([], ["a.yml"], "phases: give at least one phase"),
    ([{"name": "", "compose_files": ["a.yml"]}], ["a.yml"], "phases[0]: every phase needs a name"),
    ([{"name": "p", "compose_files": ["a.yml"]}, {"name": "p", "compose_files": ["a.yml"]}], ["a.yml"],
     "phases[1] (p): phase names must be unique"),
    ([{"name": "p", "compose_files": []}], ["a.yml"], "phases[0] (p): compose_files must name at least one"),
    ([{"name": "p", "compose_files": ["b.yml"]}], ["a.yml"],
     "phases[0] (p): compose_files names b.yml, which is not among the stack's files (a.yml)"),
    ([{"name": "p", "compose_files": ["a.yml"], "migration": {"command": ["x"]}}], ["a.yml"],
     "phases[0] (p): migration needs a 'service'"),
])
def test_bad_phases_are_refused_naming_the_option(phases, files, message):
    with pytest.raises(plan.PlanError) as err:
        plan.check_phases(phases, files)
    assert message in str(err.value)


def test_phase_files_match_by_path_or_base_name():
    plan.check_phases([{"name": "p", "compose_files": ["a.yml"]}], ["/staged/a.yml"])
    assert plan._match("a.yml", ["/staged/a.yml"]) == "/staged/a.yml"


def test_phase_entry_reports_backups_and_migration():
    entry = plan.phase_entry({"name": "modules", "compose_files": ["m.yml"], "backup": ["ar", "payments"],
                              "migration": {"service": "ar-migrate", "command": ["alembic", "upgrade", "head"]},
                              "rollout": ["ar"], "checks": [{"type": "tcp", "port": 1}]})
    assert entry == {"name": "modules", "compose_files": ["m.yml"], "backups": ["ar", "payments"], "migration": True,
                     "migration_service": "ar-migrate", "rollout": ["ar"], "services": {}, "changes": None}
    assert plan.phase_entry({"name": "p", "compose_files": ["m.yml"]})["migration"] is False


# --- parsing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("service, replicas", [
    ({}, 1),
    ({"deploy": {"replicas": 2}}, 2),
    ({"scale": 3}, 3),
    ({"deploy": {"replicas": 0}}, 0),
    ({"deploy": {"replicas": "x"}}, 1),
])
def test_replicas_of(service, replicas):
    assert plan.replicas_of(service) == replicas


def test_group_current_keeps_one_value_when_containers_agree_and_lists_when_they_differ():
    grouped = current_of(container("auth", 1), container("auth", 2, image_id=IMG2, state="exited"),
                         container("lb", 1), hashes={"c-auth-1": "h1", "c-auth-2": "h2", "c-lb-1": "h9"})
    assert grouped["auth"]["image_id"] == [IMG1, IMG2]
    assert grouped["auth"]["config_hash"] == ["h1", "h2"]
    assert grouped["auth"]["containers"] == ["st-auth-1", "st-auth-2"]
    assert grouped["auth"]["running"] == 1
    assert grouped["lb"]["image_id"] == IMG1 and grouped["lb"]["config_hash"] == "h9"
    assert plan.public_current(grouped["lb"]) == {"image": "demo/lb:v1", "image_id": IMG1, "config_hash": "h9",
                                                  "containers": ["st-lb-1"], "running": 1}


# --- deciding ------------------------------------------------------------------------------------

@pytest.mark.parametrize("containers, hashes, wanted, action", [
    ([], {}, new(), "create"),
    ([], {}, new(replicas=0), "unchanged"),
    ([container("s", 1)], None, new(), "unchanged"),
    ([container("s", 1)], None, new(image_id=IMG2), "recreate"),
    ([container("s", 1)], None, new(config_hash="h2"), "recreate"),
    ([container("s", 1)], None, new(image_id=None), "recreate"),
    ([container("s", 1), container("s", 2, image_id=IMG2)], None, new(replicas=2), "recreate"),
    ([container("s", 1, state="exited")], None, new(), "start"),
    ([container("s", 1, state="restarting")], None, new(), "unchanged"),
    ([container("s", 1)], None, new(replicas=2), "scale"),
    ([container("s", 1), container("s", 2)], None, new(replicas=1), "scale"),
    ([container("s", 1, state="exited")], None, new(image_id=IMG2), "recreate"),
])
def test_decide(containers, hashes, wanted, action):
    current = current_of(*containers, hashes=hashes).get("s")
    assert plan.decide(current, wanted) == action


PHASES = [plan.phase_entry({"name": "infrastructure", "compose_files": ["i.yml"], "backup": ["ar"]}),
          plan.phase_entry({"name": "platform", "compose_files": ["p.yml"], "rollout": ["auth"]})]


def live_manifest(**services):
    return {"id": "r1", "services": dict((n, {"image": "demo/%s:v1" % n, "image_id": i, "ref": "vpsops/st/%s:id-1" % n})
                                         for n, i in services.items()),
            "phases": [{"name": "infrastructure", "services": ["db", "cache"]},
                       {"name": "platform", "services": ["auth", "lb", "old"]}]}


def test_build_plan_per_phase_with_summary_changes_and_live_image_ids():
    current = current_of(container("db", 1), container("auth", 1), container("auth", 2), container("lb", 1))
    wanted = {"db": new(), "auth": new(image_id=IMG2), "lb": new(), "cache": new()}
    wanted["auth"]["replicas"] = 2
    phases, summary, drift = plan.build_plan(PHASES, {"infrastructure": ["cache", "db"], "platform": ["auth", "lb"]},
                                             wanted, current, live_manifest(db=IMG1, auth=IMG1, lb=IMG1))
    assert [p["name"] for p in phases] == ["infrastructure", "platform"]
    actions = dict((n, s["action"]) for p in phases for n, s in p["services"].items())
    assert actions == {"db": "unchanged", "cache": "create", "auth": "recreate", "lb": "unchanged"}
    assert [p["changes"] for p in phases] == [1, 1]
    assert summary == {"create": 1, "recreate": 1, "start": 0, "scale": 0, "unchanged": 2, "remove": 0}
    assert phases[1]["services"]["auth"]["live_image_id"] == IMG1
    assert phases[1]["services"]["auth"]["rollout"] is True and phases[1]["services"]["lb"]["rollout"] is False
    assert phases[0]["backups"] == ["ar"] and phases[0]["services"]["cache"]["current"] is None
    assert drift == []
    assert PHASES[0]["services"] == {}  # the input is not changed


def test_drift_is_what_runs_against_what_the_live_release_pinned():
    current = current_of(container("db", 1, image_id=IMG2), container("auth", 1), container("extra", 1))
    wanted = {"db": new(), "auth": new(), "lb": new(), "extra": new(), "cache": new()}
    phases, _summary, drift = plan.build_plan(
        PHASES, {"infrastructure": ["cache", "db"], "platform": ["auth", "extra", "lb"]}, wanted, current,
        live_manifest(db=IMG1, auth=IMG1, lb=IMG1))
    # db runs another image; lb was stopped/removed outside; extra runs but the release has none.
    assert drift == ["db", "extra", "lb"]
    assert phases[0]["services"]["cache"]["drift"] is False  # new and not running: no drift
    no_live = plan.build_plan(PHASES, {"infrastructure": ["db"], "platform": []}, {"db": new()}, current, None)
    assert no_live[2] == []


def test_services_no_phase_defines_are_removed_in_the_phase_the_live_release_recorded():
    current = current_of(container("db", 1), container("old", 1), container("stray", 1))
    phases, summary, _drift = plan.build_plan(PHASES, {"infrastructure": ["db"], "platform": []}, {"db": new()},
                                              current, live_manifest(db=IMG1, old=IMG1))
    assert phases[1]["services"]["old"]["action"] == "remove"
    assert phases[1]["services"]["old"]["new"] is None
    assert phases[1]["services"]["old"]["current"]["containers"] == ["st-old-1"]
    # Not in the live release: listed with the last phase.
    assert phases[1]["services"]["stray"]["action"] == "remove"
    assert summary["remove"] == 2 and phases[1]["changes"] == 2 and phases[0]["changes"] == 0


def test_a_pinned_image_reads_as_its_source_reference():
    pinned = container("auth", 1, image="vpsops/st/auth:id-1")
    phases = plan.build_plan(PHASES, {"platform": ["auth"]}, {"auth": new()}, current_of(pinned),
                             live_manifest(auth=IMG1))[0]
    assert phases[1]["services"]["auth"]["current"]["image"] == "vpsops/st/auth:id-1"
    assert phases[1]["services"]["auth"]["current"]["source_image"] == "demo/auth:v1"


def test_diff_text_lists_service_and_image_per_phase():
    current = current_of(container("auth", 1), container("gone", 1))
    phases = plan.build_plan([PHASES[1]], {"platform": ["auth", "lb"]},
                             {"auth": new(image_id=IMG2, image="demo/auth:v2"),
                              "lb": new(image_id=None, image="demo/lb:v9")}, current)[0]
    before, after = plan.diff_text(phases)
    assert before == "[platform]\nauth: demo/auth:v1 (111111111111)\ngone: demo/gone:v1 (111111111111)\n"
    assert after == "[platform]\nauth: demo/auth:v2 (222222222222)\nlb: demo/lb:v9 (not on this host) [pull]\n"


def test_a_project_not_on_the_host_lists_only_the_phases(tmp_path):
    phases = [{"name": "infrastructure", "compose_files": ["i.yml"], "backup": ["ar"]},
              {"name": "modules", "compose_files": ["m.yml"], "migration": {"service": "ar-migrate"}}]
    result = plan.make_plan(None, "shop", phases, str(tmp_path / "absent"), state_dir=str(tmp_path / "state"))
    assert result["project_missing"] is True
    assert result["missing_files"] == [str(tmp_path / "absent" / "i.yml"), str(tmp_path / "absent" / "m.yml")]
    assert [(p["name"], p["services"], p["backups"], p["migration"]) for p in result["plan"]] == [
        ("infrastructure", {}, ["ar"], False), ("modules", {}, [], True)]
    assert set(result["summary"].values()) == {0}
    # One file of two on the host (a phase added since the last deploy): still only the phases.
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "i.yml").write_text("services: {}\n")
    again = plan.make_plan(None, "shop", phases, str(tmp_path / "p"), state_dir=str(tmp_path / "state"))
    assert again["project_missing"] is True and again["missing_files"] == [str(tmp_path / "p" / "m.yml")]
    assert not os.path.exists(tmp_path / "state")  # nothing written


def test_a_bad_stack_name_is_refused(tmp_path):
    with pytest.raises(plan.PlanError) as err:
        plan.make_plan(None, "Bad Name", [{"name": "a", "compose_files": ["a.yml"]}], str(tmp_path))
    assert "stack must be a compose project name" in str(err.value)
