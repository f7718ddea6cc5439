"""The local engine: an object database that plays the API server, and a reconciler that
plays the CNPG operator with real PostgreSQL servers, barman-cloud and an S3 server.

:class:`LocalEngine` keeps the lifecycle, the object API and the reconcile loop, and wires
the rooms that do the work through their public interfaces: :mod:`.status`, :mod:`.archive`,
:mod:`.archiving`, :mod:`.bootstrap` and :mod:`.recovery`, :mod:`.backups`. Its barman-cloud
runner and object database are constructor arguments (tests pass fakes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from paas_pitr.bucket import Bucket, S3Bucket
from paas_pitr.children import ChildRegistry
from paas_pitr.crashpoints import armed, crash_point
from paas_pitr.engines.base import KINDS, ClusterListener, Kind, Manifest
from paas_pitr.engines.local.archive import ArchiveResolver
from paas_pitr.engines.local.archivers import ArchiverSupervisor, archiver_wanted
from paas_pitr.engines.local.archiving import Archiving
from paas_pitr.engines.local.backups import BackupController
from paas_pitr.engines.local.barman import Barman
from paas_pitr.engines.local.bootstrap import Bootstrap, is_recovery
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.intents import Intents
from paas_pitr.engines.local.objects import ObjectDatabase
from paas_pitr.engines.local.objectstorage import EmbeddedS3, SecretStore
from paas_pitr.engines.local.primary import LocalPrimary
from paas_pitr.engines.local.recovery import Recovery
from paas_pitr.engines.local.status import (
    PHASE_STOPPED,
    PHASE_UNRECOVERABLE,
    PHASE_WAITING_FOR_INSTANCES,
    StatusWriter,
)
from paas_pitr.engines.local.switch import PHASE_HIBERNATED, DataSwitch
from paas_pitr.engines.local.walfetch import stop_prefetcher
from paas_pitr.errors import EngineError, InvalidInput, ObjectStoreError, PitrError
from paas_pitr.postgres.binaries import PostgresBinaries, available_majors, find_binaries
from paas_pitr.postgres.server import OsUser, make_traversable
from paas_pitr.postgres.shutdown import stop_servers
from paas_pitr.s3 import ACCESS_KEY, SECRET_KEY, ensure_bucket
from paas_pitr.settings import Settings
from paas_pitr.switchover.record import is_hibernated, is_unverified

log = logging.getLogger(__name__)


class LocalEngine:
    name = "local"

    def __init__(
        self,
        settings: Settings,
        *,
        barman: Barman | None = None,
        objects: ObjectDatabase | None = None,
        archivers: ArchiverSupervisor | None = None,
    ) -> None:
        self.settings = settings
        self.root = settings.state_dir / "local"
        self.root.mkdir(parents=True, exist_ok=True)
        # An injected object database is the caller's to close; the default one is ours.
        self._owns_objects = objects is None
        self.objects = objects or ObjectDatabase(self.root / "objects.sqlite3")
        self.secrets = SecretStore(self.root / "secrets.json")
        self.user = OsUser.for_servers(settings.pg_os_user)
        self.s3 = None if settings.s3_endpoint_url else EmbeddedS3(self.root / "s3", user=self.user)
        self.children = ChildRegistry(self.root / "children")
        self.barman = barman or Barman(self.user, children=self.children)
        # WAL archiver processes run real barman-cloud code: only with the real runner,
        # unless the caller passes a supervisor.
        if archivers is None and barman is None:
            archivers = ArchiverSupervisor(self.barman, self.user)
        self.instances: dict[str, Instance] = {}
        self._bootstraps: dict[str, asyncio.Task[None]] = {}
        self._last_beat: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._settle: asyncio.Task[None] | None = None
        self._loop_error: str | None = None
        # Called with ("MODIFIED", cluster) when a bootstrap (initdb or recovery) ends, and
        # once per run for each bootstrapped Cluster (see _announce).
        self.listeners: list[ClusterListener] = []
        self._announced: set[str] = set()
        self.status = StatusWriter(self.objects)
        self.archives = ArchiveResolver(
            self.objects.get,
            self.secrets,
            self.endpoint_url,
            is_embedded=self.s3.is_embedded_url if self.s3 is not None else lambda url: False,
            served_folder=self.s3.folder_of if self.s3 is not None else lambda d, c: None,
        )
        self.archiving = Archiving(self.archives, self.status, archivers)
        self.bootstrap = Bootstrap(
            self.status,
            self.archiving,
            Recovery(
                self.barman,
                self.archives,
                self.archiving,
                self.user,
                restore_timeout_seconds=settings.restore_timeout_seconds,
                wal_max_parallel=settings.recovery_wal_max_parallel,
                base_backup_parallel=settings.restore_base_backup_parallel,
            ),
        )
        self.backups = BackupController(
            self.objects,
            self.status,
            self.archives,
            self.barman,
            settings,
            self.instances,
            self.wake,
            Intents(self.root / "intents"),
        )
        # In-place restores: stop, swap the data directories, start (see .switch).
        self.switch = DataSwitch(
            self.root, self.objects, self.status, self.archiving, self._instance
        )

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        armed()  # an unknown crash point is refused before anything runs
        # Before anything is reconciled: no helper of a killed run may still write.
        await asyncio.to_thread(self.children.reap)
        os.chmod(self.root, 0o711)  # noqa: S103 - traverse only, for the server user
        make_traversable(self.root)
        # The server user traverses to its instance and socket; nobody lists them (the
        # folders are named after tenants' addons).
        for folder in (self.root / "instances", self.root / "run"):
            folder.mkdir(exist_ok=True)
            os.chmod(folder, 0o711)  # noqa: S103 - traverse only
        if self.s3 is not None:
            await asyncio.to_thread(self.s3.start)
            self.secrets.set(self.settings.s3_secret_name, self.s3.credentials)
        elif self.settings.s3_access_key_id and self.settings.s3_secret_access_key:
            self.secrets.set(
                self.settings.s3_secret_name,
                {
                    ACCESS_KEY: self.settings.s3_access_key_id.get_secret_value(),
                    SECRET_KEY: self.settings.s3_secret_access_key.get_secret_value(),
                },
            )
        await self.barman.check_runnable()
        try:
            await self._ensure_bucket()
        except ObjectStoreError as exc:
            log.warning("object store not ready yet (will retry): %s", exc.message)
        self.status.mark_instances_down(
            PHASE_WAITING_FOR_INSTANCES, "InstanceStarting", "the instance is starting"
        )
        # A switch a crash interrupted is finished before any server starts.
        for switch_id in self.switch.unfinished():
            try:
                await asyncio.to_thread(self.switch.run, switch_id, None, None)
            except PitrError as exc:
                log.warning("switch %s not finished yet: %s", switch_id, exc.message)
        interrupted = self.backups.recover_interrupted()
        self._loop = asyncio.create_task(self._run(), name="local-engine-reconciler")
        self._settle = asyncio.create_task(
            self.backups.settle_interrupted(interrupted), name="settle-backups"
        )

    async def _ensure_bucket(self) -> None:
        credentials = self.secrets.get(self.settings.s3_secret_name) or {}
        await asyncio.to_thread(
            ensure_bucket, self.endpoint_url(), credentials, self.settings.bucket
        )

    async def close(self) -> None:
        if self._settle is not None:
            self._settle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._settle
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        for task in [*self._bootstraps.values(), *self.backups.tasks.values()]:
            task.cancel()
        for task in [*self._bootstraps.values(), *self.backups.tasks.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # In parallel, each within a deadline: Ctrl-C on `serve` returns within seconds.
        await stop_servers(
            {name: instance.server for name, instance in self.instances.items()},
            self.settings.shutdown_deadline_seconds,
        )
        # After the servers: a recovering server's restore_command would start another.
        for instance in self.instances.values():
            await asyncio.to_thread(stop_prefetcher, instance.wal_spool)
        # After the servers: a server stopping archives its last segments through them.
        await asyncio.to_thread(self.archiving.close)
        self.status.mark_instances_down(
            PHASE_STOPPED, "InstanceStopped", "the local engine stopped"
        )
        # Last: a server's archiver uploads its final segment while the server stops.
        if self.s3 is not None:
            await asyncio.to_thread(self.s3.stop)
        if self._owns_objects:
            self.objects.close()

    async def check(self) -> None:
        if self._loop is None or self._loop.done():
            raise EngineError(f"the local engine is not running: {self._loop_error or 'stopped'}")
        if self.s3 is not None and not self.s3.running():
            raise EngineError("the embedded S3 server is down (restarting)")

    async def cnpg_mode(self) -> Literal["in-tree", "plugin"]:
        return self.settings.resolved_cnpg_mode()

    def endpoint_url(self) -> str:
        if self.settings.s3_endpoint_url:
            return self.settings.s3_endpoint_url
        assert self.s3 is not None
        return self.s3.url

    def default_version(self) -> str | None:
        """The newest PostgreSQL major installed here, unless the setting names one we have."""
        majors = available_majors(self.settings.pg_bin)
        wanted = self.settings.default_pg_version
        if not majors or (wanted.isascii() and wanted.isdigit() and int(wanted) in majors):
            return None
        native = available_majors(self.settings.pg_bin, embedded=False)
        return str(max(native or majors))

    # --- the object API ------------------------------------------------------------

    def _validate(self, obj: Manifest) -> None:
        if obj.get("kind") not in KINDS:
            raise InvalidInput(f"the local engine does not handle kind {obj.get('kind')!r}")
        if obj["kind"] == "Cluster":
            self._binaries_for(obj)

    def _binaries_for(self, cluster: Manifest) -> PostgresBinaries:
        image = str(cluster.get("spec", {}).get("imageName", ""))
        tag = image.rsplit(":", 1)[1] if ":" in image else self.settings.default_pg_version
        try:
            major = int(tag.split(".")[0].split("-")[0])
        except ValueError:
            raise InvalidInput(f"cannot tell the PostgreSQL major version of {image!r}") from None
        return find_binaries(major, self.settings.pg_bin)

    async def create(self, obj: Manifest) -> Manifest:
        self._validate(obj)
        stored = self.objects.put(obj, create_only=True)
        self._wake.set()
        return stored

    async def apply(self, obj: Manifest) -> Manifest:
        self._validate(obj)
        stored = self.objects.put(obj)
        self._wake.set()
        return stored

    async def get(self, kind: Kind, name: str) -> Manifest | None:
        return self.objects.get(kind, name)

    async def list(self, kind: Kind, labels: Mapping[str, str] | None = None) -> list[Manifest]:
        return self.objects.list(kind, labels)

    def revision(self, kind: Kind) -> str | None:
        return self.objects.revision(kind)

    async def delete(self, kind: Kind, name: str) -> bool:
        obj = self.objects.get(kind, name)
        if obj is None:
            return False
        uid = obj["metadata"].get("uid")
        self.objects.delete(kind, name)
        # Garbage collection of dependents, as Kubernetes does through ownerReferences.
        for dependent_kind in ("Backup", "ScheduledBackup"):
            for dependent in self.objects.list(dependent_kind):
                owners = dependent["metadata"].get("ownerReferences") or []
                if any(o.get("uid") == uid for o in owners):
                    self.objects.delete(dependent_kind, dependent["metadata"]["name"])
        self._wake.set()
        return True

    async def last_archived_at(self, cluster: Manifest) -> datetime | None:
        instance = self.instances.get(cluster["metadata"]["name"])
        return instance.latest_restorable if instance else None

    async def connection_info(self, cluster: Manifest) -> dict[str, Any] | None:
        instance = self.instances.get(cluster["metadata"]["name"])
        if instance is None or instance.bootstrap_state != "done":
            return None
        return instance.connection_info()

    async def switch_clusters(self, switch_id: str, active: Manifest, kept: Manifest) -> float:
        """Stop, swap the data directories, start: see :mod:`.switch`."""
        # A base backup under way would fail when its server stops: let it end first.
        running = self.backups.tasks.get(active["metadata"]["name"])
        if running is not None and not running.done():
            await asyncio.wait({running}, timeout=self.settings.backup_timeout_seconds)
        unavailable = await asyncio.to_thread(self.switch.run, switch_id, active, kept)
        for name in (active["metadata"]["name"], kept["metadata"]["name"]):
            self._last_beat.pop(name, None)
        self._wake.set()
        return unavailable

    async def admin_conninfo(self, cluster: Manifest) -> str | None:
        """The superuser's conninfo over the trusted unix socket (verification)."""
        instance = self.instances.get(cluster["metadata"]["name"])
        if instance is None or not instance.is_ready():
            return None
        return instance.server.admin_conninfo()

    def set_secret(self, name: str, data: dict[str, str]) -> None:
        """Create or change a Secret (the local stand-in for `kubectl create secret`)."""
        self.secrets.set(name, data)
        self._wake.set()

    def wake(self) -> None:
        """Run the reconciler now rather than at its next pass."""
        self._wake.set()

    def primary(self) -> LocalPrimary:
        return LocalPrimary(self.instances.get)

    def archive_bucket(self) -> Bucket:
        """The backup bucket with the keys of the S3 Secret (see paas_pitr.archives).

        Endpoint and keys are read at every call: a restarted embedded server may listen
        on another port, and a changed Secret must heal this as it heals archiving."""
        secret_name = self.settings.s3_secret_name
        return S3Bucket(
            self.settings.bucket, self.endpoint_url, lambda: self.secrets.get(secret_name) or {}
        )

    # --- the reconciler --------------------------------------------------------------

    async def _run(self) -> None:
        retry = self.settings.reconcile_retry
        failures = 0
        while True:
            # Cleared before the pass: an object changed during it gets a pass right after.
            self._wake.clear()
            try:
                await self._reconcile()
                self._loop_error = None
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The loop must outlive any one bad object or transient fault.
                self._loop_error = str(exc)
                failures += 1
                log.exception("local engine reconcile failed; retrying")
            # A pass every ``initial`` seconds or when woken; after failures, the policy's.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), retry.delay(failures))

    async def _reconcile(self) -> None:
        if self.s3 is not None and not self.s3.running():
            log.warning("the embedded S3 server is down; restarting it")
            with contextlib.suppress(ObjectStoreError):
                await asyncio.to_thread(self.s3.start)
        clusters = self.objects.list("Cluster")
        # Bootstraps (a restore's recovery) start first: the rest of a pass (forgetting a
        # deleted cluster, observing the others) may take seconds.
        for cluster in clusters:
            with contextlib.suppress(PitrError):  # reported by its own reconcile below
                if self._instance(cluster).bootstrap_state in ("pending", "running"):
                    await self._reconcile_cluster(cluster)
        present = {c["metadata"]["name"] for c in clusters}
        for name in list(self.instances):
            # A switch moving its data directory finishes first (it resumes on start).
            if name not in present and name not in self.switch.busy:
                await self._forget(name)
        for cluster in clusters:
            try:
                await self._reconcile_cluster(cluster)
            except PitrError as exc:
                log.warning("cluster %s: %s", cluster["metadata"]["name"], exc.message)
            await self._retire_archiver(cluster)
        await self.backups.reconcile_schedules()
        await self.backups.reconcile_backups()

    async def _forget(self, name: str) -> None:
        for tasks in (self._bootstraps, self.backups.tasks):
            task = tasks.pop(name, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        instance = self.instances.pop(name)
        await asyncio.to_thread(self.archiving.forget, name)
        await asyncio.to_thread(stop_prefetcher, instance.wal_spool)
        # The archives in the bucket stay (as CNPG: deleting a Cluster never deletes backups).
        await asyncio.to_thread(instance.destroy)

    async def _retire_archiver(self, cluster: Manifest) -> None:
        """Stop the WAL archiver of an instance whose server no longer runs or archives
        (:func:`archiver_wanted`). After the cluster's reconcile, which stops a hibernating
        server first: its last segments go through the archiver as it shuts down."""
        name = cluster["metadata"]["name"]
        instance = self.instances.get(name)
        if instance is None or name in self.switch.busy or not self.archiving.has_archiver(name):
            return
        running = await asyncio.to_thread(instance.server.is_running)
        if not archiver_wanted(
            instance.bootstrap_state, hibernated=is_hibernated(cluster), server_running=running
        ):
            await asyncio.to_thread(self.archiving.forget, name)

    def _instance(self, cluster: Manifest) -> Instance:
        name = cluster["metadata"]["name"]
        instance = self.instances.get(name)
        if instance is None:
            instance = Instance(
                name,
                self.root / "instances" / name,
                self.root / "run",
                self._binaries_for(cluster),
                self.user,
                self.barman,
            )
            self.instances[name] = instance
        return instance

    async def _reconcile_cluster(self, cluster: Manifest) -> None:
        name = cluster["metadata"]["name"]
        instance = self._instance(cluster)
        state = instance.bootstrap_state
        if state in ("pending", "running"):
            if name not in self._bootstraps:
                self._bootstraps[name] = asyncio.create_task(
                    self._bootstrap(cluster, instance), name=f"bootstrap-{name}"
                )
            return
        if state == "failed":
            if not self.bootstrap.failure_reported(cluster):
                self.bootstrap.report_failure(cluster, instance)
            await self._announce(name)
            return
        if state != "done" or name in self.switch.busy:
            return
        if is_hibernated(cluster):
            # CNPG's hibernation: the server goes, the data stays.
            if instance.server.is_running():
                await asyncio.to_thread(instance.server.stop)
                self.status.set_phase(name, PHASE_HIBERNATED)
            return
        self.archiving.configure(cluster, instance)
        if not instance.server.is_running():
            await asyncio.to_thread(instance.ensure_port)
            try:
                await asyncio.to_thread(instance.server.start)
            except PitrError as exc:
                self.status.set_phase(name, PHASE_UNRECOVERABLE, exc.message)
                self.status.set_condition(name, "Ready", False, "InstanceNotRunning", exc.message)
                return
            self._last_beat.pop(name, None)  # observe (and report Ready) right away
            await asyncio.to_thread(instance.rotate_app_password_if_moved)
        await asyncio.to_thread(instance.apply_settings, instance.settings_for(cluster))
        await self._observe(cluster, instance)
        await self._announce(name)

    async def _observe(self, cluster: Manifest, instance: Instance) -> None:
        """Heartbeat, archiver health and readiness, every ``heartbeat_seconds``."""
        name = cluster["metadata"]["name"]
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_beat.get(name, 0.0) < self.settings.heartbeat_seconds:
            return
        self._last_beat[name] = loop.time()
        archive = self.archiving.archive_of(cluster)
        try:
            if archive is not None and not is_unverified(cluster):
                await asyncio.to_thread(instance.heartbeat)
            stats = await asyncio.to_thread(instance.archiver_stats)
        except PitrError as exc:
            self.status.set_condition(name, "Ready", False, "InstanceNotReady", exc.message)
            return
        self.status.cluster_ready(name)
        if archive is not None:
            await self.archiving.report(cluster, instance, stats)

    async def _bootstrap(self, cluster: Manifest, instance: Instance) -> None:
        """Run the bootstrap (see :mod:`.bootstrap`), then tell the listeners it ended."""
        name = cluster["metadata"]["name"]
        try:
            done = await self.bootstrap.run(cluster, instance)
        finally:
            self._bootstraps.pop(name, None)
        if done:
            self._last_beat.pop(name, None)
            if is_recovery(cluster):
                # Readiness is written by the next observation; report once it is.
                await self._observe(cluster, instance)
                crash_point("restore.status_written")
        await self._notify(name)
        if done:
            self._wake.set()

    async def _announce(self, name: str) -> None:
        """Tell the listeners a bootstrap's outcome once per run, once the status says it
        (Ready, or failed): a service killed between writing an outcome and telling them
        (they audit it) tells them at its next start; they ignore what they already know."""
        if name in self._announced:
            return
        cluster = self.objects.get("Cluster", name)
        conditions = ((cluster or {}).get("status") or {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        if cluster is not None and (ready or self.bootstrap.failure_reported(cluster)):
            self._announced.add(name)
            await self._notify(name)

    async def _notify(self, name: str) -> None:
        cluster = self.objects.get("Cluster", name)
        if cluster is None:
            return
        for listener in self.listeners:
            try:
                await listener("MODIFIED", cluster)
            except Exception:
                log.exception("cluster listener failed")
