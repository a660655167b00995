//! The bearer-token verifier (`offpeak::auth::Verifier`, HS256 with a secret) on arbitrary
//! tokens.
//!
//! The first byte of an input picks how the rest becomes a token:
//! - even: the rest is the token itself (lossy UTF-8), so seeds are real tokens;
//! - odd: the rest is decoded into a token built here: a header (`HS256`, `none`, `HS384`,
//!   `RS256`, extra fields), claims with right, wrong, missing and edge values, a signature
//!   (the secret's, another secret's, none, garbage), then an optional byte mutation.
//!
//! `verify` must never panic, and every token it accepts must be one the secret signed: its
//! header says HS256, its signature is HMAC-SHA256 with the secret over `header.payload`
//! (checked here with `hmac`/`sha2`, independently of `jsonwebtoken`), its issuer and
//! audience are right and it has not expired. A well-formed, unexpired token built here
//! with the secret and left alone must be accepted, so the check is not vacuous.

#![no_main]

use arbitrary::{Result, Unstructured};
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use offpeak::auth::{is_valid_account_id, Verifier};
use offpeak::config::{JwtKeySource, JwtSettings, Secret};
use offpeak::limits::{JWT_LEEWAY_S, TOKEN_BYTES_MAX};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::OnceLock;

/// The seeds in `corpus/jwt` are signed with this secret.
const SECRET: &[u8] = b"offpeak-fuzz-secret-0123456789abcdef";
const OTHER_SECRET: &[u8] = b"offpeak-fuzz-another-secret-0123456789";
const ISSUER: &str = "offpeak";
const AUDIENCE: &str = "offpeak";

/// Encodes without padding, decodes whatever padding and trailing bits a token has.
const B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let settings = JwtSettings {
            key: JwtKeySource::Secret(Secret::new(
                String::from_utf8(SECRET.to_vec()).expect("ASCII"),
            )),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
        };
        Verifier::from_settings(&settings, std::path::Path::new("/nonexistent"))
            .expect("an HS256 verifier")
    })
}

fn hmac(secret: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// A token, and whether it is one the verifier must accept.
fn built(u: &mut Unstructured) -> Result<(String, bool)> {
    let now = now_s();
    let mut valid = true;
    let header = match u.int_in_range(0..=7u8)? {
        0 => {
            valid = false;
            json!({"alg": "none", "typ": "JWT"})
        }
        1 => {
            valid = false;
            json!({"alg": "HS384", "typ": "JWT"})
        }
        2 => {
            valid = false;
            json!({"alg": "RS256", "typ": "JWT"})
        }
        3 => {
            valid = false;
            json!({"alg": u.arbitrary::<String>()?})
        }
        4 => json!({"alg": "HS256", "typ": "JWT", "kid": u.arbitrary::<String>()?}),
        _ => json!({"alg": "HS256", "typ": "JWT"}),
    };
    let mut claims = json!({
        "sub": "acme",
        "role": "buyer",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 3600,
    });
    for _ in 0..u.int_in_range(0..=3u8)? {
        let field = *u.choose(&["sub", "role", "iss", "aud", "exp", "nbf", "iat", "extra"])?;
        let value = match u.int_in_range(0..=9u8)? {
            0 => Value::Null,
            1 => json!(u.arbitrary::<String>()?),
            2 => json!(u.arbitrary::<i64>()?),
            3 => json!(u.arbitrary::<f64>()?),
            4 => json!(now - 3600),
            5 => json!(now + 600),
            6 => json!([AUDIENCE, "other"]),
            7 => json!(*u.choose(&["admin", "supplier", "viewer", "root", ""])?),
            8 => json!({}),
            _ => json!(u64::MAX),
        };
        // Whether the claims are still plainly valid is judged below.
        claims[field] = value;
    }
    if u.ratio(1, 8)? {
        let field = *u.choose(&["sub", "role", "iss", "aud", "exp"])?;
        claims.as_object_mut().expect("object").remove(field);
    }
    valid &= plainly_valid(&claims, now);
    let signing_input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let signature = match u.int_in_range(0..=7u8)? {
        0 => {
            valid = false;
            B64.encode(hmac(OTHER_SECRET, signing_input.as_bytes()))
        }
        1 => {
            valid = false;
            String::new()
        }
        2 => {
            valid = false;
            B64.encode(u.arbitrary::<Vec<u8>>()?)
        }
        3 => {
            valid = false;
            // The secret's signature over another payload.
            B64.encode(hmac(SECRET, b"eyJhbGciOiJIUzI1NiJ9.e30"))
        }
        _ => B64.encode(hmac(SECRET, signing_input.as_bytes())),
    };
    let mut token = format!("{signing_input}.{signature}").into_bytes();
    match u.int_in_range(0..=5u8)? {
        0 if !token.is_empty() => {
            let at = u.choose_index(token.len())?;
            token[at] ^= u.int_in_range(1..=255u8)?;
            valid = false;
        }
        1 if !token.is_empty() => {
            token.truncate(u.choose_index(token.len())?);
            valid = false;
        }
        2 => {
            let extra = u.int_in_range(1..=4)?;
            token.extend_from_slice(u.bytes(extra)?);
            valid = false;
        }
        _ => {}
    }
    Ok((String::from_utf8_lossy(&token).into_owned(), valid))
}

/// Claims any verifier must take: right issuer and audience, a good `sub` and role, an
/// expiry well ahead, no `nbf` in the future.
fn plainly_valid(claims: &Value, now: i64) -> bool {
    let str_of = |k: &str| claims.get(k).and_then(Value::as_str);
    let int_of = |k: &str| claims.get(k).and_then(Value::as_i64);
    str_of("iss") == Some(ISSUER)
        && str_of("aud") == Some(AUDIENCE)
        && str_of("sub").is_some_and(is_valid_account_id)
        && str_of("role").is_some_and(|r| ["buyer", "supplier", "viewer", "admin"].contains(&r))
        && int_of("exp").is_some_and(|exp| exp > now + 60)
        && claims
            .get("nbf")
            // A NumericDate before 1970 is refused (`jsonwebtoken` reads a u64): fine.
            .is_none_or(|nbf| nbf.as_u64().is_some_and(|n| n < (now - 60) as u64))
        && claims.get("iat").is_none_or(|iat| iat.is_u64())
}

/// Panics unless `token` is signed with the secret, says HS256, and is current.
fn assert_signed_and_current(token: &str) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "accepted a token of {} parts", parts.len());
    let header: Value =
        serde_json::from_slice(&B64.decode(parts[0]).expect("header base64")).expect("header JSON");
    assert_eq!(
        header["alg"], "HS256",
        "accepted a token whose header is {header}"
    );
    let signature = B64.decode(parts[2]).expect("signature base64");
    let expected = hmac(SECRET, format!("{}.{}", parts[0], parts[1]).as_bytes());
    assert!(
        signature == expected,
        "accepted a token not signed with the secret: {token}"
    );
    let claims: Value =
        serde_json::from_slice(&B64.decode(parts[1]).expect("claims base64")).expect("claims JSON");
    let exp = claims["exp"]
        .as_f64()
        .expect("accepted a token without exp");
    assert!(
        exp + JWT_LEEWAY_S as f64 + 5.0 >= now_s() as f64,
        "accepted an expired token: {claims}"
    );
    // `jsonwebtoken` takes `iss` and `aud` as a string or a list that contains the expected
    // one; lenient, but only the secret's holder can sign such a token.
    let names = |claim: &Value, expected: &str| {
        claim == expected
            || claim
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == expected))
    };
    assert!(
        names(&claims["iss"], ISSUER),
        "accepted a wrong issuer: {claims}"
    );
    assert!(
        names(&claims["aud"], AUDIENCE),
        "accepted a wrong audience: {claims}"
    );
}

fn run(data: &[u8]) -> Result<()> {
    let Some((&mode, rest)) = data.split_first() else {
        return Ok(());
    };
    let (token, must_accept) = if mode % 2 == 0 {
        (String::from_utf8_lossy(rest).into_owned(), false)
    } else {
        built(&mut Unstructured::new(rest))?
    };
    match verifier().verify(&token) {
        Ok(principal) => {
            assert_signed_and_current(&token);
            assert!(is_valid_account_id(&principal.account), "{principal:?}");
        }
        Err(_) => assert!(
            !must_accept || token.len() > TOKEN_BYTES_MAX,
            "refused a token signed with the secret: {token}"
        ),
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
