"""The JSON-lines answer of long operations: who gets it, and its lines for a success, a
failure with a stable code, and an unexpected failure."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from paas_pitr.api.ndjson import NDJSON, progress_stream, wants_ndjson
from paas_pitr.errors import ObjectStoreError
from paas_pitr.postgres.server import pick_port


class Done(BaseModel):
    total: int


async def counting(report: Callable[[int], None]) -> Done:
    for step in (1, 2, 3):
        report(step)
        await asyncio.sleep(0)
    return Done(total=3)


async def failing(report: Callable[[int], None]) -> Done:
    report(1)
    raise ObjectStoreError("WAL segment 'x' of the archive is unreadable", details={"key": "x"})


async def broken(report: Callable[[int], None]) -> Done:
    report(1)
    raise RuntimeError("a bug")


def serve() -> TestClient:
    app = FastAPI()
    works = {"counting": counting, "failing": failing, "broken": broken}

    @app.get("/{name}")
    async def run(name: str, request: Request) -> Any:
        if not wants_ndjson(request):
            return {"data": (await works[name](lambda _: None)).model_dump()}
        return progress_stream(works[name], lambda step: {"done": step}, name)

    return TestClient(app, raise_server_exceptions=False)


def lines(client: TestClient, name: str) -> list[dict[str, Any]]:
    response = client.get(f"/{name}", headers={"Accept": NDJSON})
    assert response.status_code == 200
    assert response.headers["content-type"] == NDJSON
    assert response.text.endswith("\n")
    return [json.loads(line) for line in response.text.splitlines()]


@pytest.mark.parametrize(
    ("accept", "streamed"),
    [
        (NDJSON, True),
        (f"{NDJSON}, application/json", True),
        (f"application/json;q=0.9, {NDJSON}", True),
        (f"{NDJSON};q=0.5, application/json", False),
        (f"{NDJSON};q=0", False),
        ("application/json", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_only_a_client_asking_for_the_stream_gets_it(accept: str, streamed: bool) -> None:
    response = serve().get("/counting", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(NDJSON if streamed else "application/json")


def test_progress_lines_then_the_result() -> None:
    assert lines(serve(), "counting") == [
        {"progress": {"done": 1}},
        {"progress": {"done": 2}},
        {"progress": {"done": 3}},
        {"result": {"total": 3}},
    ]


def test_a_failure_mid_way_ends_the_stream_with_its_stable_code() -> None:
    assert lines(serve(), "failing") == [
        {"progress": {"done": 1}},
        {
            "error": {
                "code": "object_store_unavailable",
                "message": "WAL segment 'x' of the archive is unreadable",
                "details": {"key": "x"},
            }
        },
    ]


def test_an_unexpected_failure_says_internal_error_and_nothing_of_it() -> None:
    assert lines(serve(), "broken") == [
        {"progress": {"done": 1}},
        {
            "error": {
                "code": "internal_error",
                "message": "internal error; see the server log",
                "details": {},
            }
        },
    ]


def test_a_client_going_away_cancels_the_work() -> None:
    """Over real HTTP: the client reads the first line and hangs up; the work (which would
    run for a minute) is cancelled and runs its own cleanup."""
    cleaned = threading.Event()

    async def endless(report: Callable[[int], None]) -> Done:
        try:
            for step in range(600):
                report(step)
                await asyncio.sleep(0.1)
        finally:
            cleaned.set()
        return Done(total=600)

    app = FastAPI()

    @app.get("/endless")
    async def run() -> Any:
        return progress_stream(endless, lambda step: {"done": step}, "endless")

    port = pick_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        with (
            httpx.Client() as client,
            client.stream("GET", f"http://127.0.0.1:{port}/endless") as response,
        ):
            first = next(response.iter_lines())
        assert json.loads(first) == {"progress": {"done": 0}}
        assert cleaned.wait(10), "the work went on after the client left"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
