"""timeline.js: instants to the microsecond in UTC, and the model the timeline draws (run
with node, as the browser runs it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from typing import Any

import pytest

TIMELINE = resources.files("paas_pitr.api") / "static" / "timeline.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="no node to run the dashboard's script")


def run(expression: str) -> Any:
    assert NODE is not None
    program = (
        f"const t = require({json.dumps(str(TIMELINE))});"
        f"process.stdout.write(JSON.stringify({expression}));"
    )
    done = subprocess.run([NODE, "-e", program], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("2026-05-04T15:30:00.123456Z", 1777908600123456),
        ("2026-05-04T15:30:00Z", 1777908600000000),
        ("2026-05-04T15:30:00.5+00:00", 1777908600500000),
        # Only UTC, only ISO 8601: a local time or a locale format is refused.
        ("2026-05-04T15:30:00+02:00", None),
        ("2026-05-04 15:30:00", None),
        ("04/05/2026 15:30", None),
        ("2026-05-04T15:30:00.1234567Z", None),
    ],
)
def test_instants_parse_to_the_microsecond(text: str, micros: int | None) -> None:
    assert run(f"t.parseInstant({json.dumps(text)})") == micros


def test_instants_format_with_six_digits() -> None:
    assert run("t.formatInstant(1777908600000042)") == "2026-05-04T15:30:00.000042Z"
    assert run("t.formatInstant(t.parseInstant('2026-05-04T15:30:00.999999Z'))") == (
        "2026-05-04T15:30:00.999999Z"
    )


def test_the_model_has_ranges_gaps_backups_and_targets() -> None:
    listing = {
        "window": {
            "ranges": [
                {
                    "earliest": "2026-05-01T00:00:00Z",
                    "latest": "2026-05-02T00:00:00Z",
                    "current": False,
                    "ended_because": "plan changed to free",
                },
                {
                    "earliest": "2026-05-03T00:00:00.5Z",
                    "latest": "2026-05-04T00:00:00Z",
                    "current": True,
                },
            ]
        },
        "items": [
            {"backup_id": "b1", "status": "completed", "stopped_at": "2026-05-01T00:00:00Z"},
            {
                "backup_id": "b2",
                "status": "failed",
                "stopped_at": None,
                "started_at": "2026-05-02T12:00:00Z",
            },
        ],
    }
    restores = [{"restore_id": "r1", "status": "ready", "timestamp": "2026-05-03T12:00:00Z"}]
    drills = [{"drill_id": "d1", "status": "failed", "target_time": "2026-05-01T06:00:00Z"}]
    model = run(
        f"t.timelineModel({json.dumps(listing)}, {json.dumps(restores)}, "
        f"t.parseInstant('2026-05-04T00:01:00Z'), {json.dumps(drills)})"
    )
    day = 86_400_000_000
    may1 = 1777593600000000
    assert [(r["earliest"], r["latest"]) for r in model["ranges"]] == [
        (may1, may1 + day),
        (may1 + 2 * day + 500_000, may1 + 3 * day),
    ]
    assert model["gaps"] == [
        {"from": may1 + day, "to": may1 + 2 * day + 500_000, "because": "plan changed to free"}
    ]
    assert [(b["id"], b["status"]) for b in model["backups"]] == [
        ("b1", "completed"),
        ("b2", "failed"),
    ]
    assert [(t["kind"], t["id"]) for t in model["targets"]] == [("restore", "r1"), ("drill", "d1")]
    assert model["start"] < may1 and model["end"] > may1 + 3 * day + 60_000_000
    assert (
        run(
            f"t.rangeAt(t.timelineModel({json.dumps(listing)}, [], 0), "
            "t.parseInstant('2026-05-02T12:00:00Z'))"
        )
        is None
    )


def test_nothing_is_rendered_as_markup() -> None:
    script = TIMELINE.read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


def test_events_are_marks_with_their_kind_relations_and_transaction() -> None:
    listing = {
        "window": {
            "ranges": [
                {
                    "earliest": "2026-05-01T00:00:00Z",
                    "latest": "2026-05-02T00:00:00Z",
                    "current": True,
                }
            ]
        },
        "items": [],
    }
    events = [
        {
            "id": "0000000004012345-740-drop",
            "kind": "drop",
            "xid": 740,
            "committed_at": "2026-05-02T00:00:30.000001Z",
            "rows": None,
            "relations": [{"name": None, "file_node": "base/5/16390"}],
        },
        {
            "id": "0000000005000028-741-delete",
            "kind": "delete",
            "xid": 741,
            "committed_at": "2026-05-01T12:00:00Z",
            "rows": 520,
            "relations": [
                {"name": f"public.t{n}", "file_node": f"base/5/{16400 + n}"} for n in range(4)
            ],
        },
        {"id": "x", "kind": "truncate", "xid": 9, "committed_at": "yesterday", "relations": []},
    ]
    model = run(
        f"t.timelineModel({json.dumps(listing)}, [], t.parseInstant('2026-05-02T00:00:00Z'), "
        f"[], {json.dumps(events)})"
    )
    drop_at = 1777680030000001
    # An event without a readable commit time is left out; the span reaches every mark.
    assert [(e["kind"], e["at"]) for e in model["events"]] == [
        ("drop", drop_at),
        ("delete", 1777636800000000),
    ]
    assert model["end"] >= drop_at + 60_000_000
    drop, delete = model["events"]
    assert drop["title"] == (
        "drop base/5/16390, transaction 740, committed 2026-05-02T00:00:30.000001Z: "
        "click to restore to just before it"
    )
    assert delete["relations"] == "public.t0, public.t1, public.t2 (+1)"
    assert delete["title"].startswith("delete public.t0, public.t1, public.t2 (+1), 520 rows, ")
    assert (delete["id"], delete["xid"]) == ("0000000005000028-741-delete", 741)


def test_marks_closer_than_their_size_take_another_lane() -> None:
    # Lanes are reused once a mark is far enough from the last in them; the sixth lane
    # takes everything that does not fit.
    assert run("t.eventLanes([0, 5, 10, 30, 31, 100])") == [0, 1, 2, 0, 1, 0]
    assert run("t.eventLanes([0, 1, 2, 3, 4, 5, 6, 7])") == [0, 1, 2, 3, 4, 5, 5, 5]
    assert run("t.eventLanes([])") == []
