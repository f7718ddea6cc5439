"""The local engine's backup controller, against a fake barman-cloud and a temporary object
database: schedules firing, retention and the recovery window it writes, and backups
interrupted by a restart settled against the catalog. No process runs; each test takes
milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import RenderConfig, build_backup
from paas_pitr.cnpg.projections import archive_server_name
from paas_pitr.cnpg.schedule import next_run
from paas_pitr.engines.base import Manifest
from paas_pitr.timestamps import format_k8s_time, parse_k8s_time
from tests.unit.engines.local.fakes import ENDPOINT, T0, World, catalog_entry

DESTINATION = "s3://paas-pg-backups/acme/app-1"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    created = World(tmp_path)
    yield created
    created.close()


@pytest.fixture
def plugin_world(tmp_path: Path) -> Iterator[World]:
    created = World(tmp_path, mode="plugin")
    yield created
    created.close()


def scheduled(world: World, cluster: Manifest) -> Manifest:
    (found,) = world.objects.list("ScheduledBackup")
    assert found["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    return found


def backups_of(world: World, cluster: Manifest) -> list[Manifest]:
    return world.objects.list("Backup", {naming.CNPG_CLUSTER_LABEL: cluster["metadata"]["name"]})


async def take_backups(world: World) -> None:
    """One reconcile of the Backups, and the backups it started, to their end."""
    await world.backups.reconcile_backups()
    await asyncio.gather(*list(world.backups.tasks.values()))


def on_demand(world: World, cluster: Manifest, name: str) -> Manifest:
    config = RenderConfig(mode=world.mode, endpoint_url=ENDPOINT)  # type: ignore[arg-type]
    return world.objects.put(build_backup(cluster, name, config))


# --- schedules -----------------------------------------------------------------------------


async def test_an_immediate_schedule_fires_at_once_then_at_its_next_time(world: World) -> None:
    cluster = world.addon("pro")
    schedule = scheduled(world, cluster)["spec"]["schedule"]
    await world.backups.reconcile_schedules(now=T0)

    (backup,) = backups_of(world, cluster)
    labels = backup["metadata"]["labels"]
    assert labels["cnpg.io/immediateBackup"] == "true"
    assert labels["cnpg.io/scheduled-backup"] == scheduled(world, cluster)["metadata"]["name"]
    assert backup["metadata"]["ownerReferences"][0]["uid"] == cluster["metadata"]["uid"]
    assert backup["spec"] == {
        "cluster": {"name": cluster["metadata"]["name"]},
        "method": "barmanObjectStore",
    }
    status = scheduled(world, cluster)["status"]
    assert status["lastScheduleTime"] == format_k8s_time(T0)
    assert status["nextScheduleTime"] == format_k8s_time(next_run(schedule, T0))

    # Not due before the next run of the schedule; due at it, and not "immediate" then.
    upcoming = next_run(schedule, T0)
    await world.backups.reconcile_schedules(now=upcoming - timedelta(seconds=1))
    assert len(backups_of(world, cluster)) == 1
    assert scheduled(world, cluster)["status"]["lastCheckTime"] == format_k8s_time(
        upcoming - timedelta(seconds=1)
    )
    await world.backups.reconcile_schedules(now=upcoming)
    fired = [
        b for b in backups_of(world, cluster) if b["metadata"]["name"] != backup["metadata"]["name"]
    ]
    assert len(fired) == 1
    assert "cnpg.io/immediateBackup" not in fired[0]["metadata"]["labels"]
    status = scheduled(world, cluster)["status"]
    assert status["lastScheduleTime"] == format_k8s_time(upcoming)
    assert status["nextScheduleTime"] == format_k8s_time(next_run(schedule, upcoming))


async def test_a_schedule_that_is_not_immediate_waits_for_its_first_time(world: World) -> None:
    cluster = world.addon("pro", scheduled=False)
    from paas_pitr.cnpg.builders import build_scheduled_backup

    config = RenderConfig(mode="in-tree", endpoint_url=ENDPOINT)
    manifest = build_scheduled_backup(cluster, config)
    assert manifest is not None
    manifest["spec"]["immediate"] = False
    stored = world.objects.put(manifest)
    created = parse_k8s_time(stored["metadata"]["creationTimestamp"])
    assert created is not None
    first = next_run(manifest["spec"]["schedule"], created)

    await world.backups.reconcile_schedules(now=first - timedelta(seconds=1))
    assert backups_of(world, cluster) == []
    assert scheduled(world, cluster)["status"]["nextScheduleTime"] == format_k8s_time(first)
    await world.backups.reconcile_schedules(now=first)
    assert len(backups_of(world, cluster)) == 1


async def test_no_schedule_fires_for_a_cluster_that_is_not_ready(world: World) -> None:
    cluster = world.addon("pro")
    world.instances[cluster["metadata"]["name"]].ready = False
    await world.backups.reconcile_schedules(now=T0)
    assert backups_of(world, cluster) == []
    assert "status" not in scheduled(world, cluster)


async def test_a_suspended_schedule_never_fires(world: World) -> None:
    cluster = world.addon("pro")
    manifest = scheduled(world, cluster)
    manifest["spec"]["suspend"] = True
    world.objects.put(manifest)
    await world.backups.reconcile_schedules(now=T0)
    assert backups_of(world, cluster) == []


# --- backups, retention and the recovery window -------------------------------------------


async def test_a_backup_then_retention_and_the_window_in_the_cluster_status(world: World) -> None:
    cluster = world.addon("pro")
    name = cluster["metadata"]["name"]
    server = archive_server_name(cluster)
    assert server is not None
    catalog = world.barman.catalog(DESTINATION, server)
    old = catalog_entry("20260301T030000", T0 - timedelta(days=61), name="old")
    kept = catalog_entry("20260420T030000", T0 - timedelta(days=11), name="kept")
    catalog.extend([old, kept])
    # The Backup object of the backup retention removes: deleted with its data.
    on_demand(world, cluster, "old")
    world.objects.update_status(
        "Backup", "old", {"phase": "completed", "backupId": old["backup_id"]}
    )
    world.barman.expire = {old["backup_id"]}
    world.barman.clock = T0
    on_demand(world, cluster, "today")

    await take_backups(world)

    (retention,) = [c for c in world.barman.ran("barman-cloud-backup-delete") if "-r" in c]
    assert retention[retention.index("-r") + 1] == "RECOVERY WINDOW OF 35 DAYS"
    assert retention[-2:] == [DESTINATION, server]
    status = world.cluster(name)["status"]
    assert status["firstRecoverabilityPoint"] == format_k8s_time(T0 - timedelta(days=11))
    assert status["lastSuccessfulBackup"] == format_k8s_time(T0)
    ready = {c["type"]: c for c in status["conditions"]}["LastBackupSucceeded"]
    assert ready["status"] == "True"
    assert world.objects.get("Backup", "old") is None
    today = world.objects.get("Backup", "today")
    assert today is not None
    assert today["status"]["phase"] == "completed"
    assert today["status"]["backupId"] == "20260501T030000"
    assert today["status"]["stoppedAt"] == format_k8s_time(T0)
    assert today["status"]["serverName"] == server  # in-tree: copies of the configuration
    assert today["status"]["majorVersion"] == 16
    assert world.backups.tasks == {}
    assert world.wakes == 1


async def test_with_the_plugin_the_window_goes_to_the_object_store(plugin_world: World) -> None:
    world = plugin_world
    cluster = world.addon("standard")
    name = cluster["metadata"]["name"]
    server = archive_server_name(cluster)
    assert server is not None
    world.barman.clock = T0
    on_demand(world, cluster, "today")

    await take_backups(world)

    (retention,) = [c for c in world.barman.ran("barman-cloud-backup-delete") if "-r" in c]
    assert retention[retention.index("-r") + 1] == "RECOVERY WINDOW OF 7 DAYS"
    (store,) = world.objects.list("ObjectStore")
    assert store["status"]["serverRecoveryWindow"] == {
        server: {
            "firstRecoverabilityPoint": format_k8s_time(T0),
            "lastSuccessfulBackupTime": format_k8s_time(T0),
        }
    }
    assert "firstRecoverabilityPoint" not in world.cluster(name)["status"]
    today = world.objects.get("Backup", "today")
    assert today is not None
    assert today["status"]["method"] == "plugin"
    assert today["status"]["serverName"] is None  # plugin: the ObjectStore has it


async def test_a_failed_backup_leaves_no_started_entry_and_says_why(world: World) -> None:
    cluster = world.addon("pro")
    name = cluster["metadata"]["name"]
    server = archive_server_name(cluster)
    assert server is not None
    world.barman.backup_status = "STARTED"
    world.barman.backup_returncode = 1
    on_demand(world, cluster, "broken")

    await take_backups(world)

    assert world.barman.catalog(DESTINATION, server) == []  # its leftovers deleted
    (delete,) = world.barman.ran("barman-cloud-backup-delete")
    assert "-b" in delete
    broken = world.objects.get("Backup", "broken")
    assert broken is not None
    assert broken["status"]["phase"] == "failed"
    assert broken["status"]["error"].startswith("barman-cloud-backup failed")
    status = world.cluster(name)["status"]
    assert {c["type"]: c for c in status["conditions"]}["LastBackupSucceeded"]["status"] == (
        "False"
    )
    assert status["lastFailedBackup"]


async def test_one_backup_at_a_time_per_cluster_and_none_while_not_ready(world: World) -> None:
    cluster = world.addon("pro")
    on_demand(world, cluster, "first")
    on_demand(world, cluster, "second")
    world.instances[cluster["metadata"]["name"]].ready = False
    await world.backups.reconcile_backups()
    assert world.backups.tasks == {}
    phases = {b["metadata"]["name"]: b["status"]["phase"] for b in backups_of(world, cluster)}
    assert phases == {"first": "pending", "second": "pending"}

    world.instances[cluster["metadata"]["name"]].ready = True
    await world.backups.reconcile_backups()
    (task,) = world.backups.tasks.values()
    assert task.get_name() in ("backup-first", "backup-second")
    await task


# --- backups interrupted by a restart -------------------------------------------------------


async def test_interrupted_backups_are_adopted_or_their_leftovers_deleted(world: World) -> None:
    cluster = world.addon("pro")
    server = archive_server_name(cluster)
    assert server is not None
    catalog = world.barman.catalog(DESTINATION, server)
    done = catalog_entry("20260501T030000", T0, name="finished-meanwhile")
    started = catalog_entry("20260501T040000", T0, name="left-started", status="STARTED")
    catalog.extend([done, started])
    for backup in ("finished-meanwhile", "left-started", "never-started"):
        on_demand(world, cluster, backup)
        world.objects.update_status("Backup", backup, {"phase": "running"})
    on_demand(world, cluster, "completed-before")
    world.objects.update_status("Backup", "completed-before", {"phase": "completed"})

    interrupted = world.backups.recover_interrupted()

    assert sorted(interrupted) == ["finished-meanwhile", "left-started", "never-started"]
    # Undecided until the catalog is read: a completed one must not read failed meanwhile.
    for backup in interrupted:
        found = world.objects.get("Backup", backup)
        assert found is not None
        assert found["status"]["phase"] == "running"

    await world.backups.settle_interrupted(interrupted)

    def status(backup: str) -> dict[str, Any]:
        found = world.objects.get("Backup", backup)
        assert found is not None
        return dict(found["status"])

    assert status("finished-meanwhile")["phase"] == "completed"
    assert status("finished-meanwhile")["backupId"] == done["backup_id"]
    assert status("finished-meanwhile")["error"] is None
    assert status("left-started")["phase"] == "failed"
    assert status("never-started")["phase"] == "failed"
    assert "interrupted" in status("never-started")["error"]
    assert status("completed-before")["phase"] == "completed"
    (delete,) = world.barman.ran("barman-cloud-backup-delete")
    assert delete[delete.index("-b") + 1] == started["backup_id"]
    assert [b["backup_id"] for b in catalog] == [done["backup_id"]]


async def test_settling_waits_for_credentials(world: World) -> None:
    cluster = world.addon("pro")
    on_demand(world, cluster, "running")
    world.objects.update_status("Backup", "running", {"phase": "running"})
    world.secrets.delete("ovh-s3-creds")
    interrupted = world.backups.recover_interrupted()
    settling = asyncio.create_task(
        world.backups.settle_interrupted(interrupted, retry_seconds=0.01, give_up_seconds=0.2)
    )
    await asyncio.sleep(0.05)
    found = world.objects.get("Backup", "running")
    assert found is not None and found["status"]["phase"] == "running"  # asked again
    await settling  # logged, not raised; then failed, never left running
    found = world.objects.get("Backup", "running")
    assert found is not None and found["status"]["phase"] == "failed"
    assert world.barman.commands == []
