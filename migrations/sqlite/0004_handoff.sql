-- The handoff (DESIGN section 11): a lease's access (status, ready_at, endpoints or endpoint,
-- reason) and the buyer's ssh public keys, both as JSON; a block's GPUs that left it with a
-- failed lease. Leases recorded before these columns read as ready from their start, without
-- keys, as they ran.
ALTER TABLE leases ADD COLUMN access text;
ALTER TABLE leases ADD COLUMN ssh_public_keys text;
ALTER TABLE blocks ADD COLUMN gpus_failed integer NOT NULL DEFAULT 0;
