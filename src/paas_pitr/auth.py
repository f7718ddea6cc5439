"""Bearer tokens: HS256-signed JWTs naming a tenant and a role.

Verifying a token needs only the signing key (kept in memory), never the database, so
authentication keeps working while the audit database is down. ``paas-pitr token create``
and the server share the key through ``PAAS_PITR_TOKEN_SECRET`` or a file in the state
directory (created once, mode 0600).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

from paas_pitr.context import Caller, Role
from paas_pitr.errors import InvalidInput, Unauthorized
from paas_pitr.names import validate_tenant
from paas_pitr.settings import Settings
from paas_pitr.token_cache import VerifiedTokens

ISSUER = "paas-pitr"
AUDIENCE = "paas-pitr-api"
ALGORITHM = "HS256"
ROLES: tuple[Role, ...] = ("tenant", "operator")


def load_signing_key(settings: Settings) -> bytes:
    if settings.token_secret:
        return settings.token_secret.get_secret_value().encode()
    path = settings.state_dir / "token-secret"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process (server or CLI) created it first: use theirs.
        return Path(path).read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


class TokenAuthority:
    def __init__(self, key: bytes, *, cache_seconds: float = 0.0) -> None:
        """``cache_seconds``: how long a verified token is remembered (never past its
        expiry; :mod:`paas_pitr.token_cache`); ``0``: every token is verified each time."""
        if len(key) < 32:
            raise InvalidInput("the token signing key must be at least 32 bytes long")
        self._key = key
        self._verified = VerifiedTokens(cache_seconds)

    def derive_key(self, purpose: str) -> bytes:
        """A key for another use (``"names"``: see paas_pitr.names.NameKey), derived from the
        signing key so every replica has it and none has to be distributed; knowing it
        reveals nothing of the signing key."""
        return hmac.new(
            self._key, f"paas-pitr derived key: {purpose}".encode(), hashlib.sha256
        ).digest()

    def issue(
        self,
        tenant: str,
        *,
        role: Role = "tenant",
        subject: str | None = None,
        ttl: timedelta | None = timedelta(days=30),
    ) -> str:
        validate_tenant(tenant)
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        now = datetime.now(UTC)
        claims: dict[str, object] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "sub": subject or tenant,
            "tenant": tenant,
            "role": role,
        }
        if ttl is not None:
            claims["exp"] = now + ttl
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: str) -> Caller:
        """The caller a token names, or ``Unauthorized`` (expired, another key, not one of
        ours, malformed)."""
        caller = self._verified.get(token)
        if caller is not None:
            return caller
        caller, expires_at = self._decode(token)
        self._verified.keep(token, caller, expires_at)
        return caller

    def _decode(self, token: str) -> tuple[Caller, float | None]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the token has expired") from exc
        except jwt.InvalidSignatureError as exc:
            # The usual cause: minted by `token create` run with another state directory
            # (so another generated key) or another secret. Say what to check, never which
            # key was expected.
            raise Unauthorized(
                "the token is signed with another key than this server's: create it with "
                "`paas-pitr token create` run with the same PAAS_PITR_TOKEN_SECRET as the "
                "server or, when the server has none, the same state directory "
                "(PAAS_PITR_STATE_DIR), as `paas-pitr serve` prints it",
                details={"reason": "signature"},
            ) from exc
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
            raise Unauthorized(
                "the token was not issued by paas-pitr: create one with "
                "`paas-pitr token create --tenant NAME`",
                details={"reason": "issuer"},
            ) from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(
                "the token is not a paas-pitr token (malformed or cut short: copy it whole, "
                "as `paas-pitr token create` prints it)",
                details={"reason": "malformed"},
            ) from exc
        tenant, role = claims.get("tenant"), claims.get("role")
        if not isinstance(tenant, str) or role not in ROLES:
            raise Unauthorized("the token names no tenant or role")
        # As PyJWT reads it: the token is valid while now < int(exp).
        expires_at = float(int(claims["exp"])) if "exp" in claims else None
        return Caller(tenant=tenant, role=role, subject=str(claims["sub"])), expires_at
