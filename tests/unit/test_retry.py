"""The one backoff policy, and the numbers the settings give each of its users."""

from __future__ import annotations

import pytest

from paas_pitr.retry import Backoff
from paas_pitr.settings import Settings


def test_delays_grow_by_the_multiplier_up_to_the_maximum() -> None:
    policy = Backoff(initial=0.2, max=1.0, multiplier=2.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.delay(0) == 0.2  # before any failure: the initial delay


def test_attempts_and_jitter() -> None:
    policy = Backoff(initial=1.0, max=8.0, attempts=3, jitter=0.5)
    assert [policy.gives_up_after(n) for n in (1, 2, 3)] == [False, False, True]
    assert not Backoff(initial=1.0, max=1.0).gives_up_after(10_000)
    for retry in (1, 2, 3):
        assert policy.delay(retry) <= policy.jittered(retry) <= policy.delay(retry) * 1.5


def test_the_defaults_are_the_numbers_each_user_had() -> None:
    settings = Settings()
    # The Kubernetes client: 5 attempts, 0.2 s doubling to 8 s, half a delay of jitter.
    assert settings.kube_retry == Backoff(0.2, 8.0, 2.0, attempts=5, jitter=0.5)
    assert settings.kube_request_timeout_seconds == 10.0
    # Its watch: 0.5 s doubling to 30 s, for ever.
    assert settings.kube_watch_retry == Backoff(0.5, 30.0, 2.0)
    # The local reconciler: a pass every second, failed or not.
    assert {settings.reconcile_retry.delay(n) for n in range(5)} == {1.0}


def test_the_numbers_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAAS_PITR_KUBE_RETRY_ATTEMPTS", "2")
    monkeypatch.setenv("PAAS_PITR_KUBE_RETRY_MAX_SECONDS", "0.5")
    monkeypatch.setenv("PAAS_PITR_RECONCILE_RETRY_MAX_SECONDS", "4")
    settings = Settings()
    assert settings.kube_retry.attempts == 2
    assert settings.kube_retry.max == 0.5
    assert [settings.reconcile_retry.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 4.0]
