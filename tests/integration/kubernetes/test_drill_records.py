"""Drill records in a ConfigMap per addon, through the Kubernetes client against the API
double: concurrent writers both land, and the addon's deletion takes the records along."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from paas_pitr.cnpg import naming
from paas_pitr.drills.records import DrillRecord
from paas_pitr.drills.store import ConfigMapDrillStore
from tests.integration.conftest import KubernetesHarness

T0 = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
ADDON = "db-acme-app-1"


def record(number: int, status: str = "passed") -> DrillRecord:
    return DrillRecord(
        drill_id=f"{number:032x}",
        tenant="acme",
        app_id="app-1",
        addon_id=ADDON,
        plan="pro",
        status=status,  # type: ignore[arg-type]
        trigger="api",
        requested_by="tenant:acme",
        requested_at=T0 + timedelta(hours=number),
        rto_seconds=12.5,
    )


@pytest.fixture
async def store(kube: KubernetesHarness) -> AsyncIterator[ConfigMapDrillStore]:
    kube.put(
        {
            "apiVersion": naming.API_VERSION,
            "kind": "Cluster",
            "metadata": {"name": ADDON, "labels": {naming.LABEL_ROLE: naming.ROLE_ADDON}},
            "spec": {"instances": 1, "storage": {"size": "1Gi"}},
        }
    )
    yield ConfigMapDrillStore(kube.engine.api, lambda name: kube.engine.get("Cluster", name))
    await kube.engine.close()


async def test_concurrent_writers_both_land(
    kube: KubernetesHarness, store: ConfigMapDrillStore
) -> None:
    await asyncio.gather(*(store.save(record(n)) for n in range(1, 5)))
    await store.save(record(5, status="running"))

    assert [r.drill_id for r in await store.for_addon(ADDON)] == [
        f"{n:032x}" for n in (5, 4, 3, 2, 1)
    ]
    assert [r.drill_id for r in await store.unfinished()] == [f"{5:032x}"]
    config_map = kube.double.configmaps[f"{ADDON}-drills"]
    assert config_map["metadata"]["labels"][naming.LABEL_ROLE] == naming.ROLE_DRILL
    (owner,) = config_map["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("Cluster", ADDON)
    # Any stale write was answered 409 and retried on the newer version.
    puts = [p for m, p, _ in kube.double.requests if m == "PUT" and "configmaps" in p]
    assert puts


async def test_the_records_go_with_the_addon(
    kube: KubernetesHarness, store: ConfigMapDrillStore
) -> None:
    await store.save(record(1))
    await kube.engine.delete("Cluster", ADDON)
    # The garbage collector removes it after the Cluster, not with it; meanwhile a reader
    # sees no records of an incarnation that is gone.
    assert await store.for_addon(ADDON) == []
    for _ in range(200):
        kube.double.by_kind()  # lets the collector's time pass, as any request does
        if f"{ADDON}-drills" not in kube.double.configmaps:
            break
        await asyncio.sleep(0.02)
    assert f"{ADDON}-drills" not in kube.double.configmaps
