-- The notice each lease was promised when it opened (the pool's notice_s at that moment): a
-- later change of the pool's settings never shortens it. Leases recorded before this column
-- read 0, i.e. no promise beyond the pool's own notice.
ALTER TABLE leases ADD COLUMN notice_s integer NOT NULL DEFAULT 0;
