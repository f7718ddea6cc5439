"""The routes of the seed: addons, backups, restores (nested and legacy flat paths)."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from paas_pitr.addons import AddonView
from paas_pitr.api.deps import app_state, get_caller, json_body
from paas_pitr.backups import BackupListing
from paas_pitr.cnpg.projections import BackupRecord
from paas_pitr.context import Caller
from paas_pitr.incarnations import IncarnationView
from paas_pitr.restore_views import RestoreView

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    data: T


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class CreateAddonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: StrictStr
    version: StrictStr | None = None
    addon_id: StrictStr | None = None


class ChangePlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: StrictStr


class RestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timestamp: StrictStr = Field(description="ISO 8601 with an explicit offset (Z or +hh:mm)")
    target: Literal["new_cluster", "in_place"] = "new_cluster"
    incarnation: StrictStr | None = Field(
        default=None,
        description="Restore from this incarnation's archive (a server_name listed by "
        "GET .../incarnations), also once the addon is deleted; default: the live addon's",
    )


class EmptyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


CallerDep = Annotated[Caller, Depends(get_caller)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="Retries with the same key create nothing new"),
]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (400, 401, 404, 409, 413, 415, 422, 501, 503)
}

router = APIRouter(responses=_ERRORS)


# --- addons ----------------------------------------------------------------------------


@router.post(
    "/apps/{app_id}/addons", status_code=201, response_model=Envelope[AddonView], tags=["addons"]
)
async def create_addon(app_id: str, request: Request, caller: CallerDep) -> Envelope[AddonView]:
    body = await json_body(request, CreateAddonRequest)
    view = await app_state(request).addons.create_addon_generic(
        caller, app_id, plan=body.plan, version=body.version, addon_id=body.addon_id
    )
    return Envelope(data=view)


@router.get("/apps/{app_id}/addons", response_model=Envelope[list[AddonView]], tags=["addons"])
async def list_addons(
    app_id: str, request: Request, caller: CallerDep
) -> Envelope[list[AddonView]]:
    return Envelope(data=await app_state(request).addons.list_addons(caller, app_id))


@router.get("/apps/{app_id}/addons/{addon_id}", response_model=Envelope[AddonView], tags=["addons"])
async def get_addon(
    app_id: str, addon_id: str, request: Request, caller: CallerDep
) -> Envelope[AddonView]:
    addons = app_state(request).addons
    return Envelope(data=await addons.view(await addons.get_cluster(caller, app_id, addon_id)))


@router.patch(
    "/apps/{app_id}/addons/{addon_id}", response_model=Envelope[AddonView], tags=["addons"]
)
async def change_plan(
    app_id: str, addon_id: str, request: Request, caller: CallerDep
) -> Envelope[AddonView]:
    body = await json_body(request, ChangePlanRequest)
    view = await app_state(request).addons.change_plan(caller, app_id, addon_id, body.plan)
    return Envelope(data=view)


@router.delete("/apps/{app_id}/addons/{addon_id}", status_code=204, tags=["addons"])
async def delete_addon(app_id: str, addon_id: str, request: Request, caller: CallerDep) -> Response:
    await app_state(request).addons.delete(caller, app_id, addon_id)
    return Response(status_code=204)


# --- backups ---------------------------------------------------------------------------

Page = Annotated[int, Query(ge=1, le=100_000)]
PerPage = Annotated[int, Query(ge=1, le=500)]


@router.get(
    "/apps/{app_id}/addons/{addon_id}/backups",
    response_model=Envelope[BackupListing],
    tags=["backups"],
)
async def list_backups(
    app_id: str,
    addon_id: str,
    request: Request,
    caller: CallerDep,
    page: Page = 1,
    per_page: PerPage = 50,
) -> Envelope[BackupListing]:
    listing = await app_state(request).backups.list_backups(
        caller, app_id, addon_id, page=page, per_page=per_page
    )
    return Envelope(data=listing)


@router.post(
    "/apps/{app_id}/addons/{addon_id}/backups",
    status_code=202,
    response_model=Envelope[BackupRecord],
    tags=["backups"],
)
async def create_backup(
    app_id: str, addon_id: str, request: Request, caller: CallerDep
) -> Envelope[BackupRecord]:
    await json_body(request, EmptyRequest, optional=True)
    return Envelope(data=await app_state(request).backups.create(caller, app_id, addon_id))


@router.get(
    "/apps/{app_id}/addons/{addon_id}/incarnations",
    response_model=Envelope[list[IncarnationView]],
    tags=["backups"],
)
async def list_incarnations(
    app_id: str, addon_id: str, request: Request, caller: CallerDep
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
) -> Envelope[RestoreView]:
    body = await json_body(request, RestoreRequest)
    state = app_state(request)
    view, created = await state.restores.restore_addon_pitr(
        caller,
        app_id,
        addon_id,
        timestamp=body.timestamp,
        target=body.target,
        idempotency_key=key,
        incarnation=body.incarnation,
    )
    if created:
        state.metrics.restores.inc()
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = (
        f"/v1/apps/{view.app_id}/addons/{view.addon_id}/restores/{view.restore_id}"
    )
    return Envelope(data=view)


@router.post(
    "/apps/{app_id}/addons/{addon_id}/restore",
    status_code=202,
    response_model=Envelope[RestoreView],
    tags=["restores"],
)
async def restore(
    app_id: str,
    addon_id: str,
    request: Request,
    response: Response,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> Envelope[RestoreView]:
    """Restore to an instant into a NEW cluster (the source is never touched)."""
    return await _restore(request, response, caller, app_id, addon_id, idempotency_key)


@router.get(
    "/apps/{app_id}/addons/{addon_id}/restores",
    response_model=Envelope[list[RestoreView]],
    tags=["restores"],
)
async def list_restores(
    app_id: str, addon_id: str, request: Request, caller: CallerDep
) -> Envelope[list[RestoreView]]:
    return Envelope(data=await app_state(request).restores.list_restores(caller, app_id, addon_id))


@router.get(
    "/apps/{app_id}/addons/{addon_id}/restores/{restore_id}",
    response_model=Envelope[RestoreView],
    tags=["restores"],
)
async def get_restore(
    app_id: str, addon_id: str, restore_id: str, request: Request, caller: CallerDep
) -> Envelope[RestoreView]:
    view = await app_state(request).restores.get(caller, app_id, addon_id, restore_id)
    return Envelope(data=view)


# --- legacy flat paths (pre-AE/44), kept for backwards compatibility -------------------


@router.get(
    "/addons/{addon_id}/backups",
    response_model=Envelope[BackupListing],
    tags=["legacy"],
    deprecated=True,
)
async def legacy_list_backups(
    addon_id: str,
    request: Request,
    caller: CallerDep,
    page: Page = 1,
    per_page: PerPage = 50,
) -> Envelope[BackupListing]:
    state = app_state(request)
    cluster = await state.addons.find_cluster(caller, addon_id)
    return Envelope(data=await state.backups.listing(cluster, page=page, per_page=per_page))


@router.post(
    "/addons/{addon_id}/restore",
    status_code=202,
    response_model=Envelope[RestoreView],
    tags=["legacy"],
    deprecated=True,
)
async def legacy_restore(
    addon_id: str,
    request: Request,
    response: Response,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> Envelope[RestoreView]:
    state = app_state(request)
    cluster = await state.addons.find_cluster(caller, addon_id)
    app_id = cluster["metadata"]["labels"]["paas-pitr.io/app"]
    return await _restore(request, response, caller, app_id, addon_id, idempotency_key)
