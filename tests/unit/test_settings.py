from __future__ import annotations

import pytest

from paas_pitr.errors import InvalidSetting
from paas_pitr.settings import load_settings


def test_a_backup_schedule_that_is_not_daily_is_an_invalid_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PAAS_PITR_BACKUP_SCHEDULE", "0 2 * * * *")
    with pytest.raises(InvalidSetting) as caught:
        load_settings()
    message = caught.value.message
    assert message.startswith(
        "invalid settings: PAAS_PITR_BACKUP_SCHEDULE: schedule '0 2 * * * *' runs more than "
        "once a day (runs as little as 1h apart; next runs: "
    ), message
    assert "the daily base backup needs exactly one run every 24h" in message


def test_a_daily_backup_schedule_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAAS_PITR_BACKUP_SCHEDULE", " 0 30  2 * * * ")
    assert load_settings().backup_schedule == "0 30 2 * * *"
