//! Typed settings, read from the environment (DESIGN section 5).
//!
//! Secrets (the JWT secret, the database URL's password) are wrapped in [`Secret`], whose
//! `Debug` prints `[redacted]`, so logging the settings never leaks them.
//!
//! JWT keys: `OFFPEAK_JWT_SECRET` (HS256) or `OFFPEAK_JWT_PUBLIC_KEY_FILE` (RS256, EdDSA or
//! ES256, told apart by the PEM; `OFFPEAK_JWT_ALGORITHM` pins one explicitly). With neither,
//! the server generates a random HS256 secret once and keeps it in
//! `$OFFPEAK_DATA_DIR/jwt-secret` (mode 0600), where `offpeak token` finds it too.

use crate::limits::{RATE_LIMIT_BURST_DEFAULT, RATE_LIMIT_PER_S_DEFAULT};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

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

/// Per-account token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Sustained requests per second.
    pub per_s: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

/// Everything the server needs to start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// PostgreSQL URL (`postgres://user@host:port/db`).
    pub database_url: Option<Secret>,
    /// Directory for local state (the generated JWT secret; the SQLite file later).
    pub data_dir: PathBuf,
    /// JWT verification.
    pub jwt: JwtSettings,
    /// JSON list of pools; none means the default pools on a fresh journal.
    pub pools_file: Option<PathBuf>,
    /// HTTP worker threads.
    pub http_workers: usize,
    /// Per-account rate limit.
    pub rate_limit: RateLimitSettings,
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
        Ok(Settings {
            listen,
            database_url: get("DATABASE_URL").map(Secret::new),
            data_dir: get("OFFPEAK_DATA_DIR")
                .unwrap_or_else(|| "./data".into())
                .into(),
            jwt: JwtSettings {
                key,
                issuer: get("OFFPEAK_JWT_ISSUER").unwrap_or_else(|| "offpeak".into()),
                audience: get("OFFPEAK_JWT_AUDIENCE").unwrap_or_else(|| "offpeak".into()),
            },
            pools_file: get("OFFPEAK_POOLS_FILE").map(PathBuf::from),
            http_workers,
            rate_limit,
        })
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
