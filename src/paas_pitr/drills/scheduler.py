"""When addons are drilled: weekly by default, at an instant derived from the addon's name
(spread over the week, as the daily base backups are spread over their window), or on the
6-field cron of ``PAAS_PITR_DRILL_SCHEDULE``.

The scheduler starts a drill when a scheduled instant passed since its previous look; one
missed while the service was down is not caught up (the next one comes within a week).
A scheduled drill's id derives from the addon and the instant, so replicas of the control
plane agree on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from datetime import UTC, datetime

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.schedule import previous_run, validate_schedule
from paas_pitr.context import Caller
from paas_pitr.drills.service import DRILL_NAMESPACE, DrillService
from paas_pitr.engines.base import Manifest
from paas_pitr.errors import PitrError
from paas_pitr.plans import policy_for, tier_for_plan

log = logging.getLogger(__name__)
SCHEDULER_ACTOR = "system:drill-scheduler"
# Drills run after the daily base backups' window (00:00-05:59 UTC), so a standard addon's
# drill restores that day's backup.
FIRST_HOUR, HOURS = 6, 18


def weekly_schedule_for(cluster_name: str) -> str:
    """A stable weekly instant (6 cron fields, UTC) derived from the cluster name: a day of
    the week and a minute between 06:00 and 23:59."""
    digest = int.from_bytes(hashlib.sha256(f"drill:{cluster_name}".encode()).digest()[:4], "big")
    day, minute = divmod(digest % (7 * HOURS * 60), HOURS * 60)
    return f"0 {minute % 60} {FIRST_HOUR + minute // 60} * * {day}"


def schedule_for(cluster_name: str, configured: str | None) -> str:
    return validate_schedule(configured) if configured else weekly_schedule_for(cluster_name)


def scheduled_drill_id(cluster: Manifest, at: datetime) -> str:
    uid = cluster["metadata"].get("uid") or cluster["metadata"]["name"]
    return uuid.uuid5(DRILL_NAMESPACE, f"{uid}:{at.isoformat()}").hex


class DrillScheduler:
    def __init__(self, drills: DrillService, *, schedule: str | None, poll_seconds: float) -> None:
        self.drills = drills
        self.schedule = schedule
        self.poll_seconds = poll_seconds

    async def run_forever(self) -> None:
        """Clean up after a kill, then look for due drills every ``poll_seconds``."""
        try:
            await self._recover()
            last = datetime.now(UTC)
            while True:
                await asyncio.sleep(self.poll_seconds)
                now = datetime.now(UTC)
                try:
                    await self.tick(last, now)
                except PitrError:
                    log.exception("the drill scheduler could not list addons; retried")
                    continue
                last = now
        finally:
            # Cancelled at shutdown, while the engine still runs: each running drill
            # deletes its cluster on the way out.
            await self.drills.close()

    async def _recover(self) -> None:
        # The engine may still be starting: retried until the clean-up has been done once.
        while True:
            try:
                await self.drills.recover()
                return
            except PitrError:
                log.exception("leftover drill clusters could not be cleaned up; retrying")
                await asyncio.sleep(self.poll_seconds)

    async def tick(self, since: datetime, now: datetime) -> list[str]:
        """Start the drills due in ``(since, now]``; their ids."""
        started: list[str] = []
        addons = await self.drills.engine.list("Cluster", {naming.LABEL_ROLE: naming.ROLE_ADDON})
        for cluster in addons:
            labels = cluster["metadata"].get("labels", {})
            plan = labels.get(naming.LABEL_PLAN, "free")
            try:
                if not policy_for(tier_for_plan(plan)).has_backups:
                    continue
            except PitrError:
                continue
            name = cluster["metadata"]["name"]
            due = previous_run(schedule_for(name, self.schedule), now)
            if not since < due <= now:
                continue
            caller = Caller(labels[naming.LABEL_TENANT], role="operator", subject="drills")
            try:
                record = await self.drills.start(
                    caller,
                    labels[naming.LABEL_APP],
                    name,
                    trigger="schedule",
                    drill_id=scheduled_drill_id(cluster, due),
                    actor=SCHEDULER_ACTOR,
                )
            except PitrError as exc:
                # Nothing restorable yet, or a drill already running: the next one will do.
                log.info("scheduled drill of %s not started: %s", name, exc.message)
                continue
            started.append(record.drill_id)
        return started
