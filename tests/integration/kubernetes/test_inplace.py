"""In-place restores on the Kubernetes engine, against the API double: the test plays the
CNPG operator (the recovery Cluster's status, its generated app Secret) and a real
PostgreSQL server stands for the recovered cluster, so verification really connects."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from paas_pitr.api.state import AppState
from paas_pitr.audit import AuditLog
from paas_pitr.audit.dispatcher import AuditJournal
from paas_pitr.audit.repository import InMemoryAuditRepository
from paas_pitr.auth import TokenAuthority
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.history import incarnation_server_name_of
from paas_pitr.context import Caller
from paas_pitr.drills.records import DrillRecord
from paas_pitr.engines.kubernetes import KubernetesEngine
from paas_pitr.engines.kubernetes.aliases import ALIASES_KEY, CONFIG_MAP, LABEL_KNOWN_AS
from paas_pitr.engines.kubernetes.switching import Connections
from paas_pitr.errors import LimitReached, UndoNotAvailable
from paas_pitr.postgres.server import PostgresServer
from paas_pitr.quotas import check_restore_limits
from paas_pitr.restore_views import RestoreView
from paas_pitr.settings import Settings
from paas_pitr.switchover.record import (
    ANNOTATION_HIBERNATION,
    ANNOTATION_SWITCHED_FROM,
    Phase,
    record_of,
)
from paas_pitr.tombstones import tombstone_key
from tests.integration.api.test_api import BACKUP_1_END, BACKUP_2_END, LAST_ARCHIVED, backup_obj
from tests.integration.conftest import KubernetesHarness

ACME = Caller("acme")
ADDON = "db-acme-app-1"
TARGET = LAST_ARCHIVED - timedelta(minutes=5)


@pytest.fixture
def settings(workdir: Path) -> Settings:
    return Settings(state_dir=workdir / "state-inplace", cnpg_mode="in-tree", undo_hours=2)


@pytest.fixture
async def kube(kube: KubernetesHarness) -> AsyncIterator[KubernetesHarness]:
    yield kube
    await kube.engine.close()


@pytest.fixture
def state(kube: KubernetesHarness, settings: Settings, tmp_path: Path) -> AppState:
    return build_state(kube.engine, settings, tmp_path)


AUDITED: dict[int, list[str]] = {}


def build_state(engine: KubernetesEngine, settings: Settings, tmp_path: Path) -> AppState:
    tmp_path.mkdir(parents=True, exist_ok=True)
    state = AppState.build(
        settings,
        engine,
        AuditLog(InMemoryAuditRepository(), AuditJournal(tmp_path / "journal.jsonl")),
        TokenAuthority(b"k" * 40),
    )
    recorded = AUDITED.setdefault(id(state), [])
    log_event = state.audit.log_event

    def recording(*args: Any, **event: Any) -> Any:
        recorded.append(str(event.get("action")))
        return log_event(*args, **event)

    state.audit.log_event = recording  # type: ignore[method-assign]
    return state


def actions(state: AppState) -> list[str]:
    return AUDITED[id(state)]


def secret_data(kube: KubernetesHarness, name: str) -> dict[str, str]:
    secret = kube.double.get("Secret", name)
    assert secret is not None, name
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def aliases(kube: KubernetesHarness) -> dict[str, str]:
    found = kube.double.configmaps.get(CONFIG_MAP)
    return json.loads(found["data"][ALIASES_KEY]) if found else {}


async def make_addon(kube: KubernetesHarness, state: AppState) -> None:
    await state.addons.create_addon_generic(ACME, "app-1", plan="pro", version="16")
    kube.set_status(
        "Cluster",
        ADDON,
        {
            "phase": "Cluster in healthy state",
            "firstRecoverabilityPoint": BACKUP_1_END.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "ClusterIsReady"},
                {"type": "ContinuousArchiving", "status": "True", "reason": "ok"},
            ],
        },
    )
    for name, end in ((f"{ADDON}-daily-1", BACKUP_1_END), (f"{ADDON}-daily-2", BACKUP_2_END)):
        kube.put(backup_obj(ADDON, name, end))
    kube.archived_at[ADDON] = LAST_ARCHIVED


async def restore_in_place(
    kube: KubernetesHarness, state: AppState, at: datetime = TARGET
) -> RestoreView:
    view, created = await state.restores.restore_addon_pitr(
        ACME,
        "app-1",
        ADDON,
        timestamp=at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        target="in_place",
    )
    assert created and view.target == "in_place" and view.status == "restore_triggered"
    return view


def bring_up(
    kube: KubernetesHarness, name: str, pg: PostgresServer, port: int | None = None
) -> None:
    """The operator: the recovery Cluster is ready and its app Secret written."""
    secret = {
        "username": "postgres",
        "password": pg.password,
        "host": "127.0.0.1",
        "port": str(port or pg.port),
        "dbname": "postgres",
    }
    kube.double.secrets[f"{name}-app"] = {
        k: base64.b64encode(v.encode()).decode() for k, v in secret.items()
    }
    kube.set_status(
        "Cluster",
        name,
        {
            "phase": "Cluster in healthy state",
            "readyInstances": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady"}],
        },
    )


async def switched(kube: KubernetesHarness, state: AppState, pg: PostgresServer) -> RestoreView:
    await make_addon(kube, state)
    view = await restore_in_place(kube, state)
    bring_up(kube, view.cluster_name, pg)
    assert state.inplace is not None
    await state.inplace.pass_once()
    return await state.restores.get(ACME, "app-1", ADDON, view.restore_id)


async def test_the_addon_binds_to_its_service_and_secret_from_creation(
    kube: KubernetesHarness, state: AppState
) -> None:
    await make_addon(kube, state)
    service = kube.double.get("Service", ADDON)
    assert service is not None
    assert service["spec"]["selector"] == {
        naming.CNPG_CLUSTER_LABEL: ADDON,
        "cnpg.io/instanceRole": "primary",
    }
    assert service["spec"]["clusterIP"]
    data = secret_data(kube, f"{ADDON}-connection")
    assert data["host"] == f"{ADDON}.{kube.engine.settings.namespace}.svc"
    assert (data["username"], data["dbname"], data["port"]) == ("app", "app", "5432")
    assert len(data["password"]) == 32
    cluster = kube.double.get("Cluster", ADDON)
    assert cluster is not None
    # The owner's password is the Secret's: every Cluster the addon switches to shares it.
    assert cluster["spec"]["bootstrap"]["initdb"]["secret"] == {"name": f"{ADDON}-connection"}
    info = await kube.engine.connection_info(cluster)
    assert info is not None and info["secret"] == f"{ADDON}-connection"
    # A plan change re-applies them with the same password.
    await state.addons.change_plan(ACME, "app-1", ADDON, "standard")
    assert secret_data(kube, f"{ADDON}-connection")["password"] == data["password"]
    await state.addons.delete(ACME, "app-1", ADDON)
    assert kube.double.get("Service", ADDON) is None
    assert kube.double.get("Secret", f"{ADDON}-connection") is None


async def test_a_verified_restore_switches_the_service_and_hibernates_the_previous_cluster(
    kube: KubernetesHarness, state: AppState, pg: PostgresServer
) -> None:
    await make_addon(kube, state)
    password = secret_data(kube, f"{ADDON}-connection")["password"]
    previous_server = incarnation_server_name_of(kube.double.get("Cluster", ADDON) or {})
    view = await restore_in_place(kube, state)
    restored = view.cluster_name
    recovery = kube.double.get("Cluster", restored)
    assert recovery is not None
    assert recovery["spec"]["bootstrap"]["recovery"]["secret"] == {"name": f"{ADDON}-connection"}
    bring_up(kube, restored, pg)
    assert state.inplace is not None
    await state.inplace.pass_once()

    after = await state.restores.get(ACME, "app-1", ADDON, view.restore_id)
    assert after.status == "switched", after
    assert after.switch is not None and after.switch["kept"]["state"] == "hibernated"
    assert after.switch["from_incarnation"] == previous_server
    assert [c["name"] for c in after.switch["checks"]][:1] == ["promoted_and_writable"]
    # The Service and Secret lead to the restored Cluster; the password did not change.
    service = kube.double.get("Service", ADDON)
    assert service is not None
    assert service["spec"]["selector"][naming.CNPG_CLUSTER_LABEL] == restored
    assert service["metadata"]["annotations"]["paas-pitr.io/active-cluster"] == restored
    assert secret_data(kube, f"{ADDON}-connection")["password"] == password
    # The names moved, the data did not: one write flipped both.
    assert aliases(kube) == {ADDON: restored, restored: ADDON}
    physical_previous = kube.double.get("Cluster", ADDON)
    physical_restored = kube.double.get("Cluster", restored)
    assert physical_previous is not None and physical_restored is not None
    assert physical_previous["metadata"]["annotations"][ANNOTATION_HIBERNATION] == "on"
    assert ANNOTATION_HIBERNATION not in physical_restored["metadata"]["annotations"]
    assert physical_restored["metadata"]["labels"][LABEL_KNOWN_AS] == ADDON
    assert physical_restored["metadata"]["labels"][naming.LABEL_ROLE] == naming.ROLE_ADDON
    assert naming.LABEL_RESTORE_ID not in physical_restored["metadata"]["labels"]
    assert physical_previous["metadata"]["labels"][naming.LABEL_ROLE] == naming.ROLE_RESTORE
    # Data-bound fields stay with the Cluster that holds the data.
    assert "recovery" in physical_restored["spec"]["bootstrap"]
    assert "initdb" in physical_previous["spec"]["bootstrap"]
    # The addon reads as the restored Cluster; its schedule follows it and is owned by it.
    addon = await state.addons.get_cluster(ACME, "app-1", ADDON)
    assert addon["metadata"]["uid"] == physical_restored["metadata"]["uid"]
    assert incarnation_server_name_of(addon) == after.switch["to_incarnation"]
    schedule = kube.double.get("ScheduledBackup", naming.scheduled_backup_name(ADDON))
    assert schedule is not None and schedule["spec"]["cluster"]["name"] == restored
    assert schedule["metadata"]["ownerReferences"][0]["uid"] == physical_restored["metadata"]["uid"]
    # The switch's first base backup is of the restored Cluster.
    backups = [
        b
        for (kind, _), b in kube.objects.items()
        if kind == "Backup" and "-switch-" in b["metadata"]["name"]
    ]
    assert [b["spec"]["cluster"]["name"] for b in backups] == [restored]
    listing = await state.backups.list_backups(ACME, "app-1", ADDON)
    assert backups[0]["metadata"]["name"] in [item.name for item in listing.items]
    assert "addon.switchover" in actions(state)


async def test_undo_switches_back_and_expiry_deletes_the_kept_cluster(
    kube: KubernetesHarness, state: AppState, pg: PostgresServer
) -> None:
    view = await switched(kube, state, pg)
    restored = view.cluster_name
    assert state.inplace is not None
    await state.inplace.undo(ACME, "app-1", ADDON, view.restore_id)
    after = await state.restores.get(ACME, "app-1", ADDON, view.restore_id)
    assert after.status == "undone"
    assert aliases(kube) == {}
    service = kube.double.get("Service", ADDON)
    assert service is not None and service["spec"]["selector"][naming.CNPG_CLUSTER_LABEL] == ADDON
    addon = kube.double.get("Cluster", ADDON)
    kept = kube.double.get("Cluster", restored)
    assert addon is not None and kept is not None
    assert ANNOTATION_HIBERNATION not in addon["metadata"]["annotations"]
    assert kept["metadata"]["annotations"][ANNOTATION_HIBERNATION] == "on"
    schedule = kube.double.get("ScheduledBackup", naming.scheduled_backup_name(ADDON))
    assert schedule is not None and schedule["spec"]["cluster"]["name"] == ADDON
    with pytest.raises(UndoNotAvailable):
        await state.inplace.undo(ACME, "app-1", ADDON, view.restore_id)

    record = record_of(await kube.engine.get("Cluster", restored) or {})
    assert record is not None and record.undo_until is not None
    await state.inplace.pass_once(now=record.undo_until - timedelta(seconds=1))
    assert kube.double.get("Cluster", restored) is not None
    await state.inplace.pass_once(now=record.undo_until)
    assert kube.double.get("Cluster", restored) is None
    # The restore stays listed, expired, once the Cluster it was read from is gone.
    (listed,) = await state.restores.list_restores(ACME, "app-1", ADDON)
    assert (listed.restore_id, listed.status) == (view.restore_id, "expired")
    assert listed.switch is not None and listed.switch["kept"]["state"] == "deleted"
    assert listed.switch["kept"]["incarnation"] == after.switch["to_incarnation"]  # type: ignore[index]
    fetched = await state.restores.get(ACME, "app-1", ADDON, view.restore_id)
    assert fetched.status == "expired" and fetched.connection is None
    assert kube.double.get("Cluster", ADDON) is not None
    assert kube.double.get("ScheduledBackup", naming.scheduled_backup_name(ADDON)) is not None
    assert actions(state)[-3:] == ["addon.switchover", "addon.undo", "addon.undo_expired"]


async def test_expiry_after_a_switch_deletes_the_previous_cluster_not_the_addon(
    kube: KubernetesHarness, state: AppState, pg: PostgresServer
) -> None:
    await make_addon(kube, state)
    # A drill record, in its ConfigMap owned by the addon's Cluster (as drills write it).
    await state.drills.store.save(
        DrillRecord(
            drill_id="d" * 32,
            tenant="acme",
            app_id="app-1",
            addon_id=ADDON,
            plan="pro",
            status="passed",
            trigger="api",
            requested_by="tenant:acme",
            requested_at=datetime.now(UTC),
            finished_at=datetime.now(UTC),
        )
    )
    view = await restore_in_place(kube, state)
    bring_up(kube, view.cluster_name, pg)
    assert state.inplace is not None
    await state.inplace.pass_once()
    restored = view.cluster_name
    await state.inplace.pass_once(now=datetime.now(UTC) + timedelta(hours=3))
    # The Cluster that was the addon's is gone; the addon (the restored Cluster) and its
    # schedule stay (the schedule was re-owned, or the garbage collector would take it).
    assert kube.double.get("Cluster", ADDON) is None
    assert kube.double.get("Cluster", restored) is not None
    assert kube.double.get("ScheduledBackup", naming.scheduled_backup_name(ADDON)) is not None
    assert aliases(kube) == {ADDON: restored}
    assert [r.drill_id for r in await state.drills.store.for_addon(ADDON)] == ["d" * 32]
    (listed,) = await state.restores.list_restores(ACME, "app-1", ADDON)
    assert (listed.restore_id, listed.status) == (view.restore_id, "expired")
    # A plan change keeps the addon's history across switches.
    await state.addons.change_plan(ACME, "app-1", ADDON, "standard")
    (listed,) = await state.restores.list_restores(ACME, "app-1", ADDON)
    assert listed.status == "expired"
    addon = await state.addons.get_cluster(ACME, "app-1", ADDON)
    assert listed.switch is not None
    assert json.loads(addon["metadata"]["annotations"][ANNOTATION_SWITCHED_FROM]) == [
        listed.switch["from_incarnation"]
    ]
    assert addon["metadata"]["name"] == ADDON
    assert await kube.engine.get("Cluster", restored) is None  # that name stands for nothing
    service = kube.double.get("Service", ADDON)
    assert (
        service is not None and service["spec"]["selector"][naming.CNPG_CLUSTER_LABEL] == restored
    )


async def test_a_failed_verification_switches_nothing(
    kube: KubernetesHarness, state: AppState, pg: PostgresServer
) -> None:
    await make_addon(kube, state)
    view = await restore_in_place(kube, state)
    bring_up(kube, view.cluster_name, pg, port=1)  # nothing answers there
    assert state.inplace is not None
    await state.inplace.pass_once()
    after = await state.restores.get(ACME, "app-1", ADDON, view.restore_id)
    assert after.status == "failed"
    assert after.reason is not None and after.reason.startswith(
        "verification failed (promoted_and_writable)"
    )
    assert after.hint is not None and after.hint.startswith(
        "the restored server did not finish its recovery or refuses writes"
    )
    assert after.connection is None
    # Hibernated: CNPG removes its pods and keeps its volumes until the restore is deleted.
    failed = kube.double.get("Cluster", view.cluster_name)
    assert failed is not None and failed["metadata"]["annotations"][ANNOTATION_HIBERNATION] == "on"
    assert aliases(kube) == {}
    service = kube.double.get("Service", ADDON)
    assert service is not None and service["spec"]["selector"][naming.CNPG_CLUSTER_LABEL] == ADDON
    addon = kube.double.get("Cluster", ADDON)
    assert addon is not None and ANNOTATION_HIBERNATION not in addon["metadata"]["annotations"]
    assert "addon.switchover" not in actions(state)
    # The failed restore's folder, named like an incarnation of the addon, is recorded like
    # a deleted one's, so that its retention expires it.
    recovery = kube.double.get("Cluster", view.cluster_name)
    assert recovery is not None
    server = incarnation_server_name_of(recovery)
    stored = await kube.bucket.get_json(tombstone_key("acme", "app-1", server))
    assert stored is not None
    assert (stored["addon"], stored["server_name"], stored["deleted_by"]) == (
        ADDON,
        server,
        "system:paas-pitr",
    )


@pytest.mark.parametrize("crash_after", ["intent", "flip"])
async def test_a_restart_mid_switch_ends_switched(
    kube: KubernetesHarness,
    settings: Settings,
    tmp_path: Path,
    pg: PostgresServer,
    crash_after: str,
) -> None:
    """A service killed after writing the intent (or after flipping the names, before the
    Service moved) finishes the switch once started again: never half switched."""
    first = build_state(kube.engine, settings, tmp_path / "first")
    await make_addon(kube, first)
    view = await restore_in_place(kube, first)
    restored = view.cluster_name
    bring_up(kube, restored, pg)
    assert first.inplace is not None

    class Killed(Exception):
        pass

    async def kill(*_: Any, **__: Any) -> Any:
        raise Killed

    with pytest.MonkeyPatch.context() as patch:
        if crash_after == "intent":
            patch.setattr(kube.engine, "switch_clusters", kill)
        else:
            patch.setattr(Connections, "apply", kill)
        with pytest.raises(Killed):
            await first.inplace._verify_then_switch(
                await kube.engine.get("Cluster", restored) or {}, None
            )
    stored = await kube.engine.get("Cluster", restored)
    record = record_of(stored or {})
    assert record is not None and record.phase is Phase.SWITCHING
    assert aliases(kube) == ({} if crash_after == "intent" else {ADDON: restored, restored: ADDON})
    service = kube.double.get("Service", ADDON)
    assert service is not None and service["spec"]["selector"][naming.CNPG_CLUSTER_LABEL] == ADDON

    # A new process (new engine client, same API server) finishes it.
    engine = KubernetesEngine(
        settings,
        api_factory=kube.engine._api_factory,
        archive_reader=kube.engine.archive_reader,
        bucket=kube.engine.bucket,
    )
    second = build_state(engine, settings, tmp_path / "second")
    assert second.inplace is not None
    try:
        await engine.start()
        await second.inplace.pass_once()
        after = await second.restores.get(ACME, "app-1", ADDON, view.restore_id)
    finally:
        await engine.close()
    assert after.status == "switched"
    assert aliases(kube) == {ADDON: restored, restored: ADDON}
    service = kube.double.get("Service", ADDON)
    assert (
        service is not None and service["spec"]["selector"][naming.CNPG_CLUSTER_LABEL] == restored
    )
    previous = kube.double.get("Cluster", ADDON)
    assert (
        previous is not None and previous["metadata"]["annotations"][ANNOTATION_HIBERNATION] == "on"
    )


async def test_a_second_in_place_restore_switches_again(
    kube: KubernetesHarness, state: AppState, pg: PostgresServer
) -> None:
    first = await switched(kube, state, pg)
    assert first.switch is not None
    first_restored = first.cluster_name
    # The operator: the restored Cluster (now the addon) archives and has a base backup.
    end = LAST_ARCHIVED - timedelta(minutes=3)
    kube.set_status(
        "Cluster",
        first_restored,
        {
            "phase": "Cluster in healthy state",
            "firstRecoverabilityPoint": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "ClusterIsReady"},
                {"type": "ContinuousArchiving", "status": "True", "reason": "ok"},
            ],
        },
    )
    kube.put(backup_obj(first_restored, f"{first_restored}-daily-1", end))
    second = await restore_in_place(kube, state, at=LAST_ARCHIVED - timedelta(minutes=2))
    recovery = kube.double.get("Cluster", second.cluster_name)
    assert recovery is not None
    # It recovers from the incarnation the first restore switched the addon to.
    (source,) = recovery["spec"]["externalClusters"]
    assert source["barmanObjectStore"]["serverName"] == first.switch["to_incarnation"]
    bring_up(kube, second.cluster_name, pg)
    assert state.inplace is not None
    await state.inplace.pass_once()
    after = await state.restores.get(ACME, "app-1", ADDON, second.restore_id)
    assert after.status == "switched", after
    assert aliases(kube) == {
        ADDON: second.cluster_name,
        second.cluster_name: first_restored,
        first_restored: ADDON,
    }
    service = kube.double.get("Service", ADDON)
    assert service is not None
    assert service["spec"]["selector"][naming.CNPG_CLUSTER_LABEL] == second.cluster_name
    for physical in (ADDON, first_restored):
        kept = kube.double.get("Cluster", physical)
        assert kept is not None and kept["metadata"]["annotations"][ANNOTATION_HIBERNATION] == "on"
    # Both restores are listed, each with the cluster it keeps.
    listed = {v.restore_id: v for v in await state.restores.list_restores(ACME, "app-1", ADDON)}
    assert {k: v.status for k, v in listed.items()} == {
        first.restore_id: "switched",
        second.restore_id: "switched",
    }
    addon = await state.addons.get_cluster(ACME, "app-1", ADDON)
    assert json.loads(addon["metadata"]["annotations"][ANNOTATION_SWITCHED_FROM]) == [
        first.switch["to_incarnation"],
        first.switch["from_incarnation"],
    ]
    # Only the newest switch can be undone: undoing the first would make the addon archive
    # its first incarnation again after a switch it knows nothing of.
    with pytest.raises(UndoNotAvailable) as raised:
        await state.inplace.undo(ACME, "app-1", ADDON, first.restore_id)
    assert raised.value.details == {
        "status": "switched",
        "current_incarnation": after.switch["to_incarnation"] if after.switch else None,
        "to_incarnation": first.switch["to_incarnation"],
    }
    assert aliases(kube)[ADDON] == second.cluster_name
    # The operator hibernates both kept Clusters: no ready instance, which alone reads as
    # recovering. They are not restores under way (a limit of 2 is not reached), and they
    # are the addon's 2 kept restore clusters.
    for physical in (ADDON, first_restored):
        kube.set_status(
            "Cluster",
            physical,
            {
                "phase": "Cluster in hibernation",
                "readyInstances": 0,
                "conditions": [{"type": "Ready", "status": "False", "reason": "Hibernated"}],
            },
        )
    limits = state.settings.model_copy(
        update={"max_concurrent_restores_per_tenant": 2, "max_restores_per_addon": 3}
    )
    await check_restore_limits(kube.engine, limits, ACME, "app-1", ADDON)
    with pytest.raises(LimitReached):
        await check_restore_limits(
            kube.engine,
            limits.model_copy(update={"max_restores_per_addon": 2}),
            ACME,
            "app-1",
            ADDON,
        )
