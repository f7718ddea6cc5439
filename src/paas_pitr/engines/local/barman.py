"""Running barman-cloud: as the server's OS user, credentials in the environment only.

Credentials never appear on a command line (they would end up in ``ps`` and the server
log); the scripts PostgreSQL calls source them from a 0600 file of the server user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from paas_pitr.catalog import parse_backup_info
from paas_pitr.children import ChildRegistry, preexec
from paas_pitr.engines.local import archive_client, basebackup, walarchiver, walfetch
from paas_pitr.engines.local.archive import ArchiveConfig
from paas_pitr.errors import InvalidSetting, ObjectStoreError
from paas_pitr.postgres.server import OsUser, child_environment
from paas_pitr.s3 import cached_client

log = logging.getLogger(__name__)

# archive_command's interpreter: bash for its /dev/tcp (see Barman.wal_archive_script).
BASH = shutil.which("bash") or "/bin/bash"

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
# TZ: barman names a backup after its local wall-clock time and takes an offset-less time
# as local; in UTC (as in CNPG's containers) neither depends on the host's zone, and backup
# ids keep their order across a daylight-saving change.
BASE_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
    "TZ": "UTC",
}


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_text(self) -> str:
        lines = [line for line in (self.stderr or self.stdout).strip().splitlines() if line]
        return " | ".join(lines[-5:]) or f"exit status {self.returncode}"


def backup_info_entry(text: str, backup_id: str) -> dict[str, Any]:
    """A ``backup.info`` as barman-cloud-backup-list's JSON gives its entry: its lines,
    with ``begin_time_iso`` / ``end_time_iso`` from the offset-carrying times."""
    fields: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = None if value.strip() == "None" else value.strip()
    info = parse_backup_info(text, backup_id)
    fields["backup_id"] = info.backup_id
    for field, moment in (("begin", info.begin_time), ("end", info.end_time)):
        fields[f"{field}_time_iso"] = moment.isoformat() if moment else None
    return fields


def barman_bin_dir() -> Path:
    return Path(sys.executable).parent


def barman_time(entry: Mapping[str, Any], field: Literal["begin", "end"]) -> datetime | None:
    """When a backup of barman-cloud-backup-list's JSON began or ended, in UTC.

    Only ``begin_time_iso`` / ``end_time_iso`` are read: barman writes them from
    PostgreSQL's ``timestamptz``, with its offset. The plain ``begin_time`` / ``end_time``
    are ``ctime()`` texts: wall-clock time in the database session's zone with no offset,
    so reading them as UTC shifted every backup by the host's offset, and a restore picked
    a backup taken after its target.

    A missing field or one without an offset gives ``None`` and a warning, not an
    exception: every caller already treats a backup without a time as unusable for a
    time-based choice (never picked for a target, left out of the window), which keeps the
    other backups of the catalog usable, whereas raising would make one odd entry block
    every listing and restore of its cluster.
    """
    key = f"{field}_time_iso"
    value = entry.get(key)
    backup_id = entry.get("backup_id")
    if not isinstance(value, str) or not value:
        if entry.get(f"{field}_time"):
            log.warning(
                "backup %s has no %s (only text without a UTC offset); its %s time is unknown",
                backup_id,
                key,
                field,
            )
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        log.warning("backup %s: %s %r is not ISO 8601; ignored", backup_id, key, value)
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        log.warning(
            "backup %s: %s %r has no UTC offset; not taken as UTC, ignored", backup_id, key, value
        )
        return None
    return parsed.astimezone(UTC)


class Barman:
    def __init__(
        self,
        user: OsUser | None,
        bin_dir: Path | None = None,
        *,
        children: ChildRegistry | None = None,
    ) -> None:
        self.user = user
        self.bin_dir = bin_dir or barman_bin_dir()
        # Where each running barman-cloud process's session is recorded, for the next start
        # to reap what a killed service left (see paas_pitr.children).
        self.children = children

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    async def check_runnable(self) -> None:
        """The server user must be able to run what archive_command calls: the virtualenv's
        interpreter and scripts, under a directory that user can traverse. Refused at start
        (``InvalidSetting``), rather than found out by a failing WAL archive."""
        tool = self.tool("barman-cloud-wal-archive")
        result = await self.run([tool, "--version"], {}, timeout=60)
        if result.returncode != 0:
            who = self.user.name if self.user else "this user"
            raise InvalidSetting(
                f"{tool} cannot be run by {who} ({result.error_text}): build the virtualenv "
                "from a system-wide Python in a directory that user can traverse "
                "(`make` does when /usr/bin/python3 is 3.11 or newer)"
            )

    def environment(self, credentials: dict[str, str]) -> dict[str, str]:
        env = child_environment()
        env.update(BASE_ENV)
        env.update(credentials)
        return env

    def backup_producer(self) -> list[str]:
        """The command of :mod:`.basebackup`, which takes barman-cloud-backup's arguments
        and writes its objects, several workers at once. By path, isolated (``-I``):
        importing it as a module of the package would load the whole engine first."""
        return [sys.executable, "-I", basebackup.__file__]

    def endpoint_args(self, config: ArchiveConfig) -> list[str]:
        return ["--endpoint-url", config.endpoint_url] if config.endpoint_url else []

    async def run(
        self,
        args: list[str],
        credentials: dict[str, str],
        *,
        timeout: float,
        cwd: Path | None = None,
        started: Callable[[], None] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> CommandResult:
        """Run a barman-cloud tool to its end (``timeout`` seconds at most: then its whole
        session is killed and the result says so, exit status 124). ``started`` is called
        once the process runs; ``pass_fds``: descriptors the process inherits."""
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
            # Dies with the service; what it forks is reaped by the next start.
            preexec_fn=preexec(),
            pass_fds=pass_fds,
        )
        if self.children is not None:
            self.children.started(process.pid)
        try:
            if started is not None:
                started()
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
        finally:
            if self.children is not None:
                self.children.ended(process.pid)
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

    async def catalog_status(
        self, config: ArchiveConfig, endpoint: str, credentials: dict[str, str], backup_id: str
    ) -> str | None:
        """The status barman recorded for ``backup_id`` (``DONE``, ``FAILED``...), read
        from its ``<server>/base/<id>/backup.info`` at ``endpoint`` with one request;
        ``None`` when there is no such backup. Raises ``ObjectStoreError`` when the store
        cannot be read."""
        return await asyncio.to_thread(
            self._catalog_status, config, endpoint, credentials, backup_id
        )

    def _catalog_status(
        self, config: ArchiveConfig, endpoint: str, credentials: dict[str, str], backup_id: str
    ) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _ = config.bucket_and_prefix
        key = f"{config.server_prefix}base/{backup_id}/backup.info"
        client = cached_client(endpoint, credentials)
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise ObjectStoreError(f"cannot read {key!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise ObjectStoreError(f"cannot read {key!r}: {exc}") from exc
        return parse_backup_info(body.decode("utf-8", errors="replace"), backup_id).status

    async def catalog_entry(
        self, config: ArchiveConfig, endpoint: str, credentials: dict[str, str], name: str
    ) -> dict[str, Any] | None:
        """The catalog entry of the newest base backup named ``name``, in
        barman-cloud-backup-list's JSON shape (the fields a Backup's status takes), read
        from the bucket: one listing of ``<server>/base/`` and the ``backup.info`` of the
        newest backups until one has that name. ``None`` when none has it. Raises
        ``ObjectStoreError`` when the store cannot be read.

        Why not barman-cloud-backup-list: a Python process that reads every backup's
        ``backup.info``, 1-2 s on a loaded machine at the end of every base backup."""
        return await asyncio.to_thread(self._catalog_entry, config, endpoint, credentials, name)

    def _catalog_entry(
        self, config: ArchiveConfig, endpoint: str, credentials: dict[str, str], name: str
    ) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _ = config.bucket_and_prefix
        base = f"{config.server_prefix}base/"
        client = cached_client(endpoint, credentials)
        try:
            ids = [
                str(common["Prefix"])[len(base) :].strip("/")
                for page in client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=base, Delimiter="/"
                )
                for common in page.get("CommonPrefixes", [])
            ]
            # Backup ids are timestamps: the backup just taken is among the newest.
            for backup_id in sorted(ids, reverse=True):
                key = f"{base}{backup_id}/backup.info"
                try:
                    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                except ClientError as exc:
                    if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                        continue  # a backup being written: no backup.info yet
                    raise
                entry = backup_info_entry(body.decode("utf-8", errors="replace"), backup_id)
                if entry.get("backup_name") == name:
                    return entry
        except (ClientError, BotoCoreError) as exc:
            raise ObjectStoreError(f"cannot read the catalog under {base!r}: {exc}") from exc
        return None

    def wal_archive_script(
        self,
        config: ArchiveConfig,
        env_file: Path,
        error_file: Path,
        archiver: Path,
        *,
        reply_seconds: float = archive_client.TIMEOUT_SECONDS,
    ) -> str:
        """archive_command: hand the segment to the instance's WAL archiver
        (:mod:`.walarchiver`, listening on ``archiver`` and on the loopback port its
        ticket names) and wait until it is stored; when no archiver answers, store it with
        barman-cloud-wal-archive. Either way the script exits 0 only once the segment is in
        the bucket; a failure's reason goes to stderr (PostgreSQL's log) and ``error_file``.
        An archiver that gives no answer within ``reply_seconds`` (hung: stopped, wedged)
        counts as down: the segment is stored with barman-cloud-wal-archive.

        bash, and builtins alone on the archiver's path: PostgreSQL runs archive_command for
        one segment after another, and a Python client's start (~10 ms of CPU, ~40 ms of
        wall time on a loaded 2-core machine) was most of the time between two segments.
        """
        compression = _WAL_COMPRESSION_FLAGS.get(config.wal_compression or "", "")
        command = [
            self.tool("barman-cloud-wal-archive"),
            *([compression] if compression else []),
            *self.endpoint_args(config),
            config.destination,
            config.server_name,
        ]
        q = shlex.quote
        fallback = " ".join(q(part) for part in command)
        errors = q(str(error_file))
        timeout = f"{reply_seconds:g}"
        return f"""#!{BASH}
# Written by paas-pitr: archives one WAL segment through the instance's WAL archiver, or
# with barman-cloud-wal-archive when the archiver is down. Credentials come from
# {env_file.name}, never argv.
# A peer that closes early must not kill the script with SIGPIPE (PostgreSQL's archiver
# would then exit): a failed write falls back instead.
trap '' PIPE
wal="$1"
case "$wal" in /*) ;; *) wal="$PWD/$wal" ;; esac
if {{ read -r port request reply < {q(str(walarchiver.ticket_path(archiver)))}; }} 2>/dev/null &&
    {{ exec 3<>"/dev/tcp/127.0.0.1/$port"; }} 2>/dev/null; then
    if printf 'archive %s %s\\n' "$request" "$wal" >&3 2>/dev/null; then
        answer=
        read -r -t {timeout} answer <&3
        rc=$?
        exec 3<&-
        if [ "$rc" -gt 128 ]; then
            printf 'WAL archiver: no answer within %ss; archiving with barman-cloud-wal-archive\n' \
                {timeout} >&2
        fi
        if [ "$rc" -eq 0 ] && [ "$answer" = "stored $reply" ]; then
            exit 0
        fi
        if [ "$rc" -eq 0 ] && [ "${{answer#error }}" != "$answer" ]; then
            printf '%s\\n' "${{answer#error }}" > {errors}
            printf 'WAL archiver: %s\\n' "${{answer#error }}" >&2
            exit 1
        fi
    fi
    exec 3<&-
fi
# No archiver, no answer in time, or the connection broke before an answer: nothing was
# reported stored.
set -a
. {q(str(env_file))}
set +a
out=$({fallback} "$wal" 2>&1)
rc=$?
if [ "$rc" -ne 0 ]; then
    printf '%s\\n' "$out" | tail -n 5 > {errors}
    printf '%s\\n' "$out" | tail -n 5 >&2
fi
exit "$rc"
"""

    def wal_restore_script(
        self,
        config: ArchiveConfig,
        env_file: Path,
        error_file: Path,
        spool: Path,
        pgdata: Path,
        parallel: int,
    ) -> str:
        """restore_command: serve from the prefetch spool, else fetch with
        barman-cloud-wal-restore. One prefetcher (:mod:`.walfetch`: one process for the
        whole recovery, one S3 client, ``parallel`` downloads: what CNPG's
        ``wal.maxParallel`` means on restore) keeps the next ``8 * parallel`` segments
        coming; a history file the archive does not hold is answered at once.

        One barman-cloud-wal-restore process per segment costs ~0.5 s (a Python interpreter
        and boto3 started each time), which made replay ~5x slower than a local copy.
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
        depth = parallel * 8
        segment = "[0-9A-F]" * 24
        return f"""#!/bin/sh
# Written by paas-pitr: fetches one WAL file from the source's archive (restore_command),
# with one prefetcher keeping the next {depth} segments coming ({parallel} downloads at a
# time). Credentials come from {env_file.name}.
set -a
. {q(str(env_file))}
set +a
spool={q(str(spool))}
lock="$spool/.prefetcher"
want="$1"
dest="$2"
mkdir -p "$spool"
case "$want" in
    {segment})
        # Where replay is: the prefetcher's window starts after it.
        # One line per request (the name and this shell's pid): asked again, a file
        # consumed already is fetched again.
        token="$want $$"
        printf '%s\\n' "$token" > "$spool/.wanted.$$"
        mv -f "$spool/.wanted.$$" "$spool/.wanted"
        ;;
esac
# One prefetcher for the whole recovery; a lock whose process is gone is taken over.
if [ -d "$lock" ]; then
    pid=$(cat "$lock/pid" 2>/dev/null)
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
        rm -rf "$lock"
    fi
fi
if mkdir "$lock" 2>/dev/null; then
    (
        export PAAS_PITR_WALFETCH_ENDPOINT={q(config.endpoint_url or "")}
        exec {q(sys.executable)} -I {q(walfetch.__file__)} {q(config.destination)} \\
            {q(config.server_name)} "$spool" {q(str(pgdata))} {depth} {parallel}
    ) >/dev/null 2>&1 &
fi
if [ "$want" = "--prefetch" ]; then
    # Called by the engine before the server starts: the prefetcher is then warm (its
    # interpreter and S3 client started, history files listed) by the first request.
    exit 0
fi
case "$want" in
    *.history)
        # Listed by the prefetcher at its start: one that is not listed does not exist.
        # Kept in the spool (copied): PostgreSQL asks for a history file more than once.
        tries=0
        while [ ! -f "$spool/.histories" ] && [ ! -f "$spool/.histories-unknown" ] \\
            && [ -d "$lock" ] && [ "$tries" -lt 200 ]; do
            sleep 0.05
            tries=$((tries + 1))
        done
        if [ -f "$spool/.histories" ]; then
            if ! grep -qx "$want" "$spool/.histories"; then
                exit 1
            fi
            if [ -f "$spool/$want" ] && cp "$spool/$want" "$dest"; then
                exit 0
            fi
        fi
        ;;
    {segment})
        # The prefetcher fetches the asked file first: wait for it rather than fetch it
        # twice, until it is spooled, or neither in flight nor coming (.seen: the
        # prefetcher took this request in hand).
        tries=0
        while [ ! -f "$spool/$want" ] && [ -d "$lock" ] && [ "$tries" -lt 600 ]; do
            if [ ! -d "$spool/.inflight-$want" ] \\
                && [ "$(cat "$spool/.seen" 2>/dev/null)" = "$token" ]; then
                break
            fi
            sleep 0.05
            tries=$((tries + 1))
        done
        if [ -f "$spool/$want" ] && mv "$spool/$want" "$dest"; then
            exit 0
        fi
        # Not in the archive when the prefetcher looked for this very request (at most
        # two seconds ago): the end of the archive. Whatever a validated target needs
        # was archived before the restore began, so this cannot cut a recovery short.
        if [ -e "$spool/.missing-$want" ] \\
            && [ "$(cat "$spool/.seen" 2>/dev/null)" = "$token" ]; then
            printf 'WAL file %s is not in the archive\\n' "$want" > {q(str(error_file))}
            exit 1
        fi
        ;;
esac
out=$({fetch} "$want" "$dest" 2>&1)
rc=$?
if [ "$rc" -ne 0 ]; then
    printf '%s\\n' "$out" | tail -n 5 > {q(str(error_file))}
    exit "$rc"
fi
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
        # Without it a backup waits for a spread checkpoint: minutes
        # (it is spread over checkpoint_completion_target of checkpoint_timeout).
        flags.append("--immediate-checkpoint")
        return flags


def failing_script(message: str, error_file: Path) -> str:
    return f"""#!/bin/sh
# Written by paas-pitr: archiving cannot run: {message}
printf '%s\\n' {shlex.quote(message)} > {shlex.quote(str(error_file))}
exit 1
"""


def env_file_text(credentials: dict[str, str]) -> str:
    lines = [f"{key}={shlex.quote(value)}" for key, value in {**BASE_ENV, **credentials}.items()]
    return "\n".join(lines) + "\n"
