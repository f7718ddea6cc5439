"""A bounded, deterministic schema-driven fuzz run (schemathesis) of every documented
operation, over real HTTP, on the in-memory engine with a real audit PostgreSQL.

It asserts that nothing answers a 5xx (but the documented 501 of in-place restores) and
that every answer is one the document declares: its status, its Content-Type, its body
schema and its headers. Path ids are mostly the ones of a seeded pro addon (so the generated
bodies, queries and headers reach the use-cases), sometimes generated ones (so the lookups
and name checks are fuzzed too). Bounded (MAX_EXAMPLES per operation, DEADLINE per example:
about 20 s on 2 cores) and deterministic (derandomized, a fixed seed, no feedback from
earlier answers): the same requests every run.
"""

from __future__ import annotations

import copy
import json
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.config import SchemathesisConfig

from paas_pitr.api import create_app
from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.postgres.server import PostgresServer
from paas_pitr.settings import Settings
from tests.integration.api.test_api import NOW, iso, make_addon
from tests.integration.conftest import RunningApi, make_state, start_api

MAX_EXAMPLES = 30
DEADLINE = timedelta(seconds=5)
APP, ADDON = "app-1", "db-acme-app-1"
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
]
CONFIG: dict[str, Any] = {
    "seed": 20260504,
    "generation": {"mode": "all", "deterministic": True, "max-examples": MAX_EXAMPLES},
    "checks": {
        "enabled": False,
        **{name: {"enabled": True} for name in CHECKS},
        # The one 5xx by design: `target: in_place` passes validation, then 501
        # in_place_not_available (documented on both restore routes).
        "not_a_server_error": {"enabled": True, "expected-statuses": ["2xx", "3xx", "4xx", 501]},
    },
    # Deterministic: no feedback from earlier answers (they carry times and random ids).
    "phases": {
        "examples": {"extra-data-sources": {"responses": False}},
        "coverage": {"extra-data-sources": {"responses": False}},
        "fuzzing": {
            "extra-data-sources": {"responses": False},
            "error-feedback": {"enabled": False},
        },
        "stateful": {"enabled": False},
    },
    # The seed's /api/v1 aliases run the very same handlers as /v1.
    "operations": [{"include-path-regex": "^/api/v1/", "enabled": False}],
}


class Fuzzed:
    """The API under fuzz and the state every example starts from."""

    def __init__(self, api: RunningApi, engine: InMemoryEngine) -> None:
        self.api = api
        self.engine = engine
        self.token = api.token("acme")
        self.operator_token = api.token("platform", role="operator")
        with api.client(self.token) as client:
            assert make_addon(client, engine, plan="pro", app=APP) == ADDON
        self.objects = copy.deepcopy(engine.objects)
        self.answers: Counter[tuple[str, str, int]] = Counter()
        self.archived_at = dict(engine.archived_at)

    def reset(self) -> None:
        self.engine.objects = copy.deepcopy(self.objects)
        self.engine.archived_at = dict(self.archived_at)
        self.engine.down = False


@pytest.fixture(scope="module")
def fuzzed(pg: PostgresServer, workdir: Path) -> Iterator[Fuzzed]:
    pg.start()
    name = f"audit_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    settings_ = Settings(state_dir=workdir / f"fuzz-{uuid.uuid4().hex[:8]}", cnpg_mode="in-tree")
    engine = InMemoryEngine(mode="in-tree")
    journal = settings_.state_dir / "audit" / "journal.jsonl"
    running = start_api(make_state(settings_, engine, pg.dsn(name), journal))
    try:
        yield Fuzzed(running, engine)
    finally:
        running.stop()


def document() -> dict[str, Any]:
    """The document the API serves (a test below checks it is the same), built in-process so
    the operations are known when tests are collected, before any server runs."""
    return create_app(mock.MagicMock(), manage_lifecycle=False).openapi()


schema = schemathesis.openapi.from_dict(document(), config=SchemathesisConfig.from_dict(CONFIG))


OTHER_TARGETS = ("lsn", "xid", "restore_point", "before_event")


def steer(case: Case[Any], fuzzed: Fuzzed) -> dict[str, str]:
    """Point most cases at what exists, so they get past the lookups: three in four address
    the seeded addon, half the restores ask for an instant of its window (and nothing else),
    one case in eight is an operator's (who may act for the X-PaaS-Tenant it names). Which
    cases is decided by the generated values, so the run stays deterministic. Returns the
    headers to send."""
    parameters = dict(case.path_parameters or {})
    body = case.body if isinstance(case.body, dict | list | str | int | float) else None
    generated = json.dumps([parameters, body, case.headers], sort_keys=True, default=repr)
    draw = zlib.crc32(generated.encode())
    # New objects, never edits: generated values may be shared between cases.
    if parameters and draw % 4:
        seeded = {"app_id": APP, "addon_id": ADDON}
        case.path_parameters = {k: seeded.get(k, v) for k, v in parameters.items()}
    restore = case.operation.path.endswith("/restore")
    if isinstance(body, dict) and (restore or isinstance(body.get("timestamp"), str)) and draw % 2:
        # A restore names exactly one target: the steered ones ask for an instant only.
        others = {k: v for k, v in body.items() if k not in OTHER_TARGETS}
        case.body = {**others, "timestamp": iso(NOW - timedelta(hours=1 + draw % 24))}
    token = fuzzed.operator_token if draw % 8 == 7 else fuzzed.token
    return {"Authorization": f"Bearer {token}"}


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=DEADLINE,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_fuzz(case: Case[Any], fuzzed: Fuzzed) -> None:
    fuzzed.reset()
    headers = steer(case, fuzzed)
    response = case.call_and_validate(
        base_url=fuzzed.api.url, headers=headers, timeout=DEADLINE.total_seconds()
    )
    fuzzed.answers[(case.method.upper(), case.operation.path, response.status_code)] += 1


def test_the_fuzzed_document_is_the_served_one(fuzzed: Fuzzed) -> None:
    with httpx.Client(base_url=fuzzed.api.url) as client:
        served = client.get("/openapi.json").json()
    assert served == document()


def test_the_fuzz_reached_the_use_cases(fuzzed: Fuzzed) -> None:
    """Runs after the fuzz (same module, same API): the steering made generated requests
    succeed too, not only bounce off lookups and validation."""
    if not fuzzed.answers:
        pytest.skip("the fuzz did not run in this session")
    statuses: dict[tuple[str, str], set[int]] = {}
    for method, path, status in fuzzed.answers:
        statuses.setdefault((method, path), set()).add(status)
    assert 201 in statuses[("POST", "/v1/apps/{app_id}/addons")]
    assert 202 in statuses[("POST", "/v1/apps/{app_id}/addons/{addon_id}/restore")]
    assert 202 in statuses[("POST", "/v1/addons/{addon_id}/restore")]
    assert 200 in statuses[("PATCH", "/v1/apps/{app_id}/addons/{addon_id}")]
    assert 204 in statuses[("DELETE", "/v1/apps/{app_id}/addons/{addon_id}")]
    assert 404 in statuses[("GET", "/v1/apps/{app_id}/addons/{addon_id}")]
