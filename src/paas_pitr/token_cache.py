"""Bearer tokens verified recently, so that a client's every request does not verify its
token again.

Verifying an HS256 token (base64 and JSON decoding of three segments, the HMAC, the claims)
took ~30 us of a ~300 us backups listing answered from kept pages. A verified token is
remembered for at most ``seconds`` and never past its ``exp`` claim: an expired token is
refused at the same instant as without the cache. Tokens are kept under their SHA-256
digest, so the cache holds nothing that could be sent as a token. paas-pitr has no list of
revoked tokens: a token stops working when it expires or when the signing key changes,
which takes a restart (and empties the cache); a revocation list added later takes effect
within ``seconds``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from paas_pitr.context import Caller

# Distinct tokens remembered; past it, the least recently used is verified again next time.
DEFAULT_SIZE = 4096


class VerifiedTokens:
    """Callers of tokens verified within the last ``seconds`` (``0``: none kept)."""

    def __init__(
        self,
        seconds: float,
        *,
        size: int = DEFAULT_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.seconds = seconds
        self.size = size
        self._clock = clock
        # digest -> (kept at, valid until (Unix seconds), caller)
        self._entries: OrderedDict[bytes, tuple[float, float, Caller]] = OrderedDict()
        # verify() runs on the event loop and in worker threads (CLI, background work).
        self._lock = threading.Lock()

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()

    def get(self, token: str) -> Caller | None:
        """The caller of ``token`` if it was verified less than ``seconds`` ago and has
        not expired since."""
        if self.seconds <= 0:
            return None
        digest = self._digest(token)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            kept_at, until, caller = entry
            # A clock set back before the verification misses too.
            if not kept_at <= now < until:
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return caller

    def keep(self, token: str, caller: Caller, expires_at: float | None) -> None:
        """Remember a token just verified; ``expires_at``: its ``exp`` claim (Unix
        seconds), ``None`` for a token that never expires."""
        if self.seconds <= 0:
            return
        now = self._clock()
        until = now + self.seconds
        if expires_at is not None:
            until = min(until, expires_at)
        if until <= now:
            return
        digest = self._digest(token)
        with self._lock:
            self._entries[digest] = (now, until, caller)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
