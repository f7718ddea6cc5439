"""Refusals that keep an addon from being changed while an in-place switch moves it."""

from __future__ import annotations

from paas_pitr.cnpg import naming
from paas_pitr.engines.base import Engine
from paas_pitr.errors import Conflict
from paas_pitr.switchover.record import Phase, record_of

MOVING = (Phase.SWITCHING, Phase.UNDOING)


async def refuse_while_addon_switching(
    engine: Engine, tenant: str, app_id: str, addon_id: str
) -> None:
    """``Conflict`` (409 ``conflict``, ``details``: ``restore_id``, ``status``) while one
    of the addon's in-place restores is switching it or undoing a switch: deleting the
    addon then would leave that restore reading ``switched`` with an undo that cannot
    succeed. Read from the restore Clusters' in-place records."""
    restores = await engine.list(
        "Cluster",
        {
            naming.LABEL_TENANT: tenant,
            naming.LABEL_APP: app_id,
            naming.LABEL_ADDON: addon_id,
            naming.LABEL_ROLE: naming.ROLE_RESTORE,
        },
    )
    for cluster in restores:
        record = record_of(cluster)
        if record is not None and record.phase in MOVING:
            restore_id = cluster["metadata"].get("labels", {}).get(naming.LABEL_RESTORE_ID)
            raise Conflict(
                f"addon {addon_id!r} is being switched by in-place restore {restore_id!r} "
                f"({record.phase.value}); delete it once that has ended",
                details={"restore_id": restore_id, "status": record.phase.value},
            )
