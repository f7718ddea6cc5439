"""A real PostgreSQL instance of the local engine, archiving to its own embedded S3 server,
for the tests of one data-path piece (archiver, base backup producer, base backup restore)
without the whole service."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from paas_pitr.engines.local.archive import ArchiveConfig
from paas_pitr.engines.local.barman import Barman
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.objectstorage import EmbeddedS3
from paas_pitr.errors import InvalidInput
from paas_pitr.postgres.binaries import PostgresBinaries, find_binaries
from paas_pitr.postgres.server import OsUser, make_traversable
from paas_pitr.s3 import ensure_bucket


@dataclass
class ArchivedInstance:
    root: Path
    s3: EmbeddedS3
    binaries: PostgresBinaries
    user: OsUser | None
    barman: Barman
    instance: Instance
    config: ArchiveConfig
    credentials: dict[str, str]


@contextmanager
def archived_instance(
    workdir: Path, label: str, *, bucket: str, prefix: str, server: str, **archive: Any
) -> Iterator[ArchivedInstance]:
    """An initialised, configured (fsync off), NOT started instance named ``server``
    archiving to ``s3://<bucket>/<prefix>`` (``archive``: more ArchiveConfig fields);
    destroyed with its S3 server on exit. Skips without PostgreSQL server binaries."""
    try:
        binaries = find_binaries(None)
    except InvalidInput as exc:
        pytest.skip(f"no PostgreSQL server binaries: {exc.message}")
    make_traversable(Path(sys.executable).parent)
    root = workdir / f"{label}-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    root.chmod(0o711)
    user = OsUser.for_servers()
    # As the local engine runs it: as the servers' user (see EmbeddedS3).
    s3 = EmbeddedS3(root / "s3", user=user)
    s3.start()
    try:
        credentials = s3.credentials
        ensure_bucket(s3.url, credentials, bucket)
        barman = Barman(user)
        (root / "run").mkdir(mode=0o711)
        instance = Instance(server, root / "instance", root / "run", binaries, user, barman)
        config = ArchiveConfig(
            destination=f"s3://{bucket}/{prefix}",
            server_name=server,
            endpoint_url=s3.url,
            secret_refs={},
            **archive,
        )
        instance.prepare_root()
        try:
            instance.server.initdb()
            instance.write_archive_script(config, credentials, None)
            instance.write_config(instance.server_settings({"fsync": "off"}))
            yield ArchivedInstance(root, s3, binaries, user, barman, instance, config, credentials)
        finally:
            instance.destroy()
    finally:
        s3.stop()
