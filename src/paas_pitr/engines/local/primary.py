"""The local engine's superuser access to a primary: its trusted unix socket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg

from paas_pitr.engines.base import Manifest
from paas_pitr.engines.local.instance import Instance
from paas_pitr.errors import DatabaseError
from paas_pitr.primary import (
    DATABASES_SQL,
    RELATIONS_SQL,
    RESTORE_POINT_SQL,
    CreatedPoint,
    Relation,
    unreachable,
)


class LocalPrimary:
    def __init__(self, instances: Callable[[str], Instance | None]) -> None:
        self._instances = instances

    def _instance(self, cluster: Manifest) -> Instance:
        instance = self._instances(cluster["metadata"]["name"])
        if instance is None or instance.bootstrap_state != "done":
            raise unreachable(cluster, "its server is not running")
        return instance

    async def _query(
        self, cluster: Manifest, database: str, sql: str, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        instance = self._instance(cluster)

        def run() -> list[tuple[Any, ...]]:
            with instance.connect(database) as conn:
                return list(conn.execute(sql, params).fetchall())

        try:
            return await asyncio.to_thread(run)
        except DatabaseError as exc:
            raise unreachable(cluster, exc.message) from exc
        except psycopg.Error as exc:
            raise unreachable(cluster, str(exc).strip()) from exc

    async def create_restore_point(self, cluster: Manifest, name: str) -> CreatedPoint:
        ((lsn, at, _),) = await self._query(cluster, "postgres", RESTORE_POINT_SQL, {"name": name})
        return CreatedPoint(str(lsn), at)

    async def databases(self, cluster: Manifest) -> dict[int, str]:
        rows = await self._query(cluster, "postgres", DATABASES_SQL, {})
        return {int(oid): str(name) for oid, name in rows}

    async def relations(self, cluster: Manifest, database: str, ids: list[int]) -> list[Relation]:
        rows = await self._query(cluster, database, RELATIONS_SQL, {"ids": ids})
        return [
            Relation(int(o), None if f is None else int(f), str(n), str(k)) for o, f, n, k in rows
        ]
