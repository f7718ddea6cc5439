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
    install_caller_docs,
    install_openapi,
)
from paas_pitr.api.listing_pages import ListingPages
from paas_pitr.api.middleware import RequestContextMiddleware
from paas_pitr.api.routes import router
from paas_pitr.api.routes_drills import router as drills_router
from paas_pitr.api.routes_events import router as events_router
from paas_pitr.api.routes_inplace import router as inplace_router
from paas_pitr.api.state import AppState
from paas_pitr.errors import NotFound, PitrError

READINESS_TIMEOUT = 2.0


def audit_check(state: AppState) -> dict[str, Any]:
    """Whether changes can be audited durably and audit delivery is moving."""
    audit = state.audit
    stalled = audit.oldest_pending_seconds
    check: dict[str, Any] = {"ok": True, "delivery_stalled_seconds": round(stalled, 1)}
    try:
        audit.ensure_durable()
    except PitrError as exc:
        check.update(ok=False, error=exc.message)
        return check
    if stalled > state.settings.audit_stuck_seconds:
        check.update(
            ok=False,
            error=f"{audit.pending} audit event(s) have waited {stalled:.0f}s without delivery "
            f"(last error: {audit.last_error or 'none'})",
        )
    return check


def create_app(state: AppState, *, manage_lifecycle: bool = True) -> FastAPI:
    """An app serving ``state``; with ``manage_lifecycle`` it starts and stops the engine
    and the audit log with the server."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        if manage_lifecycle:
            await state.engine.start()
            await state.audit.start()
            # Retention of deleted addons' archives: nothing else ever expires them.
            tasks.append(
                asyncio.create_task(
                    state.archives.sweep_forever(state.settings.retention_sweep_seconds),
                    name="retention-sweeper",
                )
            )
            tasks += [asyncio.create_task(run()) for run in state.background]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
    app.state.listing_pages = ListingPages()
    errors.install(app)
    install_openapi(app)
    install_caller_docs(app)
    app.include_router(router, prefix="/v1")
    # The same routes under the seed's prefix (its curl examples use /api/v1).
    app.include_router(router, prefix="/api/v1")
    app.include_router(drills_router, prefix="/v1")
    for prefix in ("/v1", "/api/v1"):
        app.include_router(inplace_router, prefix=prefix)
    app.include_router(events_router, prefix="/v1")
    app.include_router(events_router, prefix="/api/v1")

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
        checks["audit"] = audit_check(state)
        ready = all(c["ok"] for c in checks.values())
        body = {"data": {"ready": ready, "checks": checks}}
        if not ready:
            failing = "; ".join(
                f"{name}: {c.get('error') or 'down'}" for name, c in checks.items() if not c["ok"]
            )
            body["error"] = {
                "code": "not_ready",
                "message": f"not ready: {failing}",
                "details": checks,
            }
        return JSONResponse(body, status_code=200 if ready else 503)

    static = resources.files("paas_pitr.api") / "static"
    assets = {
        "dashboard.html": "text/html; charset=utf-8",
        "dashboard.js": "text/javascript; charset=utf-8",
        "dashboard.css": "text/css; charset=utf-8",
        "secrets.js": "text/javascript; charset=utf-8",
        "events.js": "text/javascript; charset=utf-8",
        "timeline.js": "text/javascript; charset=utf-8",
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
        state.metrics.audit_stalled.set(state.audit.oldest_pending_seconds)
        state.metrics.audit_journal_backlog.set(state.audit.journal.size())
        with contextlib.suppress(OSError):
            state.metrics.disk_free.set(state.audit.journal.free_bytes())
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestContextMiddleware)
    return app
