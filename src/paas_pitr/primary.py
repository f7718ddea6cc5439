"""The control plane's superuser access to an addon's primary: what restore points and the
event finder's name resolution need, behind one small interface per engine.

- local engine: the instance's own trusted unix socket (``paas_pitr.engines.local.primary``);
- Kubernetes: the ``<cluster>-rw`` Service with the ``<cluster>-superuser`` Secret, which
  CNPG creates only with ``enableSuperuserAccess`` (``paas_pitr.engines.kubernetes.primary``);
- tests: :class:`InMemoryPrimary`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from paas_pitr.engines.base import Manifest
from paas_pitr.errors import PrimaryUnreachable

# Both queries look a relation up by its file node first: it is what the WAL names. A
# relation keeps its OID as its first file node until a rewrite (TRUNCATE, VACUUM FULL,
# CLUSTER) gives it a new file, so a file node that is no longer any relation's is looked up
# as an OID too.
RELATIONS_SQL = """
SELECT c.oid::bigint, pg_relation_filenode(c.oid)::bigint,
       quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relkind::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE pg_relation_filenode(c.oid) = ANY(%(ids)s) OR c.oid = ANY(%(ids)s)
"""
DATABASES_SQL = "SELECT oid::bigint, datname FROM pg_database"
RESTORE_POINT_SQL = (
    "SELECT pg_create_restore_point(%(name)s)::text, clock_timestamp(), pg_switch_wal()::text"
)


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    relfilenode: int | None
    name: str
    """``schema.table``, quoted as SQL needs it."""
    kind: str
    """pg_class.relkind: r table, i index, t TOAST table, m materialized view..."""


@dataclass(frozen=True, slots=True)
class CreatedPoint:
    lsn: str
    at: datetime


class Primary(Protocol):
    async def create_restore_point(self, cluster: Manifest, name: str) -> CreatedPoint:
        """``pg_create_restore_point(name)``, then a WAL switch so that the point is
        archived (and a restore to it possible) without waiting for archive_timeout."""

    async def databases(self, cluster: Manifest) -> dict[int, str]:
        """Database OID -> name."""

    async def relations(self, cluster: Manifest, database: str, ids: list[int]) -> list[Relation]:
        """The relations of ``database`` whose file node or OID is in ``ids``."""


def unreachable(cluster: Manifest, why: str) -> PrimaryUnreachable:
    name = cluster["metadata"]["name"]
    return PrimaryUnreachable(
        f"cannot reach the primary of {name!r} as a superuser: {why}", details={"cluster": name}
    )


class InMemoryPrimary:
    """A primary for tests: restore points get increasing LSNs; ``catalog`` holds, per
    database name, the relations name lookups find; ``down`` fails every call."""

    def __init__(self) -> None:
        self.next_lsn = 0x3000060
        self.points: list[tuple[str, str]] = []
        self.database_names: dict[int, str] = {5: "app"}
        self.catalog: dict[str, list[Relation]] = {}
        self.down = False

    def _guard(self, cluster: Manifest) -> None:
        if self.down:
            raise unreachable(cluster, "simulated outage")

    async def create_restore_point(self, cluster: Manifest, name: str) -> CreatedPoint:
        self._guard(cluster)
        lsn = f"{self.next_lsn >> 32:X}/{self.next_lsn & 0xFFFFFFFF:X}"
        self.next_lsn += 0x1000000
        self.points.append((cluster["metadata"]["name"], name))
        return CreatedPoint(lsn, datetime.now(UTC))

    async def databases(self, cluster: Manifest) -> dict[int, str]:
        self._guard(cluster)
        return dict(self.database_names)

    async def relations(self, cluster: Manifest, database: str, ids: list[int]) -> list[Relation]:
        self._guard(cluster)
        return [r for r in self.catalog.get(database, []) if r.oid in ids or r.relfilenode in ids]
