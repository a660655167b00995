//! The handoff (DESIGN sections 11 and 12) over REST on PostgreSQL: buyers' ssh keys, the
//! supplier's `ready` and `failed`, billing from ready, the provisioning timeout, model pools
//! and their lease tokens. The Redis round trip is in `redis.rs`, the WebSocket messages in
//! `ws.rs`, SQLite in `embedded.rs`.

use crate::helpers::{code, eventually, rfc3339_in, TestApp, POOL};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// Real OpenSSH public keys (`ssh-keygen`).
pub const ED25519_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC5k3K7KDeQvz2YfHkn5XCT+dAunPX0yMg638MMYjOo9 alice@laptop";
const RSA_1024_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCo5IhGs1jqhDE6YhDFNzGNCLuEagRDtm5+lVU2oD4SkYGfR4wILpwnLCEWoGey9kK6pEREDLsryQZeHnxT69NUhYzFKN5iPBDagpaFPCvXb5pDut9fogb8X9htG1U0CFF9r5aJRc3M1QUAUICCN5xXze6p5qbHq3d653t8hiPWQw== old@box";

/// The default model pool.
pub const MODEL_POOL: &str = "llama-3.1-70b-instruct.us-east";

/// A block of 8 GPUs on two nodes in [`POOL`], and a lease of 4 from it for `buyer`.
async fn lease_on_nodes(app: &TestApp, buyer: &str, keys: Option<Value>) -> Value {
    let supplier = app.token("dc1", "supplier");
    let (status, body) = app
        .post(
            "/v1/capacity",
            Some(&supplier),
            json!({
                "block_id": "b1", "pool": POOL, "gpus": 8, "reserve_price": "1.50",
                "available_until": rfc3339_in(3 * 3600),
                "nodes": [{"node": "rack1-n1", "gpus": 4}, {"node": "rack1-n2", "gpus": 4}],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut bid = json!({"pool": POOL, "gpus": 4, "price": "2.00", "duration_s": 3600});
    if let Some(keys) = keys {
        bid["ssh_public_keys"] = keys;
    }
    let (status, body) = app.post("/v1/orders", Some(buyer), bid).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["leases"][0].clone()
}

fn ready_path(block: &str, lease: &Value) -> String {
    format!(
        "/v1/capacity/{block}/leases/{}/ready",
        lease["id"].as_str().unwrap()
    )
}

#[tokio::test]
async fn ssh_keys_are_parsed_for_real_and_default_to_the_accounts() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    for (keys, index) in [
        (json!([ED25519_KEY, RSA_1024_KEY]), "[1]"),
        (json!(["ssh-ed25519 AAAA!!!"]), "[0]"),
        (json!(["ssh-dss AAAAB3NzaC1kc3MAAACBAP"]), "[0]"),
        (json!(vec![ED25519_KEY; 9]), "[8]"),
    ] {
        let (status, body) = app
            .put(
                "/v1/account/ssh-keys",
                Some(&buyer),
                json!({ "keys": keys }),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(code(&body), "invalid_ssh_key");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(index), "{message} names {index}");
    }
    let (_, none) = app.get("/v1/account/ssh-keys", Some(&buyer)).await;
    assert_eq!(none["keys"], json!([]));
    let padded = format!("  {}  ", ED25519_KEY.replace(' ', "   "));
    let (status, body) = app
        .put(
            "/v1/account/ssh-keys",
            Some(&buyer),
            json!({ "keys": [padded] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keys"], json!([ED25519_KEY]), "normalised");
    let (_, stored) = app.get("/v1/account/ssh-keys", Some(&buyer)).await;
    assert_eq!(stored["keys"], json!([ED25519_KEY]));
    // Only buyers keep keys.
    let supplier = app.token("dc1", "supplier");
    let (status, _) = app.get("/v1/account/ssh-keys", Some(&supplier)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A bid with a bad key is refused before anything happens; without keys it takes the
    // account's defaults.
    let (status, body) = app
        .post(
            "/v1/orders",
            Some(&buyer),
            json!({"pool": POOL, "gpus": 1, "price": "2.00", "duration_s": 3600,
                   "ssh_public_keys": [RSA_1024_KEY]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "invalid_ssh_key");
    let lease = lease_on_nodes(&app, &buyer, None).await;
    assert_eq!(lease["ssh_public_keys"], json!([ED25519_KEY]), "{lease}");
    assert_eq!(lease["access"]["status"], "provisioning");
}

#[tokio::test]
async fn the_supplier_hands_access_over_and_billing_starts_at_ready() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let supplier = app.token("dc1", "supplier");
    let lease = lease_on_nodes(&app, &buyer, Some(json!([ED25519_KEY]))).await;
    let id = lease["id"].as_str().unwrap().to_owned();
    assert_eq!(lease["access"]["status"], "provisioning", "{lease}");
    assert!(lease["access"]["ready_at"].is_null());
    assert_eq!(lease["ssh_public_keys"], json!([ED25519_KEY]));

    // One endpoint per node the lease holds.
    let held = lease["nodes"].as_array().unwrap();
    assert_eq!(held.len(), 1, "4 GPUs fit on one node of 4: {lease}");
    let endpoints = json!([
        {"node": held[0]["node"], "host": "10.1.0.1", "port": 22, "user": "ubuntu"},
    ]);
    // Nobody else may answer for it: another supplier, a wrong block, a buyer.
    let other = app.token("dc2", "supplier");
    let (status, body) = app
        .post(
            &ready_path("b1", &lease),
            Some(&other),
            json!({ "endpoints": endpoints }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(code(&body), "unknown_lease");
    let (status, _) = app
        .post(
            &ready_path("b2", &lease),
            Some(&supplier),
            json!({ "endpoints": endpoints }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post(
            &ready_path("b1", &lease),
            Some(&buyer),
            json!({ "endpoints": endpoints }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Endpoints that do not fit the lease, or do not parse.
    let (status, body) = app
        .post(
            &ready_path("b1", &lease),
            Some(&supplier),
            json!({"endpoints": [{"node": "rack9-n9", "host": "10.9.9.9", "port": 22, "user": "u"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "endpoints_invalid");
    let (status, body) = app
        .post(
            &ready_path("b1", &lease),
            Some(&supplier),
            json!({"endpoint": "https://gw.example/v1"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "endpoints_invalid")
    );
    let (status, body) = app
        .post(
            &ready_path("b1", &lease),
            Some(&supplier),
            json!({"endpoints": [{"host": "a b", "port": 22, "user": "u"}]}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_body")
    );

    let (status, ready) = app
        .post(
            &ready_path("b1", &lease),
            Some(&supplier),
            json!({ "endpoints": endpoints }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["lease"]["access"]["status"], "ready");
    assert_eq!(ready["lease"]["access"]["endpoints"], endpoints);
    let ready_at = ready["lease"]["access"]["ready_at"]
        .as_str()
        .unwrap()
        .to_owned();
    // A second ready changes nothing.
    let (status, again) = app
        .post(
            &ready_path("b1", &lease),
            Some(&supplier),
            json!({"endpoints": [{"host": "10.0.0.99", "port": 2222, "user": "x"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["lease"]["access"]["endpoints"], endpoints);
    assert_eq!(again["lease"]["access"]["ready_at"], ready_at.as_str());
    // failed after ready is a conflict.
    let (status, body) = app
        .post(
            &format!("/v1/capacity/b1/leases/{id}/failed"),
            Some(&supplier),
            json!({"reason": "too late"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "lease_not_provisioning")
    );

    // The buyer sees the endpoints; nobody else sees the lease.
    let (_, mine) = app.get(&format!("/v1/leases/{id}"), Some(&buyer)).await;
    assert_eq!(mine["lease"]["access"]["endpoints"], endpoints, "{mine}");
    let stranger = app.token("zeta", "buyer");
    let (status, _) = app.get(&format!("/v1/leases/{id}"), Some(&stranger)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, page) = app.get("/v1/leases", Some(&stranger)).await;
    assert_eq!(page["leases"], json!([]));

    // Billing counts from ready_at: a release right away costs (almost) nothing, although the
    // lease opened earlier.
    let (status, released) = app
        .post(&format!("/v1/leases/{id}/release"), Some(&buyer), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(released["lease"]["status"], "released");
    assert_eq!(released["lease"]["access"]["ready_at"], ready_at.as_str());
    assert_eq!(released["lease"]["cost"], "0.00", "{released}");
    // The leases table keeps the access.
    let row = app
        .db()
        .client()
        .await
        .query_one(
            "SELECT access, ssh_public_keys FROM leases WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let access: Value = serde_json::from_str(row.get::<_, &str>(0)).unwrap();
    assert_eq!(access["status"], "ready");
    let keys: Value = serde_json::from_str(row.get::<_, &str>(1)).unwrap();
    assert_eq!(keys, json!([ED25519_KEY]));
}

#[tokio::test]
async fn a_failed_lease_costs_nothing_its_gpus_leave_the_block_and_a_persistent_bid_bids_again() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let supplier = app.token("dc1", "supplier");
    app.release_block(&supplier, "b1", 8, "1.50", 3).await;
    let (status, placed) = app
        .post(
            "/v1/orders",
            Some(&buyer),
            json!({"pool": POOL, "gpus": 4, "price": "2.00", "duration_s": 3600,
                   "persistent": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let lease = &placed["leases"][0];
    let id = lease["id"].as_str().unwrap();
    let (status, failed) = app
        .post(
            &format!("/v1/capacity/b1/leases/{id}/failed"),
            Some(&supplier),
            json!({"reason": "GPU health check failed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    assert_eq!(failed["lease"]["status"], "failed");
    assert_eq!(failed["lease"]["access"]["status"], "failed");
    assert_eq!(
        failed["lease"]["access"]["reason"],
        "GPU health check failed"
    );
    assert_eq!(failed["lease"]["cost"], "0.00");
    let (status, body) = app
        .post(
            &format!("/v1/capacity/b1/leases/{id}/failed"),
            Some(&supplier),
            json!({"reason": ""}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The 4 failed GPUs left the block; the persistent bid took the other 4 at once.
    let (_, block) = app.get("/v1/capacity/b1", Some(&supplier)).await;
    assert_eq!(block["block"]["gpus_failed"], 4, "{block}");
    assert_eq!(block["block"]["gpus_reclaimed"], 4);
    assert_eq!(block["block"]["gpus_sold"], 4);
    assert_eq!(block["block"]["gpus_unsold"], 0);
    let (_, leases) = app.get("/v1/leases", Some(&buyer)).await;
    let leases = leases["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 2, "{leases:?}");
    assert_eq!(leases[0]["status"], "active", "the re-bid's lease");
    assert_eq!(leases[1]["status"], "failed");
    let (_, failed_only) = app.get("/v1/leases?status=failed", Some(&buyer)).await;
    assert_eq!(failed_only["leases"][0]["id"], id);
}

#[tokio::test]
async fn a_lease_not_ready_in_time_fails_by_itself() {
    let app = TestApp::spawn_with(|env| {
        env.insert("OFFPEAK_IDLE_TICK_MS".into(), "100".into());
    })
    .await;
    let admin = app.token("root", "admin");
    let (status, body) = app
        .put(
            &format!("/v1/admin/pools/{POOL}"),
            Some(&admin),
            json!({"gpu": "h100-sxm", "region": "us-east", "provision_timeout_s": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pool"]["provision_timeout_s"], 1, "{body}");
    let buyer = app.token("acme", "buyer");
    let supplier = app.token("dc1", "supplier");
    app.release_block(&supplier, "b1", 4, "1.50", 3).await;
    let (_, placed) = app.bid(&buyer, 4, "2.00").await;
    let id = placed["leases"][0]["id"].as_str().unwrap().to_owned();
    let lease = eventually(Duration::from_secs(20), "the lease to time out", || async {
        let (_, body) = app.get(&format!("/v1/leases/{id}"), Some(&buyer)).await;
        (body["lease"]["status"] == "failed").then_some(body)
    })
    .await;
    assert_eq!(lease["lease"]["access"]["reason"], "provision_timeout");
    assert_eq!(lease["lease"]["cost"], "0.00");
}

#[tokio::test]
async fn a_model_pool_quotes_per_million_tokens_and_mints_lease_tokens_for_its_gateway() {
    let app = TestApp::spawn().await;
    let (status, pools) = app.get("/v1/pools", None).await;
    assert_eq!(status, StatusCode::OK);
    let model = pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == MODEL_POOL)
        .unwrap_or_else(|| panic!("a default model pool in {pools}"))
        .clone();
    assert_eq!(model["offering"], "model");
    assert_eq!(model["model"], "llama-3.1-70b-instruct");
    assert_eq!(model["tokens_per_s_per_gpu"], 400);
    assert_eq!(model["gpu"], "h100-sxm");

    let supplier = app.token("dc1", "supplier");
    let (status, body) = app
        .post(
            "/v1/capacity",
            Some(&supplier),
            json!({"block_id": "m1", "pool": MODEL_POOL, "gpus": 8, "reserve_price": "1.44",
                   "available_until": rfc3339_in(3 * 3600)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // $1.44 per GPU-hour at 400 tokens/s per GPU: 1,440,000 tokens per GPU-hour, so $1.00 per
    // million tokens.
    let (_, pool) = app.get(&format!("/v1/pools/{MODEL_POOL}"), None).await;
    assert_eq!(pool["pool"]["price_per_million_tokens"], "1.00", "{pool}");
    let (_, book) = app.get(&format!("/v1/pools/{MODEL_POOL}/book"), None).await;
    assert_eq!(
        book["asks"][0]["price_per_million_tokens"], "1.00",
        "{book}"
    );
    let (_, quote) = app
        .get(
            &format!("/v1/pools/{MODEL_POOL}/quote?gpus=2&duration_s=3600"),
            None,
        )
        .await;
    assert_eq!(quote["price_per_million_tokens"], "1.00", "{quote}");
    let (_, bare) = app.get(&format!("/v1/pools/{POOL}"), None).await;
    assert!(bare["pool"].get("price_per_million_tokens").is_none());

    let buyer = app.token("acme", "buyer");
    let (status, placed) = app
        .post(
            "/v1/orders",
            Some(&buyer),
            json!({"pool": MODEL_POOL, "gpus": 2, "price": "1.50", "duration_s": 3600,
                   "ssh_public_keys": [ED25519_KEY]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let lease = placed["leases"][0].clone();
    assert!(
        lease.get("ssh_public_keys").is_none(),
        "model leases take no keys: {lease}"
    );
    let id = lease["id"].as_str().unwrap().to_owned();
    let token_path = format!("/v1/leases/{id}/token");
    let (status, body) = app.post(&token_path, Some(&buyer), json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "lease_not_ready")
    );
    let stranger = app.token("zeta", "buyer");
    let (status, _) = app.post(&token_path, Some(&stranger), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A model lease is ready with an endpoint, not ssh endpoints.
    let (status, body) = app
        .post(
            &ready_path("m1", &lease),
            Some(&supplier),
            json!({"endpoints": [{"host": "10.0.0.1", "port": 22, "user": "u"}]}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "endpoints_invalid")
    );
    let (status, ready) = app
        .post(
            &ready_path("m1", &lease),
            Some(&supplier),
            json!({"endpoint": "https://gateway.dc1.example/v1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(
        ready["lease"]["access"]["endpoint"],
        "https://gateway.dc1.example/v1"
    );

    let (status, minted) = app.post(&token_path, Some(&buyer), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{minted}");
    let token = minted["token"].as_str().unwrap();
    // A gateway verifies it with the served JWKS alone.
    let (status, jwks) = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let jwk = &jwks["keys"][0];
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), jwk["kid"].as_str());
    let key = DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["offpeak-gateway"]);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "acme");
    assert_eq!(claims["lease"].as_u64(), id.parse::<u64>().ok());
    assert_eq!(claims["pool"], MODEL_POOL);
    assert_eq!(claims["gpus"], 2);
    assert_eq!(claims["tokens_per_s"], 800);
    let lease_ends = time::OffsetDateTime::parse(
        lease["ends_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert!(claims["exp"].as_i64().unwrap() <= lease_ends, "{claims}");
    // A lease token is never an API token.
    let (status, _) = app.get("/v1/leases", Some(token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Bare-metal leases are reached over ssh, not with tokens.
    let bare = lease_on_nodes(&app, &buyer, None).await;
    let (status, body) = app
        .post(
            &format!("/v1/leases/{}/token", bare["id"].as_str().unwrap()),
            Some(&buyer),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "not_a_model_lease")
    );
}

#[tokio::test]
async fn a_restart_replays_the_handoff_to_the_same_state() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let supplier = app.token("dc1", "supplier");
    let (status, _) = app
        .put(
            "/v1/account/ssh-keys",
            Some(&buyer),
            json!({ "keys": [ED25519_KEY] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let lease = lease_on_nodes(&app, &buyer, None).await;
    let node = lease["nodes"][0]["node"].clone();
    let (status, body) = app
        .post(
            &ready_path("b1", &lease),
            Some(&supplier),
            json!({"endpoints": [{"node": node, "host": "h1", "port": 22, "user": "u"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, second) = app.bid(&buyer, 4, "2.00").await;
    let failed_id = second["leases"][0]["id"].as_str().unwrap();
    let (status, _) = app
        .post(
            &format!("/v1/capacity/b1/leases/{failed_id}/failed"),
            Some(&supplier),
            json!({"reason": "no route to rack1-n2"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let before = app.state_hash().await;
    let db = app.stop().await;
    // Without snapshots: the journal alone rebuilds it.
    db.client()
        .await
        .batch_execute("DELETE FROM snapshots")
        .await
        .unwrap();
    let env = crate::helpers::base_env(&db.url());
    let app = TestApp::spawn_on(db, env).await;
    assert_eq!(app.state_hash().await, before);
    let (_, keys) = app.get("/v1/account/ssh-keys", Some(&buyer)).await;
    assert_eq!(keys["keys"], json!([ED25519_KEY]));
}
