from __future__ import annotations

import base64
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import BackupEnd, PointInTime, RenderConfig, build_cluster_spec_full
from paas_pitr.cnpg.schema import CrdRegistry
from paas_pitr.drills.access import KubernetesAccess
from paas_pitr.drills.manifests import build_drill_cluster
from paas_pitr.errors import EngineError

DRILL_ID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("mode", ["in-tree", "plugin"])
def test_a_drill_cluster_is_a_small_unarchived_recovery_cluster(
    mode: str, crd_registry: CrdRegistry
) -> None:
    config = RenderConfig(mode=mode, storage_size="20Gi")  # type: ignore[arg-type]
    source = build_cluster_spec_full("16", "pro", "pitr", "acme", "app-1", config=config)
    source["spec"]["storage"] = {"size": "7Gi"}
    manifests = build_drill_cluster(
        source=source,
        drill_id=DRILL_ID,
        tenant="acme",
        app="app-1",
        target=PointInTime(datetime(2026, 5, 1, 3, 0, 0, 120000, tzinfo=UTC)),
        plan="pro",
        version="16",
        config=config,
        source_server="db-acme-app-1-0000abcd",
        requested={"drill_id": DRILL_ID},
    )
    cluster = manifests.cluster
    assert cluster["metadata"]["name"] == "db-acme-app-1-d01234567"
    labels = cluster["metadata"]["labels"]
    assert labels[naming.LABEL_ROLE] == naming.ROLE_DRILL
    assert labels[naming.LABEL_DRILL_ID] == DRILL_ID
    spec = cluster["spec"]
    assert spec["instances"] == 1
    assert spec["storage"] == {"size": "7Gi"}
    assert "backup" not in spec and "plugins" not in spec
    assert spec["managed"]["roles"] == [
        {"name": "app", "ensure": "present", "login": True, "superuser": True}
    ]
    assert spec["bootstrap"]["recovery"]["recoveryTarget"] == {
        "targetTime": "2026-05-01 03:00:00.120000+00:00"
    }
    (external,) = spec["externalClusters"]
    if mode == "plugin":
        assert external["plugin"]["parameters"]["serverName"] == "db-acme-app-1-0000abcd"
        assert manifests.object_store is not None
        assert manifests.object_store["metadata"]["labels"][naming.LABEL_ROLE] == "drill"
    else:
        assert external["barmanObjectStore"]["serverName"] == "db-acme-app-1-0000abcd"
        assert manifests.object_store is None
    for obj in manifests.objects():
        assert crd_registry.errors(obj, old=None) == []


def test_a_standard_drill_targets_the_backup_end() -> None:
    config = RenderConfig()
    source = build_cluster_spec_full("16", "standard", "daily", "acme", "app-1", config=config)
    manifests = build_drill_cluster(
        source=source,
        drill_id=DRILL_ID,
        tenant="acme",
        app="app-1",
        target=BackupEnd("20260501T030000"),
        plan="standard",
        version="16",
        config=config,
        source_server="db-acme-app-1-0000abcd",
        requested={},
    )
    assert manifests.cluster["spec"]["bootstrap"]["recovery"]["recoveryTarget"] == {
        "backupID": "20260501T030000",
        "targetImmediate": True,
    }


class Secrets:
    namespace = "paas-apps"

    def __init__(self, data: dict[str, str] | None) -> None:
        self.data = data
        self.paths: list[str] = []

    async def get_path(self, path: str) -> Any:
        self.paths.append(path)
        if self.data is None:
            return None
        return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in self.data.items()}}


CLUSTER = {"metadata": {"name": "db-acme-app-1-d01234567", "namespace": "paas-apps"}}


async def test_kubernetes_checks_connect_with_the_generated_app_secret() -> None:
    api = Secrets(
        {
            "username": "app",
            "password": "s3 cret'",
            "host": "db-acme-app-1-d01234567-rw",
            "port": "5432",
            "dbname": "app",
        }
    )
    conninfo = await KubernetesAccess(api).superuser_conninfo(CLUSTER)
    assert conninfo is not None
    assert conninfo_to_dict(conninfo) == {
        "host": "db-acme-app-1-d01234567-rw.paas-apps.svc",
        "port": "5432",
        "user": "app",
        "password": "s3 cret'",
        "dbname": "app",
        "connect_timeout": "10",
    }
    assert api.paths == ["/api/v1/namespaces/paas-apps/secrets/db-acme-app-1-d01234567-app"]
    # Nothing commits on a schedule there: only "at or before the target" is enforced.
    assert math.isinf(KubernetesAccess(api).max_distance_seconds())


async def test_a_secret_not_there_yet_or_without_a_password() -> None:
    assert await KubernetesAccess(Secrets(None)).superuser_conninfo(CLUSTER) is None
    with pytest.raises(EngineError, match="no username or password"):
        await KubernetesAccess(Secrets({"username": "app"})).superuser_conninfo(CLUSTER)
