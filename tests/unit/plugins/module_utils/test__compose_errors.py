"""A compose error keeps its reason, not its progress lines: the message may be cut at its start."""

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import without_progress

OUTPUT = """ Network p_default  Creating
 Network p_default  Created
 Container p-db-1  Creating
 Container p-db-1  Created
 Container p-db-1  Starting
 Container p-db-1  Started
 Container p-db-1  Waiting
container p-db-1 is unhealthy"""


def test_the_progress_lines_go_and_the_reason_stays():
    assert without_progress(OUTPUT) == "container p-db-1 is unhealthy"


def test_output_of_progress_lines_only_is_kept():
    text = " Container p-db-1  Started"
    assert without_progress(text) == text
