"""The exception tree of paas-pitr.

Every error a user can see carries a stable ``code`` (part of the API contract: clients
switch on it) and the HTTP status it maps to. Errors raised because a dependency failed
chain the original exception (``raise ... from exc``) so logs keep the root cause.
"""

from __future__ import annotations

from typing import Any, ClassVar


class PitrError(Exception):
    """Base of every error raised on purpose by paas-pitr."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


# --- the caller sent something we refuse -------------------------------------------------


class InvalidInput(PitrError):
    code = "invalid_input"
    http_status = 422


class UnknownPlan(InvalidInput):
    code = "unknown_plan"


class InvalidName(InvalidInput):
    code = "invalid_name"


class InvalidTimestamp(InvalidInput):
    code = "invalid_timestamp"


class TimestampWithoutOffset(InvalidTimestamp):
    code = "timestamp_without_offset"


class TimestampInFuture(InvalidTimestamp):
    code = "timestamp_in_future"


class InvalidSchedule(InvalidInput):
    code = "invalid_schedule"


class InvalidSetting(PitrError):
    """A setting (environment variable or flag) has a value we cannot work with."""

    code = "invalid_setting"
    http_status = 500


# --- the request is well formed but the state of the world says no ------------------------


class NotFound(PitrError):
    code = "not_found"
    http_status = 404


class Conflict(PitrError):
    code = "conflict"
    http_status = 409


class PlanHasNoBackups(Conflict):
    code = "plan_has_no_backups"


class OutsideRecoverabilityWindow(Conflict):
    code = "outside_recoverability_window"
    http_status = 422


class NoBackupForTarget(OutsideRecoverabilityWindow):
    code = "no_backup_before_timestamp"


class NotImplementedYet(PitrError):
    code = "not_implemented"
    http_status = 501


# --- a dependency failed ---------------------------------------------------------------


class DependencyError(PitrError):
    """Something we rely on (Kubernetes API, PostgreSQL, S3, a child process) failed."""

    code = "dependency_unavailable"
    http_status = 503


class EngineError(DependencyError):
    code = "engine_unavailable"


class AuditUnavailable(DependencyError):
    """The audit event of a change could not be made durable, so the change is refused
    before anything is done (a full disk, an unwritable journal)."""

    code = "audit_unavailable"


class DatabaseError(DependencyError):
    code = "database_unavailable"


class ObjectStoreError(DependencyError):
    code = "object_store_unavailable"


# --- who is asking ---------------------------------------------------------------------


class Unauthorized(PitrError):
    code = "unauthorized"
    http_status = 401


class Forbidden(PitrError):
    code = "forbidden"
    http_status = 403
