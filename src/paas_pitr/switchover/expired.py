"""In-place restores whose kept cluster was deleted when the undo time passed.

A restore is read from its recovery Cluster, and that Cluster is the one the undo keeps:
once it is deleted the restore would vanish from ``GET .../restores``. Before deleting it,
the restore as it was last seen is written (status ``expired``) on the addon's Cluster
(annotation ``paas-pitr.io/expired-restores``, JSON list, newest first, the newest
:data:`KEPT` only: an annotation is bounded), and restore listings read it from there.
"""

from __future__ import annotations

import json
from typing import Any

from paas_pitr.cnpg import naming
from paas_pitr.engines.base import Manifest
from paas_pitr.restore_views import RestoreView

ANNOTATION_EXPIRED_RESTORES = naming.LABEL_PREFIX + "expired-restores"
KEPT = 20


def expired_restores(addon: Manifest | None) -> list[RestoreView]:
    """The expired in-place restores recorded on ``addon``'s Cluster (newest first)."""
    raw = ((addon or {}).get("metadata", {}).get("annotations") or {}).get(
        ANNOTATION_EXPIRED_RESTORES
    )
    try:
        loaded = json.loads(raw) if isinstance(raw, str) else []
    except ValueError:
        return []
    views = []
    for item in loaded if isinstance(loaded, list) else []:
        try:
            views.append(RestoreView.model_validate(item))
        except ValueError:
            continue
    return views


def with_expired(addon: Manifest, view: RestoreView, *, undo_until: str | None) -> Manifest:
    """A copy of ``addon`` recording ``view`` as expired: its kept cluster is deleted."""
    switch: dict[str, Any] = dict(view.switch or {})
    kept = switch.get("kept") or {}
    if kept:
        switch["kept"] = {
            **kept,
            "state": "deleted",
            "how": "the cluster was deleted when the undo time passed; its archive stays "
            f'restorable into a new cluster with {{"incarnation": "{kept.get("incarnation")}"}} '
            "for the plan's retention",
        }
    expired = view.model_copy(
        update={
            "status": "expired",
            "connection": None,
            "reason": f"the undo time passed at {undo_until}: the kept cluster was deleted",
            "switch": switch or None,
        }
    )
    others = [v for v in expired_restores(addon) if v.restore_id != view.restore_id]
    listed = [expired, *others][:KEPT]
    updated = json.loads(json.dumps(addon))
    updated["metadata"].setdefault("annotations", {})[ANNOTATION_EXPIRED_RESTORES] = json.dumps(
        [v.model_dump(mode="json") for v in listed], separators=(",", ":")
    )
    return dict(updated)
