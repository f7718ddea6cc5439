"""Running barman-cloud: as the server's OS user, credentials in the environment only.

Credentials never appear on a command line (they would end up in ``ps`` and the server
log); the scripts PostgreSQL calls source them from a 0600 file of the server user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from paas_pitr.engines.local.archive import ArchiveConfig
from paas_pitr.errors import ObjectStoreError
from paas_pitr.postgres.server import OsUser

_COMPRESSION_FLAGS = {"gzip": "--gzip", "bzip2": "--bzip2", "snappy": "--snappy", "lz4": "--lz4"}
_WAL_COMPRESSION_FLAGS = {
    "gzip": "--gzip",
    "bzip2": "--bzip2",
    "snappy": "--snappy",
    "lz4": "--lz4",
    "xz": "--xz",
    "zstd": "--zstd",
}
# Non-AWS S3 servers reject the newer default checksum headers (CNPG object_stores docs).
BASE_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
}


class MissingSecret(ObjectStoreError):
    code = "secret_not_found"


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_text(self) -> str:
        lines = [line for line in (self.stderr or self.stdout).strip().splitlines() if line]
        return " | ".join(lines[-5:]) or f"exit status {self.returncode}"


def barman_bin_dir() -> Path:
    return Path(sys.executable).parent


def parse_barman_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    for parser in (datetime.fromisoformat,):
        with contextlib.suppress(ValueError):
            parsed = parser(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    with contextlib.suppress(ValueError):
        # barman's text format, always UTC on the servers it runs on here.
        return datetime.strptime(value + " +0000", "%a %b %d %H:%M:%S %Y %z")
    return None


class Barman:
    def __init__(self, user: OsUser | None, bin_dir: Path | None = None) -> None:
        self.user = user
        self.bin_dir = bin_dir or barman_bin_dir()

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def environment(self, credentials: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(BASE_ENV)
        env.update(credentials)
        return env

    def endpoint_args(self, config: ArchiveConfig) -> list[str]:
        return ["--endpoint-url", config.endpoint_url] if config.endpoint_url else []

    async def run(
        self,
        args: list[str],
        credentials: dict[str, str],
        *,
        timeout: float,
        cwd: Path | None = None,
    ) -> CommandResult:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.environment(credentials),
            cwd=str(cwd) if cwd else None,
            user=self.user.uid if self.user else None,
            group=self.user.gid if self.user else None,
            extra_groups=[] if self.user else None,
            start_new_session=True,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            await process.wait()
            return CommandResult(124, "", f"{Path(args[0]).name} timed out after {timeout:.0f}s")
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            raise
        return CommandResult(
            process.returncode or 0,
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace"),
        )

    async def backup_list(
        self, config: ArchiveConfig, credentials: dict[str, str]
    ) -> list[dict[str, Any]]:
        result = await self.run(
            [
                self.tool("barman-cloud-backup-list"),
                *self.endpoint_args(config),
                "--format",
                "json",
                config.destination,
                config.server_name,
            ],
            credentials,
            timeout=120,
        )
        if result.returncode != 0:
            raise ObjectStoreError(f"barman-cloud-backup-list failed: {result.error_text}")
        try:
            document = json.loads(result.stdout or "{}")
        except ValueError as exc:
            raise ObjectStoreError(f"barman-cloud-backup-list printed no JSON: {exc}") from exc
        backups = document.get("backups_list", [])
        return backups if isinstance(backups, list) else []

    def wal_archive_script(self, config: ArchiveConfig, env_file: Path, error_file: Path) -> str:
        compression = _WAL_COMPRESSION_FLAGS.get(config.wal_compression or "", "")
        command = [
            self.tool("barman-cloud-wal-archive"),
            *([compression] if compression else []),
            *self.endpoint_args(config),
            config.destination,
            config.server_name,
        ]
        return _script(
            "archives one WAL segment",
            env_file,
            " ".join(shlex.quote(part) for part in command) + ' "$1"',
            error_file,
        )

    def wal_restore_script(
        self, config: ArchiveConfig, env_file: Path, error_file: Path, spool: Path, parallel: int
    ) -> str:
        """restore_command: serve from the prefetch spool, else fetch with
        barman-cloud-wal-restore; then keep a prefetcher (``walfetch``, one process, one S3
        client, ``parallel`` downloads: what CNPG's ``wal.maxParallel`` means on restore)
        fetching the following segments.

        One barman-cloud-wal-restore process per segment costs ~0.5 s (LOCAL_PIPELINE.md),
        which made replay ~5x slower than a local copy.
        """
        fetch = " ".join(
            shlex.quote(part)
            for part in [
                self.tool("barman-cloud-wal-restore"),
                *self.endpoint_args(config),
                config.destination,
                config.server_name,
            ]
        )
        q = shlex.quote
        return f"""#!/bin/sh
# Written by paas-pitr: fetches one WAL file from the source's archive (restore_command),
# prefetching the next {parallel * 4} segments with {parallel} parallel downloads.
# Credentials come from {env_file.name}.
set -a
. {q(str(env_file))}
set +a
spool={q(str(spool))}
want="$1"
dest="$2"
mkdir -p "$spool"
# A prefetch of this very file may be under way: wait for it rather than fetch twice.
tries=0
while [ -d "$spool/.inflight-$want" ] && [ "$tries" -lt 600 ]; do
    sleep 0.1
    tries=$((tries + 1))
done
if [ -f "$spool/$want" ] && mv "$spool/$want" "$dest"; then
    :
else
    out=$({fetch} "$want" "$dest" 2>&1)
    rc=$?
    if [ "$rc" -ne 0 ]; then
        printf '%s\\n' "$out" | tail -n 5 > {q(str(error_file))}
        exit "$rc"
    fi
fi
case "$want" in
    [0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F])
        # One prefetcher at a time keeps the next segments coming (lock: a directory).
        if mkdir "$spool/.prefetcher" 2>/dev/null; then
            (
                export PAAS_PITR_WALFETCH_ENDPOINT={q(config.endpoint_url or "")}
                {q(sys.executable)} -m paas_pitr.engines.local.walfetch {q(config.destination)} \\
                    {q(config.server_name)} "$spool" "$want" {parallel * 4} {parallel} \\
                    >/dev/null 2>&1
                rmdir "$spool/.prefetcher"
            ) &
        fi
        ;;
esac
exit 0
"""

    @staticmethod
    def backup_flags(config: ArchiveConfig, compression_default: str | None) -> list[str]:
        flags: list[str] = []
        compression = config.data_compression or compression_default
        if compression in _COMPRESSION_FLAGS:
            flags.append(_COMPRESSION_FLAGS[compression])
        if config.data_jobs:
            flags += ["-J", str(config.data_jobs)]
        # Without it a backup waits for a spread checkpoint: minutes (LOCAL_PIPELINE.md).
        flags.append("--immediate-checkpoint")
        return flags


def _script(purpose: str, env_file: Path, command: str, error_file: Path) -> str:
    return f"""#!/bin/sh
# Written by paas-pitr: {purpose}. Credentials come from {env_file.name}, never argv.
set -a
. {shlex.quote(str(env_file))}
set +a
out=$({command} 2>&1)
rc=$?
if [ "$rc" -ne 0 ]; then
    printf '%s\\n' "$out" | tail -n 5 > {shlex.quote(str(error_file))}
fi
exit "$rc"
"""


def failing_script(message: str, error_file: Path) -> str:
    return f"""#!/bin/sh
# Written by paas-pitr: archiving cannot run: {message}
printf '%s\\n' {shlex.quote(message)} > {shlex.quote(str(error_file))}
exit 1
"""


def env_file_text(credentials: dict[str, str]) -> str:
    lines = [f"{key}={shlex.quote(value)}" for key, value in {**BASE_ENV, **credentials}.items()]
    return "\n".join(lines) + "\n"
