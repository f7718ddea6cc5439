"""How the drill's checks reach a drill cluster, per engine, and how far before its target
the newest commit may be.

- local engine: the server's own unix socket as ``postgres`` (trusted locally, as the
  engine itself connects); its heartbeat commits every ``heartbeat_seconds``, so the newest
  commit of a restore is at most that far before the target.
- Kubernetes: the cluster's generated app Secret (``{cluster}-app``: user, password, port;
  the host is the ``-rw`` Service). The drill Cluster makes its app role a superuser through
  ``spec.managed.roles`` because amcheck's functions are not granted to other roles. Nothing
  commits on a schedule there, so an idle database's newest commit can be any age: only
  "at or before the target" is enforced (``max_distance`` infinite), and the distance is
  reported.
- memory engine (tests): conninfos the test sets.
"""

from __future__ import annotations

import base64
import math
from typing import Any, Protocol

from psycopg.conninfo import make_conninfo

from paas_pitr.engines.base import Engine, Manifest
from paas_pitr.errors import EngineError

APP_SECRET_SUFFIX = "-app"


class ClusterAccess(Protocol):
    async def superuser_conninfo(self, cluster: Manifest) -> str | None:
        """A libpq conninfo for a superuser of ``cluster``; ``None`` while the engine cannot
        tell (not ready yet). Raises ``EngineError`` when what it needs is unreadable."""

    def max_distance_seconds(self) -> float:
        """How far before the recovery target the newest commit may be."""


class LocalAccess:
    def __init__(self, engine: Any, heartbeat_seconds: float) -> None:
        self.engine = engine
        self.heartbeat_seconds = heartbeat_seconds

    async def superuser_conninfo(self, cluster: Manifest) -> str | None:
        instance = self.engine.instances.get(cluster["metadata"]["name"])
        if instance is None or instance.bootstrap_state != "done":
            return None
        conninfo: str = instance.server.admin_conninfo("postgres")
        return conninfo

    def max_distance_seconds(self) -> float:
        # One heartbeat interval, plus a second for the reconciler's pass that commits it.
        return self.heartbeat_seconds + 1.0


class KubernetesAccess:
    def __init__(self, api: Any) -> None:
        self.api = api

    async def superuser_conninfo(self, cluster: Manifest) -> str | None:
        name = cluster["metadata"]["name"]
        namespace = cluster["metadata"].get("namespace") or self.api.namespace
        secret = await self.api.get_path(
            f"/api/v1/namespaces/{namespace}/secrets/{name}{APP_SECRET_SUFFIX}"
        )
        if secret is None:
            return None
        data = {
            key: base64.b64decode(value).decode()
            for key, value in (secret.get("data") or {}).items()
        }
        if not data.get("username") or not data.get("password"):
            raise EngineError(
                f"Secret {name}{APP_SECRET_SUFFIX} has no username or password",
                details={"secret": f"{name}{APP_SECRET_SUFFIX}"},
            )
        host = data.get("host") or f"{name}-rw"
        if "." not in host:
            # CNPG writes the Service's short name; the control plane runs in another
            # namespace.
            host = f"{host}.{namespace}.svc"
        return make_conninfo(
            host=host,
            port=data.get("port") or "5432",
            user=data["username"],
            password=data["password"],
            dbname=data.get("dbname") or "app",
            connect_timeout="10",
        )

    def max_distance_seconds(self) -> float:
        return math.inf


class MemoryAccess:
    def __init__(self) -> None:
        self.conninfos: dict[str, str] = {}
        self.max_distance = 5.0

    async def superuser_conninfo(self, cluster: Manifest) -> str | None:
        return self.conninfos.get(cluster["metadata"]["name"])

    def max_distance_seconds(self) -> float:
        return self.max_distance


def access_for(engine: Engine, heartbeat_seconds: float) -> ClusterAccess:
    """The access of ``engine``'s kind (imports kept local: each engine's modules load only
    where that engine runs)."""
    if engine.name == "local":
        return LocalAccess(engine, heartbeat_seconds)
    if engine.name == "kubernetes":
        return KubernetesAccess(engine.api)  # type: ignore[attr-defined]
    return MemoryAccess()
