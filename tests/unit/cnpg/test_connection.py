"""The Service and Secret an app binds to on Kubernetes, pointing at the active Cluster."""

from __future__ import annotations

import pytest
import yaml

from paas_pitr.cnpg.builders import RenderConfig
from paas_pitr.cnpg.connection import build_connection_secret, build_connection_service
from paas_pitr.errors import InvalidName
from tests.unit.test_cli import run

CONFIG = RenderConfig(namespace="paas-apps")


def test_the_service_selects_the_primary_of_the_active_cluster() -> None:
    service = build_connection_service(
        tenant="acme",
        app="app-1",
        addon_id="db-acme-app-1",
        active_cluster="db-acme-app-1-r0123abcd",
        config=CONFIG,
    )
    assert service == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "db-acme-app-1",
            "namespace": "paas-apps",
            "labels": {
                "app.kubernetes.io/managed-by": "paas-pitr",
                "paas-pitr.io/tenant": "acme",
                "paas-pitr.io/app": "app-1",
                "paas-pitr.io/addon": "db-acme-app-1",
                "paas-pitr.io/role": "connection",
            },
            "annotations": {"paas-pitr.io/active-cluster": "db-acme-app-1-r0123abcd"},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {
                "cnpg.io/cluster": "db-acme-app-1-r0123abcd",
                "cnpg.io/instanceRole": "primary",
            },
            "ports": [{"name": "postgres", "protocol": "TCP", "port": 5432, "targetPort": 5432}],
        },
    }


def test_the_secret_names_the_service_whatever_cluster_is_active() -> None:
    secret = build_connection_secret(
        tenant="acme",
        app="app-1",
        addon_id="db-acme-app-1",
        active_cluster="db-acme-app-1",
        password="p@ss/word",
        config=CONFIG,
    )
    assert secret["type"] == "kubernetes.io/basic-auth"
    assert secret["metadata"]["name"] == "db-acme-app-1-connection"
    assert secret["stringData"] == {
        "username": "app",
        "password": "p@ss/word",
        "dbname": "app",
        "host": "db-acme-app-1.paas-apps.svc",
        "port": "5432",
        "uri": "postgresql://app:p%40ss%2Fword@db-acme-app-1.paas-apps.svc:5432/app",
    }


def test_names_are_validated() -> None:
    with pytest.raises(InvalidName):
        build_connection_service(
            tenant="acme", app="app-1", addon_id="Not_A_Label", active_cluster="x"
        )


def test_render_connection_prints_both_with_a_fresh_password() -> None:
    code, out, err = run(
        "render",
        "connection",
        "--tenant",
        "acme",
        "--app",
        "app-1",
        "--active-cluster",
        "db-acme-app-1-r0123abcd",
    )
    assert code == 0, err
    service, secret = yaml.safe_load_all(out)
    assert service["spec"]["selector"]["cnpg.io/cluster"] == "db-acme-app-1-r0123abcd"
    assert secret["stringData"]["host"] == "db-acme-app-1.paas-apps.svc"
    assert len(secret["stringData"]["password"]) >= 32
    _, again, _ = run("render", "connection", "--tenant", "acme", "--app", "app-1")
    other = list(yaml.safe_load_all(again))[1]
    assert other["stringData"]["password"] != secret["stringData"]["password"]
    assert other["metadata"]["annotations"]["paas-pitr.io/active-cluster"] == "db-acme-app-1"
