"""Opening folders beneath a trusted one: made when asked, never through a link."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from paas_pitr.engines.local.folders import NotAFolder, open_beneath


def test_missing_folders_are_made_and_the_deepest_is_opened(tmp_path: Path) -> None:
    fd = open_beneath(tmp_path, ["a", "b", "c"], None, create=True)
    try:
        assert os.path.samestat(os.fstat(fd), (tmp_path / "a/b/c").stat())
    finally:
        os.close(fd)
    assert oct((tmp_path / "a/b").stat().st_mode & 0o777) == oct(0o700)


@pytest.mark.parametrize(
    ("plant", "depth", "code"),
    # O_DIRECTORY with O_NOFOLLOW answers ENOTDIR for a link, as for a file.
    [("link", 1, errno.ENOTDIR), ("file", 1, errno.ENOTDIR), ("absent", 1, errno.ENOENT)],
)
def test_the_component_that_is_not_a_real_folder_is_named_by_its_depth(
    tmp_path: Path, plant: str, depth: int, code: int
) -> None:
    (tmp_path / "a").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    if plant == "link":
        (tmp_path / "a" / "b").symlink_to(outside)
    elif plant == "file":
        (tmp_path / "a" / "b").write_bytes(b"")

    with pytest.raises(NotAFolder) as refused:
        open_beneath(tmp_path, ["a", "b", "c"], None, create=plant != "absent")

    assert (refused.value.depth, refused.value.errno) == (depth, code)
    assert list(outside.iterdir()) == []
