"""`paas-pitr serve` as a person runs it: the token hint it prints works when pasted, and
Ctrl-C stops it (every PostgreSQL server, the embedded S3 and audit database), saying what
it waits for."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from paas_pitr.postgres.server import pick_port
from tests.integration.local.conftest import wait_for

EXECUTABLE = str(Path(sys.executable).parent / "paas-pitr")


def test_ctrl_c_stops_every_server_in_parallel(workdir: Path, tmp_path: Path) -> None:
    state_dir = workdir / f"serve-{time.monotonic_ns()}"
    port = pick_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PAAS_PITR_")  # nothing from the test's own settings
    }
    env |= {"PAAS_PITR_ARCHIVE_TIMEOUT_SECONDS": "2", "PAAS_PITR_HEARTBEAT_SECONDS": "1"}
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        serve = subprocess.Popen(
            [EXECUTABLE, "serve", "--state-dir", str(state_dir), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        hint = wait_for(
            lambda: re.search(r"get a token with: (.+)", log.read_text()),
            timeout=120,
            what="the token hint",
        ).group(1)
        # Pasted into another shell, elsewhere, with none of the server's settings.
        token = subprocess.run(
            ["/bin/sh", "-c", hint],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ) as api:
            created = api.post("/apps/app-1/addons", json={"plan": "pro"})
            assert created.status_code == 201, created.text
            wait_for(
                lambda: api.get("/apps/app-1/addons/db-acme-app-1").json()["data"]["ready"],
                what="the addon's server",
            )
        started = time.monotonic()
        serve.send_signal(signal.SIGINT)
        code = serve.wait(timeout=60)
        took = time.monotonic() - started
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    said = log.read_text()
    assert code == 0, said
    assert "waiting for 1 PostgreSQL server(s) to stop (at most 10s each): db-acme-app-1" in said, (
        said
    )
    assert "stopping the embedded audit database" in said
    print(f"serve stopped {took:.1f}s after Ctrl-C")
    # Nothing left running: every server's postmaster.pid is gone.
    assert not list(state_dir.rglob("postmaster.pid"))
