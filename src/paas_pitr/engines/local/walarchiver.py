"""A long-running WAL archiver for one instance, built on barman's cloud library.

    python -m paas_pitr.engines.local.walarchiver --socket PATH --pgdata DIR \\
        [--endpoint-url URL] [--compression ALGO] [--jobs N] DESTINATION SERVER

``archive_command`` hands the segment's path to this process and waits for the answer
``stored``: over loopback TCP from shell builtins alone (bash's ``/dev/tcp``, no process
started per segment: see :func:`ticket_path`), or over the unix socket
(:mod:`.archive_client`, for Python callers). Meanwhile this process reads
ahead: every complete segment PostgreSQL has marked ``pg_wal/archive_status/<name>.ready``
is uploaded, up to ``jobs`` at a time, with one S3 client kept for the life of the process.
When PostgreSQL asks for a segment already stored, the answer is immediate.

Why: barman-cloud-wal-archive starts a Python interpreter and boto3 for every segment, one
after another (~0.5 s each on a 2-core machine), which caps archiving at ~2 segments/s.

Safety is that of ``archive_command``: ``stored`` is only ever answered once the object is
in the bucket (barman's key layout and compression, as barman-cloud-wal-archive writes
it). A segment read ahead is uploaded only if its ``.ready`` file still exists once it has
been read in full: PostgreSQL recycles a segment file (renames it and writes over it) only
after archive_command reported it, so a segment read while ``.ready`` still exists is
exactly the segment. If this process dies, or hangs past the client's reply bound, the
client reports "unavailable" and the script falls back to barman-cloud-wal-archive (or
fails, and PostgreSQL retries). ``ping`` on the unix socket is answered ``pong``: the
supervisor's probe, which kills and replaces a process that stopped answering.

The process exits when its parent (the service that supervises it) goes away, so a killed
service leaves no archiver behind; the next one starts its own. Credentials come from the
environment (``AWS_*``), never from the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hmac
import io
import ipaddress
import logging
import mmap
import os
import re
import secrets
import signal
import socketserver
import sys
import threading
import time
import urllib.parse
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

log = logging.getLogger("paas_pitr.walarchiver")

# A segment name: timeline, log, segment, 8 hex digits each.
_SEGMENT_LEN = 24
_HEX = frozenset("0123456789ABCDEF")
# Names remembered as stored (read ahead, not yet asked for); older ones are forgotten,
# which at worst costs one more upload of the same bytes.
_REMEMBERED = 8192
# How often the read-ahead looks for new .ready files when nothing asks.
_SCAN_SECONDS = 0.2
# A request line is "archive [<token>] <absolute path>\n".
_MAX_LINE = 4096
# How long a client may take to send its request line.
_REQUEST_SECONDS = 30.0


def ticket_path(socket_path: Path) -> Path:
    """Where the archiver listening on ``socket_path`` keeps its TCP :class:`Ticket`: one
    line, ``PORT REQUEST_TOKEN REPLY_TOKEN``. A TCP client sends
    ``archive REQUEST_TOKEN ABSOLUTE_PATH`` and the archiver answers ``stored REPLY_TOKEN``
    once the segment is in the bucket, or ``error MESSAGE``, on one line each."""
    return socket_path.with_name(socket_path.name + ".tcp")


def is_segment(name: str) -> bool:
    return len(name) == _SEGMENT_LEN and set(name) <= _HEX


def unsigned_payload_is_safe(endpoint: str) -> bool:
    """Whether ``endpoint`` is plain HTTP to this machine (the embedded S3 server): no
    network between the archiver and the server, so nothing to sign the body against.
    Over HTTPS botocore already sends checksummed bodies unsigned."""
    parsed = urllib.parse.urlsplit(endpoint)
    if parsed.scheme != "http" or not parsed.hostname:
        return False
    if parsed.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parsed.hostname).is_loopback
    except ValueError:
        return False


class SegmentGone(Exception):
    """A segment read ahead was archived by someone else meanwhile: nothing uploaded."""


class SegmentStore(Protocol):
    """Where :class:`Archiver` stores segments: :class:`Uploader`, or a fake in tests."""

    def read(self, handle: BinaryIO) -> BinaryIO: ...

    def store(self, path: str, body: BinaryIO) -> None: ...


class KeyedSegmentStore(SegmentStore, Protocol):
    """A :class:`SegmentStore` that says where in the server's ``wals/`` a file goes."""

    def key_in_wals(self, path: str) -> tuple[str, str]: ...


class Uploader:
    """Puts one WAL file where barman-cloud-wal-archive would, with its compression."""

    def __init__(
        self, destination: str, server: str, endpoint: str | None, compression: str | None
    ):
        # barman's own argument parser and factory: the same defaults (timeouts, region,
        # addressing) as barman-cloud-wal-archive with the same options.
        from barman.clients import cloud_walarchive  # type: ignore[import-untyped]
        from barman.cloud_providers import get_cloud_interface  # type: ignore[import-untyped]

        args = [*(["--endpoint-url", endpoint] if endpoint else [])]
        if compression:
            args.append(f"--{compression}")
        config = cloud_walarchive.parse_arguments([*args, destination, server])
        self.interface = get_cloud_interface(config)
        if endpoint and unsigned_payload_is_safe(endpoint):
            self._skip_payload_hash()
        self.naming = cloud_walarchive.CloudWalUploader(
            cloud_interface=self.interface,
            server_name=server,
            compression=config.compression,
            compression_level=config.compression_level,
        )
        self.server = server

    def _skip_payload_hash(self) -> None:
        """Over plain HTTP botocore hashes every body with SHA-256 for the signature
        (~10 ms of CPU per 16 MiB segment here) and the server may hash it again; over
        loopback the bytes cannot be altered on the way, so the payload goes unsigned
        (the request itself stays signed). barman may rebuild its client after an error:
        then uploads are signed again, nothing else changes."""
        import boto3
        from botocore.config import Config

        client = self.interface.s3.meta.client
        current = client.meta.config
        s3_options = dict(current.s3 or {})
        s3_options["payload_signing_enabled"] = False
        self.interface.s3 = boto3.Session(profile_name=self.interface.profile_name).resource(
            "s3",
            endpoint_url=self.interface.endpoint_url,
            region_name=client.meta.region_name,
            config=current.merge(Config(s3=s3_options)),
        )

    def key(self, path: str) -> str:
        return os.path.join(self.interface.path, self.server, "wals", *self.key_in_wals(path))

    def key_in_wals(self, path: str) -> tuple[str, str]:
        """Where the WAL file at ``path`` goes in the server's ``wals/``: (its folder, its
        object name). The folder is empty for a file kept at the top (a history file)."""
        from barman.xlog import hash_dir  # type: ignore[import-untyped]

        return hash_dir(path), self.naming.retrieve_wal_name(path)

    def read(self, handle: BinaryIO) -> BinaryIO:
        """The body to store for the WAL file open in ``handle``, read to its end: its bytes
        compressed as barman-cloud-wal-archive would (barman's compressor, fed from the
        file: no copy of the whole segment in memory first), or its bytes."""
        if not self.naming.compression:
            return io.BytesIO(handle.read())
        if self.naming.compression == "snappy":
            # The same bytes as barman's snappy (the framing format, one stream), in one
            # call that releases the GIL: the upload threads then compress on every core
            # (barman's streams 64 KiB pieces through Python and kept the archiver at one).
            import cramjam

            return io.BytesIO(cramjam.snappy.compress(handle.read()))
        from barman.clients.cloud_compression import compress  # type: ignore[import-untyped]

        body: BinaryIO = compress(handle, self.naming.compression, self.naming.compression_level)
        return body

    def store(self, path: str, body: BinaryIO) -> None:
        """Put ``body`` (from :meth:`read`) under the key of the WAL file at ``path``."""
        with contextlib.closing(body):
            self.interface.upload_fileobj(fileobj=body, key=self.key(path))

    def upload(self, path: str, data: bytes) -> None:
        """Store the WAL file at ``path`` whose bytes are ``data``."""
        self.store(path, self.read(io.BytesIO(data)))


# Direct I/O writes whole blocks of this size (a multiple of any device's logical block).
_DIRECT_BLOCK = 4096
_SEGMENT_BYTES = 16 * 1024 * 1024
# rclone's prefix for an upload under way: hidden from S3 listings, and removed when the
# embedded S3 server starts (a write cut by a crash leaves nothing visible behind).
SERVER_TEMPORARY_PREFIX = ".rclone_temp_put_"
# A temporary file of FolderStore: the prefix, the object's name, 16 hex digits.
_LEFTOVER = re.compile(re.escape(SERVER_TEMPORARY_PREFIX) + r"[0-9A-Za-z._]+\.[0-9a-f]{16}")


def _is_folder(entry: os.DirEntry[str]) -> bool:
    return entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".")


class FolderStore:
    """Stores segments straight into the folder the embedded S3 server serves the archive's
    ``wals/`` from (given as a descriptor: see ``ArchiverSupervisor``): the object the S3
    server would have written for the same PUT (a plain file at the key's path), without
    HTTP, signing or the server's hashing, which cost as much CPU as compressing a segment.

    A segment is written to a temporary file of the server's hidden prefix (never listed,
    removed at its start), flushed to disk, renamed over the key and the rename flushed:
    ``stored`` is answered only once the object is durable and complete. A folder this
    process may not write into (made over HTTP by the server while no archiver ran) gets
    the segment over HTTP, as does any write that fails."""

    def __init__(self, wals_fd: int, uploader: KeyedSegmentStore) -> None:
        self.wals_fd = wals_fd
        self.uploader = uploader
        self._buffers = threading.local()
        self._durable_folders: set[str] = set()

    def remove_leftovers(self) -> int:
        """Remove the temporary files an earlier archiver of this archive left (killed
        mid-write); the number removed. Only names this class makes (a WAL file's name and
        16 hex digits): the S3 server's own uploads under way are left alone."""
        removed = 0
        for folder_name in ["", *(e.name for e in os.scandir(self.wals_fd) if _is_folder(e))]:
            try:
                folder = self._open(folder_name)
            except OSError:
                continue
            try:
                for entry in os.scandir(folder):
                    if _LEFTOVER.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.name, dir_fd=folder)
                            removed += 1
            finally:
                os.close(folder)
        return removed

    def _open(self, folder_name: str) -> int:
        if not folder_name:
            return os.dup(self.wals_fd)
        return os.open(
            folder_name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=self.wals_fd
        )

    def read(self, handle: BinaryIO) -> BinaryIO:
        return self.uploader.read(handle)

    def store(self, path: str, body: BinaryIO) -> None:
        with contextlib.closing(body):
            data = body.read()
            try:
                self._write(*self.uploader.key_in_wals(path), data)
            except OSError as exc:
                log.warning(
                    "%s: writing into the archive's folder failed (%s); over HTTP",
                    os.path.basename(path),
                    exc,
                )
                self.uploader.store(path, io.BytesIO(data))

    def _write(self, folder_name: str, name: str, data: bytes) -> None:
        if folder_name:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder_name, 0o700, dir_fd=self.wals_fd)
            if folder_name not in self._durable_folders:
                # Made here, by another upload thread not done flushing it, or by the S3
                # server (which never flushes): flushed once before anything in it is
                # reported stored.
                os.fsync(self.wals_fd)
                self._durable_folders.add(folder_name)
        folder = self._open(folder_name)
        try:
            temporary = f"{SERVER_TEMPORARY_PREFIX}{name}.{secrets.token_hex(8)}"
            fd = os.open(
                temporary,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                0o600,
                dir_fd=folder,
            )
            try:
                try:
                    self._write_file(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary, dir_fd=folder)
                raise
            os.fsync(folder)
        finally:
            os.close(folder)

    def _write_file(self, fd: int, data: bytes) -> None:
        """Write ``data`` to the new file ``fd``: its whole blocks with direct I/O when the
        file system allows it (from a page-aligned buffer kept per thread), the rest
        buffered. Copying a segment into the page cache was the largest cost of storing
        one (~37% of the archiver's CPU on a 2-core VM), and an archived segment is
        seldom read again soon: keeping it out of the cache spares the server's."""
        whole = len(data) - len(data) % _DIRECT_BLOCK
        done = 0
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if whole and hasattr(os, "O_DIRECT"):
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
            except OSError:
                whole = 0  # not on this file system: all of it buffered
        if whole:
            buffer = self._aligned_buffer(whole)
            buffer[:whole] = memoryview(data)[:whole]
            view = memoryview(buffer)[:whole]
            try:
                while done < whole:
                    done += os.pwrite(fd, view[done:], done)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                done = 0  # refused after all: all of it buffered
            finally:
                view.release()
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        tail = memoryview(data)
        while done < len(data):
            done += os.pwrite(fd, tail[done:], done)

    def _aligned_buffer(self, size: int) -> mmap.mmap:
        buffer: mmap.mmap | None = getattr(self._buffers, "buffer", None)
        if buffer is None or len(buffer) < size:
            if buffer is not None:
                buffer.close()
            # Anonymous mappings are page-aligned, as direct I/O needs.
            buffer = mmap.mmap(-1, max(size, _SEGMENT_BYTES))
            self._buffers.buffer = buffer
        return buffer


class Archiver:
    """Uploads segments of ``pg_wal``: on request, and ahead of requests."""

    def __init__(self, pgdata: Path, uploader: SegmentStore, jobs: int) -> None:
        self.wal_dir = pgdata / "pg_wal"
        self.status_dir = self.wal_dir / "archive_status"
        self.uploader = uploader
        self.jobs = max(1, jobs)
        self.pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="upload")
        self.lock = threading.Lock()
        self.inflight: dict[str, Future[bool]] = {}
        # name -> (inode, mtime, size) of the file uploaded under that name.
        self.stored: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        self.wakeup = threading.Event()
        self.stopping = threading.Event()

    # --- the request PostgreSQL's archive_command makes -----------------------------------

    def archive(self, path: str) -> None:
        """Return once the WAL file at ``path`` (inside ``pg_wal``) is stored; raise with
        the reason otherwise."""
        from barman.xlog import is_any_xlog_file

        name = os.path.basename(path)
        if os.path.realpath(os.path.dirname(path)) != os.path.realpath(self.wal_dir):
            raise ValueError(f"{path} is not in {self.wal_dir}")
        if not is_any_xlog_file(name):
            raise ValueError(f"{name} is an invalid name for a WAL file")
        self.wakeup.set()
        while True:
            identity = _identity(path)
            with self.lock:
                # Stored ahead, and still the very file that was read (not another file
                # under the same name, however that could come about).
                if identity is not None and self.stored.get(name) == identity:
                    return
                self.stored.pop(name, None)
                future = self.inflight.get(name)
                if future is None:
                    future = self._submit(name, ahead=False)
            if future.result():
                return
            # A read-ahead that found the segment gone: PostgreSQL asks for it now, so it
            # is there; upload it on demand.

    def _submit(self, name: str, *, ahead: bool) -> Future[bool]:
        future = self.pool.submit(self._upload, name, ahead)
        self.inflight[name] = future
        return future

    def _upload(self, name: str, ahead: bool) -> bool:
        path = str(self.wal_dir / name)
        try:
            with open(path, "rb") as handle:
                body = self.uploader.read(handle)
                read = os.fstat(handle.fileno())
            if ahead and not (self.status_dir / f"{name}.ready").exists():
                body.close()
                raise SegmentGone(name)
            self.uploader.store(path, body)
        except SegmentGone:
            with self.lock:
                self.inflight.pop(name, None)
            return False
        except FileNotFoundError:
            with self.lock:
                self.inflight.pop(name, None)
            if ahead:
                return False
            raise
        except BaseException:
            with self.lock:
                self.inflight.pop(name, None)
            raise
        with self.lock:
            self.inflight.pop(name, None)
            self.stored[name] = (read.st_ino, read.st_mtime_ns, read.st_size)
            while len(self.stored) > _REMEMBERED:
                self.stored.popitem(last=False)
        log.info("stored %s (%s)", name, "read ahead" if ahead else "on request")
        self.wakeup.set()
        return True

    # --- reading ahead ---------------------------------------------------------------------

    def read_ahead(self) -> None:
        """Keep up to ``jobs`` uploads of ready segments going, oldest first."""
        while not self.stopping.is_set():
            self.wakeup.wait(_SCAN_SECONDS)
            self.wakeup.clear()
            try:
                ready = sorted(
                    entry.name[:-6]
                    for entry in os.scandir(self.status_dir)
                    if entry.name.endswith(".ready") and is_segment(entry.name[:-6])
                )
            except OSError:
                continue
            with self.lock:
                for name in ready:
                    if len(self.inflight) >= self.jobs:
                        break
                    if name not in self.stored and name not in self.inflight:
                        future = self._submit(name, ahead=True)
                        # A failed read-ahead is retried by the next scan or on demand.
                        future.add_done_callback(_quiet)

    def close(self) -> None:
        self.stopping.set()
        self.wakeup.set()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _identity(path: str) -> tuple[int, int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size


def _quiet(future: Future[bool]) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("read-ahead upload failed (retried on demand): %s", exc)


@dataclass(frozen=True)
class Ticket:
    """What a TCP client needs, kept in a 0600 file beside the unix socket: the port, the
    token a request must carry (any local user can connect to a loopback port) and the
    token the answer ``stored`` carries (a process that took the port after this one
    exited cannot pass for the archiver)."""

    port: int
    request: str
    reply: str

    def text(self) -> str:
        return f"{self.port} {self.request} {self.reply}\n"


class _Handler(socketserver.StreamRequestHandler):
    server: _UnixServer | _TcpServer
    # Socket operations only (the request line, the answer), not the upload in between:
    # a client that connects and sends nothing does not hold a thread for ever.
    timeout = _REQUEST_SECONDS

    def handle(self) -> None:
        try:
            raw = self.rfile.readline(_MAX_LINE)
        except OSError:
            return
        line = raw.decode(errors="replace").rstrip("\n")
        verb, _, path = line.partition(" ")
        ticket = self.server.ticket
        if ticket is not None:
            token, _, path = path.partition(" ")
            if not hmac.compare_digest(token.encode(), ticket.request.encode()):
                # Not "error": a client holding a stale ticket whose port another
                # instance's archiver took since falls back instead of failing forever.
                self._reply("refused: not this archiver's token")
                return
        if verb == "ping" and not path:
            # The supervisor's health probe: this process still serves requests.
            self._reply("pong")
            return
        if verb != "archive" or not path:
            self._reply(f"error bad request {verb[:20]!r}")
            return
        try:
            self.server.archiver.archive(path)
        except Exception as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            log.error("archiving %s failed: %s", path, message)
            self._reply(f"error {message}")
            return
        self._reply("stored" if ticket is None else f"stored {ticket.reply}")

    def _reply(self, text: str) -> None:
        with contextlib.suppress(OSError):
            self.wfile.write(text.encode() + b"\n")


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    ticket: Ticket | None = None

    def __init__(self, path: str, archiver: Archiver) -> None:
        self.archiver = archiver
        super().__init__(path, _Handler)


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, archiver: Archiver) -> None:
        self.archiver = archiver
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ticket = Ticket(self.server_address[1], secrets.token_hex(16), secrets.token_hex(16))


def _write_ticket(path: Path, ticket: Ticket) -> None:
    temporary = path.with_name(path.name + f".{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(ticket.text())
    os.replace(temporary, path)


def _remove_own(path: Path, *, inode: int | None = None, text: str | None = None) -> None:
    """Remove ``path`` if it is still ours: a successor may already have replaced it."""
    with contextlib.suppress(OSError):
        if inode is not None and os.stat(path).st_ino != inode:
            return
        if text is not None and path.read_text(encoding="ascii") != text:
            return
        path.unlink()


def serve(socket_path: Path, archiver: Archiver, parent: int | None = None) -> None:
    """Answer requests on ``socket_path`` until the parent process ``parent`` is gone."""
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    temporary = socket_path.with_name(socket_path.name + f".{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    server = _UnixServer(str(temporary), archiver)
    os.chmod(temporary, 0o600)
    # Bound under a temporary name, then renamed: a client never connects to a socket that
    # is not yet listening. Likewise the ticket is written once its port listens.
    os.replace(temporary, socket_path)
    bound = os.stat(socket_path).st_ino
    tcp = _TcpServer(archiver)
    ticket_file, ticket_text = ticket_path(socket_path), tcp.ticket.text()
    _write_ticket(ticket_file, tcp.ticket)
    threading.Thread(target=archiver.read_ahead, name="read-ahead", daemon=True).start()
    threading.Thread(target=server.serve_forever, name="serve", daemon=True).start()
    threading.Thread(target=tcp.serve_forever, name="serve-tcp", daemon=True).start()
    try:
        while parent is None or os.getppid() == parent:
            time.sleep(0.5)
    finally:
        # First what a client finds: with the socket and ticket gone, archive_command falls
        # back at once instead of connecting to a process on its way out.
        _remove_own(socket_path, inode=bound)
        _remove_own(ticket_file, text=ticket_text)
        archiver.close()
        server.server_close()
        tcp.server_close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="walarchiver")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--pgdata", required=True, type=Path)
    parser.add_argument("--endpoint-url")
    parser.add_argument("--compression")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument(
        "--wals-fd", type=int, help="a descriptor of the archive's wals/ folder to write into"
    )
    parser.add_argument("--parent", type=int, help="exit when this process is gone")
    parser.add_argument("destination")
    parser.add_argument("server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Stopped by its supervisor: leave through serve()'s cleanup (socket and ticket).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uploader = Uploader(args.destination, args.server, args.endpoint_url, args.compression)
    store: SegmentStore = uploader
    if args.wals_fd is not None:
        folder_store = FolderStore(args.wals_fd, uploader)
        with contextlib.suppress(OSError):
            if removed := folder_store.remove_leftovers():
                log.info("removed %d temporary files an earlier archiver left", removed)
        store = folder_store
    status = 0
    try:
        serve(args.socket, Archiver(args.pgdata, store, args.jobs), args.parent)
    except SystemExit:
        pass  # SIGTERM
    except Exception:
        log.exception("the WAL archiver stopped on an error")
        status = 1
    # Without waiting for uploads under way (an interpreter's exit joins its worker
    # threads): their requests' connections close, and their clients fall back.
    logging.shutdown()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
