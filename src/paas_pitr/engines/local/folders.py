"""Folders opened beneath a trusted one without following a symbolic link on the way: for
trees another OS user (the servers') may change while the service, as root, works in them
(a restored data directory, the embedded S3 server's store)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from paas_pitr.postgres.server import OsUser

FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class NotAFolder(OSError):
    """A component that could not be opened as a real folder (a symbolic link, a file,
    missing); ``depth``: its index in the names given, ``cause``: the file system's error
    (its errno and text are this one's too)."""

    def __init__(self, depth: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.depth = depth
        self.cause = cause


def open_beneath(
    root: Path, names: Sequence[str], user: OsUser | None, *, create: bool, flush: bool = False
) -> int:
    """A descriptor (close-on-exec) of ``root/<names>``: ``root`` is opened as given (it is
    the caller's choice, and may be a link), each name below it without following a
    symbolic link. With ``create`` a missing folder is made (0700, owned by ``user``: set
    through the descriptor opened, so never on another entry swapped in meanwhile); with
    ``flush`` too, its entry is flushed into its parent. Raises :class:`NotAFolder` for a
    name that is not a real folder, OSError for ``root``."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, name in enumerate(names):
            made = False
            if create:
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                    made = True
                except FileExistsError:
                    pass
            try:
                child = os.open(name, FOLDER_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise NotAFolder(depth, exc) from exc
            if made:
                if user is not None:
                    os.fchown(child, user.uid, user.gid)
                if flush:
                    os.fsync(fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd
