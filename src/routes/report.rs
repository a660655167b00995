//! `GET /v1/admin/report` (DESIGN section 13): what idle capacity earned, per pool and time
//! bucket. Role `admin`. The figures are computed by [`crate::report`] from the usage minutes
//! the engine integrated and the leases of the window.

use super::caller::Admin;
use crate::error::ApiError;
use crate::limits::{REPORT_BUCKETS_MAX, REPORT_LEASES_MAX, REPORT_WINDOW_MAX};
use crate::report::{self, Report, ReportWindow};
use crate::state::AppState;
use crate::timestamp::{now_ms, parse_rfc3339};
use crate::validate;
use actix_web::{web, HttpResponse};
use matching_engine::{Name, Rejection, TimeMs};
use serde::Deserialize;
use utoipa::IntoParams;

/// What a report can be refused for.
pub const REPORT_ERRORS: &[ApiError] = &[ApiError::Rejected(Rejection::UnknownPool)];

/// `?from=&to=&pool=&bucket=1h`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// Start (RFC 3339); default 24 hours before `to`. Widened to a bucket boundary.
    #[param(format = DateTime)]
    from: Option<String>,
    /// End (RFC 3339); default now. Widened to a bucket boundary. At most 31 days after `from`.
    #[param(format = DateTime)]
    to: Option<String>,
    /// One pool only (default: every pool).
    #[param(max_length = 64)]
    pool: Option<String>,
    /// Bucket length, a whole number of minutes from `1m` to `1d`: `1m`, `15m`, `1h` (default),
    /// `1d`...; at most 2,000 buckets.
    bucket: Option<String>,
}

fn time_of(text: &str, name: &str) -> Result<TimeMs, ApiError> {
    parse_rfc3339(text).map_err(|e| ApiError::InvalidQuery(format!("{name}: {e}")))
}

/// What idle capacity earned: offered and leased GPU-hours, utilisation, revenue, prices,
/// preemptions and notices, per pool and bucket, with totals.
#[utoipa::path(
    get,
    path = "/v1/admin/report",
    operation_id = "get_report",
    tag = "admin",
    params(ReportQuery),
    responses((status = 200, description = "Per pool and bucket, and totals; money as USD strings", body = Report)),
)]
pub async fn report(
    state: web::Data<AppState>,
    _admin: Admin,
    query: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let bucket_text = query.bucket.as_deref().unwrap_or("1h");
    let bucket = humantime::parse_duration(bucket_text)
        .ok()
        .filter(|b| {
            b.as_secs() >= 60
                && b.as_secs() <= 86_400
                && b.as_secs() % 60 == 0
                && b.subsec_nanos() == 0
        })
        .ok_or_else(|| {
            ApiError::InvalidQuery(
                "bucket must be a whole number of minutes from 1m to 1d, such as 15m or 1h".into(),
            )
        })?;
    let bucket_ms = bucket.as_millis() as i64;
    let now = now_ms();
    let to = match &query.to {
        Some(text) => time_of(text, "to")?,
        None => now,
    };
    let from = match &query.from {
        Some(text) => time_of(text, "from")?,
        None => TimeMs(to.0 - 24 * 3_600_000),
    };
    let window = ReportWindow::aligned(from, to, bucket_ms, now);
    let span_ms = window.to.0 - window.from.0;
    if span_ms <= 0 || span_ms > REPORT_WINDOW_MAX.as_millis() as i64 {
        return Err(ApiError::InvalidQuery(format!(
            "from must be before to, at most {} days apart",
            REPORT_WINDOW_MAX.as_secs() / 86_400
        )));
    }
    if span_ms / bucket_ms > REPORT_BUCKETS_MAX {
        return Err(ApiError::InvalidQuery(format!(
            "at most {REPORT_BUCKETS_MAX} buckets: widen the bucket or narrow the window"
        )));
    }
    if let Some(pool) = &query.pool {
        validate::pool(pool)?;
    }
    let wanted = query.pool.clone();
    let pools: Vec<Name> = state
        .sequencer
        .read(move |v| {
            v.engine
                .pools()
                .into_iter()
                .map(|p| Name::from(p.config.id))
                .filter(|id| wanted.as_deref().is_none_or(|w| **id == *w))
                .collect()
        })
        .await?;
    if pools.is_empty() && query.pool.is_some() {
        return Err(ApiError::Rejected(Rejection::UnknownPool));
    }
    let pool = query.pool.as_deref();
    let usage = state.store.usage(window.from, window.to, pool).await?;
    let leases = state
        .store
        .leases_between(window.from, window.to, pool, REPORT_LEASES_MAX + 1)
        .await?;
    if leases.len() > REPORT_LEASES_MAX {
        return Err(ApiError::InvalidQuery(format!(
            "more than {REPORT_LEASES_MAX} leases in the window: narrow it"
        )));
    }
    let report = report::build(&window, bucket_text, &pools, &usage, &leases);
    Ok(HttpResponse::Ok().json(report))
}
