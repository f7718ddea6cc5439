"""Request-scoped helpers: the caller (auth), the app state, strict JSON bodies."""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from paas_pitr.api.state import AppState
from paas_pitr.context import Caller
from paas_pitr.errors import (
    InvalidBody,
    JsonTooDeep,
    MalformedJson,
    Unauthorized,
    UnsupportedMediaType,
)
from paas_pitr.names import validate_tenant

ModelT = TypeVar("ModelT", bound=BaseModel)
TENANT_OVERRIDE_HEADER = "X-PaaS-Tenant"
# Every body is a flat object; a few levels leave room for future fields. The size is bounded
# by the middleware (64 KiB), the nesting here: Python's parser recurses, and a document a few
# thousand levels deep would exhaust the stack (RecursionError, a 500) before any validation.
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.pitr
    return state


# Declares the scheme in the OpenAPI document (components.securitySchemes, and security on
# every route that needs a caller); the refusal is ours, in the error envelope.
bearer = HTTPBearer(
    scheme_name="bearer",
    bearerFormat="JWT",
    description="A token from `paas-pitr token create --tenant NAME` (HS256 JWT naming a "
    "tenant and a role)",
    auto_error=False,
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
TenantOverride = Annotated[
    str | None,
    Header(
        alias=TENANT_OVERRIDE_HEADER,
        description="Platform operators only: act for this tenant (ignored for tenants)",
    ),
]


def documented_caller(credentials: Credentials = None, override: TenantOverride = None) -> None:
    """Never called: declares what :func:`get_caller` reads (the bearer scheme, the tenant
    header) for the OpenAPI document, which :func:`paas_pitr.api.contract.install_openapi`
    copies onto every route that depends on :func:`get_caller`."""


async def get_caller(request: Request) -> Caller:
    # Async though it awaits nothing: a plain function would be run in FastAPI's thread
    # pool, a thread hop per request that halved the throughput of cheap reads under
    # concurrent clients. The headers are read here rather than declared as parameters:
    # FastAPI's resolution of the two sub-dependencies took ~35 us of every authenticated
    # request (a fifth of a backups listing answered from kept pages).
    credentials = await bearer(request)
    override = request.headers.get(TENANT_OVERRIDE_HEADER)
    token = credentials.credentials.strip() if credentials is not None else ""
    if not token:
        raise Unauthorized(
            "missing bearer token: send 'Authorization: Bearer <token>' "
            "(mint one with `paas-pitr token create --tenant NAME`)",
            details={"missing": True},
        )
    caller = app_state(request).tokens.verify(token)
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


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in ``text``, counted without parsing it (brackets
    inside strings do not count). Linear in the length, no recursion."""
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(_DEPTH_STEP[c] for c in brackets), default=0)


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
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedJson(f"the body is not UTF-8: {exc}") from exc
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise JsonTooDeep(
            f"the body nests arrays and objects {depth} levels deep; at most "
            f"{MAX_JSON_DEPTH} allowed",
            details={"max_depth": MAX_JSON_DEPTH},
        )
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from exc
    try:
        # JSON escapes can spell half a UTF-16 pair (\ud800), which is no character: it
        # could be neither stored nor echoed in an answer.
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedJson(
            "the body holds a lone UTF-16 surrogate escape (such as \\ud800), not a character"
        ) from exc
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
