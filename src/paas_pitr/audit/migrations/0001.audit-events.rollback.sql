DROP TABLE paas_audit_events;
