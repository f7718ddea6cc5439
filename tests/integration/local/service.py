"""The service as a real process (``paas-pitr serve``), to kill with SIGKILL as the OOM killer
or an operator would: nothing of it runs after the signal, unlike an in-process stop.

Used by the crash tests and by ``benchmarks/reliability.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg

from paas_pitr.auth import TokenAuthority
from paas_pitr.crashpoints import ENVIRONMENT_VARIABLE
from paas_pitr.postgres.server import pick_port
from tests.integration.local.conftest import LocalApi, wait_for

SIGNING_KEY = b"c" * 48


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed and waiting to be reaped, does not)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return text[text.rfind(")") + 2 :].split()[0] != "Z"


def sessions_alive(sessions: set[int]) -> list[int]:
    """The live processes whose session id is one of ``sessions``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) in sessions:
            found.append(int(entry.name))
    return found


class ServiceProcess(LocalApi):
    """``paas-pitr serve`` on a loopback port, with LocalApi's helpers over real HTTP."""

    def __init__(self, state_dir: Path, dsn: str, *, log_dir: Path) -> None:
        # LocalApi's constructor runs the service in this process: not called on purpose.
        self.state_dir = state_dir
        self.dsn = dsn
        self.log_dir = log_dir
        self.port = pick_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.token = TokenAuthority(SIGNING_KEY).issue("acme")
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    @property
    def root(self) -> Path:
        """The local engine's folder."""
        return self.state_dir / "local"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"service-{self.starts}.log"

    def environment(self, crash_at: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAAS_PITR_")}
        env.update(
            {
                "PAAS_PITR_STATE_DIR": str(self.state_dir),
                "PAAS_PITR_DATABASE_URL": self.dsn,
                "PAAS_PITR_TOKEN_SECRET": SIGNING_KEY.decode(),
                "PAAS_PITR_CNPG_MODE": "in-tree",
                "PAAS_PITR_ARCHIVE_TIMEOUT_SECONDS": "2",
                "PAAS_PITR_HEARTBEAT_SECONDS": "1",
                "PAAS_PITR_BACKUP_TIMEOUT_SECONDS": "120",
                "PAAS_PITR_RESTORE_TIMEOUT_SECONDS": "120",
            }
        )
        if "PAAS_PITR_PG_OS_USER" in os.environ:
            env["PAAS_PITR_PG_OS_USER"] = os.environ["PAAS_PITR_PG_OS_USER"]
        if crash_at is not None:
            env[ENVIRONMENT_VARIABLE] = crash_at
        return env

    def start(self, crash_at: str | None = None) -> None:
        """Start the service (armed to die at ``crash_at``) and wait until it answers."""
        assert self.process is None or self.process.poll() is not None
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "paas-pitr"),
                    "serve",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                env=self.environment(crash_at),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def answers() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the service exited: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                return self.client.get("/healthz").status_code == 200
            return False

        wait_for(answers, timeout=60, interval=0.1, what="the service to answer")

    def kill(self) -> None:
        """SIGKILL the service, as the OOM killer would."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def terminate(self) -> None:
        """Stop the service gracefully (it stops the servers it runs)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                self.kill()
        self.client.close()

    def stop(self) -> None:
        self.kill()

    def restart(self, crash_at: str | None = None) -> None:
        self.kill()
        self.start(crash_at)

    def wait_crash(self, point: str, timeout: float = 180) -> None:
        """Wait until the service killed itself at crash point ``point``."""
        assert self.process is not None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{point} not reached in {timeout}s: {self.log_tail()}") from None
        assert self.process.returncode == -signal.SIGKILL, self.log_tail()
        assert f"crash point {point} reached" in self.log_tail(), self.log_tail()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- what the service left on disk -------------------------------------------------

    def s3_server_pid(self) -> int | None:
        meta = json.loads((self.root / "s3" / "server.json").read_text(encoding="utf-8"))
        pid = meta.get("pid")
        return pid if isinstance(pid, int) else None

    def recorded_sessions(self) -> set[int]:
        """The helper sessions the service recorded as running (barman-cloud)."""
        folder = self.root / "children"
        return {int(p.name) for p in folder.iterdir()} if folder.is_dir() else set()

    def superuser(self, cluster_name: str) -> psycopg.Connection[Any]:
        """A superuser connection to a cluster's server over its trusted unix socket."""
        instance_root = self.root / "instances" / cluster_name
        meta = json.loads((instance_root / "meta.json").read_text(encoding="utf-8"))
        socket_dir = (
            self.root / "run" / hashlib.sha256(str(instance_root).encode()).hexdigest()[:10]
        )
        return psycopg.connect(
            host=str(socket_dir),
            port=meta["port"],
            user="postgres",
            dbname="postgres",
            autocommit=True,
        )
