"""Where drill records live, per engine: memory (tests), a SQLite file beside the local
engine's object database, or one ConfigMap per addon on Kubernetes.

Records are keyed by the addon id (a cluster name, unique in its engine); a store keeps the
newest :data:`DRILLS_KEPT` of each addon. Every error is a ``PitrError`` (a dependency's
chained): a record that cannot be written fails the drill's request, never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from paas_pitr.cnpg import naming
from paas_pitr.drills.records import DRILLS_KEPT, UNFINISHED, DrillRecord
from paas_pitr.errors import DatabaseError, EngineError
from paas_pitr.retry import Backoff


class DrillStore(Protocol):
    async def save(self, record: DrillRecord) -> None:
        """Create or replace the record (by addon and drill id)."""

    async def get(self, addon_id: str, drill_id: str) -> DrillRecord | None: ...

    async def for_addon(self, addon_id: str) -> list[DrillRecord]:
        """The addon's drills, newest first."""

    async def unfinished(self) -> list[DrillRecord]:
        """Every queued or running drill (after a restart: the interrupted ones)."""


def _newest_first(records: list[DrillRecord]) -> list[DrillRecord]:
    return sorted(records, key=lambda r: (r.requested_at, r.drill_id), reverse=True)


class InMemoryDrillStore:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], DrillRecord] = {}

    async def save(self, record: DrillRecord) -> None:
        self.records[(record.addon_id, record.drill_id)] = record.model_copy(deep=True)
        kept = _newest_first([r for (a, _), r in self.records.items() if a == record.addon_id])
        for old in kept[DRILLS_KEPT:]:
            del self.records[(old.addon_id, old.drill_id)]

    async def get(self, addon_id: str, drill_id: str) -> DrillRecord | None:
        found = self.records.get((addon_id, drill_id))
        return found.model_copy(deep=True) if found else None

    async def for_addon(self, addon_id: str) -> list[DrillRecord]:
        return _newest_first([r for (a, _), r in self.records.items() if a == addon_id])

    async def unfinished(self) -> list[DrillRecord]:
        return [r for r in self.records.values() if r.status in UNFINISHED]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS drills (
    addon_id TEXT NOT NULL,
    drill_id TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (addon_id, drill_id)
);
"""


class SqliteDrillStore:
    """The local engine's: ``drills.sqlite3`` beside its object database, private to the
    service's user like it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise DatabaseError(f"the drill records cannot be read or written: {exc}") from exc

    def _save(self, record: DrillRecord) -> None:
        self._run(
            "INSERT INTO drills (addon_id, drill_id, requested_at, status, body) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (addon_id, drill_id) DO UPDATE SET "
            "requested_at = excluded.requested_at, status = excluded.status, body = excluded.body",
            (
                record.addon_id,
                record.drill_id,
                record.requested_at.isoformat(),
                record.status,
                record.model_dump_json(),
            ),
        )
        self._run(
            "DELETE FROM drills WHERE addon_id = ? AND drill_id NOT IN (SELECT drill_id FROM "
            "drills WHERE addon_id = ? ORDER BY requested_at DESC, drill_id DESC LIMIT ?)",
            (record.addon_id, record.addon_id, DRILLS_KEPT),
        )

    async def save(self, record: DrillRecord) -> None:
        await asyncio.to_thread(self._save, record)

    async def get(self, addon_id: str, drill_id: str) -> DrillRecord | None:
        rows = await asyncio.to_thread(
            self._run,
            "SELECT body FROM drills WHERE addon_id = ? AND drill_id = ?",
            (addon_id, drill_id),
        )
        return DrillRecord.model_validate_json(rows[0][0]) if rows else None

    async def for_addon(self, addon_id: str) -> list[DrillRecord]:
        rows = await asyncio.to_thread(
            self._run,
            "SELECT body FROM drills WHERE addon_id = ? ORDER BY requested_at DESC, drill_id DESC",
            (addon_id,),
        )
        return [DrillRecord.model_validate_json(row[0]) for row in rows]

    async def unfinished(self) -> list[DrillRecord]:
        rows = await asyncio.to_thread(
            self._run, "SELECT body FROM drills WHERE status IN ('queued', 'running')"
        )
        return [DrillRecord.model_validate_json(row[0]) for row in rows]


class KubeRequests(Protocol):
    """What the ConfigMap store needs of :class:`paas_pitr.engines.kubernetes.api.KubeApi`."""

    namespace: str

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any: ...


RECORDS_KEY = "drills.json"
# Concurrent writers (replicas, or a drill's steps racing a listing) retry on a stale
# resourceVersion: 409 Conflict from the API server.
_UPDATE_RETRY = Backoff(initial=0.05, max=1.0, multiplier=2.0, attempts=8, jitter=0.5)


def config_map_name(addon_id: str) -> str:
    return f"{addon_id}-drills"


class ConfigMapDrillStore:
    """Kubernetes: the ConfigMap ``{addon}-drills`` holds the addon's records as JSON (a few
    KiB each, 50 kept: far under a ConfigMap's 1 MiB). It is owned by the addon's Cluster,
    so the garbage collector removes it with the addon; the audit log keeps every drill.
    Writes are read-modify-write with the resourceVersion (409 Conflict is retried)."""

    def __init__(
        self,
        api: KubeRequests,
        find_cluster: Callable[[str], Awaitable[dict[str, Any] | None]],
    ) -> None:
        self.api = api
        # The addon's Cluster as the engine resolves its name (``Engine.get("Cluster", id)``).
        self.find_cluster = find_cluster

    def _path(self, name: str | None = None) -> str:
        path = f"/api/v1/namespaces/{self.api.namespace}/configmaps"
        return f"{path}/{name}" if name else path

    async def _read(self, addon_id: str) -> tuple[dict[str, Any] | None, list[DrillRecord]]:
        """The addon's ConfigMap and records; ``(None, [])`` when there is none, or when the
        one there belongs to a deleted incarnation of the addon: the garbage collector
        removes it after its Cluster, not with it, so a re-created addon may still find it
        (it is deleted here: records written into it would vanish with it)."""
        from paas_pitr.engines.kubernetes.api import KubeNotFound

        name = config_map_name(addon_id)
        try:
            found: dict[str, Any] = await self.api.request("GET", self._path(name))
        except KubeNotFound:
            return None, []
        owners = {o.get("uid") for o in found.get("metadata", {}).get("ownerReferences") or []}
        if owners and (await self._cluster_uid(addon_id)) not in owners:
            with contextlib.suppress(KubeNotFound):
                await self.api.request("DELETE", self._path(name))
            return None, []
        return found, _records_in(found)

    async def _cluster_uid(self, addon_id: str) -> str | None:
        """The uid of the Cluster that is the addon now. Through the engine's lookup, never
        a raw path: after an in-place switch the addon's name stands for another Cluster
        (the one its data was restored into), and the kept one under the old name must not
        pass for the addon, or its records would be taken for a leftover and deleted."""
        cluster = await self.find_cluster(addon_id)
        uid = ((cluster or {}).get("metadata") or {}).get("uid")
        return str(uid) if uid else None

    async def save(self, record: DrillRecord) -> None:
        from paas_pitr.engines.kubernetes.api import KubeConflict, KubeNotFound

        attempt = 0
        while True:
            attempt += 1
            found, records = await self._read(record.addon_id)
            kept = [r for r in records if r.drill_id != record.drill_id] + [record]
            data = {
                RECORDS_KEY: json.dumps(
                    [json.loads(r.model_dump_json()) for r in _newest_first(kept)[:DRILLS_KEPT]]
                )
            }
            try:
                if found is None:
                    await self.api.request("POST", self._path(), body=await self._new(record, data))
                else:
                    found["data"] = data
                    await self.api.request(
                        "PUT", self._path(config_map_name(record.addon_id)), body=found
                    )
                return
            except (KubeConflict, KubeNotFound) as exc:
                if _UPDATE_RETRY.gives_up_after(attempt):
                    raise EngineError(
                        f"the drill records of {record.addon_id!r} kept changing while being "
                        f"written: {exc.message}"
                    ) from exc
                await asyncio.sleep(_UPDATE_RETRY.jittered(attempt))

    async def _new(self, record: DrillRecord, data: dict[str, str]) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": config_map_name(record.addon_id),
            "namespace": self.api.namespace,
            "labels": {
                naming.LABEL_MANAGED_BY: naming.MANAGER,
                naming.LABEL_TENANT: record.tenant,
                naming.LABEL_APP: record.app_id,
                naming.LABEL_ADDON: record.addon_id,
                naming.LABEL_ROLE: naming.ROLE_DRILL,
            },
        }
        uid = await self._cluster_uid(record.addon_id)
        if uid:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": naming.API_VERSION,
                    "kind": "Cluster",
                    "name": record.addon_id,
                    "uid": uid,
                }
            ]
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}

    async def get(self, addon_id: str, drill_id: str) -> DrillRecord | None:
        _, records = await self._read(addon_id)
        return next((r for r in records if r.drill_id == drill_id), None)

    async def for_addon(self, addon_id: str) -> list[DrillRecord]:
        _, records = await self._read(addon_id)
        return _newest_first(records)

    async def unfinished(self) -> list[DrillRecord]:
        body = await self.api.request(
            "GET",
            self._path(),
            params={
                "labelSelector": f"{naming.LABEL_MANAGED_BY}={naming.MANAGER},"
                f"{naming.LABEL_ROLE}={naming.ROLE_DRILL}"
            },
        )
        return [r for item in body.get("items") or [] for r in _records_in(item) if not r.finished]


def _records_in(config_map: dict[str, Any]) -> list[DrillRecord]:
    raw = (config_map.get("data") or {}).get(RECORDS_KEY) or "[]"
    try:
        loaded = json.loads(raw)
    except ValueError as exc:
        raise EngineError(
            f"ConfigMap {config_map.get('metadata', {}).get('name')!r} holds no drill records "
            f"readable as JSON: {exc}"
        ) from exc
    return [DrillRecord.model_validate(item) for item in loaded]
