"""The actions the audit trail records: a fixed set, each written by one place in the
service (``action`` of ``paas_audit_events``)."""

from __future__ import annotations

from paas_pitr.errors import InvalidInput

ACTIONS: dict[str, str] = {
    "addon.create": "an addon created",
    "addon.plan_change": "an addon's plan changed",
    "addon.delete": "an addon deleted",
    "addon.backup": "an on-demand base backup requested",
    "addon.restore_point": "a named restore point created",
    "addon.restore_pitr": "a restore requested (the seed's query)",
    "addon.restore_ready": "a restore's cluster ready",
    "addon.restore_failed": "a restore failed (recovery or an in-place verification)",
    "addon.restore_delete": "a restore's cluster deleted",
    "addon.switchover": "an in-place restore switched the addon",
    "addon.undo": "an in-place restore undone",
    "addon.undo_expired": "the cluster kept for an undo deleted",
    "addon.archive_expired": "a deleted incarnation's archive expired",
    "addon.drill": "a restore drill's outcome",
}


def known_action(action: str) -> str:
    """``action`` when the service records it; else ``InvalidInput`` listing the known
    actions (a misspelt action would otherwise match no row and look like an empty trail)."""
    if action not in ACTIONS:
        raise InvalidInput(
            f"unknown audit action {action!r}; the known actions: {', '.join(ACTIONS)}",
            details={"action": action, "known": list(ACTIONS)},
        )
    return action
