"""The Kubernetes engine's superuser access to a primary: CNPG's ``<cluster>-rw`` Service
and ``<cluster>-superuser`` Secret (``username``/``password``), which CNPG creates only when
the Cluster sets ``enableSuperuserAccess: true``. The control plane must run where the
Service name resolves (inside the cluster)."""

from __future__ import annotations

import base64
from typing import Any

import psycopg

from paas_pitr.engines.base import Manifest
from paas_pitr.engines.kubernetes.api import KubeApi
from paas_pitr.errors import EngineError
from paas_pitr.primary import (
    DATABASES_SQL,
    RELATIONS_SQL,
    RESTORE_POINT_SQL,
    CreatedPoint,
    Relation,
    unreachable,
)

CONNECT_TIMEOUT_SECONDS = 5


class KubernetesPrimary:
    def __init__(self, api: KubeApi, namespace: str) -> None:
        self.api = api
        self.namespace = namespace

    async def _conninfo(self, cluster: Manifest, database: str) -> dict[str, Any]:
        name = cluster["metadata"]["name"]
        namespace = cluster["metadata"].get("namespace") or self.namespace
        try:
            secret = await self.api.get_path(
                f"/api/v1/namespaces/{namespace}/secrets/{name}-superuser"
            )
        except EngineError as exc:
            # RBAC: the deployed Role reads the S3 Secret only; reading these is opt-in.
            raise unreachable(
                cluster, f"the Secret {name}-superuser cannot be read: {exc.message}"
            ) from exc
        data = (secret or {}).get("data") or {}
        if "username" not in data or "password" not in data:
            raise unreachable(
                cluster,
                f"the Secret {name}-superuser (username, password) does not exist: CNPG creates "
                "it only with spec.enableSuperuserAccess: true",
            )
        return {
            "host": f"{name}-rw.{namespace}.svc",
            "port": 5432,
            "dbname": database,
            "user": base64.b64decode(data["username"]).decode(),
            "password": base64.b64decode(data["password"]).decode(),
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "sslmode": "require",
        }

    async def _query(
        self, cluster: Manifest, database: str, sql: str, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        conninfo = await self._conninfo(cluster, database)
        try:
            async with await psycopg.AsyncConnection.connect(**conninfo, autocommit=True) as conn:
                cursor = await conn.execute(sql, params)
                return list(await cursor.fetchall())
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
