"""Listing base backups and the WAL archive with the recoverability window; on-demand backups."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel

from paas_pitr.addons import AddonService
from paas_pitr.archive_cache import ArchiveCache, listed_backups_key, window_key
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import build_backup
from paas_pitr.cnpg.history import incarnation_server_name_of
from paas_pitr.cnpg.projections import (
    BackupRecord,
    WalArchiveRecord,
    archive_timeout_of,
    belongs_to,
    project_backup,
    project_backups,
    project_wal_archive,
    uses_plugin,
)
from paas_pitr.cnpg.window import RecoverabilityWindow, RestorableRange, recoverability_window
from paas_pitr.context import Caller
from paas_pitr.engines.base import Manifest
from paas_pitr.errors import PlanHasNoBackups
from paas_pitr.plans import policy_for, tier_for_plan


class Pagination(BaseModel):
    page: int
    per_page: int
    total: int
    pages: int


class BackupListing(BaseModel):
    items: list[BackupRecord]
    wal_archive: WalArchiveRecord
    window: RecoverabilityWindow
    pagination: Pagination


@dataclass(frozen=True, slots=True)
class ArchiveState:
    """Everything known about a cluster's backups at one instant."""

    cluster: Manifest
    backups: list[BackupRecord]
    wal_archive: WalArchiveRecord
    window: RecoverabilityWindow


class BackupService:
    def __init__(self, addons: AddonService) -> None:
        self.addons = addons
        self.engine = addons.engine
        # The ranges of incarnations the addon was switched away from (in-place restores).
        self.earlier_ranges: Callable[[Manifest], Awaitable[list[RestorableRange]]] | None = None
        self.cache = ArchiveCache()

    async def archive_state(
        self, cluster: Manifest, *, now: datetime | None = None
    ) -> ArchiveState:
        """The state at ``now`` (default: the clock); projections and the window come from
        ``self.cache`` when nothing they depend on changed (:mod:`paas_pitr.archive_cache`)."""
        state, _ = await self.keyed_archive_state(cluster, now=now)
        return state

    async def keyed_archive_state(
        self, cluster: Manifest, *, now: datetime | None = None
    ) -> tuple[ArchiveState, Hashable | None]:
        """:meth:`archive_state` with the key of everything it was computed from: equal keys
        (for one cluster name) mean an equal state at any time, so what is derived from the
        state alone may be kept under the key. ``None`` when the state depends on the time
        or the engine cannot tell what changed."""
        name = cluster["metadata"]["name"]
        incarnation = (cluster["metadata"].get("uid"), incarnation_server_name_of(cluster))
        # Read before listing: a change made meanwhile is kept under the older revision,
        # which the next request no longer matches.
        revision = self.engine.revision("Backup")
        backups_key: Hashable | None = None
        backups: list[BackupRecord] | None = None
        if revision is not None:
            backups_key = ("revision", revision, *incarnation)
            backups = self.cache.backups(name, backups_key)
        if backups is None:
            raw = await self.engine.list("Backup", {naming.CNPG_CLUSTER_LABEL: name})
            if revision is None:
                listed = listed_backups_key(raw)
                backups_key = None if listed is None else ("listed", listed, *incarnation)
                if backups_key is not None:
                    backups = self.cache.backups(name, backups_key)
            if backups is None:
                backups = self._project(cluster, raw)
                if backups_key is not None:
                    self.cache.keep_backups(name, backups_key, backups)
        object_store = None
        if uses_plugin(cluster):
            object_store = await self.engine.get("ObjectStore", naming.object_store_name(name))
        last_archived = await self.engine.last_archived_at(cluster)
        earlier = await self.earlier_ranges(cluster) if self.earlier_ranges is not None else []
        now = now or datetime.now(UTC)
        key = (
            None
            if backups_key is None
            else window_key(backups_key, cluster, object_store, last_archived, earlier)
        )
        window = None if key is None else self.cache.window(name, key, now)
        if window is None:
            window = self._window(cluster, backups, object_store, last_archived, now, earlier)
            timeless = self._window(cluster, backups, object_store, last_archived, None, earlier)
            if key is not None and window == timeless:
                self.cache.keep_window(name, key, now, window)
            else:
                key = None
        return self._state(cluster, backups, object_store, last_archived, window), key

    def compose(
        self,
        cluster: Manifest,
        raw_backups: list[Manifest],
        object_store: Manifest | None,
        last_archived: datetime | None,
        *,
        now: datetime,
        earlier: Sequence[RestorableRange] = (),
    ) -> ArchiveState:
        """The archive state from objects already read (``raw_backups`` may hold other
        clusters' Backups: only this incarnation's count; ``earlier``: the ranges of the
        incarnations an in-place restore switched the addon away from, oldest first)."""
        backups = self._project(cluster, raw_backups)
        window = self._window(cluster, backups, object_store, last_archived, now, earlier)
        return self._state(cluster, backups, object_store, last_archived, window)

    def _project(self, cluster: Manifest, raw_backups: list[Manifest]) -> list[BackupRecord]:
        """This incarnation's Backups, newest first."""
        name = cluster["metadata"]["name"]
        server = incarnation_server_name_of(cluster)
        return project_backups(
            [
                b
                for b in raw_backups
                if b.get("spec", {}).get("cluster", {}).get("name") == name
                and belongs_to(b, cluster, server)
            ],
            secret_name=self.addons.settings.s3_secret_name,
        )

    @staticmethod
    def _window(
        cluster: Manifest,
        backups: list[BackupRecord],
        object_store: Manifest | None,
        last_archived: datetime | None,
        now: datetime | None,
        earlier: Sequence[RestorableRange],
    ) -> RecoverabilityWindow:
        window = recoverability_window(
            cluster,
            backups,
            object_store=object_store,
            last_archived_at=last_archived,
            now=now,
            archive_timeout=archive_timeout_of(cluster),
        )
        if earlier:
            window = window.model_copy(update={"ranges": [*earlier, *window.ranges]})
        return window

    def _state(
        self,
        cluster: Manifest,
        backups: list[BackupRecord],
        object_store: Manifest | None,
        last_archived: datetime | None,
        window: RecoverabilityWindow,
    ) -> ArchiveState:
        wal = project_wal_archive(
            cluster,
            object_store,
            last_archived_at=last_archived,
            secret_name=self.addons.settings.s3_secret_name,
        )
        return ArchiveState(cluster, backups, wal, window)

    async def list_backups(
        self, caller: Caller, app_id: str, addon_id: str, *, page: int = 1, per_page: int = 50
    ) -> BackupListing:
        cluster = await self.addons.get_cluster(caller, app_id, addon_id)
        return await self.listing(cluster, page=page, per_page=per_page)

    async def listing(self, cluster: Manifest, *, page: int, per_page: int) -> BackupListing:
        return self.page_of(await self.archive_state(cluster), page=page, per_page=per_page)

    @staticmethod
    def page_of(state: ArchiveState, *, page: int, per_page: int) -> BackupListing:
        """Page ``page`` (from 1) of ``state``'s Backups, ``per_page`` a page."""
        total = len(state.backups)
        start = (page - 1) * per_page
        return BackupListing(
            items=state.backups[start : start + per_page],
            wal_archive=state.wal_archive,
            window=state.window,
            pagination=Pagination(
                page=page, per_page=per_page, total=total, pages=max(1, -(-total // per_page))
            ),
        )

    async def create(self, caller: Caller, app_id: str, addon_id: str) -> BackupRecord:
        cluster = await self.addons.get_cluster(caller, app_id, addon_id)
        plan = cluster["metadata"]["labels"].get(naming.LABEL_PLAN, "free")
        if not policy_for(tier_for_plan(plan)).has_backups:
            raise PlanHasNoBackups(
                f"addon {addon_id!r} is on the {plan!r} plan, which has no backups",
                details={"plan": plan},
            )
        config = await self.addons.render_config()
        # Two requests within one second must not collide: a short random suffix.
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        backup = build_backup(cluster, f"{addon_id}-manual-{stamp}-{secrets.token_hex(2)}", config)
        stored = await self.engine.create(backup)
        self.addons.audit_event(
            caller, "addon.backup", addon_id, app_id=app_id, backup=stored["metadata"]["name"]
        )
        return project_backup(stored)
