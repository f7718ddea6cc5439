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
from datetime import UTC, datetime
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


# The start of the current period when the recorded history cannot be read: no backup ever
# starts after it, so nothing is offered until a plan change writes a new history.
UNREADABLE_SINCE = datetime.max.replace(tzinfo=UTC)


def _parse(raw: object) -> list[ArchivePeriod] | None:
    """The periods of an annotation, or ``None`` unless every one is well formed: times
    with an offset, in order, only the first without a start, only the last still on."""
    try:
        loaded = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    if not isinstance(loaded, list):
        return None
    periods: list[ArchivePeriod] = []
    for index, item in enumerate(loaded):
        if not isinstance(item, Mapping):
            return None
        times = {}
        for key in ("on", "off", "latest"):
            value = item.get(key)
            times[key] = parse_k8s_time(value)
            if value is not None and times[key] is None:
                return None
        period = ArchivePeriod(on=times["on"], off=times["off"], latest=times["latest"])
        if period.on is None and index > 0:
            return None
        if period.off is None and index < len(loaded) - 1:
            return None
        if period.on is not None and period.off is not None and period.off < period.on:
            return None
        previous = periods[-1].off if periods else None
        if previous is not None and period.on is not None and period.on < previous:
            return None
        periods.append(period)
    return periods


def archive_periods(cluster: Mapping[str, Any], *, archiving_now: bool) -> list[ArchivePeriod]:
    """The periods recorded on ``cluster``, oldest first.

    A cluster without the annotation (rendered before it existed) is taken as archiving
    continuously since it began while ``archiving_now``, else as never archived. An
    unreadable annotation (hand-edited, truncated) must never make an instant restorable:
    its earlier periods are dropped and the current one starts at ``UNREADABLE_SINCE``.
    """
    raw = _annotations(cluster).get(naming.ANNOTATION_ARCHIVE_HISTORY)
    if raw is None:
        return [ArchivePeriod(on=None)] if archiving_now else []
    periods = _parse(raw)
    if periods is None:
        return [ArchivePeriod(on=UNREADABLE_SINCE)] if archiving_now else []
    if archiving_now != bool(periods and periods[-1].off is None):
        # The objects disagree with the record (a plan changed by hand): trust neither.
        return [ArchivePeriod(on=UNREADABLE_SINCE)] if archiving_now else []
    return periods


# The end of the one period that stands for an unreadable history once a switch is
# recorded over it: nothing of it is restorable, and the next period is bounded.
FORGOTTEN = datetime.min.replace(tzinfo=UTC)


def reset_if_unreadable(periods: list[ArchivePeriod]) -> list[ArchivePeriod]:
    """Before recording a switch: an unreadable history becomes one closed period with
    nothing restorable, so the period the switch begins is bounded by its start."""
    if periods and periods[-1].on == UNREADABLE_SINCE:
        return [ArchivePeriod(on=None, off=FORGOTTEN, latest=None)]
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
