//! `GET /openapi.json`: the OpenAPI document of the route table, built once.

use super::ENDPOINTS;
use crate::openapi;
use actix_web::HttpResponse;
use std::sync::OnceLock;

/// The document as JSON, built once: it depends on the code only.
fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        openapi::build(ENDPOINTS)
            .to_json()
            .expect("the OpenAPI document serializes")
    })
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses((
        status = 200,
        description = "The OpenAPI 3.1 document of every endpoint",
        content_type = "application/json",
        body = Object,
    )),
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json())
}
