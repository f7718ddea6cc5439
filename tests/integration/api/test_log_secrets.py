"""No secret reaches a log: a realistic API session (tokens used and refused, an addon
created, read, restored, deleted, an outage) with every logger at DEBUG, uvicorn's access log
included, as `paas-pitr serve --log-level debug` runs; then the log and the audit trail are
searched for every secret the session handled."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from pydantic import SecretStr

from paas_pitr.api import create_app
from paas_pitr.engines.base import Manifest
from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.postgres.server import PostgresServer, pick_port
from paas_pitr.settings import Settings
from tests.integration.api.test_api import NOW, iso, make_addon
from tests.integration.conftest import SIGNING_KEY, KubernetesHarness, RunningApi, make_state

S3_SECRET = "S3-secret-" + uuid.uuid4().hex
S3_KEY_ID = "S3-key-id-" + uuid.uuid4().hex
DB_PASSWORD = "db-password-" + uuid.uuid4().hex


class EngineWithPasswords(InMemoryEngine):
    """The in-memory engine answering connections the way the local engine does: with the
    app user's password, in clear and inside the URI."""

    async def connection_info(self, cluster: Manifest) -> dict[str, Any] | None:
        name = cluster["metadata"]["name"]
        password = DB_PASSWORD + hashlib.sha256(name.encode()).hexdigest()[:16]
        return {
            "host": "127.0.0.1",
            "port": 5432,
            "database": "app",
            "user": "app",
            "password": password,
            "uri": f"postgresql://app:{password}@127.0.0.1:5432/app",
        }


@pytest.fixture
def settings(workdir: Path) -> Settings:
    """The module's own settings: the control plane's S3 keys and token key are set."""
    return Settings(
        state_dir=workdir / f"state-{uuid.uuid4().hex[:8]}",
        cnpg_mode="in-tree",
        s3_access_key_id=SecretStr(S3_KEY_ID),
        s3_secret_access_key=SecretStr(S3_SECRET),
        token_secret=SecretStr(SIGNING_KEY.decode()),
    )


@pytest.fixture(params=["memory", "kubernetes"])
def engine(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return EngineWithPasswords(mode="in-tree")
    return request.getfixturevalue("kube")


@pytest.fixture
def logged_api(
    settings: Settings, engine: Any, audit_dsn: str, caplog: pytest.LogCaptureFixture
) -> Iterator[RunningApi]:
    """The API served with uvicorn's loggers left to propagate (no log config of its own),
    at DEBUG, access log on."""
    caplog.set_level(logging.DEBUG)
    state = make_state(
        settings,
        getattr(engine, "engine", engine),
        audit_dsn,
        settings.state_dir / "audit" / "journal.jsonl",
    )
    config = uvicorn.Config(
        create_app(state),
        host="127.0.0.1",
        port=pick_port(),
        log_config=None,
        log_level="debug",
        access_log=True,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.02)
    running = RunningApi(f"http://127.0.0.1:{config.port}", state, server, thread)
    yield running
    running.stop()


def test_no_secret_reaches_a_log(
    logged_api: RunningApi,
    engine: Any,
    audit_dsn: str,
    pg: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = logged_api
    token, operator = api.token("acme"), api.token("platform", role="operator")
    forged = token[:-6] + "AAAAAA"
    secrets = {"tenant token": token, "operator token": operator, "forged token": forged}
    secrets |= {"token signing key": SIGNING_KEY.decode(), "S3 secret key": S3_SECRET}
    secrets |= {"audit database password": pg.password}
    kubernetes = isinstance(engine, KubernetesHarness)
    if kubernetes:
        secrets["Kubernetes API token"] = engine.double.token
    with api.client(token) as client:
        addon = make_addon(client, engine)
        seen = client.get(f"/v1/apps/app-1/addons/{addon}").json()["data"]
        restore = client.post(
            f"/v1/apps/app-1/addons/{addon}/restore",
            json={"timestamp": iso(NOW - timedelta(hours=1))},
            headers={"Idempotency-Key": "nightly-1"},
        ).json()["data"]
        listed = client.get(f"/v1/apps/app-1/addons/{addon}/restores").json()["data"]
        refused = client.post(
            f"/v1/apps/app-1/addons/{addon}/restore", json={"timestamp": iso(NOW)}
        )
        assert refused.status_code == 422
        engine.down = True
        assert client.get(f"/v1/apps/app-1/addons/{addon}/backups").status_code == 503
        engine.down = False
        assert client.get("/readyz").status_code == 200
        assert client.delete(f"/v1/apps/app-1/addons/{addon}").status_code == 204
    with httpx.Client(base_url=api.url, timeout=30) as anonymous:
        assert anonymous.get("/v1/apps/app-1/addons").status_code == 401
        bad = {"Authorization": f"Bearer {forged}"}
        assert anonymous.get("/v1/apps/app-1/addons", headers=bad).status_code == 401
        as_acme = {"Authorization": f"Bearer {operator}", "X-PaaS-Tenant": "acme"}
        assert anonymous.get("/v1/apps/app-1/addons", headers=as_acme).status_code == 200
    if not kubernetes:
        # The API hands the tenant its passwords (that is its job)...
        assert seen["connection"]["password"] in seen["connection"]["uri"]
        assert restore["connection"]["uri"] == listed[0]["connection"]["uri"]
        for view in (seen, restore):
            secrets[f"password of {view['cluster_name']}"] = view["connection"]["password"]
    # ... the log never holds them.
    assert audit_rows_written(audit_dsn, 3)  # create, restore, delete
    log = "\n".join(
        [caplog.text]
        + [repr(r.args) for r in caplog.records]
        + [logging.Formatter().formatException(r.exc_info) for r in caplog.records if r.exc_info]
    )
    assert "GET /v1/apps/app-1/addons" in log, "the access log was not captured"
    journal = (api.state.settings.state_dir / "audit" / "journal.jsonl").read_text()
    with psycopg.connect(audit_dsn) as conn:
        audit = repr(conn.execute("SELECT * FROM paas_audit_events").fetchall())
    for what, secret in secrets.items():
        assert secret not in log, f"the {what} is in the log"
        assert secret not in journal, f"the {what} is in the audit journal"
        assert secret not in audit, f"the {what} is in the audit trail"
    # Nor a recognisable piece of one: a JWT's signature, a password's tail.
    for what, secret in secrets.items():
        assert secret[-12:] not in log, f"part of the {what} is in the log"


def audit_rows_written(dsn: str, count: int) -> bool:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(dsn) as conn:
                rows = conn.execute("SELECT count(*) FROM paas_audit_events").fetchone()
            if rows is not None and rows[0] >= count:
                return True
        except psycopg.Error:
            pass
        time.sleep(0.1)
    return False
