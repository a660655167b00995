//! Per-account token buckets: `per_s` requests per second sustained, `burst` at once.
//!
//! Buckets are sharded by account so the HTTP workers rarely contend on one lock. The number of
//! tracked accounts is bounded ([`RATE_LIMIT_ACCOUNTS_MAX`]): when a shard is full, buckets
//! that have refilled completely (idle accounts, indistinguishable from new ones) are dropped.

use crate::config::RateLimitSettings;
use crate::error::ApiError;
use crate::limits::RATE_LIMIT_ACCOUNTS_MAX;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::Instant;

const SHARDS: usize = 16;

struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

/// The limiter shared by all workers.
pub struct RateLimiter {
    per_s: f64,
    burst: f64,
    shards: Vec<Mutex<HashMap<Box<str>, Bucket>>>,
    hasher: RandomState,
}

impl RateLimiter {
    /// A limiter with these settings.
    pub fn new(settings: RateLimitSettings) -> RateLimiter {
        RateLimiter {
            per_s: f64::from(settings.per_s),
            burst: f64::from(settings.burst.max(1)),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Takes one token from `account`'s bucket, or says how long to wait.
    pub fn check(&self, account: &str) -> Result<(), ApiError> {
        self.check_at(account, Instant::now())
    }

    fn check_at(&self, account: &str, now: Instant) -> Result<(), ApiError> {
        let shard = &self.shards[(self.hasher.hash_one(account) as usize) % SHARDS];
        // A poisoned lock only means another worker panicked mid-update of a counter: the map
        // is still usable, and refusing all traffic would be worse.
        let mut buckets = shard.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(account) && buckets.len() >= RATE_LIMIT_ACCOUNTS_MAX / SHARDS {
            let (per_s, burst) = (self.per_s, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.refilled_at).as_secs_f64() * per_s < burst
            });
        }
        let bucket = buckets.entry(account.into()).or_insert(Bucket {
            tokens: self.burst,
            refilled_at: now,
        });
        let elapsed = now.duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_s).min(self.burst);
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_s = ((1.0 - bucket.tokens) / self.per_s).ceil().max(1.0);
            Err(ApiError::RateLimited {
                retry_after_s: wait_s as u64,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_the_burst_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(RateLimitSettings { per_s: 2, burst: 3 });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("acme", t0).is_ok());
        }
        match limiter.check_at("acme", t0) {
            Err(ApiError::RateLimited { retry_after_s }) => assert_eq!(retry_after_s, 1),
            other => panic!("expected rate_limited, got {other:?}"),
        }
        // Another account has its own bucket.
        assert!(limiter.check_at("globex", t0).is_ok());
        // Half a second refills one token at 2/s.
        assert!(limiter
            .check_at("acme", t0 + Duration::from_millis(500))
            .is_ok());
        assert!(limiter
            .check_at("acme", t0 + Duration::from_millis(500))
            .is_err());
    }
}
