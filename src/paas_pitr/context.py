"""Who is asking: the caller of a use-case, as established by authentication."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["tenant", "operator"]


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    role: Role = "tenant"
    subject: str | None = None
    request_id: str | None = None

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.subject or self.tenant}"
