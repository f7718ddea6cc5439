"""The restorable ranges of the incarnations an addon was switched away from.

After an in-place restore the addon archives to the restored incarnation's folder; the
folder it archived to before stays in the bucket (recorded like a deleted incarnation's,
with its retention counted from the switch), and its ranges stay in the addon's window, so
a later restore may go back to before the switch.
"""

from __future__ import annotations

import logging

from paas_pitr.archives import ArchiveService
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.window import RestorableRange
from paas_pitr.context import Caller
from paas_pitr.engines.base import Manifest
from paas_pitr.errors import ArchiveBucketNotConfigured, NotFound
from paas_pitr.switchover.record import switched_from
from paas_pitr.timestamps import format_api_time

log = logging.getLogger(__name__)


class PreviousRanges:
    """Called with an addon's Cluster: the ranges of the incarnations it was switched away
    from (oldest first), read from the bucket; empty when the control plane cannot read
    the bucket (the Kubernetes engine without its own S3 keys)."""

    def __init__(self, archives: ArchiveService) -> None:
        self.archives = archives

    async def __call__(self, cluster: Manifest) -> list[RestorableRange]:
        servers = switched_from(cluster)
        if not servers:
            return []
        labels = cluster["metadata"].get("labels", {})
        caller = Caller(tenant=labels[naming.LABEL_TENANT], role="operator", subject="paas-pitr")
        app, addon = labels[naming.LABEL_APP], cluster["metadata"]["name"]
        ranges: list[RestorableRange] = []
        for server in servers:
            try:
                _, incarnation = await self.archives.incarnation(caller, app, addon, server)
            except NotFound:
                continue  # expired with its retention
            except ArchiveBucketNotConfigured:
                log.info("no S3 keys of our own: the window omits %s's earlier ranges", addon)
                return []
            ended = incarnation.tombstone.deleted_at if incarnation.tombstone else None
            because = (
                f"the addon was switched to another incarnation at {format_api_time(ended)} "
                "(an in-place restore); restores of this range read its own archive folder"
                if ended
                else None
            )
            ranges += [
                RestorableRange(
                    earliest=span.earliest,
                    latest=span.latest,
                    latest_source="recorded",
                    server_name=server,
                    current=False,
                    ended_at=ended,
                    ended_because=because,
                )
                for span in incarnation.spans
            ]
        return sorted(ranges, key=lambda r: r.earliest)
