from __future__ import annotations

from pathlib import Path

from paas_pitr.engines.local.intents import Intents


def test_intents_are_recorded_until_done(tmp_path: Path) -> None:
    intents = Intents(tmp_path / "intents")
    assert intents.pending() == {}
    intents.record("retention-db-a", {"cluster": "db-a", "after": "b1"})
    intents.record("retention-db-b", {"cluster": "db-b"})
    intents.record("other-x", {"x": 1})
    # A second record of one key replaces the first.
    intents.record("retention-db-a", {"cluster": "db-a", "after": "b2"})
    assert intents.pending("retention-") == {
        "retention-db-a": {"cluster": "db-a", "after": "b2"},
        "retention-db-b": {"cluster": "db-b"},
    }
    intents.done("retention-db-a")
    intents.done("retention-db-a")  # twice: no error
    assert list(Intents(tmp_path / "intents").pending()) == ["other-x", "retention-db-b"]
