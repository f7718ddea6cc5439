"""Per-tenant limits: how much of a shared machine or namespace one tenant may take.

Checked last, after every validation of a request, so a refused request is refused for that
reason only; the error names the limit and its setting.
"""

from __future__ import annotations

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.projections import RestoreState, restore_state
from paas_pitr.context import Caller
from paas_pitr.engines.base import Engine, Manifest
from paas_pitr.errors import LimitReached, TooManyRestores
from paas_pitr.settings import Settings
from paas_pitr.switchover.record import is_hibernated, record_of


async def check_addon_limit(engine: Engine, settings: Settings, caller: Caller) -> None:
    """``LimitReached`` when the tenant has ``max_addons_per_tenant`` addons already."""
    limit = settings.max_addons_per_tenant
    owned = await engine.list(
        "Cluster", {naming.LABEL_TENANT: caller.tenant, naming.LABEL_ROLE: naming.ROLE_ADDON}
    )
    if len(owned) >= limit:
        raise LimitReached(
            f"tenant {caller.tenant!r} has {len(owned)} addons, the most it may have; "
            "delete one first (PAAS_PITR_MAX_ADDONS_PER_TENANT)",
            details={"limit": limit, "setting": "PAAS_PITR_MAX_ADDONS_PER_TENANT"},
        )


def _recovering(cluster: Manifest) -> bool:
    """Whether ``cluster`` (a restore's) is still recovering. A hibernated Cluster has no
    ready instance and reads as recovering, but it is an in-place restore's kept cluster
    (it counts toward the kept restore clusters only); a Cluster with an in-place record
    has finished its recovery (it is verified, switched, undone or failed)."""
    if is_hibernated(cluster) or record_of(cluster) is not None:
        return False
    return restore_state(cluster)[0] in (RestoreState.TRIGGERED, RestoreState.RECOVERING)


async def check_restore_limits(
    engine: Engine, settings: Settings, caller: Caller, app_id: str, addon_id: str
) -> None:
    """``LimitReached`` when the addon keeps ``max_restores_per_addon`` restore clusters;
    ``TooManyRestores`` when the tenant has ``max_concurrent_restores_per_tenant`` under way."""
    restores = await engine.list(
        "Cluster", {naming.LABEL_TENANT: caller.tenant, naming.LABEL_ROLE: naming.ROLE_RESTORE}
    )
    kept = [
        c
        for c in restores
        if c["metadata"].get("labels", {}).get(naming.LABEL_APP) == app_id
        and c["metadata"].get("labels", {}).get(naming.LABEL_ADDON) == addon_id
    ]
    if len(kept) >= settings.max_restores_per_addon:
        raise LimitReached(
            f"addon {addon_id!r} keeps {len(kept)} restore clusters, the most it may; "
            f"delete one with DELETE /v1/apps/{app_id}/addons/{addon_id}/restores/{{id}} "
            "(PAAS_PITR_MAX_RESTORES_PER_ADDON)",
            details={
                "limit": settings.max_restores_per_addon,
                "setting": "PAAS_PITR_MAX_RESTORES_PER_ADDON",
            },
        )
    under_way = [c for c in restores if _recovering(c)]
    if len(under_way) >= settings.max_concurrent_restores_per_tenant:
        raise TooManyRestores(
            f"tenant {caller.tenant!r} has {len(under_way)} restores under way, the most it "
            "may at once; retry once one has ended "
            "(PAAS_PITR_MAX_CONCURRENT_RESTORES_PER_TENANT)",
            details={
                "limit": settings.max_concurrent_restores_per_tenant,
                "setting": "PAAS_PITR_MAX_CONCURRENT_RESTORES_PER_TENANT",
            },
        )
