"""Restore drills: start one, list them, read one (nested paths only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from paas_pitr.api.contract import Envelope, error_responses, json_request_body
from paas_pitr.api.deps import app_state, get_caller, json_body
from paas_pitr.api.routes import AddonId, AppId
from paas_pitr.context import Caller
from paas_pitr.drills.records import DrillRecord
from paas_pitr.drills.service import DrillService

CallerDep = Annotated[Caller, Depends(get_caller)]
DrillId = Annotated[str, Path(description="A drill_id")]

router = APIRouter()
_ANY = (401, 413, 422, 503)


class DrillRequest(BaseModel):
    """No body (or an empty object) drills the newest restorable instant (pro) or the
    newest completed base backup (standard)."""

    model_config = ConfigDict(extra="forbid")
    timestamp: StrictStr | None = Field(
        default=None,
        description="Drill this instant instead (ISO 8601 with an explicit offset), or "
        "'latest': the default, as for a restore",
        json_schema_extra={
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "enum": ["latest"]},
                {"type": "null"},
            ]
        },
    )


class DrillPage(BaseModel):
    items: list[DrillRecord]
    page: int
    per_page: int
    total: int


def _drills(request: Request) -> DrillService:
    return app_state(request).drills


@router.post(
    "/apps/{app_id}/addons/{addon_id}/drills",
    status_code=202,
    response_model=Envelope[DrillRecord],
    tags=["drills"],
    responses=error_responses(
        *_ANY,
        400,
        415,
        404,
        409,
        s409="`drill_in_progress` (one drill at a time per addon), `plan_has_no_backups`",
        s422="also `timestamp_without_offset`, `invalid_timestamp`, `timestamp_in_future`, "
        "`outside_recoverability_window`, `no_backup_before_timestamp`",
    ),
    openapi_extra=json_request_body(DrillRequest, required=False),
)
async def start_drill(
    app_id: AppId, addon_id: AddonId, request: Request, response: Response, caller: CallerDep
) -> Envelope[DrillRecord]:
    """Restore the addon into a throwaway cluster, check it and delete it (in the
    background): follow it at the Location."""
    body = await json_body(request, DrillRequest, optional=True)
    record = await _drills(request).start(caller, app_id, addon_id, timestamp=body.timestamp)
    response.headers["Location"] = f"/v1/apps/{app_id}/addons/{addon_id}/drills/{record.drill_id}"
    return Envelope(data=record)


@router.get(
    "/apps/{app_id}/addons/{addon_id}/drills",
    response_model=Envelope[DrillPage],
    tags=["drills"],
    responses=error_responses(*_ANY, 404),
)
async def list_drills(
    app_id: AppId,
    addon_id: AddonId,
    request: Request,
    caller: CallerDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Envelope[DrillPage]:
    """The addon's drills, newest first (the newest 50 are kept; the audit log has all)."""
    records = await _drills(request).list(caller, app_id, addon_id)
    start = (page - 1) * per_page
    return Envelope(
        data=DrillPage(
            items=records[start : start + per_page],
            page=page,
            per_page=per_page,
            total=len(records),
        )
    )


@router.get(
    "/apps/{app_id}/addons/{addon_id}/drills/{drill_id}",
    response_model=Envelope[DrillRecord],
    tags=["drills"],
    responses=error_responses(*_ANY, 404),
)
async def get_drill(
    app_id: AppId, addon_id: AddonId, drill_id: DrillId, request: Request, caller: CallerDep
) -> Envelope[DrillRecord]:
    return Envelope(data=await _drills(request).get(caller, app_id, addon_id, drill_id))
