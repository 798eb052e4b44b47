"""The controller side of vpsops.deploy.deploy_outcome: what it reads of each host (the results the
deploy playbook registered) and the check of every host's stack, once per distinct stack."""

from ansible_collections.vpsops.deploy.plugins.action.deploy_outcome import check_role_variables, check_stacks, host_state, role_options


class Broken(dict):
    """A host's variables where one cannot be templated (an undefined vault variable inside)."""

    def __getitem__(self, key):
        if key == "vpsops_stack":
            raise ValueError("'vault_db_password' is undefined\nmore")
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        try:
            return self[key]
        except (KeyError, ValueError):
            return default


def stack(**changes):
    base = {"name": "shop", "source": "files/shop", "env": {"DB_PASSWORD": "s3cret-value"},
            "phases": [{"name": "web", "compose_files": ["web.yml"]}]}
    base.update(changes)
    return base


BEGIN = {"release": "R2", "live": "R1", "owner": "me", "plan": [{"name": "web"}], "baseline": {"x": 1}, "changed": True}


def test_a_host_that_went_live_in_its_wave():
    wave = {"hosts": {"a": {"go": True}, "b": {"go": True}}}
    hostvars = {"a": {"deploy_phase_release": BEGIN, "__vpsops_wave": wave,
                      "deploy_phase_finished": {"release": "R2", "lock_released": False, "changed": True}}}
    assert host_state(hostvars, "a") == {"begin": {"release": "R2", "live": "R1", "owner": "me"}, "touched": True,
                                         "promoted": "R2", "unlocked": False}
    # In check mode nothing was changed, the finish step was skipped.
    hostvars["a"]["deploy_phase_finished"] = {"skipped": True, "changed": False}
    assert host_state(hostvars, "a", check_mode=True) == {"begin": {"release": "R2", "live": "R1", "owner": "me"},
                                                          "touched": False}


def test_a_host_left_alone_failed_or_ended():
    hostvars = {
        "a": {"deploy_phase_release": BEGIN, "__vpsops_wave": {"hosts": {"a": {"go": False}}},
              "deploy_phase_ended": {"skipped": True}},
        "b": {"deploy_phase_release": {"failed": True, "msg": "cannot lock"},
              "__vpsops_failed": {"task": "Begin", "msg": "cannot lock", "unreachable": False}},
        "c": {"deploy_phase_release": BEGIN, "__vpsops_wave": {"hosts": {"c": {"go": True}}},
              "deploy_phase_finished": {"failed": True, "msg": "smoke"},
              "deploy_phase_ended": {"rolled_back": {"to": "R1"}, "lock_released": True}},
    }
    assert host_state(hostvars, "a")["skipped"] and "end" not in host_state(hostvars, "a")
    assert host_state(hostvars, "b") == {"begin": {"failed": True, "msg": "cannot lock"},
                                         "failed": {"task": "Begin", "msg": "cannot lock", "unreachable": False}}
    state = host_state(hostvars, "c")
    assert "promoted" not in state and state["end"]["rolled_back"] == {"to": "R1"}
    assert host_state(hostvars, "gone") == {}


def test_every_host_s_stack_is_checked_once_per_distinct_stack_and_no_value_is_shown():
    good = stack()
    assert check_stacks({"a": {"vpsops_stack": good}, "b": {"vpsops_stack": dict(good)}}, ["a", "b"], "vpsops_stack") is None
    both = check_stacks({"a": {"vpsops_stack": stack(phases=[])}, "b": {"vpsops_stack": stack(phases=[])}}, ["a", "b"],
                        "vpsops_stack")
    assert both.startswith("vpsops_stack.phases must be a non-empty list") and both.endswith("(the stack of every host)")
    one = check_stacks({"a": {"vpsops_stack": good}, "b": {"vpsops_stack": stack(name="Bad Name")},
                        "c": {"vpsops_stack": good}}, ["a", "b", "c"], "vpsops_stack")
    assert one.endswith("(the stack of b)") and "s3cret-value" not in one
    assert check_stacks({"a": {}}, ["a"], "vpsops_stack") == "vpsops_stack is not defined for a"
    broken = check_stacks({"a": Broken()}, ["a"], "vpsops_stack")
    assert broken == "vpsops_stack of a cannot be templated: 'vault_db_password' is undefined"


def test_the_role_variables_the_later_steps_take_are_checked_once_before_anything():
    options = role_options()
    # The variables deploy.yml passes itself are not the operator's to check.
    assert "deploy_phase_consecutive" in options and "deploy_phase_keep" in options
    assert "deploy_phase_release" not in options and "deploy_phase_rollback" not in options
    assert check_role_variables({"a": {"deploy_phase_keep": "3", "deploy_phase_timeout": ""}}, ["a"], options) is None
    found = check_role_variables({"a": {}, "b": {"deploy_phase_consecutive": "twice"}}, ["a", "b"], options)
    assert found.startswith("The deploy_phase role's variables of b are not valid: argument 'deploy_phase_consecutive'")
    pull = check_role_variables({"a": {"deploy_phase_pull": "sometimes"}}, ["a"], options)
    assert "deploy_phase_pull" in pull and "missing, always, never" in pull
