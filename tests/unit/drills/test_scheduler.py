from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from paas_pitr.cnpg.schedule import next_run, previous_run
from paas_pitr.drills.scheduler import DrillScheduler, schedule_for, weekly_schedule_for
from paas_pitr.errors import InvalidSchedule
from tests.unit.drills.conftest import Drills, backed_up_addon


def test_the_weekly_instant_is_stable_spread_and_after_the_backup_window() -> None:
    names = [f"db-tenant{i}-app-1" for i in range(400)]
    schedules = [weekly_schedule_for(name) for name in names]
    assert schedules == [weekly_schedule_for(name) for name in names]
    fields = [s.split() for s in schedules]
    assert all(f[0] == "0" and f[3] == "*" and f[4] == "*" for f in fields)
    assert {f[5] for f in fields} == {str(day) for day in range(7)}
    assert {int(f[2]) for f in fields} == set(range(6, 24))
    # Weekly: consecutive runs are exactly 7 days apart.
    after = datetime(2026, 3, 1, tzinfo=UTC)
    first = next_run(schedules[0], after)
    assert next_run(schedules[0], first) - first == timedelta(days=7)


def test_the_setting_replaces_the_weekly_default_and_is_validated() -> None:
    assert schedule_for("db-acme-app-1", "0  30 7 * * 1") == "0 30 7 * * 1"
    assert schedule_for("db-acme-app-1", None) == weekly_schedule_for("db-acme-app-1")
    with pytest.raises(InvalidSchedule):
        schedule_for("db-acme-app-1", "30 7 * * 1")


def test_previous_run_is_the_newest_at_or_before() -> None:
    at = datetime(2026, 3, 4, 7, 30, tzinfo=UTC)  # a Wednesday
    assert previous_run("0 30 7 * * 3", at) == at
    assert previous_run("0 30 7 * * 3", at - timedelta(seconds=1)) == at - timedelta(days=7)


async def test_a_tick_starts_the_drills_due_since_the_last_one(drills: Drills) -> None:
    pro = await backed_up_addon(drills, app="app-1")
    free = await backed_up_addon(drills, plan="free", app="app-2")
    scheduler = DrillScheduler(drills.service, schedule="0 0 * * * *", poll_seconds=60)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

    assert await scheduler.tick(hour + timedelta(seconds=1), hour + timedelta(minutes=5)) == []
    (started,) = await scheduler.tick(hour - timedelta(seconds=30), hour + timedelta(seconds=30))

    records = await drills.store.for_addon(pro)
    assert [(r.drill_id, r.trigger, r.requested_by) for r in records] == [
        (started, "schedule", "system:drill-scheduler")
    ]
    assert await drills.store.for_addon(free) == []
    # Another replica (or a repeated tick) does not start the same drill twice.
    assert await scheduler.tick(hour - timedelta(seconds=30), hour + timedelta(seconds=30)) == []
    await drills.service.close()
