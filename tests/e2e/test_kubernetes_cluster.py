"""End to end against a REAL Kubernetes cluster running CNPG: opt-in.

    PAAS_PITR_KUBE_E2E=1 KUBECONFIG=... PAAS_PITR_NAMESPACE=... make test

Needs the CNPG operator (and for plugin mode the Barman Cloud Plugin), the `ovh-s3-creds`
Secret and a reachable bucket (`paas-pitr doctor` checks all of it). Creates a pro addon, waits
for CNPG to make it ready and back it up, restores it to an instant into a new cluster, waits
for that one to be ready, and deletes both. Nothing here plays the operator.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from paas_pitr.api.state import AppState
from paas_pitr.audit import AuditLog
from paas_pitr.audit.dispatcher import AuditJournal
from paas_pitr.audit.repository import InMemoryAuditRepository
from paas_pitr.auth import TokenAuthority
from paas_pitr.context import Caller
from paas_pitr.engines.kubernetes import KubernetesEngine
from paas_pitr.settings import Settings

pytestmark = pytest.mark.skipif(
    os.environ.get("PAAS_PITR_KUBE_E2E") != "1",
    reason="set PAAS_PITR_KUBE_E2E=1 and KUBECONFIG to run against a real cluster",
)


async def _wait(check: Any, what: str, timeout: float = 1800) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(5)
    pytest.fail(f"timed out waiting for {what}")


async def test_addon_backup_and_restore_on_a_real_cluster(tmp_path: Path) -> None:
    settings = Settings(engine="kubernetes", state_dir=tmp_path)
    engine = KubernetesEngine(settings)
    state = AppState.build(
        settings,
        engine,
        AuditLog(InMemoryAuditRepository(), AuditJournal(tmp_path / "journal")),
        TokenAuthority(b"e" * 48),
    )
    caller = Caller("e2e")
    app = f"e2e-{uuid.uuid4().hex[:6]}"
    await engine.start()
    try:
        addon = await state.addons.create_addon_generic(caller, app, plan="pro")

        async def backed_up() -> bool:
            listing = await state.backups.list_backups(caller, app, addon.addon_id)
            return any(b.status.value == "completed" for b in listing.items)

        await _wait(backed_up, "the first base backup")
        moment = datetime.now(UTC)

        async def restorable() -> bool:
            listing = await state.backups.list_backups(caller, app, addon.addon_id)
            return bool(listing.window.latest and listing.window.latest >= moment)

        await _wait(restorable, "the instant to be archived")
        restore, _ = await state.restores.restore_addon_pitr(
            caller, app, addon.addon_id, timestamp=moment.isoformat()
        )

        async def restored() -> bool:
            view = await state.restores.get(caller, app, addon.addon_id, restore.restore_id)
            assert view.status != "failed", view.reason
            return view.status == "ready"

        await _wait(restored, "the recovery cluster")
        await engine.delete("Cluster", restore.cluster_name)
        await state.addons.delete(caller, app, addon.addon_id)
    finally:
        state.audit.journal.close()
        await engine.close()
