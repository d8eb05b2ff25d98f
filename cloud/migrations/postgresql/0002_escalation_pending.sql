-- Alerts that may still escalate: AlertStore.escalate_due reads only these on every tick, instead of
-- every raised alert (a long-running province keeps raised, acknowledged-late or escalated ones).
CREATE INDEX alerts_escalation_pending ON alerts (first_received)
    WHERE state = 'raised' AND acked_at IS NULL AND escalated_at IS NULL;
