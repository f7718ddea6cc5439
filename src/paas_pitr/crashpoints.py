"""Crash points: the state transitions of backups and restores, named, where a test makes
the service die as ``kill -9`` would.

``PAAS_PITR_TEST_CRASH_AT`` names one point (see :data:`POINTS`). The first time the
process reaches it, it writes one line to stderr and sends itself ``SIGKILL``: nothing of
the dying process runs (no ``finally``, no shutdown hook), exactly as the OOM killer or an
operator's ``kill -9`` would leave things. Unset (always, outside tests), a crash point is
one dictionary lookup. The variable is read from the environment only, never a setting:
no deployment has a reason to set it.

Every point sits after a durable write (the intent, or the outcome) and before the next
one, so each test of a point checks what the next start reconciles from that state.
"""

from __future__ import annotations

import os
import signal

from paas_pitr.errors import InvalidSetting

ENVIRONMENT_VARIABLE = "PAAS_PITR_TEST_CRASH_AT"

POINTS: dict[str, str] = {
    "backup.requested": "the Backup is stored (pending); nothing has run",
    "backup.barman_started": "the Backup reads running; barman-cloud-backup was just spawned",
    "backup.barman_finished": "barman-cloud-backup ended, its catalog read; status not written",
    "backup.status_written": "the Backup reads completed; retention has not run",
    "backup.retention": "retention deleted from the archive; window and Backups not updated",
    "restore.cluster_written": "the recovery Cluster is stored; the request is not audited",
    "restore.server_prepared": "the base backup is restored; recovery not configured",
    "restore.recovery_started": "recovery is recorded (signal file); the server is not started",
    "restore.promoted": "the server is promoted; the bootstrap is not recorded done",
    "restore.status_written": "the Cluster reads ready; the outcome is not audited",
    "restore.failed": "the failed bootstrap is recorded; its status is not written",
}


def armed() -> str | None:
    """The point this process dies at, or ``None``; ``InvalidSetting`` for an unknown one
    (a test naming a point that is never reached would pass without testing anything)."""
    point = os.environ.get(ENVIRONMENT_VARIABLE) or None
    if point is not None and point not in POINTS:
        raise InvalidSetting(
            f"{ENVIRONMENT_VARIABLE}={point!r} names no crash point; known: {', '.join(POINTS)}"
        )
    return point


def crash_point(name: str) -> None:
    """Die here with ``SIGKILL`` if ``name`` is the armed point."""
    assert name in POINTS, name
    if os.environ.get(ENVIRONMENT_VARIABLE) != name:
        return
    os.write(2, f"paas-pitr: crash point {name} reached: killing the service\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)
