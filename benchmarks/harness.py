"""What the backup/restore benchmarks share: progress lines, polling, pgBackRest as the
anchor, a local engine with the API's services on top of it, and the physical floor of a
restore (GNU tar and a local WAL copy).

The scripts run as ``python benchmarks/<name>.py``, which puts this folder first on
``sys.path``: they import this module as ``harness``.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from paas_pitr.api.state import AppState
from paas_pitr.audit import AuditLog
from paas_pitr.audit.dispatcher import AuditJournal
from paas_pitr.audit.repository import InMemoryAuditRepository
from paas_pitr.auth import TokenAuthority
from paas_pitr.engines.local import LocalEngine
from paas_pitr.engines.local.instance import Instance
from paas_pitr.postgres.server import PostgresServer, chown_tree, pick_port
from paas_pitr.s3 import ACCESS_KEY, REGION, SECRET_KEY
from paas_pitr.settings import Settings


def step(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


async def wait(check: Any, what: str, timeout: float = 3600, interval: float = 0.2) -> Any:
    """Await ``check()`` every ``interval`` seconds until it is truthy; exit after
    ``timeout`` seconds naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def ensure_pgbackrest() -> str:
    """The pgbackrest executable, installed from the OS packages when missing."""
    found = shutil.which("pgbackrest")
    if not found:
        print("installing pgbackrest (apt-get)", flush=True)
        subprocess.run(["apt-get", "install", "-y", "pgbackrest"], check=True, capture_output=True)
        found = shutil.which("pgbackrest")
    if not found:
        raise SystemExit("pgbackrest is not installable here")
    return found


async def local_stack(work: Path, **settings: Any) -> tuple[LocalEngine, AppState]:
    """A started local engine under ``work`` (archive_timeout 10 s, 1 s heartbeat, hour-long
    backup and restore timeouts, overridable) and the API's services over it, auditing to
    memory and a journal in ``work``."""
    config = Settings(
        **{
            "state_dir": work / "state",
            "cnpg_mode": "in-tree",
            "archive_timeout_seconds": 10,
            "heartbeat_seconds": 1,
            "backup_timeout_seconds": 3600,
            "restore_timeout_seconds": 3600,
            **settings,
        }
    )
    engine = LocalEngine(config)
    state = AppState.build(
        config,
        engine,
        AuditLog(InMemoryAuditRepository(), AuditJournal(work / "journal.jsonl")),
        TokenAuthority(b"b" * 48),
    )
    await engine.start()
    await state.audit.start()
    return engine, state


def plain_base_backup(backup_folder: Path, dest: Path) -> list[Path]:
    """The data directory's tar parts of a barman-cloud base backup, decompressed to plain
    tar files in ``dest`` (untimed preparation of the untar floor)."""
    from paas_pitr.engines.local.walfetch import decompress

    suffixes = {".gz": "gzip", ".snappy": "snappy", ".lz4": "lz4", ".bz2": "bzip2"}
    dest.mkdir(parents=True, exist_ok=True)
    plain: list[Path] = []
    for part in sorted(backup_folder.glob("data*.tar*")):
        compression = suffixes.get(part.suffix)
        target = dest / (part.name if compression is None else part.stem)
        target.write_bytes(decompress(part.read_bytes(), compression))
        plain.append(target)
    return plain


def plain_wal_copy(wal_root: Path, dest: Path) -> Path:
    """Every WAL file of a barman-cloud archive (``<server>/wals``), decompressed into
    one local folder: what a ``cp`` restore_command reads (untimed preparation)."""
    from paas_pitr.engines.local.walfetch import decompress

    suffixes = {".gz": "gzip", ".snappy": "snappy", ".lz4": "lz4", ".bz2": "bzip2"}
    dest.mkdir(parents=True, exist_ok=True)
    for path in wal_root.rglob("*"):
        if not path.is_file():
            continue
        compression = suffixes.get(path.suffix)
        name = path.name if compression is None else path.stem
        if not (dest / name).exists():
            (dest / name).write_bytes(decompress(path.read_bytes(), compression))
    return dest


async def untar_floor(
    instance: Instance, tars: list[Path], wal_copy: Path, work: Path, target: datetime
) -> float:
    """The physical floor of a restore: GNU tar extracts the plain base backup, PostgreSQL
    replays from a local WAL copy (``cp``) to ``target`` and promotes; seconds until
    ``pg_is_in_recovery()`` is false."""
    root = work / "floor-restore"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    chown_tree(root, instance.user)
    chown_tree(wal_copy, instance.user)
    server = PostgresServer(
        binaries=instance.server.binaries,
        data_dir=root / "data",
        port=pick_port(),
        password="x",
        user=instance.user,
        socket_dir=root / "run",
        local_trust=True,
    )
    started = time.monotonic()
    server.data_dir.mkdir(mode=0o700)
    for tar in tars:
        await asyncio.to_thread(
            subprocess.run, ["tar", "-xf", str(tar), "-C", str(server.data_dir)], check=True
        )
    (server.data_dir / "pg_wal").mkdir(mode=0o700, exist_ok=True)
    server.write_conf(
        {
            "restore_command": f"cp {wal_copy}/%f %p",
            "recovery_target_time": target.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
            "recovery_target_action": "promote",
            "archive_mode": "off",
            "port": str(server.port),
        }
    )
    (server.data_dir / "recovery.signal").touch()
    chown_tree(server.data_dir, instance.user)
    await asyncio.to_thread(server.start, wait=False)
    await wait_promoted(server)
    seconds = time.monotonic() - started
    await asyncio.to_thread(server.destroy)
    return seconds


async def wait_promoted(server: PostgresServer, interval: float = 0.05) -> None:
    """Return once ``server`` answers and is out of recovery (promoted), polling every
    ``interval`` seconds; refused connections while it starts are retried."""
    while True:
        try:
            with psycopg.connect(server.admin_conninfo(), connect_timeout=2) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row and not row[0]:
                    return
        except psycopg.OperationalError:
            pass
        await asyncio.sleep(interval)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its private key (PEM, EC P-256, valid one day),
    generated with ``openssl`` into ``folder``: what an S3 server on loopback needs to
    serve the clients that speak S3 only over TLS (pgBackRest)."""
    folder.mkdir(parents=True, exist_ok=True)
    certificate, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(certificate),
        ],
        check=True,
        capture_output=True,
    )
    return certificate, key


def pgbackrest_s3_repository(url: str, credentials: dict[str, str], bucket: str) -> str:
    """pgBackRest's ``[global]`` lines for repository 1 in ``bucket`` of the S3 server at
    ``url`` (https, loopback, self-signed: TLS is not verified), path-style. Upload chunks
    of 32 MiB: a WAL segment goes in one PUT (pgBackRest's default of 5 MiB makes it a
    multipart upload of three requests, which costs it and the server more)."""
    parsed = urlsplit(url)
    if parsed.scheme != "https" or not parsed.hostname or not parsed.port:
        raise SystemExit(f"pgBackRest needs an https URL with a port, not {url!r}")
    return (
        "repo1-type=s3\n"
        "repo1-path=/pgbackrest\n"
        f"repo1-s3-bucket={bucket}\n"
        f"repo1-s3-endpoint={parsed.hostname}\n"
        f"repo1-storage-port={parsed.port}\n"
        f"repo1-s3-region={REGION}\n"
        f"repo1-s3-key={credentials[ACCESS_KEY]}\n"
        f"repo1-s3-key-secret={credentials[SECRET_KEY]}\n"
        "repo1-s3-uri-style=path\n"
        "repo1-storage-verify-tls=n\n"
        "repo1-storage-upload-chunk-size=32MiB\n"
    )
