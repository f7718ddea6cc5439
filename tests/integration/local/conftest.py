from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from paas_pitr.engines.local import LocalEngine
from paas_pitr.restore_views import FINISHED_STATUSES
from paas_pitr.settings import Settings
from tests.integration.conftest import RunningApi, make_state, start_api

Waiter = Callable[..., Any]


def wait_for(
    check: Callable[[], Any], *, timeout: float = 120, interval: float = 0.3, what: str = ""
) -> Any:
    """Poll until ``check`` returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {what or check}: last value {last!r}")


def local_settings(workdir: Path, mode: str = "in-tree", **overrides: Any) -> Settings:
    return Settings(
        state_dir=workdir / f"local-{uuid.uuid4().hex[:8]}",
        cnpg_mode=mode,  # type: ignore[arg-type]
        archive_timeout_seconds=2,
        heartbeat_seconds=1,
        backup_timeout_seconds=120,
        restore_timeout_seconds=120,
        **overrides,
    )


class LocalApi:
    """The API over real HTTP with the real local engine behind it."""

    def __init__(self, settings: Settings, dsn: str) -> None:
        self.settings = settings
        self.dsn = dsn
        self.engine = LocalEngine(settings)
        self.running: RunningApi = start_api(
            make_state(settings, self.engine, dsn, settings.state_dir / "audit" / "journal.jsonl")
        )
        self.client: httpx.Client = self.running.client(self.running.token())

    def restart(self) -> None:
        self.stop()
        self.start()

    def start(self) -> None:
        self.engine = LocalEngine(self.settings)
        self.running = start_api(
            make_state(
                self.settings,
                self.engine,
                self.dsn,
                self.settings.state_dir / "audit" / "journal.jsonl",
            )
        )
        self.client = self.running.client(self.running.token())

    def stop(self) -> None:
        self.client.close()
        self.running.stop()

    # --- helpers -------------------------------------------------------------------

    def create_addon(
        self, plan: str, app: str = "app-1", version: str | None = None
    ) -> dict[str, Any]:
        body = {"plan": plan, **({"version": version} if version else {})}
        response = self.client.post(f"/v1/apps/{app}/addons", json=body)
        assert response.status_code == 201, response.text
        addon = response.json()["data"]
        return self.wait_ready(app, addon["addon_id"])

    def addon(self, app: str, addon_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/apps/{app}/addons/{addon_id}")
        assert response.status_code == 200, response.text
        return dict(response.json()["data"])

    def wait_ready(self, app: str, addon_id: str) -> dict[str, Any]:
        return dict(
            wait_for(
                lambda: (view := self.addon(app, addon_id))["ready"] and view,
                what=f"{addon_id} ready",
            )
        )

    def backups(self, app: str, addon_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/apps/{app}/addons/{addon_id}/backups")
        assert response.status_code == 200, response.text
        return dict(response.json()["data"])

    def wait_backups_completed(self, app: str, addon_id: str, count: int = 1) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            listing = self.backups(app, addon_id)
            statuses = [b["status"] for b in listing["items"]]
            assert "failed" not in statuses, listing["items"]
            done = statuses.count("completed") >= count and "running" not in statuses
            return listing if done else None

        return dict(wait_for(check, what=f"{count} completed backup(s) of {addon_id}"))

    def wait_current_range(self, app: str, addon_id: str) -> dict[str, Any]:
        """Wait until an instant of the current archive period is restorable (its first
        base backup consistent, WAL past it archived): instants from now on can be targets."""

        def check() -> dict[str, Any] | None:
            listing = self.backups(app, addon_id)
            return listing if listing["window"]["latest"] else None

        return dict(wait_for(check, what=f"the current range of {addon_id} to open"))

    def wait_restorable(self, app: str, addon_id: str, moment: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            listing = self.backups(app, addon_id)
            latest = listing["window"]["latest"]
            # Compared as instants: as text, "…:51Z" sorts after "…:51.5Z".
            restorable = latest and datetime.fromisoformat(latest) >= datetime.fromisoformat(moment)
            return listing if restorable else None

        return dict(wait_for(check, what=f"{moment} restorable"))

    def restore(self, app: str, addon_id: str, timestamp: str) -> httpx.Response:
        return self.client.post(
            f"/v1/apps/{app}/addons/{addon_id}/restore", json={"timestamp": timestamp}
        )

    def restore_when_restorable(self, app: str, addon_id: str, target: str) -> dict[str, Any]:
        """Wait until ``target`` is restorable, restore to it, wait until the restore is
        ready; the restore as the API shows it."""
        self.wait_restorable(app, addon_id, target)
        response = self.restore(app, addon_id, target)
        assert response.status_code == 202, response.text
        restore = self.wait_restore(app, addon_id, response.json()["data"]["restore_id"])
        assert restore["status"] == "ready", restore
        return restore

    def wait_restore(self, app: str, addon_id: str, restore_id: str) -> dict[str, Any]:
        url = f"/v1/apps/{app}/addons/{addon_id}/restores/{restore_id}"
        return dict(
            wait_for(
                lambda: (
                    (r := self.client.get(url).json()["data"])["status"] in FINISHED_STATUSES and r
                ),
                timeout=180,
                what=f"restore {restore_id}",
            )
        )


@pytest.fixture
def local_api(workdir: Path, audit_dsn: str) -> Iterator[LocalApi]:
    api = LocalApi(local_settings(workdir), audit_dsn)
    yield api
    api.stop()


@pytest.fixture
def plugin_api(workdir: Path, audit_dsn: str) -> Iterator[LocalApi]:
    api = LocalApi(local_settings(workdir, mode="plugin"), audit_dsn)
    yield api
    api.stop()


@pytest.fixture(scope="session", autouse=True)
def _tools_reachable_by_the_server_user() -> None:
    # CI may clone into a private temporary directory; the PostgreSQL user must reach the
    # venv's barman-cloud scripts that archive_command runs (traverse only, never list).
    import sys

    from paas_pitr.postgres.server import make_traversable

    make_traversable(Path(sys.executable).parent)
