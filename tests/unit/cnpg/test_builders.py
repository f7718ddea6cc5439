from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import (
    BackupEnd,
    PointInTime,
    RenderConfig,
    backup_config_for_plan,
    build_addon_manifests,
    build_backup,
    build_cluster_spec_full,
    build_object_store,
    build_recovery_cluster,
    build_scheduled_backup,
)
from paas_pitr.errors import InvalidInput, InvalidName, InvalidSchedule, UnknownPlan
from paas_pitr.plans import Tier
from paas_pitr.settings import Settings

IN_TREE = RenderConfig(mode="in-tree")
PLUGIN = RenderConfig(mode="plugin")
CREDS = {
    "accessKeyId": {"name": "ovh-s3-creds", "key": "AWS_ACCESS_KEY_ID"},
    "secretAccessKey": {"name": "ovh-s3-creds", "key": "AWS_SECRET_ACCESS_KEY"},
}


def _walk_keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in _walk_keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _walk_keys(v)}
    return set()


# --- the pinned stanza ----------------------------------------------------------------


@pytest.mark.parametrize(("tier", "retention"), [("daily", "7d"), ("pitr", "35d")])
def test_backup_config_for_plan_pinned_naming(tier: str, retention: str) -> None:
    assert backup_config_for_plan(tier, "acme", "app-1") == {
        "retentionPolicy": retention,
        "barmanObjectStore": {
            "destinationPath": "s3://paas-pg-backups/acme/app-1",
            "endpointURL": "https://s3.gra.io.cloud.ovh.net",
            "s3Credentials": CREDS,
            "wal": {"compression": "snappy", "maxParallel": 4},
            "data": {"immediateCheckpoint": True, "jobs": 2, "compression": "lz4"},
        },
    }


def test_backup_config_for_free_plan_is_nothing() -> None:
    assert backup_config_for_plan(Tier.NONE, "acme", "app-1") is None


def test_destination_is_per_tenant_per_app_never_shared() -> None:
    paths = {
        backup_config_for_plan("pitr", tenant, app)["barmanObjectStore"]["destinationPath"]  # type: ignore[index]
        for tenant in ("acme", "globex")
        for app in ("app-1", "app-2")
    }
    assert len(paths) == 4
    for path in paths:
        _, _, _, tenant, app = path.split("/")
        assert tenant and app


def test_no_archiving_mode_anywhere() -> None:
    for mode in (IN_TREE, PLUGIN):
        for plan in ("free", "standard", "pro"):
            manifests = build_addon_manifests(
                version="16", plan=plan, tenant="acme", app="app-1", config=mode
            )
            assert "archivingMode" not in _walk_keys(manifests.objects())


def test_endpoint_comes_from_settings() -> None:
    config = RenderConfig.from_settings(
        Settings(s3_endpoint_url="http://127.0.0.1:9000", cnpg_mode="in-tree")
    )
    stanza = backup_config_for_plan("pitr", "acme", "app-1", config)
    assert stanza is not None
    assert stanza["barmanObjectStore"]["endpointURL"] == "http://127.0.0.1:9000"


def test_path_traversal_in_tenant_is_refused() -> None:
    with pytest.raises(InvalidName):
        backup_config_for_plan("pitr", "../other", "app-1")
    with pytest.raises(InvalidName):
        backup_config_for_plan("none", "acme", "App_1")


# --- Cluster ---------------------------------------------------------------------------


def test_cluster_in_tree_pro() -> None:
    cluster = build_cluster_spec_full("16", "pro", "pitr", "acme", "app-1", config=IN_TREE)
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["kind"] == "Cluster"
    assert cluster["metadata"]["name"] == "db-acme-app-1"
    assert cluster["metadata"]["namespace"] == "paas-apps"
    labels = cluster["metadata"]["labels"]
    assert labels[naming.LABEL_TENANT] == "acme"
    assert labels[naming.LABEL_APP] == "app-1"
    assert labels[naming.LABEL_ADDON] == "db-acme-app-1"
    assert labels[naming.LABEL_PLAN] == "pro"
    spec = cluster["spec"]
    assert spec["instances"] == 3
    assert spec["imageName"] == "ghcr.io/cloudnative-pg/postgresql:16"
    assert spec["storage"] == {"size": "50Gi"}
    assert spec["backup"] == backup_config_for_plan("pitr", "acme", "app-1")
    assert spec["postgresql"]["parameters"]["archive_timeout"] == "60s"
    assert "plugins" not in spec


def test_cluster_plugin_pro_refers_to_its_object_store() -> None:
    cluster = build_cluster_spec_full("16", "pro", Tier.PITR, "acme", "app-1", config=PLUGIN)
    assert "backup" not in cluster["spec"]
    assert cluster["spec"]["plugins"] == [
        {
            "name": "barman-cloud.cloudnative-pg.io",
            "isWALArchiver": True,
            "parameters": {
                "barmanObjectName": "db-acme-app-1-store",
                "serverName": "db-acme-app-1",
            },
        }
    ]


def test_cluster_standard_has_no_archive_timeout_override() -> None:
    cluster = build_cluster_spec_full("15", "standard", "daily", "acme", "app-1", config=IN_TREE)
    assert "postgresql" not in cluster["spec"]
    assert cluster["spec"]["backup"]["retentionPolicy"] == "7d"


@pytest.mark.parametrize("config", [IN_TREE, PLUGIN])
def test_cluster_free_has_no_backup(config: RenderConfig) -> None:
    cluster = build_cluster_spec_full("16", "free", "none", "acme", "app-1", config=config)
    assert "backup" not in cluster["spec"] and "plugins" not in cluster["spec"]


def test_cluster_explicit_addon_id() -> None:
    cluster = build_cluster_spec_full(
        "16", "pro", "pitr", "acme", "app-1", addon_id="orders-db", config=IN_TREE
    )
    assert cluster["metadata"]["name"] == "orders-db"
    # The archive folder is still the pinned per-tenant, per-app prefix.
    assert cluster["spec"]["backup"]["barmanObjectStore"]["destinationPath"] == (
        "s3://paas-pg-backups/acme/app-1"
    )


def test_tier_must_match_plan() -> None:
    with pytest.raises(InvalidInput, match="plan 'standard' has backup tier 'daily'"):
        build_cluster_spec_full("16", "standard", "pitr", "acme", "app-1")


def test_unknown_plan() -> None:
    with pytest.raises(UnknownPlan):
        build_addon_manifests(version="16", plan="gold", tenant="acme", app="app-1")


def test_bad_version_is_refused() -> None:
    with pytest.raises(InvalidName):
        build_cluster_spec_full("16; rm -rf", "pro", "pitr", "acme", "app-1")


# --- ObjectStore ------------------------------------------------------------------------


def test_object_store_carries_configuration_and_retention() -> None:
    store = build_object_store("daily", "acme", "app-1", "db-acme-app-1", PLUGIN)
    assert store["apiVersion"] == "barmancloud.cnpg.io/v1"
    assert store["kind"] == "ObjectStore"
    assert store["metadata"]["name"] == "db-acme-app-1-store"
    assert store["spec"]["retentionPolicy"] == "7d"
    configuration = store["spec"]["configuration"]
    assert configuration["destinationPath"] == "s3://paas-pg-backups/acme/app-1"
    assert configuration["s3Credentials"] == CREDS
    assert configuration["wal"] == {"compression": "snappy", "maxParallel": 4}
    assert "serverName" not in configuration  # forbidden by the CRD's CEL rule


def test_addon_manifests_apply_order() -> None:
    plugin = build_addon_manifests(
        version="16", plan="pro", tenant="acme", app="app-1", config=PLUGIN
    )
    assert [o["kind"] for o in plugin.objects()] == ["ObjectStore", "Cluster", "ScheduledBackup"]
    in_tree = build_addon_manifests(
        version="16", plan="pro", tenant="acme", app="app-1", config=IN_TREE
    )
    assert [o["kind"] for o in in_tree.objects()] == ["Cluster", "ScheduledBackup"]
    free = build_addon_manifests(
        version="16", plan="free", tenant="acme", app="app-1", config=PLUGIN
    )
    assert [o["kind"] for o in free.objects()] == ["Cluster"]


# --- ScheduledBackup --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "method"),
    [
        (IN_TREE, {"method": "barmanObjectStore"}),
        (
            PLUGIN,
            {"method": "plugin", "pluginConfiguration": {"name": "barman-cloud.cloudnative-pg.io"}},
        ),
    ],
)
def test_scheduled_backup(config: RenderConfig, method: dict[str, Any]) -> None:
    cluster = build_cluster_spec_full("16", "pro", "pitr", "acme", "app-1", config=config)
    cluster["metadata"]["uid"] = "6f1c-uid"
    scheduled = build_scheduled_backup(cluster, config)
    assert scheduled is not None
    assert scheduled["metadata"]["name"] == "db-acme-app-1-daily"
    assert scheduled["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "name": "db-acme-app-1",
            "uid": "6f1c-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    spec = scheduled["spec"]
    assert spec["cluster"] == {"name": "db-acme-app-1"}
    assert len(spec["schedule"].split()) == 6
    assert spec["immediate"] is True
    assert spec["backupOwnerReference"] == "cluster"
    assert {k: spec[k] for k in method} == method


def test_scheduled_backup_without_uid_has_no_owner_reference() -> None:
    cluster = build_cluster_spec_full("16", "pro", "pitr", "acme", "app-1")
    scheduled = build_scheduled_backup(cluster)
    assert scheduled is not None and "ownerReferences" not in scheduled["metadata"]


def test_scheduled_backup_from_settings_schedule() -> None:
    config = RenderConfig(backup_schedule="0 0 3 * * *")
    cluster = build_cluster_spec_full("16", "standard", "daily", "acme", "app-1", config=config)
    scheduled = build_scheduled_backup(cluster, config)
    assert scheduled is not None and scheduled["spec"]["schedule"] == "0 0 3 * * *"


def test_five_field_schedule_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="exactly 6"):
        Settings(backup_schedule="0 3 * * *")
    config = RenderConfig(backup_schedule="0 3 * * *")
    cluster = build_cluster_spec_full("16", "standard", "daily", "acme", "app-1", config=config)
    with pytest.raises(InvalidSchedule):
        build_scheduled_backup(cluster, config)


def test_free_plan_has_no_scheduled_backup() -> None:
    cluster = build_cluster_spec_full("16", "free", "none", "acme", "app-1")
    assert build_scheduled_backup(cluster) is None


def test_on_demand_backup() -> None:
    cluster = build_cluster_spec_full("16", "pro", "pitr", "acme", "app-1", config=PLUGIN)
    backup = build_backup(cluster, "db-acme-app-1-ondemand-1", PLUGIN)
    assert backup["kind"] == "Backup"
    assert backup["spec"] == {
        "cluster": {"name": "db-acme-app-1"},
        "method": "plugin",
        "pluginConfiguration": {"name": "barman-cloud.cloudnative-pg.io"},
    }
    assert backup["metadata"]["labels"]["cnpg.io/cluster"] == "db-acme-app-1"


# --- recovery ---------------------------------------------------------------------------

TARGET = PointInTime(datetime(2026, 5, 4, 17, 30, tzinfo=timezone(timedelta(hours=2))))


def test_a_point_in_time_from_a_chosen_backup_names_it() -> None:
    manifests = build_recovery_cluster(
        source_cluster="db-acme-app-1",
        tenant="acme",
        app="app-1",
        restore_id="0bd91f2a7c",
        target=PointInTime(TARGET.at, backup_id="20260504T030000"),
        config=IN_TREE,
    )
    assert manifests.cluster["spec"]["bootstrap"]["recovery"]["recoveryTarget"] == {
        "targetTime": "2026-05-04 15:30:00.000000+00:00",
        "backupID": "20260504T030000",
    }
    with pytest.raises(InvalidInput, match="invalid backup id"):
        build_recovery_cluster(
            source_cluster="db-acme-app-1",
            tenant="acme",
            app="app-1",
            restore_id="0bd91f2a7c",
            target=PointInTime(TARGET.at, backup_id="../other"),
            config=IN_TREE,
        )


def test_recovery_in_tree_reads_the_source_folder_and_archives_to_a_new_one() -> None:
    manifests = build_recovery_cluster(
        source_cluster="db-acme-app-1",
        tenant="acme",
        app="app-1",
        restore_id="0bd91f2a7c",
        target=TARGET,
        config=IN_TREE,
    )
    assert manifests.object_store is None
    cluster = manifests.cluster
    assert cluster["metadata"]["name"] == "db-acme-app-1-r0bd91f2a"
    assert cluster["metadata"]["labels"][naming.LABEL_RESTORE_ID] == "0bd91f2a7c"
    assert cluster["metadata"]["labels"][naming.LABEL_ROLE] == "restore"
    spec = cluster["spec"]
    assert spec["bootstrap"] == {
        "recovery": {
            "source": "origin",
            "recoveryTarget": {"targetTime": "2026-05-04 15:30:00.000000+00:00"},
        }
    }
    assert spec["externalClusters"] == [
        {
            "name": "origin",
            "barmanObjectStore": {
                # The SOURCE's folder: NOT the seed's s3://paas-pg-backups/db-acme-app-1.
                "destinationPath": "s3://paas-pg-backups/acme/app-1",
                "endpointURL": "https://s3.gra.io.cloud.ovh.net",
                "s3Credentials": CREDS,
                "serverName": "db-acme-app-1",
                "wal": {"maxParallel": 4},
            },
        }
    ]
    own = spec["backup"]["barmanObjectStore"]
    assert own["destinationPath"] == "s3://paas-pg-backups/acme/app-1"
    assert own["serverName"] == "db-acme-app-1-r0bd91f2a"
    assert own["serverName"] != spec["externalClusters"][0]["barmanObjectStore"]["serverName"]


def test_recovery_plugin_sets_server_names_explicitly() -> None:
    manifests = build_recovery_cluster(
        source_cluster="db-acme-app-1",
        tenant="acme",
        app="app-1",
        restore_id="0bd91f2a7c",
        target=TARGET,
        config=PLUGIN,
    )
    assert manifests.object_store is not None
    store_name = manifests.object_store["metadata"]["name"]
    assert store_name == "db-acme-app-1-r0bd91f2a-store"
    assert [o["kind"] for o in manifests.objects()] == ["ObjectStore", "Cluster"]
    spec = manifests.cluster["spec"]
    assert spec["externalClusters"] == [
        {
            "name": "origin",
            "plugin": {
                "name": "barman-cloud.cloudnative-pg.io",
                "parameters": {"barmanObjectName": store_name, "serverName": "db-acme-app-1"},
            },
        }
    ]
    assert spec["plugins"][0]["parameters"] == {
        "barmanObjectName": store_name,
        "serverName": "db-acme-app-1-r0bd91f2a",
    }


def test_recovery_to_a_named_backup() -> None:
    manifests = build_recovery_cluster(
        source_cluster="db-acme-app-1",
        tenant="acme",
        app="app-1",
        restore_id="abcdef0123",
        target=BackupEnd("20260504T030000"),
        plan="standard",
        config=IN_TREE,
    )
    assert manifests.cluster["spec"]["bootstrap"]["recovery"]["recoveryTarget"] == {
        "backupID": "20260504T030000",
        "targetImmediate": True,
    }


def test_recovery_refuses_bad_backup_ids_and_naive_times() -> None:
    with pytest.raises(InvalidInput):
        build_recovery_cluster(
            source_cluster="db-acme-app-1",
            tenant="acme",
            app="app-1",
            restore_id="abc",
            target=BackupEnd("../../x"),
        )
    with pytest.raises(InvalidInput):
        build_recovery_cluster(
            source_cluster="db-acme-app-1",
            tenant="acme",
            app="app-1",
            restore_id="abc",
            target=PointInTime(datetime(2026, 5, 4, 15, 30)),  # noqa: DTZ001
        )


def test_recovery_of_a_free_plan_cluster_does_not_archive() -> None:
    manifests = build_recovery_cluster(
        source_cluster="db-acme-app-1",
        tenant="acme",
        app="app-1",
        restore_id="abcdef0123",
        target=PointInTime(datetime(2026, 5, 4, tzinfo=UTC)),
        plan="free",
        config=IN_TREE,
    )
    assert "backup" not in manifests.cluster["spec"]
