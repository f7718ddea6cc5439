"""Backups on the local engine: ScheduledBackups firing, Backups run one at a time per
cluster with barman-cloud-backup, retention after each, and the recovery window written
back into the Cluster (in-tree) or ObjectStore (plugin) status, as CNPG does.

The controller works on what it is given (the object database, the status writer, the
archive resolver, the barman-cloud runner and the instances), never on the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.schedule import next_run
from paas_pitr.crashpoints import crash_point
from paas_pitr.engines.base import Manifest
from paas_pitr.engines.local.archive import ArchiveConfig, ArchiveResolver
from paas_pitr.engines.local.barman import Barman
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.intents import Intents
from paas_pitr.engines.local.objects import ObjectDatabase
from paas_pitr.engines.local.status import StatusWriter, completed_backup
from paas_pitr.errors import InvalidInput, ObjectStoreError, PitrError
from paas_pitr.settings import Settings
from paas_pitr.timestamps import format_k8s_time, parse_k8s_time

log = logging.getLogger(__name__)


class BackupController:
    def __init__(
        self,
        objects: ObjectDatabase,
        status: StatusWriter,
        archives: ArchiveResolver,
        barman: Barman,
        settings: Settings,
        instances: Mapping[str, Instance],
        wake: Callable[[], None],
        intents: Intents | None = None,
    ) -> None:
        self.objects = objects
        # Retention, once a backup is complete, is recorded before it runs: a start after
        # a crash mid-retention finishes it (its Backups and window match the archive).
        self.intents = intents
        self.status = status
        self.archives = archives
        self.barman = barman
        self.settings = settings
        # The engine's instances, by cluster name (read, never changed, here).
        self.instances = instances
        # Called when a backup ends, so the next one of its cluster starts without waiting.
        self.wake = wake
        # One running backup task per cluster: CNPG runs a cluster's backups one at a time.
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def _ready(self, cluster_name: str) -> bool:
        instance = self.instances.get(cluster_name)
        return instance is not None and instance.is_ready()

    async def reconcile_schedules(self, now: datetime | None = None) -> None:
        """Create the Backup of every ScheduledBackup that is due (``immediate`` ones at
        once), and record when each fires next."""
        now = now or datetime.now(UTC)
        for scheduled in self.objects.list("ScheduledBackup"):
            spec = scheduled.get("spec") or {}
            name = scheduled["metadata"]["name"]
            cluster_name = (spec.get("cluster") or {}).get("name", "")
            cluster = self.objects.get("Cluster", cluster_name)
            if spec.get("suspend") or cluster is None or not self._ready(cluster_name):
                continue
            status = scheduled.get("status") or {}
            last = parse_k8s_time(status.get("lastScheduleTime"))
            try:
                if last is None:
                    due = spec.get("immediate") or now >= next_run(
                        spec["schedule"],
                        parse_k8s_time(scheduled["metadata"].get("creationTimestamp")) or now,
                    )
                else:
                    due = now >= next_run(spec["schedule"], last)
                upcoming = next_run(spec["schedule"], now)
            except (PitrError, KeyError) as exc:
                message = exc.message if isinstance(exc, PitrError) else "schedule missing"
                self.status.update_scheduled_backup(name, {"error": message})
                continue
            self.status.update_scheduled_backup(
                name,
                {
                    "lastCheckTime": format_k8s_time(now),
                    "nextScheduleTime": format_k8s_time(upcoming),
                },
            )
            if not due:
                continue
            with contextlib.suppress(PitrError):
                self.objects.put(
                    self._scheduled_backup(scheduled, cluster, now, first=last is None),
                    create_only=True,
                )
            self.status.update_scheduled_backup(name, {"lastScheduleTime": format_k8s_time(now)})

    @staticmethod
    def _scheduled_backup(
        scheduled: Manifest, cluster: Manifest, now: datetime, *, first: bool
    ) -> Manifest:
        """The Backup a ScheduledBackup creates when it fires at ``now`` (``first``: it
        never fired before)."""
        spec = scheduled.get("spec") or {}
        name = scheduled["metadata"]["name"]
        cluster_name = cluster["metadata"]["name"]
        labels = {
            **(scheduled["metadata"].get("labels") or {}),
            naming.CNPG_CLUSTER_LABEL: cluster_name,
            "cnpg.io/scheduled-backup": name,
        }
        if first and spec.get("immediate"):
            labels["cnpg.io/immediateBackup"] = "true"
        owner_kind = spec.get("backupOwnerReference", "none")
        owner = cluster if owner_kind == "cluster" else scheduled if owner_kind == "self" else None
        metadata: dict[str, Any] = {
            "name": f"{name}-{now:%Y%m%d%H%M%S}",
            "namespace": scheduled["metadata"].get("namespace"),
            "labels": labels,
        }
        if owner is not None:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                }
            ]
        backup_spec = {"cluster": {"name": cluster_name}, "method": spec.get("method")}
        if spec.get("pluginConfiguration"):
            backup_spec["pluginConfiguration"] = spec["pluginConfiguration"]
        return {
            "apiVersion": naming.API_VERSION,
            "kind": "Backup",
            "metadata": metadata,
            "spec": backup_spec,
        }

    def recover_interrupted(self) -> list[str]:
        """Backups that were running when the control plane stopped: their
        barman-cloud-backup died with it, and ``settle_interrupted`` decides, from the
        catalog, what each became."""
        return [
            backup["metadata"]["name"]
            for backup in self.objects.list("Backup")
            if (backup.get("status") or {}).get("phase") in ("started", "running")
        ]

    async def settle_interrupted(
        self,
        names: Sequence[str],
        *,
        retry_seconds: float = 2.0,
        give_up_seconds: float | None = None,
    ) -> None:
        """An interrupted barman-cloud-backup may have finished before the service died
        (its catalog entry DONE, the Backup's status not yet written): adopted, completed.
        Otherwise the Backup failed as interrupted, and an entry left in STARTED state
        (barman-cloud never cleans one up) is deleted. While the catalog cannot be read
        (S3 starting), the Backup keeps reading running and the catalog is asked again
        every ``retry_seconds``: a verdict without it could fail a completed backup. After
        ``give_up_seconds`` (default: the backup timeout) it fails as interrupted, never
        left running. Then the retention a crash interrupted runs again."""
        loop = asyncio.get_running_loop()
        give_up = (
            self.settings.backup_timeout_seconds if give_up_seconds is None else give_up_seconds
        )
        deadline = loop.time() + give_up
        for name in names:
            while True:
                try:
                    await self._settle(name)
                    break
                except PitrError as exc:
                    if loop.time() >= deadline:
                        log.warning("cannot settle interrupted backup %s: %s", name, exc.message)
                        self._interrupted(name)
                        break
                    log.warning("cannot settle interrupted backup %s yet: %s", name, exc.message)
                    await asyncio.sleep(retry_seconds)
        await self._resume_retention()

    def _interrupted(self, name: str) -> None:
        """Fail the interrupted Backup ``name``."""
        backup = self.objects.get("Backup", name)
        if backup is None:
            return
        method = backup.get("spec", {}).get("method") or "barmanObjectStore"
        cluster_name = (backup.get("spec", {}).get("cluster") or {}).get("name", "")
        message = "interrupted by a restart of the control plane"
        if self.objects.get("Cluster", cluster_name) is None:
            stopped = format_k8s_time(datetime.now(UTC))
            self.status.update_backup(
                name, {"phase": "failed", "error": message, "stoppedAt": stopped}
            )
        else:
            self.status.backup_failed(cluster_name, name, message, method)

    async def _settle(self, name: str) -> None:
        backup = self.objects.get("Backup", name)
        cluster_name = ((backup or {}).get("spec", {}).get("cluster") or {}).get("name", "")
        cluster = self.objects.get("Cluster", cluster_name)
        if backup is None:
            return
        method = backup.get("spec", {}).get("method") or "barmanObjectStore"
        config = self.archives.own(cluster) if cluster is not None else None
        entry = None
        if config is not None:
            credentials = self.archives.credentials(config)
            catalog = await self.barman.backup_list(config, credentials)
            entry = next((b for b in catalog if b.get("backup_name") == name), None)
            if entry is not None and entry.get("status") == "DONE":
                self.status.update_backup(name, completed_backup(entry, name, method, config, None))
                self.status.set_condition(
                    cluster_name, "LastBackupSucceeded", True, "LastBackupSucceeded"
                )
                log.info("backup %s had completed before the restart; adopted", name)
                return
            if entry is not None:
                await self._delete_backup(config, credentials, str(entry["backup_id"]))
                log.info("deleted the leftovers of interrupted backup %s", name)
        self._interrupted(name)

    async def _resume_retention(self) -> None:
        if self.intents is None:
            return
        for key, intent in self.intents.pending("retention-").items():
            cluster = self.objects.get("Cluster", str(intent.get("cluster", "")))
            config = self.archives.own(cluster) if cluster is not None else None
            if cluster is None or config is None:
                self.intents.done(key)
                continue
            try:
                await self.enforce_retention(cluster, config, self.archives.credentials(config))
            except PitrError as exc:
                log.warning("interrupted retention of %s failed again: %s", key, exc.message)
                continue
            self.intents.done(key)
            log.info("finished the retention a restart interrupted (%s)", key)

    async def reconcile_backups(self) -> None:
        """Start the oldest pending Backup of each ready cluster that runs none."""
        for backup in sorted(
            self.objects.list("Backup"),
            key=lambda b: b["metadata"].get("creationTimestamp", ""),
        ):
            status = backup.get("status") or {}
            if status.get("phase") not in (None, "", "pending"):
                continue
            name = backup["metadata"]["name"]
            cluster_name = (backup.get("spec", {}).get("cluster") or {}).get("name", "")
            cluster = self.objects.get("Cluster", cluster_name)
            if cluster is None:
                self.status.update_backup(
                    name, {"phase": "failed", "error": f"cluster {cluster_name!r} not found"}
                )
                continue
            if not status.get("phase"):
                self.status.update_backup(name, {"phase": "pending"})
            if cluster_name in self.tasks or not self._ready(cluster_name):
                continue  # one backup at a time per cluster, in creation order
            crash_point("backup.requested")
            self.tasks[cluster_name] = asyncio.create_task(
                self._take_backup(cluster, backup), name=f"backup-{name}"
            )

    async def _take_backup(self, cluster: Manifest, backup: Manifest) -> None:
        cluster_name = cluster["metadata"]["name"]
        name = backup["metadata"]["name"]
        method = backup.get("spec", {}).get("method") or "barmanObjectStore"
        try:
            await self._run_backup(cluster, backup, method)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = exc.message if isinstance(exc, PitrError) else f"{type(exc).__name__}: {exc}"
            log.warning("backup %s failed: %s", name, message)
            self.status.backup_failed(cluster_name, name, message, method)
        finally:
            self.tasks.pop(cluster_name, None)
            self.wake()

    async def _run_backup(self, cluster: Manifest, backup: Manifest, method: str) -> None:
        cluster_name = cluster["metadata"]["name"]
        name = backup["metadata"]["name"]
        config = self.archives.own(cluster)
        if config is None:
            raise InvalidInput(f"cluster {cluster_name!r} has no backup configuration")
        credentials = self.archives.credentials(config)
        instance = self.instances[cluster_name]
        started = datetime.now(UTC)
        self.status.update_backup(
            name, {"phase": "running", "startedAt": format_k8s_time(started), "method": method}
        )
        self.status.set_condition(cluster_name, "LastBackupSucceeded", False, "BackupStarted")
        assert instance.server.socket_dir is not None
        result = await self.barman.run(
            self.backup_command(instance, config, name),
            credentials,
            # The producer waits for the WAL of the backup's end to be archived: it hangs
            # for ever while WAL archiving fails, so it runs under a timeout.
            timeout=self.settings.backup_timeout_seconds,
            cwd=instance.root,
            started=lambda: crash_point("backup.barman_started"),
        )
        entry = None
        if result.returncode == 0:
            try:
                entry = await self.barman.catalog_entry(
                    config, self.archives.endpoint_for(config), credentials, name
                )
            except ObjectStoreError as exc:
                log.warning("reading %s's backup.info failed; listing the catalog: %s", name, exc)
        if entry is None or entry.get("status") != "DONE":
            # Failed, or not found by name: the whole catalog, to settle any leftover.
            catalog = await self.barman.backup_list(config, credentials)
            entry = next((b for b in reversed(catalog) if b.get("backup_name") == name), None)
        crash_point("backup.barman_finished")
        if result.returncode != 0 or entry is None or entry.get("status") != "DONE":
            if entry is not None and entry.get("status") != "DONE":
                await self._delete_backup(config, credentials, str(entry["backup_id"]))
            raise ObjectStoreError(f"barman-cloud-backup failed: {result.error_text}")
        major = instance.server.binaries.major
        self.status.update_backup(name, completed_backup(entry, name, method, config, major))
        self.status.set_condition(cluster_name, "LastBackupSucceeded", True, "LastBackupSucceeded")
        crash_point("backup.status_written")
        intent = f"retention-{cluster_name}"
        if self.intents is not None:
            self.intents.record(intent, {"cluster": cluster_name, "after": name})
        try:
            await self.enforce_retention(cluster, config, credentials)
            if self.intents is not None:
                self.intents.done(intent)
        except PitrError as exc:
            # The backup itself is complete and listed; retention runs again after the next
            # one (as CNPG's in-tree retention does), and the window falls back to the Backups.
            log.warning(
                "retention after %s failed, retried after the next backup: %s", name, exc.message
            )

    def backup_command(self, instance: Instance, config: ArchiveConfig, name: str) -> list[str]:
        """The base backup of one instance, over its trusted unix socket, named ``name``:
        barman-cloud-backup's arguments to the parallel producer (:mod:`.basebackup`), which
        asks the instance's WAL archiver for the backup's last segments."""
        return [
            *self.barman.backup_producer(),
            "--archiver-socket",
            str(instance.archiver_socket),
            *self.barman.backup_flags(config, self.settings.base_backup_compression),
            *self.barman.endpoint_args(config),
            "-h",
            str(instance.server.socket_dir),
            "-p",
            str(instance.server.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-n",
            name,
            config.destination,
            config.server_name,
        ]

    async def _delete_backup(
        self, config: ArchiveConfig, credentials: dict[str, str], backup_id: str
    ) -> None:
        await self.barman.run(
            [
                self.barman.tool("barman-cloud-backup-delete"),
                *self.barman.endpoint_args(config),
                "-b",
                backup_id,
                config.destination,
                config.server_name,
            ],
            credentials,
            timeout=600,
        )

    async def enforce_retention(
        self, cluster: Manifest, config: ArchiveConfig, credentials: dict[str, str]
    ) -> None:
        """The retention policy with barman-cloud-backup-delete, then the recovery window of
        what is left, and the Backups whose data is gone deleted, as CNPG does after each
        backup."""
        policy = config.barman_retention()
        if policy:
            result = await self.barman.run(
                [
                    self.barman.tool("barman-cloud-backup-delete"),
                    *self.barman.endpoint_args(config),
                    "-r",
                    policy,
                    config.destination,
                    config.server_name,
                ],
                credentials,
                timeout=1800,
            )
            if result.returncode != 0:
                log.warning("retention of %s failed: %s", config.server_name, result.error_text)
        crash_point("backup.retention")
        catalog = [
            b
            for b in await self.barman.backup_list(config, credentials)
            if b.get("status") == "DONE"
        ]
        self.status.recovery_window(cluster, config.server_name, catalog)
        # Like CNPG's deleteBackupsNotInCatalog: Backups whose data retention removed go too.
        kept = {str(b.get("backup_id")) for b in catalog}
        cluster_name = cluster["metadata"]["name"]
        for backup in self.objects.list("Backup", {naming.CNPG_CLUSTER_LABEL: cluster_name}):
            status = backup.get("status") or {}
            if status.get("phase") == "completed" and status.get("backupId") not in kept:
                self.objects.delete("Backup", backup["metadata"]["name"])
