"""An in-place restore as users see it: its status past ``ready`` and where the cluster it
keeps for an undo is."""

from __future__ import annotations

from typing import Any

from paas_pitr.cnpg import naming
from paas_pitr.engines.base import Manifest
from paas_pitr.switchover.record import Phase, record_of
from paas_pitr.timestamps import format_api_time

# Phases after which the recovery Cluster no longer serves the restored data itself.
MOVED = (Phase.SWITCHING, Phase.SWITCHED, Phase.UNDOING, Phase.UNDONE)


def in_place_hint(cluster: Manifest) -> str | None:
    """What to do about an in-place restore that failed after its recovery (its
    verification failed, or the addon went); ``None`` otherwise."""
    record = record_of(cluster)
    return record.hint if record is not None and record.phase is Phase.FAILED else None


def in_place_view(
    cluster: Manifest, status: str, reason: str | None
) -> tuple[str, str | None, dict[str, Any] | None]:
    """``(status, reason, switch)`` of an in-place restore whose recovery Cluster reports
    ``status`` (``restore_triggered``, ``recovering``, ``ready`` or ``failed``)."""
    record = record_of(cluster)
    if record is None:
        return ("verifying" if status == "ready" else status), reason, None
    if record.phase is Phase.FAILED:
        status, reason = "failed", record.reason
    else:
        status = record.phase.value

    def when(value: Any) -> str | None:
        return format_api_time(value) if value is not None else None

    switch: dict[str, Any] = {
        "switched_at": when(record.switched_at),
        "undo_until": when(record.undo_until),
        "undone_at": when(record.undone_at),
        "unavailable_seconds": record.unavailable_seconds,
        "from_incarnation": record.from_server,
        "to_incarnation": record.to_server,
        "checks": record.checks,
        "kept": None,
    }
    labels = cluster["metadata"].get("labels", {})
    undo_url = (
        f"/v1/apps/{labels.get(naming.LABEL_APP)}/addons/{labels.get(naming.LABEL_ADDON)}"
        f"/restores/{labels.get(naming.LABEL_RESTORE_ID)}/undo"
    )
    if record.phase is Phase.SWITCHED:
        switch["kept"] = {
            "cluster_name": cluster["metadata"]["name"],
            "incarnation": record.from_server,
            "state": "hibernated",
            "until": when(record.undo_until),
            "holds": "the addon's data as it was at the switch, writes made after the "
            "restore's target included",
            "how": f"POST {undo_url} switches the addon back to it until "
            f"{when(record.undo_until)}; after that its archive stays restorable into a new "
            f'cluster with {{"incarnation": "{record.from_server}"}} for the plan\'s retention',
        }
    elif record.phase is Phase.UNDONE:
        switch["kept"] = {
            "cluster_name": cluster["metadata"]["name"],
            "incarnation": record.to_server,
            "state": "hibernated",
            "until": when(record.undo_until),
            "holds": "the restored data as it was when the switch was undone",
            "how": "restore it into a new cluster with "
            f'{{"incarnation": "{record.to_server}"}} (its archive is kept for the plan\'s '
            "retention); the cluster itself is deleted at the time above",
        }
    return status, reason, switch
