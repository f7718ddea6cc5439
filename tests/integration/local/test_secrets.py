"""Secrets of the local engine never stand on a command line, where any local user reads
them (ps, /proc/<pid>/cmdline)."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from paas_pitr.timestamps import format_api_time
from tests.integration.local.conftest import LocalApi
from tests.integration.local.test_pitr import snapshot, switch_wal, written_then_damaged


def command_lines() -> list[bytes]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((entry / "cmdline").read_bytes())
            except OSError:
                continue  # gone meanwhile
    return found


def test_no_secret_in_any_command_line(local_api: LocalApi) -> None:
    addon = local_api.create_addon("pro")
    local_api.wait_backups_completed("app-1", addon["addon_id"])
    s3 = local_api.engine.s3
    assert s3 is not None and s3.running()
    secrets = [
        s3.credentials["AWS_SECRET_ACCESS_KEY"],
        addon["connection"]["password"],
    ]
    lines = command_lines()
    assert any(b"rclone" in line for line in lines)  # the S3 server is there to look at
    for secret in secrets:
        assert not [line for line in lines if secret.encode() in line], secret[:4]


READ_AS_ANOTHER_USER = """
import sys
readable = []
for path in sys.stdin.read().splitlines():
    try:
        with open(path, "rb") as handle:
            handle.read(1)
        readable.append(path)
    except OSError:
        pass
print("\\n".join(readable))
"""


def test_an_unprivileged_local_user_reads_nothing_of_a_tenant(local_api: LocalApi) -> None:
    """Everything under the state directory (WAL and base backups in the embedded S3
    server's folder, the object database, server data and logs, the audit journal, keys) is
    readable by the service's user and, where PostgreSQL needs it, the server user only."""
    if os.geteuid() != 0:
        pytest.skip("dropping to another OS user needs root")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user on this machine")
    addon_id, _, target, expected = written_then_damaged(local_api)
    restore = local_api.restore_when_restorable("app-1", addon_id, format_api_time(target))
    assert snapshot(restore["connection"]["uri"]) == expected
    switch_wal(local_api, addon_id)  # WAL objects in the bucket for sure
    files = [str(p) for p in local_api.settings.state_dir.rglob("*") if p.is_file()]
    assert any("/s3/" in f for f in files) and any(f.endswith(".sqlite3") for f in files)
    result = subprocess.run(
        [sys.executable, "-c", READ_AS_ANOTHER_USER],
        input="\n".join(files),
        capture_output=True,
        text=True,
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        extra_groups=[],
        cwd="/",
        check=True,
    )
    readable = [line for line in result.stdout.splitlines() if line]
    assert readable == [], readable[:10]


def test_no_setting_reaches_a_server_environment(
    local_api: LocalApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anything running as the server user (an archive_command, a tenant's extension) can
    read the servers' /proc/<pid>/environ: none of the service's settings may be there."""
    canary = "canary-" + os.urandom(8).hex()
    monkeypatch.setenv("PAAS_PITR_TOKEN_SECRET", canary)
    monkeypatch.setenv("PAAS_PITR_S3_SECRET_ACCESS_KEY", canary)
    addon = local_api.create_addon("pro")
    local_api.wait_backups_completed("app-1", addon["addon_id"])
    pid = local_api.engine.instances[addon["addon_id"]].server.postmaster_pid()
    assert pid is not None
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"PATH=" in environ  # it has an environment, just not ours
    assert canary.encode() not in environ
    assert b"PAAS_PITR_" not in environ


def test_a_moved_server_gets_a_new_password(local_api: LocalApi) -> None:
    """A stopped addon's port taken meanwhile: the server moves, and the app password
    changes with it, so a client still on the old address hands whoever listens there
    nothing that opens the database."""
    addon = local_api.create_addon("pro")
    addon_id, old = addon["addon_id"], addon["connection"]
    local_api.stop()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", int(old["port"])))
    squatter.listen()
    try:
        local_api.start()
        new = local_api.wait_ready("app-1", addon_id)["connection"]
        assert new["port"] != old["port"] and new["password"] != old["password"]
        with psycopg.connect(new["uri"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        moved_old = old["uri"].replace(f":{old['port']}/", f":{new['port']}/")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(moved_old).close()
    finally:
        squatter.close()
