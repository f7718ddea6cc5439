"""Backups on the local engine: ScheduledBackups firing, Backups run one at a time per
cluster with barman-cloud-backup, retention after each, and the recovery window written
back into the Cluster (in-tree) or ObjectStore (plugin) status, as CNPG does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.schedule import next_run
from paas_pitr.engines.base import Manifest
from paas_pitr.engines.local.archive import ArchiveConfig, own_archive
from paas_pitr.engines.local.barman import barman_time
from paas_pitr.errors import InvalidInput, ObjectStoreError, PitrError
from paas_pitr.timestamps import format_k8s_time, parse_k8s_time

if TYPE_CHECKING:
    from paas_pitr.engines.local.engine import LocalEngine
    from paas_pitr.engines.local.instance import Instance

log = logging.getLogger(__name__)


class BackupController:
    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine
        # One running backup task per cluster: CNPG runs a cluster's backups one at a time.
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def reconcile_schedules(self) -> None:
        now = datetime.now(UTC)
        for scheduled in self.engine.store.list("ScheduledBackup"):
            spec = scheduled.get("spec") or {}
            name = scheduled["metadata"]["name"]
            cluster_name = (spec.get("cluster") or {}).get("name", "")
            cluster = self.engine.store.get("Cluster", cluster_name)
            if (
                spec.get("suspend")
                or cluster is None
                or not self.engine._cluster_ready(cluster_name)
            ):
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
                self.engine.store.update_status("ScheduledBackup", name, {"error": message})
                continue
            self.engine.store.update_status(
                "ScheduledBackup",
                name,
                {
                    "lastCheckTime": format_k8s_time(now),
                    "nextScheduleTime": format_k8s_time(upcoming),
                },
            )
            if not due:
                continue
            labels = {
                **(scheduled["metadata"].get("labels") or {}),
                naming.CNPG_CLUSTER_LABEL: cluster_name,
                "cnpg.io/scheduled-backup": name,
            }
            if last is None and spec.get("immediate"):
                labels["cnpg.io/immediateBackup"] = "true"
            owner_kind = spec.get("backupOwnerReference", "none")
            owner = (
                cluster if owner_kind == "cluster" else scheduled if owner_kind == "self" else None
            )
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
            with contextlib.suppress(PitrError):
                self.engine.store.put(
                    {
                        "apiVersion": naming.API_VERSION,
                        "kind": "Backup",
                        "metadata": metadata,
                        "spec": backup_spec,
                    },
                    create_only=True,
                )
            self.engine.store.update_status(
                "ScheduledBackup", name, {"lastScheduleTime": format_k8s_time(now)}
            )

    def recover_interrupted(self) -> list[str]:
        """Backups that were running when the control plane stopped: failed for now, and
        settled against the catalog by ``settle_interrupted`` once S3 is reachable."""
        interrupted = []
        for backup in self.engine.store.list("Backup"):
            phase = (backup.get("status") or {}).get("phase")
            if phase in ("started", "running"):
                name = backup["metadata"]["name"]
                interrupted.append(name)
                self._backup_status(
                    name,
                    phase="failed",
                    error="interrupted by a restart of the control plane",
                    stoppedAt=format_k8s_time(datetime.now(UTC)),
                )
        return interrupted

    async def settle_interrupted(self, names: Sequence[str]) -> None:
        """An interrupted barman-cloud-backup may have finished on its own (it runs in its
        own session) or left a STARTED entry behind (gotcha 8): adopt the one, delete the
        other."""
        for name in names:
            backup = self.engine.store.get("Backup", name)
            cluster_name = ((backup or {}).get("spec", {}).get("cluster") or {}).get("name", "")
            cluster = self.engine.store.get("Cluster", cluster_name)
            if backup is None or cluster is None:
                continue
            try:
                config = own_archive(cluster, self.engine._lookup)
                if config is None:
                    continue
                credentials = self.engine._credentials(config)
                catalog = await self.engine.barman.backup_list(config, credentials)
                entry = next((b for b in catalog if b.get("backup_name") == name), None)
                if entry is None:
                    continue
                if entry.get("status") == "DONE":
                    method = backup.get("spec", {}).get("method") or "barmanObjectStore"
                    self._backup_status(name, **self._completed(entry, name, method, config, None))
                    log.info("backup %s had completed during the restart; adopted", name)
                else:
                    await self._delete_backup(config, credentials, str(entry["backup_id"]))
                    log.info("deleted the leftovers of interrupted backup %s", name)
            except PitrError as exc:
                log.warning("could not settle interrupted backup %s: %s", name, exc.message)

    async def reconcile_backups(self) -> None:
        for backup in sorted(
            self.engine.store.list("Backup"),
            key=lambda b: b["metadata"].get("creationTimestamp", ""),
        ):
            status = backup.get("status") or {}
            if status.get("phase") not in (None, "", "pending"):
                continue
            name = backup["metadata"]["name"]
            cluster_name = (backup.get("spec", {}).get("cluster") or {}).get("name", "")
            cluster = self.engine.store.get("Cluster", cluster_name)
            if cluster is None:
                self._backup_status(
                    name, phase="failed", error=f"cluster {cluster_name!r} not found"
                )
                continue
            if not status.get("phase"):
                self._backup_status(name, phase="pending")
            if cluster_name in self.tasks or not self.engine._cluster_ready(cluster_name):
                continue  # one backup at a time per cluster, in creation order
            self.tasks[cluster_name] = asyncio.create_task(
                self._take_backup(cluster, backup), name=f"backup-{name}"
            )

    def _backup_status(self, name: str, **fields: Any) -> None:
        self.engine.store.update_status("Backup", name, fields)

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
            self._backup_status(
                name,
                phase="failed",
                error=message,
                stoppedAt=format_k8s_time(datetime.now(UTC)),
                method=method,
            )
            self.engine._set_condition(
                cluster_name, "LastBackupSucceeded", False, "LastBackupFailed", message
            )
            self.engine.store.update_status(
                "Cluster",
                cluster_name,
                {"lastFailedBackup": format_k8s_time(datetime.now(UTC))},
            )
        finally:
            self.tasks.pop(cluster_name, None)
            self.engine._wake.set()

    async def _run_backup(self, cluster: Manifest, backup: Manifest, method: str) -> None:
        cluster_name = cluster["metadata"]["name"]
        name = backup["metadata"]["name"]
        config = own_archive(cluster, self.engine._lookup)
        if config is None:
            raise InvalidInput(f"cluster {cluster_name!r} has no backup configuration")
        credentials = self.engine._credentials(config)
        instance = self.engine.instances[cluster_name]
        started = datetime.now(UTC)
        self._backup_status(
            name, phase="running", startedAt=format_k8s_time(started), method=method
        )
        self.engine._set_condition(cluster_name, "LastBackupSucceeded", False, "BackupStarted")
        assert instance.server.socket_dir is not None
        result = await self.engine.barman.run(
            self.backup_command(instance, config, name),
            credentials,
            # barman-cloud-backup can hang forever while WAL archiving fails (gotcha 8).
            timeout=self.engine.settings.backup_timeout_seconds,
            cwd=instance.root,
        )
        catalog = await self.engine.barman.backup_list(config, credentials)
        entry = next((b for b in reversed(catalog) if b.get("backup_name") == name), None)
        if result.returncode != 0 or entry is None or entry.get("status") != "DONE":
            if entry is not None and entry.get("status") != "DONE":
                await self._delete_backup(config, credentials, str(entry["backup_id"]))
            raise ObjectStoreError(f"barman-cloud-backup failed: {result.error_text}")
        major = instance.server.binaries.major
        self._backup_status(name, **self._completed(entry, name, method, config, major))
        self.engine._set_condition(cluster_name, "LastBackupSucceeded", True, "LastBackupSucceeded")
        try:
            await self._enforce_retention(cluster, config, credentials)
        except PitrError as exc:
            # The backup itself is complete and listed; retention runs again after the next
            # one (as CNPG's in-tree retention does), and the window falls back to the Backups.
            log.warning(
                "retention after %s failed, retried after the next backup: %s", name, exc.message
            )

    def backup_command(self, instance: Instance, config: ArchiveConfig, name: str) -> list[str]:
        """barman-cloud-backup of one instance, over its trusted unix socket, named ``name``."""
        barman = self.engine.barman
        return [
            barman.tool("barman-cloud-backup"),
            *barman.backup_flags(config, self.engine.settings.base_backup_compression),
            *barman.endpoint_args(config),
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

    @staticmethod
    def _completed(
        entry: dict[str, Any], name: str, method: str, config: ArchiveConfig, major: int | None
    ) -> dict[str, Any]:
        """A completed Backup's status in CNPG's shape, from barman's catalog entry."""
        return {
            "phase": "completed",
            "method": method,
            "online": True,
            "backupId": entry.get("backup_id"),
            "backupName": name,
            "startedAt": format_k8s_time(barman_time(entry, "begin")),
            "stoppedAt": format_k8s_time(barman_time(entry, "end")),
            "beginWal": entry.get("begin_wal"),
            "endWal": entry.get("end_wal"),
            "beginLSN": entry.get("begin_xlog"),
            "endLSN": entry.get("end_xlog"),
            "majorVersion": major,
            "error": None,
            # Copies of the store configuration: in-tree only (REFERENCE §4.2).
            "serverName": config.server_name if method != "plugin" else None,
            "destinationPath": config.destination if method != "plugin" else None,
        }

    async def _delete_backup(
        self, config: ArchiveConfig, credentials: dict[str, str], backup_id: str
    ) -> None:
        await self.engine.barman.run(
            [
                self.engine.barman.tool("barman-cloud-backup-delete"),
                *self.engine.barman.endpoint_args(config),
                "-b",
                backup_id,
                config.destination,
                config.server_name,
            ],
            credentials,
            timeout=600,
        )

    async def _enforce_retention(
        self, cluster: Manifest, config: ArchiveConfig, credentials: dict[str, str]
    ) -> None:
        policy = config.barman_retention()
        if policy:
            result = await self.engine.barman.run(
                [
                    self.engine.barman.tool("barman-cloud-backup-delete"),
                    *self.engine.barman.endpoint_args(config),
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
        catalog = [
            b
            for b in await self.engine.barman.backup_list(config, credentials)
            if b.get("status") == "DONE"
        ]
        await self.refresh_recovery_window(cluster, config, catalog)

    async def refresh_recovery_window(
        self, cluster: Manifest, config: ArchiveConfig, catalog: Sequence[dict[str, Any]]
    ) -> None:
        cluster_name = cluster["metadata"]["name"]
        ends = [e for b in catalog if (e := barman_time(b, "end")) is not None]
        first = format_k8s_time(min(ends)) if ends else None
        last = format_k8s_time(max(ends)) if ends else None
        plugin = any(
            p.get("name") == naming.BARMAN_PLUGIN_NAME
            for p in cluster.get("spec", {}).get("plugins") or []
        )
        if plugin:
            store_name = next(
                p["parameters"]["barmanObjectName"]
                for p in cluster["spec"]["plugins"]
                if p.get("name") == naming.BARMAN_PLUGIN_NAME
            )
            current = self.engine.store.get("ObjectStore", store_name) or {}
            windows = dict((current.get("status") or {}).get("serverRecoveryWindow") or {})
            windows[config.server_name] = {
                "firstRecoverabilityPoint": first,
                "lastSuccessfulBackupTime": last,
            }
            self.engine.store.update_status(
                "ObjectStore", store_name, {"serverRecoveryWindow": windows}
            )
        else:
            self.engine.store.update_status(
                "Cluster",
                cluster_name,
                {"firstRecoverabilityPoint": first, "lastSuccessfulBackup": last},
            )
        # Like CNPG's deleteBackupsNotInCatalog: Backups whose data retention removed go too.
        kept = {str(b.get("backup_id")) for b in catalog}
        for backup in self.engine.store.list("Backup", {naming.CNPG_CLUSTER_LABEL: cluster_name}):
            status = backup.get("status") or {}
            if status.get("phase") == "completed" and status.get("backupId") not in kept:
                self.engine.store.delete("Backup", backup["metadata"]["name"])
