"""The embedded S3 server across restarts: a server a killed service left behind is
stopped, and when its port is taken the addons keep archiving and restoring on the new one
(their objects keep the URL they were written with)."""

from __future__ import annotations

import socket

from paas_pitr.timestamps import format_api_time
from tests.integration.local.conftest import LocalApi, wait_for
from tests.integration.local.test_pitr import (
    damage,
    instant_between_commits,
    snapshot,
    switch_wal,
    write_initial_data,
)


def test_a_leftover_server_is_stopped_and_its_port_kept(local_api: LocalApi) -> None:
    s3 = local_api.engine.s3
    assert s3 is not None and s3.running()
    url = s3.url
    # What a service killed with -9 leaves: its server running, known only by its pid file.
    orphan = s3.abandon()
    assert orphan is not None
    local_api.restart()
    assert orphan.wait(timeout=30) is not None  # stopped by the new run
    new = local_api.engine.s3
    assert new is not None and new.running() and new.url == url


def test_addons_follow_the_server_to_another_port(local_api: LocalApi) -> None:
    addon = local_api.create_addon("pro")
    addon_id, uri = addon["addon_id"], addon["connection"]["uri"]
    local_api.wait_backups_completed("app-1", addon_id)
    local_api.wait_current_range("app-1", addon_id)
    s3 = local_api.engine.s3
    assert s3 is not None
    old_url = s3.url
    local_api.stop()
    # Another program takes the port while the service is down.
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", int(old_url.rsplit(":", 1)[1])))
    squatter.listen()
    try:
        local_api.start()
        s3 = local_api.engine.s3
        assert s3 is not None and s3.url != old_url
        local_api.wait_ready("app-1", addon_id)
        cluster = local_api.engine.objects.get("Cluster", addon_id)
        assert cluster is not None
        store = cluster["spec"].get("backup", {}).get("barmanObjectStore") or {}
        if store:  # in-tree: the object still names the URL it was written with
            assert store["endpointURL"] == old_url
        write_initial_data(uri)
        target = instant_between_commits()
        expected = snapshot(uri)
        damage(uri)
        switch_wal(local_api, addon_id)
        wait_for(
            lambda: local_api.backups("app-1", addon_id)["wal_archive"]["status"] == "healthy",
            what="archiving on the new port",
        )
        restore = local_api.restore_when_restorable("app-1", addon_id, format_api_time(target))
        assert snapshot(restore["connection"]["uri"]) == expected
    finally:
        squatter.close()
