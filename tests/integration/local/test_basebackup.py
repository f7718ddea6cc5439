"""The parallel base backup producer with real processes: PostgreSQL archiving through its
WAL archiver into the embedded S3 server, a pgbench database backed up in several parts,
restored by the stock barman-cloud-restore, and a producer killed mid-way."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from paas_pitr.engines.local.archive import ArchiveConfig
from paas_pitr.engines.local.archivers import ArchiverSupervisor
from paas_pitr.engines.local.barman import Barman, CommandResult
from paas_pitr.engines.local.baserestore import BaseBackupRestore, S3BackupObjects
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.objectstorage import EmbeddedS3
from paas_pitr.errors import RecoveryError
from paas_pitr.postgres.binaries import PostgresBinaries
from paas_pitr.postgres.server import OsUser, chown_tree
from paas_pitr.s3 import s3_client
from tests.integration.local.conftest import wait_for
from tests.integration.local.instances import archived_instance

pytestmark = pytest.mark.integration

BUCKET = "backup-bucket"
PGBENCH_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_history", "pgbench_tellers")


@dataclass
class Rig:
    root: Path
    s3: EmbeddedS3
    barman: Barman
    binaries: PostgresBinaries
    user: OsUser | None
    instance: Instance
    config: ArchiveConfig
    credentials: dict[str, str]

    @property
    def base(self) -> Path:
        return self.s3.data / BUCKET / "backups" / "db" / "base"

    def backup_command(self, name: str, *extra: str) -> list[str]:
        server = self.instance.server
        return [
            *self.barman.backup_producer(),
            "--archiver-socket",
            str(self.instance.archiver_socket),
            *Barman.backup_flags(self.config, None),
            *extra,
            *self.barman.endpoint_args(self.config),
            "-h",
            str(server.socket_dir),
            "-p",
            str(server.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-n",
            name,
            self.config.destination,
            self.config.server_name,
        ]

    def run(self, args: list[str]) -> CommandResult:
        return asyncio.run(self.barman.run(args, self.credentials, timeout=300))

    def backup_info(self, backup_id: str) -> dict[str, str]:
        text = (self.base / backup_id / "backup.info").read_text(encoding="utf-8")
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def checksums(self, instance: Instance) -> dict[str, tuple[int, int]]:
        found = {}
        with instance.connect() as conn:
            for table in PGBENCH_TABLES:
                row = conn.execute(
                    f"SELECT count(*), coalesce(sum(hashtext(t::text)), 0) FROM {table} t"
                ).fetchone()
                assert row is not None
                found[table] = (int(row[0]), int(row[1]))
        return found


@pytest.fixture
def rig(workdir: Path) -> Iterator[Rig]:
    with archived_instance(
        workdir,
        "basebackup",
        bucket=BUCKET,
        prefix="backups",
        server="db",
        wal_compression="snappy",
        wal_max_parallel=4,
        data_compression="lz4",
        data_jobs=2,
    ) as made:
        instance = made.instance
        archivers = ArchiverSupervisor(made.barman, made.user)
        try:
            assert archivers.ensure(
                instance.name,
                made.config,
                made.credentials,
                pgdata=instance.server.data_dir,
                socket_path=instance.archiver_socket,
                log_path=instance.scripts / "walarchiver.log",
            )
            instance.server.start()
            subprocess.run(
                [
                    made.binaries.tool("pgbench"),
                    *("-i", "-s", "2", "-q", instance.server.admin_conninfo()),
                ],
                check=True,
                capture_output=True,
            )
            yield Rig(
                made.root,
                made.s3,
                made.barman,
                made.binaries,
                made.user,
                instance,
                made.config,
                made.credentials,
            )
        finally:
            archivers.stop_all()


def _restore_with_stock_barman(rig: Rig, backup_id: str) -> Instance:
    """barman-cloud-restore of ``backup_id`` into a new instance, replayed to consistency
    from the archive and promoted."""
    restored = Instance(
        "restored", rig.root / "restored", rig.root / "run", rig.binaries, rig.user, rig.barman
    )
    restored.prepare_root()
    data_dir = restored.server.data_dir
    data_dir.mkdir(mode=0o700)
    chown_tree(data_dir, rig.user)
    result = rig.run(
        [
            rig.barman.tool("barman-cloud-restore"),
            *rig.barman.endpoint_args(rig.config),
            rig.config.destination,
            rig.config.server_name,
            backup_id,
            str(data_dir),
        ]
    )
    assert result.returncode == 0, result.error_text
    script = restored.write_restore_script(rig.config, rig.credentials, 2)
    restored.write_config(
        restored.server_settings(
            {},
            {
                "archive_mode": "off",
                "restore_command": f'\'{script}\' "%f" "%p"',
                "recovery_target": "immediate",
                "recovery_target_action": "promote",
            },
        )
    )
    signal_file = data_dir / "recovery.signal"
    signal_file.touch()
    chown_tree(signal_file, rig.user)
    restored.server.start()

    def promoted() -> bool:
        with restored.connect() as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        return row is not None and not row[0]

    wait_for(promoted, timeout=120, what="the restored server to be promoted")
    return restored


def test_a_parallel_backup_restores_with_stock_barman_cloud_restore(rig: Rig) -> None:
    expected = rig.checksums(rig.instance)
    assert expected["pgbench_accounts"][0] == 200_000

    result = rig.run(rig.backup_command("parallel"))

    assert result.returncode == 0, result.error_text
    (backup_dir,) = rig.base.iterdir()
    # One tar part per worker, then the last one with pg_control and the backup_label,
    # under the names barman gives the parts of a split tar.
    assert sorted(p.name for p in backup_dir.iterdir()) == [
        "backup.info",
        "data.tar.lz4",
        "data_0001.tar.lz4",
        "data_0002.tar.lz4",
    ]
    info = rig.backup_info(backup_dir.name)
    assert info["status"] == "DONE"
    assert info["backup_name"] == "parallel"
    # Done only once the backup's WAL is in the archive: from its first to its last
    # segment, every one is stored.
    wals = rig.s3.data / BUCKET / "backups" / "db" / "wals"
    stored = {p.name.split(".")[0] for p in wals.rglob("*") if p.is_file()}
    first, last = info["begin_wal"], info["end_wal"]
    assert first[:16] == last[:16]
    needed = {f"{first[:16]}{n:08X}" for n in range(int(first[16:], 16), int(last[16:], 16) + 1)}
    assert needed <= stored, sorted(needed - stored)

    restored = _restore_with_stock_barman(rig, backup_dir.name)
    try:
        assert rig.checksums(restored) == expected
    finally:
        restored.destroy()


def _tar_members(path: Path) -> list[str]:
    """The member names of an lz4-compressed tar part, in their order."""
    import lz4.frame  # type: ignore[import-untyped]

    with tarfile.open(fileobj=io.BytesIO(lz4.frame.decompress(path.read_bytes()))) as tar:
        return tar.getnames()


def test_any_lost_part_of_a_parallel_backup_fails_its_restore(rig: Rig) -> None:
    result = rig.run(rig.backup_command("parts"))
    assert result.returncode == 0, result.error_text
    (backup_dir,) = rig.base.iterdir()
    backup_id = backup_dir.name
    # pg_control and the backup_label alone in the highest-numbered part, as
    # barman-cloud-backup puts them in its last part.
    assert _tar_members(backup_dir / "data_0002.tar.lz4") == ["global/pg_control", "backup_label"]
    assert "global/pg_control" not in _tar_members(backup_dir / "data.tar.lz4")
    client = s3_client(rig.s3.url, rig.credentials)
    prefix = f"backups/db/base/{backup_id}"
    restorer = BaseBackupRestore(
        S3BackupObjects(client, BUCKET), "backups", "db", parallel=2, user=rig.user
    )

    def restore_without(name: str) -> tuple[RecoveryError, Path]:
        key = f"{prefix}/{name}"
        original = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        client.delete_object(Bucket=BUCKET, Key=key)
        folder = rig.root / f"without-{name.split('.')[0]}"
        folder.mkdir()
        chown_tree(folder, rig.user)
        try:
            with pytest.raises(RecoveryError) as raised:
                restorer.restore(backup_id, folder / "data")
        finally:
            client.put_object(Bucket=BUCKET, Key=key, Body=original)
        return raised.value, folder / "data"

    # The number of parts is recorded in backup.info, as barman's free-form copy_stats.
    info = (backup_dir / "backup.info").read_text()
    assert "'paas_pitr_tar_parts': {'data': 3}" in info
    # The highest part: no gap in the numbering, but the recorded count tells, before
    # anything is written (without the count, the missing pg_control would, after).
    error, data = restore_without("data_0002.tar.lz4")
    assert error.message == (
        f"base backup restore failed: {prefix}/data_0002.tar.lz4 is missing (backup.info "
        "records 3 parts of data.tar.lz4, 2 found)"
    )
    assert not data.exists()
    # A middle part: a gap in the numbering, refused before anything is written.
    error, data = restore_without("data_0001.tar.lz4")
    assert error.message == (
        f"base backup restore failed: {prefix}/data_0001.tar.lz4 is missing (the backup "
        "holds part 0002 after it)"
    )
    assert not data.exists()


def test_a_producer_killed_mid_way_leaves_its_backup_not_done(rig: Rig) -> None:
    process = subprocess.Popen(
        rig.backup_command("killed"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=rig.barman.environment(rig.credentials),
        user=rig.user.uid if rig.user else None,
        group=rig.user.gid if rig.user else None,
        extra_groups=[] if rig.user else None,
        start_new_session=True,
    )
    try:
        info = wait_for(
            lambda: (found := list(rig.base.glob("*/backup.info"))) and found[0],
            timeout=60,
            interval=0.01,
            what="the backup to start",
        )
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_id = info.parent.name
    assert rig.backup_info(killed_id)["status"] == "STARTED"
    # The backup session died with it: the next backup runs and completes (in another
    # second: a backup's id is the second it started, in UTC).
    wait_for(lambda: time.strftime("%Y%m%dT%H%M%S", time.gmtime()) > killed_id, what="a second")
    result = rig.run(rig.backup_command("next"))
    assert result.returncode == 0, result.error_text
    # Named from its start: the control plane finds the killed one by its name.
    infos = {p.name: rig.backup_info(p.name) for p in rig.base.iterdir()}
    assert {i: (v["status"], v.get("backup_name")) for i, v in infos.items()} == {
        killed_id: ("STARTED", "killed"),
        max(infos): ("DONE", "next"),
    }
    assert max(infos) > killed_id
