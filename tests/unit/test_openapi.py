"""The OpenAPI document states the contract completely: every route with its request body,
its bearer security and exactly the statuses it can answer, errors in the one envelope."""

from __future__ import annotations

import inspect
import re
from typing import Any
from unittest import mock

import pytest
from fastapi.routing import APIRoute

from paas_pitr.api import create_app
from paas_pitr.api.contract import (
    ChangePlanRequest,
    CreateAddonRequest,
    CreateRestorePointRequest,
    EmptyRequest,
    RestoreRequest,
)
from paas_pitr.api.routes_drills import DrillRequest

PREFIXES = ("/v1", "/api/v1")
ADDON = "/apps/{app_id}/addons/{addon_id}"
# Per route under each prefix: the statuses it can answer, its body model (and whether the
# body is required).
API_ROUTES: dict[tuple[str, str], tuple[set[int], tuple[type[Any], bool] | None]] = {
    ("post", "/apps/{app_id}/addons"): (
        {201, 400, 401, 409, 413, 415, 422, 503},
        (CreateAddonRequest, True),
    ),
    ("get", "/apps/{app_id}/addons"): ({200, 401, 413, 422, 503}, None),
    ("get", ADDON): ({200, 401, 404, 413, 422, 503}, None),
    ("patch", ADDON): ({200, 400, 401, 404, 413, 415, 422, 503}, (ChangePlanRequest, True)),
    ("delete", ADDON): ({204, 401, 404, 409, 413, 422, 503}, None),
    ("get", f"{ADDON}/backups"): ({200, 401, 404, 413, 422, 503}, None),
    ("post", f"{ADDON}/backups"): (
        {202, 400, 401, 404, 409, 413, 415, 422, 503},
        (EmptyRequest, False),
    ),
    ("get", f"{ADDON}/incarnations"): ({200, 401, 404, 413, 422, 503}, None),
    ("post", f"{ADDON}/restore"): (
        {202, 400, 401, 404, 409, 413, 415, 422, 429, 501, 503},
        (RestoreRequest, True),
    ),
    ("get", f"{ADDON}/restores"): ({200, 401, 404, 413, 422, 503}, None),
    ("get", f"{ADDON}/restores/{{restore_id}}"): ({200, 401, 404, 413, 422, 503}, None),
    ("delete", f"{ADDON}/restores/{{restore_id}}"): ({204, 401, 404, 409, 413, 422, 503}, None),
    ("post", f"{ADDON}/restores/{{restore_id}}/undo"): (
        {200, 400, 401, 404, 409, 413, 415, 422, 501, 503},
        (EmptyRequest, False),
    ),
    ("get", f"{ADDON}/events"): ({200, 401, 404, 413, 422, 503}, None),
    ("post", f"{ADDON}/restore-points"): (
        {201, 400, 401, 404, 409, 413, 415, 422, 503},
        (CreateRestorePointRequest, True),
    ),
    ("get", f"{ADDON}/restore-points"): ({200, 401, 404, 413, 422, 503}, None),
    ("get", "/addons/{addon_id}/backups"): ({200, 401, 404, 413, 422, 503}, None),
    ("post", "/addons/{addon_id}/restore"): (
        {202, 400, 401, 404, 409, 413, 415, 422, 429, 501, 503},
        (RestoreRequest, True),
    ),
}
# Served under /v1 only (no legacy twins).
DRILL_ROUTES: dict[tuple[str, str], tuple[set[int], tuple[type[Any], bool] | None]] = {
    ("post", f"{ADDON}/drills"): (
        {202, 400, 401, 404, 409, 413, 415, 422, 503},
        (DrillRequest, False),
    ),
    ("get", f"{ADDON}/drills"): ({200, 401, 404, 413, 422, 503}, None),
    ("get", f"{ADDON}/drills/{{drill_id}}"): ({200, 401, 404, 413, 422, 503}, None),
}
OPERATIONS = (
    {
        ("get", "/healthz"): {200, 413},
        ("get", "/readyz"): {200, 413, 503},
        ("get", "/metrics"): {200, 413},
    }
    | {
        (method, prefix + path): statuses
        for (method, path), (statuses, _) in API_ROUTES.items()
        for prefix in PREFIXES
    }
    | {(method, "/v1" + path): statuses for (method, path), (statuses, _) in DRILL_ROUTES.items()}
)
ERROR_ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(mock.MagicMock(), manage_lifecycle=False).openapi()


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


def test_every_route_is_documented_with_exactly_its_statuses(document: dict[str, Any]) -> None:
    found = operations(document)
    assert set(found) == set(OPERATIONS)
    for key, operation in found.items():
        assert {int(s) for s in operation["responses"]} == OPERATIONS[key], key


def test_every_error_answers_in_the_envelope(document: dict[str, Any]) -> None:
    for key, operation in operations(document).items():
        for status, response in operation["responses"].items():
            if key == ("get", "/readyz") or int(status) < 400:
                continue
            assert response["content"] == {"application/json": {"schema": ERROR_ENVELOPE}}, key
            assert response["description"], key
    envelope = resolve(document, ERROR_ENVELOPE["$ref"])
    body = resolve(document, envelope["properties"]["error"]["$ref"])
    assert body["required"] == ["code", "message"]
    assert set(body["properties"]) == {"code", "message", "details"}
    ready = operations(document)[("get", "/readyz")]["responses"]
    assert ready["503"]["content"] == ready["200"]["content"]


def test_401_says_how_to_authenticate(document: dict[str, Any]) -> None:
    for key, operation in operations(document).items():
        if "401" in operation["responses"]:
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"], key


def test_bearer_security_on_every_api_route_only(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"] == {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": mock.ANY,
        }
    }
    for (method, path), operation in operations(document).items():
        if path.startswith(PREFIXES):
            assert operation["security"] == [{"bearer": []}], (method, path)
            assert 401 in OPERATIONS[(method, path)]
        else:
            assert "security" not in operation, (method, path)


def test_the_tenant_override_header_on_every_api_route_only(document: dict[str, Any]) -> None:
    # get_caller reads it itself: the document carries it all the same, after the
    # route's own parameters.
    for (method, path), operation in operations(document).items():
        names = [(p["in"], p["name"]) for p in operation.get("parameters", [])]
        if path.startswith(PREFIXES):
            assert names[-1] == ("header", "X-PaaS-Tenant"), (method, path)
            assert names.count(("header", "X-PaaS-Tenant")) == 1, (method, path)
            header = operation["parameters"][-1]
            assert header["required"] is False
            assert header["description"].startswith("Platform operators only")
        else:
            assert ("header", "X-PaaS-Tenant") not in names, (method, path)


def test_every_body_route_declares_its_model(document: dict[str, Any]) -> None:
    found = operations(document)
    routes = [(key, body, PREFIXES) for key, (_, body) in API_ROUTES.items()] + [
        (key, body, ("/v1",)) for key, (_, body) in DRILL_ROUTES.items()
    ]
    for (method, path), body, prefixes in routes:
        for prefix in prefixes:
            operation = found[(method, prefix + path)]
            if body is None:
                assert "requestBody" not in operation, (method, path)
                continue
            model, required = body
            declared = operation["requestBody"]
            assert declared["required"] is required
            (media,) = declared["content"]
            assert media == "application/json"
            schema = resolve(document, declared["content"][media]["schema"]["$ref"])
            assert set(schema.get("properties", {})) == set(model.model_fields)
            assert set(schema.get("required", [])) == {
                name for name, field in model.model_fields.items() if field.is_required()
            }
            assert schema["additionalProperties"] is False


def test_the_routes_that_read_a_body_are_the_ones_that_declare_one(
    document: dict[str, Any],
) -> None:
    """Independent of the table above: a route whose handler reads a JSON body (itself or
    through the restore helper) must declare it, and no other may."""
    app = create_app(mock.MagicMock(), manage_lifecycle=False)
    found = operations(document)
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        reads = "json_body(" in inspect.getsource(route.endpoint)
        for method in route.methods or ():
            operation = found[(method.lower(), route.path)]
            assert ("requestBody" in operation) is reads, (method, route.path)


def test_body_fields_are_documented_with_their_constraints(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["CreateAddonRequest"]["properties"]["plan"]["enum"] == [
        "free",
        "standard",
        "pro",
    ]
    assert schemas["ChangePlanRequest"]["properties"]["plan"]["enum"] == ["free", "standard", "pro"]
    assert schemas["RestoreRequest"]["properties"]["target"]["enum"] == ["new_cluster", "in_place"]
    assert schemas["RestoreRequest"]["properties"]["timestamp"]["anyOf"] == [
        {"type": "string", "format": "date-time"},
        {"type": "string", "enum": ["latest"]},
        {"type": "null"},
    ]


# The codes of their own that routes answer, per status: each must be named in that status's
# description, so a client knows what to switch on.
ROUTE_CODES: dict[tuple[str, str], dict[int, set[str]]] = {
    ("get", f"/v1{ADDON}/events"): {
        422: {
            "invalid_input",
            "invalid_timestamp",
            "timestamp_without_offset",
            "wal_scan_too_large",
        },
        503: {"archive_bucket_not_configured", "wal_decode_failed"},
    },
    ("post", f"/v1{ADDON}/restore-points"): {
        409: {"restore_point_exists", "plan_has_no_backups"},
        422: {"invalid_recovery_target"},
        503: {"primary_unreachable", "archive_bucket_not_configured"},
    },
    ("post", f"/v1{ADDON}/drills"): {
        409: {"drill_in_progress", "plan_has_no_backups"},
        422: {
            "invalid_timestamp",
            "timestamp_without_offset",
            "timestamp_in_future",
            "outside_recoverability_window",
            "no_backup_before_timestamp",
        },
    },
}


def test_each_route_names_the_codes_it_answers(document: dict[str, Any]) -> None:
    found = operations(document)
    for key, statuses in ROUTE_CODES.items():
        for status, codes in statuses.items():
            description = found[key]["responses"][str(status)]["description"]
            named = set(re.findall(r"`([a-z_]+)`", description))
            assert codes <= named, (key, status, codes - named)


def test_a_drill_accepts_latest_as_a_restore_does(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert (
        schemas["DrillRequest"]["properties"]["timestamp"]["anyOf"]
        == schemas["RestoreRequest"]["properties"]["timestamp"]["anyOf"]
    )
