"""Recovery of a ``bootstrap.recovery`` Cluster, as CNPG's full-recovery job does it: pick
the base backup (the named one, else the newest ending at or before the target), restore
it in this process (:mod:`.baserestore`: every tar part at once; barman-cloud-restore for a
layout it does not handle), replay WAL from the source's archive through a
``restore_command`` of barman-cloud-wal-restore, and watch the server until it is promoted,
without connecting to it while it starts.

A failed recovery raises :class:`~paas_pitr.errors.RecoveryError` with PostgreSQL's own
reason, and, when WAL was missing, which segment and whether the archive has a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from paas_pitr.catalog import DONE
from paas_pitr.cnpg.window import consistent_by
from paas_pitr.crashpoints import crash_point
from paas_pitr.engines.base import Manifest
from paas_pitr.engines.local.archive import ArchiveConfig, ArchiveResolver
from paas_pitr.engines.local.archiving import Archiving
from paas_pitr.engines.local.barman import Barman, barman_time
from paas_pitr.engines.local.baserestore import (
    BaseBackupRestore,
    S3BackupObjects,
    UnsupportedLayout,
)
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.serverlog import (
    PM_READY,
    PM_STOPPING,
    is_wal_shortage,
    missing_segment,
)
from paas_pitr.engines.local.walfetch import WALS_FD_VARIABLE
from paas_pitr.errors import ObjectStoreError, PitrError, RecoveryError
from paas_pitr.postgres.server import OsUser, chown_tree
from paas_pitr.s3 import cached_client, has_objects, s3_client
from paas_pitr.timestamps import parse_k8s_time

log = logging.getLogger(__name__)

# How long a restore waits for a postmaster that is not there and logged no error (one
# launched on a loaded machine may take a while to write postmaster.pid).
SILENT_EXIT_GRACE_SECONDS = 30.0
# Promotion is noticed within this long: each check reads postmaster.pid and stats
# recovery.signal, no connection.
PROMOTION_POLL_SECONDS = 0.05
# A server is asked whether it is still in recovery at least this often, whatever the files
# say.
PROMOTION_ASK_SECONDS = 1.0


# CNPG's recoveryTarget fields and the PostgreSQL settings its instance manager writes.
_TARGET_SETTINGS = {
    "targetTime": "recovery_target_time",
    "targetLSN": "recovery_target_lsn",
    "targetXID": "recovery_target_xid",
    "targetName": "recovery_target_name",
}


def recovery_target_settings(target: Mapping[str, Any]) -> dict[str, str]:
    """The ``recovery_target*`` settings of a ``recoveryTarget`` (none: replay the whole
    archive). ``exclusive`` makes the target exclusive, as CNPG does."""
    found = {
        setting: str(target[field])
        for field, setting in _TARGET_SETTINGS.items()
        if target.get(field)
    }
    if not found and target.get("targetImmediate"):
        return {"recovery_target": "immediate"}
    if found and target.get("exclusive"):
        found["recovery_target_inclusive"] = "off"
    return found


class Recovery:
    def __init__(
        self,
        barman: Barman,
        archives: ArchiveResolver,
        archiving: Archiving,
        user: OsUser | None,
        *,
        restore_timeout_seconds: int,
        wal_max_parallel: int,
        base_backup_parallel: int = 4,
    ) -> None:
        self.barman = barman
        self.archives = archives
        self.archiving = archiving
        self.user = user
        self.restore_timeout_seconds = restore_timeout_seconds
        # Parallel WAL downloads when the recovery source does not set wal.maxParallel.
        self.wal_max_parallel = wal_max_parallel
        # Tar parts of a base backup restored at once.
        self.base_backup_parallel = base_backup_parallel

    async def recover(self, cluster: Manifest, instance: Instance, *, resumed: bool) -> None:
        """Restore, replay and promote ``cluster``'s server. ``resumed``: a restore an
        earlier run started; one whose base backup is in place only starts the server."""
        name = cluster["metadata"]["name"]
        source = self.archives.source(cluster)
        assert source is not None
        credentials = self.archives.credentials(source)
        target = cluster["spec"]["bootstrap"]["recovery"].get("recoveryTarget") or {}
        data_dir = instance.server.data_dir
        # Once recovery has started (recorded with the signal file, before the server is
        # first started), a resumed restore only waits for promotion: PostgreSQL removes
        # recovery.signal when it promotes, so a server that finished on its own while the
        # service was down is promoted, not to be restored again (its own archive folder
        # already holds WAL: the empty-archive check would fail a restore that succeeded).
        restored = resumed and (
            (data_dir / "recovery.signal").exists() or bool(instance.meta.get("recovery_started"))
        )
        if not restored:
            backup_id = await self.choose_backup(source, credentials, target)
            own = self.archiving.configure(cluster, instance)
            if own is not None:
                await self._check_empty_archive(own)
            # wal.maxParallel of the recovery source; unset (the plugin form), the setting.
            parallel = source.wal_max_parallel or self.wal_max_parallel
            await self._restore_base_backup(instance, source, credentials, backup_id)
            shutil.rmtree(instance.wal_spool, ignore_errors=True)  # no stale prefetch locks
            script = instance.write_restore_script(source, credentials, parallel)
            crash_point("restore.server_prepared")
            recovery = {
                "restore_command": f'\'{script}\' "%f" "%p"',
                "recovery_target_action": "promote",
                "recovery_target_timeline": "latest",
            }
            recovery.update(recovery_target_settings(target))
            settings = instance.settings_for(cluster)
            # The restored postgresql.conf is the source's: our include file overrides its
            # port and archive_command, so the restored server never archives into the
            # source's folder, nor listens on its port.
            await asyncio.to_thread(instance.write_config, {**settings, **recovery})
            instance.meta["settings"] = None
            signal = data_dir / "recovery.signal"
            signal.touch()
            chown_tree(signal, self.user)
            for stale in ("standby.signal", "postmaster.pid"):
                (data_dir / stale).unlink(missing_ok=True)
            instance.meta["recovery_started"] = True
            instance.save_meta()
            await self._start_prefetcher(script, source, credentials)
            crash_point("restore.recovery_started")
        await asyncio.to_thread(instance.ensure_port)
        await self.wait_for_promotion(instance, source, credentials)
        crash_point("restore.promoted")
        shutil.rmtree(instance.wal_spool, ignore_errors=True)
        # Promoted: drop the recovery settings and hand out fresh app credentials.
        settings = instance.settings_for(cluster)
        await asyncio.to_thread(instance.write_config, settings)
        instance.meta["settings"] = settings
        await asyncio.to_thread(instance.create_app_objects)
        with instance.connect() as conn:
            conn.execute("SELECT pg_reload_conf()")
        log.info("recovery cluster %s promoted", name)

    async def choose_backup(
        self, source: ArchiveConfig, credentials: dict[str, str], target: Mapping[str, Any]
    ) -> str:
        """The base backup a recovery to ``target`` (a ``recoveryTarget``) starts from:
        ``backupID`` if it names a completed one, else the newest completed backup ending at
        or before ``targetTime`` (any, without one)."""
        if target.get("backupID"):
            # Chosen already (by the control plane, or named by the user): its own
            # backup.info answers in one request, where listing the catalog starts a
            # barman-cloud process and reads every backup's.
            wanted = str(target["backupID"])
            status = await self.barman.catalog_status(
                source, self.archives.endpoint_for(source), credentials, wanted
            )
            if status != DONE:
                raise RecoveryError(
                    f"backup {wanted!r} not found in {source.server_prefix}"
                    + (f" (status {status})" if status else "")
                )
            return wanted
        backups = [
            b
            for b in await self.barman.backup_list(source, credentials)
            if b.get("status") == "DONE"
        ]
        moment = parse_k8s_time(target.get("targetTime")) if target.get("targetTime") else None
        # Only a backup consistent by the target can serve it: barman's end time comes a
        # moment before the end-of-backup record.
        candidates = [
            (end, str(b["backup_id"]))
            for b in backups
            if (end := barman_time(b, "end")) is not None
            and (moment is None or consistent_by(end) <= moment)
        ]
        if not candidates:
            raise RecoveryError(
                f"no target backup found in {source.destination}/{source.server_name} "
                "(no completed backup ends before the target)"
            )
        return max(candidates)[1]

    async def _start_prefetcher(
        self, script: Path, source: ArchiveConfig, credentials: dict[str, str]
    ) -> None:
        """Start the WAL prefetcher before the server: the first restore_command would
        otherwise wait for its interpreter and S3 client to start. Best effort:
        restore_command starts one itself when none runs (over S3 then).

        For an archive of the embedded S3 server opened with its keys, the prefetcher gets
        a descriptor of the archive's ``wals/`` folder and reads segments from there: the
        server's folders are private to the service's user, and the prefetcher runs as the
        servers' user."""
        wals_fd: int | None = None
        folder = self.archives.local_folder(source, credentials)
        if folder is not None:
            with contextlib.suppress(OSError):
                wals_fd = folder.child("wals").open(self.user, create=False)
        extra = {WALS_FD_VARIABLE: str(wals_fd)} if wals_fd is not None else {}
        try:
            result = await self.barman.run(
                [str(script), "--prefetch", ""],
                extra,
                timeout=60,
                pass_fds=(wals_fd,) if wals_fd is not None else (),
            )
        finally:
            if wals_fd is not None:
                os.close(wals_fd)
        if result.returncode != 0:
            log.warning("the WAL prefetcher did not start early: %s", result.error_text)

    async def _check_empty_archive(self, own: ArchiveConfig) -> None:
        bucket, _ = own.bucket_and_prefix
        credentials = self.archives.credentials(own)
        endpoint = self.archives.endpoint_for(own)
        if await asyncio.to_thread(has_objects, endpoint, credentials, bucket, own.server_prefix):
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
        """Restore ``backup_id`` into the instance's (emptied) data directory, in this
        process (:mod:`.baserestore`); with barman-cloud-restore for a layout that module
        does not restore. Raises :class:`RecoveryError`; a cancelled restore stops its
        threads before the cancellation goes on."""
        instance.prepare_root()
        data_dir = instance.server.data_dir
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(mode=0o700)
        chown_tree(data_dir, self.user)
        bucket, prefix = source.bucket_and_prefix
        client = cached_client(self.archives.endpoint_for(source), credentials)
        restorer = BaseBackupRestore(
            S3BackupObjects(client, bucket),
            prefix,
            source.server_name,
            parallel=self.base_backup_parallel,
            user=self.user,
        )
        stop = threading.Event()
        work = asyncio.ensure_future(
            asyncio.to_thread(restorer.restore, backup_id, data_dir, stop=stop)
        )
        try:
            result = await asyncio.wait_for(asyncio.shield(work), self.restore_timeout_seconds)
        except UnsupportedLayout as exc:
            log.warning("backup %s is restored by barman-cloud-restore: %s", backup_id, exc)
            await self._barman_cloud_restore(instance, source, credentials, backup_id)
            return
        except ObjectStoreError as exc:
            raise RecoveryError(f"base backup restore failed: {exc.message}") from exc
        except TimeoutError as exc:
            stop.set()
            await asyncio.wait([work])
            raise RecoveryError(
                f"base backup restore timed out after {self.restore_timeout_seconds}s"
            ) from exc
        except asyncio.CancelledError:
            stop.set()
            await asyncio.wait([work])
            raise
        log.info(
            "base backup %s restored: %d tar parts, %.0f MiB stored, %.0f MiB written, %.1f s",
            backup_id,
            result.parts,
            result.bytes_stored / 2**20,
            result.bytes_extracted / 2**20,
            result.seconds,
        )

    async def _barman_cloud_restore(
        self,
        instance: Instance,
        source: ArchiveConfig,
        credentials: dict[str, str],
        backup_id: str,
    ) -> None:
        data_dir = instance.server.data_dir
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
            timeout=self.restore_timeout_seconds,
            cwd=instance.root,
        )
        if result.returncode != 0:
            raise RecoveryError(f"barman-cloud-restore failed: {result.error_text}")

    async def wait_for_promotion(
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
        deadline = loop.time() + self.restore_timeout_seconds
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
        asked_at = 0.0
        while True:
            await asyncio.sleep(PROMOTION_POLL_SECONDS)
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
                if loop.time() - gone_since > SILENT_EXIT_GRACE_SECONDS:
                    raise RecoveryError(
                        f"PostgreSQL exited during recovery without logging an error "
                        f"(see {instance.server.log_file})"
                    )
            else:
                gone_since = None
                # PostgreSQL removes recovery.signal as recovery ends, just before it
                # promotes: until then a file read says "not yet", without a connection.
                if status == PM_READY and (
                    not instance.recovery_signal_present()
                    or loop.time() - asked_at >= PROMOTION_ASK_SECONDS
                ):
                    asked_at = loop.time()
                    with contextlib.suppress(PitrError):
                        if not await asyncio.to_thread(instance.in_recovery):
                            return
            if loop.time() > deadline:
                raise RecoveryError(
                    f"recovery did not finish within {self.restore_timeout_seconds}s"
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
                self.archive_has_wal_after, source, credentials, segment
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

    def archive_has_wal_after(
        self, source: ArchiveConfig, credentials: dict[str, str], segment: str
    ) -> bool:
        """Whether the source's WAL archive holds a segment of the same timeline after
        ``segment`` (barman-cloud keys: ``<server>/wals/<first 16 hex>/<name>[.ext]``)."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _ = source.bucket_and_prefix
        wals = f"{source.server_prefix}wals/"
        client = s3_client(self.archives.endpoint_for(source), credentials)
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
