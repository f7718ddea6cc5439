from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class AuditEvent:
    actor: str
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": str(self.id),
                "created_at": self.created_at.isoformat(),
                "actor": self.actor,
                "action": self.action,
                "target_type": self.target_type,
                "target_id": self.target_id,
                "details": self.details,
                "request_id": self.request_id,
            },
            separators=(",", ":"),
            sort_keys=True,
            default=str,
        )

    @classmethod
    def from_json(cls, line: str) -> AuditEvent:
        raw = json.loads(line)
        return cls(
            id=uuid.UUID(raw["id"]),
            created_at=datetime.fromisoformat(raw["created_at"]),
            actor=raw["actor"],
            action=raw["action"],
            target_type=raw["target_type"],
            target_id=raw["target_id"],
            details=raw.get("details") or {},
            request_id=raw.get("request_id"),
        )
