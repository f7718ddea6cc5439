"""deploy/: the control plane's manifests, and a Role that grants exactly what the engine uses."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from paas_pitr.api.state import AppState
from paas_pitr.audit import AuditLog
from paas_pitr.audit.dispatcher import AuditJournal
from paas_pitr.audit.repository import InMemoryAuditRepository
from paas_pitr.auth import TokenAuthority
from paas_pitr.context import Caller
from paas_pitr.settings import Settings
from paas_pitr.switchover.manifests import switched_pair, undone_pair
from tests.integration.api.test_api import backup_obj
from tests.integration.conftest import KubernetesHarness

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def granted() -> set[tuple[str, str]]:
    role = next(
        d
        for d in documents("rbac.yaml")
        if d["kind"] == "Role" and d["metadata"]["namespace"] == "paas-apps"
    )
    return {
        (resource, verb)
        for rule in role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.fixture
async def kube(kube: KubernetesHarness) -> AsyncIterator[KubernetesHarness]:
    yield kube
    await kube.engine.close()


async def sample_metrics(state: AppState) -> None:
    """One pass of the metrics sampler, once the watch has delivered the addon."""
    assert state.sampler is not None
    for _ in range(100):
        if await state.sampler.sample():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the watch never delivered the addon's Cluster")


async def exercise(kube: KubernetesHarness, settings: Settings, tmp_path: Path) -> None:
    """Every use-case once: addon create, plan changes, backups, restores, delete."""
    state = AppState.build(
        settings,
        kube.engine,
        AuditLog(InMemoryAuditRepository(), AuditJournal(tmp_path / f"j-{settings.cnpg_mode}")),
        TokenAuthority(b"k" * 40),
    )
    caller = Caller("acme")
    try:
        await state.addons.create_addon_generic(caller, "app-1", plan="pro")
        kube.set_status("Cluster", "db-acme-app-1", {"phase": "Cluster in healthy state"})
        await state.backups.create(caller, "app-1", "db-acme-app-1")
        for backup in await kube.engine.list("Backup"):
            kube.set_status("Backup", backup["metadata"]["name"], {"phase": "failed"})
        await state.backups.list_backups(caller, "app-1", "db-acme-app-1")
        await sample_metrics(state)
        await state.addons.change_plan(caller, "app-1", "db-acme-app-1", "free")
        await state.addons.change_plan(caller, "app-1", "db-acme-app-1", "standard")
        await state.restores.list_restores(caller, "app-1", "db-acme-app-1")
        await drill(kube, state, caller)
        await switch_and_back(kube, state, caller)
        await state.addons.delete(caller, "app-1", "db-acme-app-1")
    finally:
        state.audit.journal.close()


async def drill(kube: KubernetesHarness, state: AppState, caller: Caller) -> None:
    """A drill to its end: the operator brings its cluster up with an app Secret (whose
    server does not answer: the drill fails at its first check, every verb used)."""
    now = datetime.now(UTC).replace(microsecond=0)
    backup = backup_obj("db-acme-app-1", "db-acme-app-1-daily-1", now - timedelta(hours=1))
    kube.put(backup)
    kube.archived_at["db-acme-app-1"] = now - timedelta(minutes=1)
    record = await state.drills.start(caller, "app-1", "db-acme-app-1")
    name = record.cluster_name or ""
    for _ in range(200):
        if kube.double.get("Cluster", name) is not None:
            break
        await asyncio.sleep(0.02)
    secret = {"username": "app", "password": "x", "host": "127.0.0.1", "port": "1"}
    kube.double.secrets[f"{name}-app"] = {
        k: base64.b64encode(v.encode()).decode() for k, v in secret.items()
    }
    kube.set_status(
        "Cluster",
        name,
        {"phase": "Cluster in healthy state", "conditions": [{"type": "Ready", "status": "True"}]},
    )
    for _ in range(500):
        if (await state.drills.store.get("db-acme-app-1", record.drill_id)).finished:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.02)
    finished = await state.drills.store.get("db-acme-app-1", record.drill_id)
    assert finished is not None and finished.failing_check == "promoted_and_writable"
    await state.drills.recover()


async def switch_and_back(kube: KubernetesHarness, state: AppState, caller: Caller) -> None:
    """An in-place restore's Clusters switched and switched back by the engine (the
    verification that decides it is tests/integration/kubernetes/test_inplace.py's)."""
    addon_id = "db-acme-app-1"
    view, _ = await state.restores.restore_addon_pitr(
        caller,
        "app-1",
        addon_id,
        timestamp=(datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        target="in_place",
    )
    engine = kube.engine

    async def pair() -> tuple[dict[str, Any], dict[str, Any]]:
        addon = await engine.get("Cluster", addon_id)
        restored = await engine.get("Cluster", view.cluster_name)
        assert addon is not None and restored is not None
        return addon, restored

    active, kept = switched_pair(*await pair(), closed=[])
    await engine.switch_clusters("switch", active, kept)
    assert (await pair())[0]["metadata"]["uid"] == kube.double.get("Cluster", view.cluster_name)[
        "metadata"
    ]["uid"]  # type: ignore[index]
    active, kept = undone_pair(*await pair(), closed=[], at=datetime.now(UTC))
    await engine.switch_clusters("undo", active, kept)
    await state.restores.delete(caller, "app-1", addon_id, view.restore_id)


async def test_role_grants_exactly_what_the_engine_uses(
    kube: KubernetesHarness, settings: Settings, tmp_path: Path
) -> None:
    await kube.engine.start()
    await exercise(kube, settings, tmp_path)
    kube.engine.settings = settings.model_copy(update={"cnpg_mode": "plugin"})
    await exercise(kube, kube.engine.settings, tmp_path)
    await asyncio.sleep(0.2)  # the watch is up
    used: set[tuple[str, str]] = set()
    for method, path, _ in kube.double.requests:
        parts = path.strip("/").split("/")
        if "namespaces" not in parts:
            continue
        resource = parts[parts.index("namespaces") + 2]
        is_item = len(parts) > parts.index("namespaces") + 3
        verb = VERBS[method] if method != "GET" or is_item else "list"
        used.add((resource, verb))
    used.add(("clusters", "watch"))  # the cluster watch: GETs with ?watch=true
    used.update(kube.double.extra_verbs)  # an apply that creates also needs "create"
    assert used <= granted(), f"used but not granted: {used - granted()}"
    # Secrets are read by doctor only (tests/integration/kubernetes/test_doctor.py).
    unused = granted() - used - {("secrets", "get")}
    assert not unused, f"granted but unused: {unused}"


def test_manifests_are_complete_and_probed() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / resource).exists(), resource
    (deployment,) = documents("deployment.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "paas-pitr"
    (config,) = documents("configmap.yaml")
    assert config["data"]["PAAS_PITR_ENGINE"] == "kubernetes"
    settings = Settings(
        **{k.removeprefix("PAAS_PITR_").lower(): v for k, v in config["data"].items()}
    )
    assert settings.engine == "kubernetes"
    kinds = {d["kind"] for name in kustomization["resources"] for d in documents(name)}
    assert {
        "Deployment",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Service",
        "NetworkPolicy",
    } <= kinds


def test_kustomization_keeps_each_manifests_namespace() -> None:
    """kustomize's top-level ``namespace`` overrides the namespace of every resource, so the
    objects meant for the addons' and the operator's namespaces must not sit under one."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert "namespace" not in kustomization
    namespaces = {
        d["metadata"].get("namespace")
        for name in kustomization["resources"]
        for d in documents(name)
        if d["kind"] != "Namespace"
    }
    assert {"paas-system", "paas-apps"} <= namespaces
    (deployment,) = documents("deployment.yaml")
    (secret,) = kustomization["secretGenerator"]
    assert secret["namespace"] == deployment["metadata"]["namespace"]
