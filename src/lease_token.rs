//! Lease tokens for model gateways: JWTs signed by offpeak with EdDSA (Ed25519), and the JWKS
//! that lets a gateway check them without any shared secret.
//!
//! `POST /v1/leases/{id}/token` answers a token minted here ([`LeaseKey::mint`]) whose claims
//! ([`LeaseTokenClaims`]) say who holds which lease, on which pool, with how many GPUs and how
//! many tokens per second the gateway must allow. `GET /.well-known/jwks.json` serves
//! [`LeaseKey::jwks`]; the token's header carries the key's `kid`, its RFC 7638 thumbprint.
//!
//! The key is an Ed25519 private key in a PKCS#8 PEM file (as `openssl genpkey -algorithm
//! ed25519` writes). Named by `OFFPEAK_LEASE_KEY_FILE` ([`LEASE_KEY_FILE_ENV`]), it is loaded;
//! otherwise [`LeaseKey::load_or_generate`] loads `<data_dir>/lease-key.pem`, creating it once
//! (mode 0600, complete before it appears under its name) so restarts and nodes sharing the
//! directory sign with the same key. No key material is ever put in an error, a log line or a
//! `Debug` output.

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// Name of the key file created in the data directory when no key file is configured.
pub const LEASE_KEY_FILE_NAME: &str = "lease-key.pem";

/// Environment variable naming the lease key file (an Ed25519 private key, PKCS#8 PEM).
pub const LEASE_KEY_FILE_ENV: &str = "OFFPEAK_LEASE_KEY_FILE";

/// The gateway audience (`aud`) when none is configured.
pub const LEASE_TOKEN_AUDIENCE_DEFAULT: &str = "offpeak-gateway";

/// The largest key file read, in bytes: an Ed25519 PEM is about 120.
pub const LEASE_KEY_FILE_BYTES_MAX: usize = 16 * 1024;

/// Clock skew allowed when checking `exp`, in seconds (jsonwebtoken's default, made explicit).
pub const LEASE_TOKEN_LEEWAY_S: u64 = 60;

/// Random bytes in a token id ([`new_token_id`]): 128 bits, 22 base64url characters.
pub const TOKEN_ID_RANDOM_BYTES: usize = 16;

/// Unix permissions of a created key file: owner read and write only.
pub const LEASE_KEY_FILE_MODE: u32 = 0o600;

/// PEM label of an unencrypted PKCS#8 private key.
const PKCS8_PEM_LABEL: &str = "PRIVATE KEY";

/// DER of a PKCS#8 v1 Ed25519 `PrivateKeyInfo` (RFC 8410 section 7) up to the 32-byte seed:
/// SEQUENCE (46 bytes) { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING (34 bytes) {
/// OCTET STRING (32 bytes) } }. The same 48 bytes `openssl genpkey -algorithm ed25519` writes.
const PKCS8_ED25519_DER_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// How many characters of an unexpected PEM label an error repeats.
const ECHOED_LABEL_CHARS_MAX: usize = 64;

/// The claims of a lease token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTokenClaims {
    /// The buyer account holding the lease.
    pub sub: String,
    /// The lease id.
    pub lease: u64,
    /// The pool the lease's GPUs are in.
    pub pool: String,
    /// GPUs leased.
    pub gpus: u32,
    /// Tokens per second the gateway must allow: `gpus` times the pool's tokens per second per
    /// GPU.
    pub tokens_per_s: u64,
    /// The gateway audience ([`LEASE_TOKEN_AUDIENCE_DEFAULT`] unless configured).
    pub aud: String,
    /// The configured issuer.
    pub iss: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds: no later than the lease's end.
    pub exp: u64,
    /// Token id, unique per token ([`new_token_id`]).
    pub jti: String,
}

/// Why a lease key could not be loaded, or a token minted or verified.
#[derive(Debug, thiserror::Error)]
pub enum LeaseKeyError {
    /// The key file is larger than any Ed25519 key file.
    #[error(
        "the lease key is {bytes} bytes long; an Ed25519 PEM key is at most \
         {LEASE_KEY_FILE_BYTES_MAX}"
    )]
    TooLarge {
        /// Size of what was given.
        bytes: usize,
    },
    /// The key is not PEM at all.
    #[error(
        "the lease key is not PEM; expected \"-----BEGIN PRIVATE KEY-----\" \
         (openssl genpkey -algorithm ed25519)"
    )]
    NotPem,
    /// The PEM block holds something other than an unencrypted PKCS#8 private key.
    #[error(
        "the lease key is a PEM \"{label}\"; expected an unencrypted \"PRIVATE KEY\" (PKCS#8)"
    )]
    UnexpectedPemLabel {
        /// The block's label, cut short.
        label: String,
    },
    /// The PKCS#8 document is malformed or holds a key other than Ed25519.
    #[error(
        "the lease key is not an Ed25519 private key in PKCS#8 \
         (openssl genpkey -algorithm ed25519)"
    )]
    NotEd25519,
    /// The claims would expire no later than they are issued.
    #[error("a lease token must expire after it is issued (iat {iat}, exp {exp})")]
    ExpiresBeforeIssued {
        /// The claims' `iat`.
        iat: u64,
        /// The claims' `exp`.
        exp: u64,
    },
    /// Signing failed.
    #[error("could not mint the lease token: {0}")]
    Mint(#[source] jsonwebtoken::errors::Error),
    /// The token is malformed, not EdDSA, not signed by this key, expired, or for another
    /// audience or issuer; [`jsonwebtoken::errors::Error::kind`] says which.
    #[error("lease token refused: {0}")]
    Refused(#[source] jsonwebtoken::errors::Error),
}

/// offpeak's Ed25519 lease key: signs lease tokens and publishes its public half as a JWKS.
///
/// `Debug` shows the `kid` only.
#[derive(Clone)]
pub struct LeaseKey {
    /// The PKCS#8 DER of the private key, as jsonwebtoken signs with it.
    encoding_key: EncodingKey,
    /// The raw 32-byte public key.
    decoding_key: DecodingKey,
    /// RFC 7638 thumbprint of the public JWK.
    kid: String,
    /// The public key, base64url without padding (the JWK's `x`).
    public_x: String,
}

impl std::fmt::Debug for LeaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl LeaseKey {
    /// Loads `file` when given (it must exist); else loads `<data_dir>/lease-key.pem`, or creates
    /// it with a fresh key (mode 0600, written to a temporary file first and linked into place
    /// only when complete; when another process creates it first, that key is loaded instead).
    pub fn load_or_generate(file: Option<&Path>, data_dir: &Path) -> anyhow::Result<LeaseKey> {
        if let Some(file) = file {
            return load_key_file(file)?
                .with_context(|| format!("lease key file {} does not exist", file.display()));
        }
        let path = data_dir.join(LEASE_KEY_FILE_NAME);
        match load_key_file(&path)? {
            Some(key) => Ok(key),
            None => create_key_file(data_dir, &path),
        }
    }

    /// Reads an Ed25519 private key from PKCS#8 PEM (v1 as OpenSSL writes it, or v2 with the
    /// public key, which must then match).
    pub fn from_pkcs8_pem(pem: &[u8]) -> Result<LeaseKey, LeaseKeyError> {
        if pem.len() > LEASE_KEY_FILE_BYTES_MAX {
            return Err(LeaseKeyError::TooLarge { bytes: pem.len() });
        }
        let block = pem::parse(pem).map_err(|_| LeaseKeyError::NotPem)?;
        if block.tag() != PKCS8_PEM_LABEL {
            return Err(LeaseKeyError::UnexpectedPemLabel {
                label: block.tag().chars().take(ECHOED_LABEL_CHARS_MAX).collect(),
            });
        }
        let der = Zeroizing::new(block.into_contents());
        let signing_key =
            SigningKey::from_pkcs8_der(&der).map_err(|_| LeaseKeyError::NotEd25519)?;
        Ok(LeaseKey::from_signing_key(&signing_key))
    }

    /// A fresh random key (tests, in-memory use); nothing is written anywhere.
    pub fn generate() -> LeaseKey {
        LeaseKey::from_signing_key(&random_signing_key())
    }

    /// The key id: the RFC 7638 JWK thumbprint of the public key, base64url.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key, base64url without padding (the JWK's `x`).
    pub fn public_key_x(&self) -> &str {
        &self.public_x
    }

    /// The body of `GET /.well-known/jwks.json`: one OKP Ed25519 key for EdDSA signatures.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": self.public_x,
                "kid": self.kid,
                "alg": "EdDSA",
                "use": "sig",
            }]
        })
    }

    /// Signs `claims` into a compact JWT (EdDSA, `typ` JWT, this key's `kid`). The claims are
    /// the caller's: `exp` must come after `iat`, nothing else is changed or checked.
    pub fn mint(&self, claims: &LeaseTokenClaims) -> Result<String, LeaseKeyError> {
        if claims.exp <= claims.iat {
            return Err(LeaseKeyError::ExpiresBeforeIssued {
                iat: claims.iat,
                exp: claims.exp,
            });
        }
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding_key).map_err(LeaseKeyError::Mint)
    }

    /// What a gateway does: verify signature (EdDSA only, by this key), `aud`, `iss` and `exp`
    /// (with [`LEASE_TOKEN_LEEWAY_S`] of clock skew); all of them must be present.
    pub fn verify(
        &self,
        token: &str,
        audience: &str,
        issuer: &str,
    ) -> Result<LeaseTokenClaims, LeaseKeyError> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEASE_TOKEN_LEEWAY_S;
        validation.validate_exp = true;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        jsonwebtoken::decode::<LeaseTokenClaims>(token, &self.decoding_key, &validation)
            .map(|data| data.claims)
            .map_err(LeaseKeyError::Refused)
    }

    fn from_signing_key(signing_key: &SigningKey) -> LeaseKey {
        let der = pkcs8_der(signing_key);
        let public_key = signing_key.verifying_key().to_bytes();
        let public_x = URL_SAFE_NO_PAD.encode(public_key);
        LeaseKey {
            encoding_key: EncodingKey::from_ed_der(&der),
            // jsonwebtoken's EdDSA verifier takes the raw 32-byte public key here.
            decoding_key: DecodingKey::from_ed_der(&public_key),
            kid: jwk_thumbprint(&public_x),
            public_x,
        }
    }
}

/// A new token id (`jti`): [`TOKEN_ID_RANDOM_BYTES`] random bytes, base64url without padding.
pub fn new_token_id() -> String {
    let mut bytes = [0_u8; TOKEN_ID_RANDOM_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The RFC 7638 thumbprint of the Ed25519 JWK with public key `x` (RFC 8037 section 2): the
/// base64url SHA-256 of its required members, in lexicographic order, without whitespace.
fn jwk_thumbprint(x: &str) -> String {
    // `x` is base64url: nothing in it needs JSON escaping.
    let canonical_jwk = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical_jwk.as_bytes()))
}

/// A signing key from 32 bytes of `rand`'s thread generator (a CSPRNG seeded by the OS).
fn random_signing_key() -> SigningKey {
    let mut seed = Zeroizing::new([0_u8; ed25519_dalek::SECRET_KEY_LENGTH]);
    rand::rng().fill_bytes(seed.as_mut_slice());
    SigningKey::from_bytes(&seed)
}

/// The PKCS#8 v1 DER of `signing_key`, byte for byte what OpenSSL writes.
fn pkcs8_der(signing_key: &SigningKey) -> Zeroizing<Vec<u8>> {
    let seed = Zeroizing::new(signing_key.to_bytes());
    let mut der = Zeroizing::new(Vec::with_capacity(
        PKCS8_ED25519_DER_PREFIX.len() + seed.len(),
    ));
    der.extend_from_slice(&PKCS8_ED25519_DER_PREFIX);
    der.extend_from_slice(seed.as_slice());
    der
}

/// The PKCS#8 PEM of `signing_key`, LF line endings.
fn pkcs8_pem(signing_key: &SigningKey) -> Zeroizing<String> {
    let der = pkcs8_der(signing_key);
    let block = pem::Pem::new(PKCS8_PEM_LABEL, der.as_slice());
    Zeroizing::new(pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    ))
}

/// The key in `path`, or `None` when there is no such file.
fn load_key_file(path: &Path) -> anyhow::Result<Option<LeaseKey>> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot open lease key file {}", path.display()))
        }
    };
    let mut pem = Zeroizing::new(Vec::new());
    // One byte past the limit, so that an oversized file is refused rather than cut.
    let limit = u64::try_from(LEASE_KEY_FILE_BYTES_MAX + 1).unwrap_or(u64::MAX);
    file.take(limit)
        .read_to_end(&mut pem)
        .with_context(|| format!("cannot read lease key file {}", path.display()))?;
    LeaseKey::from_pkcs8_pem(&pem)
        .map(Some)
        .with_context(|| format!("lease key file {}", path.display()))
}

/// Creates `path` (in `data_dir`) with a fresh key, or loads the key another process put there
/// first.
fn create_key_file(data_dir: &Path, path: &Path) -> anyhow::Result<LeaseKey> {
    fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let signing_key = random_signing_key();
    let temporary = TemporaryFile::create(data_dir, pkcs8_pem(&signing_key).as_bytes())?;

    // A hard link never replaces an existing file: of several processes creating the key at
    // once, exactly one succeeds and the others load its key.
    match fs::hard_link(&temporary.path, path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            return load_key_file(path)?.with_context(|| {
                format!("lease key file {} vanished while loading", path.display())
            });
        }
        // A file system without hard links: rename, which is atomic but may replace a key
        // created in the same instant; the key on disk afterwards is the one loaded.
        Err(_) => {
            fs::rename(&temporary.path, path).with_context(|| {
                format!("cannot move the new lease key into {}", path.display())
            })?;
            sync_directory(data_dir);
            return load_key_file(path)?.with_context(|| {
                format!("lease key file {} vanished while loading", path.display())
            });
        }
    }
    sync_directory(data_dir);
    Ok(LeaseKey::from_signing_key(&signing_key))
}

/// A fully written, synced temporary key file next to the final one; removed when dropped.
struct TemporaryFile {
    path: PathBuf,
}

impl TemporaryFile {
    fn create(directory: &Path, contents: &[u8]) -> anyhow::Result<TemporaryFile> {
        let name = format!(
            ".{LEASE_KEY_FILE_NAME}.{}.{}.tmp",
            std::process::id(),
            new_token_id()
        );
        let path = directory.join(name);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(LEASE_KEY_FILE_MODE);
        }
        let mut file = options
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let temporary = TemporaryFile { path };
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", temporary.path.display()))?;
        Ok(temporary)
    }
}

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        // Gone already after a rename; any other failure leaves a stray file, not a wrong key.
        let _ = fs::remove_file(&self.path);
    }
}

/// Makes a new directory entry durable; best effort (not every platform can open a directory).
fn sync_directory(directory: &Path) {
    if let Ok(handle) = fs::File::open(directory) {
        let _ = handle.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::errors::ErrorKind;
    use std::process::Command;

    const ISSUER: &str = "https://offpeak.example";

    /// Written by `openssl genpkey -algorithm ed25519` (OpenSSL 3.0.19).
    const OPENSSL_ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIFwW4y9nLq3K9DDw4+KvA2W+/fm3XptT66MjbiI5ZiaT
-----END PRIVATE KEY-----
";
    /// Its public key as `openssl pkey -pubout` gives it, base64url.
    const OPENSSL_ED25519_PUBLIC_X: &str = "P4c-5KVMHc9_kSltdipvpNF_WCpB9ByS-B6SYps3IAI";

    /// `openssl genpkey -algorithm x25519`: PKCS#8, but not a signing key.
    const OPENSSL_X25519_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VuBCIEIOjgDvH/Pg6eMNyrS2cs+9M3JTIl6QwYVPjMwYulSmZl
-----END PRIVATE KEY-----
";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims() -> LeaseTokenClaims {
        let iat = now();
        LeaseTokenClaims {
            sub: "acct_buyer_42".to_owned(),
            lease: 9_007_199_254_740_993,
            pool: "h100-us-east".to_owned(),
            gpus: 8,
            tokens_per_s: 8 * 2_500,
            aud: LEASE_TOKEN_AUDIENCE_DEFAULT.to_owned(),
            iss: ISSUER.to_owned(),
            iat,
            exp: iat + 3_600,
            jti: new_token_id(),
        }
    }

    fn refusal_kind(result: Result<LeaseTokenClaims, LeaseKeyError>) -> ErrorKind {
        match result {
            Err(LeaseKeyError::Refused(error)) => error.into_kind(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn openssl_available() -> bool {
        Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|output| output.status.success())
    }

    fn pem_of_seed(seed: &[u8; 32]) -> String {
        // The DER openssl writes for an Ed25519 key, then the seed.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(seed);
        pem::encode(&pem::Pem::new("PRIVATE KEY", der))
    }

    #[test]
    fn mint_then_verify_round_trips_every_claim() {
        let key = LeaseKey::generate();
        let claims = claims();
        let token = key.mint(&claims).expect("mint");
        let verified = key
            .verify(&token, LEASE_TOKEN_AUDIENCE_DEFAULT, ISSUER)
            .expect("verify");
        assert_eq!(verified, claims);

        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
    }

    #[test]
    fn wrong_audience_and_issuer_are_refused() {
        let key = LeaseKey::generate();
        let token = key.mint(&claims()).expect("mint");
        assert_eq!(
            refusal_kind(key.verify(&token, "some-other-gateway", ISSUER)),
            ErrorKind::InvalidAudience
        );
        assert_eq!(
            refusal_kind(key.verify(&token, LEASE_TOKEN_AUDIENCE_DEFAULT, "https://evil.example")),
            ErrorKind::InvalidIssuer
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        let key = LeaseKey::generate();
        let mut claims = claims();
        claims.iat = now() - 7_200;
        claims.exp = now() - LEASE_TOKEN_LEEWAY_S - 1;
        let token = key.mint(&claims).expect("mint");
        assert_eq!(
            refusal_kind(key.verify(&token, LEASE_TOKEN_AUDIENCE_DEFAULT, ISSUER)),
            ErrorKind::ExpiredSignature
        );
    }

    #[test]
    fn claims_expiring_before_issue_are_not_minted() {
        let key = LeaseKey::generate();
        let mut claims = claims();
        claims.exp = claims.iat;
        assert!(matches!(
            key.mint(&claims),
            Err(LeaseKeyError::ExpiresBeforeIssued { .. })
        ));
    }

    #[test]
    fn a_token_signed_by_another_key_is_refused() {
        let ours = LeaseKey::generate();
        let theirs = LeaseKey::generate();
        assert_ne!(ours.kid(), theirs.kid());
        let token = theirs.mint(&claims()).expect("mint");
        assert_eq!(
            refusal_kind(ours.verify(&token, LEASE_TOKEN_AUDIENCE_DEFAULT, ISSUER)),
            ErrorKind::InvalidSignature
        );
    }

    #[test]
    fn hs256_and_unsigned_tokens_are_refused() {
        let key = LeaseKey::generate();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid().to_owned());
        // A shared secret, and the classic confusion: the public key used as the HMAC secret.
        let public_key = URL_SAFE_NO_PAD
            .decode(key.public_key_x())
            .expect("x is base64url");
        for secret in [b"a shared secret".as_slice(), public_key.as_slice()] {
            let token = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret))
                .expect("hs256");
            assert_eq!(
                refusal_kind(key.verify(&token, LEASE_TOKEN_AUDIENCE_DEFAULT, ISSUER)),
                ErrorKind::InvalidAlgorithm
            );
        }

        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).expect("json"))
        );
        assert!(key
            .verify(&unsigned, LEASE_TOKEN_AUDIENCE_DEFAULT, ISSUER)
            .is_err());
        for garbage in ["", ".", "..", "a.b.c", "not a token"] {
            assert!(key
                .verify(garbage, LEASE_TOKEN_AUDIENCE_DEFAULT, ISSUER)
                .is_err());
        }
    }

    #[test]
    fn a_token_missing_a_required_claim_is_refused() {
        let key = LeaseKey::generate();
        for missing in ["exp", "aud", "iss", "sub"] {
            let mut claims = serde_json::to_value(claims()).expect("json");
            if let Some(object) = claims.as_object_mut() {
                object.remove(missing);
            }
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(key.kid().to_owned());
            let token = jsonwebtoken::encode(&header, &claims, &key.encoding_key).expect("mint");
            assert!(
                key.verify(&token, LEASE_TOKEN_AUDIENCE_DEFAULT, ISSUER)
                    .is_err(),
                "a token without {missing} was accepted"
            );
        }
    }

    #[test]
    fn jwks_has_the_served_shape_and_the_rfc_7638_kid() {
        let key = LeaseKey::generate();
        let jwks = key.jwks();
        let keys = jwks["keys"].as_array().expect("keys array");
        assert_eq!(keys.len(), 1);
        let jwk = keys[0].as_object().expect("jwk object");
        let mut members: Vec<&str> = jwk.keys().map(String::as_str).collect();
        members.sort_unstable();
        assert_eq!(members, ["alg", "crv", "kid", "kty", "use", "x"]);
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        let x = jwk["x"].as_str().expect("x");
        assert_eq!(URL_SAFE_NO_PAD.decode(x).expect("base64url").len(), 32);

        // The thumbprint, computed independently: serde_json's map keeps keys sorted.
        let mut required = serde_json::Map::new();
        required.insert("x".to_owned(), x.into());
        required.insert("kty".to_owned(), "OKP".into());
        required.insert("crv".to_owned(), "Ed25519".into());
        let canonical = serde_json::to_string(&required).expect("json");
        assert!(canonical.starts_with(r#"{"crv":"Ed25519","kty":"OKP","x":""#));
        let expected_kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        assert_eq!(jwk["kid"], expected_kid.as_str());
        assert_eq!(key.kid(), expected_kid);

        let token = key.mint(&claims()).expect("mint");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.kid.as_deref(), Some(expected_kid.as_str()));
    }

    #[test]
    fn rfc_8037_example_key_has_the_rfc_thumbprint() {
        // RFC 8037 appendix A.1 (the key) and A.3 (its thumbprint).
        let seed: [u8; 32] = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .expect("base64url")
            .try_into()
            .expect("32 bytes");
        let key = LeaseKey::from_pkcs8_pem(pem_of_seed(&seed).as_bytes()).expect("key");
        assert_eq!(
            key.public_key_x(),
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn a_gateway_verifies_with_the_served_jwks_alone() {
        let key = LeaseKey::generate();
        let claims = claims();
        let token = key.mint(&claims).expect("mint");

        // What the gateway has: the JSON text of the JWKS, and the token.
        let served = serde_json::to_string(&key.jwks()).expect("json");
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&served).expect("a JWKS");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        let kid = header.kid.expect("kid in header");
        let jwk = jwks.find(&kid).expect("kid in the JWKS");
        let decoding_key = DecodingKey::from_jwk(jwk).expect("an Ed25519 JWK");

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[LEASE_TOKEN_AUDIENCE_DEFAULT]);
        validation.set_issuer(&[ISSUER]);
        let verified = jsonwebtoken::decode::<LeaseTokenClaims>(&token, &decoding_key, &validation)
            .expect("valid with the JWKS key");
        assert_eq!(verified.claims, claims);

        // From the bare `x`, as from_ed_components takes it.
        assert_eq!(jwks.keys[0].common.key_id.as_deref(), Some(key.kid()));
        let from_x = DecodingKey::from_ed_components(key.public_key_x()).expect("x");
        assert!(jsonwebtoken::decode::<LeaseTokenClaims>(&token, &from_x, &validation).is_ok());

        // Another key's JWKS does not verify it.
        let other_jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(LeaseKey::generate().jwks()).expect("a JWKS");
        let other = DecodingKey::from_jwk(&other_jwks.keys[0]).expect("an Ed25519 JWK");
        assert!(jsonwebtoken::decode::<LeaseTokenClaims>(&token, &other, &validation).is_err());
    }

    #[test]
    fn load_or_generate_creates_a_private_file_once_then_loads_it() {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let first = LeaseKey::load_or_generate(None, data_dir.path()).expect("create");
        let path = data_dir.path().join(LEASE_KEY_FILE_NAME);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).expect("key file").permissions().mode();
            assert_eq!(mode & 0o777, LEASE_KEY_FILE_MODE);
        }
        let second = LeaseKey::load_or_generate(None, data_dir.path()).expect("load");
        assert_eq!(first.kid(), second.kid());
        let token = first.mint(&claims()).expect("mint");
        assert!(second
            .verify(&token, LEASE_TOKEN_AUDIENCE_DEFAULT, ISSUER)
            .is_ok());

        // Only the key file is left behind: no temporary file.
        let names: Vec<_> = fs::read_dir(data_dir.path())
            .expect("dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, [LEASE_KEY_FILE_NAME]);

        let text = fs::read_to_string(&path).expect("key file");
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(!text.contains('\r'));

        // OpenSSL reads the file and derives the same public key.
        if openssl_available() {
            let output = Command::new("openssl")
                .args(["pkey", "-pubout", "-outform", "DER", "-in"])
                .arg(&path)
                .output()
                .expect("openssl");
            assert!(output.status.success(), "openssl pkey refused our key file");
            let public_key = output.stdout.get(12..).expect("SPKI of an Ed25519 key");
            assert_eq!(URL_SAFE_NO_PAD.encode(public_key), first.public_key_x());
        }
    }

    #[test]
    fn load_or_generate_creates_a_missing_data_directory() {
        let parent = tempfile::tempdir().expect("tempdir");
        let data_dir = parent.path().join("not").join("yet");
        let key = LeaseKey::load_or_generate(None, &data_dir).expect("create");
        let again = LeaseKey::load_or_generate(None, &data_dir).expect("load");
        assert_eq!(key.kid(), again.kid());
    }

    #[test]
    fn concurrent_creators_all_end_up_with_one_key() {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let kids: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        LeaseKey::load_or_generate(None, data_dir.path())
                            .expect("load or create")
                            .kid()
                            .to_owned()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("thread"))
                .collect()
        });
        let on_disk = LeaseKey::load_or_generate(None, data_dir.path()).expect("load");
        assert!(kids.iter().all(|kid| kid == on_disk.kid()), "{kids:?}");
    }

    #[test]
    fn a_configured_key_file_written_by_openssl_loads() {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = directory.path().join("offpeak-lease.pem");
        let expected_x = if openssl_available() {
            let status = Command::new("openssl")
                .args(["genpkey", "-algorithm", "ed25519", "-out"])
                .arg(&file)
                .status()
                .expect("openssl");
            assert!(status.success());
            let output = Command::new("openssl")
                .args(["pkey", "-pubout", "-outform", "DER", "-in"])
                .arg(&file)
                .output()
                .expect("openssl");
            URL_SAFE_NO_PAD.encode(output.stdout.get(12..).expect("SPKI"))
        } else {
            fs::write(&file, OPENSSL_ED25519_PEM).expect("write");
            OPENSSL_ED25519_PUBLIC_X.to_owned()
        };
        let empty_data_dir = directory.path().join("data");
        let key = LeaseKey::load_or_generate(Some(&file), &empty_data_dir).expect("load");
        assert_eq!(key.public_key_x(), expected_x);
        assert!(
            !empty_data_dir.exists(),
            "a configured key file creates nothing"
        );

        // The pasted constant too, independent of the openssl on this machine.
        let constant = LeaseKey::from_pkcs8_pem(OPENSSL_ED25519_PEM.as_bytes()).expect("key");
        assert_eq!(constant.public_key_x(), OPENSSL_ED25519_PUBLIC_X);
    }

    #[test]
    fn a_configured_key_file_that_is_missing_is_an_error() {
        let directory = tempfile::tempdir().expect("tempdir");
        let missing = directory.path().join("nope.pem");
        let error =
            LeaseKey::load_or_generate(Some(&missing), directory.path()).expect_err("missing file");
        assert!(error.to_string().contains("does not exist"), "{error:#}");
        assert!(!directory.path().join(LEASE_KEY_FILE_NAME).exists());
    }

    #[test]
    fn pkcs8_v2_loads_when_its_public_key_matches() {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let signing_key = SigningKey::from_bytes(&[7; 32]);
        let v2 = signing_key.to_pkcs8_der().expect("pkcs8 v2");
        let v2_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", v2.as_bytes()));
        let key = LeaseKey::from_pkcs8_pem(v2_pem.as_bytes()).expect("v2 loads");
        assert_eq!(
            key.public_key_x(),
            URL_SAFE_NO_PAD.encode(signing_key.verifying_key().to_bytes())
        );

        // The public key at its end no longer matches the seed.
        let mut mismatched = v2.as_bytes().to_vec();
        if let Some(last) = mismatched.last_mut() {
            *last ^= 1;
        }
        let mismatched_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", mismatched));
        assert!(matches!(
            LeaseKey::from_pkcs8_pem(mismatched_pem.as_bytes()),
            Err(LeaseKeyError::NotEd25519)
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let not_ed25519_der = pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            vec![0x30, 0x03, 0x02, 0x01, 0x00],
        ));
        let short_seed = pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            [&PKCS8_ED25519_DER_PREFIX[..], &[1; 16]].concat(),
        ));
        type IsExpected = fn(&LeaseKeyError) -> bool;
        let cases: Vec<(Vec<u8>, IsExpected)> = vec![
            (Vec::new(), |e| matches!(e, LeaseKeyError::NotPem)),
            (b"garbage".to_vec(), |e| matches!(e, LeaseKeyError::NotPem)),
            (
                b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n".to_vec(),
                |e| matches!(e, LeaseKeyError::NotPem),
            ),
            (
                b"-----BEGIN PRIVATE KEY-----\nMC4CAQAw\n".to_vec(),
                |e| matches!(e, LeaseKeyError::NotPem),
            ),
            (
                b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMC4CAQAw\n-----END ENCRYPTED PRIVATE KEY-----\n"
                    .to_vec(),
                |e| matches!(e, LeaseKeyError::UnexpectedPemLabel { .. }),
            ),
            (not_ed25519_der.into_bytes(), |e| matches!(e, LeaseKeyError::NotEd25519)),
            (short_seed.into_bytes(), |e| matches!(e, LeaseKeyError::NotEd25519)),
            (OPENSSL_X25519_PEM.as_bytes().to_vec(), |e| {
                matches!(e, LeaseKeyError::NotEd25519)
            }),
            (vec![b'A'; LEASE_KEY_FILE_BYTES_MAX + 1], |e| {
                matches!(e, LeaseKeyError::TooLarge { .. })
            }),
            (vec![0xff; 64], |e| matches!(e, LeaseKeyError::NotPem)),
        ];
        for (input, expected) in cases {
            match LeaseKey::from_pkcs8_pem(&input) {
                Ok(key) => panic!("{:?} loaded as {key:?}", String::from_utf8_lossy(&input)),
                Err(error) => assert!(expected(&error), "{error}"),
            }
        }

        let directory = tempfile::tempdir().expect("tempdir");
        let file = directory.path().join("bad.pem");
        fs::write(&file, "not a key").expect("write");
        let error = LeaseKey::load_or_generate(Some(&file), directory.path()).expect_err("garbage");
        assert!(format!("{error:#}").contains("not PEM"), "{error:#}");
        // A garbage file in the data directory is an error too, never silently replaced.
        fs::write(directory.path().join(LEASE_KEY_FILE_NAME), "not a key").expect("write");
        assert!(LeaseKey::load_or_generate(None, directory.path()).is_err());
    }

    #[test]
    fn debug_and_errors_show_no_key_material() {
        let key = LeaseKey::from_pkcs8_pem(OPENSSL_ED25519_PEM.as_bytes()).expect("key");
        let debug = format!("{key:?}");
        assert_eq!(debug, format!("LeaseKey {{ kid: {:?}, .. }}", key.kid()));
        let body = OPENSSL_ED25519_PEM.lines().nth(1).expect("body line");
        assert!(!debug.contains(&body[..16]));

        // An Ed25519 seed under the wrong label: the error names the label only.
        let relabelled = OPENSSL_ED25519_PEM.replace("PRIVATE KEY", "SECRET STUFF");
        let error = LeaseKey::from_pkcs8_pem(relabelled.as_bytes()).expect_err("label");
        assert!(!error.to_string().contains(&body[..16]), "{error}");
        assert!(error.to_string().contains("SECRET STUFF"), "{error}");
    }

    /// Writes `token.txt` and `jwks.json` into `$LEASE_TOKEN_FIXTURE_DIR`, for trying
    /// `verify_lease_token.py` against a served JWKS. Run with `--ignored`.
    #[test]
    #[ignore = "writes a fixture for the Python verifier; needs LEASE_TOKEN_FIXTURE_DIR"]
    fn write_fixture_for_the_python_verifier() {
        let Some(directory) = std::env::var_os("LEASE_TOKEN_FIXTURE_DIR") else {
            return;
        };
        let directory = PathBuf::from(directory);
        let key = LeaseKey::generate();
        let token = key.mint(&claims()).expect("mint");
        fs::create_dir_all(directory.join(".well-known")).expect("dir");
        fs::write(
            directory.join(".well-known").join("jwks.json"),
            serde_json::to_vec(&key.jwks()).expect("json"),
        )
        .expect("jwks");
        fs::write(directory.join("token.txt"), token).expect("token");
    }
}
