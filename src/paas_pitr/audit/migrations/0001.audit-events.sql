-- The seed's query must run verbatim:
--   SELECT created_at, target_id, details_jsonb FROM paas_audit_events
--   WHERE action = 'addon.restore_pitr' ORDER BY created_at DESC LIMIT 10;
CREATE TABLE paas_audit_events (
    id            uuid        PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    actor         text        NOT NULL,
    action        text        NOT NULL,
    target_type   text        NOT NULL,
    target_id     text        NOT NULL,
    details_jsonb jsonb       NOT NULL DEFAULT '{}'::jsonb,
    request_id    text
);
CREATE INDEX paas_audit_events_action_created_at_idx
    ON paas_audit_events (action, created_at DESC);
CREATE INDEX paas_audit_events_target_created_at_idx
    ON paas_audit_events (target_type, target_id, created_at DESC);
