"""The Kubernetes engine: CNPG (and the Barman Cloud Plugin) do the work, we apply objects.

Kubernetes is the source of truth: the control plane keeps no state, so several replicas
can serve side by side. Restores are recovery Clusters labelled with their restore id and
read back from the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from paas_pitr.bucket import Bucket, S3Bucket
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.connection import connection_host, connection_secret_name
from paas_pitr.cnpg.projections import archive_server_name, uses_plugin
from paas_pitr.drills.access import KubernetesAccess
from paas_pitr.engines.base import ClusterListener, Kind, Manifest, is_terminating
from paas_pitr.engines.kubernetes.aliases import AliasStore
from paas_pitr.engines.kubernetes.api import (
    KubeApi,
    KubeApiError,
    WatchExpired,
    is_transport_error,
)
from paas_pitr.engines.kubernetes.primary import KubernetesPrimary
from paas_pitr.engines.kubernetes.switching import (
    Connections,
    finish_pending,
    is_addon,
    switch,
    with_owner_secret,
    writable,
)
from paas_pitr.errors import Conflict, EngineError, InvalidSetting, PitrError
from paas_pitr.s3 import ACCESS_KEY, SECRET_KEY, newest_object_time
from paas_pitr.settings import Settings

log = logging.getLogger(__name__)

CLUSTER_CRD = "clusters.postgresql.cnpg.io"
OBJECT_STORE_CRD = "objectstores.barmancloud.cnpg.io"
MODE_CACHE_SECONDS = 300.0


class WalArchiveReader(Protocol):
    """Reads the newest WAL object of a server folder (``None`` when it cannot tell)."""

    async def newest_wal(self, destination: str, server_name: str) -> datetime | None: ...


class S3WalArchiveReader:
    """Lists ``<destination>/<server>/wals/`` with the control plane's own S3 credentials."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str) -> None:
        self.endpoint = endpoint
        self.credentials = {ACCESS_KEY: access_key, SECRET_KEY: secret_key}

    async def newest_wal(self, destination: str, server_name: str) -> datetime | None:
        bucket, _, prefix = destination.removeprefix("s3://").partition("/")
        key_prefix = f"{prefix.strip('/')}/{server_name}/wals/".lstrip("/")
        try:
            stamp = await asyncio.to_thread(
                newest_object_time, self.endpoint, self.credentials, bucket, key_prefix
            )
        except PitrError as exc:
            log.warning("cannot read the WAL archive of %s: %s", server_name, exc.message)
            return None
        return datetime.fromtimestamp(stamp, UTC) if stamp is not None else None


class KubernetesEngine:
    name = "kubernetes"

    def __init__(
        self,
        settings: Settings,
        *,
        api: KubeApi | None = None,
        api_factory: Callable[[], KubeApi] | None = None,
        archive_reader: WalArchiveReader | None = None,
        bucket: Bucket | None = None,
    ) -> None:
        self.settings = settings
        self._api = api
        # An injected client is the caller's to close; one we build is ours, rebuilt after
        # close() so the engine can start again (in whichever event loop runs it then).
        self._owns_api = api is None
        self._api_factory = api_factory or (
            lambda: KubeApi.from_environment(
                settings.namespace,
                retry=settings.kube_retry,
                request_timeout=settings.kube_request_timeout_seconds,
            )
        )
        self.archive_reader = archive_reader
        if archive_reader is None and settings.s3_access_key_id and settings.s3_secret_access_key:
            self.archive_reader = S3WalArchiveReader(
                settings.effective_s3_endpoint_url,
                settings.s3_access_key_id.get_secret_value(),
                settings.s3_secret_access_key.get_secret_value(),
            )
        self.bucket = bucket
        if bucket is None and settings.s3_access_key_id and settings.s3_secret_access_key:
            # The same keys as the WAL reader: read the catalog, write the index of deleted
            # incarnations, delete an expired one's folder (see paas_pitr.archives).
            self.bucket = S3Bucket(
                settings.bucket,
                settings.effective_s3_endpoint_url,
                {
                    ACCESS_KEY: settings.s3_access_key_id.get_secret_value(),
                    SECRET_KEY: settings.s3_secret_access_key.get_secret_value(),
                },
            )
        self._mode: tuple[Literal["in-tree", "plugin"], float] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.listeners: list[ClusterListener] = []
        self.watch_restarts = 0

    @property
    def api(self) -> KubeApi:
        if self._api is None:
            self._api = self._api_factory()
        return self._api

    @property
    def aliases(self) -> AliasStore:
        """Which Cluster holds which name's data after in-place switches (see .aliases)."""
        return AliasStore(self.api)

    @property
    def connections(self) -> Connections:
        return Connections(self)

    async def start(self) -> None:
        try:
            # A switch a killed process left with its names flipped is finished first.
            await finish_pending(self)
        except PitrError as exc:
            log.warning("unfinished in-place switch not finished yet: %s", exc.message)
        self._watch_task = asyncio.create_task(self._watch_clusters(), name="cluster-watch")

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        if self._api is not None and self._owns_api:
            await self._api.close()
            self._api = None

    async def check(self) -> None:
        await self.api.request("GET", "/version")

    # --- which CNPG form ---------------------------------------------------------------

    async def crd_present(self, name: str) -> bool:
        return (
            await self.api.get_path(
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            )
            is not None
        )

    async def cnpg_mode(self) -> Literal["in-tree", "plugin"]:
        configured = self.settings.cnpg_mode
        if configured != "auto":
            return configured
        loop = asyncio.get_running_loop()
        if self._mode is not None and loop.time() - self._mode[1] < MODE_CACHE_SECONDS:
            return self._mode[0]
        if not await self.crd_present(CLUSTER_CRD):
            raise InvalidSetting(
                f"the CloudNativePG CRDs are not installed ({CLUSTER_CRD} not found): install "
                "the CNPG operator first (run `paas-pitr doctor` for details)"
            )
        mode: Literal["in-tree", "plugin"] = (
            "plugin" if await self.crd_present(OBJECT_STORE_CRD) else "in-tree"
        )
        self._mode = (mode, loop.time())
        return mode

    def endpoint_url(self) -> str:
        return self.settings.effective_s3_endpoint_url

    def default_version(self) -> str | None:
        return None

    # --- objects -----------------------------------------------------------------------

    async def create(self, obj: Manifest) -> Manifest:
        if obj.get("kind") == "Cluster":
            obj = with_owner_secret(obj)
            name = obj["metadata"]["name"]
            aliases = await self.aliases.load()
            if aliases.physical(name) != name:
                # The name stands for another Cluster's data (or for a deleted one's
                # Cluster that another name now stands for).
                raise Conflict(f"Cluster {name!r} already exists")
            if await self.api.get("Cluster", name) is not None:
                raise Conflict(f"Cluster {name!r} already exists")
            if is_addon(obj):
                await self.connections.apply(obj, name)
            # Applied, not POSTed: every field then belongs to the apply manager, so when a
            # switch moves another name to this Cluster the fields of its own name go (an
            # apply never drops the fields a POST set). Names are random or keyed by the
            # caller, so the gap between the look and the apply matters for nobody.
            return await self.api.apply(obj, force=False)
        aliases = await self.aliases.load()
        return aliases.logical(await self.api.create(aliases.physical_obj(obj)))

    async def apply(self, obj: Manifest) -> Manifest:
        aliases = await self.aliases.load()
        if obj.get("kind") != "Cluster":
            return aliases.logical(await self.api.apply(aliases.physical_obj(obj)))
        obj = with_owner_secret(writable(obj))
        name = obj["metadata"]["name"]
        physical = aliases.physical(name)
        if physical is None:
            raise Conflict(f"Cluster {name!r} is held by another name since a switch")
        stored = await self.api.get("Cluster", physical) if physical != name else None
        if is_addon(obj):
            await self.connections.apply(obj, physical)
        return aliases.logical(await self.api.apply(aliases.physical_obj(obj, stored)))

    async def get(self, kind: Kind, name: str) -> Manifest | None:
        aliases = await self.aliases.load()
        physical = aliases.physical(name) if kind == "Cluster" else name
        if physical is None:
            return None
        found = await self.api.get(kind, physical)
        if found is not None and kind == "Backup":
            await self._explain_failure(found)
        return aliases.logical(found) if found is not None else None

    async def list(self, kind: Kind, labels: Mapping[str, str] | None = None) -> list[Manifest]:
        aliases = await self.aliases.load()
        items, _ = await self.api.list_objects(kind, aliases.selector(kind, labels))
        # Deleted objects a finalizer still holds are on their way out: listings (restores,
        # limits, backups) must not count them.
        items = [item for item in items if not is_terminating(item)]
        if kind == "Backup":
            for item in items:
                await self._explain_failure(item)
        return [aliases.logical(item) for item in items]

    def revision(self, kind: Kind) -> str | None:
        # Knowing would take a watch per kind; callers list instead (one request).
        return None

    async def _explain_failure(self, backup: Manifest) -> None:
        """A failed Backup without an error: the operator's Events (BackupFailed) say why."""
        status = backup.setdefault("status", {})
        if status.get("phase") != "failed" or status.get("error"):
            return
        try:
            events = await self.api.events_for("Backup", backup["metadata"]["name"])
        except PitrError:
            return
        warnings = [e for e in events if e.get("type") == "Warning" and e.get("message")]
        if warnings:
            newest = max(
                warnings, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or "")
            )
            status["error"] = f"{newest.get('reason', 'Warning')}: {newest['message']}"

    async def delete(self, kind: Kind, name: str) -> bool:
        if kind != "Cluster":
            return await self.api.delete(kind, name)
        aliases = await self.aliases.load()
        physical = aliases.physical(name)
        if physical is None:
            return False
        stored = await self.api.get("Cluster", physical)
        deleted = await self.api.delete("Cluster", physical)
        if name in aliases.held_by:
            await self.aliases.update({name: None})
        if stored is not None and is_addon(stored):
            await self.connections.delete(name)
        return deleted

    # --- in-place switches -------------------------------------------------------------

    async def switch_clusters(self, switch_id: str, active: Manifest, kept: Manifest) -> float:
        """The addon's name moves to the Cluster holding ``active``'s incarnation, the
        other is hibernated, the connection Service and Secret follow (see .switching).
        Idempotent: every step is decided from what is stored, whatever ``switch_id``."""
        unavailable, _ = await switch(self, active, kept)
        return unavailable

    async def admin_conninfo(self, cluster: Manifest) -> str | None:
        """The conninfo of the app Secret CNPG generates for the Cluster holding
        ``cluster``'s data (``None`` until the operator has written it)."""
        aliases = await self.aliases.load()
        physical = aliases.physical(cluster["metadata"]["name"])
        if physical is None:
            return None
        named = {**cluster, "metadata": {**cluster["metadata"], "name": physical}}
        return await KubernetesAccess(self.api).superuser_conninfo(named)

    async def last_archived_at(self, cluster: Manifest) -> datetime | None:
        if self.archive_reader is None:
            return None
        server = archive_server_name(cluster)
        destination = await self._destination(cluster)
        if server is None or destination is None:
            return None
        return await self.archive_reader.newest_wal(destination, server)

    async def _destination(self, cluster: Manifest) -> str | None:
        if uses_plugin(cluster):
            for plugin in cluster.get("spec", {}).get("plugins") or []:
                if plugin.get("name") == naming.BARMAN_PLUGIN_NAME:
                    store_name = (plugin.get("parameters") or {}).get("barmanObjectName")
                    store = (
                        await self.api.get("ObjectStore", str(store_name)) if store_name else None
                    )
                    if store:
                        return str(store["spec"]["configuration"]["destinationPath"])
            return None
        store = (cluster.get("spec", {}).get("backup") or {}).get("barmanObjectStore") or {}
        destination = store.get("destinationPath")
        return str(destination) if destination else None

    def primary(self) -> KubernetesPrimary:
        return KubernetesPrimary(self.api, self.settings.namespace)

    def archive_bucket(self) -> Bucket | None:
        """``None`` unless ``PAAS_PITR_S3_ACCESS_KEY_ID`` / ``..._SECRET_ACCESS_KEY`` are set:
        the Secret the clusters use lives in the namespace, not with the control plane."""
        return self.bucket

    async def connection_info(self, cluster: Manifest) -> dict[str, Any] | None:
        name = cluster["metadata"]["name"]
        namespace = cluster["metadata"].get("namespace", self.settings.namespace)
        if is_addon(cluster):
            # What the PaaS binds to: paas-pitr's Service and Secret, which follow switches.
            return {
                "host": connection_host(name, namespace),
                "port": 5432,
                "database": "app",
                "user": "app",
                "secret": connection_secret_name(name),
            }
        # CNPG's conventions: the read-write service and the app user's Secret.
        return {
            "host": f"{name}-rw.{namespace}.svc",
            "port": 5432,
            "database": "app",
            "user": "app",
            "secret": f"{name}-app",
        }

    # --- watching clusters -------------------------------------------------------------

    async def _watch_clusters(self) -> None:
        """List, then watch from the list's resourceVersion; on 410 Gone or a dropped
        stream, re-list and resume (as Patroni's Kubernetes backend does)."""
        labels = {naming.LABEL_MANAGED_BY: naming.MANAGER}
        retry = self.settings.kube_watch_retry
        failures = 0
        while True:
            try:
                items, version = await self.api.list_objects("Cluster", labels)
                for item in items:
                    await self._notify("SYNC", item)
                while True:
                    async for event_type, obj in self.api.watch("Cluster", version, labels):
                        version = str(obj.get("metadata", {}).get("resourceVersion", version))
                        if event_type != "BOOKMARK":
                            await self._notify(event_type, obj)
                    failures = 0  # the server closed the stream: resume from where we were
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                self.watch_restarts += 1
                log.info("cluster watch expired (410 Gone); re-listing")
                continue
            except Exception as exc:
                if not isinstance(exc, (PitrError, KubeApiError)) and not (
                    is_transport_error(exc) or isinstance(exc, (OSError, EngineError))
                ):
                    log.exception("cluster watch failed")
                else:
                    log.info("cluster watch interrupted (%r); re-listing", exc)
                self.watch_restarts += 1
                failures += 1
                await asyncio.sleep(retry.delay(failures))

    async def _notify(self, event_type: str, obj: Manifest) -> None:
        if self.listeners:
            try:
                obj = (await self.aliases.load()).logical(obj)
            except PitrError as exc:
                log.info("cluster alias map unreadable (%s); event under its own name", exc)
        for listener in self.listeners:
            try:
                await listener(event_type, obj)
            except Exception:
                log.exception("cluster listener failed")
