"""The event finder's use-case: scan a time range of an addon's WAL archive for destructive
transactions, name what they touched, and say how to restore to just before each.

Relation names come from the live addon's catalog (``pg_class`` of the event's database),
looked up by the file node the WAL names, then by OID (a relation's first file node is its
OID). A relation that still exists is named (a TRUNCATEd table, a table rows were deleted
from); a DROPped one is no longer in the catalog, and the WAL never carries names, so it is
shown by its file node (``base/<database oid>/<relfilenode>``) and OID: restore to before the
event to see it. When the primary cannot be reached, every relation is shown by file node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from paas_pitr.addons import AddonService
from paas_pitr.bucket import Bucket, destination_prefix
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.history import incarnation_server_name_of
from paas_pitr.cnpg.projections import cluster_version
from paas_pitr.context import Caller
from paas_pitr.engines.base import Manifest
from paas_pitr.errors import (
    InvalidInput,
    PrimaryUnreachable,
    UnknownEvent,
    WalDecodeFailed,
    WalScanTooLarge,
)
from paas_pitr.events.detect import EVENT_KINDS, Detector, EventKind, Finding
from paas_pitr.events.scan import (
    ArchivedSegment,
    Progress,
    ScanProgress,
    ScanStats,
    WalScanner,
    archived_segments,
    segments_between,
)
from paas_pitr.events.waldump import FileNode, TransactionEnd
from paas_pitr.lsn import WAL_SEGMENT_SIZE, format_lsn
from paas_pitr.postgres.binaries import find_binaries
from paas_pitr.primary import Relation
from paas_pitr.timestamps import format_api_time, parse_timestamp
from paas_pitr.tombstones import require_bucket

log = logging.getLogger(__name__)

DEFAULT_RANGE = timedelta(hours=1)
MAX_EVENTS = 1000
_MIB = 1024 * 1024
ScanBound = Literal["refuse", "newest"]
SCAN_BOUNDS: tuple[ScanBound, ...] = ("refuse", "newest")
NAMES_NOTE = (
    "names come from the live addon's catalog by file node, then by OID; a dropped "
    "relation is no longer there and the WAL carries no names, so it shows its file node"
)


class EventRelation(BaseModel):
    file_node: str = Field(description="base/<database oid>/<relfilenode>, as the WAL names it")
    relfilenode: int
    oid: int | None = None
    name: str | None = Field(default=None, description="schema.relation; null when not known")
    relkind: str | None = Field(default=None, description="pg_class.relkind (r table, i index)")
    resolved_by: Literal["relfilenode", "oid"] | None = None
    rows: int | None = Field(default=None, description="Rows deleted or updated in it")


class RestoreBefore(BaseModel):
    """The recovery target that restores everything committed before the event, and
    nothing of it: stop just before the commit of its transaction."""

    before_event: str
    xid: int
    inclusive: Literal[False] = False
    commit_lsn: str
    recovery_target: dict[str, Any] = Field(description="CNPG's recoveryTarget for it")


class DestructiveEvent(BaseModel):
    id: str = Field(description="Stable: the commit LSN, the transaction id and the kind")
    kind: EventKind
    xid: int
    commit_lsn: str
    committed_at: datetime
    database_oid: int
    database: str | None = None
    relations: list[EventRelation]
    rows: int | None = Field(default=None, description="Rows touched (delete, update)")
    restore_before: RestoreBefore


class ScanFigures(BaseModel):
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    segments: int
    mib: float
    seconds: float
    mib_per_second: float | None
    first_lsn: str | None
    end_lsn: str | None
    warnings: list[str]
    limited_from: datetime | None = Field(
        default=None,
        description="Set when the range held more WAL than one scan may read and only its "
        "newest part was scanned (bound=newest): events committed before it may be missing",
    )


class EventListing(BaseModel):
    items: list[DestructiveEvent]
    truncated: bool = Field(description=f"More than {MAX_EVENTS} events: the oldest are listed")
    scan: ScanFigures
    names: str = NAMES_NOTE


def event_id(finding: Finding) -> str:
    return f"{finding.commit_lsn:016X}-{finding.xid}-{finding.kind}"


def parse_event_id(value: str) -> tuple[int, int, str]:
    """``<commit LSN, 16 hex digits>-<xid>-<kind>`` -> (LSN, xid, kind)."""
    parts = value.split("-") if isinstance(value, str) else []
    try:
        lsn, xid, kind = int(parts[0], 16), int(parts[1]), parts[2]
        if len(parts) != 3 or len(parts[0]) != 16 or kind not in EVENT_KINDS or xid < 3:
            raise ValueError(value)
    except (ValueError, IndexError) as exc:
        raise UnknownEvent(
            f"invalid event id {value!r}: expected one GET .../events listed",
            details={"before_event": value},
        ) from exc
    return lsn, xid, kind


def before_target(finding: Finding) -> RestoreBefore:
    return RestoreBefore(
        before_event=event_id(finding),
        xid=finding.xid,
        commit_lsn=format_lsn(finding.commit_lsn),
        recovery_target={"targetXID": str(finding.xid), "exclusive": True},
    )


class _Commits:
    """A sink keeping the end records of the transactions asked about."""

    def __init__(self, xids: set[int]) -> None:
        self.xids = xids
        self.found: dict[int, TransactionEnd] = {}

    def feed(self, records: Any) -> None:
        for record in records:
            if isinstance(record, TransactionEnd) and record.xid in self.xids:
                self.found.setdefault(record.xid, record)


@dataclass(frozen=True, slots=True)
class EventScan:
    """A request of ``GET .../events`` checked and ready to decode (see
    :meth:`EventService.plan`)."""

    addon_id: str
    access: ArchiveAccess
    segments: list[ArchivedSegment]
    lower: datetime
    upper: datetime
    kinds: frozenset[str]
    threshold: int
    limited_from: datetime | None
    """Only the newest segments of the range are planned: complete from this instant."""
    scanner: WalScanner | None
    """``None`` when there is nothing to decode (no pg_waldump needed)."""


@dataclass(frozen=True, slots=True)
class ArchiveAccess:
    """Where one incarnation's WAL is, and the scanner to read it."""

    cluster: Manifest
    bucket: Bucket
    wal_prefix: str
    waldump: Callable[[], str]
    """Finds pg_waldump; called only when WAL is decoded (LSN bounds need none)."""
    parallel: int

    async def segments(self) -> list[ArchivedSegment]:
        return await archived_segments(self.bucket, self.wal_prefix)

    def scanner(self) -> WalScanner:
        return WalScanner(self.bucket, self.waldump(), parallel=self.parallel)


class EventService:
    def __init__(self, addons: AddonService) -> None:
        self.addons = addons
        self.engine = addons.engine
        self.settings = addons.settings

    def access(self, caller: Caller, app_id: str, cluster: Manifest) -> ArchiveAccess:
        """The archive of ``cluster``'s incarnation; 503 ``archive_bucket_not_configured``
        naming the missing settings when the control plane has no keys for the bucket."""
        bucket = require_bucket(self.engine, self.settings)
        prefix = destination_prefix(
            naming.destination_path(caller.tenant, app_id, bucket.name), bucket.name
        )
        server = incarnation_server_name_of(cluster)
        return ArchiveAccess(
            cluster,
            bucket,
            f"{prefix}/{server}/wals/",
            lambda: self._waldump(cluster),
            self.settings.events_scan_parallel,
        )

    def _waldump(self, cluster: Manifest) -> str:
        version = cluster_version(cluster) or self.settings.default_pg_version
        try:
            major = int(str(version).split(".")[0])
            binaries = find_binaries(major, self.settings.pg_bin)
        except (ValueError, InvalidInput) as exc:
            raise WalDecodeFailed(
                f"pg_waldump for PostgreSQL {version} is not available to the control plane: "
                f"{getattr(exc, 'message', exc)}",
                details={"version": version},
            ) from exc
        return binaries.tool("pg_waldump")

    def _bounded(self, segments: list[ArchivedSegment]) -> None:
        mib = len(segments) * WAL_SEGMENT_SIZE // _MIB
        if mib > self.settings.events_max_scan_mib:
            raise WalScanTooLarge(
                f"the range holds {len(segments)} WAL segments ({mib} MiB), more than one "
                f"scan may read ({self.settings.events_max_scan_mib} MiB): narrow it, or ask "
                "for its newest part (bound=newest; CLI: --newest)",
                details={
                    "segments": len(segments),
                    "mib": mib,
                    "limit_mib": self.settings.events_max_scan_mib,
                },
            )

    async def list_events(
        self,
        caller: Caller,
        app_id: str,
        addon_id: str,
        *,
        start: str | None = None,
        end: str | None = None,
        kinds: list[str] | None = None,
        min_rows: int | None = None,
        bound: ScanBound = "refuse",
        progress: Progress | None = None,
    ) -> EventListing:
        """The destructive transactions committed from ``start`` to ``end`` (ISO 8601 with
        an offset; default: the last hour), oldest first: :meth:`plan` then :meth:`scan`."""
        plan = await self.plan(
            caller,
            app_id,
            addon_id,
            start=start,
            end=end,
            kinds=kinds,
            min_rows=min_rows,
            bound=bound,
        )
        return await self.scan(plan, progress)

    async def plan(
        self,
        caller: Caller,
        app_id: str,
        addon_id: str,
        *,
        start: str | None = None,
        end: str | None = None,
        kinds: list[str] | None = None,
        min_rows: int | None = None,
        bound: ScanBound = "refuse",
    ) -> EventScan:
        """Everything checked before any WAL is decoded: the range, the kinds, the addon,
        the archive's keys, the volume, pg_waldump. Errors: ``invalid_input`` (422),
        ``not_found`` (404), ``archive_bucket_not_configured`` (503),
        ``object_store_unavailable`` (503, listing the archive), ``wal_decode_failed`` (503,
        no pg_waldump for the addon's major), and ``wal_scan_too_large`` (422) when the
        range holds more WAL than ``events_max_scan_mib`` and ``bound`` is ``"refuse"``;
        with ``"newest"`` only the newest segments that fit are planned and
        :attr:`EventScan.limited_from` says from when the answer is complete. Without
        ``start`` the range is "the recent past": it is always cut to its newest part, as
        with ``"newest"`` (an idle addon archives a segment per ``archive_timeout``, so an
        hour can hold more WAL than a scan may read)."""
        upper = parse_timestamp(end) if end else datetime.now(UTC)
        lower = parse_timestamp(start) if start else upper - DEFAULT_RANGE
        if lower >= upper:
            raise InvalidInput(
                "'from' must be before 'to'",
                details={"from": format_api_time(lower), "to": format_api_time(upper)},
            )
        wanted = set(kinds or EVENT_KINDS)
        if not wanted <= set(EVENT_KINDS):
            raise InvalidInput(
                f"unknown event kind(s) {sorted(wanted - set(EVENT_KINDS))}",
                details={"kinds": list(EVENT_KINDS)},
            )
        threshold = min_rows if min_rows is not None else self.settings.events_row_threshold
        if threshold < 1:
            raise InvalidInput("min_rows must be at least 1", details={"min_rows": threshold})
        if bound not in SCAN_BOUNDS:
            raise InvalidInput(
                f"unknown bound {bound!r}", details={"bound": bound, "allowed": list(SCAN_BOUNDS)}
            )
        if start is None:
            bound = "newest"
        cluster = await self.addons.get_cluster(caller, app_id, addon_id)
        access = self.access(caller, app_id, cluster)
        segments = segments_between(await access.segments(), lower, upper)
        limited_from: datetime | None = None
        fits = max(1, self.settings.events_max_scan_mib * _MIB // WAL_SEGMENT_SIZE)
        if bound == "newest" and len(segments) > fits:
            # Every record in the segments kept was written after the last one left out was
            # complete, so after it was archived nothing is missed.
            limited_from = segments[-fits - 1].modified
            segments = segments[-fits:]
        self._bounded(segments)
        return EventScan(
            addon_id,
            access,
            segments,
            lower,
            upper,
            frozenset(wanted),
            threshold,
            limited_from,
            access.scanner() if segments else None,
        )

    async def scan(self, plan: EventScan, progress: Progress | None = None) -> EventListing:
        """Decode the planned segments and describe what they hold; ``progress`` is told
        how far the decoding is. Errors: ``object_store_unavailable`` (a segment unreadable
        or not downloadable)."""
        detector = Detector(plan.threshold)
        logger = _progress_logger(plan.addon_id)

        def advance(step: ScanProgress) -> None:
            logger(step)
            if progress is not None:
                progress(step)

        stats = ScanStats()
        if plan.scanner is not None:
            stats = await plan.scanner.scan(plan.segments, detector, advance)
        else:
            advance(ScanProgress(0, 0))
        findings = [
            f
            for f in detector.findings
            if f.kind in plan.kinds and plan.lower <= f.committed_at <= plan.upper
        ]
        truncated = len(findings) > MAX_EVENTS
        events = await self._describe(plan.access.cluster, findings[:MAX_EVENTS])
        figures = _figures(plan.lower, plan.upper, stats)
        figures.limited_from = plan.limited_from
        return EventListing(items=events, truncated=truncated, scan=figures)

    async def _describe(self, cluster: Manifest, findings: list[Finding]) -> list[DestructiveEvent]:
        databases: dict[int, str] = {}
        catalog: dict[int, list[Relation]] = {}
        primary = self.engine.primary()
        try:
            if findings:
                databases = await primary.databases(cluster)
            for database in sorted({f.database for f in findings}):
                if database not in databases:
                    continue
                ids = sorted(
                    {n.node for f in findings if f.database == database for n in f.files}
                    | {o for f in findings if f.database == database for o in f.locked}
                )
                catalog[database] = await primary.relations(cluster, databases[database], ids)
        except PrimaryUnreachable as exc:
            log.warning("events of %s shown by file node: %s", cluster["metadata"]["name"], exc)
        return [
            DestructiveEvent(
                id=event_id(f),
                kind=f.kind,
                xid=f.xid,
                commit_lsn=format_lsn(f.commit_lsn),
                committed_at=f.committed_at,
                database_oid=f.database,
                database=databases.get(f.database),
                relations=[_relation(n, f, catalog.get(f.database, [])) for n in f.files],
                rows=f.total_rows,
                restore_before=before_target(f),
            )
            for f in findings
        ]

    async def commits(
        self, access: ArchiveAccess, segments: list[ArchivedSegment], xids: set[int]
    ) -> dict[int, TransactionEnd]:
        """The commit (or abort) records of ``xids`` in ``segments``."""
        self._bounded(segments)
        sink = _Commits(xids)
        await access.scanner().scan(segments, sink)
        return sink.found


def _relation(file: FileNode, finding: Finding, catalog: list[Relation]) -> EventRelation:
    by_node = {r.relfilenode: r for r in catalog if r.relfilenode is not None}
    by_oid = {r.oid: r for r in catalog}
    found: Relation | None = by_node.get(file.node)
    how: Literal["relfilenode", "oid"] | None = "relfilenode" if found else None
    if found is None and file.node in by_oid:
        found, how = by_oid[file.node], "oid"
    return EventRelation(
        file_node=file.path(),
        relfilenode=file.node,
        oid=found.oid if found else None,
        name=found.name if found else None,
        relkind=found.kind if found else None,
        resolved_by=how,
        rows=finding.rows.get(file),
    )


def _figures(lower: datetime, upper: datetime, stats: ScanStats) -> ScanFigures:
    mib = stats.bytes / _MIB
    return ScanFigures(
        start=lower,
        end=upper,
        segments=stats.segments,
        mib=round(mib, 1),
        seconds=round(stats.seconds, 3),
        mib_per_second=round(mib / stats.seconds, 1) if stats.seconds > 0 and mib else None,
        first_lsn=format_lsn(stats.first_lsn) if stats.first_lsn is not None else None,
        end_lsn=format_lsn(stats.end_lsn) if stats.end_lsn is not None else None,
        warnings=stats.warnings,
    )


def _progress_logger(addon_id: str) -> Progress:
    last = [time.monotonic()]

    def progress(step: ScanProgress) -> None:
        # Long scans say how far they are, every few seconds, in the service log.
        now = time.monotonic()
        if now - last[0] >= 5 or step.segments_done == step.segments_total:
            last[0] = now
            log.info(
                "events of %s: %d/%d WAL segments decoded",
                addon_id,
                step.segments_done,
                step.segments_total,
            )

    return progress
