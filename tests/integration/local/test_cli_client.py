"""The CLI against a real server and the real local engine: what a person sees."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from paas_pitr.cli import app
from paas_pitr.timestamps import format_api_time
from tests.integration.local.conftest import LocalApi


@pytest.fixture
def cli(local_api: LocalApi, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("PAAS_PITR_URL", local_api.running.url)
    monkeypatch.setenv("PAAS_PITR_TOKEN", local_api.running.token())
    return CliRunner()


def test_create_wait_means_restorable_and_standard_restores_say_what_you_get(
    cli: CliRunner, local_api: LocalApi
) -> None:
    created = cli.invoke(
        app, ["addons", "create", "--app", "app-1", "--plan", "standard", "--wait"]
    )
    assert created.exit_code == 0, created.stderr
    assert "db-acme-app-1 is ready and restorable" in created.stderr
    # Not a terminal: one line per state awaited, with the elapsed time, never a spinner.
    waited = [line for line in created.stderr.splitlines() if line.startswith("waiting for")]
    assert waited and waited[0].endswith("(0s)")
    assert all(line.rstrip().endswith("s)") for line in waited)
    states = [line.rsplit(" (", 1)[0] for line in waited]
    assert all(a != b for a, b in itertools.pairwise(states))  # changes only
    # Restorable means it: the window is open when --wait returns.
    assert local_api.backups("app-1", "db-acme-app-1")["window"]["state"] == "open"

    listed = cli.invoke(app, ["backups", "list", "--app", "app-1", "--addon", "db-acme-app-1"])
    assert listed.exit_code == 0, listed.stderr
    assert "recoverability window: open" in listed.stdout
    (point,) = local_api.backups("app-1", "db-acme-app-1")["window"]["restore_points"]
    assert f"restore point: {point['at']} (backup {point['backup_id']})" in listed.stdout

    asked = format_api_time(datetime.now(UTC))
    restored = cli.invoke(
        app, ["restore", "--app", "app-1", "--addon", "db-acme-app-1", "--timestamp", asked]
    )
    assert restored.exit_code == 0, restored.stderr
    assert "restore triggered: waiting for the new cluster to start (0s)" in restored.stderr
    assert (
        f"you asked for {asked}; you get the end of backup {point['backup_id']} at {point['at']}"
        in restored.stderr
    )


def test_create_wait_on_the_free_plan_says_it_cannot_be_restored(cli: CliRunner) -> None:
    created = cli.invoke(app, ["addons", "create", "--app", "app-2", "--plan", "free", "--wait"])
    assert created.exit_code == 0, created.stderr
    assert "its plan (free) has no backups, so it cannot be restored" in created.stderr
