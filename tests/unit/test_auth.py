"""Why a token is refused: each 401 says what to check, and nothing about the key."""

from __future__ import annotations

import jwt
import pytest

from paas_pitr.auth import ALGORITHM, TokenAuthority
from paas_pitr.errors import Unauthorized

KEY = b"k" * 32


def refusal(token: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as refused:
        TokenAuthority(KEY).verify(token)
    return refused.value


def test_a_token_signed_with_another_key_says_where_the_key_comes_from() -> None:
    other = TokenAuthority(b"o" * 32).issue("acme")
    refused = refusal(other)
    assert refused.message == (
        "the token is signed with another key than this server's: create it with "
        "`paas-pitr token create` run with the same PAAS_PITR_TOKEN_SECRET as the server or, "
        "when the server has none, the same state directory (PAAS_PITR_STATE_DIR), as "
        "`paas-pitr serve` prints it"
    )
    assert refused.details == {"reason": "signature"}
    assert "k" * 8 not in refused.message and "o" * 8 not in refused.message


def test_a_token_of_another_issuer_and_a_cut_token() -> None:
    foreign = jwt.encode({"sub": "x", "iat": 0, "iss": "x", "aud": "x"}, KEY, ALGORITHM)
    assert refusal(foreign).details == {"reason": "issuer"}
    whole = TokenAuthority(KEY).issue("acme")
    cut = refusal(whole[: len(whole) // 2])
    assert cut.details == {"reason": "malformed"}
    assert cut.message.startswith("the token is not a paas-pitr token (malformed or cut short")
    assert TokenAuthority(KEY).verify(whole).tenant == "acme"
