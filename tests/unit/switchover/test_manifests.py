"""What the two Clusters look like once switched: each folder keeps being written by the
data it holds, in both CNPG forms."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import (
    PointInTime,
    RenderConfig,
    build_addon_manifests,
    build_recovery_cluster,
)
from paas_pitr.cnpg.history import (
    ArchivePeriod,
    archive_periods,
    incarnation_annotations,
    incarnation_server_name_of,
)
from paas_pitr.engines.base import Manifest
from paas_pitr.switchover.manifests import switched_pair, undone_pair
from paas_pitr.switchover.record import (
    ANNOTATION_SWITCHED_FROM,
    is_hibernated,
    switched_from,
)

OLD = "db-acme-app-1-0a0a0a0a"
NEW = "db-acme-app-1-1b1b1b1b"
SWITCH = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
LATEST = datetime(2026, 5, 4, 11, 59, 58, tzinfo=UTC)


def pair(mode: str) -> tuple[Manifest, Manifest]:
    config = RenderConfig(mode=mode)  # type: ignore[arg-type]
    addon = build_addon_manifests(
        version="16",
        plan="pro",
        tenant="acme",
        app="app-1",
        config=config,
        server_name=OLD,
        annotations=incarnation_annotations(OLD, [ArchivePeriod(on=None)]),
    ).cluster
    restored = build_recovery_cluster(
        source_cluster="db-acme-app-1",
        tenant="acme",
        app="app-1",
        restore_id="0123abcd",
        target=PointInTime(datetime(2026, 5, 4, 11, 0, tzinfo=UTC)),
        config=config,
        source_server_name=OLD,
        server_name=NEW,
    ).cluster
    return addon, restored


def archive_server(cluster: Manifest) -> str:
    spec = cluster["spec"]
    if "backup" in spec:
        return str(spec["backup"]["barmanObjectStore"]["serverName"])
    (plugin,) = spec["plugins"]
    return str(plugin["parameters"]["serverName"])


@pytest.mark.parametrize("mode", ["in-tree", "plugin"])
def test_a_switch_exchanges_the_incarnations(mode: str) -> None:
    addon, restored = pair(mode)
    closed = [ArchivePeriod(on=None, off=SWITCH, latest=LATEST)]
    active, kept = switched_pair(addon, restored, closed=closed)
    assert active["metadata"]["name"] == "db-acme-app-1"
    assert incarnation_server_name_of(active) == NEW == archive_server(active)
    assert archive_periods(active, archiving_now=True) == [ArchivePeriod(on=None)]
    assert switched_from(active) == [OLD]
    assert not is_hibernated(active)
    assert kept["metadata"]["name"] == "db-acme-app-1-r0123abcd"
    assert incarnation_server_name_of(kept) == OLD == archive_server(kept)
    assert archive_periods(kept, archiving_now=False) == closed
    assert is_hibernated(kept)
    # The recovery source is untouched: it names where the restored data came from.
    assert kept["spec"]["bootstrap"] == restored["spec"]["bootstrap"]


def test_an_undo_gives_the_addon_its_folder_back_archiving_again_from_the_undo() -> None:
    addon, restored = pair("in-tree")
    closed = [ArchivePeriod(on=None, off=SWITCH, latest=LATEST)]
    active, kept = switched_pair(addon, restored, closed=closed)
    undone_at = datetime(2026, 5, 4, 13, 0, tzinfo=UTC)
    restored_closed = [ArchivePeriod(on=None, off=undone_at, latest=undone_at)]
    back, kept_again = undone_pair(active, kept, closed=restored_closed, at=undone_at)
    assert incarnation_server_name_of(back) == OLD == archive_server(back)
    assert archive_periods(back, archiving_now=True) == [
        ArchivePeriod(on=None, off=SWITCH, latest=LATEST),
        ArchivePeriod(on=undone_at),
    ]
    assert json.loads(back["metadata"]["annotations"][ANNOTATION_SWITCHED_FROM]) == [NEW]
    assert incarnation_server_name_of(kept_again) == NEW == archive_server(kept_again)
    assert archive_periods(kept_again, archiving_now=False) == restored_closed
    assert is_hibernated(kept_again) and not is_hibernated(back)
    assert naming.ANNOTATION_RESTORE_REQUEST not in back["metadata"]["annotations"]
