"""The local engine: an object store that plays the API server, and a reconciler that plays
the CNPG operator with real PostgreSQL servers, barman-cloud and an S3 server.

Status is written in CNPG's shape (Cluster conditions and phase, Backup phases and times,
ObjectStore recovery windows), so the projections above cannot tell it from Kubernetes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from paas_pitr import s3
from paas_pitr.bucket import Bucket, S3Bucket
from paas_pitr.cnpg.projections import (
    PHASE_HEALTHY,
    PHASE_SETTING_UP_PRIMARY,
    RECOVERY_FAILED_REASON,
    archive_timeout_of,
)
from paas_pitr.engines.base import KINDS, ClusterListener, Kind, Manifest
from paas_pitr.engines.local import objectstorage
from paas_pitr.engines.local.archive import ArchiveConfig, own_archive, recovery_source
from paas_pitr.engines.local.backups import BackupController
from paas_pitr.engines.local.barman import Barman, barman_time
from paas_pitr.engines.local.instance import (
    PM_READY,
    PM_STOPPING,
    Instance,
    is_wal_shortage,
    missing_segment,
)
from paas_pitr.engines.local.store import ObjectStore
from paas_pitr.errors import (
    EngineError,
    InvalidInput,
    InvalidSetting,
    MissingSecret,
    ObjectStoreError,
    PitrError,
    RecoveryError,
)
from paas_pitr.postgres.binaries import PostgresBinaries, available_majors, find_binaries
from paas_pitr.postgres.server import OsUser, chown_tree, make_traversable
from paas_pitr.settings import Settings
from paas_pitr.timestamps import format_k8s_time, parse_k8s_time

log = logging.getLogger(__name__)

PHASE_UNRECOVERABLE = "Cluster is unrecoverable and needs manual intervention"
PHASE_STOPPED = "Cluster is stopped"
# CNPG's phase while instances that existed before come back (PhaseWaitingForInstancesToBeActive).
PHASE_WAITING_FOR_INSTANCES = "Waiting for the instances to become active"
# How long a restore waits for a postmaster that is not there and logged no error (one
# launched on a loaded machine may take a while to write postmaster.pid).
_SILENT_EXIT_GRACE_SECONDS = 30.0


class LocalEngine:
    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.state_dir / "local"
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = ObjectStore(self.root / "objects.sqlite3")
        self.secrets = objectstorage.SecretStore(self.root / "secrets.json")
        self.s3 = None if settings.s3_endpoint_url else objectstorage.EmbeddedS3(self.root / "s3")
        self.user = OsUser.for_servers(settings.pg_os_user)
        self.barman = Barman(self.user)
        self.instances: dict[str, Instance] = {}
        self._bootstraps: dict[str, asyncio.Task[None]] = {}
        self._last_beat: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._settle: asyncio.Task[None] | None = None
        self._loop_error: str | None = None
        # Called with ("MODIFIED", cluster) when a bootstrap (initdb or recovery) ends.
        self.listeners: list[ClusterListener] = []
        self.backups = BackupController(self)

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        os.chmod(self.root, 0o711)  # noqa: S103 - traverse only, for the server user
        make_traversable(self.root)
        if self.s3 is not None:
            await asyncio.to_thread(self.s3.start)
            self.secrets.set(self.settings.s3_secret_name, self.s3.credentials)
        elif self.settings.s3_access_key_id and self.settings.s3_secret_access_key:
            self.secrets.set(
                self.settings.s3_secret_name,
                {
                    s3.ACCESS_KEY: self.settings.s3_access_key_id.get_secret_value(),
                    s3.SECRET_KEY: self.settings.s3_secret_access_key.get_secret_value(),
                },
            )
        await self._check_tools()
        try:
            await self._ensure_bucket()
        except ObjectStoreError as exc:
            log.warning("object store not ready yet (will retry): %s", exc.message)
        self._mark_instances_down(
            PHASE_WAITING_FOR_INSTANCES, "InstanceStarting", "the instance is starting"
        )
        interrupted = self.backups.recover_interrupted()
        self._loop = asyncio.create_task(self._run(), name="local-engine-reconciler")
        if interrupted:
            self._settle = asyncio.create_task(
                self.backups.settle_interrupted(interrupted), name="settle-backups"
            )

    async def _check_tools(self) -> None:
        """The server user must be able to run what archive_command calls (gotcha 1)."""
        tool = self.barman.tool("barman-cloud-wal-archive")
        result = await self.barman.run([tool, "--version"], {}, timeout=60)
        if result.returncode != 0:
            who = self.user.name if self.user else "this user"
            raise InvalidSetting(
                f"{tool} cannot be run by {who} ({result.error_text}): build the virtualenv "
                "from a system-wide Python in a directory that user can traverse "
                "(`make` does when /usr/bin/python3 is 3.11 or newer)"
            )

    async def _ensure_bucket(self) -> None:
        credentials = self.secrets.get(self.settings.s3_secret_name) or {}
        await asyncio.to_thread(
            s3.ensure_bucket, self.endpoint_url(), credentials, self.settings.bucket
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
        for instance in self.instances.values():
            with contextlib.suppress(PitrError):
                await asyncio.to_thread(instance.server.stop)
        self._mark_instances_down(PHASE_STOPPED, "InstanceStopped", "the local engine stopped")
        if self.s3 is not None:
            await asyncio.to_thread(self.s3.stop)
        self.store.close()

    def _mark_instances_down(self, phase: str, reason: str, message: str) -> None:
        """Statuses written by an earlier run must not claim servers that are not up.

        The store outlives the process (as etcd outlives the operator); without this a
        restarted service would report an addon Ready while its server is still starting.
        Clusters still bootstrapping keep their phase: the bootstrap resumes and owns it.
        """
        for cluster in self.store.list("Cluster"):
            name = cluster["metadata"]["name"]
            status = cluster.get("status") or {}
            if status.get("phase") != PHASE_HEALTHY:
                continue
            self._set_phase(name, phase, message)
            self.store.update_status("Cluster", name, {"readyInstances": 0})
            self._set_condition(name, "Ready", False, reason, message)

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
        if not majors or (wanted.isdigit() and int(wanted) in majors):
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
        stored = self.store.put(obj, create_only=True)
        self._wake.set()
        return stored

    async def apply(self, obj: Manifest) -> Manifest:
        self._validate(obj)
        stored = self.store.put(obj)
        self._wake.set()
        return stored

    async def get(self, kind: Kind, name: str) -> Manifest | None:
        return self.store.get(kind, name)

    async def list(self, kind: Kind, labels: Mapping[str, str] | None = None) -> list[Manifest]:
        return self.store.list(kind, labels)

    async def delete(self, kind: Kind, name: str) -> bool:
        obj = self.store.get(kind, name)
        if obj is None:
            return False
        uid = obj["metadata"].get("uid")
        self.store.delete(kind, name)
        # Garbage collection of dependents, as Kubernetes does through ownerReferences.
        for dependent_kind in ("Backup", "ScheduledBackup"):
            for dependent in self.store.list(dependent_kind):
                owners = dependent["metadata"].get("ownerReferences") or []
                if any(o.get("uid") == uid for o in owners):
                    self.store.delete(dependent_kind, dependent["metadata"]["name"])
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

    def set_secret(self, name: str, data: dict[str, str]) -> None:
        """Create or change a Secret (the local stand-in for `kubectl create secret`)."""
        self.secrets.set(name, data)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # --- status helpers ------------------------------------------------------------

    def _set_condition(
        self, cluster_name: str, ctype: str, ok: bool, reason: str, message: str = ""
    ) -> None:
        current = self.store.get("Cluster", cluster_name)
        if current is None:
            return
        conditions = list((current.get("status") or {}).get("conditions") or [])
        status = "True" if ok else "False"
        for index, existing in enumerate(conditions):
            if existing.get("type") == ctype:
                changed = existing.get("status") != status
                conditions[index] = {
                    "type": ctype,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": format_k8s_time(datetime.now(UTC))
                    if changed
                    else existing.get("lastTransitionTime"),
                }
                break
        else:
            conditions.append(
                {
                    "type": ctype,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": format_k8s_time(datetime.now(UTC)),
                }
            )
        self.store.update_status("Cluster", cluster_name, {"conditions": conditions})

    def _set_phase(self, cluster_name: str, phase: str, reason: str | None = None) -> None:
        self.store.update_status(
            "Cluster",
            cluster_name,
            {"phase": phase, "phaseReason": reason or "", "instances": 1},
        )

    def _lookup(self, kind: str, name: str) -> Manifest | None:
        return self.store.get(kind, name)

    def _credentials(self, config: ArchiveConfig) -> dict[str, str]:
        credentials: dict[str, str] = {}
        for env, (secret_name, key) in config.secret_refs.items():
            secret = self.secrets.get(secret_name)
            if secret is None:
                raise MissingSecret(f'secret "{secret_name}" not found')
            if key not in secret:
                raise MissingSecret(f'secret "{secret_name}" has no key "{key}"')
            credentials[env] = secret[key]
        return credentials

    # --- the reconciler --------------------------------------------------------------

    async def _run(self) -> None:
        retry = self.settings.reconcile_retry
        failures = 0
        while True:
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
            self._wake.clear()
            # A pass every ``retry.initial`` seconds, at once when woken; after failed passes
            # the policy's growing delay.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), retry.delay(failures))

    async def _reconcile(self) -> None:
        if self.s3 is not None and not self.s3.running():
            log.warning("the embedded S3 server is down; restarting it")
            with contextlib.suppress(ObjectStoreError):
                await asyncio.to_thread(self.s3.start)
        clusters = self.store.list("Cluster")
        present = {c["metadata"]["name"] for c in clusters}
        for name in list(self.instances):
            if name not in present:
                await self._forget(name)
        for cluster in clusters:
            try:
                await self._reconcile_cluster(cluster)
            except PitrError as exc:
                log.warning("cluster %s: %s", cluster["metadata"]["name"], exc.message)
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
        # The archives in the bucket stay (as CNPG: deleting a Cluster never deletes backups).
        await asyncio.to_thread(instance.destroy)

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
        if state != "done":
            return
        self._write_archive_script(cluster, instance)
        if not instance.server.is_running():
            await asyncio.to_thread(instance.ensure_port)
            try:
                await asyncio.to_thread(instance.server.start)
            except PitrError as exc:
                self._set_phase(name, PHASE_UNRECOVERABLE, exc.message)
                self._set_condition(name, "Ready", False, "InstanceNotRunning", exc.message)
                return
            self._last_beat.pop(name, None)  # observe (and report Ready) right away
        await asyncio.to_thread(self._apply_config, cluster, instance)
        await self._observe(cluster, instance)

    def _settings_for(self, cluster: Manifest, instance: Instance) -> dict[str, str]:
        parameters = cluster.get("spec", {}).get("postgresql", {}).get("parameters") or {}
        return instance.server_settings(parameters)

    def _apply_config(self, cluster: Manifest, instance: Instance) -> None:
        settings = self._settings_for(cluster, instance)
        if instance.meta.get("settings") == settings:
            return
        instance.write_config(settings)
        instance.meta["settings"] = settings
        instance.save_meta()
        with instance.connect() as conn:
            conn.execute("SELECT pg_reload_conf()")

    def _write_archive_script(self, cluster: Manifest, instance: Instance) -> ArchiveConfig | None:
        try:
            config = own_archive(cluster, self._lookup)
        except InvalidInput as exc:
            instance.write_archive_script(None, None, None)
            self._set_condition(
                cluster["metadata"]["name"],
                "ContinuousArchiving",
                False,
                "ContinuousArchivingFailing",
                exc.message,
            )
            return None
        if config is None:
            instance.write_archive_script(None, None, None)
            return None
        try:
            credentials = self._credentials(config)
        except MissingSecret as exc:
            instance.write_archive_script(config, None, exc.message)
            return config
        instance.write_archive_script(config, credentials, None)
        return config

    async def _observe(self, cluster: Manifest, instance: Instance) -> None:
        """Heartbeat, archiver health and readiness, every ``heartbeat_seconds``."""
        name = cluster["metadata"]["name"]
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_beat.get(name, 0.0) < self.settings.heartbeat_seconds:
            return
        self._last_beat[name] = loop.time()
        archive = own_archive(cluster, self._lookup) if self._safe_archive(cluster) else None
        try:
            if archive is not None:
                await asyncio.to_thread(instance.heartbeat)
            stats = await asyncio.to_thread(instance.archiver_stats)
        except PitrError as exc:
            self._set_condition(name, "Ready", False, "InstanceNotReady", exc.message)
            return
        self._set_phase(name, PHASE_HEALTHY)
        self.store.update_status("Cluster", name, {"readyInstances": 1, "currentPrimary": name})
        self._set_condition(name, "Ready", True, "ClusterIsReady", "Cluster is Ready")
        if archive is None:
            return
        if stats.failing:
            message = instance.read_archive_error() or "barman-cloud-wal-archive failed"
            self._set_condition(
                name, "ContinuousArchiving", False, "ContinuousArchivingFailing", message
            )
        elif stats.last_archived_time is not None:
            self._set_condition(name, "ContinuousArchiving", True, "ContinuousArchivingSuccess")
            with contextlib.suppress(OSError):
                instance.archive_error_file.unlink()
        instance.update_latest_restorable(stats)
        if not stats.failing:
            timeout = archive_timeout_of(cluster).total_seconds()
            with contextlib.suppress(PitrError):
                await asyncio.to_thread(instance.enforce_archive_timeout, timeout, stats)

    def _safe_archive(self, cluster: Manifest) -> bool:
        try:
            return own_archive(cluster, self._lookup) is not None
        except InvalidInput:
            return False

    # --- bootstrap: initdb or recovery ------------------------------------------------

    async def _bootstrap(self, cluster: Manifest, instance: Instance) -> None:
        name = cluster["metadata"]["name"]
        recovering = bool(cluster.get("spec", {}).get("bootstrap", {}).get("recovery"))
        resumed = instance.bootstrap_state == "running"
        instance.set_bootstrap("running")
        self._set_phase(name, PHASE_SETTING_UP_PRIMARY)
        self._set_condition(name, "Ready", False, "SettingUpPrimary", "bootstrapping")
        try:
            if recovering:
                await self._recover(cluster, instance, resumed=resumed)
            else:
                await asyncio.to_thread(self._initdb, cluster, instance)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = exc.message if isinstance(exc, PitrError) else f"{type(exc).__name__}: {exc}"
            log.warning("bootstrap of %s failed: %s", name, message)
            instance.set_bootstrap("failed", message)
            with contextlib.suppress(PitrError):
                await asyncio.to_thread(instance.server.stop, mode="immediate")
            reason = RECOVERY_FAILED_REASON if recovering else "BootstrapFailed"
            self._set_condition(name, "Ready", False, reason, message)
            self._set_phase(
                name, PHASE_SETTING_UP_PRIMARY if recovering else PHASE_UNRECOVERABLE, message
            )
            await self._notify(name)
            return
        finally:
            self._bootstraps.pop(name, None)
        instance.set_bootstrap("done")
        self._last_beat.pop(name, None)
        if recovering:
            # Readiness is written by the next observation; report once it is.
            await self._observe(cluster, instance)
        await self._notify(name)
        self._wake.set()

    async def _notify(self, name: str) -> None:
        cluster = self.store.get("Cluster", name)
        if cluster is None:
            return
        for listener in self.listeners:
            try:
                await listener("MODIFIED", cluster)
            except Exception:
                log.exception("cluster listener failed")

    def _initdb(self, cluster: Manifest, instance: Instance) -> None:
        instance.prepare_root()
        if instance.server.data_dir.exists() and not instance.server.is_initialized():
            shutil.rmtree(instance.server.data_dir)
        if not instance.server.is_initialized():
            instance.server.initdb()
        self._write_archive_script(cluster, instance)
        settings = self._settings_for(cluster, instance)
        instance.write_config(settings)
        instance.meta["settings"] = settings
        instance.ensure_port()
        instance.server.start()
        instance.create_app_objects()

    async def _recover(self, cluster: Manifest, instance: Instance, *, resumed: bool) -> None:
        name = cluster["metadata"]["name"]
        source = recovery_source(cluster, self._lookup)
        assert source is not None
        credentials = self._credentials(source)
        target = cluster["spec"]["bootstrap"]["recovery"].get("recoveryTarget") or {}
        data_dir = instance.server.data_dir
        restored = resumed and (data_dir / "recovery.signal").exists()
        if not restored:
            backup_id = await self._choose_backup(source, credentials, target)
            own = self._write_archive_script(cluster, instance)
            if own is not None:
                await self._check_empty_archive(own)
            # wal.maxParallel of the recovery source; unset (the plugin form), the setting.
            parallel = source.wal_max_parallel or self.settings.recovery_wal_max_parallel
            await self._restore_base_backup(instance, source, credentials, backup_id)
            shutil.rmtree(instance.wal_spool, ignore_errors=True)  # no stale prefetch locks
            script = instance.write_restore_script(source, credentials, parallel)
            recovery = {
                "restore_command": f'\'{script}\' "%f" "%p"',
                "recovery_target_action": "promote",
                "recovery_target_timeline": "latest",
            }
            if target.get("targetTime"):
                recovery["recovery_target_time"] = str(target["targetTime"])
            elif target.get("targetImmediate"):
                recovery["recovery_target"] = "immediate"
            settings = self._settings_for(cluster, instance)
            # The restored postgresql.conf is the source's: our include file overrides its
            # port and archive_command, so nothing lands in the source's archive (gotcha 4).
            await asyncio.to_thread(instance.write_config, {**settings, **recovery})
            instance.meta["settings"] = None
            signal = data_dir / "recovery.signal"
            signal.touch()
            chown_tree(signal, self.user)
            for stale in ("standby.signal", "postmaster.pid"):
                (data_dir / stale).unlink(missing_ok=True)
            instance.save_meta()
        await asyncio.to_thread(instance.ensure_port)
        await self._wait_for_promotion(instance, source, credentials)
        shutil.rmtree(instance.wal_spool, ignore_errors=True)
        # Promoted: drop the recovery settings and hand out fresh app credentials.
        settings = self._settings_for(cluster, instance)
        await asyncio.to_thread(instance.write_config, settings)
        instance.meta["settings"] = settings
        await asyncio.to_thread(instance.create_app_objects)
        with instance.connect() as conn:
            conn.execute("SELECT pg_reload_conf()")
        log.info("recovery cluster %s promoted", name)

    async def _choose_backup(
        self, source: ArchiveConfig, credentials: dict[str, str], target: Mapping[str, Any]
    ) -> str:
        backups = [
            b
            for b in await self.barman.backup_list(source, credentials)
            if b.get("status") == "DONE"
        ]
        if target.get("backupID"):
            wanted = str(target["backupID"])
            if not any(b.get("backup_id") == wanted for b in backups):
                raise RecoveryError(f"backup {wanted!r} not found in {source.server_prefix}")
            return wanted
        moment = parse_k8s_time(target.get("targetTime")) if target.get("targetTime") else None
        candidates = [
            (end, str(b["backup_id"]))
            for b in backups
            if (end := barman_time(b, "end")) is not None and (moment is None or end <= moment)
        ]
        if not candidates:
            raise RecoveryError(
                f"no target backup found in {source.destination}/{source.server_name} "
                "(no completed backup ends before the target)"
            )
        return max(candidates)[1]

    async def _check_empty_archive(self, own: ArchiveConfig) -> None:
        bucket, _ = own.bucket_and_prefix
        credentials = self._credentials(own)
        endpoint = own.endpoint_url or self.endpoint_url()
        if await asyncio.to_thread(
            s3.has_objects, endpoint, credentials, bucket, own.server_prefix
        ):
            raise RecoveryError(
                f"WAL archive check failed for server {own.server_name}: Expected empty archive"
            )

    async def _restore_base_backup(
        self,
        instance: Instance,
        source: ArchiveConfig,
        credentials: dict[str, str],
        backup_id: str,
    ) -> None:
        instance.prepare_root()
        data_dir = instance.server.data_dir
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(mode=0o700)
        chown_tree(data_dir, self.user)
        result = await self.barman.run(
            [
                self.barman.tool("barman-cloud-restore"),
                *self.barman.endpoint_args(source),
                source.destination,
                source.server_name,
                backup_id,
                str(data_dir),
            ],
            credentials,
            timeout=self.settings.restore_timeout_seconds,
            cwd=instance.root,
        )
        if result.returncode != 0:
            raise RecoveryError(f"barman-cloud-restore failed: {result.error_text}")

    async def _wait_for_promotion(
        self, instance: Instance, source: ArchiveConfig, credentials: dict[str, str]
    ) -> None:
        """Start the restored server and return once it is promoted.

        ``pg_ctl -w`` returns at the first consistent state, long before the target is
        reached, so the engine watches itself, without connecting while the server starts:
        every such attempt makes PostgreSQL log a FATAL ("the database system is starting
        up") that used to hide the startup process's real error. The postmaster's status
        word in ``postmaster.pid`` says when connections are accepted; only then is
        ``pg_is_in_recovery()`` asked whether the server is promoted yet.

        Raises :class:`RecoveryError` with PostgreSQL's own reason (and the
        restore_command's error when WAL was missing) once the postmaster is gone, or
        when ``restore_timeout_seconds`` pass. A server still starting or stopping (as a
        resumed restore may find it) is waited for, never failed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.restore_timeout_seconds
        # A resumed restore may find the previous run's server still shutting down:
        # starting another over it would fail on its lock file.
        while await asyncio.to_thread(instance.postmaster_status) == PM_STOPPING:
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.5)
        started_at = time.time()
        log_offset = instance.log_size()
        try:
            await asyncio.to_thread(instance.server.start, wait=False)
        except PitrError as exc:
            logged = await asyncio.to_thread(instance.startup_failure, log_offset)
            raise RecoveryError(logged or exc.message) from exc
        gone_since: float | None = None
        while True:
            await asyncio.sleep(0.5)
            status = await asyncio.to_thread(instance.postmaster_status)
            if status is None:
                reason = await asyncio.to_thread(instance.startup_failure, log_offset)
                if reason is not None:
                    raise RecoveryError(
                        await self._with_restore_error(
                            instance, source, credentials, reason, started_at
                        )
                    )
                # No postmaster and nothing logged: on a loaded machine the postmaster
                # may not have written postmaster.pid yet. Give it time before saying it
                # died without a word.
                gone_since = gone_since if gone_since is not None else loop.time()
                if loop.time() - gone_since > _SILENT_EXIT_GRACE_SECONDS:
                    raise RecoveryError(
                        f"PostgreSQL exited during recovery without logging an error "
                        f"(see {instance.server.log_file})"
                    )
            else:
                gone_since = None
                if status == PM_READY:
                    with contextlib.suppress(PitrError):
                        if not await asyncio.to_thread(instance.in_recovery):
                            return
            if loop.time() > deadline:
                raise RecoveryError(
                    f"recovery did not finish within {self.settings.restore_timeout_seconds}s"
                )

    async def _with_restore_error(
        self,
        instance: Instance,
        source: ArchiveConfig,
        credentials: dict[str, str],
        reason: str,
        started_at: float,
    ) -> str:
        """``reason``, plus which WAL segment the archive could not provide and why, when
        recovery failed for want of WAL. PostgreSQL does not log restore_command failures
        (a missing file is how it learns the archive ends), so the restore script's last
        error, written during this attempt, is the only trace of them."""
        if not is_wal_shortage(reason):
            return reason
        error = await asyncio.to_thread(instance.restore_error, started_at)
        segment = missing_segment(error or "")
        if error is None or segment is None:
            return reason
        try:
            later = await asyncio.to_thread(
                self._archive_has_wal_after, source, credentials, segment
            )
        except ObjectStoreError:
            where = "could not be fetched from the archive"
        else:
            where = (
                "is missing from the archive, which holds later segments: the archive has a gap"
                if later
                else "is not in the archive, which holds no newer WAL"
            )
        return f"{reason}: WAL segment {segment} {where} (restore_command: {error})"

    def _archive_has_wal_after(
        self, source: ArchiveConfig, credentials: dict[str, str], segment: str
    ) -> bool:
        """Whether the source's WAL archive holds a segment of the same timeline after
        ``segment`` (barman-cloud keys: ``<server>/wals/<first 16 hex>/<name>[.ext]``)."""
        bucket, _ = source.bucket_and_prefix
        wals = f"{source.server_prefix}wals/"
        client = s3.s3_client(source.endpoint_url or self.endpoint_url(), credentials)
        try:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket,
                Prefix=wals,
                StartAfter=f"{wals}{segment[:16]}/{segment}",
                PaginationConfig={"MaxItems": 1000},
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = str(item["Key"]).rsplit("/", 1)[-1].split(".", 1)[0]
                    if len(name) == 24 and name[:8] == segment[:8] and name > segment:
                        return True
        except (BotoCoreError, ClientError) as exc:
            raise ObjectStoreError(f"cannot list {wals!r}: {exc}") from exc
        return False

    # --- readiness ---------------------------------------------------------------------

    def _cluster_ready(self, name: str) -> bool:
        instance = self.instances.get(name)
        return (
            instance is not None
            and instance.bootstrap_state == "done"
            and instance.server.is_running()
        )

    # --- the control plane's own access to the bucket ----------------------------------

    def archive_bucket(self) -> Bucket:
        """The backup bucket with the keys of the S3 Secret (see paas_pitr.archives).

        Endpoint and keys are read at every call: a restarted embedded server may listen
        on another port, and a changed Secret must heal this as it heals archiving."""
        secret_name = self.settings.s3_secret_name
        return S3Bucket(
            self.settings.bucket, self.endpoint_url, lambda: self.secrets.get(secret_name) or {}
        )
