"""WAL archiving of one instance: the script ``archive_command`` runs, written from the
Cluster's archive configuration and its Secret, and the health of archiving reported in the
Cluster's ``ContinuousArchiving`` condition, as CNPG reports it.
"""

from __future__ import annotations

import asyncio
import contextlib

from paas_pitr.cnpg.projections import archive_timeout_of
from paas_pitr.engines.base import Manifest
from paas_pitr.engines.local.archive import ArchiveConfig, ArchiveResolver
from paas_pitr.engines.local.archivers import ArchiverSupervisor
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.status import StatusWriter
from paas_pitr.engines.local.wal import ArchiverStats
from paas_pitr.errors import InvalidInput, MissingSecret, PitrError

CONDITION = "ContinuousArchiving"


class Archiving:
    def __init__(
        self,
        archives: ArchiveResolver,
        status: StatusWriter,
        archivers: ArchiverSupervisor | None = None,
    ) -> None:
        self.archives = archives
        self.status = status
        # None: no WAL archiver processes; archive_command then always uses its fallback,
        # barman-cloud-wal-archive (tests with a fake barman-cloud pass None).
        self.archivers = archivers

    def archive_of(self, cluster: Manifest) -> ArchiveConfig | None:
        """Where ``cluster`` archives; ``None`` when nowhere or when its configuration is
        unusable (reported by :meth:`configure`)."""
        try:
            return self.archives.own(cluster)
        except InvalidInput:
            return None

    def configure(self, cluster: Manifest, instance: Instance) -> ArchiveConfig | None:
        """(Re)write ``instance``'s archive script; the cluster's archive, if it has one.

        Written at every reconcile: a fixed Secret heals archiving without a restart. With
        no usable credentials the script fails with the reason, which the archiver's
        failure then reports; an unusable configuration is reported at once. The instance's
        WAL archiver process is (re)started here too: the reconciler is its supervisor.
        """
        try:
            config = self.archives.own(cluster)
        except InvalidInput as exc:
            instance.write_archive_script(None, None, None)
            self._stop_archiver(instance)
            self.status.set_condition(
                cluster["metadata"]["name"],
                CONDITION,
                False,
                "ContinuousArchivingFailing",
                exc.message,
            )
            return None
        if config is None:
            instance.write_archive_script(None, None, None)
            self._stop_archiver(instance)
            return None
        try:
            credentials = self.archives.credentials(config)
        except MissingSecret as exc:
            instance.write_archive_script(config, None, exc.message)
            self._stop_archiver(instance)
            return config
        instance.write_archive_script(config, credentials, None)
        if self.archivers is not None:
            self.archivers.ensure(
                instance.name,
                config,
                credentials,
                pgdata=instance.server.data_dir,
                socket_path=instance.archiver_socket,
                log_path=instance.scripts / "walarchiver.log",
                served_folder=self.archives.local_folder(config, credentials),
            )
        return config

    def _stop_archiver(self, instance: Instance) -> None:
        if self.archivers is not None:
            self.archivers.stop(instance.name)

    def has_archiver(self, name: str) -> bool:
        return self.archivers is not None and self.archivers.supervises(name)

    def forget(self, name: str) -> None:
        """Stop the archiver of an instance that is going away."""
        if self.archivers is not None:
            self.archivers.stop(name)

    def close(self) -> None:
        if self.archivers is not None:
            self.archivers.stop_all()

    async def report(self, cluster: Manifest, instance: Instance, stats: ArchiverStats) -> None:
        """Archiving's health from ``pg_stat_archiver``, the newest restorable instant, and
        a WAL switch when ``archive_timeout`` has passed without one."""
        name = cluster["metadata"]["name"]
        if stats.failing:
            message = instance.read_archive_error() or "barman-cloud-wal-archive failed"
            self.status.set_condition(name, CONDITION, False, "ContinuousArchivingFailing", message)
        elif stats.last_archived_time is not None:
            self.status.set_condition(name, CONDITION, True, "ContinuousArchivingSuccess")
            with contextlib.suppress(OSError):
                instance.archive_error_file.unlink()
        instance.update_latest_restorable(stats)
        if not stats.failing:
            timeout = archive_timeout_of(cluster).total_seconds()
            with contextlib.suppress(PitrError):
                await asyncio.to_thread(instance.enforce_archive_timeout, timeout, stats)
