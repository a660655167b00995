//! The traders' page at `/`: the static files under `web/`, compiled into the binary.
//!
//! Embedding (`include_str!`) means the server needs no files and no Node toolchain at run
//! time, and the page always matches the binary's API. The Content-Security-Policy allows only
//! this origin, so nothing is ever loaded from the internet.

use actix_web::http::header;
use actix_web::{web, HttpResponse, Resource};

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE_CSS: &str = include_str!("../web/style.css");

/// Scripts, styles, fetches and the WebSocket only from this origin; canvases may use data URLs.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Registers `/`, `/index.html`, `/app.js` and `/style.css` (GET and HEAD).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(asset("/", "text/html; charset=utf-8", INDEX_HTML))
        .service(asset("/index.html", "text/html; charset=utf-8", INDEX_HTML))
        .service(asset("/app.js", "text/javascript; charset=utf-8", APP_JS))
        .service(asset("/style.css", "text/css; charset=utf-8", STYLE_CSS));
}

/// One embedded file; HEAD as well as GET, since uptime checks and `curl -I` probe the page.
fn asset(path: &str, content_type: &'static str, body: &'static str) -> Resource {
    let serve = move || async move { file(content_type, body) };
    web::resource(path)
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
