"""The FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from paas_pitr import __version__
from paas_pitr.api import errors
from paas_pitr.api.contract import (
    Envelope,
    Health,
    ReadinessEnvelope,
    error_responses,
    install_openapi,
)
from paas_pitr.api.middleware import RequestContextMiddleware
from paas_pitr.api.routes import router
from paas_pitr.api.state import AppState
from paas_pitr.errors import NotFound, PitrError

READINESS_TIMEOUT = 2.0


def create_app(state: AppState, *, manage_lifecycle: bool = True) -> FastAPI:
    """An app serving ``state``; with ``manage_lifecycle`` it starts and stops the engine
    and the audit log with the server."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper: asyncio.Task[None] | None = None
        if manage_lifecycle:
            await state.engine.start()
            await state.audit.start()
            # Retention of deleted addons' archives: nothing else ever expires them.
            sweeper = asyncio.create_task(
                state.archives.sweep_forever(state.settings.retention_sweep_seconds),
                name="retention-sweeper",
            )
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            if manage_lifecycle:
                await state.audit.stop()
                await state.engine.close()
                for close in state.closers:
                    await close()

    app = FastAPI(
        title="paas-pitr",
        version=__version__,
        summary="Point-in-time recovery for the managed Postgres addon, on CloudNativePG",
        lifespan=lifespan,
    )
    app.state.pitr = state
    errors.install(app)
    install_openapi(app)
    app.include_router(router, prefix="/v1")
    # The same routes under the seed's prefix (its curl examples use /api/v1).
    app.include_router(router, prefix="/api/v1")

    @app.get(
        "/healthz",
        tags=["operations"],
        response_model=Envelope[Health],
        responses=error_responses(413),
    )
    async def healthz() -> dict[str, Any]:
        return {"data": {"status": "ok", "version": __version__}}

    @app.get(
        "/readyz",
        tags=["operations"],
        response_model=None,
        responses={
            200: {"model": ReadinessEnvelope, "description": "The database and the engine answer"},
            503: {
                "model": ReadinessEnvelope,
                "description": "One of them does not: `error.code` is `not_ready`, and "
                "`data.checks` says which and why",
            },
            **error_responses(413),
        },
    )
    async def readyz() -> JSONResponse:
        checks: dict[str, dict[str, Any]] = {}

        async def probe(name: str, check: Any) -> None:
            try:
                await asyncio.wait_for(check(), READINESS_TIMEOUT)
                checks[name] = {"ok": True}
            except TimeoutError:
                checks[name] = {"ok": False, "error": f"no answer within {READINESS_TIMEOUT}s"}
            except PitrError as exc:
                checks[name] = {"ok": False, "error": exc.message}

        await asyncio.gather(
            probe("database", state.audit.repository.ping), probe("engine", state.engine.check)
        )
        checks["database"]["pending_audit_events"] = state.audit.pending
        ready = all(c["ok"] for c in checks.values())
        body = {"data": {"ready": ready, "checks": checks}}
        if not ready:
            failing = ", ".join(name for name, c in checks.items() if not c["ok"])
            body["error"] = {
                "code": "not_ready",
                "message": f"unreachable: {failing}",
                "details": checks,
            }
        return JSONResponse(body, status_code=200 if ready else 503)

    static = resources.files("paas_pitr.api") / "static"
    assets = {
        "dashboard.html": "text/html; charset=utf-8",
        "dashboard.js": "text/javascript; charset=utf-8",
        "dashboard.css": "text/css; charset=utf-8",
        "secrets.js": "text/javascript; charset=utf-8",
    }
    csp = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'"}

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> Response:
        page = (static / "dashboard.html").read_bytes()
        return Response(page, media_type=assets["dashboard.html"], headers=csp)

    @app.get("/dashboard/{asset}", include_in_schema=False)
    async def dashboard_asset(asset: str) -> Response:
        if asset not in assets:
            raise NotFound(f"no dashboard asset {asset!r}")
        return Response((static / asset).read_bytes(), media_type=assets[asset], headers=csp)

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format",
                "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
            },
            **error_responses(413),
        },
    )
    async def metrics(request: Request) -> Response:
        state.metrics.audit_pending.set(state.audit.pending)
        state.metrics.audit_delivered.set(state.audit.delivered)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestContextMiddleware)
    return app
