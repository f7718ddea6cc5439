"""The local engine on a host whose zone is not UTC: every instant stays a true UTC instant.

The service and the PostgreSQL servers it starts run under ``TZ`` (initdb inherits it and
writes it into postgresql.conf), once with a negative offset and once with a positive
offset that is not a whole number of hours. Backup times, the recoverability window and
the backup a restore picks must be exactly what they are on a UTC host.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from paas_pitr.postgres.embedded import EmbeddedDatabase
from paas_pitr.timestamps import format_api_time
from tests.integration.local.conftest import LocalApi, local_settings, wait_for
from tests.integration.local.test_pitr import (
    damage,
    instant_between_commits,
    snapshot,
    write_initial_data,
    written_then_damaged,
)

ZONEINFO = Path("/usr/share/zoneinfo")
# A negative offset, and a positive one that is not a whole number of hours (+05:45).
ZONES = ["America/Los_Angeles", "Asia/Kathmandu"]


@pytest.fixture(params=ZONES)
def host_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """``TZ`` of this process (the service, and every process it starts) for one test."""
    zone = str(request.param)
    if not (ZONEINFO / zone).is_file():
        # glibc silently falls back to UTC for an unknown zone: the test would prove nothing.
        pytest.fail(f"{ZONEINFO / zone} is missing: install the tzdata package")
    saved = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        offset = time.localtime().tm_gmtoff
        assert offset != 0, f"TZ={zone} is not in effect"
        if zone == "Asia/Kathmandu":
            assert offset == 5 * 3600 + 45 * 60
        yield zone
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


@pytest.fixture
def zoned_api(host_zone: str, workdir: Path, audit_dsn: str) -> Iterator[LocalApi]:
    # Built after host_zone, so that every server it initializes inherits the zone; stopped
    # before the zone is restored.
    api = LocalApi(local_settings(workdir), audit_dsn)
    yield api
    api.stop()


def at(value: Any) -> datetime:
    """An instant the API returned; it must name its offset."""
    parsed = datetime.fromisoformat(str(value))
    assert parsed.utcoffset() is not None, value
    return parsed


def floor_second(moment: datetime) -> datetime:
    # Backup times are whole seconds, truncated.
    return moment.replace(microsecond=0)


def assert_taken_between(backup: dict[str, Any], before: datetime, after: datetime) -> None:
    """The backup ran between two readings of the true UTC clock (no shift by hours)."""
    started, stopped = at(backup["started_at"]), at(backup["stopped_at"])
    assert floor_second(before) <= started <= stopped <= after, (before, backup, after)


def take_backup(api: LocalApi, addon_id: str, count: int) -> dict[str, Any]:
    """An on-demand backup, the ``count``-th completed one; as the API lists it."""
    known = {b["backup_id"] for b in api.backups("app-1", addon_id)["items"]}
    before = datetime.now(UTC)
    taken = api.client.post(f"/v1/apps/app-1/addons/{addon_id}/backups")
    assert taken.status_code == 202, taken.text
    listing = api.wait_backups_completed("app-1", addon_id, count=count)
    after = datetime.now(UTC)
    (new,) = [b for b in listing["items"] if b["backup_id"] not in known]
    assert_taken_between(new, before, after)
    return dict(new)


def initdb_zone(api: LocalApi, addon_id: str) -> str | None:
    """The zone initdb wrote into the instance's postgresql.conf."""
    conf = api.engine.instances[addon_id].server.data_dir / "postgresql.conf"
    for line in conf.read_text(encoding="utf-8").splitlines():
        if line.startswith("timezone = "):
            return line.split("'")[1]
    return None


def server_zones(uri: str) -> tuple[str, str]:
    with psycopg.connect(uri) as conn:
        zone = conn.execute("SHOW timezone").fetchone()
        log_zone = conn.execute("SHOW log_timezone").fetchone()
    assert zone is not None and log_zone is not None
    return str(zone[0]), str(log_zone[0])


def catalog_entry(api: LocalApi, addon_id: str, backup_id: str) -> dict[str, Any]:
    """barman-cloud-backup-list's own entry for a backup."""
    engine = api.engine
    cluster = engine.objects.get("Cluster", addon_id)
    assert cluster is not None
    config = engine.archives.own(cluster)
    assert config is not None
    catalog = asyncio.run(engine.barman.backup_list(config, engine.archives.credentials(config)))
    (entry,) = [b for b in catalog if b.get("backup_id") == backup_id]
    return entry


def test_standard_restore_picks_the_backup_before_the_target(
    zoned_api: LocalApi, host_zone: str
) -> None:
    api = zoned_api
    created = datetime.now(UTC)
    addon = api.create_addon("standard")
    addon_id, uri = addon["addon_id"], addon["connection"]["uri"]
    (b1,) = api.wait_backups_completed("app-1", addon_id)["items"]
    assert_taken_between(b1, created, datetime.now(UTC))
    # The zone reached the servers (initdb wrote it), and the engine overrides it.
    assert initdb_zone(api, addon_id) == host_zone
    assert server_zones(uri) == ("UTC", "UTC")

    write_initial_data(uri)
    b2 = take_backup(api, addon_id, count=2)
    # B2 is a restore point once surely consistent: its recorded end plus two seconds
    # (whole-second times are truncated, and the end-of-backup record comes a moment later).
    b2_consistent = at(b2["stopped_at"]) + timedelta(seconds=2)
    wait_for(lambda: datetime.now(UTC) > b2_consistent, what="B2 to be consistent")
    target = instant_between_commits()
    expected = snapshot(uri)
    damage(uri)
    after_damage = snapshot(uri)
    assert after_damage != expected
    b3 = take_backup(api, addon_id, count=3)
    assert b2_consistent <= target < at(b3["stopped_at"])

    response = api.restore("app-1", addon_id, format_api_time(target))
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["backup_id"] == b2["backup_id"]
    assert at(data["restores_to"]) == b2_consistent
    restore = api.wait_restore("app-1", addon_id, data["restore_id"])
    assert restore["status"] == "ready", restore
    restored = restore["connection"]["uri"]
    # Exactly the state at T: the rows deleted and the table dropped after T are there.
    assert snapshot(restored) == expected
    assert server_zones(restored) == ("UTC", "UTC")
    assert snapshot(uri) == after_damage


def test_pro_window_starts_at_the_first_backup_and_restores_are_exact(
    zoned_api: LocalApi, host_zone: str
) -> None:
    api = zoned_api
    created = datetime.now(UTC)
    addon_id, uri, target, expected = written_then_damaged(api)
    listing = api.wait_restorable("app-1", addon_id, format_api_time(target))
    (first,) = [b for b in listing["items"] if b["status"] == "completed"]
    assert_taken_between(first, created, target)
    assert initdb_zone(api, addon_id) == host_zone
    assert server_zones(uri) == ("UTC", "UTC")

    # barman's own record of the backup's end: with an offset, and UTC since the server is.
    entry = catalog_entry(api, addon_id, str(first["backup_id"]))
    true_end = datetime.fromisoformat(entry["end_time_iso"])
    assert true_end.utcoffset() == timedelta(0), entry["end_time_iso"]
    assert created <= true_end <= target
    # barman names the backup after its start, in UTC too.
    named = datetime.strptime(str(first["backup_id"]), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    assert floor_second(created) <= named <= true_end
    assert floor_second(true_end) == at(first["stopped_at"])

    # The window opens once the first backup is surely consistent: its end as recorded
    # (whole seconds), plus the truncated second, plus the end-of-backup record's margin.
    earliest = at(listing["window"]["earliest"])
    assert earliest == floor_second(true_end) + timedelta(seconds=2)
    assert true_end < earliest
    assert earliest <= target

    response = api.restore("app-1", addon_id, format_api_time(target))
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["backup_id"] == first["backup_id"]
    restore = api.wait_restore("app-1", addon_id, data["restore_id"])
    assert restore["status"] == "ready", restore
    restored = restore["connection"]["uri"]
    assert snapshot(restored) == expected
    assert server_zones(restored) == ("UTC", "UTC")


def test_the_embedded_audit_database_runs_in_utc(host_zone: str, workdir: Path) -> None:
    database = EmbeddedDatabase(
        workdir / f"embedded-{uuid.uuid4().hex[:8]}",
        os_user=os.environ.get("PAAS_PITR_PG_OS_USER", "postgres"),
    )
    try:
        dsn = database.start()
        assert server_zones(dsn) == ("UTC", "UTC")
        conf = database.server.data_dir / "postgresql.conf"
        assert f"timezone = '{host_zone}'" in conf.read_text(encoding="utf-8")
        # A database set up by an earlier version (no zone in our file) is moved to UTC at
        # its next start.
        database.stop()
        database.server.write_conf({"max_connections": "50"})
        dsn = database.start()
        assert server_zones(dsn) == ("UTC", "UTC")
    finally:
        database.server.destroy()
