"""The CLI as a person runs it, against the real HTTP server (in-memory engine, the test
playing the operator): in a pipe (progress lines on stderr), in a pseudo-terminal (the
spinner, tables on a narrow screen), and the audit trail read back from PostgreSQL."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.timestamps import format_api_time
from tests.integration.conftest import RunningApi
from tests.integration.operator_play import create_addon, fail_restore, finish_restore

EXECUTABLE = str(Path(sys.executable).parent / "paas-pitr")
INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.fixture
def engine() -> InMemoryEngine:
    return InMemoryEngine(mode="in-tree")


def environment(api: RunningApi, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PAAS_PITR_URL": api.url,
        "PAAS_PITR_TOKEN": api.token("acme"),
        "NO_COLOR": "1",
        **extra,
    }


def in_pipe(api: RunningApi, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXECUTABLE, *args],
        env=environment(api, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def in_terminal(api: RunningApi, *args: str, columns: int = 60, **extra: str) -> tuple[int, str]:
    """Run with stdin, stdout and stderr on a pseudo-terminal ``columns`` wide; returns the
    exit code and everything the terminal showed."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [EXECUTABLE, *args],
        env=environment(api, COLUMNS=str(columns), LINES="40", TERM="xterm", **extra),
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    shown = bytearray()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(timeout=30), shown.decode("utf-8", "replace")


def plain(shown: str) -> str:
    """What the terminal shows without its escape sequences (colours, cursor moves)."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)


def addon_with_backups(api: RunningApi, engine: InMemoryEngine) -> str:
    now = datetime.now(UTC)
    with api.client(api.token("acme")) as client:
        return create_addon(
            client,
            engine,
            app="shop",
            plan="pro",
            backups_ending=[now - timedelta(hours=30), now - timedelta(hours=6)],
            archived_at=now - timedelta(seconds=30),
            failed_backups=1,
        )


def start_restore(api: RunningApi, addon: str, at: datetime) -> dict[str, str]:
    with api.client(api.token("acme")) as client:
        response = client.post(
            f"/v1/apps/shop/addons/{addon}/restore", json={"timestamp": format_api_time(at)}
        )
    assert response.status_code == 202, response.text
    data: dict[str, str] = response.json()["data"]
    return data


def later(seconds: float, action: object) -> threading.Timer:
    timer = threading.Timer(seconds, action)  # type: ignore[arg-type]
    timer.start()
    return timer


def test_restores_wait_in_a_pipe_prints_one_line_per_phase(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    addon = addon_with_backups(api, engine)
    restore = start_restore(api, addon, datetime.now(UTC) - timedelta(hours=1))
    cluster = restore["cluster_name"]
    timers = [
        later(1.5, lambda: engine.set_status("Cluster", cluster, {"phase": "Setting up primary"})),
        later(3.5, lambda: finish_restore(engine, cluster)),
    ]
    result = in_pipe(
        api,
        "restores",
        "wait",
        "--app",
        "shop",
        "--addon",
        addon,
        "--restore-id",
        restore["restore_id"],
    )
    for timer in timers:
        timer.join()
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "restore triggered: waiting for the new cluster to start (0s)"
    assert re.fullmatch(
        r"recovering: restoring the base backup and replaying WAL \(\ds\)", lines[1]
    ), lines
    assert re.fullmatch(r"ready \(\ds\)", lines[2]), lines
    assert len(lines) == 3
    assert json.loads(result.stdout)["status"] == "ready"


def test_a_failed_restore_says_why_and_what_to_do(api: RunningApi, engine: InMemoryEngine) -> None:
    addon = addon_with_backups(api, engine)
    restore = start_restore(api, addon, datetime.now(UTC) - timedelta(hours=1))
    fail_restore(
        engine,
        restore["cluster_name"],
        "recovery ended before configured recovery target was reached",
    )
    args = ("--app", "shop", "--addon", addon, "--restore-id", restore["restore_id"])
    waited = in_pipe(api, "restores", "wait", *args)
    assert waited.returncode == 1
    assert (
        "restore failed: recovery ended before configured recovery target was reached"
        in waited.stderr
    )
    hint = json.loads(waited.stdout)["hint"]
    assert hint and f"hint: {hint}" in waited.stderr
    shown = in_pipe(api, "restores", "show", *args)
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["restore_id"] == restore["restore_id"]

    listed = in_pipe(api, "restores", "list", "--app", "shop", "--addon", addon, "-o", "json")
    assert [r["restore_id"] for r in json.loads(listed.stdout)] == [restore["restore_id"]]


def test_restores_wait_gives_up_at_its_timeout(api: RunningApi, engine: InMemoryEngine) -> None:
    addon = addon_with_backups(api, engine)
    restore = start_restore(api, addon, datetime.now(UTC) - timedelta(hours=1))
    result = in_pipe(
        api,
        "restores",
        "wait",
        "--app",
        "shop",
        "--addon",
        addon,
        "--restore-id",
        restore["restore_id"],
        "--timeout",
        "1",
    )
    assert result.returncode == 3
    assert "gave up after 1s: the restore is still restore_triggered" in result.stderr


def test_tables_on_a_narrow_terminal_never_cut_an_instant(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    addon = addon_with_backups(api, engine)
    at = datetime.now(UTC).replace(microsecond=123456) - timedelta(hours=1)
    start_restore(api, addon, at)
    code, shown = in_terminal(api, "restores", "list", "--app", "shop", "--addon", addon)
    assert code == 0, shown
    assert format_api_time(at) in shown
    code, shown = in_terminal(api, "backups", "list", "--app", "shop", "--addon", addon)
    assert code == 0, shown
    with api.client(api.token("acme")) as client:
        listing = client.get(f"/v1/apps/shop/addons/{addon}/backups").json()["data"]
    instants = [b["stopped_at"] for b in listing["items"]] + [
        b["started_at"] for b in listing["items"]
    ]
    assert len(instants) == 6
    for instant in instants:
        assert instant in shown, (instant, shown)
    # The free-text column wraps instead: the error is there, over several lines.
    assert "AccessDenied" in shown

    piped = in_pipe(api, "backups", "list", "--app", "shop", "--addon", addon, "-o", "json")
    assert [b["stopped_at"] for b in json.loads(piped.stdout)["items"]] == [
        b["stopped_at"] for b in listing["items"]
    ]


def test_restores_wait_on_a_terminal_shows_a_spinner_not_lines(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    addon = addon_with_backups(api, engine)
    restore = start_restore(api, addon, datetime.now(UTC) - timedelta(hours=1))
    timer = later(2.5, lambda: finish_restore(engine, restore["cluster_name"]))
    code, shown = in_terminal(
        api,
        "restores",
        "wait",
        "--app",
        "shop",
        "--addon",
        addon,
        "--restore-id",
        restore["restore_id"],
        columns=100,
    )
    timer.join()
    assert code == 0, shown
    # The spinner redraws the phase in place (carriage returns, cursor moves), with its
    # elapsed time; no line of the pipe format.
    assert "restore triggered: waiting for the new cluster to start" in shown
    assert "\x1b[" in shown
    assert "(0s)\r\n" not in shown
    assert '"status": "ready"' in plain(shown)


def test_help_names_values_not_python_types(api: RunningApi) -> None:
    for args in (("--help",), ("restores", "wait", "--help"), ("backups", "list", "--help")):
        result = in_pipe(api, *args)
        assert result.returncode == 0
        assert not re.search(r"<(str|bool|int|float|path)>", result.stdout), result.stdout
    assert "--restore-id" in in_pipe(api, "restores", "wait", "--help").stdout


def test_audit_list_is_the_seeds_query(
    api: RunningApi, engine: InMemoryEngine, audit_dsn: str
) -> None:
    addon = addon_with_backups(api, engine)
    at = datetime.now(UTC).replace(microsecond=250000) - timedelta(hours=1)
    restore = start_restore(api, addon, at)
    deadline = time.monotonic() + 20
    while True:
        result = in_pipe(api, "audit", "list", "-o", "json", PAAS_PITR_DATABASE_URL=audit_dsn)
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (row,) = rows
    assert row["target_id"] == addon
    assert row["details_jsonb"]["restore_id"] == restore["restore_id"]
    assert row["details_jsonb"]["timestamp"] == format_api_time(at)
    assert INSTANT.fullmatch(row["created_at"])
    table = in_pipe(api, "audit", "list", PAAS_PITR_DATABASE_URL=audit_dsn)
    assert row["created_at"] in table.stdout
    # Details one per line, never cut (a pipe is 80 columns: the table grows instead).
    assert f"timestamp: {format_api_time(at)}" in table.stdout
    assert f"restore_id: {restore['restore_id']}" in table.stdout
    url = in_pipe(api, "audit", "url", PAAS_PITR_DATABASE_URL=audit_dsn)
    assert url.stdout.strip() == audit_dsn
    # The README's example: the addon's creation, under its stored action.
    created = in_pipe(
        api,
        "audit",
        "list",
        "--action",
        "addon.create",
        "-o",
        "json",
        PAAS_PITR_DATABASE_URL=audit_dsn,
    )
    assert [r["target_id"] for r in json.loads(created.stdout)] == [addon]
    # A misspelt action is refused with the known ones, never an empty trail.
    misspelt = in_pipe(
        api, "audit", "list", "--action", "addon.created", PAAS_PITR_DATABASE_URL=audit_dsn
    )
    assert misspelt.returncode == 2
    assert misspelt.stderr.startswith(
        "paas-pitr: error: unknown audit action 'addon.created'; the known actions: "
        "addon.create, addon.plan_change, "
    )
    every = in_pipe(
        api, "audit", "list", "--action", "all", "-o", "json", PAAS_PITR_DATABASE_URL=audit_dsn
    )
    actions = [r["action"] for r in json.loads(every.stdout)]
    assert actions[-1] == "addon.create" and "addon.restore_pitr" in actions
    table = in_pipe(api, "audit", "list", "--action", "all", PAAS_PITR_DATABASE_URL=audit_dsn)
    assert re.search(r"┃ created at +┃ action +┃ target", table.stdout), table.stdout
    assert "│ addon.create " in table.stdout


def test_audit_url_of_the_embedded_database(api: RunningApi, tmp_path: Path) -> None:
    missing = in_pipe(api, "audit", "url", PAAS_PITR_STATE_DIR=str(tmp_path))
    assert missing.returncode == 1
    assert f"no embedded audit database under {tmp_path}: run `paas-pitr serve` first" in (
        missing.stderr
    )
    credentials = tmp_path / "audit-db" / "credentials.json"
    credentials.parent.mkdir()
    credentials.write_text(json.dumps({"port": 5999, "password": "pw"}))
    found = in_pipe(api, "audit", "url", PAAS_PITR_STATE_DIR=str(tmp_path))
    assert found.stdout.strip() == "postgresql://postgres:pw@127.0.0.1:5999/paas_pitr"
