"""Restores that fail for real, and say why in PostgreSQL's (or barman-cloud's) own words.

The API checks the recoverability window before it creates anything, so each test first
lets the window contain its target, then damages the source's archive behind the API's back
(the embedded S3 server keeps objects as plain files), as a lost or corrupted object would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paas_pitr.timestamps import format_api_time
from tests.integration.api.test_api import wait_for_rows
from tests.integration.local.conftest import LocalApi
from tests.integration.local.test_pitr import (
    damage,
    instant_between_commits,
    s3_root,
    switch_wal,
    write_initial_data,
)

# What our own connections used to make PostgreSQL log while it started, reported instead
# of the real reason.
STARTING_UP = "starting up"


def wal_segments(server: Path) -> dict[str, Path]:
    """WAL segment name (24 hex digits) -> its object in the archive, leaving out history
    files and backup labels (``<segment>.<offset>.backup``)."""
    found: dict[str, Path] = {}
    for path in (server / "wals").rglob("*"):
        stem, _, rest = path.name.partition(".")
        if path.is_file() and len(stem) == 24 and "." not in rest:
            found[stem] = path
    return found


def restorable_target_after_a_backup(api: LocalApi) -> tuple[str, dict[str, Any], Path, str]:
    """A pro addon with one completed base backup, rows written after it and an instant T
    (restorable: the window contains it) whose replay needs WAL written after the backup.

    Returns the addon id, the backup as the API lists it, the backup's server folder in the
    bucket and T.
    """
    addon = api.create_addon("pro")
    addon_id, uri = addon["addon_id"], addon["connection"]["uri"]
    listing = api.wait_backups_completed("app-1", addon_id)
    (backup,) = [b for b in listing["items"] if b["status"] == "completed"]
    api.wait_current_range("app-1", addon_id)  # T after the backup is consistent
    # The rows go to a segment after the backup's last one, which is then complete.
    switch_wal(api, addon_id)
    write_initial_data(uri)
    target = format_api_time(instant_between_commits())
    damage(uri)
    switch_wal(api, addon_id)
    api.wait_restorable("app-1", addon_id, target)
    (base,) = s3_root(api).glob(f"*/base/{backup['backup_id']}")
    return addon_id, backup, base.parent.parent, target


def failed_restore(api: LocalApi, addon_id: str, target: str) -> dict[str, Any]:
    response = api.restore("app-1", addon_id, target)
    assert response.status_code == 202, response.text
    restore = api.wait_restore("app-1", addon_id, response.json()["data"]["restore_id"])
    assert restore["status"] == "failed", restore
    assert STARTING_UP not in restore["reason"], restore
    assert restore["hint"], restore
    return restore


def processes_naming(text: str) -> list[int]:
    """PIDs of the processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in command:
                found.append(int(entry.name))
    return found


def test_a_wal_segment_missing_from_the_archive_is_named(local_api: LocalApi) -> None:
    addon_id, backup, server, target = restorable_target_after_a_backup(local_api)
    segments = wal_segments(server)
    after_backup = sorted(name for name in segments if name > backup["end_wal"])
    # The first segment after the backup goes; later ones stay: a gap, not the archive's end.
    assert len(after_backup) >= 2, (backup, sorted(segments))
    gap = after_backup[0]
    segments[gap].unlink()

    restore = failed_restore(local_api, addon_id, target)
    reason = restore["reason"]
    assert reason.startswith("recovery ended before configured recovery target was reached"), reason
    assert f"WAL segment {gap} is missing from the archive" in reason, reason
    assert "the archive has a gap" in reason, reason
    assert "(restore_command: " in reason, reason
    assert "gap" in restore["hint"] and "before the gap" in restore["hint"], restore
    # The audit trail says the same, once.
    (row,) = wait_for_rows(local_api.dsn, 1, "addon.restore_failed")
    assert row[2]["restore_id"] == restore["restore_id"]
    assert row[2]["reason"] == reason
    assert row[2]["hint"] == restore["hint"]
    # Nothing of the restore runs on: no server, no WAL prefetcher, no WAL archiver.
    instance = local_api.engine.instances[restore["cluster_name"]]
    archivers = local_api.engine.archiving.archivers
    assert archivers is not None
    assert not instance.server.is_running()
    assert processes_naming(str(instance.wal_spool)) == []
    assert archivers.pid(restore["cluster_name"]) is None
    assert processes_naming(str(instance.archiver_socket)) == []


def test_a_base_backup_without_its_data_fails_naming_it(
    local_api: LocalApi,
) -> None:
    addon_id, backup, server, target = restorable_target_after_a_backup(local_api)
    data = list((server / "base" / backup["backup_id"]).glob("data.tar*"))
    assert data, sorted(p.name for p in (server / "base" / backup["backup_id"]).iterdir())
    for path in data:
        path.unlink()

    restore = failed_restore(local_api, addon_id, target)
    # Named: missing from the listing, or listed by the S3 server (its listings are cached)
    # but not readable.
    assert restore["reason"].startswith("base backup restore failed: "), restore
    assert f"/base/{backup['backup_id']}/data.tar" in restore["reason"], restore
    assert "base backup is damaged" in restore["hint"], restore


def test_a_base_backup_without_its_checkpoint_wal_fails_with_postgres_reason(
    local_api: LocalApi,
) -> None:
    addon_id, backup, server, target = restorable_target_after_a_backup(local_api)
    segments = wal_segments(server)
    # The segment holding the backup's checkpoint: without it the restored files are useless.
    segments[backup["begin_wal"]].unlink()

    restore = failed_restore(local_api, addon_id, target)
    reason = restore["reason"]
    assert reason.startswith("could not locate required checkpoint record"), reason
    assert f"WAL segment {backup['begin_wal']} is missing from the archive" in reason, reason
    assert "base backup is damaged" in restore["hint"], restore
