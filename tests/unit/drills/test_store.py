from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from paas_pitr.drills.records import DRILLS_KEPT, DrillCheck, DrillRecord, last_drill_of
from paas_pitr.drills.store import DrillStore, InMemoryDrillStore, SqliteDrillStore

T0 = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)


def record(addon: str, number: int, status: str = "passed") -> DrillRecord:
    return DrillRecord(
        drill_id=f"{number:032x}",
        tenant="acme",
        app_id="app-1",
        addon_id=addon,
        plan="pro",
        status=status,  # type: ignore[arg-type]
        trigger="api",
        requested_by="tenant:acme",
        requested_at=T0 + timedelta(days=number),
        finished_at=T0 + timedelta(days=number, minutes=3) if status != "running" else None,
        rto_seconds=float(number),
        checks=[DrillCheck(name="amcheck", passed=True, figures={"indexes_checked": 3})],
    )


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DrillStore]:
    if request.param == "memory":
        yield InMemoryDrillStore()
        return
    sqlite = SqliteDrillStore(tmp_path / "drills.sqlite3")
    yield sqlite
    sqlite.close()


async def test_records_round_trip_newest_first(store: DrillStore) -> None:
    for number in (2, 1, 3):
        await store.save(record("db-a", number))
    await store.save(record("db-b", 9, status="running"))
    changed = record("db-a", 2).model_copy(update={"status": "failed", "reason": "boom"})
    await store.save(changed)

    assert [r.drill_id for r in await store.for_addon("db-a")] == [f"{n:032x}" for n in (3, 2, 1)]
    assert await store.get("db-a", f"{2:032x}") == changed
    assert await store.get("db-a", "nope") is None
    assert [r.drill_id for r in await store.unfinished()] == [f"{9:032x}"]


async def test_only_the_newest_are_kept(store: DrillStore) -> None:
    for number in range(DRILLS_KEPT + 5):
        await store.save(record("db-a", number))
    kept = await store.for_addon("db-a")
    assert len(kept) == DRILLS_KEPT
    assert kept[-1].drill_id == f"{5:032x}"


def test_records_outlive_the_process(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "drills.sqlite3"
    first = SqliteDrillStore(path)
    asyncio.run(first.save(record("db-a", 1)))
    first.close()
    assert path.stat().st_mode & 0o777 == 0o600
    again = SqliteDrillStore(path)
    assert [r.drill_id for r in asyncio.run(again.for_addon("db-a"))] == [f"{1:032x}"]
    again.close()


def test_the_last_drill_is_the_newest_finished_one() -> None:
    records = [record("db-a", 1), record("db-a", 2, status="failed"), record("db-a", 3, "running")]
    last = last_drill_of(records)
    assert last is not None
    assert (last.drill_id, last.status, last.rto_seconds) == (f"{2:032x}", "failed", 2.0)
    assert last_drill_of([record("db-a", 4, "running")]) is None
