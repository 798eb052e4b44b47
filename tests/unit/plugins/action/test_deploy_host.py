"""What the deploy_host action shows before a phase runs: the names the gate will use."""

from ansible_collections.vpsops.deploy.plugins.action.deploy_host import phase_start_line


def test_a_phase_start_names_unnamed_checks_as_the_gate_does_without_their_secrets():
    stack = {"phases": [{"name": "app", "checks": [
        {"name": "web", "type": "http", "url": "http://127.0.0.1:1/"},
        {"type": "command", "argv": ["redis-cli", "-a", "pw-in-argv-77", "ping"]}]}]}
    line = phase_start_line(stack, "app", ["web", "cache"])
    assert line == ("Phase app: services web, cache; backups none; migration none; "
                    "checks web, command redis-cli -a *** ping."), line
