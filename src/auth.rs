//! Bearer-token authentication: who is calling (`sub`) and in which role.
//!
//! One algorithm per deployment, pinned: HS256 with a shared secret, or RS256 / EdDSA / ES256
//! with a public key. A token must carry `iss`, `aud`, `exp` and `sub`, match the configured
//! issuer and audience, and be signed with the pinned algorithm; `alg: none`, an HS256 token
//! signed with the RSA public key, an expired or tampered token are all 401, never told apart
//! in the response (the reason is logged at debug level). A valid token with the wrong role
//! is 403.
//!
//! The role extractors ([`Buyer`], [`Supplier`], [`Admin`]) also apply the per-account rate
//! limit, so every authenticated request is counted against its account.

use crate::config::{JwtKeySource, JwtSettings};
use crate::error::ApiError;
use crate::limits::{
    ACCOUNT_ID_BYTES_MAX, JWT_LEEWAY_S, JWT_SECRET_BYTES_MIN, TOKEN_BYTES_MAX, TOKEN_TTL_MAX,
    VERIFIED_TOKENS_CACHED_MAX,
};
use actix_web::http::header;
use actix_web::HttpRequest;
use anyhow::{bail, Context};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What an account may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Places bids, holds leases.
    Buyer,
    /// Releases and reclaims capacity.
    Supplier,
    /// Watches the market (private read-only channels).
    Viewer,
    /// Configures pools, kill switches and limits.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "buyer" => Ok(Role::Buyer),
            "supplier" => Ok(Role::Supplier),
            "viewer" => Ok(Role::Viewer),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "{other:?} is not a role (buyer, supplier, viewer, admin)"
            )),
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The account id (`sub`).
    pub account: Arc<str>,
    /// The role.
    pub role: Role,
}

/// The claims offpeak reads; `iss`, `aud`, `exp` are checked by the validation itself.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    iss: String,
    aud: String,
    exp: u64,
    iat: u64,
}

/// Whether an account id is acceptable: short, printable, no spaces or control characters.
pub fn is_valid_account_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= ACCOUNT_ID_BYTES_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
}

/// Verifies bearer tokens with the deployment's pinned key and algorithm.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    algorithm: Algorithm,
    /// Tokens verified before, by their whole text: a client sends the same token with every
    /// request, and decoding and checking it again was a tenth of the server's CPU under order
    /// entry. Only tokens that passed every check are kept, each until its `exp` (plus the
    /// leeway), at most [`VERIFIED_TOKENS_CACHED_MAX`] (then the cache starts over).
    verified: Mutex<HashMap<Box<str>, VerifiedToken>>,
}

/// What a verified token proved, and until when.
#[derive(Clone, Debug)]
struct VerifiedToken {
    principal: Principal,
    /// Its `exp` plus the leeway, in seconds since the epoch: not served from the cache after.
    valid_until_s: u64,
}

impl Verifier {
    /// Builds the verifier from settings (reading the key file or the generated secret).
    pub fn from_settings(jwt: &JwtSettings, data_dir: &Path) -> anyhow::Result<Verifier> {
        let (key, algorithm) = match &jwt.key {
            JwtKeySource::Secret(secret) => {
                (hmac_key(secret.expose().as_bytes())?, Algorithm::HS256)
            }
            JwtKeySource::Generated => {
                let secret = load_or_create_secret(data_dir)?;
                (hmac_key(secret.as_bytes())?, Algorithm::HS256)
            }
            JwtKeySource::PublicKeyFile { path, algorithm } => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading the JWT public key {}", path.display()))?;
                public_key(&pem, algorithm.as_deref())
                    .with_context(|| format!("loading the JWT public key {}", path.display()))?
            }
        };
        Ok(Verifier::with_key(
            key,
            algorithm,
            &jwt.issuer,
            &jwt.audience,
        ))
    }

    /// A verifier of tokens signed with `key` by `algorithm` for this issuer and audience.
    fn with_key(key: DecodingKey, algorithm: Algorithm, issuer: &str, audience: &str) -> Verifier {
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.leeway = JWT_LEEWAY_S;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Verifier {
            key,
            validation,
            algorithm,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The pinned algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Checks a token and returns its caller; every failure is `Unauthorized`.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(ApiError::Unauthorized);
        }
        if let Some(principal) = self.verified_before(token, jsonwebtoken::get_current_timestamp())
        {
            return Ok(principal);
        }
        let verified = self.check(token)?;
        let principal = verified.principal.clone();
        self.remember(token, verified);
        Ok(principal)
    }

    /// What the token proved when it was verified before, unless that was longer ago than
    /// its `exp` (plus the leeway) at `now_s`.
    fn verified_before(&self, token: &str, now_s: u64) -> Option<Principal> {
        let mut verified = self.verified.lock().ok()?;
        let known = verified.get(token)?;
        if now_s <= known.valid_until_s {
            return Some(known.principal.clone());
        }
        verified.remove(token);
        None
    }

    fn remember(&self, token: &str, proved: VerifiedToken) {
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= VERIFIED_TOKENS_CACHED_MAX {
                verified.clear();
            }
            verified.insert(token.into(), proved);
        }
    }

    /// Decodes the token and checks its signature, claims and account id.
    fn check(&self, token: &str) -> Result<VerifiedToken, ApiError> {
        #[derive(Deserialize)]
        struct Read {
            sub: String,
            role: String,
            /// Checked by the validation; read here for how long the cache may keep it.
            exp: f64,
        }
        let data =
            jsonwebtoken::decode::<Read>(token, &self.key, &self.validation).map_err(|e| {
                tracing::debug!(error = %e, "token refused");
                ApiError::Unauthorized
            })?;
        let role = data.claims.role.parse::<Role>().map_err(|e| {
            tracing::debug!(error = %e, "token refused");
            ApiError::Unauthorized
        })?;
        if !is_valid_account_id(&data.claims.sub) {
            tracing::debug!("token refused: sub is not a valid account id");
            return Err(ApiError::Unauthorized);
        }
        Ok(VerifiedToken {
            principal: Principal {
                account: Arc::from(data.claims.sub),
                role,
            },
            // A saturating cast: `exp` was checked to be a time not yet passed.
            valid_until_s: (data.claims.exp as u64).saturating_add(JWT_LEEWAY_S),
        })
    }

    /// Reads `Authorization: Bearer <token>` and verifies it.
    pub fn verify_request(&self, req: &HttpRequest) -> Result<Principal, ApiError> {
        let value = req
            .headers()
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized)?
            .to_str()
            .map_err(|_| ApiError::Unauthorized)?;
        let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::Unauthorized);
        }
        self.verify(token.trim())
    }
}

fn hmac_key(secret: &[u8]) -> anyhow::Result<DecodingKey> {
    if secret.len() < JWT_SECRET_BYTES_MIN {
        bail!(
            "the JWT secret must be at least {JWT_SECRET_BYTES_MIN} bytes (HS256 wants 256 bits)"
        );
    }
    Ok(DecodingKey::from_secret(secret))
}

/// Loads an asymmetric public key; the algorithm is pinned explicitly or told from the key.
fn public_key(pem: &[u8], algorithm: Option<&str>) -> anyhow::Result<(DecodingKey, Algorithm)> {
    let named = match algorithm {
        Some(name) => Some(match name {
            "RS256" => Algorithm::RS256,
            "EdDSA" => Algorithm::EdDSA,
            "ES256" => Algorithm::ES256,
            other => bail!("OFFPEAK_JWT_ALGORITHM {other:?} is not one of RS256, EdDSA, ES256"),
        }),
        None => None,
    };
    type Loader = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;
    let attempts: [(Algorithm, Loader); 3] = [
        (Algorithm::RS256, DecodingKey::from_rsa_pem),
        (Algorithm::EdDSA, DecodingKey::from_ed_pem),
        (Algorithm::ES256, DecodingKey::from_ec_pem),
    ];
    for (alg, load) in attempts {
        if named.is_some_and(|n| n != alg) {
            continue;
        }
        if let Ok(key) = load(pem) {
            return Ok((key, alg));
        }
    }
    bail!("the file is not a PEM public key for RS256, EdDSA or ES256")
}

/// The generated secret's file in the data directory.
pub fn generated_secret_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("jwt-secret")
}

/// Reads the generated HS256 secret, creating it (64 random bytes, hex, mode 0600) if missing.
pub fn load_or_create_secret(data_dir: &Path) -> anyhow::Result<String> {
    let path = generated_secret_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(secret) => return Ok(secret.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let bytes: [u8; 64] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            std::io::Write::write_all(&mut file, secret.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a JWT secret (HS256)");
            Ok(secret)
        }
        // Another process created it first: use theirs, so both agree.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(&path)?.trim().to_owned())
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// The signing side for `offpeak token`.
pub enum SigningKey {
    /// HS256 with the shared secret.
    Secret(Vec<u8>),
    /// A private key in PEM for the configured asymmetric algorithm.
    PrivatePem(Vec<u8>),
}

/// Mints a token for `sub` in `role`, valid for `ttl`.
pub fn mint_token(
    jwt: &JwtSettings,
    key: &SigningKey,
    algorithm: Algorithm,
    sub: &str,
    role: Role,
    ttl: Duration,
) -> anyhow::Result<String> {
    if !is_valid_account_id(sub) {
        bail!("--sub must be 1..={ACCOUNT_ID_BYTES_MAX} characters of [A-Za-z0-9-_.:@]");
    }
    if ttl.is_zero() || ttl > TOKEN_TTL_MAX {
        bail!(
            "--ttl must be positive and at most {} days",
            TOKEN_TTL_MAX.as_secs() / 86_400
        );
    }
    let encoding = match (key, algorithm) {
        (SigningKey::Secret(secret), Algorithm::HS256) => EncodingKey::from_secret(secret),
        (SigningKey::PrivatePem(pem), Algorithm::RS256) => EncodingKey::from_rsa_pem(pem)?,
        (SigningKey::PrivatePem(pem), Algorithm::EdDSA) => EncodingKey::from_ed_pem(pem)?,
        (SigningKey::PrivatePem(pem), Algorithm::ES256) => EncodingKey::from_ec_pem(pem)?,
        _ => bail!("the signing key does not match the configured algorithm {algorithm:?}"),
    };
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: sub.to_owned(),
        role,
        iss: jwt.issuer.clone(),
        aud: jwt.audience.clone(),
        iat: now,
        exp: now + ttl.as_secs(),
    };
    Ok(jsonwebtoken::encode(
        &Header::new(algorithm),
        &claims,
        &encoding,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes-long";

    fn verifier() -> Verifier {
        Verifier::with_key(
            DecodingKey::from_secret(SECRET),
            Algorithm::HS256,
            "offpeak",
            "offpeak-api",
        )
    }

    fn token(secret: &[u8], sub: &str, ttl: Duration) -> String {
        let jwt = JwtSettings {
            key: JwtKeySource::Generated,
            issuer: "offpeak".to_owned(),
            audience: "offpeak-api".to_owned(),
        };
        let key = SigningKey::Secret(secret.to_vec());
        mint_token(&jwt, &key, Algorithm::HS256, sub, Role::Buyer, ttl).unwrap()
    }

    #[test]
    fn a_verified_token_is_remembered_until_its_expiry_and_leeway() {
        let verifier = verifier();
        let token = token(SECRET, "acme", Duration::from_secs(60));
        let now = jsonwebtoken::get_current_timestamp();
        assert_eq!(
            verifier.verified_before(&token, now),
            None,
            "not yet verified"
        );
        let principal = verifier.verify(&token).unwrap();
        assert_eq!(&*principal.account, "acme");
        assert_eq!(
            verifier.verified_before(&token, now),
            Some(principal.clone())
        );
        let last_second = now + 60 + JWT_LEEWAY_S;
        assert!(verifier.verified_before(&token, last_second + 1).is_none());
        assert!(
            verifier.verified.lock().unwrap().is_empty(),
            "an expired token is forgotten"
        );
        // Verified again from scratch (it is still valid by the real clock).
        assert_eq!(verifier.verify(&token).ok(), Some(principal));
    }

    #[test]
    fn only_tokens_that_pass_every_check_are_remembered() {
        let verifier = verifier();
        let genuine = token(SECRET, "acme", Duration::from_secs(60));
        verifier.verify(&genuine).unwrap();
        let forged = token(
            b"another-secret-of-at-least-32-bytes-long",
            "acme",
            Duration::from_secs(60),
        );
        // A character inside the signature (the last one may carry only padding bits).
        let at = genuine.len() - 10;
        let swapped = if &genuine[at..=at] == "A" { "B" } else { "A" };
        let tampered = format!("{}{swapped}{}", &genuine[..at], &genuine[at + 1..]);
        for refused in [&forged, &tampered, &"garbage".to_owned()] {
            assert!(matches!(
                verifier.verify(refused),
                Err(ApiError::Unauthorized)
            ));
            assert!(verifier.verified_before(refused, 0).is_none());
        }
        assert_eq!(verifier.verified.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_cache_is_bounded() {
        let verifier = verifier();
        for n in 0..VERIFIED_TOKENS_CACHED_MAX + 1 {
            let proved = VerifiedToken {
                principal: Principal {
                    account: Arc::from("acme"),
                    role: Role::Buyer,
                },
                valid_until_s: u64::MAX,
            };
            verifier.remember(&format!("token-{n}"), proved);
        }
        assert!(verifier.verified.lock().unwrap().len() <= VERIFIED_TOKENS_CACHED_MAX);
    }
}
