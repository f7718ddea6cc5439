"""Pure builders: a plan (and a restore request) -> the CNPG objects that implement it.

Two forms of the same configuration are supported: the in-tree
``spec.backup.barmanObjectStore`` (deprecated since CNPG 1.26, removed in 1.31) and the
Barman Cloud Plugin (an ``ObjectStore`` plus ``spec.plugins``). ``RenderConfig.mode`` picks
one; every builder supports both.

Over 400 lines on purpose: the addon's and the recovery cluster's builders share the
label, metadata, credentials and spec helpers, and must render both forms the same way;
kept in one module, a change to one form is seen next to the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.schedule import daily_schedule_for, validate_daily_schedule
from paas_pitr.cnpg.targets import ExtendedTarget, render_extended
from paas_pitr.errors import InvalidInput
from paas_pitr.names import (
    default_addon_id,
    validate_addon_id,
    validate_app,
    validate_cluster_name,
    validate_label,
    validate_tenant,
)
from paas_pitr.plans import Tier, parse_tier, policy_for, tier_for_plan
from paas_pitr.settings import DEFAULT_S3_ENDPOINT, Settings
from paas_pitr.timestamps import render_target_time

Manifest = dict[str, Any]
RenderMode = Literal["in-tree", "plugin"]


@dataclass(frozen=True, slots=True)
class RenderConfig:
    """Everything the builders need from the settings, as plain values (no I/O, no env)."""

    mode: RenderMode = "in-tree"
    namespace: str = "paas-apps"
    bucket: str = "paas-pg-backups"
    endpoint_url: str = DEFAULT_S3_ENDPOINT
    secret_name: str = "ovh-s3-creds"
    instances: int = 3
    storage_size: str = "50Gi"
    image_repository: str = "ghcr.io/cloudnative-pg/postgresql"
    default_version: str = "16"
    backup_schedule: str | None = None
    data_compression: str | None = "lz4"
    archive_timeout_seconds: int = 60
    recovery_wal_max_parallel: int = 4
    wal_archive_max_parallel: int = 4

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        mode: RenderMode | None = None,
        endpoint_url: str | None = None,
    ) -> RenderConfig:
        compression = settings.base_backup_compression
        return cls(
            mode=mode or settings.resolved_cnpg_mode(),
            namespace=settings.namespace,
            bucket=settings.bucket,
            endpoint_url=endpoint_url or settings.effective_s3_endpoint_url,
            secret_name=settings.s3_secret_name,
            instances=settings.instances,
            storage_size=settings.storage_size,
            image_repository=settings.image_repository,
            default_version=settings.default_pg_version,
            backup_schedule=settings.backup_schedule,
            data_compression=None if compression == "none" else compression,
            archive_timeout_seconds=settings.archive_timeout_seconds,
            recovery_wal_max_parallel=settings.recovery_wal_max_parallel,
            wal_archive_max_parallel=settings.wal_archive_max_parallel,
        )


DEFAULT_CONFIG = RenderConfig()


def _as_tier(tier: Tier | str) -> Tier:
    return tier if isinstance(tier, Tier) else parse_tier(tier)


def _s3_credentials(config: RenderConfig) -> Manifest:
    # One platform-managed Secret for every tenant, created once by the operator runbook;
    # never one per tenant.
    return {
        "accessKeyId": {"name": config.secret_name, "key": naming.ACCESS_KEY_ID_KEY},
        "secretAccessKey": {"name": config.secret_name, "key": naming.SECRET_ACCESS_KEY_KEY},
    }


def barman_object_store(
    tenant: str,
    app: str,
    config: RenderConfig = DEFAULT_CONFIG,
    *,
    server_name: str | None = None,
    for_recovery: bool = False,
) -> Manifest:
    """The ``BarmanObjectStoreConfiguration`` shared by both forms and by recovery entries."""
    store: Manifest = {
        "destinationPath": naming.destination_path(tenant, app, config.bucket),
        "endpointURL": config.endpoint_url,
        "s3Credentials": _s3_credentials(config),
    }
    if server_name is not None:
        store["serverName"] = validate_label(server_name, what="server name")
    if for_recovery:
        store["wal"] = {"maxParallel": config.recovery_wal_max_parallel}
        return store
    store["wal"] = {
        "compression": naming.WAL_COMPRESSION,
        "maxParallel": config.wal_archive_max_parallel,
    }
    data: Manifest = {"immediateCheckpoint": True, "jobs": 2}
    if config.data_compression:
        data["compression"] = config.data_compression
    store["data"] = data
    return store


def backup_config_for_plan(
    tier: Tier | str,
    tenant: str,
    app: str,
    config: RenderConfig = DEFAULT_CONFIG,
    *,
    server_name: str | None = None,
) -> Manifest | None:
    """The in-tree ``spec.backup`` stanza for a tier, or ``None`` for the ``none`` tier.

    No ``archivingMode``: it is not a CNPG field (the API server refuses it under strict
    field validation); WAL archiving is always on once an object store is configured.
    """
    policy = policy_for(_as_tier(tier))
    if not policy.has_backups:
        validate_tenant(tenant)
        validate_app(app)
        return None
    return {
        "retentionPolicy": policy.retention,
        "barmanObjectStore": barman_object_store(tenant, app, config, server_name=server_name),
    }


def _labels(
    *, tenant: str, app: str, addon_id: str, plan: str | None, tier: Tier, role: str
) -> dict[str, str]:
    labels = {
        naming.LABEL_MANAGED_BY: naming.MANAGER,
        naming.LABEL_TENANT: tenant,
        naming.LABEL_APP: app,
        naming.LABEL_ADDON: addon_id,
        naming.LABEL_TIER: tier.value,
        naming.LABEL_ROLE: role,
    }
    if plan is not None:
        labels[naming.LABEL_PLAN] = validate_label(plan, what="plan")
    return labels


def _metadata(name: str, config: RenderConfig, labels: dict[str, str]) -> Manifest:
    return {"name": name, "namespace": config.namespace, "labels": dict(labels)}


def build_object_store(
    tier: Tier | str,
    tenant: str,
    app: str,
    cluster_name: str,
    config: RenderConfig = DEFAULT_CONFIG,
    *,
    labels: dict[str, str] | None = None,
) -> Manifest:
    """The plugin-form ``ObjectStore`` for a cluster (``serverName`` is forbidden here by a
    CEL rule: the server folder is chosen by the Cluster's plugin parameters)."""
    policy = policy_for(_as_tier(tier))
    spec: Manifest = {"configuration": barman_object_store(tenant, app, config)}
    if policy.retention:
        spec["retentionPolicy"] = policy.retention
    return {
        "apiVersion": naming.BARMAN_API_VERSION,
        "kind": "ObjectStore",
        "metadata": _metadata(naming.object_store_name(cluster_name), config, labels or {}),
        "spec": spec,
    }


def plugin_entry(object_store: str, server_name: str) -> Manifest:
    return {
        "name": naming.BARMAN_PLUGIN_NAME,
        "isWALArchiver": True,
        "parameters": {"barmanObjectName": object_store, "serverName": server_name},
    }


def _image(version: str, config: RenderConfig) -> str:
    validate_label(version.replace(".", "-"), what="version")
    return f"{config.image_repository}:{version}"


def _check_tier_matches_plan(plan: str, tier: Tier) -> None:
    expected = tier_for_plan(plan)
    if expected is not tier:
        raise InvalidInput(
            f"plan {plan!r} has backup tier {expected.value!r}, not {tier.value!r}",
            details={"plan": plan, "tier": tier.value, "expected_tier": expected.value},
        )


def _cluster_spec(
    version: str,
    tier: Tier,
    tenant: str,
    app: str,
    cluster_name: str,
    config: RenderConfig,
    server_name: str | None = None,
) -> Manifest:
    spec: Manifest = {
        "instances": config.instances,
        "imageName": _image(version, config),
        "storage": {"size": config.storage_size},
    }
    policy = policy_for(tier)
    if policy.point_in_time:
        # Bounds how stale the newest restorable instant can be on an idle database
        # (CNPG's default is 5 minutes).
        spec["postgresql"] = {
            "parameters": {"archive_timeout": f"{config.archive_timeout_seconds}s"}
        }
    if not policy.has_backups:
        return spec
    if config.mode == "in-tree":
        spec["backup"] = backup_config_for_plan(tier, tenant, app, config, server_name=server_name)
    else:
        spec["plugins"] = [
            plugin_entry(naming.object_store_name(cluster_name), server_name or cluster_name)
        ]
    return spec


def build_cluster_spec_full(
    version: str,
    plan: str,
    tier: Tier | str,
    tenant: str,
    app: str,
    *,
    addon_id: str | None = None,
    config: RenderConfig = DEFAULT_CONFIG,
    server_name: str | None = None,
    annotations: dict[str, str] | None = None,
) -> Manifest:
    """The whole ``Cluster`` object of an addon, named after the addon id.

    ``server_name`` is the folder its archive goes to (default: the cluster's name, Barman's
    default); the control plane passes a fresh one per incarnation
    (:func:`paas_pitr.cnpg.naming.incarnation_server_name`).
    """
    resolved_tier = _as_tier(tier)
    _check_tier_matches_plan(plan, resolved_tier)
    validate_tenant(tenant)
    validate_app(app)
    name = validate_addon_id(addon_id) if addon_id else default_addon_id(tenant, app)
    labels = _labels(
        tenant=tenant,
        app=app,
        addon_id=name,
        plan=plan,
        tier=resolved_tier,
        role=naming.ROLE_ADDON,
    )
    metadata = _metadata(name, config, labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": naming.API_VERSION,
        "kind": "Cluster",
        "metadata": metadata,
        "spec": _cluster_spec(version, resolved_tier, tenant, app, name, config, server_name),
    }


def _backup_method(config: RenderConfig) -> Manifest:
    if config.mode == "in-tree":
        return {"method": "barmanObjectStore"}
    return {"method": "plugin", "pluginConfiguration": {"name": naming.BARMAN_PLUGIN_NAME}}


def owner_reference(cluster: Manifest) -> Manifest | None:
    """An owner reference to a Cluster as the API server returned it (needs its uid)."""
    uid = (cluster.get("metadata") or {}).get("uid")
    if not uid:
        return None
    return {
        "apiVersion": naming.API_VERSION,
        "kind": "Cluster",
        "name": cluster["metadata"]["name"],
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_scheduled_backup(
    cluster: Manifest, config: RenderConfig = DEFAULT_CONFIG
) -> Manifest | None:
    """The daily ``ScheduledBackup`` of a cluster, or ``None`` when its tier has no backups.

    ``immediate`` takes the first backup right away, so the window opens without waiting a
    day. Generated Backups are owned by the Cluster: they outlive a plan change to free
    (the archives are kept) and go with the Cluster.
    """
    labels: dict[str, str] = dict(cluster["metadata"].get("labels") or {})
    tier = parse_tier(labels.get(naming.LABEL_TIER, Tier.NONE.value))
    if not policy_for(tier).scheduled_base_backups:
        return None
    cluster_name = cluster["metadata"]["name"]
    schedule = (
        validate_daily_schedule(config.backup_schedule)
        if config.backup_schedule
        else daily_schedule_for(cluster_name)
    )
    metadata = _metadata(naming.scheduled_backup_name(cluster_name), config, labels)
    owner = owner_reference(cluster)
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": naming.API_VERSION,
        "kind": "ScheduledBackup",
        "metadata": metadata,
        "spec": {
            "cluster": {"name": cluster_name},
            "schedule": schedule,
            "immediate": True,
            "backupOwnerReference": "cluster",
            **_backup_method(config),
        },
    }


def build_backup(cluster: Manifest, name: str, config: RenderConfig = DEFAULT_CONFIG) -> Manifest:
    """An on-demand ``Backup`` of a cluster (labelled like CNPG labels scheduled ones)."""
    labels: dict[str, str] = dict(cluster["metadata"].get("labels") or {})
    labels[naming.CNPG_CLUSTER_LABEL] = cluster["metadata"]["name"]
    # Object names may be DNS subdomains of up to 253 characters (labels only 63).
    metadata = _metadata(validate_label(name, what="backup name", max_length=253), config, labels)
    owner = owner_reference(cluster)
    if owner is not None:
        # Like the scheduled ones: the Backup object goes with its Cluster (never the data).
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": naming.API_VERSION,
        "kind": "Backup",
        "metadata": metadata,
        "spec": {"cluster": {"name": cluster["metadata"]["name"]}, **_backup_method(config)},
    }


@dataclass(frozen=True, slots=True)
class AddonManifests:
    cluster: Manifest
    object_store: Manifest | None = None
    scheduled_backup: Manifest | None = None

    def objects(self) -> list[Manifest]:
        """In apply order: the ObjectStore the Cluster refers to comes first."""
        found = [self.object_store, self.cluster, self.scheduled_backup]
        return [obj for obj in found if obj is not None]


def build_addon_manifests(
    *,
    version: str,
    plan: str,
    tenant: str,
    app: str,
    addon_id: str | None = None,
    config: RenderConfig = DEFAULT_CONFIG,
    server_name: str | None = None,
    annotations: dict[str, str] | None = None,
) -> AddonManifests:
    tier = tier_for_plan(plan)
    cluster = build_cluster_spec_full(
        version,
        plan,
        tier,
        tenant,
        app,
        addon_id=addon_id,
        config=config,
        server_name=server_name,
        annotations=annotations,
    )
    object_store = None
    if config.mode == "plugin" and policy_for(tier).has_backups:
        object_store = build_object_store(
            tier,
            tenant,
            app,
            cluster["metadata"]["name"],
            config,
            labels=cluster["metadata"]["labels"],
        )
    return AddonManifests(cluster, object_store, build_scheduled_backup(cluster, config))


# --- recovery -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PointInTime:
    """Replay WAL up to this instant (pro tier); ``inclusive``: with the transactions that
    committed exactly then (PostgreSQL's default). From base backup ``backup_id`` when the
    control plane already chose it: rendered as ``backupID``, so the operator restores that
    one instead of listing the catalog again to choose."""

    at: datetime
    inclusive: bool = True
    backup_id: str | None = None


@dataclass(frozen=True, slots=True)
class BackupEnd:
    """Restore one base backup to its consistency point (standard tier)."""

    backup_id: str
    ends_at: datetime | None = None


RecoveryTarget = PointInTime | BackupEnd | ExtendedTarget

# The externalClusters entry name; any name works, this one reads well in `kubectl get -o yaml`.
RECOVERY_SOURCE = "origin"


def _recovery_target(target: RecoveryTarget) -> Manifest | None:
    if isinstance(target, PointInTime):
        rendered: Manifest = {"targetTime": render_target_time(target.at)}
        if not target.inclusive:
            rendered["exclusive"] = True
        if target.backup_id is not None:
            rendered["backupID"] = validate_backup_id(target.backup_id)
        return rendered
    if isinstance(target, BackupEnd):
        validate_backup_id(target.backup_id)
        return {"backupID": target.backup_id, "targetImmediate": True}
    if target.backup_id is not None:
        validate_backup_id(target.backup_id)
    return render_extended(target)


def validate_backup_id(backup_id: str) -> str:
    # Barman ids look like 20201026T135740; they end up in a recovery spec and an S3 key.
    if not backup_id or len(backup_id) > 64 or not backup_id.replace("T", "").isalnum():
        raise InvalidInput(f"invalid backup id {backup_id!r}", details={"backup_id": backup_id})
    return backup_id


@dataclass(frozen=True, slots=True)
class RecoveryManifests:
    """A recovery cluster gets no ScheduledBackup: it is a candidate to verify, not yet an
    addon. It archives WAL to its own folder from the start, so nothing is lost if it is
    adopted."""

    cluster: Manifest
    object_store: Manifest | None = None

    def objects(self) -> list[Manifest]:
        return [obj for obj in (self.object_store, self.cluster) if obj is not None]


def build_recovery_cluster(
    *,
    source_cluster: str,
    tenant: str,
    app: str,
    restore_id: str,
    target: RecoveryTarget,
    plan: str = "pro",
    version: str | None = None,
    config: RenderConfig = DEFAULT_CONFIG,
    extra_labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    source_server_name: str | None = None,
    server_name: str | None = None,
    role: str = naming.ROLE_RESTORE,
    name: str | None = None,
) -> RecoveryManifests:
    """A NEW Cluster bootstrapped from the source's archive; the source is never touched.

    The ``externalClusters`` entry reads the SOURCE's folder: its destinationPath (the
    pinned per-tenant, per-app prefix) and its serverName (the source cluster's name). The
    new cluster archives, if its tier archives at all, to its own never-used serverName, so
    it can neither fail the empty-archive check nor write into the source's history.

    ``source_server_name`` is the folder of the source incarnation (default: the source's
    cluster name); ``server_name`` the new cluster's own (default: its cluster name).
    ``role`` and ``name`` are a restore's unless given (a drill's cluster has its own).
    """
    validate_cluster_name(source_cluster)
    tier = tier_for_plan(plan)
    name = (
        validate_cluster_name(name)
        if name is not None
        else naming.recovery_cluster_name(source_cluster, restore_id)
    )
    source_server = validate_label(source_server_name or source_cluster, what="server name")
    own_server = validate_label(server_name or name, what="server name")
    labels = _labels(
        tenant=tenant,
        app=app,
        addon_id=source_cluster,
        plan=plan,
        tier=tier,
        role=role,
    )
    labels[naming.LABEL_RESTORE_ID] = validate_label(restore_id, what="restore id")
    labels.update(extra_labels or {})
    metadata = _metadata(name, config, labels)
    metadata["annotations"] = {
        **(annotations or {}),
        naming.ANNOTATION_SERVER_NAME: own_server,
    }

    object_store: Manifest | None = None
    if config.mode == "in-tree":
        external: Manifest = {
            "name": RECOVERY_SOURCE,
            "barmanObjectStore": barman_object_store(
                tenant, app, config, server_name=source_server, for_recovery=True
            ),
        }
    else:
        # One ObjectStore of its own serves both reading the source folder and archiving to
        # the new one (the server names differ); it survives the source addon's deletion.
        object_store = build_object_store(tier, tenant, app, name, config, labels=labels)
        external = {
            "name": RECOVERY_SOURCE,
            "plugin": {
                "name": naming.BARMAN_PLUGIN_NAME,
                "parameters": {
                    "barmanObjectName": object_store["metadata"]["name"],
                    "serverName": source_server,
                },
            },
        }

    spec = _cluster_spec(
        version or config.default_version, tier, tenant, app, name, config, own_server
    )
    if config.mode == "in-tree" and "backup" in spec:
        # Explicit even when it equals the cluster name: it must differ from the source's.
        spec["backup"]["barmanObjectStore"]["serverName"] = own_server
    recovery: Manifest = {"source": RECOVERY_SOURCE}
    rendered = _recovery_target(target)
    if rendered is not None:
        recovery["recoveryTarget"] = rendered
    spec["bootstrap"] = {"recovery": recovery}
    spec["externalClusters"] = [external]
    cluster: Manifest = {
        "apiVersion": naming.API_VERSION,
        "kind": "Cluster",
        "metadata": metadata,
        "spec": spec,
    }
    return RecoveryManifests(cluster=cluster, object_store=object_store)
