-- Capacity signals applied exactly once (see migrations/postgres/0002_applied_signals.sql).
CREATE TABLE applied_signals (
    id_ms      INTEGER NOT NULL,
    id_seq     INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    rejection  TEXT,
    PRIMARY KEY (id_ms, id_seq)
) STRICT;

CREATE INDEX lease_events_seq ON lease_events (seq, id);
