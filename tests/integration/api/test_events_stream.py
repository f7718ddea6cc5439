"""GET .../events streamed as JSON lines, on both engines (the in-memory one, and the
Kubernetes engine whose control plane reads the archive with its own keys), over real WAL:
the exact progress of a scan of known segments, then the same answer as the JSON one;
errors found before the scan keep their status; a range too long for one scan is refused, or
its newest part scanned when asked."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from paas_pitr.cli import app
from paas_pitr.errors import InvalidInput
from paas_pitr.postgres.binaries import find_binaries
from paas_pitr.settings import Settings
from paas_pitr.timestamps import format_api_time
from tests.integration.api.test_api import make_addon
from tests.integration.api.test_targets_api import DESTINATION, bucket_of
from tests.integration.conftest import KubernetesHarness, RunningApi
from tests.integration.real_wal import RealWal

NDJSON = "application/x-ndjson"
MIB = 1024 * 1024
# Five of the six segments fit one scan.
MAX_SCAN_MIB = 80


@pytest.fixture
def settings(workdir: Path) -> Settings:
    return Settings(
        state_dir=workdir / f"state-{uuid.uuid4().hex[:8]}",
        cnpg_mode="in-tree",
        events_max_scan_mib=MAX_SCAN_MIB,
    )


def archived_addon(client: httpx.Client, engine: Any, wal: RealWal) -> str:
    """A PostgreSQL 15 addon (the WAL's version: pg_waldump reads only its own) whose archive
    holds the real WAL."""
    created = client.post("/v1/apps/app-1/addons", json={"plan": "pro", "version": "15"})
    assert created.status_code == 201, created.text
    addon = str(created.json()["data"]["addon_id"])
    cluster = engine.objects[("Cluster", addon)]
    server = str(cluster["metadata"]["annotations"]["paas-pitr.io/server-name"])
    wal.store(bucket_of(engine), DESTINATION, server)
    return addon


def after(instant: datetime) -> str:
    """The instant just after ``instant``: a range from it leaves out the segment archived
    then."""
    return format_api_time(instant + timedelta(microseconds=1))


def streamed(client: httpx.Client, url: str, params: dict[str, str]) -> list[dict[str, Any]]:
    with client.stream("GET", url, params=params, headers={"Accept": NDJSON}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == NDJSON
        return [json.loads(line) for line in response.iter_lines() if line]


def test_the_scan_streams_its_progress_then_the_events(
    api: RunningApi, engine: Any, real_wal: RealWal
) -> None:
    segments = real_wal.segments
    window = {
        "from": format_api_time(real_wal.started - timedelta(seconds=1)),
        "to": format_api_time(datetime.now(UTC)),
        "min_rows": "100",
    }
    with api.client(api.token(), contract=True) as client:
        addon = archived_addon(client, engine, real_wal)
        url = f"/v1/apps/app-1/addons/{addon}/events"

        # All six segments: more than one scan may read, refused before anything is
        # decoded, with its status, whatever the client accepts.
        refused = client.get(url, params=window, headers={"Accept": NDJSON})
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/json"
        assert refused.json()["error"]["code"] == "wal_scan_too_large"
        assert refused.json()["error"]["details"] == {
            "segments": 6,
            "mib": 96,
            "limit_mib": MAX_SCAN_MIB,
        }
        assert "ask for its newest part (bound=newest" in refused.json()["error"]["message"]

        # Without 'from' (the recent past), the same volume is cut to its newest part.
        recent = client.get(url, params={"min_rows": "100"})
        assert recent.status_code == 200, recent.text
        assert recent.json()["data"]["scan"]["segments"] == 5
        assert recent.json()["data"]["scan"]["limited_from"] is not None

        # The newest five: a chunk of four segments, then one.
        lines = streamed(client, url, {**window, "bound": "newest"})
        total = 5 * 16 * MIB
        assert [line["progress"] for line in lines[:-1]] == [
            {"segments_done": 0, "segments_total": 5, "bytes_done": 0, "bytes_total": total},
            {
                "segments_done": 4,
                "segments_total": 5,
                "bytes_done": 4 * 16 * MIB,
                "bytes_total": total,
            },
            {"segments_done": 5, "segments_total": 5, "bytes_done": total, "bytes_total": total},
        ]
        result = lines[-1]["result"]
        assert [e["kind"] for e in result["items"]] == ["drop", "truncate", "delete"]
        drop = result["items"][0]
        assert drop["relations"][0]["relfilenode"] == real_wal.dropped_node
        assert result["scan"]["segments"] == 5 and result["scan"]["mib"] == 80.0
        # Complete from the instant the left-out segment was archived.
        limited_from = datetime.fromisoformat(result["scan"]["limited_from"])
        assert limited_from == segments[0].archived_at

        # The JSON answer of a range that fits is the same listing.
        fits = {**window, "from": after(segments[0].archived_at)}
        plain = client.get(url, params=fits)
        assert plain.status_code == 200, plain.text
        assert plain.headers["content-type"] == "application/json"
        listing = plain.json()["data"]
        assert listing["items"] == result["items"]
        assert listing["scan"]["segments"] == 5 and listing["scan"]["limited_from"] is None

        # A narrower range: one chunk.
        last = {**window, "from": after(segments[3].archived_at)}
        lines = streamed(client, url, last)
        progress = [
            (p["progress"]["segments_done"], p["progress"]["segments_total"]) for p in lines[:-1]
        ]
        assert progress == [(0, 2), (2, 2)]
        assert [e["kind"] for e in lines[-1]["result"]["items"]] == ["delete"]

        # Bad input is refused before the scan: its own status, never a stream.
        backwards = client.get(
            url, params={"from": window["to"], "to": window["from"]}, headers={"Accept": NDJSON}
        )
        assert backwards.status_code == 422
        assert backwards.json()["error"]["code"] == "invalid_input"


def test_a_segment_unreadable_mid_scan_ends_the_stream_with_its_code(
    api: RunningApi, engine: Any, real_wal: RealWal
) -> None:
    with api.client(api.token()) as client:
        addon = archived_addon(client, engine, real_wal)
        bucket = bucket_of(engine)
        # The fifth segment's object is no longer gzip: the first chunk (segments 2 to 5 of
        # the six) fails once it is read.
        (key,) = [k for k in bucket.objects if real_wal.segments[4].name in k]
        bucket.put_object(key, b"not gzip", real_wal.segments[4].archived_at)
        lines = streamed(
            client,
            f"/v1/apps/app-1/addons/{addon}/events",
            {
                "from": after(real_wal.segments[0].archived_at),
                "to": format_api_time(datetime.now(UTC)),
            },
        )
    (started, failed) = lines
    assert started == {
        "progress": {
            "segments_done": 0,
            "segments_total": 5,
            "bytes_done": 0,
            "bytes_total": 5 * 16 * MIB,
        }
    }
    assert failed["error"]["code"] == "object_store_unavailable"
    assert failed["error"]["details"] == {"key": key}


def without_elapsed(stderr: str) -> list[str]:
    return [re.sub(r" \(\d+s\)$", "", line) for line in stderr.splitlines()]


def test_the_cli_shows_the_scans_progress_on_stderr_only(
    api: RunningApi, engine: Any, real_wal: RealWal, monkeypatch: pytest.MonkeyPatch
) -> None:
    if isinstance(engine, KubernetesHarness):
        pytest.skip("the CLI speaks the same API whatever the engine")
    with api.client(api.token()) as client:
        addon = archived_addon(client, engine, real_wal)
    monkeypatch.setenv("PAAS_PITR_URL", api.url)
    monkeypatch.setenv("PAAS_PITR_TOKEN", api.token())
    since = after(real_wal.segments[0].archived_at)
    args = ["events", "list", "--app", "app-1", "--addon", addon, "--from", since]
    runner = CliRunner()
    shown = runner.invoke(app, [*args, "--min-rows", "100", "--progress"])
    assert shown.exit_code == 0, shown.stderr
    assert without_elapsed(shown.stderr) == [
        "scanning the WAL archive",
        "scanning the WAL archive: 0/5 segments (0/80 MiB)",
        "scanning the WAL archive: 4/5 segments (64/80 MiB)",
        "scanning the WAL archive: 5/5 segments (80/80 MiB)",
    ]
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("scanned 5 WAL segments (80.0 MiB) in ")
    assert [line.split()[2] for line in lines[1:]] == ["drop", "truncate", "delete"]

    # Not a terminal and no flag: the plain JSON answer, nothing on stderr, same events.
    quiet = runner.invoke(app, [*args, "--min-rows", "100", "--output", "json"])
    assert quiet.exit_code == 0, quiet.stderr
    assert quiet.stderr == ""
    listing = json.loads(quiet.stdout)
    assert [e["id"] for e in listing["items"]] == [line.split()[0] for line in lines[1:]]

    # A range too long for one scan: refused, or its newest part with a warning.
    everything = ["events", "list", "--app", "app-1", "--addon", addon]
    everything += ["--from", format_api_time(real_wal.started - timedelta(seconds=1))]
    refused = runner.invoke(app, [*everything, "--progress"])
    assert refused.exit_code == 2 and "wal_scan_too_large" in refused.stderr
    assert "ask for its newest part (bound=newest; CLI: --newest)" in refused.stderr
    newest = runner.invoke(app, [*everything, "--newest", "--progress", "--kind", "drop"])
    assert newest.exit_code == 0, newest.stderr
    assert (
        "warning: the range holds more WAL than one scan may read: only events committed since "
        in newest.stderr
    )
    assert newest.stdout.splitlines()[1].split()[2] == "drop"


def test_a_missing_pg_waldump_is_said_before_the_scan_with_its_status(
    api: RunningApi, engine: Any, real_wal: RealWal
) -> None:
    try:
        find_binaries(16, api.state.settings.pg_bin)
    except InvalidInput:
        pass
    else:
        pytest.skip("PostgreSQL 16's binaries are installed here")
    with api.client(api.token(), contract=True) as client:
        addon = make_addon(client, engine)  # PostgreSQL 16
        server = engine.objects[("Cluster", addon)]["metadata"]["annotations"][
            "paas-pitr.io/server-name"
        ]
        real_wal.store(bucket_of(engine), DESTINATION, server)
        response = client.get(
            f"/v1/apps/app-1/addons/{addon}/events",
            params={"from": after(real_wal.segments[0].archived_at)},
            headers={"Accept": NDJSON},
        )
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "wal_decode_failed"
    assert response.json()["error"]["details"] == {"version": "16"}
