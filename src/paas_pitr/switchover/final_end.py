"""The end of an incarnation's archive once the switch that stopped it is done.

The switched-away incarnation is recorded (like a deleted one) before the switch, with
what was restorable then; its server archives its last ready WAL segments while it stops,
so the recorded end falls short of the archive. Once the switch is done the engine knows
the end of the stopped server's archive, and the record is brought up to it.
"""

from __future__ import annotations

import dataclasses

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.history import archive_periods, history_annotation
from paas_pitr.engines.base import Engine, Manifest
from paas_pitr.settings import Settings
from paas_pitr.tombstones import Tombstone, require_bucket, tombstone_key


async def record_final_end(
    engine: Engine, settings: Settings, stopped: Manifest, server: str
) -> Tombstone | None:
    """Move the recorded end of ``server``'s closed period (the one its record closed) to
    the newest restorable instant the engine reads now for ``stopped`` (the Cluster that
    holds ``server``'s data, stopped), when that is later. Returns the record as written,
    ``None`` when there is none or nothing is later. Raises ``ObjectStoreError`` when the
    record cannot be read or written (the caller retries)."""
    labels = stopped["metadata"].get("labels", {})
    key = tombstone_key(labels[naming.LABEL_TENANT], labels[naming.LABEL_APP], server)
    bucket = require_bucket(engine, settings)
    tombstone = Tombstone.load(await bucket.get_json(key), key)
    if tombstone is None:
        return None
    periods = archive_periods(
        {
            "metadata": {
                "annotations": {naming.ANNOTATION_ARCHIVE_HISTORY: tombstone.archive_history}
            }
        },
        archiving_now=False,
    )
    if not periods or periods[-1].off != tombstone.deleted_at:
        return None  # archiving had stopped before (a plan without backups): nothing later
    final = await engine.last_archived_at(stopped)
    last = periods[-1]
    if final is None or (last.latest is not None and final <= last.latest):
        return None
    periods[-1] = dataclasses.replace(last, latest=final)
    updated = tombstone.model_copy(update={"archive_history": history_annotation(periods)})
    await bucket.put_json(key, updated.as_json())
    return updated
