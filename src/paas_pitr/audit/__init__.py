"""The audit trail: ``paas_audit_events`` in PostgreSQL, written without ever blocking a request."""

from paas_pitr.audit.dispatcher import AuditLog
from paas_pitr.audit.events import AuditEvent

__all__ = ["AuditEvent", "AuditLog"]
