"""The Engine interface: a small, Kubernetes-shaped object API plus the facts CNPG lacks.

Everything above an engine (validation, windows, projections, restore states) is computed
from the CNPG objects it stores and their ``status``. An engine only has to store objects,
act on them (the operator's job), and write status in CNPG's shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from paas_pitr.bucket import Bucket

if TYPE_CHECKING:
    from paas_pitr.primary import Primary

Manifest = dict[str, Any]
Kind = Literal["Cluster", "Backup", "ScheduledBackup", "ObjectStore"]
KINDS: tuple[Kind, ...] = ("Cluster", "Backup", "ScheduledBackup", "ObjectStore")
# Called with an event type ("SYNC", "ADDED", "MODIFIED", "DELETED") and the Cluster.
ClusterListener = Callable[[str, Manifest], Awaitable[None]]


def is_terminating(obj: Manifest) -> bool:
    """Deleted, but kept by the API server until its finalizers are removed: Kubernetes
    sets ``metadata.deletionTimestamp`` and the object stays readable (and writable) until
    then. It no longer counts as existing for users; its name is not free yet."""
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


class Engine(Protocol):
    name: str
    listeners: list[ClusterListener]
    """Called as Clusters change (a restore's outcome is audited from them): for every
    event of the Kubernetes engine's watch, when a bootstrap ends on the local engine,
    never on the in-memory engine. A listener's exception is logged, never raised."""

    async def start(self) -> None:
        """Connect, start background work; must not fail just because a dependency is down."""

    async def close(self) -> None: ...

    async def check(self) -> None:
        """Raise ``EngineError`` naming what is unreachable."""

    async def cnpg_mode(self) -> Literal["in-tree", "plugin"]:
        """Which CNPG form objects must be rendered in for this engine."""

    def endpoint_url(self) -> str:
        """The S3 endpoint to render into objects."""

    def default_version(self) -> str | None:
        """The PostgreSQL major to use when a request names none (``None``: the setting)."""

    async def create(self, obj: Manifest) -> Manifest:
        """Create an object; raise ``Conflict`` if one of that kind and name exists."""

    async def apply(self, obj: Manifest) -> Manifest:
        """Create or update an object (spec, labels, annotations); returns it as stored."""

    async def get(self, kind: Kind, name: str) -> Manifest | None: ...

    async def list(self, kind: Kind, labels: Mapping[str, str] | None = None) -> list[Manifest]:
        """Objects of a kind whose labels include all of ``labels``, leaving out those
        being deleted (:func:`is_terminating`)."""

    def revision(self, kind: Kind) -> str | None:
        """A token that changes whenever any object of ``kind`` is created, changed (spec,
        metadata or status) or deleted, read without listing: equal tokens mean an equal
        ``list``. ``None`` when the engine cannot tell that cheaply (callers list)."""

    async def delete(self, kind: Kind, name: str) -> bool:
        """Delete an object (never the data it archived); ``False`` if it did not exist."""

    async def last_archived_at(self, cluster: Manifest) -> datetime | None:
        """The newest instant a restore of this cluster can reach, if the engine knows it."""

    async def connection_info(self, cluster: Manifest) -> dict[str, Any] | None:
        """How to connect to the cluster's primary, where the engine can tell."""

    def primary(self) -> Primary:
        """Superuser access to a cluster's primary (restore points, catalog look-ups)."""

    def archive_bucket(self) -> Bucket | None:
        """The control plane's own access to the backup bucket, to list, restore and expire
        the archives of deleted incarnations (``None``: no credentials for it)."""
