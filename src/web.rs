//! The traders' page at `/`: the static files under `web/`, compiled into the binary.
//!
//! Embedding (`include_str!`) means the server needs no files and no Node toolchain at run
//! time, and the page always matches the binary's API. The Content-Security-Policy allows only
//! this origin, so nothing is ever loaded from the internet.

use actix_web::http::header;
use actix_web::{web, HttpResponse, Resource};

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const CONSOLE_JS: &str = include_str!("../web/console.js");
const OWNER_JS: &str = include_str!("../web/owner.js");
const STYLE_CSS: &str = include_str!("../web/style.css");

/// Scripts, styles, fetches and the WebSocket only from this origin; canvases may use data URLs.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One embedded file and where it is served.
pub struct Asset {
    /// The path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    body: &'static str,
}

/// The page's files (`/openapi.json` documents them from this list too).
pub const ASSETS: [Asset; 6] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: INDEX_HTML,
    },
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        body: INDEX_HTML,
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: APP_JS,
    },
    Asset {
        path: "/console.js",
        content_type: "text/javascript; charset=utf-8",
        body: CONSOLE_JS,
    },
    Asset {
        path: "/owner.js",
        content_type: "text/javascript; charset=utf-8",
        body: OWNER_JS,
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: STYLE_CSS,
    },
];

/// Registers every file of [`ASSETS`] (GET and HEAD).
pub fn configure(cfg: &mut web::ServiceConfig) {
    for asset in &ASSETS {
        cfg.service(resource(asset));
    }
}

/// One embedded file; HEAD as well as GET, since uptime checks and `curl -I` probe the page.
fn resource(asset: &Asset) -> Resource {
    let (content_type, body) = (asset.content_type, asset.body);
    let serve = move || async move { file(content_type, body) };
    web::resource(asset.path)
        .route(web::get().to(serve))
        .route(web::head().to(serve))
}

fn file(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        // The files change with the binary: always fetch them again (they are small).
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}
