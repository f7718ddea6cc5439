"""Routes of the destructive-event finder and of named restore points."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from paas_pitr.api.contract import (
    CreateRestorePointRequest,
    Envelope,
    ErrorBody,
    answer_ref,
    error_responses,
    json_request_body,
)
from paas_pitr.api.deps import app_state, json_body
from paas_pitr.api.ndjson import NDJSON, progress_stream, wants_ndjson
from paas_pitr.api.routes import AddonId, AppId, CallerDep
from paas_pitr.events.scan import ScanProgress
from paas_pitr.events.service import EventListing, ScanBound
from paas_pitr.restore_points import RestorePointRecord

router = APIRouter()

_ANY = (401, 413, 422, 503)


class ScanProgressFigures(BaseModel):
    segments_done: int
    segments_total: int
    bytes_done: int = Field(description="WAL decoded, uncompressed (16 MiB a segment)")
    bytes_total: int


class EventScanLine(BaseModel):
    """One line of the ``application/x-ndjson`` answer of ``GET .../events``: exactly one
    of the three members. ``progress`` lines come first (the first with nothing done yet,
    the last with everything done), then one ``result`` (the JSON answer's ``data``) or
    one ``error`` (a failure once the scan had started, with its stable code)."""

    progress: ScanProgressFigures | None = None
    result: EventListing | None = None
    error: ErrorBody | None = None


_STREAM_DOC = {
    "description": "The events found (`application/json`). With `Accept: application/x-ndjson` "
    'the scan streams one JSON object a line: `{"progress": {segments_done, segments_total, '
    'bytes_done, bytes_total}}` as it advances, then `{"result": <data>}` or '
    '`{"error": {code, message, details}}`; errors found before the scan starts keep '
    "their HTTP status.",
    "content": {NDJSON: {"schema": answer_ref(EventScanLine)}},
}


@router.get(
    "/apps/{app_id}/addons/{addon_id}/events",
    response_model=Envelope[EventListing],
    response_model_by_alias=True,
    tags=["events"],
    responses={
        200: _STREAM_DOC,
        **error_responses(
            *_ANY,
            404,
            s422="also `invalid_input` (`from` after `to`, an unknown `kind`), "
            "`invalid_timestamp`, `timestamp_without_offset`, `wal_scan_too_large`",
            s503="also `archive_bucket_not_configured` (the control plane's S3 keys are unset: "
            "the message names the settings), `wal_decode_failed` (no pg_waldump)",
        ),
    },
)
async def list_events(
    app_id: AppId,
    addon_id: AddonId,
    request: Request,
    caller: CallerDep,
    start: Annotated[
        str | None, Query(alias="from", description="ISO 8601 with an offset; default: to - 1h")
    ] = None,
    end: Annotated[str | None, Query(alias="to", description="Default: now")] = None,
    kind: Annotated[
        str | None,
        Query(description="Comma-separated: drop, truncate, delete, update; default: all"),
    ] = None,
    min_rows: Annotated[
        int | None,
        Query(ge=1, description="DELETE/UPDATE transactions from this many rows on"),
    ] = None,
    bound: Annotated[
        ScanBound,
        Query(
            description="When the range holds more WAL than one scan may read: `refuse` "
            "(422 `wal_scan_too_large`) or `newest` (scan its newest part; `scan.limited_from` "
            "says from when the answer is complete)"
        ),
    ] = "refuse",
) -> Any:
    """The transactions that dropped or truncated relations, or deleted/updated many rows,
    committed in a range of the addon's WAL archive (decoded with pg_waldump), each with the
    target that restores to just before it (``POST .../restore {"before_event": id}``).
    With ``Accept: application/x-ndjson`` the scan's progress is streamed (see 200)."""
    kinds = [k.strip() for k in kind.split(",") if k.strip()] if kind else None
    events = app_state(request).events
    plan = await events.plan(
        caller,
        app_id,
        addon_id,
        start=start,
        end=end,
        kinds=kinds,
        min_rows=min_rows,
        bound=bound,
    )
    if wants_ndjson(request):
        stream: StreamingResponse = progress_stream(
            lambda report: events.scan(plan, report),
            ScanProgress.as_dict,
            f"the event scan of {addon_id}",
        )
        return stream
    return Envelope(data=await events.scan(plan))


@router.post(
    "/apps/{app_id}/addons/{addon_id}/restore-points",
    status_code=201,
    response_model=Envelope[RestorePointRecord],
    tags=["restores"],
    responses=error_responses(
        *_ANY,
        400,
        415,
        404,
        409,
        s409="`restore_point_exists`, `plan_has_no_backups` (the free plan: no WAL archive)",
        s422="also `invalid_recovery_target` (a bad name; the standard plan, which does not "
        "replay WAL)",
        s503="also `primary_unreachable`, `archive_bucket_not_configured`",
    ),
    openapi_extra=json_request_body(CreateRestorePointRequest),
)
async def create_restore_point(
    app_id: AppId, addon_id: AddonId, request: Request, caller: CallerDep
) -> Envelope[RestorePointRecord]:
    """Create a named restore point on the addon (``pg_create_restore_point``, then a WAL
    switch so it is archived at once); audited as ``addon.restore_point``."""
    body = await json_body(request, CreateRestorePointRequest)
    point = await app_state(request).restore_points.create(caller, app_id, addon_id, body.name)
    return Envelope(data=point)


@router.get(
    "/apps/{app_id}/addons/{addon_id}/restore-points",
    response_model=Envelope[list[RestorePointRecord]],
    tags=["restores"],
    responses=error_responses(*_ANY, 404),
)
async def list_restore_points(
    app_id: AppId, addon_id: AddonId, request: Request, caller: CallerDep
) -> Envelope[list[RestorePointRecord]]:
    """The addon's restore points with their LSN and time, oldest first."""
    points = await app_state(request).restore_points.list_points(caller, app_id, addon_id)
    return Envelope(data=points)
