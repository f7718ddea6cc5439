"""Verified tokens remembered: the same caller as a verification, never past the token's
expiry nor the cache's lifetime, and only for the very token verified."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import jwt
import pytest

from paas_pitr.auth import TokenAuthority
from paas_pitr.context import Caller
from paas_pitr.errors import Unauthorized
from paas_pitr.token_cache import VerifiedTokens

KEY = b"k" * 48
ACME = Caller(tenant="acme", role="tenant", subject="acme")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_token_is_remembered_for_its_lifetime_then_forgotten() -> None:
    clock = Clock(1000.0)
    tokens = VerifiedTokens(60, clock=clock)
    tokens.keep("a.b.c", ACME, expires_at=None)
    clock.now = 1059.9
    assert tokens.get("a.b.c") == ACME
    clock.now = 1060.0
    assert tokens.get("a.b.c") is None
    clock.now = 1000.0  # forgotten, even once the clock reads an earlier time
    assert tokens.get("a.b.c") is None


def test_a_remembered_token_is_refused_from_its_expiry_on() -> None:
    clock = Clock(1000.0)
    tokens = VerifiedTokens(60, clock=clock)
    tokens.keep("a.b.c", ACME, expires_at=1010.0)
    clock.now = 1009.99
    assert tokens.get("a.b.c") == ACME
    clock.now = 1010.0
    assert tokens.get("a.b.c") is None
    # Already expired when verified (cannot happen through verify): not kept at all.
    tokens.keep("d.e.f", ACME, expires_at=1010.0)
    assert tokens.get("d.e.f") is None


def test_a_clock_set_back_before_the_verification_misses() -> None:
    clock = Clock(1000.0)
    tokens = VerifiedTokens(60, clock=clock)
    tokens.keep("a.b.c", ACME, expires_at=None)
    clock.now = 999.0
    assert tokens.get("a.b.c") is None


def test_only_the_very_token_verified_is_remembered() -> None:
    tokens = VerifiedTokens(60)
    tokens.keep("a.b.c", ACME, expires_at=None)
    assert tokens.get("a.b.d") is None
    assert tokens.get("a.b.c ") is None


def test_the_least_recently_used_token_is_forgotten_past_the_size() -> None:
    tokens = VerifiedTokens(60, size=2)
    others = [Caller(tenant=f"t{i}") for i in range(3)]
    tokens.keep("t0", others[0], expires_at=None)
    tokens.keep("t1", others[1], expires_at=None)
    assert tokens.get("t0") == others[0]  # t1 is now the least recently used
    tokens.keep("t2", others[2], expires_at=None)
    assert [tokens.get(t) for t in ("t0", "t1", "t2")] == [others[0], None, others[2]]


def test_a_lifetime_of_zero_remembers_nothing() -> None:
    tokens = VerifiedTokens(0)
    tokens.keep("a.b.c", ACME, expires_at=None)
    assert tokens.get("a.b.c") is None


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens PyJWT decoded (what remembering saves)."""
    seen: list[str] = []
    decode = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    return seen


def test_the_authority_verifies_a_token_once_and_answers_the_same_caller(
    decodes: list[str],
) -> None:
    authority = TokenAuthority(KEY, cache_seconds=60)
    uncached = TokenAuthority(KEY)
    token = authority.issue("acme", role="operator", subject="ops-1")
    expected = Caller(tenant="acme", role="operator", subject="ops-1")
    assert [authority.verify(token) for _ in range(3)] == [expected] * 3
    assert decodes == [token]
    assert uncached.verify(token) == expected
    assert uncached.verify(token) == expected
    assert decodes == [token] * 3


def test_a_token_tampered_with_is_refused_though_the_original_is_remembered() -> None:
    authority = TokenAuthority(KEY, cache_seconds=60)
    token = authority.issue("acme")
    authority.verify(token)
    header, claims, signature = token.split(".")
    forged_claims = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(claims).replace(b'"acme"', b'"evil"')
    ).decode()
    with pytest.raises(Unauthorized) as refused:
        authority.verify(f"{header}.{forged_claims}.{signature}")
    assert refused.value.details == {"reason": "signature"}


def test_a_remembered_token_expires_at_its_exp_claim() -> None:
    authority = TokenAuthority(KEY, cache_seconds=3600)
    token = authority.issue("acme", ttl=timedelta(seconds=1))
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert authority.verify(token) == ACME
    # PyJWT refuses the token once the clock's whole seconds reach exp.
    time.sleep(max(0.0, expires_at - time.time()) + 0.05)
    with pytest.raises(Unauthorized, match="the token has expired"):
        authority.verify(token)


def test_a_restart_with_another_signing_key_refuses_tokens_remembered_before() -> None:
    # paas-pitr has no revocation list: changing the key (which takes a restart) is how
    # every token is revoked, and the new process remembers nothing.
    before = TokenAuthority(KEY, cache_seconds=60)
    token = before.issue("acme")
    assert before.verify(token) == ACME
    after = TokenAuthority(b"r" * 48, cache_seconds=60)
    with pytest.raises(Unauthorized) as refused:
        after.verify(token)
    assert refused.value.details == {"reason": "signature"}
