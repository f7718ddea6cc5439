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
