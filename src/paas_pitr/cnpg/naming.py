"""Pinned names: where backups go, which Secret holds the keys, what labels we own.

The four pinned facts (destination per tenant and app, the single ``ovh-s3-creds`` Secret,
gzip WAL compression, retention per tier) are asserted verbatim by the tests.
"""

from __future__ import annotations

import re
import secrets

from paas_pitr.names import validate_app, validate_cluster_name, validate_label, validate_tenant

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
# The server folder this incarnation of a cluster archives under (kept while the plan has no
# backups, so a move back to a backup plan archives where it did before).
ANNOTATION_SERVER_NAME = LABEL_PREFIX + "server-name"
# When WAL archiving of this incarnation was switched on and off (JSON, see
# paas_pitr.cnpg.history): the Barman catalog alone cannot tell where the archive has gaps.
ANNOTATION_ARCHIVE_HISTORY = LABEL_PREFIX + "archive-history"
# CNPG's own label on Backups created for a cluster.
CNPG_CLUSTER_LABEL = "cnpg.io/cluster"

ROLE_ADDON = "addon"
ROLE_RESTORE = "restore"
# A restore drill's throwaway cluster: never listed among restores nor counted by their limits.
ROLE_DRILL = "drill"
LABEL_DRILL_ID = LABEL_PREFIX + "drill-id"


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


_INCARNATION_SUFFIX = re.compile(r"-[0-9a-f]{8}$")


def incarnation_server_name(cluster_name: str, token: str | None = None) -> str:
    """``{cluster}-{8 hex}``: the never-used server folder one incarnation archives under.

    A re-created addon gets the same cluster name as the one deleted before it; archiving
    under the cluster name would overwrite the kept WAL of the deleted incarnation (and trip
    CNPG's empty-archive check). ``token`` is for tests; by default it is random.
    """
    suffix = token if token is not None else secrets.token_hex(4)
    if not re.fullmatch(r"[0-9a-f]{8}", suffix):
        raise ValueError(f"incarnation token {suffix!r} is not 8 lower-case hex digits")
    return validate_label(f"{validate_cluster_name(cluster_name)}-{suffix}", what="server name")


def is_incarnation_of(server_name: str, cluster_name: str) -> bool:
    """Whether ``server_name`` is a folder :func:`incarnation_server_name` made for
    ``cluster_name`` (recovery clusters' folders are not: they have their own names)."""
    return server_name.startswith(cluster_name + "-") and bool(
        _INCARNATION_SUFFIX.fullmatch(server_name[len(cluster_name) :])
    )


def drill_cluster_name(source_cluster: str, drill_id: str) -> str:
    """``{source}-d{8 hex of the drill id}``: a drill's throwaway recovery cluster."""
    short = drill_id.replace("-", "")[:8].lower()
    return validate_cluster_name(f"{source_cluster}-d{short}")
