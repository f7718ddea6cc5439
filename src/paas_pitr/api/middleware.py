"""ASGI middleware: request ids, body size limit, metrics. Pure ASGI (no BaseHTTPMiddleware),
so streaming and background tasks behave and the overhead stays small."""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paas_pitr.api.errors import error_response
from paas_pitr.errors import AuditUnavailable

MAX_BODY_BYTES = 64 * 1024
REQUEST_ID_HEADER = b"x-request-id"


class BodyTooLarge(Exception):
    pass


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER:
            text: str = value.decode("latin-1")
            if 0 < len(text) <= 128 and text.isprintable():
                return text
    return uuid.uuid4().hex


ROUTE_PREFIXES = ("/api/v1", "/v1")
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def route_template(scope: Scope) -> str:
    """The matched route's template (bounded label cardinality), with its mount prefix."""
    route_path = getattr(scope.get("route"), "path", None)
    if not route_path:
        return "<unmatched>"
    path: str = scope.get("path", "")
    for prefix in ROUTE_PREFIXES:
        if path.startswith(prefix + "/") and not route_path.startswith(prefix + "/"):
            return prefix + str(route_path)
    return str(route_path)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder: dict[str, Any] = {"status": 500}

        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                await self._too_large(scope, receive, send, request_id)
                return
        refused = self._audit_refusal(scope)
        if refused is not None:
            response = error_response(
                503,
                refused.code,
                refused.message,
                refused.details,
                headers={"X-Request-ID": request_id},
            )
            await response(scope, receive, send)
            self._observe(scope, 503, time.perf_counter() - started)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge
            return message

        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, limited_receive, tagged_send)
        except BodyTooLarge:
            status_holder["status"] = 413
            await self._too_large(scope, receive, send, request_id)
        finally:
            self._observe(scope, status_holder["status"], time.perf_counter() - started)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        response = error_response(
            413,
            "body_too_large",
            f"the request body exceeds {self.max_body} bytes",
            {"max_bytes": self.max_body},
            headers={"X-Request-ID": request_id},
        )
        await response(scope, receive, send)

    @staticmethod
    def _audit_refusal(scope: Scope) -> AuditUnavailable | None:
        """A change whose audit event could not be made durable is refused before anything
        is done (every mutating route, present and future)."""
        if scope["method"] not in MUTATING_METHODS or not scope.get("path", "").startswith(
            ROUTE_PREFIXES
        ):
            return None
        state = getattr(getattr(scope.get("app"), "state", None), "pitr", None)
        if state is None:
            return None
        try:
            state.audit.ensure_durable()
        except AuditUnavailable as exc:
            return exc
        return None

    @staticmethod
    def _observe(scope: Scope, status: int, seconds: float) -> None:
        app = scope.get("app")
        state = getattr(getattr(app, "state", None), "pitr", None)
        if state is None:
            return
        template = route_template(scope)
        state.metrics.requests.labels(scope["method"], template, str(status)).inc()
        state.metrics.latency.labels(scope["method"], template).observe(seconds)
