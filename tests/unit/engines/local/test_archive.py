"""Folders of the embedded S3 server's store, opened without following the links its user
could plant, and the names that map to one folder exactly as barman's keys do."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from paas_pitr.engines.local.archive import ServedFolder, plain_name


@pytest.mark.parametrize(
    ("name", "plain"),
    [
        ("db-acme-app-1", True),
        ("acme_app.v2", True),
        ("tenant=acme+x@y", True),
        ("", False),
        (".hidden", False),
        ("..", False),
        ("a..b", False),
        ("a/b", False),
        ("p?x", False),
        ("q#f", False),
        ("tenant one", False),
        ("naïve", False),
    ],
)
def test_plain_names(name: str, plain: bool) -> None:
    assert plain_name(name) is plain


def test_a_folder_is_made_component_by_component_and_opened(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    folder = ServedFolder(tmp_path, ("bucket",)).child("acme", "db", "wals")

    fd = folder.open(None, create=True)
    try:
        assert os.path.samestat(os.fstat(fd), (tmp_path / "bucket/acme/db/wals").stat())
    finally:
        os.close(fd)
    assert stat.S_IMODE((tmp_path / "bucket/acme").stat().st_mode) == 0o700
    assert folder.path == tmp_path / "bucket/acme/db/wals"


def test_a_missing_folder_is_not_made_without_create(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    with pytest.raises(FileNotFoundError):
        ServedFolder(tmp_path, ("bucket", "acme")).open(None, create=False)
    assert not (tmp_path / "bucket/acme").exists()


@pytest.mark.parametrize("create", [True, False])
def test_a_symbolic_link_on_the_way_is_never_followed(tmp_path: Path, create: bool) -> None:
    (tmp_path / "bucket").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # What the S3 server's user could plant in a folder it owns.
    (tmp_path / "bucket" / "acme").symlink_to(elsewhere)

    with pytest.raises(OSError, match=r"Not a directory|Too many levels"):
        ServedFolder(tmp_path, ("bucket", "acme", "db", "wals")).open(None, create=create)

    assert list(elsewhere.iterdir()) == []
