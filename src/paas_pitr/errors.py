"""The exception tree of paas-pitr, and every error code of the API.

Every error a user can see carries a stable ``code`` (part of the API contract: clients
switch on it) and the HTTP status it maps to. Errors raised because a dependency failed
chain the original exception (``raise ... from exc``) so logs keep the root cause. Every
class with a code of its own is defined here, so this module is the list of codes::

    PitrError                        500 internal_error
    ├── InvalidInput                 422 invalid_input
    │   ├── UnknownPlan              422 unknown_plan
    │   ├── InvalidName              422 invalid_name
    │   │   └── AddonIdNotOwned      422 addon_id_not_owned
    │   ├── InvalidTimestamp         422 invalid_timestamp
    │   │   ├── TimestampWithoutOffset   422 timestamp_without_offset
    │   │   └── TimestampInFuture    422 timestamp_in_future
    │   ├── InvalidSchedule          422 invalid_schedule
    │   ├── SchemaViolation          422 invalid_object
    │   ├── InvalidBody              422 invalid_request
    │   └── IdempotencyKeyReused     422 idempotency_key_reused
    ├── MalformedJson                400 malformed_json
    ├── JsonTooDeep                  400 json_too_deep
    ├── UnsupportedMediaType         415 unsupported_media_type
    ├── InvalidSetting               500 invalid_setting
    ├── NotFound                     404 not_found
    ├── Conflict                     409 conflict
    │   ├── AddonExists              409 addon_exists
    │   ├── LimitReached             409 limit_reached
    │   ├── PlanHasNoBackups         409 plan_has_no_backups
    │   ├── DrillInProgress          409 drill_in_progress
    │   └── OutsideRecoverabilityWindow  422 outside_recoverability_window
    │       └── NoBackupForTarget    422 no_backup_before_timestamp
    ├── NotImplementedYet            501 not_implemented
    │   └── InPlaceNotAvailable      501 in_place_not_available
    ├── RecoveryError                500 recovery_failed
    ├── DependencyError              503 dependency_unavailable
    │   ├── EngineError              503 engine_unavailable
    │   ├── AuditUnavailable         503 audit_unavailable
    │   ├── DatabaseError            503 database_unavailable
    │   ├── ObjectStoreError         503 object_store_unavailable
    │   │   └── MissingSecret        503 secret_not_found
    │   └── ArchiveBucketNotConfigured   503 archive_bucket_not_configured
    ├── TooManyRestores              429 too_many_concurrent_restores
    ├── Unauthorized                 401 unauthorized
    └── Forbidden                    403 forbidden

Subclasses without a code of their own answer with their parent's: the Kubernetes client's
``KubeApiError`` family (``paas_pitr.engines.kubernetes.api``) are ``EngineError``
subclasses. The HTTP layer (``paas_pitr.api.errors``, ``paas_pitr.api.middleware``)
answers the requests that never reach a use-case with the code of their HTTP status:
``bad_request`` 400, ``unauthorized`` 401, ``forbidden`` 403, ``not_found`` 404 (an unknown
route), ``method_not_allowed`` 405, ``not_acceptable`` 406, ``conflict`` 409,
``body_too_large`` 413, ``unsupported_media_type`` 415, ``invalid_request`` 422 (FastAPI's
own validation), ``too_many_requests`` 429, ``http_error`` (any other status), and
``internal_error`` 500 for an unexpected exception.
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


class SchemaViolation(InvalidInput):
    """A rendered object the CRD schema refuses (``paas-pitr render --crds``)."""

    code = "invalid_object"


class InvalidBody(InvalidInput):
    """A JSON body that is not an object, or has missing, unknown or mistyped fields."""

    code = "invalid_request"


class IdempotencyKeyReused(InvalidInput):
    """The same ``Idempotency-Key`` with another request body."""

    code = "idempotency_key_reused"


class MalformedJson(PitrError):
    code = "malformed_json"
    http_status = 400


class JsonTooDeep(PitrError):
    """A JSON body nested deeper than a request body ever needs (it would exhaust the
    parser's stack)."""

    code = "json_too_deep"
    http_status = 400


class UnsupportedMediaType(PitrError):
    code = "unsupported_media_type"
    http_status = 415


class AddonIdNotOwned(InvalidName):
    """An explicit addon id spelled for another tenant (answered whether or not it exists)."""

    code = "addon_id_not_owned"


class TooManyRestores(PitrError):
    """A tenant already has as many restores under way as it may (retry once one ends)."""

    code = "too_many_concurrent_restores"
    http_status = 429


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


class AddonExists(Conflict):
    code = "addon_exists"


class LimitReached(Conflict):
    """A per-tenant limit (addons, restore clusters kept per addon) is reached; the details
    name the limit, its setting and what frees room."""

    code = "limit_reached"


class PlanHasNoBackups(Conflict):
    code = "plan_has_no_backups"


class DrillInProgress(Conflict):
    """A restore drill of the addon is queued or running (one at a time per addon)."""

    code = "drill_in_progress"


class OutsideRecoverabilityWindow(Conflict):
    code = "outside_recoverability_window"
    http_status = 422


class NoBackupForTarget(OutsideRecoverabilityWindow):
    code = "no_backup_before_timestamp"


class NotImplementedYet(PitrError):
    code = "not_implemented"
    http_status = 501


class InPlaceNotAvailable(NotImplementedYet):
    code = "in_place_not_available"


class RecoveryError(PitrError):
    """A restore failed for good (the local engine writes its message into the recovery
    Cluster's status, where a restore's ``reason`` is read from)."""

    code = "recovery_failed"


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


class MissingSecret(ObjectStoreError):
    """The Secret an archive configuration names, or one of its keys, does not exist."""

    code = "secret_not_found"


class ArchiveBucketNotConfigured(DependencyError):
    """The control plane has no credentials of its own for the backup bucket."""

    code = "archive_bucket_not_configured"


# --- who is asking ---------------------------------------------------------------------


class Unauthorized(PitrError):
    code = "unauthorized"
    http_status = 401


class Forbidden(PitrError):
    code = "forbidden"
    http_status = 403
