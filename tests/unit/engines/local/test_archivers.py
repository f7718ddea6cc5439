"""When the supervisor lets an instance's WAL archiver run: only while its server runs and
archives, or while its bootstrap (which starts it) is under way."""

from __future__ import annotations

import pytest

from paas_pitr.engines.local.archivers import archiver_wanted


@pytest.mark.parametrize(
    ("state", "hibernated", "server_running", "wanted"),
    [
        ("pending", False, False, True),
        ("running", False, False, True),  # a restore: archives from its promotion on
        ("running", False, True, True),
        ("done", False, True, True),
        ("done", True, True, False),  # hibernating: stopped once its server has stopped
        ("done", True, False, False),  # hibernated, kept after an in-place switch
        ("done", False, False, False),  # its server is down (failed to start)
        ("failed", False, False, False),  # a failed restore: no server
        ("failed", False, True, False),
    ],
)
def test_an_archiver_runs_only_for_a_running_archiving_server(
    state: str, hibernated: bool, server_running: bool, wanted: bool
) -> None:
    assert archiver_wanted(state, hibernated=hibernated, server_running=server_running) is wanted
