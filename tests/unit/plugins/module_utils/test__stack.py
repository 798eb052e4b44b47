"""The check of the stack variable on the controller (vpsops.deploy.stack_check): the messages name
the key and what was expected, in the order an operator fixes them, and never show a secret."""

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils._stack import StackError, check_stack, file_services


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


COMPOSE_WITH_FILES = """
services:
  nats:
    image: nats
    volumes:
      - ./conf/nats.conf:/etc/nats/nats.conf:ro
      - natsdata:/data
      - /var/log:/host-log
      - type: bind
        source: ./${CONF_DIR:-conf}/extra
        target: /extra
  kong:
    image: kong
    env_file: [./kong.env, {path: ./optional.env, required: false}]
    configs: [kong_decl]
    secrets: [{source: jwt, target: jwt.pem}]
configs:
  kong_decl: {file: ./kong/kong.yml}
  unused: {file: ./unused.yml}
secrets:
  jwt: {file: ./secrets/jwt.pem}
volumes:
  natsdata: {}
"""


def test_the_files_compose_files_reference_are_found_per_service():
    from ansible_collections.vpsops.deploy.plugins.module_utils._stack import file_references
    kinds, by_service = file_references({"a.yml": COMPOSE_WITH_FILES}, {})
    assert kinds == {"conf/nats.conf": "bind", "conf/extra": "bind", "kong.env": "env_file",
                     "optional.env": "env_file", "kong/kong.yml": "config", "unused.yml": "config",
                     "secrets/jwt.pem": "secret"}
    assert by_service == {"nats": ["conf/extra", "conf/nats.conf"],
                          "kong": ["kong.env", "kong/kong.yml", "optional.env", "secrets/jwt.pem"]}
    kinds, _by = file_references({"a.yml": COMPOSE_WITH_FILES}, {"CONF_DIR": "other"})
    assert "other/extra" in kinds


@pytest.mark.parametrize("volume, message", [
    ("../outside.conf:/x", "references '../outside.conf', which is outside vpsops_stack.source"),
    (".:/src", "mounts the whole project directory"),
])
def test_a_reference_out_of_the_source_is_refused(volume, message):
    from ansible_collections.vpsops.deploy.plugins.module_utils._stack import file_references
    with pytest.raises(StackError, match=message):
        file_references({"a.yml": "services:\n  s:\n    image: x\n    volumes: [%r]\n" % volume}, {})


def test_referenced_files_are_read_with_owner_only_modes_for_secrets(tmp_path):
    from ansible_collections.vpsops.deploy.plugins.module_utils._stack import read_referenced
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "a.conf").write_text("a")
    (tmp_path / "conf" / "sub").mkdir()
    (tmp_path / "conf" / "sub" / "b.conf").write_text("b")
    (tmp_path / "jwt.pem").write_text("key")
    (tmp_path / "conf" / "a.conf").chmod(0o664)
    (tmp_path / "jwt.pem").chmod(0o644)
    found = read_referenced(str(tmp_path), {"conf": "bind", "jwt.pem": "secret"})
    sub_mode = oct((tmp_path / "conf" / "sub" / "b.conf").stat().st_mode & 0o755 | 0o400)
    assert dict((p, (d, oct(m), k)) for p, (d, m, k) in found.items()) == {
        "conf/a.conf": (b"a", "0o644", "bind"), "conf/sub/b.conf": (b"b", sub_mode, "bind"),
        "jwt.pem": (b"key", "0o600", "secret")}
    with pytest.raises(StackError, match="reference missing.conf, which is not a file or directory"):
        read_referenced(str(tmp_path), {"missing.conf": "bind"})


def test_compose_tags_and_broken_yaml_do_not_stop_the_reading():
    from ansible_collections.vpsops.deploy.plugins.module_utils._stack import file_references
    text = "services:\n  s:\n    image: x\n    ports: !reset []\n    volumes: !override ['./a.conf:/a']\n"
    assert file_references({"a.yml": text, "b.yml": "services: [unclosed\n"}, {}) == (
        {"a.conf": "bind"}, {"s": ["a.conf"]})


def test_file_services_names_what_each_compose_file_defines_or_none_when_only_compose_can_tell():
    texts = {
        "infra.yml": "services:\n  redis: {image: r}\n  db: {image: p}\n",
        "app.yml": "services:\n  api:\n    image: a\n    depends_on: {redis: {condition: service_healthy}}\n"
                   "  web: !override\n    image: w\n",
        "empty.yml": "",
        "volumes-only.yml": "volumes:\n  data: {}\n",
        "included.yml": "include: [other.yml]\nservices:\n  x: {image: x}\n",
        "extends.yml": "services:\n  y:\n    extends: {file: base.yml, service: b}\n",
        "broken.yml": "services: [\n",
        "list.yml": "- services\n",
    }
    assert file_services(texts) == {
        "infra.yml": ["db", "redis"], "app.yml": ["api", "web"], "empty.yml": [], "volumes-only.yml": [],
        "included.yml": None, "extends.yml": None, "broken.yml": None, "list.yml": None}
