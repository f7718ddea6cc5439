"""Names are the tenant's own: no tenant can take, block or probe a name another tenant's
request creates or will create (addons, recovery clusters). Against both engines."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx

from paas_pitr.engines.memory import InMemoryEngine
from tests.integration.api.test_api import NOW, iso, make_addon
from tests.integration.conftest import RunningApi


def create(client: httpx.Client, app: str, **body: Any) -> httpx.Response:
    return client.post(f"/v1/apps/{app}/addons", json={"plan": "pro", "version": "16", **body})


def without(value: str, answer: httpx.Response) -> tuple[int, Any]:
    """The answer with one id blanked out, to compare answers about different ids."""
    return answer.status_code, answer.text.replace(value, "<id>")


def test_a_tenant_cannot_take_another_tenants_default_name(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    """globex squatting acme's future default id: refused, nothing created; acme's default
    addon is then created as usual."""
    with api.client(api.token("globex")) as globex:
        squat = create(globex, "app-2", addon_id="db-acme-app-2")
    assert squat.status_code == 422, squat.text
    error = squat.json()["error"]
    assert error["code"] == "addon_id_not_owned"
    assert error["details"]["prefix"] == "db-globex-"
    assert ("Cluster", "db-acme-app-2") not in engine.objects
    with api.client(api.token("acme")) as acme:
        mine = create(acme, "app-2")
    assert mine.status_code == 201, mine.text
    assert mine.json()["data"]["addon_id"] == "db-acme-app-2"


def test_the_refusal_says_nothing_of_what_exists(api: RunningApi, engine: InMemoryEngine) -> None:
    """Asking for an id of acme's space answers the same whether acme has that addon or not
    (it used to answer 409 addon_exists for an existing one)."""
    with api.client(api.token("acme")) as acme:
        assert make_addon(acme, engine) == "db-acme-app-1"
    before = set(engine.objects)
    with api.client(api.token("globex")) as globex:
        existing = create(globex, "app-1", addon_id="db-acme-app-1")
        free = create(globex, "app-1", addon_id="db-acme-app-9")
    assert existing.status_code == 422
    assert without("db-acme-app-1", existing) == without("db-acme-app-9", free)
    assert set(engine.objects) == before


def test_tenants_whose_names_extend_each_other_never_collide(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    """acme's app 'app-1' and acme-app's app '1' both spell db-acme-app-1 by the seed's
    convention: acme-app's '-' is doubled, so each gets its own addon, and neither can ask
    for a name of the other's space."""
    with api.client(api.token("acme")) as acme, api.client(api.token("acme-app")) as acme_app:
        first = create(acme, "app-1")
        second = create(acme_app, "1")
        assert (first.status_code, second.status_code) == (201, 201), second.text
        assert first.json()["data"]["addon_id"] == "db-acme-app-1"
        assert second.json()["data"]["addon_id"] == "db-acme--app-1"
        assert acme.get("/v1/apps/app-1/addons/db-acme-app-1").status_code == 200
        assert acme_app.get("/v1/apps/1/addons/db-acme--app-1").status_code == 200
        assert acme_app.get("/v1/apps/app-1/addons/db-acme-app-1").status_code == 404
        refused = [
            create(acme_app, "1", addon_id="db-acme-app-2"),
            create(acme, "1", addon_id="db-acme--app-2"),
        ]
    assert [r.json()["error"]["code"] for r in refused] == ["addon_id_not_owned"] * 2
    labels = engine.objects[("Cluster", "db-acme--app-1")]["metadata"]["labels"]
    assert labels["paas-pitr.io/tenant"] == "acme-app"


def test_explicit_ids_in_the_tenants_own_space(api: RunningApi, engine: InMemoryEngine) -> None:
    with api.client(api.token("acme")) as acme:
        named = create(acme, "app-1", addon_id="db-acme-reporting")
        again = create(acme, "app-1", addon_id="db-acme-reporting")
        anywhere = create(acme, "app-1", addon_id="reporting")
    assert named.status_code == 201, named.text
    # Its own addon: saying it exists tells the tenant nothing it does not know.
    assert (again.status_code, again.json()["error"]["code"]) == (409, "addon_exists")
    assert (anywhere.status_code, anywhere.json()["error"]["code"]) == (422, "addon_id_not_owned")


def test_an_operator_acting_for_a_tenant_gets_that_tenants_names(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    with api.client(api.token("platform", role="operator")) as operator:
        headers = {"X-PaaS-Tenant": "acme"}
        mine = operator.post(
            "/v1/apps/app-3/addons", json={"plan": "free", "version": "16"}, headers=headers
        )
        theirs = operator.post(
            "/v1/apps/app-3/addons",
            json={"plan": "free", "version": "16", "addon_id": "db-platform-x"},
            headers=headers,
        )
    assert mine.json()["data"]["addon_id"] == "db-acme-app-3"
    assert theirs.json()["error"]["code"] == "addon_id_not_owned"


def test_a_keyed_restore_names_a_cluster_nobody_else_can_compute_or_take(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    """The recovery cluster of a restore with an Idempotency-Key used to be named from the
    tenant and the key alone (uuid5): anyone knowing both could create that name first and
    make the restore fail. Now it is derived with the server's key, and lies in the tenant's
    space anyway."""
    key = "nightly-2026-05-04"
    legacy_id = uuid.uuid5(uuid.UUID("0b6f5b7e-4d0c-4c1e-9a52-7d3f4f2d9a10"), f"acme:{key}").hex
    with api.client(api.token("acme")) as acme:
        addon = make_addon(acme, engine)
    precomputed = f"{addon}-r{legacy_id[:8]}"
    with api.client(api.token("globex")) as globex:
        squat = create(globex, "app-1", addon_id=precomputed)
    assert squat.json()["error"]["code"] == "addon_id_not_owned"
    body = {"timestamp": iso(NOW - timedelta(hours=1))}
    url = f"/v1/apps/app-1/addons/{addon}/restore"
    with api.client(api.token("acme")) as acme:
        first = acme.post(url, json=body, headers={"Idempotency-Key": key})
        retry = acme.post(url, json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    data = first.json()["data"]
    assert data["restore_id"] != legacy_id
    assert data["cluster_name"] == f"{addon}-r{data['restore_id'][:8]}" != precomputed
    assert retry.json()["data"]["restore_id"] == data["restore_id"]
    assert retry.headers["idempotent-replayed"] == "true"
    # The same key from another tenant names another restore (and cannot see this one).
    assert api.state.addons.name_key.restore_id("globex", key) != data["restore_id"]
