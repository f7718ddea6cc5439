"""The state of an in-place restore, written on its recovery Cluster (annotation
``paas-pitr.io/in-place``) so that every replica and a restarted service read the same.

Shape (JSON)::

    {"phase": "switching", "switch_id": "…", "from_server": "db-acme-app-1-0a1b2c3d",
     "to_server": "db-acme-app-1-4e5f6a7b", "at": "…Z", "switched_at": null,
     "undo_until": null, "undone_at": null, "unavailable_seconds": null,
     "reason": null, "hint": null, "checks": []}

``switching`` and ``undoing`` are intents: written before anything is switched, so a
service killed meanwhile finishes the switch on its next start (never half a switch).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from paas_pitr.cnpg import naming
from paas_pitr.timestamps import format_api_time, parse_k8s_time

ANNOTATION_IN_PLACE = naming.LABEL_PREFIX + "in-place"
# Incarnations (server folders) an addon was switched away from, newest first (JSON list):
# their ranges stay in the addon's window while their archives are kept.
ANNOTATION_SWITCHED_FROM = naming.LABEL_PREFIX + "switched-from"
# On a recovery Cluster until it is verified: the engine writes nothing into its databases
# (the local engine's heartbeat would be the newest commit, which verification compares
# with the recovery target).
ANNOTATION_UNVERIFIED = naming.LABEL_PREFIX + "unverified"
# CNPG's declarative hibernation: the operator removes the pods and keeps the volumes.
ANNOTATION_HIBERNATION = "cnpg.io/hibernation"


class Phase(StrEnum):
    VERIFYING = "verifying"
    SWITCHING = "switching"
    SWITCHED = "switched"
    FAILED = "failed"
    UNDOING = "undoing"
    UNDONE = "undone"


@dataclass(frozen=True, slots=True)
class InPlaceRecord:
    phase: Phase
    switch_id: str | None = None
    """Names the switch (or undo) under way or last done: engines apply one id once."""
    from_server: str | None = None
    """The addon's incarnation (server folder) before the switch."""
    to_server: str | None = None
    """The restored incarnation, the addon's after the switch."""
    at: datetime | None = None
    """When the current intent was written."""
    switched_at: datetime | None = None
    undo_until: datetime | None = None
    undone_at: datetime | None = None
    unavailable_seconds: float | None = None
    """How long the addon answered no connection during the last switch."""
    reason: str | None = None
    hint: str | None = None
    """What to do about a failed restore (``failed`` only)."""
    checks: list[dict[str, Any]] = field(default_factory=list)

    def evolve(self, **changes: Any) -> InPlaceRecord:
        return replace(self, **changes)

    def as_json(self) -> str:
        body = asdict(self)
        body["phase"] = self.phase.value
        for key in ("at", "switched_at", "undo_until", "undone_at"):
            value = getattr(self, key)
            body[key] = format_api_time(value) if value is not None else None
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


def record_of(cluster: Mapping[str, Any]) -> InPlaceRecord | None:
    """The record on ``cluster``; ``None`` when there is none or it cannot be read."""
    metadata = cluster.get("metadata") or {}
    raw = (metadata.get("annotations") or {}).get(ANNOTATION_IN_PLACE)
    try:
        loaded = json.loads(raw) if isinstance(raw, str) else None
        if not isinstance(loaded, dict):
            return None
        unavailable = loaded.get("unavailable_seconds")
        return InPlaceRecord(
            phase=Phase(loaded["phase"]),
            switch_id=loaded.get("switch_id"),
            from_server=loaded.get("from_server"),
            to_server=loaded.get("to_server"),
            at=parse_k8s_time(loaded.get("at")),
            switched_at=parse_k8s_time(loaded.get("switched_at")),
            undo_until=parse_k8s_time(loaded.get("undo_until")),
            undone_at=parse_k8s_time(loaded.get("undone_at")),
            unavailable_seconds=float(unavailable) if unavailable is not None else None,
            reason=loaded.get("reason"),
            hint=loaded.get("hint"),
            checks=list(loaded.get("checks") or []),
        )
    except (ValueError, KeyError, TypeError):
        return None


def with_record(cluster: Mapping[str, Any], record: InPlaceRecord) -> dict[str, Any]:
    """A copy of ``cluster`` carrying ``record``."""
    updated = json.loads(json.dumps(cluster))
    annotations = updated["metadata"].setdefault("annotations", {})
    annotations[ANNOTATION_IN_PLACE] = record.as_json()
    if record.phase is not Phase.VERIFYING:
        annotations.pop(ANNOTATION_UNVERIFIED, None)
    return dict(updated)


def switched_from(cluster: Mapping[str, Any]) -> list[str]:
    """The incarnations ``cluster`` (an addon) was switched away from, newest first."""
    metadata = cluster.get("metadata") or {}
    raw = (metadata.get("annotations") or {}).get(ANNOTATION_SWITCHED_FROM)
    try:
        loaded = json.loads(raw) if isinstance(raw, str) else []
    except ValueError:
        return []
    return [s for s in loaded if isinstance(s, str)] if isinstance(loaded, list) else []


def is_unverified(cluster: Mapping[str, Any]) -> bool:
    metadata = cluster.get("metadata") or {}
    return (metadata.get("annotations") or {}).get(ANNOTATION_UNVERIFIED) == "true"


def is_hibernated(cluster: Mapping[str, Any]) -> bool:
    metadata = cluster.get("metadata") or {}
    return (metadata.get("annotations") or {}).get(ANNOTATION_HIBERNATION) == "on"
