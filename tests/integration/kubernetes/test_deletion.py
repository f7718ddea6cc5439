"""Deletion as kube-apiserver does it, in the API double, and what the engine makes of it:
finalizers hold a deleted object (``deletionTimestamp`` set, 202), the garbage collector
removes dependents after their owner (background) or before it (foreground)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from paas_pitr.cnpg.builders import RenderConfig, build_addon_manifests
from paas_pitr.errors import PitrError
from tests.integration.conftest import KubernetesHarness, RunningApi

CONFIG = RenderConfig(mode="in-tree")
HOLD = "example.com/hold"


@pytest.fixture
async def kube(kube: KubernetesHarness) -> AsyncIterator[KubernetesHarness]:
    yield kube
    await kube.engine.close()


def cluster_manifest() -> dict[str, Any]:
    return build_addon_manifests(
        version="16", plan="pro", tenant="acme", app="app-1", config=CONFIG
    ).cluster


async def eventually(check: Any, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def hold(kube: KubernetesHarness, name: str, finalizers: list[str]) -> None:
    """Another controller sets the Cluster's finalizers."""
    stored = kube.double.get("Cluster", name)
    assert stored is not None
    changed = copy.deepcopy(stored)
    changed["metadata"]["finalizers"] = finalizers
    kube.put(changed)


async def test_finalizers_hold_a_deleted_object_until_removed(kube: KubernetesHarness) -> None:
    engine = kube.engine
    manifest = cluster_manifest()
    name = manifest["metadata"]["name"]
    await engine.apply({**manifest, "metadata": {**manifest["metadata"], "finalizers": [HOLD]}})
    before = kube.double.get("Cluster", name)
    assert before is not None

    assert await engine.delete("Cluster", name) is True
    held = kube.double.get("Cluster", name)
    assert held is not None and held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["generation"] == before["metadata"]["generation"] + 1
    # Still readable by name; gone from listings; no finalizer may be added meanwhile.
    assert await engine.get("Cluster", name) is not None
    assert await engine.list("Cluster") == []
    with pytest.raises(PitrError, match="no new finalizers"):
        await engine.apply(
            {**manifest, "metadata": {**manifest["metadata"], "finalizers": [HOLD, "x.io/more"]}}
        )
    # Deleting it again changes nothing.
    assert await engine.delete("Cluster", name) is True
    assert kube.double.get("Cluster", name) == held
    # Its last finalizer removed, it goes.
    await engine.apply({**manifest, "metadata": {**manifest["metadata"], "finalizers": []}})
    assert kube.double.get("Cluster", name) is None


async def test_foreground_deletion_waits_for_blocking_dependents(kube: KubernetesHarness) -> None:
    engine = kube.engine
    stored = await engine.apply(cluster_manifest())
    name = stored["metadata"]["name"]
    owner = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "name": name,
        "uid": stored["metadata"]["uid"],
        "blockOwnerDeletion": True,
    }
    kube.put(
        {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Backup",
            "metadata": {"name": f"{name}-1", "ownerReferences": [owner]},
            "spec": {"cluster": {"name": name}},
        }
    )
    await engine.api.request(
        "DELETE",
        engine.api.path("Cluster", name),
        body={"propagationPolicy": "Foreground"},
    )
    terminating = kube.double.get("Cluster", name)
    assert terminating is not None
    assert terminating["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert kube.double.get("Backup", f"{name}-1") is not None
    await eventually(lambda: kube.double.get("Cluster", name) is None)
    assert kube.double.get("Backup", f"{name}-1") is None


@pytest.mark.parametrize("engine", ["kubernetes"], indirect=True)
def test_an_addon_held_by_a_finalizer_is_gone_for_users_and_its_name_not_free(
    api: RunningApi, engine: KubernetesHarness
) -> None:
    """Applying over a Cluster being deleted would update the dying object, and the new
    addon would go with it: its re-creation is refused until the Cluster is gone."""
    with api.client(api.token()) as client:
        created = client.post("/v1/apps/app-1/addons", json={"plan": "pro"})
        assert created.status_code == 201, created.text
        addon_id = created.json()["data"]["addon_id"]
        hold(engine, addon_id, [HOLD])
        assert client.delete(f"/v1/apps/app-1/addons/{addon_id}").status_code == 204
        assert engine.double.get("Cluster", addon_id) is not None  # held
        assert client.get(f"/v1/apps/app-1/addons/{addon_id}").status_code == 404
        assert client.get("/v1/apps/app-1/addons").json()["data"] == []
        again = client.post("/v1/apps/app-1/addons", json={"plan": "pro"})
        assert again.status_code == 409, again.text
        error = again.json()["error"]
        assert error["code"] == "addon_exists"
        assert error["details"] == {"addon_id": addon_id, "deleting": True}
        hold(engine, addon_id, [])
        assert engine.double.get("Cluster", addon_id) is None
        recreated = client.post("/v1/apps/app-1/addons", json={"plan": "pro"})
        assert recreated.status_code == 201, recreated.text
