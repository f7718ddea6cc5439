"""The Kubernetes engine through its real client over HTTP, against the API double."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from paas_pitr.cnpg.builders import RenderConfig, build_addon_manifests
from paas_pitr.engines.kubernetes import KubernetesEngine
from paas_pitr.engines.kubernetes.api import KubeApi
from paas_pitr.errors import Conflict, EngineError, InvalidInput, InvalidSetting
from paas_pitr.postgres.server import pick_port
from paas_pitr.settings import KUBE_REQUEST_RETRY, Settings
from tests.integration.conftest import KubernetesHarness
from tests.k8s_double.server import Fault

CONFIG = RenderConfig(mode="in-tree")


@pytest.fixture
async def kube(kube: KubernetesHarness) -> AsyncIterator[KubernetesHarness]:
    """The conftest's harness; its engine's client is closed in this test's event loop."""
    yield kube
    await kube.engine.close()


def addon_objects(plan: str = "pro") -> list[dict[str, Any]]:
    return build_addon_manifests(
        version="16", plan=plan, tenant="acme", app="app-1", config=CONFIG
    ).objects()


async def test_apply_is_server_side_with_our_field_manager(kube: KubernetesHarness) -> None:
    engine = kube.engine
    cluster = addon_objects()[0]
    stored = await engine.apply(cluster)
    assert stored["metadata"]["uid"]
    patch = [r for r in kube.double.requests if r[0] == "PATCH"][-1]
    assert patch[2] == "application/apply-patch+yaml"
    # Dropping a field we owned removes it (moving to free drops spec.backup).
    free = build_addon_manifests(
        version="16", plan="free", tenant="acme", app="app-1", config=CONFIG
    ).cluster
    after = await engine.apply(free)
    assert "backup" not in after["spec"]
    assert after["metadata"]["uid"] == stored["metadata"]["uid"]
    assert after["metadata"]["generation"] == 2


async def test_fields_a_post_wrote_survive_an_apply_that_omits_them(
    kube: KubernetesHarness,
) -> None:
    """kube-apiserver keeps a POST's fields under an "Update" entry: a later apply by the same
    manager name does not own them, so leaving them out removes nothing. That is why the
    addon objects are applied, never POSTed (and why the engine creates Clusters by an
    apply too: an in-place switch moves a name onto a Cluster)."""
    engine = kube.engine
    await engine.api.create(addon_objects()[0])
    free = build_addon_manifests(
        version="16", plan="free", tenant="acme", app="app-1", config=CONFIG
    ).cluster
    after = await engine.apply(free)
    assert "backup" in after["spec"]
    owners = {(m["manager"], m["operation"]) for m in after["metadata"]["managedFields"]}
    assert owners == {("paas-pitr", "Update"), ("paas-pitr", "Apply")}


async def test_unknown_fields_are_refused_strictly(kube: KubernetesHarness) -> None:
    cluster = addon_objects()[0]
    cluster["spec"]["backup"]["barmanObjectStore"]["wal"]["archivingMode"] = "continuous"
    with pytest.raises(InvalidInput, match="archivingMode"):
        await kube.engine.apply(cluster)
    assert kube.double.get("Cluster", "db-acme-app-1") is None


async def test_apply_conflicts_with_another_manager(kube: KubernetesHarness) -> None:
    engine = kube.engine
    cluster = addon_objects()[0]
    await engine.apply(cluster)
    edited = copy.deepcopy(cluster)
    edited["spec"]["instances"] = 5
    # Someone edits with their own field manager...
    other = KubeApi(engine.api.http, engine.api.namespace)
    await other.request(
        "PATCH",
        other.path("Cluster", "db-acme-app-1"),
        params={"fieldManager": "kubectl-edit", "force": "true", "fieldValidation": "Strict"},
        body=edited,
        content_type="application/apply-patch+yaml",
    )
    assert kube.double.get("Cluster", "db-acme-app-1")["spec"]["instances"] == 5  # type: ignore[index]
    # ...a non-forced apply of ours reports the conflict...
    with pytest.raises(Conflict, match=r"spec\.instances"):
        await engine.api.apply(cluster, force=False)
    # ...and the engine's apply takes its field back.
    await engine.apply(cluster)
    assert kube.double.get("Cluster", "db-acme-app-1")["spec"]["instances"] == 3  # type: ignore[index]


async def test_create_conflict_and_stale_replace(kube: KubernetesHarness) -> None:
    engine = kube.engine
    cluster = addon_objects()[0]
    stored = await engine.create(cluster)
    with pytest.raises(Conflict):
        await engine.create(cluster)
    fresh = await engine.apply(cluster)
    stale = copy.deepcopy(stored)
    assert stale["metadata"]["resourceVersion"] != fresh["metadata"]["resourceVersion"]
    with pytest.raises(EngineError, match="409"):
        await engine.api.request("PUT", engine.api.path("Cluster", "db-acme-app-1"), body=stale)


async def test_label_selectors_and_status_subresource(kube: KubernetesHarness) -> None:
    engine = kube.engine
    for obj in addon_objects():
        await engine.apply(obj)
    other = build_addon_manifests(
        version="16", plan="pro", tenant="globex", app="web", config=CONFIG
    ).cluster
    await engine.apply(other)
    found = await engine.list("Cluster", {"paas-pitr.io/tenant": "acme"})
    assert [c["metadata"]["name"] for c in found] == ["db-acme-app-1"]
    kube.set_status("Cluster", "db-acme-app-1", {"phase": "Cluster in healthy state"})
    # A spec apply keeps the status the operator wrote.
    await engine.apply(addon_objects()[0])
    assert (await engine.get("Cluster", "db-acme-app-1"))["status"]["phase"] == (  # type: ignore[index]
        "Cluster in healthy state"
    )


async def test_delete_collects_owned_objects(kube: KubernetesHarness) -> None:
    engine = kube.engine
    stored = await engine.apply(addon_objects()[0])
    kube.put(
        {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Backup",
            "metadata": {
                "name": "db-acme-app-1-daily-1",
                "labels": {"cnpg.io/cluster": "db-acme-app-1"},
                "ownerReferences": [
                    {
                        "apiVersion": "postgresql.cnpg.io/v1",
                        "kind": "Cluster",
                        "name": "db-acme-app-1",
                        "uid": stored["metadata"]["uid"],
                    }
                ],
            },
            "spec": {"cluster": {"name": "db-acme-app-1"}},
        }
    )
    assert await engine.delete("Cluster", "db-acme-app-1") is True
    assert await engine.delete("Cluster", "db-acme-app-1") is False
    # The garbage collector deletes dependents after their owner, not with it.
    assert kube.double.get("Backup", "db-acme-app-1-daily-1") is not None
    await _eventually(lambda: kube.double.get("Backup", "db-acme-app-1-daily-1") is None)


async def test_retries_honour_retry_after_and_5xx(kube: KubernetesHarness) -> None:
    engine = kube.engine
    kube.double.faults.append(
        Fault(429, {"Retry-After": "0.2"}, times=2, path_contains="/clusters")
    )
    kube.double.faults.append(Fault(503, times=1, path_contains="/backups"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await engine.get("Cluster", "nope") is None
    assert loop.time() - started >= 0.4  # waited as told, twice
    assert await engine.list("Backup") == []
    assert not kube.double.faults


async def test_persistent_5xx_is_reported(kube: KubernetesHarness) -> None:
    kube.double.faults.append(Fault(500, times=10))
    with pytest.raises(EngineError, match="500"):
        await kube.engine.get("Cluster", "db-acme-app-1")


async def test_unreachable_api_server_fails_fast(settings: Settings) -> None:
    import httpx

    api = KubeApi(
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{pick_port()}"),
        settings.namespace,
        retry=dataclasses.replace(KUBE_REQUEST_RETRY, attempts=3, max=0.2),
    )
    engine = KubernetesEngine(settings, api=api)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(EngineError, match="unreachable"):
        await engine.check()
    assert loop.time() - started < 5
    await api.close()


async def test_mode_auto_detects_the_plugin(kube: KubernetesHarness, settings: Settings) -> None:
    auto = KubernetesEngine(settings.model_copy(update={"cnpg_mode": "auto"}), api=kube.engine.api)
    assert await auto.cnpg_mode() == "plugin"  # the double serves every CRD it was given
    kube.double.crds_present.discard("objectstores.barmancloud.cnpg.io")
    auto = KubernetesEngine(settings.model_copy(update={"cnpg_mode": "auto"}), api=kube.engine.api)
    assert await auto.cnpg_mode() == "in-tree"
    kube.double.crds_present.clear()
    auto = KubernetesEngine(settings.model_copy(update={"cnpg_mode": "auto"}), api=kube.engine.api)
    with pytest.raises(InvalidSetting, match="CloudNativePG CRDs are not installed"):
        await auto.cnpg_mode()


async def test_backup_failed_event_is_the_reason(kube: KubernetesHarness) -> None:
    kube.put(
        {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Backup",
            "metadata": {"name": "b-1", "labels": {"cnpg.io/cluster": "db-acme-app-1"}},
            "spec": {"cluster": {"name": "db-acme-app-1"}},
        }
    )
    kube.set_status("Backup", "b-1", {"phase": "failed"})
    kube.double.events.append(
        {
            "type": "Warning",
            "reason": "BackupFailed",
            "message": 'while getting secret "ovh-s3-creds": not found',
            "involvedObject": {"kind": "Backup", "name": "b-1"},
            "lastTimestamp": "2026-05-04T03:00:00Z",
        }
    )
    (backup,) = await kube.engine.list("Backup")
    assert backup["status"]["error"].startswith("BackupFailed: while getting secret")


async def test_latest_from_the_archive_reader(kube: KubernetesHarness) -> None:
    cluster = addon_objects()[0]
    at = datetime(2026, 5, 4, 15, 0, tzinfo=UTC)
    kube.archived_at["db-acme-app-1"] = at
    assert await kube.engine.last_archived_at(cluster) == at
    free = build_addon_manifests(
        version="16", plan="free", tenant="acme", app="app-1", config=CONFIG
    ).cluster
    assert await kube.engine.last_archived_at(free) is None


async def test_watch_resumes_and_relists_after_410(kube: KubernetesHarness) -> None:
    engine = kube.engine
    seen: list[tuple[str, str]] = []

    async def listener(event_type: str, obj: dict[str, Any]) -> None:
        seen.append((event_type, obj["metadata"]["name"]))

    engine.listeners.append(listener)
    await engine.start()
    try:
        await engine.apply(addon_objects()[0])
        await _eventually(lambda: any(name == "db-acme-app-1" for _, name in seen))
        kube.double.compact()
        # Drop the stream: the engine re-watches from an expired version, gets 410, re-lists.
        kube.double.drop_watches()
        await _eventually(lambda: kube.double.gone_served >= 1)
        other = build_addon_manifests(
            version="16", plan="pro", tenant="acme", app="app-2", config=CONFIG
        ).cluster
        await engine.apply(other)
        await _eventually(lambda: any(name == "db-acme-app-2" for _, name in seen))
        assert engine.watch_restarts >= 1
        assert kube.double.gone_served >= 1  # it resumed from its version, got 410, re-listed
    finally:
        await engine.close()


async def _eventually(check: Any, timeout: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def test_double_rejects_unauthenticated_requests(kube: KubernetesHarness) -> None:
    import httpx

    url = kube.engine.api.http.base_url
    assert httpx.get(f"{url}/version").status_code == 401
