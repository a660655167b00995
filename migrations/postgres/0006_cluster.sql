-- Several offpeak processes on one database (DESIGN section 10): one leader, fenced by epoch.
-- One row: the current epoch and who holds it until when (the database's clock decides).
CREATE TABLE leadership (
    id            integer     PRIMARY KEY CHECK (id = 1),
    epoch         bigint      NOT NULL,
    holder        text,
    advertise_url text,
    expires_at    timestamptz NOT NULL
);
INSERT INTO leadership (id, epoch, expires_at) VALUES (1, 0, '-infinity');

-- Each node's last heartbeat, for GET /v1/cluster.
CREATE TABLE cluster_nodes (
    node_id       text        PRIMARY KEY,
    role          text        NOT NULL,
    epoch         bigint      NOT NULL,
    seq           bigint      NOT NULL,
    advertise_url text        NOT NULL,
    seen_at       timestamptz NOT NULL
);

-- The first statement of every batch: fails the transaction (SQLSTATE OPF01) unless `expected`
-- is still the current epoch, and holds the row (FOR SHARE) until the commit, so a takeover
-- (an UPDATE of the row) waits for a commit in flight and is seen by every later one.
CREATE FUNCTION offpeak_fence(expected bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM leadership WHERE id = 1 AND epoch = expected FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'epoch % is no longer the leader''s', expected USING ERRCODE = 'OPF01';
    END IF;
END
$$;
