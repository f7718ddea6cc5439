"""Fakes for the local engine's rooms: barman-cloud without processes, an instance without
a server, and the objects a real engine would hold (an addon's Cluster, its ObjectStore and
ScheduledBackup, rendered by the real builders) in a temporary object database.

As httpx's ``MockTransport`` stands in for the network, :class:`FakeBarman` stands in for
barman-cloud: the code under test builds the same command lines, and the fake answers them
from an in-memory catalog per server folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from paas_pitr.cnpg.builders import RenderConfig, build_addon_manifests, build_scheduled_backup
from paas_pitr.engines.base import Manifest
from paas_pitr.engines.local.archive import ArchiveConfig, ArchiveResolver
from paas_pitr.engines.local.backups import BackupController
from paas_pitr.engines.local.barman import Barman, CommandResult
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.objects import ObjectDatabase
from paas_pitr.engines.local.objectstorage import SecretStore
from paas_pitr.engines.local.status import StatusWriter
from paas_pitr.s3 import ACCESS_KEY, SECRET_KEY
from paas_pitr.settings import Settings

ENDPOINT = "http://127.0.0.1:9"
T0 = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)


def catalog_entry(
    backup_id: str,
    end: datetime,
    *,
    name: str | None = None,
    status: str = "DONE",
    seconds: int = 30,
) -> dict[str, Any]:
    """One backup as ``barman-cloud-backup-list --format json`` prints it."""
    begin = end - timedelta(seconds=seconds)
    return {
        "backup_id": backup_id,
        "backup_name": name,
        "status": status,
        "begin_time_iso": begin.isoformat(),
        "end_time_iso": end.isoformat(),
        "begin_wal": "000000010000000000000002",
        "end_wal": "000000010000000000000003",
        "begin_xlog": "0/2000028",
        "end_xlog": "0/3000100",
    }


class FakeBarman(Barman):
    """barman-cloud answered from memory: ``catalogs`` by ``"<destination>/<server>"``;
    every command line run is kept in ``commands``. ``barman-cloud-backup`` adds a DONE
    entry (or ``backup_status``'s) ended at ``clock``; retention removes ``expire``."""

    def __init__(self) -> None:
        super().__init__(None, Path("/fake/bin"))
        self.catalogs: dict[str, list[dict[str, Any]]] = {}
        self.commands: list[list[str]] = []
        self.clock = T0
        self.backup_status = "DONE"
        self.backup_returncode = 0
        self.expire: set[str] = set()

    def catalog(self, destination: str, server: str) -> list[dict[str, Any]]:
        return self.catalogs.setdefault(f"{destination}/{server}", [])

    async def catalog_status(
        self, config: ArchiveConfig, endpoint: str, credentials: dict[str, str], backup_id: str
    ) -> str | None:
        entries = self.catalog(config.destination, config.server_name)
        return next((str(b["status"]) for b in entries if b["backup_id"] == backup_id), None)

    async def catalog_entry(
        self, config: ArchiveConfig, endpoint: str, credentials: dict[str, str], name: str
    ) -> dict[str, Any] | None:
        entries = self.catalog(config.destination, config.server_name)
        return next((dict(b) for b in reversed(entries) if b.get("backup_name") == name), None)

    def backup_producer(self) -> list[str]:
        # Answered as barman-cloud-backup: the producer takes its arguments.
        return [self.tool("barman-cloud-backup")]

    def ran(self, tool: str) -> list[list[str]]:
        return [c for c in self.commands if Path(c[0]).name == tool]

    async def run(
        self,
        args: list[str],
        credentials: dict[str, str],
        *,
        timeout: float,
        cwd: Path | None = None,
        started: Callable[[], None] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> CommandResult:
        self.commands.append(list(args))
        if started is not None:
            started()
        tool = Path(args[0]).name
        if not tool.startswith("barman-cloud-backup") or "--version" in args:
            return CommandResult(0, "", "")
        catalog = self.catalog(args[-2], args[-1])
        if tool == "barman-cloud-backup-list":
            return CommandResult(0, json.dumps({"backups_list": catalog}), "")
        if tool == "barman-cloud-backup":
            name = args[args.index("-n") + 1]
            backup_id = self.clock.strftime("%Y%m%dT%H%M%S")
            catalog.append(
                catalog_entry(backup_id, self.clock, name=name, status=self.backup_status)
            )
            return CommandResult(self.backup_returncode, "", "")
        if tool == "barman-cloud-backup-delete":
            gone = {args[args.index("-b") + 1]} if "-b" in args else set(self.expire)
            catalog[:] = [b for b in catalog if b["backup_id"] not in gone]
        return CommandResult(0, "", "")


@dataclass
class FakeServer:
    port: int = 5432
    socket_dir: Path = Path("/fake/run")
    binaries: Any = field(default_factory=lambda: type("Binaries", (), {"major": 16})())


@dataclass
class FakeInstance:
    """What the backup controller reads of an instance."""

    root: Path = Path("/fake/instance")
    ready: bool = True
    server: FakeServer = field(default_factory=FakeServer)

    @property
    def archiver_socket(self) -> Path:
        return self.server.socket_dir / "walarchiver.sock"

    def is_ready(self) -> bool:
        return self.ready


class World:
    """An object database with the S3 Secret, and a backup controller over it."""

    def __init__(self, tmp_path: Path, mode: str = "in-tree") -> None:
        self.mode = mode
        self.objects = ObjectDatabase(tmp_path / "objects.sqlite3")
        self.secrets = SecretStore(tmp_path / "secrets.json")
        self.secrets.set("ovh-s3-creds", {ACCESS_KEY: "key", SECRET_KEY: "secret"})
        self.status = StatusWriter(self.objects)
        self.archives = ArchiveResolver(self.objects.get, self.secrets, lambda: ENDPOINT)
        self.barman = FakeBarman()
        self.instances: dict[str, FakeInstance] = {}
        self.wakes = 0
        self.settings = Settings(state_dir=tmp_path / "state")
        self.backups = BackupController(
            self.objects,
            self.status,
            self.archives,
            self.barman,
            self.settings,
            cast(dict[str, Instance], self.instances),
            self.wake,
        )

    def wake(self) -> None:
        self.wakes += 1

    def addon(self, plan: str = "pro", *, scheduled: bool = True) -> Manifest:
        """A stored addon (Cluster, ObjectStore in plugin mode, its ScheduledBackup)."""
        config = RenderConfig(mode=self.mode, endpoint_url=ENDPOINT)  # type: ignore[arg-type]
        manifests = build_addon_manifests(
            version="16", plan=plan, tenant="acme", app="app-1", config=config
        )
        if manifests.object_store is not None:
            self.objects.put(manifests.object_store)
        cluster = self.objects.put(manifests.cluster)
        schedule = build_scheduled_backup(cluster, config)
        if scheduled and schedule is not None:
            self.objects.put(schedule)
        self.instances[cluster["metadata"]["name"]] = FakeInstance()
        return cluster

    def cluster(self, name: str) -> Manifest:
        found = self.objects.get("Cluster", name)
        assert found is not None
        return found

    def close(self) -> None:
        self.objects.close()
