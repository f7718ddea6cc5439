"""One PostgreSQL server process: initdb, start, wait, stop.

PostgreSQL refuses to run as root. When the control plane runs as root, servers run as an
unprivileged OS user (``postgres`` by default) and their data directories belong to it.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from paas_pitr.errors import DatabaseError, InvalidSetting
from paas_pitr.postgres.binaries import PostgresBinaries

DEFAULT_OS_USER = "postgres"
# Every server we run is pinned to UTC whatever the host's zone (initdb copies the
# environment's TZ into postgresql.conf): an instant PostgreSQL or a client of it writes as
# text without an offset (barman's backup times, log lines, a timestamp cast to text) is
# then UTC, never the host's wall-clock time.
UTC_ZONE_SETTINGS = {"timezone": "UTC", "log_timezone": "UTC"}


@dataclass(frozen=True, slots=True)
class OsUser:
    name: str
    uid: int
    gid: int

    @classmethod
    def for_servers(cls, name: str = DEFAULT_OS_USER) -> OsUser | None:
        """The user servers run as: ``None`` (ourselves) unless we are root."""
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise InvalidSetting(
                f"running as root, PostgreSQL servers must run as an unprivileged OS user, but "
                f"user {name!r} does not exist; create it or set PAAS_PITR_PG_OS_USER"
            ) from None
        return cls(name, entry.pw_uid, entry.pw_gid)


# What a child process (a PostgreSQL server, barman-cloud) inherits of our environment: the
# locale, the zone, paths, proxies and CA bundles; never our settings (the token key, S3
# keys, database URLs), which anything running as the server user (an archive_command, a
# tenant's extension) could read in /proc/<pid>/environ.
_INHERITED = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    }
)


def child_environment() -> dict[str, str]:
    """The part of our environment a child process may see (see ``_INHERITED``)."""
    return {k: v for k, v in os.environ.items() if k in _INHERITED or k.startswith("LC_")}


def chown_tree(path: Path, user: OsUser | None) -> None:
    if user is None:
        return
    os.lchown(path, user.uid, user.gid)
    for root, dirs, files in os.walk(path):
        os.chown(root, user.uid, user.gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), user.uid, user.gid)


def make_traversable(path: Path) -> None:
    """Let the server user reach ``path`` (o+x on it and its parents, never read)."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & 0o001:
            os.chmod(directory, mode | 0o001)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(low: int = 20000, high: int = 32000, avoid: set[int] | None = None) -> int:
    """A free port below the ephemeral range (a client socket cannot steal it meanwhile)."""
    avoid = avoid or set()
    for _ in range(200):
        port = low + secrets.randbelow(high - low)
        if port not in avoid and port_is_free(port):
            return port
    raise DatabaseError(f"no free TCP port between {low} and {high}")


@dataclass
class PostgresServer:
    binaries: PostgresBinaries
    data_dir: Path
    port: int
    password: str
    user: OsUser | None = None
    superuser: str = "postgres"
    environment: dict[str, str] = field(default_factory=dict)
    socket_dir: Path | None = None
    """Unix socket directory (trusted local connections); ``None``: TCP only."""
    local_trust: bool = False

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def admin_conninfo(self, database: str = "postgres") -> str:
        """Over the trusted unix socket when there is one (no password needed)."""
        if self.socket_dir is None:
            return self.dsn(database)
        return f"host={self.socket_dir} port={self.port} user={self.superuser} dbname={database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.superuser}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(
        self, args: list[str], *, timeout: float, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**child_environment(), **self.environment, **(env or {})}
        if self.user is not None:
            # The server user cannot read root's home or cwd; start it somewhere it can.
            full_env["HOME"] = str(self.data_dir.parent)
        try:
            return subprocess.run(
                args,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=full_env,
                cwd=str(self.data_dir.parent),
                user=self.user.uid if self.user else None,
                group=self.user.gid if self.user else None,
                extra_groups=[] if self.user else None,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DatabaseError(f"{Path(args[0]).name} timed out after {timeout:.0f}s") from exc
        except OSError as exc:
            raise DatabaseError(f"cannot run {args[0]}: {exc}") from exc

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def initdb(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            make_traversable(self.data_dir.parent)
            os.chown(self.data_dir.parent, self.user.uid, self.user.gid)
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pw"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        os.chmod(pwfile, 0o600)
        chown_tree(pwfile, self.user)
        try:
            result = self._run(
                [
                    self.binaries.tool("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.superuser,
                    "--auth-host=scram-sha-256",
                    "--auth-local=" + ("trust" if self.local_trust else "scram-sha-256"),
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                timeout=180,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise DatabaseError(f"initdb failed: {result.stderr.strip()[-2000:]}")

    def write_conf(self, settings: dict[str, str], filename: str = "paas-pitr.conf") -> None:
        """Our settings live in their own file, included last, so they always win."""
        lines = [f"{key} = '{value}'" for key, value in settings.items()]
        conf = self.data_dir / filename
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        main = self.data_dir / "postgresql.conf"
        include = f"include_if_exists = '{filename}'"
        text = main.read_text(encoding="utf-8")
        if include not in text:
            main.write_text(text.rstrip("\n") + "\n" + include + "\n", encoding="utf-8")
        chown_tree(conf, self.user)

    def is_running(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    def start(self, *, timeout: float = 60, wait: bool = True) -> None:
        if self.is_running():
            return
        if self.socket_dir is not None:
            self.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            chown_tree(self.socket_dir, self.user)
        sockets = f"'{self.socket_dir}'" if self.socket_dir else "''"
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sockets}"
        )
        args = [
            self.binaries.tool("pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            "-t",
            str(int(timeout)),
        ]
        args.append("-w" if wait else "-W")
        args.append("start")
        if self.user is not None and not self.log_file.exists():
            # The server log can hold rows (in error messages): its user alone reads it.
            self.log_file.touch(mode=0o600)
            chown_tree(self.log_file, self.user)
        result = self._run(args, timeout=timeout + 10)
        if result.returncode != 0:
            raise DatabaseError(
                f"PostgreSQL did not start: {result.stderr.strip()[-500:]}; "
                f"log tail: {self.log_tail()}"
            )

    def stop(self, *, mode: str = "fast", timeout: float = 60) -> None:
        if not self.is_running():
            return
        result = self._run(
            [
                self.binaries.tool("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                mode,
                "-t",
                str(int(timeout)),
                "-w",
                "stop",
            ],
            timeout=timeout + 10,
        )
        if result.returncode != 0 and self.is_running():
            raise DatabaseError(f"PostgreSQL did not stop: {result.stderr.strip()[-500:]}")

    def kill(self) -> None:
        """SIGKILL the postmaster (tests of crash behaviour)."""
        pid = self.postmaster_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.is_running():
                time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)
