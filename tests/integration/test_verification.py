"""The checks of a recovered cluster against a real PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from paas_pitr.errors import InvalidInput
from paas_pitr.postgres.binaries import find_binaries
from paas_pitr.postgres.server import OsUser, PostgresServer, pick_port
from paas_pitr.timestamps import format_api_time
from paas_pitr.verification import HEARTBEAT_DATABASE, verify_recovered_cluster

BEAT = datetime(2026, 11, 29, 12, 0, 0, 250000, tzinfo=UTC)


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[PostgresServer]:
    # A server of its own: one test corrupts an index file, another restarts it.
    try:
        binaries = find_binaries(None)
    except InvalidInput as exc:
        pytest.skip(f"no PostgreSQL server binaries: {exc.message}")
    pg = PostgresServer(
        binaries=binaries,
        data_dir=workdir / f"verify-{uuid.uuid4().hex[:8]}" / "data",
        port=pick_port(),
        password=uuid.uuid4().hex,
        user=OsUser.for_servers(os.environ.get("PAAS_PITR_PG_OS_USER", "postgres")),
    )
    pg.initdb()
    pg.write_conf({"fsync": "off"})
    pg.start()
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE app")
    with psycopg.connect(pg.dsn("app"), autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, label text)")
        conn.execute("CREATE INDEX items_label ON items (label)")
        conn.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g")
        conn.execute("CREATE TABLE events (at timestamptz) PARTITION BY RANGE (at)")
    yield pg
    pg.destroy()


@pytest.fixture
def heartbeat(server: PostgresServer) -> Iterator[None]:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {HEARTBEAT_DATABASE}")
    with psycopg.connect(server.dsn(HEARTBEAT_DATABASE), autocommit=True) as conn:
        conn.execute("CREATE TABLE heartbeat (id int PRIMARY KEY, beat timestamptz)")
        conn.execute("INSERT INTO heartbeat VALUES (1, %s)", (BEAT,))
    yield
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {HEARTBEAT_DATABASE}")


def amcheck_installed(server: PostgresServer, database: str) -> bool:
    with psycopg.connect(server.dsn(database), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'").fetchone()
    return bool(row and row[0])


@pytest.mark.usefixtures("heartbeat")
async def test_a_healthy_cluster_passes_every_check_with_its_figures(
    server: PostgresServer,
) -> None:
    report = await verify_recovered_cluster(
        server.dsn(),
        target_time=BEAT + timedelta(seconds=2),
        max_distance_seconds=5,
        amcheck_budget_seconds=60,
    )

    assert report.passed, report
    assert [c.name for c in report.checks] == [
        "promoted_and_writable",
        "reached_target",
        "amcheck",
        "user_tables",
    ]
    writable, reached, integrity, tables = report.checks
    assert writable.figures["in_recovery"] is False
    assert writable.figures["timeline"] == 1
    assert reached.figures == {
        "newest_commit": format_api_time(BEAT),
        "target": format_api_time(BEAT + timedelta(seconds=2)),
        "distance_seconds": 2.0,
        "max_distance_seconds": 5,
        "measured_by": "heartbeat",
    }
    assert integrity.figures["budget_hit"] is False
    assert integrity.figures["indexes_checked"] == integrity.figures["indexes_total"]
    # The two of app's own tables are there, besides the catalogs' indexes of each database.
    assert integrity.figures["per_database"]["app"] > 2
    assert set(integrity.figures["per_database"]) == {"app", HEARTBEAT_DATABASE, "postgres"}
    assert tables.figures == {
        "per_database": {"app": 2, HEARTBEAT_DATABASE: 1, "postgres": 0},
        "total": 3,
    }
    # amcheck was only borrowed, and the write probe left nothing.
    assert not amcheck_installed(server, "app")
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('paas_pitr_write_probe')").fetchone() == (None,)


@pytest.mark.usefixtures("heartbeat")
async def test_a_commit_after_the_target_fails_reached_target(server: PostgresServer) -> None:
    report = await verify_recovered_cluster(
        server.dsn(),
        target_time=BEAT - timedelta(seconds=1),
        max_distance_seconds=5,
        amcheck_budget_seconds=60,
    )

    assert not report.passed
    assert report.failing is not None
    assert report.failing.name == "reached_target"
    assert report.failing.figures["distance_seconds"] == -1.0
    assert report.failing.reason == (
        f"the newest commit ({format_api_time(BEAT)}) is after the recovery target "
        f"({format_api_time(BEAT - timedelta(seconds=1))}): recovery went past its target"
    )


@pytest.mark.usefixtures("heartbeat")
async def test_a_newest_commit_too_far_before_the_target_fails(server: PostgresServer) -> None:
    report = await verify_recovered_cluster(
        server.dsn(),
        target_time=BEAT + timedelta(seconds=30),
        max_distance_seconds=5,
        amcheck_budget_seconds=60,
    )

    assert report.failing is not None
    assert report.failing.name == "reached_target"
    assert report.failing.figures["distance_seconds"] == 30.0
    assert "30.000s before the recovery target" in (report.failing.reason or "")
    # The other checks still ran.
    assert [c.passed for c in report.checks] == [True, False, True, True]


async def test_a_spent_budget_is_reported_not_failed(server: PostgresServer) -> None:
    report = await verify_recovered_cluster(
        server.dsn(), target_time=None, max_distance_seconds=5, amcheck_budget_seconds=0
    )

    integrity = report.checks[2]
    assert integrity.passed
    assert integrity.figures["budget_hit"] is True
    assert integrity.figures["indexes_checked"] == 0
    assert integrity.figures["indexes_total"] > 0


async def test_without_heartbeat_or_commit_timestamps_the_commit_is_not_measured(
    server: PostgresServer,
) -> None:
    report = await verify_recovered_cluster(
        server.dsn(), target_time=BEAT, max_distance_seconds=5, amcheck_budget_seconds=60
    )

    reached = report.checks[1]
    assert reached.passed
    assert reached.figures["measured_by"] is None
    assert reached.figures["newest_commit"] is None


async def test_commit_timestamps_measure_the_newest_commit(server: PostgresServer) -> None:
    server.write_conf({"fsync": "off", "track_commit_timestamp": "on"})
    server.stop()
    server.start()
    try:
        with psycopg.connect(server.dsn("app"), autocommit=True) as conn:
            conn.execute("UPDATE items SET label = 'moved' WHERE id = 1")
            row = conn.execute(
                "SELECT pg_xact_commit_timestamp(xmin) FROM items WHERE id = 1"
            ).fetchone()
        assert row is not None
        committed: datetime = row[0]

        report = await verify_recovered_cluster(
            server.dsn(),
            target_time=committed + timedelta(seconds=1),
            max_distance_seconds=5,
            amcheck_budget_seconds=60,
        )
    finally:
        server.write_conf({"fsync": "off"})
        server.stop()
        server.start()

    reached = report.checks[1]
    assert reached.passed, reached
    assert reached.figures["measured_by"] == "commit_timestamp"
    assert reached.figures["newest_commit"] == format_api_time(committed.astimezone(UTC))


async def test_a_refused_login_is_the_failing_check_with_postgres_reason(
    server: PostgresServer,
) -> None:
    conninfo = f"postgresql://postgres:wrong@127.0.0.1:{server.port}/postgres"
    report = await verify_recovered_cluster(
        conninfo, target_time=None, max_distance_seconds=5, amcheck_budget_seconds=60
    )

    assert report.failing is not None
    assert report.failing.name == "promoted_and_writable"
    assert 'password authentication failed for user "postgres"' in (report.failing.reason or "")
    assert len(report.checks) == 1


async def test_a_corrupted_index_fails_amcheck_naming_it(server: PostgresServer) -> None:
    # Runs last in this module: it leaves the index corrupted.
    with psycopg.connect(server.dsn("app"), autocommit=True) as conn:
        row = conn.execute("SELECT pg_relation_filepath('items_pkey')").fetchone()
        conn.execute("CHECKPOINT")
    assert row is not None
    server.stop()
    index_file = server.data_dir / str(row[0])
    data = bytearray(index_file.read_bytes())
    # Block 1 is the first leaf (block 0 is the metapage). Its second and third line
    # pointers are data items whether or not the first is a high key: swapping them puts
    # keys out of order, as a torn or misdirected write would.
    leaf = 8192
    first, second = leaf + 28, leaf + 32
    data[first : first + 4], data[second : second + 4] = (
        data[second : second + 4],
        data[first : first + 4],
    )
    index_file.write_bytes(bytes(data))
    server.start()

    report = await verify_recovered_cluster(
        server.dsn(), target_time=None, max_distance_seconds=5, amcheck_budget_seconds=60
    )

    assert report.failing is not None
    assert report.failing.name == "amcheck"
    assert report.failing.figures["database"] == "app"
    assert report.failing.figures["index"] == "public.items_pkey"
    assert "item order invariant violated" in (report.failing.reason or "")
    assert not amcheck_installed(server, "app")
