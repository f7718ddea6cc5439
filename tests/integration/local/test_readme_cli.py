"""The README's CLI block, run as written after the curl walk-through (which gave app-1 its
addon), against the real server and the real local engine."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.integration.local.conftest import LocalApi

REPO = Path(__file__).resolve().parents[3]
WAIT_LINE = ".venv/bin/paas-pitr backups list --app app-2 --addon db-acme-app-2"
# Where the README says "wait until latest > $T2" a reader watches; the test polls instead.
POLL = (
    "until .venv/bin/paas-pitr backups list --app app-2 --addon db-acme-app-2 -o json"
    ' | python3 -c \'import datetime, json, sys; w = json.load(sys.stdin)["window"];'
    " at = datetime.datetime.fromisoformat;"
    ' sys.exit(0 if w["latest"] and at(w["latest"]) > at(sys.argv[1]) else 1)\' "$T2";'
    " do sleep 1; done"
)


def cli_block() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    after = readme.split("The same with the CLI", 1)[1]
    found = re.search(r"```sh\n(.*?)```", after, re.DOTALL)
    assert found is not None
    return found.group(1)


def test_the_cli_block_works_after_the_curl_walk_through(local_api: LocalApi) -> None:
    local_api.create_addon("pro", app="app-1")  # the curl walk-through's addon
    block = cli_block()
    assert WAIT_LINE in block
    script = block.replace(WAIT_LINE, f"{POLL}\n{WAIT_LINE}", 1)
    env = {
        **os.environ,
        "TOKEN": local_api.running.token(),
        "PAAS_PITR_URL": local_api.running.url,
        # The README's reader has the embedded audit database; this server writes here.
        "PAAS_PITR_DATABASE_URL": local_api.dsn,
    }
    env.pop("PAAS_PITR_TOKEN", None)
    done = subprocess.run(
        ["/bin/bash", "-euo", "pipefail", "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"status": "ready"' in done.stdout, done.stdout
    assert "db-acme-app-2 is ready and restorable" in done.stderr
    restores = local_api.client.get("/v1/apps/app-2/addons/db-acme-app-2/restores").json()["data"]
    # The block's three restores: to $T2, to just before the DROP, to the named point.
    by_target = {(r["recovery_target"] or {}).get("kind"): r for r in restores}
    assert sorted(by_target, key=str) == sorted([None, "before_event", "restore_point"], key=str)
    assert {r["status"] for r in restores} == {"ready"}
    restore = by_target[None]
    # Then `restores list` shows it in a table, and `audit list` the seed's rows.
    tables = done.stdout.split("restore id", 1)[1]
    assert restore["restore_id"] in tables
    assert f"timestamp: {restore['timestamp']}" in tables.split("created at", 1)[1]
