"""What the PaaS binds an app to on Kubernetes: a Service and a Secret per addon, owned by
paas-pitr, that lead to the addon's active Cluster.

CNPG names its Services and Secrets after the Cluster (``<cluster>-rw``, ``<cluster>-app``),
and a Cluster's data never moves to another Cluster: an app bound to them would have to be
re-bound to reach a restored cluster. Bound to these instead, an app keeps its host, port,
database, user and password when paas-pitr points them at another Cluster.

- Service ``<addon>``: ClusterIP on port 5432, selecting the primary instance of the active
  Cluster (CNPG's labels ``cnpg.io/cluster`` and ``cnpg.io/instanceRole: primary``); the
  active Cluster is also named in the annotation ``paas-pitr.io/active-cluster``.
- Secret ``<addon>-connection`` (type ``kubernetes.io/basic-auth``): ``username``,
  ``password``, ``dbname``, ``host`` (the Service's DNS name), ``port``, ``uri``. Being a
  basic-auth Secret it can also be the ``bootstrap.initdb.secret`` / ``bootstrap.recovery.secret``
  of the Clusters, so that every Cluster the addon switches to has the same owner password.
"""

from __future__ import annotations

from urllib.parse import quote

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import DEFAULT_CONFIG, RenderConfig
from paas_pitr.engines.base import Manifest
from paas_pitr.names import validate_addon_id, validate_app, validate_cluster_name, validate_tenant

POSTGRES_PORT = 5432
ROLE_CONNECTION = "connection"
ANNOTATION_ACTIVE_CLUSTER = naming.LABEL_PREFIX + "active-cluster"
CNPG_INSTANCE_ROLE_LABEL = "cnpg.io/instanceRole"


def connection_secret_name(addon_id: str) -> str:
    return f"{validate_addon_id(addon_id)}-connection"


def connection_host(addon_id: str, namespace: str) -> str:
    """The Service's DNS name inside the cluster."""
    return f"{validate_addon_id(addon_id)}.{namespace}.svc"


def _metadata(
    name: str, tenant: str, app: str, addon_id: str, active: str, config: RenderConfig
) -> Manifest:
    return {
        "name": name,
        "namespace": config.namespace,
        "labels": {
            naming.LABEL_MANAGED_BY: naming.MANAGER,
            naming.LABEL_TENANT: validate_tenant(tenant),
            naming.LABEL_APP: validate_app(app),
            naming.LABEL_ADDON: addon_id,
            naming.LABEL_ROLE: ROLE_CONNECTION,
        },
        "annotations": {ANNOTATION_ACTIVE_CLUSTER: validate_cluster_name(active)},
    }


def build_connection_service(
    *,
    tenant: str,
    app: str,
    addon_id: str,
    active_cluster: str,
    config: RenderConfig = DEFAULT_CONFIG,
) -> Manifest:
    """The addon's Service, selecting the primary of ``active_cluster``."""
    validate_addon_id(addon_id)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(addon_id, tenant, app, addon_id, active_cluster, config),
        "spec": {
            "type": "ClusterIP",
            "selector": {
                naming.CNPG_CLUSTER_LABEL: active_cluster,
                CNPG_INSTANCE_ROLE_LABEL: "primary",
            },
            "ports": [
                {
                    "name": "postgres",
                    "protocol": "TCP",
                    "port": POSTGRES_PORT,
                    "targetPort": POSTGRES_PORT,
                }
            ],
        },
    }


def build_connection_secret(
    *,
    tenant: str,
    app: str,
    addon_id: str,
    active_cluster: str,
    password: str,
    username: str = "app",
    database: str = "app",
    config: RenderConfig = DEFAULT_CONFIG,
) -> Manifest:
    """The addon's connection Secret (the app's credentials and the Service's address)."""
    host = connection_host(addon_id, config.namespace)
    uri = (
        f"postgresql://{quote(username, safe='')}:{quote(password, safe='')}@{host}:"
        f"{POSTGRES_PORT}/{quote(database, safe='')}"
    )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/basic-auth",
        "metadata": _metadata(
            connection_secret_name(addon_id), tenant, app, addon_id, active_cluster, config
        ),
        "stringData": {
            "username": username,
            "password": password,
            "dbname": database,
            "host": host,
            "port": str(POSTGRES_PORT),
            "uri": uri,
        },
    }
