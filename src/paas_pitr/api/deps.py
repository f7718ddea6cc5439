"""Request-scoped helpers: the caller (auth), the app state, strict JSON bodies."""

from __future__ import annotations

import json
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from paas_pitr.api.state import AppState
from paas_pitr.context import Caller
from paas_pitr.errors import InvalidBody, MalformedJson, Unauthorized, UnsupportedMediaType
from paas_pitr.names import validate_tenant

ModelT = TypeVar("ModelT", bound=BaseModel)
TENANT_OVERRIDE_HEADER = "X-PaaS-Tenant"


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.pitr
    return state


def get_caller(request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "missing bearer token: send 'Authorization: Bearer <token>' "
            "(mint one with `paas-pitr token create --tenant NAME`)",
            details={"missing": True},
        )
    caller = app_state(request).tokens.verify(token.strip())
    override = request.headers.get(TENANT_OVERRIDE_HEADER)
    tenant = caller.tenant
    if override and caller.role == "operator":
        # Platform operators may act for any tenant, and are audited as themselves.
        tenant = validate_tenant(override)
    return Caller(
        tenant=tenant,
        role=caller.role,
        subject=caller.subject,
        request_id=request.scope.get("state", {}).get("request_id"),
    )


async def json_body(request: Request, model: type[ModelT], *, optional: bool = False) -> ModelT:
    """Parse a strict JSON object: right Content-Type, valid JSON, no unknown fields."""
    raw = await request.body()
    if not raw.strip() and optional:
        return model()
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {content_type or 'nothing'!r}"
        )
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidBody("the body must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        problems = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
        summary = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidBody(f"invalid body: {summary}", details={"errors": problems}) from exc
