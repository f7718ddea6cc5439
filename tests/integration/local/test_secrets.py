"""Secrets of the local engine never stand on a command line, where any local user reads
them (ps, /proc/<pid>/cmdline)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.local.conftest import LocalApi


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
