"""One backoff policy for everything that retries: how long to wait before the next attempt.

Used by the Kubernetes client (each request), its watch of Clusters (each re-list) and the
local engine's reconciler (each pass after a failed one). The numbers come from the
settings (:mod:`paas_pitr.settings`), so each user of the policy has none of its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Wait ``initial`` seconds before the first retry, ``multiplier`` times longer before
    each next one, never more than ``max``; ``attempts`` tries in all (``None``: until the
    caller stops). ``jitter`` adds up to that fraction of a delay at random, so that clients
    failing together do not retry in step."""

    initial: float
    max: float
    multiplier: float = 2.0
    attempts: int | None = None
    jitter: float = 0.0

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1: the first retry), without jitter."""
        return min(self.initial * self.multiplier ** max(retry - 1, 0), self.max)

    def jittered(self, retry: int) -> float:
        """:meth:`delay` plus its random share of ``jitter`` (possibly above ``max``: the
        caller caps what it sleeps, a server's ``Retry-After`` included)."""
        return self.delay(retry) * (1 + random.random() * self.jitter)  # noqa: S311

    def gives_up_after(self, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (1: the first try) is the last one."""
        return self.attempts is not None and attempt >= self.attempts
