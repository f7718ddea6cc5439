"""The backups listing over HTTP with its pages kept: the caller's access is checked on
every request, and a change shows in the next answer (both engines)."""

from __future__ import annotations

from datetime import timedelta

from paas_pitr.engines.memory import InMemoryEngine
from tests.integration.api.test_api import NOW, backup_obj, make_addon
from tests.integration.conftest import RunningApi


def test_a_kept_page_is_answered_only_to_the_addon_s_tenant(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    with (
        api.client(api.token()) as owner,
        api.client(api.token("globex")) as other,
        api.client(api.token("globex", role="operator")) as operator,
    ):
        addon = make_addon(owner, engine)
        nested = f"/v1/apps/app-1/addons/{addon}/backups"
        legacy = f"/v1/addons/{addon}/backups"
        first = owner.get(nested)
        assert first.status_code == 200
        assert first.headers["content-type"] == "application/json"
        assert owner.get(nested).content == first.content
        assert owner.get(legacy).content == first.content

        for path in (nested, legacy):
            refused = other.get(path)
            assert refused.status_code == 404
            assert refused.json()["error"]["code"] == "not_found"
        assert operator.get(nested).status_code == 404
        acting = operator.get(nested, headers={"X-PaaS-Tenant": "acme"})
        assert acting.content == first.content
        assert owner.get(nested, headers={"Authorization": "Bearer not-a-token"}).status_code == 401


def test_a_new_backup_shows_in_the_next_answer(api: RunningApi, engine: InMemoryEngine) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        path = f"/v1/apps/app-1/addons/{addon}/backups"
        before = client.get(path).json()["data"]
        assert [b["name"] for b in before["items"]] == [f"{addon}-daily-2", f"{addon}-daily-1"]
        engine.put(backup_obj(addon, f"{addon}-manual", NOW - timedelta(hours=1), "running"))
        after = client.get(path).json()["data"]
        engine.set_status(
            "Backup",
            f"{addon}-manual",
            backup_obj(addon, f"{addon}-manual", NOW - timedelta(hours=1))["status"],
        )
        done = client.get(path).json()["data"]
    assert [(b["name"], b["status"]) for b in after["items"]] == [
        (f"{addon}-manual", "running"),
        (f"{addon}-daily-2", "completed"),
        (f"{addon}-daily-1", "completed"),
    ]
    assert after["pagination"]["total"] == 3
    assert [b["status"] for b in done["items"]] == ["completed"] * 3
