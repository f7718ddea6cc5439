"""An incarnation's archive history: when its WAL archiving was switched on and off.

A plan change to ``free`` removes the backup configuration, so WAL written from then on is
never archived; a later change back to a backup plan archives again under the same server
folder, leaving a gap that neither the Barman catalog nor CNPG's status records. The
control plane writes each switch onto the Cluster (annotation
``paas-pitr.io/archive-history``), so every replica and both engines cut the restorable
ranges at the same places.

Shape of the annotation (JSON, oldest first)::

    [{"on": null, "off": "2026-05-04T10:00:00Z", "latest": "2026-05-04T09:59:58.1Z"},
     {"on": "2026-05-05T08:00:00Z", "off": null, "latest": null}]

``on`` is null for the period that began with the incarnation; ``latest`` is the newest
restorable instant when archiving was switched off.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paas_pitr.cnpg import naming
from paas_pitr.timestamps import format_api_time, parse_k8s_time


@dataclass(frozen=True, slots=True)
class ArchivePeriod:
    """One stretch of continuous WAL archiving of one incarnation."""

    on: datetime | None
    """When archiving was switched on; ``None``: since the incarnation began."""
    off: datetime | None = None
    """When it was switched off; ``None``: still on."""
    latest: datetime | None = None
    """The newest restorable instant when it was switched off."""

    def as_json(self) -> dict[str, str | None]:
        return {
            "on": format_api_time(self.on) if self.on else None,
            "off": format_api_time(self.off) if self.off else None,
            "latest": format_api_time(self.latest) if self.latest else None,
        }


def _annotations(cluster: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = cluster.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    return annotations if isinstance(annotations, Mapping) else {}


def archive_periods(cluster: Mapping[str, Any], *, archiving_now: bool) -> list[ArchivePeriod]:
    """The periods recorded on ``cluster``, oldest first.

    A cluster without the annotation (rendered before it existed, or by hand) is taken as
    archiving continuously since it began while ``archiving_now``, else as never archived.
    A garbled annotation reads the same way: it must never make an instant restorable.
    """
    raw = _annotations(cluster).get(naming.ANNOTATION_ARCHIVE_HISTORY)
    periods: list[ArchivePeriod] = []
    try:
        loaded = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        loaded = None
    if isinstance(loaded, list):
        for item in loaded:
            if not isinstance(item, Mapping):
                periods = []
                break
            periods.append(
                ArchivePeriod(
                    on=parse_k8s_time(item.get("on")),
                    off=parse_k8s_time(item.get("off")),
                    latest=parse_k8s_time(item.get("latest")),
                )
            )
    if not periods:
        return [ArchivePeriod(on=None)] if archiving_now else []
    return periods


def switch_archiving(
    periods: list[ArchivePeriod], *, on: bool, at: datetime, latest: datetime | None = None
) -> list[ArchivePeriod]:
    """``periods`` after archiving is switched ``on`` (or off) at ``at``; unchanged when it
    already is. ``latest`` is the newest restorable instant at a switch off."""
    current = periods[-1] if periods else None
    is_on = current is not None and current.off is None
    if on == is_on:
        return list(periods)
    if on:
        # The first period of an incarnation has no lower bound: every backup of its
        # (fresh) server folder belongs to it.
        return [*periods, ArchivePeriod(on=at if periods else None)]
    assert current is not None
    return [*periods[:-1], ArchivePeriod(on=current.on, off=at, latest=latest)]


def history_annotation(periods: list[ArchivePeriod]) -> str:
    return json.dumps([p.as_json() for p in periods], separators=(",", ":"))


def incarnation_annotations(server_name: str, periods: list[ArchivePeriod]) -> dict[str, str]:
    """The annotations that carry an incarnation's server folder and archive history."""
    return {
        naming.ANNOTATION_SERVER_NAME: server_name,
        naming.ANNOTATION_ARCHIVE_HISTORY: history_annotation(periods),
    }


def incarnation_server_name_of(cluster: Mapping[str, Any]) -> str:
    """The server folder this incarnation archives under: the annotation, else (clusters
    rendered before it existed) the cluster's name, Barman's and CNPG's default."""
    name = _annotations(cluster).get(naming.ANNOTATION_SERVER_NAME)
    if isinstance(name, str) and name:
        return name
    metadata = cluster.get("metadata")
    return str(metadata.get("name", "")) if isinstance(metadata, Mapping) else ""
