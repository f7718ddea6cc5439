"""Encoded listing pages: the same bytes as the route's own encoding of the listing, kept
while nothing they were built from changes, and built again after each kind of change."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from paas_pitr.api.contract import Envelope
from paas_pitr.api.listing_pages import ListingPages
from paas_pitr.backups import BackupListing, BackupService
from paas_pitr.engines.base import Manifest
from tests.integration.operator_play import backup_obj
from tests.unit.test_archive_cache import NOW, CountingEngine, ListingEngine, World


async def cluster_of(world: World, name: str) -> Manifest:
    cluster = await world.engine.get("Cluster", name)
    assert cluster is not None
    return cluster


async def page(
    pages: ListingPages, world: World, name: str, number: int = 1, per_page: int = 50, **kw: Any
) -> bytes:
    return await pages.body(
        world.backups, await cluster_of(world, name), page=number, per_page=per_page, **kw
    )


def backups_in(body: bytes) -> list[tuple[str, str]]:
    return [(b["name"], b["status"]) for b in json.loads(body)["data"]["items"]]


async def encoded_by_the_route(world: World, name: str, number: int, per_page: int) -> bytes:
    """What the route answered before pages were kept: FastAPI encoding the listing of a
    service that keeps nothing yet, through the route's response model."""
    service = BackupService(world.addons)
    app = FastAPI()

    @app.get("/listing", response_model=Envelope[BackupListing])
    async def listing() -> Envelope[BackupListing]:
        cluster = await cluster_of(world, name)
        return Envelope(data=await service.listing(cluster, page=number, per_page=per_page))

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/listing")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return response.content


async def test_a_kept_page_is_byte_for_byte_the_route_s_own_encoding(tmp_path: Path) -> None:
    world = World(tmp_path, CountingEngine())
    name, uid = await world.addon()
    for day in range(7):
        world.engine.put(backup_obj(name, uid, f"{name}-d{day}", NOW - timedelta(days=day)))
    pages = ListingPages()
    for number, per_page in ((1, 50), (1, 3), (2, 3), (3, 3), (4, 3)):
        first = await page(pages, world, name, number, per_page)
        kept = await page(pages, world, name, number, per_page)
        assert kept is first  # answered from the kept page, not encoded again
        assert kept == await encoded_by_the_route(world, name, number, per_page)
    assert backups_in(await page(pages, world, name, 3, 3)) == [(f"{name}-d6", "completed")]
    assert json.loads(await page(pages, world, name, 2, 3))["data"]["pagination"] == {
        "page": 2,
        "per_page": 3,
        "total": 7,
        "pages": 3,
    }


async def test_each_change_of_a_backup_is_answered_at_once(tmp_path: Path) -> None:
    world = World(tmp_path, CountingEngine())
    name, uid = await world.addon()
    world.engine.put(backup_obj(name, uid, f"{name}-b1", NOW - timedelta(hours=30)))
    world.engine.put(backup_obj(name, uid, f"{name}-b2", NOW - timedelta(hours=6), "running"))
    pages = ListingPages()
    before = await page(pages, world, name)
    assert backups_in(before) == [(f"{name}-b2", "running"), (f"{name}-b1", "completed")]
    assert await page(pages, world, name) is before

    # Status change: the running backup completes.
    done = backup_obj(name, uid, f"{name}-b2", NOW - timedelta(hours=6))
    world.engine.set_status("Backup", f"{name}-b2", done["status"])
    after = await page(pages, world, name)
    assert backups_in(after) == [(f"{name}-b2", "completed"), (f"{name}-b1", "completed")]
    assert after == await encoded_by_the_route(world, name, 1, 50)

    # A new backup.
    world.engine.put(backup_obj(name, uid, f"{name}-b3", NOW - timedelta(hours=1), "failed"))
    assert backups_in(await page(pages, world, name)) == [
        (f"{name}-b3", "failed"),
        (f"{name}-b2", "completed"),
        (f"{name}-b1", "completed"),
    ]

    # A deleted backup.
    await world.engine.delete("Backup", f"{name}-b1")
    assert backups_in(await page(pages, world, name)) == [
        (f"{name}-b3", "failed"),
        (f"{name}-b2", "completed"),
    ]


async def test_without_revisions_a_status_change_is_answered_at_once(tmp_path: Path) -> None:
    # The Kubernetes engine's case: the key is the Backups' resourceVersions.
    world = World(tmp_path, ListingEngine())
    name, uid = await world.addon()
    world.engine.put(backup_obj(name, uid, f"{name}-b1", NOW - timedelta(hours=6), "running"))
    pages = ListingPages()
    first = await page(pages, world, name)
    assert backups_in(first) == [(f"{name}-b1", "running")]
    assert await page(pages, world, name) is first
    done = backup_obj(name, uid, f"{name}-b1", NOW - timedelta(hours=6))
    world.engine.set_status("Backup", f"{name}-b1", done["status"])
    assert backups_in(await page(pages, world, name)) == [(f"{name}-b1", "completed")]


async def test_the_window_and_the_wal_archive_follow_the_archive_and_the_cluster(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, CountingEngine())
    name, uid = await world.addon()
    world.engine.put(backup_obj(name, uid, f"{name}-b1", NOW - timedelta(hours=30)))
    pages = ListingPages()
    data = json.loads(await page(pages, world, name))["data"]
    assert data["window"]["latest"] == "2026-05-04T11:57:00Z"
    assert data["wal_archive"]["status"] == "healthy"

    # Newer WAL archived: the window's end moves (no object changed).
    world.engine.archived_at[name] = NOW - timedelta(minutes=1)
    data = json.loads(await page(pages, world, name))["data"]
    assert data["window"]["latest"] == "2026-05-04T11:59:00Z"
    assert data["wal_archive"]["last_archived_at"] == "2026-05-04T11:59:00Z"

    # The operator writes the first recoverability point, then archiving fails: Cluster
    # status changes only.
    status = copy.deepcopy(world.engine.objects[("Cluster", name)]["status"])
    status["firstRecoverabilityPoint"] = "2026-05-01T00:00:00Z"
    world.engine.set_status("Cluster", name, status)
    data = json.loads(await page(pages, world, name))["data"]
    assert data["window"]["earliest"] == "2026-05-01T00:00:02Z"
    status["conditions"] = [
        {"type": "ContinuousArchiving", "status": "False", "message": "AccessDenied"}
    ]
    world.engine.set_status("Cluster", name, status)
    data = json.loads(await page(pages, world, name))["data"]
    assert data["wal_archive"]["status"] == "failing"
    assert data["wal_archive"]["reason"] == "AccessDenied"


async def test_a_window_that_depends_on_the_time_is_never_kept(tmp_path: Path) -> None:
    world = World(tmp_path, CountingEngine())
    name, uid = await world.addon(plan="standard")
    # Ended at NOW: a restore point once surely consistent, two seconds later.
    world.engine.put(backup_obj(name, uid, f"{name}-b1", NOW))
    pages = ListingPages()
    opening = await page(pages, world, name, now=NOW)
    assert json.loads(opening)["data"]["window"]["state"] == "opening"
    assert pages.kept_bytes == 0
    opened = await page(pages, world, name, now=NOW + timedelta(seconds=3))
    window = json.loads(opened)["data"]["window"]
    assert window["state"] == "open"
    assert [p["name"] for p in window["restore_points"]] == [f"{name}-b1"]
    # Time-independent from then on: kept, and never the page of the earlier instant.
    assert pages.kept_bytes == len(opened)
    assert await page(pages, world, name, now=NOW + timedelta(seconds=4)) is opened
    again = await page(pages, world, name, now=NOW + timedelta(seconds=1))
    assert json.loads(again)["data"]["window"]["state"] == "opening"


async def test_a_change_of_the_addon_or_its_tenant_builds_the_page_again(tmp_path: Path) -> None:
    world = World(tmp_path, CountingEngine())
    name, uid = await world.addon()
    world.engine.put(backup_obj(name, uid, f"{name}-b1", NOW - timedelta(hours=6)))
    pages = ListingPages()
    first = await page(pages, world, name)
    cluster = world.engine.objects[("Cluster", name)]
    cluster["metadata"]["labels"]["paas-pitr.io/tenant"] = "globex"
    world.engine.set_status("Cluster", name, cluster["status"])
    moved = await page(pages, world, name)
    assert moved == first and moved is not first
    # Deleted and created again under the same name (another uid): none of the old
    # incarnation's Backups.
    cluster["metadata"]["uid"] = "another-uid"
    world.engine.set_status("Cluster", name, cluster["status"])
    assert backups_in(await page(pages, world, name)) == []


async def test_pages_are_kept_within_their_byte_budget(tmp_path: Path) -> None:
    world = World(tmp_path, CountingEngine())
    name, uid = await world.addon()
    for day in range(4):
        world.engine.put(backup_obj(name, uid, f"{name}-d{day}", NOW - timedelta(days=day)))
    one = len(
        await ListingPages().body(world.backups, await cluster_of(world, name), page=1, per_page=1)
    )
    pages = ListingPages(max_bytes=2 * one + one // 2)
    first = await page(pages, world, name, 1, 1)
    second = await page(pages, world, name, 2, 1)
    await page(pages, world, name, 3, 1)  # the least recently used (page 1) makes room
    assert pages.kept_bytes <= pages.max_bytes
    assert await page(pages, world, name, 2, 1) is second
    assert await page(pages, world, name, 1, 1) is not first
    nothing = ListingPages(max_bytes=0)
    await page(nothing, world, name)
    assert nothing.kept_bytes == 0
