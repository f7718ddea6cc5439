"""Projections of a cluster's Backups and its recoverability window, kept between requests.

Projecting every Backup of a cluster (1000 for a pro addon after three years of daily
backups) and computing the window from them costs tens of milliseconds; the objects change
a few times a day. Each entry is keyed by everything its value was computed from, so an
entry is only ever served for the very inputs it was computed from:

- the projected Backups: the engine's ``revision("Backup")`` (changes with any Backup, its
  status included) and the incarnation (uid, archive folder); an engine that cannot give a
  revision (Kubernetes) lists, and the key is each Backup's uid, ``resourceVersion`` and
  error instead (the API server bumps ``resourceVersion`` on every status write; the error
  may come from the operator's Events);
- the window: the projected Backups' key, the Cluster and ObjectStore as read (their whole
  content: small), the newest archived instant and the earlier incarnations' ranges. The
  window also depends on the time of the request (the standard tier's backups become restore
  points once surely consistent; a pro window without an archive reading estimates its
  newest instant from now): it is kept only when computing it without a time gives the
  same window, which then holds for any later time as well (the time only ever removes
  restore points not yet consistent, or estimates an instant otherwise unknown).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from paas_pitr.cnpg.projections import BackupRecord
from paas_pitr.cnpg.window import RecoverabilityWindow, RestorableRange

Manifest = Mapping[str, Any]
Value = TypeVar("Value")

# Clusters kept per cache: an entry of a cluster with 1000 Backups holds ~1 MiB.
DEFAULT_CLUSTERS = 64


class _Lru(Generic[Value]):
    """Entries per cluster name, the least recently used dropped past ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[Hashable, Value]] = OrderedDict()

    def get(self, name: str, key: Hashable) -> Value | None:
        entry = self._entries.get(name)
        if entry is None or entry[0] != key:
            return None
        self._entries.move_to_end(name)
        return entry[1]

    def put(self, name: str, key: Hashable, value: Value) -> None:
        self._entries[name] = (key, value)
        self._entries.move_to_end(name)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


def fingerprint(obj: Manifest | None) -> str:
    """A small object's whole content, as a key (``""`` for none)."""
    return "" if obj is None else json.dumps(obj, sort_keys=True, default=str)


def listed_backups_key(raw_backups: Sequence[Manifest]) -> Hashable | None:
    """The key of Backups read by listing (no engine revision): ``None`` when one lacks
    the ``resourceVersion`` that would tell its changes."""
    parts = []
    for backup in raw_backups:
        metadata = backup.get("metadata") or {}
        version = metadata.get("resourceVersion")
        if not version:
            return None
        status = backup.get("status") or {}
        parts.append((metadata.get("uid"), version, status.get("error")))
    return tuple(parts)


class ArchiveCache:
    """The projected Backups and the window of recently read clusters (one process)."""

    def __init__(self, size: int = DEFAULT_CLUSTERS) -> None:
        self._backups: _Lru[list[BackupRecord]] = _Lru(size)
        self._windows: _Lru[tuple[datetime, RecoverabilityWindow]] = _Lru(size)

    def backups(self, name: str, key: Hashable) -> list[BackupRecord] | None:
        """The projected Backups (newest first) kept for exactly ``key``, if any."""
        return self._backups.get(name, key)

    def keep_backups(self, name: str, key: Hashable, records: list[BackupRecord]) -> None:
        self._backups.put(name, key, records)

    def window(self, name: str, key: Hashable, now: datetime) -> RecoverabilityWindow | None:
        """The window kept for ``key``, if computed at or before ``now`` (a clock set back
        misses: the window held from its computation on, not before)."""
        found = self._windows.get(name, key)
        if found is None or now < found[0]:
            return None
        return found[1]

    def keep_window(
        self, name: str, key: Hashable, now: datetime, window: RecoverabilityWindow
    ) -> None:
        """Keep a window computed at ``now``; only one that does not depend on the time."""
        self._windows.put(name, key, (now, window))


def window_key(
    backups_key: Hashable,
    cluster: Manifest,
    object_store: Manifest | None,
    last_archived: datetime | None,
    earlier: Sequence[RestorableRange],
) -> Hashable:
    return (
        backups_key,
        fingerprint(cluster),
        fingerprint(object_store),
        last_archived,
        tuple(r.model_dump_json() for r in earlier),
    )
