"""The dashboard's events section: each event in one line of text, and nothing rendered as
markup."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources

import pytest

STATIC = resources.files("paas_pitr.api") / "static"
EVENT = {
    "id": "00000000020585F8-728-truncate",
    "kind": "truncate",
    "xid": 728,
    "committed_at": "2026-11-29T18:34:11.768577Z",
    "rows": None,
    "relations": [
        {"name": "public.orders", "file_node": "base/5/16391"},
        {"name": None, "file_node": "base/5/16394"},
        {"name": "pg_toast.pg_toast_16391", "file_node": "base/5/16395"},
        {"name": "public.orders_pkey", "file_node": "base/5/16396"},
    ],
}


@pytest.mark.skipif(shutil.which("node") is None, reason="node runs the dashboard's scripts")
def test_each_event_is_one_line_of_text() -> None:
    program = (
        f"const e = require({json.dumps(str(STATIC / 'events.js'))});"
        f"console.log(JSON.stringify([e.describeEvent({json.dumps(EVENT)}),"
        "e.scanSummary({segments: 3, mib: 48, seconds: 1.5, mib_per_second: 32})]));"
    )
    result = subprocess.run(["node", "-e", program], capture_output=True, text=True, check=True)
    line, summary = json.loads(result.stdout)
    assert line == {
        "id": "00000000020585F8-728-truncate",
        "when": "2026-11-29T18:34:11.768577Z",
        "kind": "truncate",
        "relations": "public.orders, base/5/16394, pg_toast.pg_toast_16391 (+1)",
        "rows": "",
        "xid": "728",
    }
    assert summary == "Scanned 3 WAL segments (48 MiB) in 1.5 s, 32 MiB/s"


def test_the_page_loads_it_after_the_helpers_it_uses_and_renders_no_markup() -> None:
    page = (STATIC / "dashboard.html").read_text(encoding="utf-8")
    assert page.index("/dashboard/dashboard.js") < page.index("/dashboard/events.js")
    script = (STATIC / "events.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


def node(expression: str) -> object:
    program = (
        f"const e = require({json.dumps(str(STATIC / 'events.js'))});"
        f"process.stdout.write(JSON.stringify({expression}));"
    )
    result = subprocess.run(["node", "-e", program], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.mark.skipif(shutil.which("node") is None, reason="node runs the dashboard's scripts")
def test_progress_and_limits_in_words() -> None:
    progress = {
        "segments_done": 4,
        "segments_total": 64,
        "bytes_done": 4 * 16 * 1048576,
        "bytes_total": 64 * 16 * 1048576,
    }
    assert node(f"e.progressText({json.dumps(progress)})") == (
        "Scanning the WAL archive: 4/64 segments (64/1024 MiB)"
    )
    complete = {"items": [], "truncated": False, "scan": {"limited_from": None}}
    assert node(f"e.scanLimits({json.dumps(complete)})") == ""
    limited = {
        "items": [EVENT] * 2,
        "truncated": True,
        "scan": {"limited_from": "2026-11-29T18:00:00.5Z"},
    }
    assert node(f"e.scanLimits({json.dumps(limited)})") == (
        "the range holds more WAL than one scan may read: only events committed since "
        "2026-11-29T18:00:00.5Z were looked for; more than 2 events: the oldest are listed"
    )


@pytest.mark.skipif(shutil.which("node") is None, reason="node runs the dashboard's scripts")
def test_a_stream_is_cut_into_whole_lines_only() -> None:
    chunk = '{"progress": {"segments_done": 0}}\n\n{"progress": {"segm'
    assert node(f"e.splitLines({json.dumps(chunk)})") == [
        ['{"progress": {"segments_done": 0}}'],
        '{"progress": {"segm',
    ]
    assert node("e.splitLines('')") == [[], ""]
