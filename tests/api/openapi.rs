//! `/openapi.json`: structurally valid OpenAPI 3.1, every route the server serves in it (from
//! the same route table actix registers), and every documented operation answering as the
//! document says: served at its path and method, with its role, and only with the error codes
//! it lists. Real answers are checked against their documented schemas.

use crate::helpers::{code, rfc3339_in, TestApp, POOL};
use offpeak::routes::ENDPOINTS;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(app: &TestApp) -> Value {
    let response = app
        .http
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .expect("GET /openapi.json");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    response.json().await.expect("the document is JSON")
}

/// Every `(path, method)` of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths is an object") {
        for (method, operation) in item.as_object().expect("a path item is an object") {
            if METHODS.contains(&method.as_str()) {
                all.push((path.clone(), method.clone(), operation.clone()));
            }
        }
    }
    all
}

/// Every `$ref` anywhere in `value`.
fn refs<'a>(value: &'a Value, into: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => into.push(target),
                    _ => refs(inner, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, into)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_structurally_valid_openapi_3_1() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;

    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.1."), "OpenAPI {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let schemas = doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    assert!(schemas.contains_key("ErrorBody"));

    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");
    assert_eq!(bearer["bearerFormat"], "JWT");

    let mut operation_ids = BTreeSet::new();
    for (path, method, operation) in operations(&doc) {
        let at = format!("{} {path}", method.to_uppercase());
        assert!(path.starts_with('/'), "{at}: a path starts with /");
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: operationId"));
        assert!(
            operation_ids.insert(id.to_owned()),
            "{at}: operationId {id} twice"
        );
        let responses = operation["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{at}: responses"));
        assert!(!responses.is_empty(), "{at}: no response");
        for (status, response) in responses {
            let status: u16 = status
                .parse()
                .unwrap_or_else(|_| panic!("{at}: status {status}"));
            assert!((100..600).contains(&status), "{at}: status {status}");
            assert!(
                response["description"].is_string(),
                "{at} {status}: description"
            );
        }
        // Each `{name}` of the path is a required path parameter, and nothing else is one.
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let declared: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{at}: path parameters are required");
                p["name"].as_str().unwrap()
            })
            .collect();
        assert_eq!(templated, declared, "{at}: path parameters");
        // The security requirement names the bearer scheme (a role when one is needed).
        for requirement in operation["security"]
            .as_array()
            .expect("security is explicit")
        {
            for scheme in requirement.as_object().unwrap().keys() {
                assert_eq!(scheme, "bearer", "{at}");
            }
        }
    }
    assert!(
        operation_ids.len() >= 30,
        "{} operations",
        operation_ids.len()
    );

    let mut targets = Vec::new();
    refs(&doc, &mut targets);
    assert!(!targets.is_empty());
    for target in targets {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{target}: only component schemas are referenced"));
        assert!(schemas.contains_key(name), "{target} does not resolve");
    }
}

#[tokio::test]
async fn every_route_the_server_serves_is_in_the_document_and_nothing_else() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    // The route table actix registers (`routes::configure`), plus the page's files.
    let mut served: BTreeSet<(String, String)> = BTreeSet::new();
    for endpoint in ENDPOINTS {
        for method in endpoint.methods() {
            served.insert((endpoint.path(), method.as_str().to_ascii_lowercase()));
        }
    }
    for asset in &offpeak::web::ASSETS {
        served.insert((asset.path.to_owned(), "get".to_owned()));
        served.insert((asset.path.to_owned(), "head".to_owned()));
    }
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(path, method, _)| (path, method))
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    let phantom: Vec<_> = documented.difference(&served).collect();
    assert!(phantom.is_empty(), "documented but not served: {phantom:?}");
    // The DESIGN's endpoints are all there.
    for (path, method) in [
        ("/v1/pools", "get"),
        ("/v1/pools/{pool}/book", "get"),
        ("/v1/pools/{pool}/quote", "get"),
        ("/v1/orders", "post"),
        ("/v1/orders/{id}", "patch"),
        ("/v1/orders/{id}", "delete"),
        ("/v1/leases/{id}/release", "post"),
        ("/v1/capacity/{block_id}/reclaim", "post"),
        ("/v1/capacity/{block_id}/forecast", "post"),
        ("/v1/ws", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/admin/kill-switch", "post"),
    ] {
        assert!(
            documented.contains(&(path.to_owned(), method.to_owned())),
            "{method} {path}"
        );
    }
}

/// A concrete path for a documented template.
fn concrete(path: &str) -> String {
    path.replace("{pool}", POOL)
        .replace("{id}", "1")
        .replace("{block_id}", "no-such-block")
        .replace("{account}", "acct-1")
}

/// The codes the document lists for `status` on an operation.
fn documented_codes(operation: &Value, status: StatusCode) -> Vec<String> {
    operation["responses"][status.as_str()]["x-error-codes"]
        .as_array()
        .map(|codes| {
            codes
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks one answer against its operation: a documented status, and an error's code listed
/// under that status.
fn check_answer(at: &str, operation: &Value, status: StatusCode, body: &Value) {
    assert!(
        operation["responses"].get(status.as_str()).is_some(),
        "{at}: answered {status}, which is not documented: {body}"
    );
    if status.is_client_error() || status.is_server_error() {
        if let Some(error) = body["error"]["code"].as_str() {
            let listed = documented_codes(operation, status);
            assert!(
                listed.iter().any(|c| c == error),
                "{at}: {status} {error} is not among the documented {listed:?}"
            );
        }
    }
}

#[tokio::test]
async fn every_documented_operation_is_served_with_its_role_and_documented_errors() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let viewer = app.token("watcher", "viewer");
    for (path, method, operation) in operations(&doc) {
        let at = format!("{} {path}", method.to_uppercase());
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let url = format!("{}{}", app.address, concrete(&path));
        let role = operation["security"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|r| r["bearer"].as_array()?.first()?.as_str().map(str::to_owned));
        let send = |token: Option<String>| {
            let mut request = app.http.request(method.clone(), &url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if operation.get("requestBody").is_some() {
                request = request.json(&json!({}));
            }
            async move {
                let response = request.send().await.expect("request sent");
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                (status, body)
            }
        };

        let (status, body) = send(None).await;
        // Served: never the router's answers for unknown paths and methods.
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{at}: {body}");
        assert!(
            !(status == StatusCode::NOT_FOUND && code(&body) == "not_found"),
            "{at}: not routed: {body}"
        );
        check_answer(&at, &operation, status, &body);
        match role {
            Some(role) => {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{at} without a token");
                let (status, body) = send(Some(viewer.clone())).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{at} as a viewer: {body}");
                check_answer(&at, &operation, status, &body);
                let (status, body) = send(Some(app.token("acct-1", &role))).await;
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{at} as {role}: {status} {body}"
                );
                check_answer(&at, &operation, status, &body);
            }
            None => assert!(
                status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                "{at} is public: {status} {body}"
            ),
        }
    }
}

/// Checks `value` against a schema of the document: types, required and only documented
/// properties, enums, `oneOf`, items; `$ref`s followed. Returns what does not match.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(target) = schema["$ref"].as_str() {
        let name = target.trim_start_matches("#/components/schemas/");
        return conforms(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(choices) = schema["oneOf"].as_array() {
        let matching = choices
            .iter()
            .filter(|c| conforms(doc, c, value, at).is_ok())
            .count();
        return match matching {
            1 => Ok(()),
            n => Err(format!("{at}: {value} matches {n} of oneOf {schema}")),
        };
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} not in {allowed:?}"));
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let fits = types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
    if !fits {
        return Err(format!("{at}: {value} is {kind}, not {types:?}"));
    }
    if let (Some(pattern), Value::String(text)) = (schema["pattern"].as_str(), value) {
        // The patterns used are simple enough for this check: decimal prices.
        if pattern.contains("[0-9]+\\.[0-9]{2,6}") {
            let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
            let ok = !whole.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && (2..=6).contains(&fraction.len())
                && fraction.bytes().all(|b| b.is_ascii_digit());
            if !ok {
                return Err(format!("{at}: {text:?} does not match {pattern}"));
            }
        }
    }
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap();
                if !map.contains_key(name) {
                    return Err(format!("{at}: missing required {name}"));
                }
            }
            if let Some(properties) = properties {
                for (name, inner) in map {
                    let Some(property) = properties.get(name) else {
                        return Err(format!("{at}: {name} is not documented"));
                    };
                    conforms(doc, property, inner, &format!("{at}.{name}"))?;
                }
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                conforms(doc, &schema["items"], item, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The documented schema of an operation's JSON answer with `status`.
fn response_schema<'a>(doc: &'a Value, path: &str, method: &str, status: StatusCode) -> &'a Value {
    &doc["paths"][path][method]["responses"][status.as_str()]["content"]["application/json"]
        ["schema"]
}

#[tokio::test]
async fn real_answers_conform_to_their_documented_schemas() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let supplier = app.token("dc-1", "supplier");
    let buyer = app.token("startup-1", "buyer");
    let check = |path: &str, method: &str, status: StatusCode, body: &Value| {
        let schema = response_schema(&doc, path, method, status);
        assert!(schema.is_object(), "{method} {path} {status}: no schema");
        if let Err(e) = conforms(&doc, schema, body, "$") {
            panic!("{method} {path} {status}: {e}\n{body:#}");
        }
    };

    let block = app.release_block(&supplier, "night-1", 16, "1.10", 8).await;
    check("/v1/capacity", "post", StatusCode::CREATED, &block);
    let (status, placed) = app
        .post(
            "/v1/orders",
            Some(&buyer),
            json!({"pool": POOL, "gpus": 8, "price": "1.25", "duration_s": 3600,
                   "client_order_id": "a-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    assert_eq!(placed["leases"].as_array().unwrap().len(), 1, "{placed}");
    check("/v1/orders", "post", status, &placed);
    let (status, resting) = app.bid(&buyer, 4, "0.50").await;
    check("/v1/orders", "post", status, &resting);

    let (status, reclaim) = app
        .post(
            "/v1/capacity/night-1/reclaim",
            Some(&supplier),
            json!({"gpus": 16}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reclaim}");
    check("/v1/capacity/{block_id}/reclaim", "post", status, &reclaim);
    let (status, forecast) = app
        .post(
            "/v1/capacity/night-1/forecast",
            Some(&supplier),
            json!({"reclaim_at": rfc3339_in(600)}),
        )
        .await;
    check(
        "/v1/capacity/{block_id}/forecast",
        "post",
        status,
        &forecast,
    );

    for (path, token) in [
        ("/v1/pools", None),
        ("/v1/pools/{pool}", None),
        ("/v1/pools/{pool}/book", None),
        ("/v1/pools/{pool}/trades", None),
        ("/v1/pools/{pool}/candles", None),
        ("/v1/pools/{pool}/stats", None),
        ("/v1/orders", Some(&buyer)),
        ("/v1/orders/{id}", Some(&buyer)),
        ("/v1/leases", Some(&buyer)),
        ("/v1/capacity", Some(&supplier)),
        ("/v1/capacity/{block_id}", Some(&supplier)),
        ("/healthz", None),
        ("/readyz", None),
    ] {
        let concrete = path
            .replace("{pool}", POOL)
            .replace("{id}", placed["order"]["id"].as_str().unwrap())
            .replace("{block_id}", "night-1");
        let (status, body) = app.get(&concrete, token.map(String::as_str)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        check(path, "get", status, &body);
    }
    let lease = placed["leases"][0]["id"].as_str().unwrap();
    let (status, body) = app.get(&format!("/v1/leases/{lease}"), Some(&buyer)).await;
    check("/v1/leases/{id}", "get", status, &body);
    let (status, body) = app
        .get(
            &format!("/v1/pools/{POOL}/quote?gpus=2&duration_s=3600"),
            None,
        )
        .await;
    check("/v1/pools/{pool}/quote", "get", status, &body);

    // Errors: a refusal, with the documented body and a listed code.
    let (status, body) = app.bid(&buyer, 1, "1.234").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    check("/v1/orders", "post", status, &body);
    assert!(
        documented_codes(&doc["paths"]["/v1/orders"]["post"], status)
            .contains(&"price_not_on_tick".to_owned())
    );
    let (status, body) = app.get("/v1/pools/nowhere.none/book", None).await;
    assert_eq!(code(&body), "unknown_pool");
    check("/v1/pools/{pool}/book", "get", status, &body);
}

#[tokio::test]
async fn the_amend_body_documents_gpus_as_the_new_total_and_the_quote_its_min_gpus() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let gpus = &doc["components"]["schemas"]["AmendOrderBody"]["properties"]["gpus"];
    let text = gpus["description"].as_str().unwrap_or_default();
    assert!(
        text.contains("new total") && !text.contains("remaining GPUs."),
        "{gpus}"
    );
    let quote = &doc["paths"]["/v1/pools/{pool}/quote"]["get"];
    let params: Vec<&str> = quote["parameters"]
        .as_array()
        .expect("the quote's parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(params.contains(&"min_gpus"), "{params:?}");
    let errors = quote["responses"].to_string();
    assert!(errors.contains("min_gpus_invalid"), "{errors}");
}
