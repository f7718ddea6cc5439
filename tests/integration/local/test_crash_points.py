"""A restore's transitions survive the service dying at each of them (kill -9: nothing of
the dying process runs). The test stops the service, then puts the files and objects in the
state a kill at that point leaves, and starts it again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from paas_pitr.engines.local.objects import ObjectDatabase
from paas_pitr.timestamps import format_api_time
from tests.integration.api.test_api import wait_for_rows
from tests.integration.local.conftest import LocalApi
from tests.integration.local.test_pitr import snapshot, written_then_damaged

RECOVERING = {
    "phase": "Setting up primary",
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "SettingUpPrimary",
            "message": "bootstrapping",
        }
    ],
}


REASON = "recovery ended before configured recovery target was reached"


def rewrite(api: LocalApi, cluster_name: str, meta: dict[str, Any]) -> None:
    """Forge the instance's recorded state and its Cluster's status ("recovering")."""
    meta_path = api.engine.root / "instances" / cluster_name / "meta.json"
    current = json.loads(meta_path.read_text(encoding="utf-8"))
    meta_path.write_text(json.dumps({**current, **meta}), encoding="utf-8")
    objects = ObjectDatabase(api.engine.root / "objects.sqlite3")
    try:
        objects.update_status("Cluster", cluster_name, RECOVERING)
    finally:
        objects.close()


def restored(api: LocalApi) -> tuple[str, str, dict[str, Any]]:
    addon_id, _, target, expected = written_then_damaged(api)
    restore = api.restore_when_restorable("app-1", addon_id, format_api_time(target))
    assert snapshot(restore["connection"]["uri"]) == expected
    return addon_id, restore["restore_id"], {"cluster": restore["cluster_name"], "rows": expected}


def test_a_restore_promoted_while_the_service_was_down_is_ready(local_api: LocalApi) -> None:
    """Killed during replay, while PostgreSQL went on and promoted: the restore succeeded.
    (Restoring it again would fail: its own archive folder already holds WAL.)"""
    addon_id, restore_id, facts = restored(local_api)
    local_api.stop()
    rewrite(local_api, facts["cluster"], {"bootstrap": "running"})
    data = Path(local_api.engine.root / "instances" / facts["cluster"] / "data")
    assert not (data / "recovery.signal").exists()  # PostgreSQL removed it when promoting
    local_api.start()
    again = local_api.wait_restore("app-1", addon_id, restore_id)
    assert again["status"] == "ready", again
    assert snapshot(again["connection"]["uri"]) == facts["rows"]


def test_a_failure_recorded_before_a_kill_is_reported(local_api: LocalApi) -> None:
    """Killed after recording a failed bootstrap, before writing the status: the restore
    reads failed (never "recovering" forever), with its reason, audited once."""
    addon_id, restore_id, facts = restored(local_api)
    local_api.stop()
    rewrite(
        local_api,
        facts["cluster"],
        {
            "bootstrap": "failed",
            "bootstrap_reason": "recovery ended before configured recovery target was reached",
        },
    )
    local_api.start()
    failed = local_api.wait_restore("app-1", addon_id, restore_id)
    assert failed["status"] == "failed", failed
    assert failed["reason"] == REASON
    assert failed["hint"]
    (row,) = wait_for_rows(local_api.dsn, 1, "addon.restore_failed")
    assert row[2]["restore_id"] == restore_id
