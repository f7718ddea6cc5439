"""Pinned names: where backups go, which Secret holds the keys, what labels we own.

The four pinned facts (destination per tenant and app, the single ``ovh-s3-creds`` Secret,
gzip WAL compression, retention per tier) are asserted verbatim by the tests.
"""

from __future__ import annotations

from paas_pitr.names import validate_app, validate_cluster_name, validate_tenant

API_GROUP = "postgresql.cnpg.io"
API_VERSION = "postgresql.cnpg.io/v1"
BARMAN_API_VERSION = "barmancloud.cnpg.io/v1"
BARMAN_PLUGIN_NAME = "barman-cloud.cloudnative-pg.io"

ACCESS_KEY_ID_KEY = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY_KEY = "AWS_SECRET_ACCESS_KEY"
WAL_COMPRESSION = "gzip"

LABEL_PREFIX = "paas-pitr.io/"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "paas-pitr"
LABEL_TENANT = LABEL_PREFIX + "tenant"
LABEL_APP = LABEL_PREFIX + "app"
LABEL_ADDON = LABEL_PREFIX + "addon"
LABEL_PLAN = LABEL_PREFIX + "plan"
LABEL_TIER = LABEL_PREFIX + "tier"
LABEL_ROLE = LABEL_PREFIX + "role"
LABEL_RESTORE_ID = LABEL_PREFIX + "restore-id"
LABEL_IDEMPOTENCY = LABEL_PREFIX + "idempotency-key"
ANNOTATION_RESTORE_TARGET = LABEL_PREFIX + "restore-target"
ANNOTATION_RESTORE_REQUEST = LABEL_PREFIX + "restore-request"
# CNPG's own label on Backups created for a cluster.
CNPG_CLUSTER_LABEL = "cnpg.io/cluster"

ROLE_ADDON = "addon"
ROLE_RESTORE = "restore"


def destination_path(tenant: str, app: str, bucket: str = "paas-pg-backups") -> str:
    """``s3://paas-pg-backups/{tenant}/{app}``: one prefix per tenant and app, never shared."""
    validate_tenant(tenant)
    validate_app(app)
    return f"s3://{bucket}/{tenant}/{app}"


def object_store_name(cluster_name: str) -> str:
    return f"{validate_cluster_name(cluster_name)}-store"


def scheduled_backup_name(cluster_name: str) -> str:
    return f"{validate_cluster_name(cluster_name)}-daily"


def recovery_cluster_name(source_cluster: str, restore_id: str) -> str:
    """``{source}-r{8 hex of the restore id}``: a never-used server folder for every restore."""
    short = restore_id.replace("-", "")[:8].lower()
    return validate_cluster_name(f"{source_cluster}-r{short}")
