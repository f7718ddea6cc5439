"""A new Cluster's server, brought up once: ``initdb`` for a new database, or recovery from
an archive for a ``bootstrap.recovery`` Cluster (:mod:`.recovery`). The instance's
bootstrap state (pending, running, done, failed) is kept in its own files, so a bootstrap
interrupted by a restart resumes; a failed one is reported in the Cluster's status and
never retried, as CNPG leaves a failed bootstrap for a human.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil

from paas_pitr.cnpg.projections import PHASE_SETTING_UP_PRIMARY, RECOVERY_FAILED_REASON
from paas_pitr.crashpoints import crash_point
from paas_pitr.engines.base import Manifest
from paas_pitr.engines.local.archiving import Archiving
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.recovery import Recovery
from paas_pitr.engines.local.status import PHASE_UNRECOVERABLE, StatusWriter
from paas_pitr.engines.local.walfetch import stop_prefetcher
from paas_pitr.errors import PitrError

log = logging.getLogger(__name__)


def is_recovery(cluster: Manifest) -> bool:
    """Whether ``cluster`` is bootstrapped from an archive rather than by ``initdb``."""
    return bool(cluster.get("spec", {}).get("bootstrap", {}).get("recovery"))


class Bootstrap:
    def __init__(self, status: StatusWriter, archiving: Archiving, recovery: Recovery) -> None:
        self.status = status
        self.archiving = archiving
        self.recovery = recovery

    async def run(self, cluster: Manifest, instance: Instance) -> bool:
        """Bootstrap ``instance``; ``True`` once its server runs, ``False`` when the
        bootstrap failed (the reason is in the Cluster's status and the instance's state)."""
        name = cluster["metadata"]["name"]
        recovering = is_recovery(cluster)
        resumed = instance.bootstrap_state == "running"
        instance.set_bootstrap("running")
        self.status.set_phase(name, PHASE_SETTING_UP_PRIMARY)
        self.status.set_condition(name, "Ready", False, "SettingUpPrimary", "bootstrapping")
        try:
            if recovering:
                await self.recovery.recover(cluster, instance, resumed=resumed)
            else:
                await asyncio.to_thread(self._initdb, cluster, instance)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = exc.message if isinstance(exc, PitrError) else f"{type(exc).__name__}: {exc}"
            log.warning("bootstrap of %s failed: %s", name, message)
            # The state first: a crash right after still knows the outcome (see
            # report_failure).
            instance.set_bootstrap("failed", message)
            if recovering:
                crash_point("restore.failed")
            with contextlib.suppress(PitrError):
                await asyncio.to_thread(instance.server.stop, mode="immediate")
            # No server: nothing left to fetch WAL for, nor to archive.
            await asyncio.to_thread(stop_prefetcher, instance.wal_spool)
            await asyncio.to_thread(self.archiving.forget, name)
            self.report_failure(cluster, instance)
            return False
        instance.set_bootstrap("done")
        return True

    def failure_reported(self, cluster: Manifest) -> bool:
        """Whether the Cluster's status says its bootstrap failed (a service killed between
        recording the failure and writing the status left it saying "recovering")."""
        ready = next(
            (
                c
                for c in (cluster.get("status") or {}).get("conditions") or []
                if c.get("type") == "Ready"
            ),
            None,
        )
        return bool(ready and ready.get("reason") in (RECOVERY_FAILED_REASON, "BootstrapFailed"))

    def report_failure(self, cluster: Manifest, instance: Instance) -> None:
        """Write a failed bootstrap's status from the instance's recorded reason."""
        name = cluster["metadata"]["name"]
        recovering = is_recovery(cluster)
        message = str(instance.meta.get("bootstrap_reason") or "the bootstrap failed")
        reason = RECOVERY_FAILED_REASON if recovering else "BootstrapFailed"
        self.status.set_condition(name, "Ready", False, reason, message)
        # A failed recovery stays "setting up" (CNPG has no phase for a failed full-recovery
        # job); the Ready condition's reason says it failed for good.
        self.status.set_phase(
            name, PHASE_SETTING_UP_PRIMARY if recovering else PHASE_UNRECOVERABLE, message
        )

    def _initdb(self, cluster: Manifest, instance: Instance) -> None:
        instance.prepare_root()
        if instance.server.data_dir.exists() and not instance.server.is_initialized():
            shutil.rmtree(instance.server.data_dir)
        if not instance.server.is_initialized():
            instance.server.initdb()
        self.archiving.configure(cluster, instance)
        settings = instance.settings_for(cluster)
        instance.write_config(settings)
        instance.meta["settings"] = settings
        instance.ensure_port()
        instance.server.start()
        instance.create_app_objects()
