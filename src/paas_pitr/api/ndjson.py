"""Long operations answered as a stream of JSON lines (``application/x-ndjson``): progress
lines while the work runs, then one line with its result, or with the error that ended it.

Errors found before the work starts are raised by the route as usual (their HTTP status);
once the stream has begun the status is 200 and a failure can only be told in a line:
``{"error": {"code", "message", "details"}}``, the same body as the error envelope's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from paas_pitr.api.errors import INTERNAL_ERROR_MESSAGE
from paas_pitr.errors import PitrError

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
P = TypeVar("P")


def _quality(accept: str, wanted: str) -> float:
    """The q value ``accept`` gives exactly ``wanted`` (0 when not listed)."""
    for item in accept.split(","):
        media, *parameters = (part.strip() for part in item.split(";"))
        if media.lower() != wanted:
            continue
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value)
                except ValueError:
                    return 0.0
        return 1.0
    return 0.0


def wants_ndjson(request: Request) -> bool:
    """Whether the client asked for the stream: ``application/x-ndjson`` listed in Accept
    and not ranked below ``application/json``. Wildcards keep the JSON answer, so a client
    that did not ask for the stream never gets it."""
    accept = request.headers.get("accept", "")
    stream = _quality(accept, NDJSON)
    return stream > 0 and stream >= _quality(accept, "application/json")


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


def progress_stream(
    work: Callable[[Callable[[P], None]], Coroutine[Any, Any, BaseModel]],
    describe: Callable[[P], dict[str, Any]],
    what: str,
) -> StreamingResponse:
    """Run ``work(report)`` while streaming ``{"progress": describe(step)}`` for each step
    it reports, then ``{"result": <its model, by alias>}`` or ``{"error": ...}``. A client
    that goes away cancels the work (its temporary files are its own to clean up)."""

    async def lines() -> AsyncIterator[bytes]:
        steps: asyncio.Queue[P | None] = asyncio.Queue()
        task = asyncio.create_task(work(steps.put_nowait))
        task.add_done_callback(lambda _: steps.put_nowait(None))
        try:
            while (step := await steps.get()) is not None:
                yield _line({"progress": describe(step)})
            try:
                result = task.result()
            except PitrError as exc:
                if exc.http_status >= 500:
                    log.warning("%s failed mid-stream: %s", what, exc.message)
                yield _line({"error": exc.to_dict()})
            except Exception:
                log.exception("%s failed mid-stream", what)
                yield _line({"error": PitrError(INTERNAL_ERROR_MESSAGE).to_dict()})
            else:
                yield _line({"result": result.model_dump(mode="json", by_alias=True)})
        finally:
            if not task.done():
                task.cancel()
                # Waits for the work's own cleanup (its temporary files); cancelled itself
                # meanwhile, gather cancels the work too and the cancellation propagates.
                await asyncio.gather(task, return_exceptions=True)

    # No proxy may hold the lines back until the end: that is the point of the stream.
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(lines(), media_type=NDJSON, headers=headers)
