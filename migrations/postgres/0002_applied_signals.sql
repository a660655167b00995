-- Capacity signals from the Redis stream (issue 4), applied exactly once: each stream entry id
-- is recorded in the same transaction as the command it became, so a redelivered entry is
-- recognized and acknowledged without being applied again. The primary key is the backstop: a
-- second recording of one id fails its batch instead of applying the signal twice.
CREATE TABLE applied_signals (
    id_ms      bigint NOT NULL,   -- the entry id `<ms>-<seq>`, in two parts so it sorts
    id_seq     bigint NOT NULL,
    seq        bigint NOT NULL,   -- the journal seq of its command
    rejection  text,              -- the engine's refusal code, if it refused the command
    PRIMARY KEY (id_ms, id_seq)
);

-- The lease-events publisher reads lease events in commit order from a journal position.
CREATE INDEX lease_events_seq ON lease_events (seq, id);
