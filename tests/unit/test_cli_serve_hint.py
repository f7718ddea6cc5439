"""``serve``'s token hint, pasted into another shell, mints a token the server accepts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from paas_pitr.auth import TokenAuthority, load_signing_key
from paas_pitr.cli import token_hint
from paas_pitr.settings import Settings

EXECUTABLE = str(Path(sys.executable).parent / "paas-pitr")


def test_the_hint_works_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state with a space"
    hint = token_hint(state_dir, tmp_path / "default", program=EXECUTABLE)
    assert hint == (f"PAAS_PITR_STATE_DIR='{state_dir}' {EXECUTABLE} token create --tenant acme")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.delenv("PAAS_PITR_STATE_DIR", raising=False)
    monkeypatch.delenv("PAAS_PITR_TOKEN_SECRET", raising=False)
    token = subprocess.run(
        ["/bin/sh", "-c", hint], cwd=elsewhere, capture_output=True, text=True, check=True
    ).stdout.strip()
    authority = TokenAuthority(load_signing_key(Settings(state_dir=state_dir)))
    assert authority.verify(token).tenant == "acme"


def test_the_default_state_directory_is_not_spelled_out(tmp_path: Path) -> None:
    assert token_hint(tmp_path, tmp_path, program="/opt/x y/paas-pitr") == (
        "'/opt/x y/paas-pitr' token create --tenant acme"
    )
