"""The routes of the seed: addons, backups, restores (nested and legacy flat paths)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from paas_pitr.addons import AddonView
from paas_pitr.api.contract import (
    DNS1123_LABEL_PATTERN,
    ChangePlanRequest,
    CreateAddonRequest,
    EmptyRequest,
    Envelope,
    RestoreRequest,
    error_responses,
    json_request_body,
)
from paas_pitr.api.deps import app_state, get_caller, json_body
from paas_pitr.api.listing_pages import listing_pages
from paas_pitr.backups import BackupListing
from paas_pitr.cnpg.projections import BackupRecord
from paas_pitr.context import Caller
from paas_pitr.incarnations import IncarnationView
from paas_pitr.names import ADDON_ID_MAX, DNS1123_LABEL_MAX
from paas_pitr.restore_views import RestoreView

CallerDep = Annotated[Caller, Depends(get_caller)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retries with the same key create nothing new (1-255 printable "
        "characters; the same key with another body: 422 idempotency_key_reused)",
    ),
]
# Constraints for the document only: the use-cases validate names themselves, answering
# 422 invalid_name.
AppId = Annotated[
    str,
    Path(
        description="The app (a DNS-1123 label)",
        examples=["app-1"],
        json_schema_extra={"pattern": DNS1123_LABEL_PATTERN, "maxLength": DNS1123_LABEL_MAX},
    ),
]
AddonId = Annotated[
    str,
    Path(
        description="The addon (a DNS-1123 label)",
        examples=["db-acme-app-1"],
        json_schema_extra={"pattern": DNS1123_LABEL_PATTERN, "maxLength": ADDON_ID_MAX},
    ),
]
RestoreId = Annotated[str, Path(description="A restore_id")]

router = APIRouter()

# What every route of this router can answer, besides its own statuses.
_ANY = (401, 413, 422, 503)
_BODY = (400, 415)


# --- addons ----------------------------------------------------------------------------


@router.post(
    "/apps/{app_id}/addons",
    status_code=201,
    response_model=Envelope[AddonView],
    tags=["addons"],
    responses=error_responses(
        *_ANY,
        *_BODY,
        409,
        s409="`addon_exists` (the caller's own addon of that id), `limit_reached` (addons "
        "per tenant)",
        s422="also `unknown_plan`, `invalid_name`, `invalid_input` (version), "
        "`addon_id_not_owned` (an explicit id not in the caller's space)",
    ),
    openapi_extra=json_request_body(CreateAddonRequest),
)
async def create_addon(app_id: AppId, request: Request, caller: CallerDep) -> Envelope[AddonView]:
    body = await json_body(request, CreateAddonRequest)
    view = await app_state(request).addons.create_addon_generic(
        caller, app_id, plan=body.plan, version=body.version, addon_id=body.addon_id
    )
    return Envelope(data=view)


@router.get(
    "/apps/{app_id}/addons",
    response_model=Envelope[list[AddonView]],
    tags=["addons"],
    responses=error_responses(*_ANY),
)
async def list_addons(
    app_id: AppId, request: Request, caller: CallerDep
) -> Envelope[list[AddonView]]:
    return Envelope(data=await app_state(request).addons.list_addons(caller, app_id))


@router.get(
    "/apps/{app_id}/addons/{addon_id}",
    response_model=Envelope[AddonView],
    tags=["addons"],
    responses=error_responses(*_ANY, 404),
)
async def get_addon(
    app_id: AppId, addon_id: AddonId, request: Request, caller: CallerDep
) -> Envelope[AddonView]:
    addons = app_state(request).addons
    return Envelope(data=await addons.view(await addons.get_cluster(caller, app_id, addon_id)))


@router.patch(
    "/apps/{app_id}/addons/{addon_id}",
    response_model=Envelope[AddonView],
    tags=["addons"],
    responses=error_responses(*_ANY, *_BODY, 404, s422="also `unknown_plan`"),
    openapi_extra=json_request_body(ChangePlanRequest),
)
async def change_plan(
    app_id: AppId, addon_id: AddonId, request: Request, caller: CallerDep
) -> Envelope[AddonView]:
    body = await json_body(request, ChangePlanRequest)
    view = await app_state(request).addons.change_plan(caller, app_id, addon_id, body.plan)
    return Envelope(data=view)


@router.delete(
    "/apps/{app_id}/addons/{addon_id}",
    status_code=204,
    tags=["addons"],
    responses=error_responses(
        *_ANY,
        404,
        409,
        s409="`conflict` while an in-place restore is switching the addon or undoing a switch",
        s503="the deletion could not be recorded in the bucket, so nothing was deleted",
    ),
)
async def delete_addon(
    app_id: AppId, addon_id: AddonId, request: Request, caller: CallerDep
) -> Response:
    await app_state(request).addons.delete(caller, app_id, addon_id)
    return Response(status_code=204)


# --- backups ---------------------------------------------------------------------------

Page = Annotated[int, Query(ge=1, le=100_000)]
PerPage = Annotated[int, Query(ge=1, le=500)]


@router.get(
    "/apps/{app_id}/addons/{addon_id}/backups",
    response_model=Envelope[BackupListing],
    tags=["backups"],
    responses=error_responses(*_ANY, 404),
)
async def list_backups(
    app_id: AppId,
    addon_id: AddonId,
    request: Request,
    caller: CallerDep,
    page: Page = 1,
    per_page: PerPage = 50,
) -> Response:
    state = app_state(request)
    cluster = await state.addons.get_cluster(caller, app_id, addon_id)
    return await listing_pages(request).response(
        state.backups, cluster, page=page, per_page=per_page
    )


@router.post(
    "/apps/{app_id}/addons/{addon_id}/backups",
    status_code=202,
    response_model=Envelope[BackupRecord],
    tags=["backups"],
    responses=error_responses(*_ANY, *_BODY, 404, 409, s409="`plan_has_no_backups`"),
    openapi_extra=json_request_body(EmptyRequest, required=False),
)
async def create_backup(
    app_id: AppId, addon_id: AddonId, request: Request, caller: CallerDep
) -> Envelope[BackupRecord]:
    await json_body(request, EmptyRequest, optional=True)
    return Envelope(data=await app_state(request).backups.create(caller, app_id, addon_id))


@router.get(
    "/apps/{app_id}/addons/{addon_id}/incarnations",
    response_model=Envelope[list[IncarnationView]],
    tags=["backups"],
    responses=error_responses(*_ANY, 404),
)
async def list_incarnations(
    app_id: AppId, addon_id: AddonId, request: Request, caller: CallerDep
) -> Envelope[list[IncarnationView]]:
    """Every incarnation of this addon id whose archive is in the caller's prefix of the
    bucket (the live one, and deleted ones until their retention has passed), newest first,
    with base backups and restorable range. Works after the addon is deleted; 404 when there
    is neither a live addon nor an archived incarnation. ``latest`` is the time the newest
    WAL object was written: an upper estimate of the newest restorable instant."""
    views = await app_state(request).archives.incarnations(caller, app_id, addon_id)
    return Envelope(data=views)


# --- restores --------------------------------------------------------------------------


async def _restore(
    request: Request,
    response: Response,
    caller: Caller,
    app_id: str,
    addon_id: str,
    key: str | None,
    body: RestoreRequest,
) -> Envelope[RestoreView]:
    state = app_state(request)
    view, created = await state.restores.restore_addon_pitr(
        caller,
        app_id,
        addon_id,
        timestamp=body.timestamp,
        target=body.target,
        idempotency_key=key,
        incarnation=body.incarnation,
        lsn=body.lsn,
        xid=body.xid,
        restore_point=body.restore_point,
        before_event=body.before_event,
        inclusive=body.inclusive,
    )
    if created:
        state.metrics.restores.inc()
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = (
        f"/v1/apps/{view.app_id}/addons/{view.addon_id}/restores/{view.restore_id}"
    )
    return Envelope(data=view)


_RESTORE_ERRORS = error_responses(
    *_ANY,
    *_BODY,
    404,
    409,
    429,
    501,
    s409="`plan_has_no_backups`, `limit_reached` (restore clusters kept per addon)",
    s429="`too_many_concurrent_restores`",
    s422="also `timestamp_without_offset`, `invalid_timestamp`, `timestamp_in_future`, "
    "`outside_recoverability_window`, `no_backup_before_timestamp`, "
    "`idempotency_key_reused`, `invalid_recovery_target`, `target_not_reachable`, "
    "`unknown_restore_point`, `wal_scan_too_large`",
    s501="`in_place_not_available`",
)
_RESTORE_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "The recovery cluster is created (or, with a known Idempotency-Key, "
        "the restore it created before)",
        "headers": {
            "Location": {"description": "The restore's URL", "schema": {"type": "string"}},
            "Idempotent-Replayed": {
                "description": "'true' when an earlier request with the same key made it",
                "schema": {"type": "string", "enum": ["true"]},
            },
        },
    }
}


@router.post(
    "/apps/{app_id}/addons/{addon_id}/restore",
    status_code=202,
    response_model=Envelope[RestoreView],
    tags=["restores"],
    responses=_RESTORE_ACCEPTED | _RESTORE_ERRORS,
    openapi_extra=json_request_body(RestoreRequest),
)
async def restore(
    app_id: AppId,
    addon_id: AddonId,
    request: Request,
    response: Response,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> Envelope[RestoreView]:
    """Restore to an instant into a NEW cluster (the source is never touched)."""
    body = await json_body(request, RestoreRequest)
    return await _restore(request, response, caller, app_id, addon_id, idempotency_key, body)


@router.get(
    "/apps/{app_id}/addons/{addon_id}/restores",
    response_model=Envelope[list[RestoreView]],
    tags=["restores"],
    responses=error_responses(*_ANY, 404),
)
async def list_restores(
    app_id: AppId, addon_id: AddonId, request: Request, caller: CallerDep
) -> Envelope[list[RestoreView]]:
    return Envelope(data=await app_state(request).restores.list_restores(caller, app_id, addon_id))


@router.get(
    "/apps/{app_id}/addons/{addon_id}/restores/{restore_id}",
    response_model=Envelope[RestoreView],
    tags=["restores"],
    responses=error_responses(*_ANY, 404),
)
async def get_restore(
    app_id: AppId, addon_id: AddonId, restore_id: RestoreId, request: Request, caller: CallerDep
) -> Envelope[RestoreView]:
    view = await app_state(request).restores.get(caller, app_id, addon_id, restore_id)
    return Envelope(data=view)


@router.delete(
    "/apps/{app_id}/addons/{addon_id}/restores/{restore_id}",
    status_code=204,
    tags=["restores"],
    responses=error_responses(
        *_ANY, 404, 409, s409="`conflict`: an in-place restore switching or undoing"
    ),
)
async def delete_restore(
    app_id: AppId, addon_id: AddonId, restore_id: RestoreId, request: Request, caller: CallerDep
) -> Response:
    """Delete a restore's cluster (audited; its own archive folder is kept)."""
    await app_state(request).restores.delete(caller, app_id, addon_id, restore_id)
    return Response(status_code=204)


# --- legacy flat paths (pre-AE/44), kept for backwards compatibility -------------------


@router.get(
    "/addons/{addon_id}/backups",
    response_model=Envelope[BackupListing],
    tags=["legacy"],
    deprecated=True,
    responses=error_responses(*_ANY, 404),
)
async def legacy_list_backups(
    addon_id: AddonId,
    request: Request,
    caller: CallerDep,
    page: Page = 1,
    per_page: PerPage = 50,
) -> Response:
    state = app_state(request)
    cluster = await state.addons.find_cluster(caller, addon_id)
    return await listing_pages(request).response(
        state.backups, cluster, page=page, per_page=per_page
    )


@router.post(
    "/addons/{addon_id}/restore",
    status_code=202,
    response_model=Envelope[RestoreView],
    tags=["legacy"],
    deprecated=True,
    responses=_RESTORE_ACCEPTED | _RESTORE_ERRORS,
    openapi_extra=json_request_body(RestoreRequest),
)
async def legacy_restore(
    addon_id: AddonId,
    request: Request,
    response: Response,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> Envelope[RestoreView]:
    # The body first, as on every body route: the same refusals whatever the addon.
    body = await json_body(request, RestoreRequest)
    state = app_state(request)
    cluster = await state.addons.find_cluster(caller, addon_id)
    app_id = cluster["metadata"]["labels"]["paas-pitr.io/app"]
    return await _restore(request, response, caller, app_id, addon_id, idempotency_key, body)
