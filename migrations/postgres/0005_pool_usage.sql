-- What each pool offered and leased, per minute (DESIGN section 13): GPU-milliseconds
-- integrated by the engine over its own clock, written with the batch that accrued them.
-- Offered is unsold GPUs in open windows plus leased GPUs.
CREATE TABLE pool_usage (
    pool           text   NOT NULL,
    minute         bigint NOT NULL,
    offered_gpu_ms bigint NOT NULL,
    leased_gpu_ms  bigint NOT NULL,
    PRIMARY KEY (pool, minute)
);
