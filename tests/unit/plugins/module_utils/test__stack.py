"""The check of the stack variable on the controller (vpsops.deploy.stack_check): the messages name
the key and what was expected, in the order an operator fixes them, and never show a secret."""

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils._stack import StackError, check_stack


def stack(**changes):
    base = {"name": "shop", "source": "files/shop", "env": {"DB_PASSWORD": "s3cret"},
            "databases": {"main": {"db": "shop", "container": "shop-db-1", "login_password": "s3cret"}},
            "phases": [{"name": "web", "compose_files": ["web.yml"], "backup": ["main"]}]}
    base.update(changes)
    return base


def test_a_valid_stack_passes():
    check_stack(stack())


def test_the_stack_must_be_a_mapping():
    with pytest.raises(StackError, match="vpsops_stack must be a mapping"):
        check_stack("platform")


@pytest.mark.parametrize("changes, message", [
    ({"phases": [{"name": "web"}]}, "missing required arguments: compose_files found in vpsops_stack -> phases"),
    ({"phases": [{"name": "web", "compose_files": ["a.yml"], "bogus": 1}]},
     "vpsops_stack.phases.bogus. Supported parameters include"),
    ({"phases": [{"name": "web", "compose_files": ["a.yml"], "timeout": "soon"}]},
     "argument 'timeout' is of type str found in 'vpsops_stack -> phases'. and we were unable to convert to int"),
    ({"databases": {"main": {"container": "x", "login_password": "s3cret"}}},
     "missing required arguments: db found in vpsops_stack.databases.main"),
    ({"phases": [{"name": "web", "compose_files": ["a.yml"], "backup": ["other"]}]},
     'vpsops_stack.phases[web]: backup names ["other"] that vpsops_stack.databases does not define (it defines ["main"])'),
    ({"phases": [{"name": "web", "compose_files": ["a.yml"], "migration": {"service": "m", "restore_on_failure": True}}]},
     "migration.restore_on_failure is set while the phase backs up no database"),
    ({"name": "Bad Name"}, "vpsops_stack needs 'name' (lowercase letters, digits, '-' or '_'"),
    ({"phases": []}, "vpsops_stack.phases must be a non-empty list of phases"),
    ({"phases": [{"name": "a", "compose_files": ["x.yml"]}, {"name": "a", "compose_files": ["y.yml"]}]},
     "unique 'name'"),
    ({"env": {"DB_PASSWORD": "it's\r"}}, "vpsops_stack.env.DB_PASSWORD must be a valid variable name whose value"),
    ({"env": {"BAD-NAME": "x"}}, "vpsops_stack.env.BAD-NAME must be a valid variable name"),
    ({"phases": "infrastructure,modules"}, "vpsops_stack.phases must be a list of phases (mappings with name and "
                                           "compose_files), got str"),
    ({"phases": ["web"]}, "vpsops_stack.phases[0] must be a mapping with name and compose_files, got str"),
    ({"env": ["A=1"]}, "vpsops_stack.env must be a mapping of variable names to values, got list"),
])
def test_a_bad_stack_is_refused_naming_what_is_wrong_without_a_secret(changes, message):
    with pytest.raises(StackError) as caught:
        check_stack(stack(**changes))
    assert message in str(caught.value)
    assert "s3cret" not in str(caught.value) and "it's" not in str(caught.value)
