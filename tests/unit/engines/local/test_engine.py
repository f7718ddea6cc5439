"""The local engine built on injected parts (a fake barman-cloud runner, a temporary object
database), as httpx's clients take a transport: its object API and garbage collection of
dependents, and its rooms wired to what it was given. Nothing is started."""

from __future__ import annotations

import getpass
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from paas_pitr.cnpg.builders import RenderConfig, build_addon_manifests, build_backup
from paas_pitr.engines.local import LocalEngine
from paas_pitr.engines.local.objects import ObjectDatabase
from paas_pitr.errors import Conflict, InvalidInput
from paas_pitr.settings import Settings
from tests.unit.engines.local.fakes import FakeBarman

CONFIG = RenderConfig(mode="in-tree")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[LocalEngine]:
    # As root, servers run as another user: name ourselves, nothing runs here.
    settings = Settings(state_dir=tmp_path / "state", pg_os_user=getpass.getuser())
    objects = ObjectDatabase(tmp_path / "objects.sqlite3")
    built = LocalEngine(settings, barman=FakeBarman(), objects=objects)
    yield built
    await built.close()
    # An injected object database is the caller's: still open after the engine closed.
    assert objects.list("Cluster") == []
    objects.close()


async def test_the_rooms_get_the_injected_parts(engine: LocalEngine) -> None:
    assert isinstance(engine.barman, FakeBarman)
    assert engine.backups.barman is engine.barman
    assert engine.backups.objects is engine.objects
    assert engine.status.objects is engine.objects
    assert engine.backups.instances is engine.instances
    assert engine.listeners == []


async def test_objects_are_stored_and_their_dependents_collected(engine: LocalEngine) -> None:
    # A Cluster names a PostgreSQL major installed here, as the API renders it.
    version = engine.default_version() or engine.settings.default_pg_version
    cluster_manifest = build_addon_manifests(
        version=version, plan="pro", tenant="acme", app="app-1", config=CONFIG
    ).cluster
    cluster = await engine.create(cluster_manifest)
    with pytest.raises(Conflict):
        await engine.create(cluster_manifest)
    owned = await engine.apply(build_backup(cluster, "owned", CONFIG))
    assert owned["metadata"]["ownerReferences"][0]["uid"] == cluster["metadata"]["uid"]
    assert [b["metadata"]["name"] for b in await engine.list("Backup")] == ["owned"]

    assert await engine.delete("Cluster", cluster["metadata"]["name"])
    assert await engine.list("Backup") == []
    assert not await engine.delete("Cluster", cluster["metadata"]["name"])


async def test_kinds_it_does_not_handle_are_refused(engine: LocalEngine) -> None:
    with pytest.raises(InvalidInput, match="does not handle kind 'Pod'"):
        await engine.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})
