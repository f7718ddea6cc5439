"""The dashboard's handling of secrets: connection strings masked until revealed, and
everything user-supplied rendered as text, never markup."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources

import pytest

STATIC = resources.files("paas_pitr.api") / "static"
MASK = "••••••••"


def script(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("connection", "masked"),
    [
        (
            "postgresql://app:s3cr3t@127.0.0.1:5432/app",
            f"postgresql://app:{MASK}@127.0.0.1:5432/app",
        ),
        # A raw '@' or '/' in a password must not leave its tail in clear.
        ("postgresql://app:p@ss/w0rd@host/app", f"postgresql://app:{MASK}@host/app"),
        ("postgres://app@host/app", "postgres://app@host/app"),
        (
            "postgresql://host/app?user=app&password=s3cr3t&sslmode=require",
            f"postgresql://host/app?user=app&password={MASK}&sslmode=require",
        ),
        (
            "host=h user=app password='a b\\'c' dbname=app",
            f"host=h user=app password={MASK} dbname=app",
        ),
        ("host=h PASSWORD = s3cr3t", f"host=h PASSWORD = {MASK}"),
        ("", ""),
    ],
)
def test_connection_strings_are_masked(connection: str, masked: str) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node to run the dashboard's script")
    program = (
        f"const {{ maskConnection }} = require({json.dumps(str(STATIC / 'secrets.js'))});"
        f"process.stdout.write(JSON.stringify(maskConnection({json.dumps(connection)})));"
    )
    result = subprocess.run(
        [node, "-e", program], capture_output=True, text=True, timeout=30, check=True
    )
    assert json.loads(result.stdout) == masked


def test_the_restore_table_shows_connections_masked_with_reveal_and_copy() -> None:
    dashboard = script("dashboard.js")
    # The one place a connection string is shown: masked unless this restore was revealed.
    shown = re.findall(r"textContent = [^;]*\buri\b[^;]*;", dashboard)
    assert shown == ["textContent = clear ? uri : maskConnection(uri);"]
    assert "navigator.clipboard.writeText(uri)" in dashboard
    assert '"Reveal"' in dashboard and '"Copy"' in dashboard
    # secrets.js is loaded first (the page's CSP allows scripts from the same origin only).
    page = script("dashboard.html")
    assert page.index("/dashboard/secrets.js") < page.index("/dashboard/dashboard.js")


@pytest.mark.parametrize("name", ["dashboard.js", "secrets.js"])
def test_nothing_is_rendered_as_markup(name: str) -> None:
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script(name), sink


def test_each_addon_shows_its_last_restore_drill_and_rto() -> None:
    dashboard = script("dashboard.js")
    page = script("dashboard.html")
    assert '<p class="drill" data-role="drill"></p>' in page
    assert "addon.last_drill" in dashboard
    assert "RTO ${drill.rto_seconds.toFixed(1)} s" in dashboard
    assert "drillLine.textContent = drill" in dashboard
    assert "/drills`" in dashboard  # the "Run a restore drill" button starts one
