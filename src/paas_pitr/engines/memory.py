"""An in-memory Engine for tests: stores objects like an API server, acts on nothing.

Tests play the operator by writing statuses with ``set_status``.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from paas_pitr.bucket import InMemoryBucket
from paas_pitr.engines.base import ClusterListener, Kind, Manifest
from paas_pitr.errors import Conflict, EngineError
from paas_pitr.primary import InMemoryPrimary


class InMemoryEngine:
    name = "memory"

    def __init__(
        self,
        *,
        mode: Literal["in-tree", "plugin"] = "in-tree",
        endpoint: str = "http://127.0.0.1:9000",
        bucket: str = "paas-pg-backups",
    ) -> None:
        self.mode = mode
        self.endpoint = endpoint
        # The backup bucket, filled by tests with barman catalog and WAL objects.
        self.bucket = InMemoryBucket(bucket)
        self.fake_primary = InMemoryPrimary()
        self.objects: dict[tuple[str, str], Manifest] = {}
        self.archived_at: dict[str, datetime] = {}
        self.down = False
        self.calls: list[tuple[str, str, str]] = []
        # Never called: nothing acts on the objects here (tests call listeners themselves).
        self.listeners: list[ClusterListener] = []
        self._versions = itertools.count(1)
        # Bumped on every write through the engine's methods: tests that edit ``objects``
        # in place must call ``set_status``/``put`` for readers keyed on ``revision``.
        self._changes = itertools.count(1)
        self._revision = next(self._changes)

    def _guard(self) -> None:
        if self.down:
            raise EngineError("engine unreachable (simulated)")

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def check(self) -> None:
        self._guard()

    async def cnpg_mode(self) -> Literal["in-tree", "plugin"]:
        return self.mode

    def endpoint_url(self) -> str:
        return self.endpoint

    def default_version(self) -> str | None:
        return None

    async def create(self, obj: Manifest) -> Manifest:
        self._guard()
        if (obj["kind"], obj["metadata"]["name"]) in self.objects:
            raise Conflict(f"{obj['kind']} {obj['metadata']['name']!r} already exists")
        return await self.apply(obj)

    async def apply(self, obj: Manifest) -> Manifest:
        self._guard()
        kind, name = obj["kind"], obj["metadata"]["name"]
        self.calls.append(("apply", kind, name))
        stored = copy.deepcopy(obj)
        previous = self.objects.get((kind, name))
        metadata = stored["metadata"]
        if previous is not None:
            metadata["uid"] = previous["metadata"]["uid"]
            metadata["creationTimestamp"] = previous["metadata"]["creationTimestamp"]
            if "status" in previous:
                stored["status"] = previous["status"]
        else:
            metadata["uid"] = str(uuid.uuid4())
            metadata["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        metadata["resourceVersion"] = str(next(self._versions))
        self.objects[(kind, name)] = stored
        self._changed()
        return copy.deepcopy(stored)

    async def get(self, kind: Kind, name: str) -> Manifest | None:
        self._guard()
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found is not None else None

    async def list(self, kind: Kind, labels: Mapping[str, str] | None = None) -> list[Manifest]:
        self._guard()
        wanted = dict(labels or {})
        return [
            copy.deepcopy(obj)
            for (k, _), obj in sorted(self.objects.items())
            if k == kind
            and all(obj["metadata"].get("labels", {}).get(a) == b for a, b in wanted.items())
        ]

    async def delete(self, kind: Kind, name: str) -> bool:
        self._guard()
        self.calls.append(("delete", kind, name))
        self._changed()
        return self.objects.pop((kind, name), None) is not None

    def revision(self, kind: Kind) -> str | None:
        return str(self._revision)

    def _changed(self) -> None:
        self._revision = next(self._changes)

    async def last_archived_at(self, cluster: Manifest) -> datetime | None:
        self._guard()
        return self.archived_at.get(cluster["metadata"]["name"])

    async def connection_info(self, cluster: Manifest) -> dict[str, Any] | None:
        return None

    def archive_bucket(self) -> InMemoryBucket:
        return self.bucket

    def primary(self) -> InMemoryPrimary:
        return self.fake_primary

    # --- for tests playing the operator ----------------------------------------------

    def set_status(self, kind: Kind, name: str, status: dict[str, Any]) -> None:
        self.objects[(kind, name)]["status"] = copy.deepcopy(status)
        self._changed()

    def put(self, obj: Manifest) -> None:
        """Store an object as the operator would create it (a scheduled Backup, say)."""
        stored = copy.deepcopy(obj)
        stored["metadata"].setdefault("uid", str(uuid.uuid4()))
        self.objects[(stored["kind"], stored["metadata"]["name"])] = stored
        self._changed()
