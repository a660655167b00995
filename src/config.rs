//! Typed settings, read from the environment (DESIGN section 5).
//!
//! Secrets (the JWT secret, the database URL's password) are wrapped in [`Secret`], whose
//! `Debug` prints `[redacted]`, so logging the settings never leaks them.
//!
//! JWT keys: `OFFPEAK_JWT_SECRET` (HS256) or `OFFPEAK_JWT_PUBLIC_KEY_FILE` (RS256, EdDSA or
//! ES256, told apart by the PEM; `OFFPEAK_JWT_ALGORITHM` pins one explicitly). With neither,
//! the server generates a random HS256 secret once and keeps it in
//! `$OFFPEAK_DATA_DIR/jwt-secret` (mode 0600), where `offpeak token` finds it too.

use crate::limits::{
    COMMIT_PIPELINE_DEFAULT, COMMIT_PIPELINE_MAX, IDLE_TICK_INTERVAL_DEFAULT,
    RATE_LIMIT_BURST_DEFAULT, RATE_LIMIT_PER_S_DEFAULT, SNAPSHOT_EVERY_DEFAULT,
};
use crate::limits::{
    LEADER_TTL_DEFAULT, LEADER_TTL_MAX, LEADER_TTL_MIN, SIGNALS_CLAIM_IDLE_DEFAULT,
};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where the JWT verification key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtKeySource {
    /// HS256 with this shared secret.
    Secret(Secret),
    /// An asymmetric public key in a PEM file; `algorithm` pins it when set (`RS256`, `EdDSA`, `ES256`).
    PublicKeyFile {
        /// The PEM file.
        path: PathBuf,
        /// An explicit algorithm; otherwise told from the key.
        algorithm: Option<String>,
    },
    /// No key configured: a random HS256 secret kept in the data directory.
    Generated,
}

/// JWT verification settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtSettings {
    /// The key.
    pub key: JwtKeySource,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
}

/// Lease tokens for model gateways (DESIGN section 12).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTokenSettings {
    /// `OFFPEAK_LEASE_KEY_FILE`: the Ed25519 private key (PEM); none means the one generated
    /// once into the data directory.
    pub key_file: Option<PathBuf>,
    /// `OFFPEAK_GATEWAY_AUDIENCE`: the lease tokens' `aud` (never the API's audience).
    pub audience: String,
}

/// Per-account token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Sustained requests per second.
    pub per_s: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

/// The bus (DESIGN section 8): Redis when `REDIS_URL` is set, the in-process bus otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusSettings {
    /// `REDIS_URL` (`redis://[user:password@]host:port[/db]`); none: the in-process bus.
    pub redis_url: Option<Secret>,
    /// `OFFPEAK_REDIS_PREFIX` (default `offpeak`): every key starts with `{prefix}:`.
    pub prefix: String,
    /// `OFFPEAK_REDIS_CONSUMER`: this server's name in the consumer group, stable across
    /// restarts so a restarted server drains its own pending signals (default
    /// `offpeak-<hostname>`).
    pub consumer: String,
    /// `OFFPEAK_REDIS_CLAIM_IDLE_MS`: how long a signal may sit unacknowledged with another
    /// consumer before this one claims it (default 30 s).
    pub claim_idle: Duration,
}

/// This machine's host name, for the default consumer name.
fn host_name(lookup: &impl Fn(&str) -> Option<String>) -> String {
    lookup("HOSTNAME")
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "local".to_owned())
}

/// A key prefix or consumer name: 1..=64 printable ASCII characters without spaces.
fn bus_name(name: &'static str, text: String) -> Result<String, ConfigError> {
    if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError {
            name,
            problem: format!("{text:?} must be 1..=64 printable characters without spaces"),
        });
    }
    Ok(text)
}

/// Everything the server needs to start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// PostgreSQL URL (`postgres://user@host:port/db`).
    pub database_url: Option<Secret>,
    /// Directory for local state: the SQLite store (without `DATABASE_URL`) and the generated
    /// JWT secret.
    pub data_dir: PathBuf,
    /// JWT verification.
    pub jwt: JwtSettings,
    /// JSON list of pools; none means the default pools on a fresh journal.
    pub pools_file: Option<PathBuf>,
    /// HTTP worker threads.
    pub http_workers: usize,
    /// Per-account rate limit.
    pub rate_limit: RateLimitSettings,
    /// How long an idle sequencer waits before journaling a `Tick` (`OFFPEAK_IDLE_TICK_MS`).
    pub idle_tick: Duration,
    /// How often a snapshot is taken while anything happens (`OFFPEAK_SNAPSHOT_EVERY_MS`).
    pub snapshot_every: Duration,
    /// Batches whose commits may be in flight at once (`OFFPEAK_COMMIT_PIPELINE`).
    pub commit_pipeline: usize,
    /// Capacity signals in, market data and lease events out.
    pub bus: BusSettings,
    /// Lease tokens' signing key and audience.
    pub lease_tokens: LeaseTokenSettings,
    /// This node among several on one PostgreSQL database (DESIGN section 10).
    pub cluster: ClusterSettings,
}

/// A node of the cluster: how it is named and reached, and how long leadership lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `OFFPEAK_NODE_ID` (default `<hostname>:<port>`, known once the listener is bound).
    pub node_id: Option<String>,
    /// `OFFPEAK_ADVERTISE_URL`: how the other nodes reach this one (default `http://` and the
    /// bound address).
    pub advertise_url: Option<String>,
    /// `OFFPEAK_LEADER_TTL_MS` (default 3000): a leader not renewed for this long is replaced.
    pub leader_ttl: Duration,
}

/// A setting that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct ConfigError {
    name: &'static str,
    problem: String,
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let listen = match get("OFFPEAK_LISTEN") {
            Some(text) => text.parse().map_err(|e| ConfigError {
                name: "OFFPEAK_LISTEN",
                problem: format!("{text:?} is not a socket address like 127.0.0.1:8080 ({e})"),
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let key = match (get("OFFPEAK_JWT_SECRET"), get("OFFPEAK_JWT_PUBLIC_KEY_FILE")) {
            (Some(_), Some(_)) => {
                return Err(ConfigError {
                    name: "OFFPEAK_JWT_SECRET",
                    problem: "set either it or OFFPEAK_JWT_PUBLIC_KEY_FILE, not both (one algorithm family per deployment)".into(),
                })
            }
            (Some(secret), None) => JwtKeySource::Secret(Secret::new(secret)),
            (None, Some(path)) => JwtKeySource::PublicKeyFile {
                path: path.into(),
                algorithm: get("OFFPEAK_JWT_ALGORITHM"),
            },
            (None, None) => JwtKeySource::Generated,
        };
        let http_workers = match get("OFFPEAK_HTTP_WORKERS") {
            Some(text) => parse_positive("OFFPEAK_HTTP_WORKERS", &text)? as usize,
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
        };
        let rate_limit = RateLimitSettings {
            per_s: match get("OFFPEAK_RATE_LIMIT_PER_S") {
                Some(text) => parse_positive("OFFPEAK_RATE_LIMIT_PER_S", &text)?,
                None => RATE_LIMIT_PER_S_DEFAULT,
            },
            burst: match get("OFFPEAK_RATE_LIMIT_BURST") {
                Some(text) => parse_positive("OFFPEAK_RATE_LIMIT_BURST", &text)?,
                None => RATE_LIMIT_BURST_DEFAULT,
            },
        };
        let idle_tick = match get("OFFPEAK_IDLE_TICK_MS") {
            Some(text) => {
                Duration::from_millis(u64::from(parse_positive("OFFPEAK_IDLE_TICK_MS", &text)?))
            }
            None => IDLE_TICK_INTERVAL_DEFAULT,
        };
        let snapshot_every = match get("OFFPEAK_SNAPSHOT_EVERY_MS") {
            Some(text) => Duration::from_millis(u64::from(parse_positive(
                "OFFPEAK_SNAPSHOT_EVERY_MS",
                &text,
            )?)),
            None => SNAPSHOT_EVERY_DEFAULT,
        };
        let commit_pipeline = match get("OFFPEAK_COMMIT_PIPELINE") {
            Some(text) => match parse_positive("OFFPEAK_COMMIT_PIPELINE", &text)? as usize {
                depth @ 1..=COMMIT_PIPELINE_MAX => depth,
                _ => {
                    return Err(ConfigError {
                        name: "OFFPEAK_COMMIT_PIPELINE",
                        problem: format!("{text:?} is more than {COMMIT_PIPELINE_MAX}"),
                    })
                }
            },
            None => COMMIT_PIPELINE_DEFAULT,
        };
        let jwt = JwtSettings {
            key,
            issuer: get("OFFPEAK_JWT_ISSUER").unwrap_or_else(|| "offpeak".into()),
            audience: get("OFFPEAK_JWT_AUDIENCE").unwrap_or_else(|| "offpeak".into()),
        };
        let lease_tokens = LeaseTokenSettings {
            key_file: get(crate::lease_token::LEASE_KEY_FILE_ENV).map(PathBuf::from),
            audience: get("OFFPEAK_GATEWAY_AUDIENCE")
                .unwrap_or_else(|| crate::lease_token::LEASE_TOKEN_AUDIENCE_DEFAULT.into()),
        };
        if lease_tokens.audience == jwt.audience {
            return Err(ConfigError {
                name: "OFFPEAK_GATEWAY_AUDIENCE",
                problem: "must differ from OFFPEAK_JWT_AUDIENCE: a lease token must never pass \
                          as an API token"
                    .into(),
            });
        }
        Ok(Settings {
            listen,
            database_url: get("DATABASE_URL").map(Secret::new),
            data_dir: get("OFFPEAK_DATA_DIR")
                .unwrap_or_else(|| "./data".into())
                .into(),
            jwt,
            lease_tokens,
            pools_file: get("OFFPEAK_POOLS_FILE").map(PathBuf::from),
            http_workers,
            rate_limit,
            idle_tick,
            snapshot_every,
            commit_pipeline,
            bus: BusSettings {
                redis_url: get("REDIS_URL").map(Secret::new),
                prefix: bus_name(
                    "OFFPEAK_REDIS_PREFIX",
                    get("OFFPEAK_REDIS_PREFIX").unwrap_or_else(|| "offpeak".into()),
                )?,
                consumer: bus_name(
                    "OFFPEAK_REDIS_CONSUMER",
                    get("OFFPEAK_REDIS_CONSUMER")
                        .unwrap_or_else(|| format!("offpeak-{}", host_name(&get))),
                )?,
                claim_idle: match get("OFFPEAK_REDIS_CLAIM_IDLE_MS") {
                    Some(text) => Duration::from_millis(u64::from(parse_positive(
                        "OFFPEAK_REDIS_CLAIM_IDLE_MS",
                        &text,
                    )?)),
                    None => SIGNALS_CLAIM_IDLE_DEFAULT,
                },
            },
            cluster: ClusterSettings {
                node_id: get("OFFPEAK_NODE_ID")
                    .map(|id| bus_name("OFFPEAK_NODE_ID", id))
                    .transpose()?,
                advertise_url: match get("OFFPEAK_ADVERTISE_URL") {
                    Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                        Some(url.trim_end_matches('/').to_owned())
                    }
                    Some(url) => {
                        return Err(ConfigError {
                            name: "OFFPEAK_ADVERTISE_URL",
                            problem: format!("{url:?} must start with http:// or https://"),
                        })
                    }
                    None => None,
                },
                leader_ttl: match get("OFFPEAK_LEADER_TTL_MS") {
                    Some(text) => {
                        let ttl = Duration::from_millis(u64::from(parse_positive(
                            "OFFPEAK_LEADER_TTL_MS",
                            &text,
                        )?));
                        if !(LEADER_TTL_MIN..=LEADER_TTL_MAX).contains(&ttl) {
                            return Err(ConfigError {
                                name: "OFFPEAK_LEADER_TTL_MS",
                                problem: format!(
                                    "{text} is outside {}..={}",
                                    LEADER_TTL_MIN.as_millis(),
                                    LEADER_TTL_MAX.as_millis()
                                ),
                            });
                        }
                        ttl
                    }
                    None => LEADER_TTL_DEFAULT,
                },
            },
        })
    }

    /// This machine's host name (the default node id's first half).
    pub fn host_name() -> String {
        host_name(&|name| std::env::var(name).ok())
    }
}

fn parse_positive(name: &'static str, text: &str) -> Result<u32, ConfigError> {
    match text.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConfigError {
            name,
            problem: format!("{text:?} is not a positive integer"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_design() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.jwt.issuer, "offpeak");
        assert_eq!(s.jwt.audience, "offpeak");
        assert_eq!(s.jwt.key, JwtKeySource::Generated);
        assert!(s.database_url.is_none());
        assert!(s.bus.redis_url.is_none());
        assert_eq!(s.bus.prefix, "offpeak");
        assert!(s.bus.consumer.starts_with("offpeak-"));
        assert_eq!(s.bus.claim_idle, SIGNALS_CLAIM_IDLE_DEFAULT);
    }

    #[test]
    fn bus_names_are_checked_and_the_redis_url_is_secret() {
        let s = settings(&[
            ("REDIS_URL", "redis://:hunter2@127.0.0.1:6379"),
            ("OFFPEAK_REDIS_PREFIX", "t-1"),
            ("OFFPEAK_REDIS_CONSUMER", "node-a"),
        ])
        .unwrap();
        assert_eq!(
            (s.bus.prefix.as_str(), s.bus.consumer.as_str()),
            ("t-1", "node-a")
        );
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(settings(&[("OFFPEAK_REDIS_PREFIX", "a b")]).is_err());
        assert!(settings(&[("OFFPEAK_REDIS_CLAIM_IDLE_MS", "0")]).is_err());
    }

    #[test]
    fn secrets_are_never_printed() {
        let s = settings(&[
            ("OFFPEAK_JWT_SECRET", "super-secret-value-for-hs256-signing"),
            ("DATABASE_URL", "postgres://u:hunter2@db/offpeak"),
        ])
        .unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("super-secret"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn refuses_two_key_sources_and_bad_numbers() {
        assert!(settings(&[
            ("OFFPEAK_JWT_SECRET", "x"),
            ("OFFPEAK_JWT_PUBLIC_KEY_FILE", "/k.pem")
        ])
        .is_err());
        assert!(settings(&[("OFFPEAK_LISTEN", "nowhere")]).is_err());
        assert!(settings(&[("OFFPEAK_RATE_LIMIT_PER_S", "0")]).is_err());
    }
}
