"""The audit database goes away mid-test: restores still answer 202 at once, and every
event is written exactly once when it comes back, across a server restart too."""

from __future__ import annotations

import time
from datetime import timedelta

import psycopg

from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.postgres.server import PostgresServer
from paas_pitr.settings import Settings
from tests.integration.api.test_api import NOW, iso, make_addon, wait_for_rows
from tests.integration.conftest import RunningApi, make_state, start_api


def test_outage_then_recovery_exactly_once(
    api: RunningApi, engine: InMemoryEngine, pg: PostgresServer, audit_dsn: str
) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        assert wait_for_rows(audit_dsn, 1, "addon.create")
        pg.stop(mode="immediate")
        try:
            for hours in (1, 2, 3):
                started = time.monotonic()
                response = client.post(
                    f"/v1/apps/app-1/addons/{addon}/restore",
                    json={"timestamp": iso(NOW - timedelta(hours=hours))},
                )
                elapsed = time.monotonic() - started
                assert response.status_code == 202, response.text
                # Not a benchmark: a bound that only a request waiting on the dead
                # database (connect timeouts, retries) could break.
                assert elapsed < 1.0, elapsed
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["data"]["checks"]["database"]["ok"] is False
            assert ready.json()["data"]["checks"]["database"]["pending_audit_events"] >= 3
        finally:
            pg.start()
    rows = wait_for_rows(audit_dsn, 3)
    time.sleep(1.0)  # any duplicate delivery would land by now
    rows = wait_for_rows(audit_dsn, 3)
    assert len(rows) == 3
    assert len({row[0] for row in rows}) == 3


def test_events_survive_a_server_restart_during_the_outage(
    settings: Settings, engine: InMemoryEngine, pg: PostgresServer, audit_dsn: str
) -> None:
    journal = settings.state_dir / "audit" / "journal.jsonl"
    real_engine = getattr(engine, "engine", engine)
    first = start_api(make_state(settings, real_engine, audit_dsn, journal, max_backoff=0.5))
    try:
        with first.client(first.token()) as client:
            addon = make_addon(client, engine)
            assert wait_for_rows(audit_dsn, 1, "addon.create")
            pg.stop(mode="immediate")
            response = client.post(
                f"/v1/apps/app-1/addons/{addon}/restore",
                json={"timestamp": iso(NOW - timedelta(hours=1))},
            )
            assert response.status_code == 202
    finally:
        first.stop()
    assert journal.stat().st_size > 0  # kept locally while the database is down
    pg.start()
    second = start_api(make_state(settings, real_engine, audit_dsn, journal, max_backoff=0.5))
    try:
        rows = wait_for_rows(audit_dsn, 1)
        time.sleep(0.5)
        rows = wait_for_rows(audit_dsn, 1)
        assert len(rows) == 1
        with psycopg.connect(audit_dsn) as conn:
            creates = conn.execute(
                "SELECT count(*) FROM paas_audit_events WHERE action = 'addon.create'"
            ).fetchone()
        assert creates == (1,)
    finally:
        second.stop()
    deadline = time.monotonic() + 5
    while journal.stat().st_size and time.monotonic() < deadline:
        time.sleep(0.05)
    assert journal.stat().st_size == 0
