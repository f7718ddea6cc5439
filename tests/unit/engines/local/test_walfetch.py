from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

from paas_pitr.engines.local.walfetch import fetch_one, following


def test_following_rolls_over_the_log_file() -> None:
    assert following("0000000100000000000000FE", 3) == [
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000001",
    ]


class FakeS3:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def list_objects_v2(self, Bucket: str, Prefix: str) -> dict[str, Any]:  # noqa: N803
        return {"Contents": [{"Key": k} for k in self.objects if k.startswith(Prefix)]}

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        return {"Body": io.BytesIO(self.objects[Key])}


def test_fetch_one_decompresses_into_the_spool(tmp_path: Path) -> None:
    name = "000000010000000000000003"
    key = f"acme/app-1/db/wals/{name[:16]}/{name}.gz"
    client = FakeS3({key: gzip.compress(b"wal bytes")})
    assert fetch_one(client, "b", "acme/app-1/db/wals/", name, tmp_path)
    assert (tmp_path / name).read_bytes() == b"wal bytes"
    assert not list(tmp_path.glob(".inflight-*"))
    assert not list(tmp_path.glob(".part-*"))


def test_fetch_one_leaves_unknown_compressions_and_missing_files(tmp_path: Path) -> None:
    name = "000000010000000000000004"
    client = FakeS3({f"p/{name[:16]}/{name}.zst": b"?"})
    assert not fetch_one(client, "b", "p/", name, tmp_path)
    assert not fetch_one(client, "b", "p/", "000000010000000000000005", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fetch_one_skips_what_another_fetch_holds(tmp_path: Path) -> None:
    name = "000000010000000000000006"
    (tmp_path / f".inflight-{name}").mkdir()
    client = FakeS3({})
    assert fetch_one(client, "b", "p/", name, tmp_path)
    assert (tmp_path / f".inflight-{name}").exists()
