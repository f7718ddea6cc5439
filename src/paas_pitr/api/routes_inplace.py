"""The undo of an in-place restore (``paas_pitr.switchover``)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from paas_pitr.api.contract import EmptyRequest, Envelope, error_responses, json_request_body
from paas_pitr.api.deps import app_state, json_body
from paas_pitr.api.routes import AddonId, AppId, CallerDep, RestoreId
from paas_pitr.errors import InPlaceNotAvailable
from paas_pitr.restore_views import RestoreView

router = APIRouter()


@router.post(
    "/apps/{app_id}/addons/{addon_id}/restores/{restore_id}/undo",
    response_model=Envelope[RestoreView],
    tags=["restores"],
    responses=error_responses(
        401,
        413,
        422,
        503,
        400,
        415,
        404,
        409,
        501,
        s409="`undo_not_available` (the restore has not switched the addon, was undone "
        "already, or its undo time has passed)",
        s501="`in_place_not_available` (the engine cannot switch an addon)",
    ),
    openapi_extra=json_request_body(EmptyRequest, required=False),
)
async def undo_restore(
    app_id: AppId, addon_id: AddonId, restore_id: RestoreId, request: Request, caller: CallerDep
) -> Envelope[RestoreView]:
    """Switch the addon back to the cluster an in-place restore keeps (audited
    `addon.undo`); the restored cluster is then the one kept, until the undo time passes."""
    await json_body(request, EmptyRequest, optional=True)
    state = app_state(request)
    if state.inplace is None:
        raise InPlaceNotAvailable("in-place restores are not served here")
    await state.inplace.undo(caller, app_id, addon_id, restore_id)
    return Envelope(data=await state.restores.get(caller, app_id, addon_id, restore_id))
