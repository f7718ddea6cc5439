"""Every route that takes a body reads it the same way: one size bound, one nesting bound,
one set of refusals, each with its own status and code, and nothing created."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from paas_pitr.api.deps import MAX_JSON_DEPTH
from paas_pitr.api.middleware import MAX_BODY_BYTES
from paas_pitr.engines.memory import InMemoryEngine
from tests.integration.api.test_api import make_addon
from tests.integration.conftest import RunningApi

ADDON = "db-acme-app-1"
# (method, path) of every route that reads a JSON body, under both prefixes.
BODY_ROUTES = [
    (method, prefix + path)
    for prefix in ("/v1", "/api/v1")
    for method, path in (
        ("POST", "/apps/app-1/addons"),
        ("PATCH", f"/apps/app-1/addons/{ADDON}"),
        ("POST", f"/apps/app-1/addons/{ADDON}/backups"),
        ("POST", f"/apps/app-1/addons/{ADDON}/restore"),
        ("POST", f"/addons/{ADDON}/restore"),
    )
]
JSON = {"Content-Type": "application/json"}


def nested(depth: int, inner: str = "1") -> bytes:
    """An object whose one field holds ``depth - 1`` nested arrays: ``depth`` levels."""
    return ('{"plan": ' + "[" * (depth - 1) + inner + "]" * (depth - 1) + "}").encode()


def chunks(body: bytes, size: int = 8192) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


REFUSALS: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("arrays 5000 deep", {"content": b"[" * 5000 + b"]" * 5000}, 400, "json_too_deep"),
    ("objects 5000 deep", {"content": b'{"a": ' * 5000 + b"1" + b"}" * 5000}, 400, "json_too_deep"),
    ("one level too deep", {"content": nested(MAX_JSON_DEPTH + 1)}, 400, "json_too_deep"),
    # Brackets inside strings are text, not nesting: this one is merely a wrong type.
    ("brackets in a string", {"content": b'{"plan": "' + b"[" * 5000 + b'"}'}, 422, None),
    ("deepest allowed", {"content": nested(MAX_JSON_DEPTH)}, 422, "invalid_request"),
    ("malformed", {"content": b'{"plan": '}, 400, "malformed_json"),
    ("not UTF-8", {"content": b'{"plan": "\xff"}'}, 400, "malformed_json"),
    # Half a UTF-16 pair, escaped: valid JSON, no character (was a 500 and a reset).
    ("a lone surrogate", {"content": b'{"plan": "\\ud800"}'}, 400, "malformed_json"),
    ("a lone surrogate key", {"content": b'{"\\udfff": 1}'}, 400, "malformed_json"),
    (
        "over the size bound",
        {"content": b'{"plan": "' + b"x" * MAX_BODY_BYTES + b'"}'},
        413,
        "body_too_large",
    ),
    (
        "over the size bound, chunked (no Content-Length)",
        {"content": lambda: chunks(b'{"plan": "' + b"x" * MAX_BODY_BYTES + b'"}')},
        413,
        "body_too_large",
    ),
]


@pytest.mark.parametrize("engine", ["memory"], indirect=True)
@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_every_body_route_refuses_the_same_bodies(
    api: RunningApi, engine: InMemoryEngine, method: str, path: str
) -> None:
    with api.client(api.token()) as client:
        make_addon(client, engine)
        before = copy.deepcopy(engine.objects)
        calls = len(engine.calls)
        for what, kwargs, status, code in REFUSALS:
            # A generator is consumed by one request: the chunked body is made anew each time.
            content = kwargs["content"]
            content = content() if callable(content) else content
            response = client.request(method, path, headers=JSON, content=content)
            assert response.status_code == status, (what, response.text)
            error = response.json()["error"]
            if code is not None:
                assert error["code"] == code, (what, error)
            if code == "json_too_deep":
                assert error["details"] == {"max_depth": MAX_JSON_DEPTH}
            if code == "body_too_large":
                assert error["details"] == {"max_bytes": MAX_BODY_BYTES}
        wrong_type = client.request(method, path, content=b"{}", headers={"Content-Type": "a/b"})
        assert wrong_type.status_code == 415, wrong_type.text
        assert wrong_type.json()["error"]["code"] == "unsupported_media_type"
    # Nothing created, changed or even tried.
    assert engine.objects == before
    assert engine.calls[calls:] == []


@pytest.mark.parametrize("engine", ["memory"], indirect=True)
def test_a_deep_body_is_refused_before_the_addon_is_looked_up(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    """The legacy path looks its addon up by id: the body is still judged first, so a
    missing addon and an existing one get the same answer to the same bad body."""
    deep = b"[" * 5000 + b"]" * 5000
    with api.client(api.token()) as client:
        make_addon(client, engine)
        answers = [
            client.post(f"/v1/addons/{addon}/restore", content=deep, headers=JSON)
            for addon in (ADDON, "db-acme-nothing")
        ]
    assert [r.status_code for r in answers] == [400, 400]
    assert answers[0].json() == answers[1].json()


@pytest.mark.parametrize("engine", ["memory"], indirect=True)
def test_a_server_never_answers_500_to_a_deep_body_without_a_token(api: RunningApi) -> None:
    with httpx.Client(base_url=api.url) as client:
        response = client.post(
            "/v1/apps/app-1/addons", content=b"[" * 5000 + b"]" * 5000, headers=JSON
        )
    assert response.status_code == 401
