"""Helper sessions a killed service left are reaped; nothing else is touched."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from paas_pitr.children import ChildRegistry, preexec
from paas_pitr.crashpoints import ENVIRONMENT_VARIABLE, armed, crash_point
from paas_pitr.errors import InvalidSetting


def alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rfind(")") + 2 :].split()[0] != "Z"


def test_a_recorded_session_is_killed_whole(tmp_path: Path) -> None:
    registry = ChildRegistry(tmp_path / "children")
    # A helper that forked a worker of its own, as barman-cloud-backup does.
    helper = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; wait"],
        stdout=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=preexec(),
    )
    assert helper.stdout is not None
    worker = int(helper.stdout.readline())
    helper.stdout.close()
    registry.started(helper.pid)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        killed = registry.reap()
        helper.wait(10)
        deadline = time.monotonic() + 10
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(killed) == sorted([helper.pid, worker])
        assert not alive(worker)
        assert alive(bystander.pid)
        assert list((tmp_path / "children").iterdir()) == []
    finally:
        bystander.kill()
        bystander.wait()


def test_a_session_id_now_someone_elses_is_left_alone(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        folder = tmp_path / "children"
        folder.mkdir()
        # Recorded with another start time: the pid was reused since.
        (folder / str(other.pid)).write_text("1", encoding="ascii")
        assert ChildRegistry(folder).reap() == []
        assert alive(other.pid)
    finally:
        other.kill()
        other.wait()


def test_an_ended_helper_leaves_no_record(tmp_path: Path) -> None:
    registry = ChildRegistry(tmp_path / "children")
    helper = subprocess.Popen(["true"], start_new_session=True)
    registry.started(helper.pid)
    helper.wait()
    registry.ended(helper.pid)
    assert registry.reap() == []


def test_an_unknown_crash_point_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "backup.nowhere")
    with pytest.raises(InvalidSetting, match="names no crash point"):
        armed()
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "backup.requested")
    assert armed() == "backup.requested"
    crash_point("backup.retention")  # another point: this process lives on
