"""A finished base backup is read from its own ``backup.info`` in the bucket, the same
entry barman-cloud-backup-list gives, without starting that process."""

from __future__ import annotations

import asyncio

from paas_pitr.engines.local.barman import barman_time
from tests.integration.local.conftest import LocalApi


def test_the_catalog_entry_of_a_backup_is_barmans_own(local_api: LocalApi) -> None:
    addon_id = local_api.create_addon("pro")["addon_id"]
    (item,) = local_api.wait_backups_completed("app-1", addon_id)["items"]
    engine = local_api.engine
    cluster = engine.objects.get("Cluster", addon_id)
    assert cluster is not None
    config = engine.archives.own(cluster)
    assert config is not None
    credentials = engine.archives.credentials(config)
    endpoint = engine.archives.endpoint_for(config)

    entry = asyncio.run(engine.barman.catalog_entry(config, endpoint, credentials, item["name"]))
    listed = asyncio.run(engine.barman.backup_list(config, credentials))
    (barmans,) = [b for b in listed if b.get("backup_name") == item["name"]]
    assert entry is not None
    assert entry["backup_id"] == item["backup_id"] == barmans["backup_id"]
    for field in ("status", "begin_wal", "end_wal", "begin_xlog", "end_xlog"):
        assert entry[field] == barmans[field], field
    for edge in ("begin", "end"):
        assert barman_time(entry, edge) == barman_time(barmans, edge) is not None
    assert item["end_wal"] == entry["end_wal"]

    missing = asyncio.run(engine.barman.catalog_entry(config, endpoint, credentials, "no-such"))
    assert missing is None
