"""The API's contract as the OpenAPI document states it: bodies, envelopes, errors, auth.

Routes read their JSON bodies by hand (``deps.json_body``: strict Content-Type, bounded size
and nesting, our own error codes), so FastAPI cannot see them; each body route declares its
model here with :func:`json_request_body`, and :func:`install_openapi` adds those models to
the document. Each route lists the error statuses it can really answer with
:func:`error_responses`, all in the one error envelope.
"""

from __future__ import annotations

import copy
from typing import Any, Generic, Literal, TypeVar

import fastapi.routing
from fastapi import Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool, StrictInt, StrictStr

from paas_pitr.api.deps import MAX_JSON_DEPTH, documented_caller, get_caller
from paas_pitr.api.middleware import MAX_BODY_BYTES
from paas_pitr.names import ADDON_ID_MAX

T = TypeVar("T")

DNS1123_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_PLAN_ENUM: dict[str, JsonValue] = {"enum": ["free", "standard", "pro"]}


# --- envelopes -------------------------------------------------------------------------


class Envelope(BaseModel, Generic[T]):
    data: T


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable: clients switch on it")
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class Check(BaseModel):
    ok: bool
    error: str | None = None
    pending_audit_events: int | None = Field(
        default=None, description="database only: audit events not yet written"
    )


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, Check] = Field(description="'database' and 'engine'")


class ReadinessEnvelope(BaseModel):
    data: Readiness
    error: ErrorBody | None = Field(
        default=None, description="503 only: code 'not_ready', naming what is down"
    )


class Health(BaseModel):
    status: Literal["ok"]
    version: str


# --- request bodies --------------------------------------------------------------------
# Documentation-only constraints (json_schema_extra) leave validation to the use-cases, so
# each refusal keeps its own code (unknown_plan, invalid_name...) rather than a generic one.


class CreateAddonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: StrictStr = Field(json_schema_extra=_PLAN_ENUM)
    version: StrictStr | None = Field(
        default=None,
        description="PostgreSQL major version; default: the engine's",
        json_schema_extra={"pattern": r"^[1-9][0-9]?(\.[0-9]+)?$"},
    )
    addon_id: StrictStr | None = Field(
        default=None,
        description="Default db-{tenant}-{app}. Names are the tenant's own: an explicit id "
        "starts with 'db-{tenant}-' (each '-' of the tenant written twice), else 422 "
        "addon_id_not_owned, whatever exists",
        json_schema_extra={"pattern": DNS1123_LABEL_PATTERN, "maxLength": ADDON_ID_MAX},
    )


class ChangePlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: StrictStr = Field(json_schema_extra=_PLAN_ENUM)


class RestoreRequest(BaseModel):
    """Exactly one recovery target: ``timestamp``, ``lsn``, ``xid``, ``restore_point`` or
    ``before_event`` (else 422 invalid_recovery_target)."""

    model_config = ConfigDict(extra="forbid")
    timestamp: StrictStr | None = Field(
        default=None,
        description="ISO 8601 with an explicit offset (Z or +hh:mm), or 'latest': the newest "
        "restorable instant",
        json_schema_extra={
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "enum": ["latest"]},
                {"type": "null"},
            ]
        },
    )
    lsn: StrictStr | None = Field(
        default=None,
        description="Replay up to this WAL position (X/Y), within the window's LSN bounds",
        json_schema_extra={"pattern": r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"},
    )
    xid: StrictStr | StrictInt | None = Field(
        default=None,
        description="Replay up to the commit of this transaction id; its commit record must be "
        "in the archived WAL of the current range",
    )
    restore_point: StrictStr | None = Field(
        default=None, description="A restore point created with POST .../restore-points"
    )
    before_event: StrictStr | None = Field(
        default=None,
        description="An event id from GET .../events: restore everything committed before "
        "that transaction, and nothing of it",
    )
    inclusive: StrictBool | None = Field(
        default=None,
        description="timestamp, lsn, xid: include the target (default, PostgreSQL's and "
        "CNPG's) or stop just before it",
    )
    target: Literal["new_cluster", "in_place"] = "new_cluster"
    incarnation: StrictStr | None = Field(
        default=None,
        description="Restore from this incarnation's archive (a server_name listed by "
        "GET .../incarnations), also once the addon is deleted; default: the live addon's",
    )


class CreateRestorePointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: StrictStr = Field(
        description="Unique per addon; 1-63 bytes, printable", json_schema_extra={"maxLength": 63}
    )


class EmptyRequest(BaseModel):
    """An on-demand backup takes no parameters: no body, or an empty object."""

    model_config = ConfigDict(extra="forbid")


_BODY_MODELS: dict[str, type[BaseModel]] = {}


_ANSWER_MODELS: dict[str, type[BaseModel]] = {}


def answer_ref(model: type[BaseModel]) -> dict[str, str]:
    """A ``$ref`` to ``model`` as answered (serialized, by alias), added to
    ``components.schemas``: for media types FastAPI does not describe itself, such as a
    stream of JSON lines."""
    _ANSWER_MODELS[model.__name__] = model
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def json_request_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the route's JSON body."""
    _BODY_MODELS[model.__name__] = model
    return {
        "requestBody": {
            "required": required,
            "description": f"A JSON object of at most {MAX_BODY_BYTES} bytes, nested at "
            f"most {MAX_JSON_DEPTH} levels; unknown fields are refused",
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


# --- error statuses --------------------------------------------------------------------

_ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The body is not JSON (`malformed_json`) or nests deeper than "
    f"{MAX_JSON_DEPTH} levels (`json_too_deep`)",
    401: "No bearer token, or an invalid or expired one (`unauthorized`)",
    404: "Not found for the caller's tenant (`not_found`); another tenant's looks exactly "
    "like a missing one",
    409: "The state of the addon refuses the request",
    413: f"The body exceeds {MAX_BODY_BYTES} bytes (`body_too_large`); any route refuses "
    "a Content-Length over it",
    415: "A body whose Content-Type is not application/json (`unsupported_media_type`)",
    422: "A path, query, header or body value is invalid (`invalid_request`, `invalid_name`...)",
    429: "A per-tenant limit on work under way is reached; retry once some has ended",
    501: "Valid, but not available yet",
    503: "A dependency is down: `engine_unavailable`, `object_store_unavailable`, "
    "`archive_bucket_not_configured`; or a change cannot be audited durably "
    "(`audit_unavailable`: nothing was done); retry later",
}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": 'Bearer realm="paas-pitr"[, error="invalid_token"]',
        "schema": {"type": "string"},
    }
}


def error_responses(*statuses: int, **codes: str) -> dict[int | str, dict[str, Any]]:
    """The error statuses a route can answer, each in the error envelope. ``codes`` adds
    the route's own error codes to a status's description: ``s409="plan_has_no_backups"``."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description = _ERROR_DESCRIPTIONS[status]
        if f"s{status}" in codes:
            description += f". Here: {codes[f's{status}']}"
        response: dict[str, Any] = {"model": ErrorEnvelope, "description": description}
        if status == 401:
            response["headers"] = _WWW_AUTHENTICATE
        responses[status] = response
    return responses


# --- the document ----------------------------------------------------------------------


def install_openapi(app: FastAPI) -> None:
    """Add the body models the routes declare to ``components.schemas``."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name, model in _BODY_MODELS.items():
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[name] = schema
        for name, model in _ANSWER_MODELS.items():
            schema = model.model_json_schema(
                by_alias=True, mode="serialization", ref_template="#/components/schemas/{model}"
            )
            # The models it shares with the JSON answers are FastAPI's already: the same.
            for shared, definition in schema.pop("$defs", {}).items():
                schemas.setdefault(shared, definition)
            schemas[name] = schema
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _api_routes(app: FastAPI) -> list[tuple[APIRoute, str]]:
    """Every API route with its path as documented (prefixes of included routers
    included): recent FastAPI versions keep included routers as such in ``app.routes``
    and iterate them with ``iter_route_contexts``; earlier ones copied their routes."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    if iterate is None:
        return [(r, r.path_format) for r in app.routes if isinstance(r, APIRoute)]
    return [
        (context.original_route, context.path_format)
        for context in iterate(app.routes)
        if isinstance(context.original_route, APIRoute)
    ]


def _needs_caller(dependant: Dependant) -> bool:
    return any(d.call is get_caller or _needs_caller(d) for d in dependant.dependencies)


def document_caller(app: FastAPI, document: dict[str, Any]) -> None:
    """:func:`paas_pitr.api.deps.get_caller` reads its headers itself, so FastAPI documents
    neither: each route depending on it gets what FastAPI documents for
    :func:`paas_pitr.api.deps.documented_caller` (the security requirement, the tenant
    header after the route's own parameters, as for a sub-dependency's)."""
    probe = FastAPI()

    @probe.get("/probe", dependencies=[Depends(documented_caller)])
    def probed() -> None:
        """Documents the caller's credentials only."""

    fragment = get_openapi(title="probe", version="0", routes=probe.routes)
    operation = fragment["paths"]["/probe"]["get"]
    schemes = fragment["components"]["securitySchemes"]
    document.setdefault("components", {}).setdefault("securitySchemes", {}).update(schemes)
    for route, path_format in _api_routes(app):
        if not route.include_in_schema or not _needs_caller(route.dependant):
            continue
        path = document["paths"].get(path_format, {})
        for method in route.methods or ():
            documented = path.get(method.lower())
            if documented is None:
                continue
            parameters = [*documented.pop("parameters", []), *operation["parameters"]]
            rest = {
                key: documented.pop(key)
                for key in list(documented)
                if key in ("requestBody", "responses", "callbacks")
            }
            # In FastAPI's order of keys: the same document, byte for byte.
            documented.update(
                security=copy.deepcopy(operation["security"]),
                parameters=copy.deepcopy(parameters),
                **rest,
            )


def install_caller_docs(app: FastAPI) -> None:
    """Document the caller's credentials on the routes that need a caller
    (:func:`document_caller`), once the rest of the document is made."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        document_caller(app, document)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
