//! Authentication and authorization: every bad token is 401, a wrong role is 403, and the
//! algorithm is pinned (no `alg: none`, no HS256 signed with the RSA public key).

use crate::helpers::{claims, code, now_s, sign, sign_with, token, TestApp, TestDb, SECRET};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::json;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn b64(bytes: &[u8]) -> String {
    // base64url without padding, enough for hand-made tokens.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

async fn status_with(app: &TestApp, token: &str) -> (StatusCode, serde_json::Value) {
    app.get("/v1/orders", Some(token)).await
}

#[tokio::test]
async fn a_valid_buyer_token_is_accepted() {
    let app = TestApp::spawn().await;
    let (status, body) = status_with(&app, &token("acme", "buyer")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn missing_or_malformed_authorization_is_401_with_a_bearer_challenge() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(format!("{}/v1/orders", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(code(&body), "unauthorized");

    let basic = app
        .http
        .get(format!("{}/v1/orders", app.address))
        .header("authorization", "Basic YWNtZTpodW50ZXIy")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    for garbage in ["", "not-a-jwt", "a.b.c", "...."] {
        let (status, _) = status_with(&app, garbage).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{garbage:?}");
    }
}

#[tokio::test]
async fn alg_none_is_refused() {
    let app = TestApp::spawn().await;
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims("acme", "buyer").to_string().as_bytes());
    for unsigned in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        let (status, body) = status_with(&app, &unsigned).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
}

#[tokio::test]
async fn expired_tokens_are_refused_beyond_the_small_leeway() {
    let app = TestApp::spawn().await;
    let mut expired = claims("acme", "buyer");
    expired["exp"] = json!(now_s() - 60);
    let (status, _) = status_with(&app, &sign(&expired)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Not yet valid.
    let mut early = claims("acme", "buyer");
    early["nbf"] = json!(now_s() + 600);
    let (status, _) = status_with(&app, &sign(&early)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn wrong_or_missing_audience_issuer_expiry_or_subject_is_refused() {
    let app = TestApp::spawn().await;
    type Change = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Change)> = vec![
        ("wrong aud", Box::new(|c| c["aud"] = json!("someone-else"))),
        (
            "missing aud",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        ("wrong iss", Box::new(|c| c["iss"] = json!("evil"))),
        (
            "missing iss",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
        ),
        (
            "missing exp",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "missing sub",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        ("unknown role", Box::new(|c| c["role"] = json!("superuser"))),
        (
            "sub with spaces",
            Box::new(|c| c["sub"] = json!("acme corp")),
        ),
    ];
    for (what, change) in cases {
        let mut c = claims("acme", "buyer");
        change(&mut c);
        let (status, body) = status_with(&app, &sign(&c)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(code(&body), "unauthorized", "{what}");
    }
}

#[tokio::test]
async fn a_tampered_payload_or_a_foreign_signature_is_refused() {
    let app = TestApp::spawn().await;
    let genuine = token("acme", "buyer");
    let parts: Vec<&str> = genuine.split('.').collect();
    // Same signature, payload promoted to admin.
    let forged_payload = b64(claims("acme", "admin").to_string().as_bytes());
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let (status, _) = app.get("/v1/admin/state-hash", Some(&tampered)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Signed with another secret.
    let foreign = sign_with(
        &Header::new(Algorithm::HS256),
        &claims("acme", "buyer"),
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
    );
    let (status, _) = status_with(&app, &foreign).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // HS512 with the right secret: not the pinned algorithm.
    let other_alg = sign_with(
        &Header::new(Algorithm::HS512),
        &claims("acme", "buyer"),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    let (status, _) = status_with(&app, &other_alg).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_wrong_role_is_403_for_every_protected_resource() {
    let app = TestApp::spawn().await;
    let buyer = token("acme", "buyer");
    let supplier = token("dc1", "supplier");
    let viewer = token("watcher", "viewer");
    let admin = token("root", "admin");
    for (path, who) in [
        ("/v1/orders", &supplier),
        ("/v1/orders", &viewer),
        ("/v1/orders", &admin),
        ("/v1/leases", &supplier),
        ("/v1/capacity", &buyer),
        ("/v1/capacity", &viewer),
        ("/v1/admin/state-hash", &buyer),
        ("/v1/admin/state-hash", &supplier),
    ] {
        let (status, body) = app.get(path, Some(who)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(code(&body), "forbidden");
    }
    let (status, _) = app
        .post(
            "/v1/orders",
            Some(&supplier),
            json!({"pool": "h100-sxm.us-east", "gpus": 1, "price": "1.00", "duration_s": 3600}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn rs256_deployments_refuse_hs256_signed_with_the_public_key() {
    let app = TestApp::spawn_with(|env| {
        env.remove("OFFPEAK_JWT_SECRET");
        env.insert(
            "OFFPEAK_JWT_PUBLIC_KEY_FILE".into(),
            fixture("jwt-rs256-public.pem").display().to_string(),
        );
    })
    .await;
    let private = std::fs::read(fixture("jwt-rs256-private.pem")).unwrap();
    let public = std::fs::read(fixture("jwt-rs256-public.pem")).unwrap();
    let rs256 = sign_with(
        &Header::new(Algorithm::RS256),
        &claims("acme", "buyer"),
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    );
    let (status, body) = status_with(&app, &rs256).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The classic confusion attack: the public key (which is public) used as an HMAC secret.
    let confused = sign_with(
        &Header::new(Algorithm::HS256),
        &claims("acme", "buyer"),
        &EncodingKey::from_secret(&public),
    );
    let (status, _) = status_with(&app, &confused).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // And an HS256 token with the test secret means nothing here either.
    let (status, _) = status_with(&app, &token("acme", "buyer")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn eddsa_deployments_accept_eddsa_tokens_only() {
    let app = TestApp::spawn_with(|env| {
        env.remove("OFFPEAK_JWT_SECRET");
        env.insert(
            "OFFPEAK_JWT_PUBLIC_KEY_FILE".into(),
            fixture("jwt-eddsa-public.pem").display().to_string(),
        );
    })
    .await;
    let private = std::fs::read(fixture("jwt-eddsa-private.pem")).unwrap();
    let eddsa = sign_with(
        &Header::new(Algorithm::EdDSA),
        &claims("acme", "buyer"),
        &EncodingKey::from_ed_pem(&private).unwrap(),
    );
    let (status, body) = status_with(&app, &eddsa).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rsa_private = std::fs::read(fixture("jwt-rs256-private.pem")).unwrap();
    let rs256 = sign_with(
        &Header::new(Algorithm::RS256),
        &claims("acme", "buyer"),
        &EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
    );
    let (status, _) = status_with(&app, &rs256).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

fn offpeak_token(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_offpeak"));
    command.arg("token").args(args);
    for var in [
        "OFFPEAK_JWT_SECRET",
        "OFFPEAK_JWT_PUBLIC_KEY_FILE",
        "OFFPEAK_DATA_DIR",
        "DATABASE_URL",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command.output().expect("run offpeak token")
}

#[tokio::test]
async fn offpeak_token_mints_what_the_server_accepts() {
    let app = TestApp::spawn().await;
    let out = offpeak_token(
        &[("OFFPEAK_JWT_SECRET", SECRET)],
        &["--sub", "acme", "--role", "buyer", "--ttl", "10m"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (status, body) = status_with(&app, &minted).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let out = offpeak_token(
        &[("OFFPEAK_JWT_SECRET", SECRET)],
        &["--sub", "dc1", "--role", "supplier"],
    );
    let supplier = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (status, _) = status_with(&app, &supplier).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Refuses nonsense rather than minting it.
    let bad = offpeak_token(
        &[("OFFPEAK_JWT_SECRET", SECRET)],
        &["--sub", "acme", "--role", "emperor"],
    );
    assert!(!bad.status.success());
}

#[tokio::test]
async fn without_a_configured_key_the_server_and_offpeak_token_share_a_generated_secret() {
    let dir = std::env::temp_dir().join(format!("offpeak-test-{:x}", rand::random::<u64>()));
    let data_dir = dir.display().to_string();
    // `offpeak token` first: it creates the secret; the server then finds the same one.
    let out = offpeak_token(
        &[("OFFPEAK_DATA_DIR", &data_dir)],
        &["--sub", "acme", "--role", "buyer"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let secret_file = dir.join("jwt-secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the secret file is private: {mode:o}");
    }
    let db = TestDb::create().await;
    let mut env = crate::helpers::base_env(&db.url());
    env.remove("OFFPEAK_JWT_SECRET");
    env.insert("OFFPEAK_DATA_DIR".into(), data_dir.clone());
    let app = TestApp::spawn_on(db, env).await;
    let (status, body) = status_with(&app, &minted).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The test's own secret is not the generated one.
    let (status, _) = status_with(&app, &token("acme", "buyer")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let _ = std::fs::remove_dir_all(&dir);
}
