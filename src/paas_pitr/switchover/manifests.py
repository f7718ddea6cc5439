"""What the addon's Cluster and the kept Cluster look like once switched (pure).

A switch exchanges incarnations between two Clusters: the addon's Cluster (named after the
addon id, what the app's connection leads to) takes the restored incarnation's server folder
and archive history, and the other Cluster takes the addon's previous ones and is hibernated.
Each folder thus keeps being written by the data it holds, and never by other data.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.history import (
    ArchivePeriod,
    archive_periods,
    incarnation_annotations,
    incarnation_server_name_of,
    switch_archiving,
)
from paas_pitr.cnpg.projections import archive_server_name
from paas_pitr.engines.base import Manifest
from paas_pitr.switchover.record import (
    ANNOTATION_HIBERNATION,
    ANNOTATION_SWITCHED_FROM,
    switched_from,
)


def with_incarnation(
    cluster: Manifest,
    server_name: str,
    periods: list[ArchivePeriod],
    *,
    hibernated: bool,
    previous: list[str] | None = None,
) -> Manifest:
    """A copy of ``cluster`` archiving to ``server_name`` with the history ``periods``,
    hibernated or not; ``previous`` (addons only) lists the incarnations switched away from."""
    updated = copy.deepcopy(cluster)
    updated.pop("status", None)
    metadata = updated["metadata"]
    for key in ("resourceVersion", "managedFields", "generation"):
        metadata.pop(key, None)
    annotations = metadata.setdefault("annotations", {})
    annotations.update(incarnation_annotations(server_name, periods))
    if hibernated:
        annotations[ANNOTATION_HIBERNATION] = "on"
    else:
        annotations.pop(ANNOTATION_HIBERNATION, None)
    if previous is not None:
        annotations[ANNOTATION_SWITCHED_FROM] = json.dumps(previous, separators=(",", ":"))
    spec = updated.get("spec") or {}
    store = (spec.get("backup") or {}).get("barmanObjectStore")
    if isinstance(store, dict):
        store["serverName"] = server_name
    for plugin in spec.get("plugins") or []:
        if plugin.get("name") == naming.BARMAN_PLUGIN_NAME:
            plugin.setdefault("parameters", {})["serverName"] = server_name
    return updated


def periods_of(cluster: Manifest) -> list[ArchivePeriod]:
    return archive_periods(cluster, archiving_now=archive_server_name(cluster) is not None)


def switched_pair(
    addon: Manifest, restored: Manifest, *, closed: list[ArchivePeriod]
) -> tuple[Manifest, Manifest]:
    """The addon's Cluster taking the restored incarnation, and the restored Cluster
    keeping the addon's previous one. ``closed`` is the addon's history with archiving
    switched off at the switch (see :func:`paas_pitr.tombstones.switched_history`)."""
    previous = incarnation_server_name_of(addon)
    restored_server = incarnation_server_name_of(restored)
    active = with_incarnation(
        addon,
        restored_server,
        periods_of(restored),
        hibernated=False,
        previous=[previous, *[s for s in switched_from(addon) if s != previous]],
    )
    kept = with_incarnation(restored, previous, closed, hibernated=True)
    return active, kept


def undone_pair(
    addon: Manifest, kept: Manifest, *, closed: list[ArchivePeriod], at: datetime
) -> tuple[Manifest, Manifest]:
    """The addon's Cluster taking back the incarnation ``kept`` holds (archiving again from
    ``at``), and ``kept`` holding the restored one, whose history ``closed`` ends at ``at``."""
    back = incarnation_server_name_of(kept)
    restored_server = incarnation_server_name_of(addon)
    reopened = switch_archiving(periods_of_kept(kept), on=True, at=at)
    active = with_incarnation(
        addon,
        back,
        reopened,
        hibernated=False,
        previous=[restored_server, *[s for s in switched_from(addon) if s != back]],
    )
    return active, with_incarnation(kept, restored_server, closed, hibernated=True)


def periods_of_kept(kept: Manifest) -> list[ArchivePeriod]:
    """A kept Cluster's history: archiving was switched off when it was switched away from."""
    return archive_periods(kept, archiving_now=False)
