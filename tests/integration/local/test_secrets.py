"""Secrets of the local engine never stand on a command line, where any local user reads
them (ps, /proc/<pid>/cmdline)."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

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
