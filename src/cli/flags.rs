//! Flag values turned into the API's values before anything is sent: hours into whole
//! seconds, prices and RFC 3339 times checked against the grammar the server parses (so a
//! typo is a usage error, exit 2, not a 400), and the `?status=&limit=` of the list commands.

use super::CliError;
use crate::money::parse_usd;
use crate::timestamp::parse_rfc3339;
use matching_engine::TimeMs;

/// Hours as whole seconds: positive, finite, at most `u32::MAX`.
pub fn hours_to_seconds(hours: f64, flag: &str) -> Result<u32, CliError> {
    let seconds = hours * 3600.0;
    if !seconds.is_finite() || seconds < 1.0 || seconds > f64::from(u32::MAX) {
        return Err(CliError::usage(format!(
            "{flag} must be a positive number of hours (got {hours})"
        )));
    }
    Ok(seconds.round() as u32)
}

/// A lease length from `--hours` or `--duration-s` (clap lets exactly one through).
pub fn lease_seconds(hours: Option<f64>, duration_s: Option<u32>) -> Result<u32, CliError> {
    match (hours, duration_s) {
        (Some(hours), None) => hours_to_seconds(hours, "--hours"),
        (None, Some(seconds)) => Ok(seconds),
        _ => Err(CliError::usage("give either --hours or --duration-s")),
    }
}

/// An RFC 3339 timestamp, checked; the text is sent as written.
pub fn rfc3339(text: &str, flag: &str) -> Result<TimeMs, CliError> {
    parse_rfc3339(text).map_err(|e| CliError::usage(format!("{flag}: {e}")))
}

/// A duration such as `15m`, `24h` or `7d`, checked and kept as written (clap value parser).
pub fn duration_text(text: &str) -> Result<String, String> {
    humantime::parse_duration(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("{e}: give a duration such as 15m, 1h, 24h or 7d"))
}

/// A USD price as the server will read it, trimmed; anything else is a usage error.
pub fn price(text: &str, flag: &str) -> Result<String, CliError> {
    parse_usd(text.trim())
        .map(|_| text.trim().to_owned())
        .map_err(|e| CliError::usage(format!("{flag} {text:?}: {e}")))
}

/// The query of a list endpoint.
pub fn list_query(status: Option<String>, limit: Option<u32>) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if let Some(status) = status {
        query.push(("status", status));
    }
    if let Some(limit) = limit {
        query.push(("limit", limit.to_string()));
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Outcome;

    #[test]
    fn bad_values_are_usage_errors_not_panics() {
        for hours in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e12] {
            assert_eq!(
                hours_to_seconds(hours, "--hours").unwrap_err().outcome,
                Outcome::Usage
            );
        }
        assert_eq!(hours_to_seconds(0.5, "--hours").unwrap(), 1800);
        assert_eq!(
            price("abc", "--max-price").unwrap_err().outcome,
            Outcome::Usage
        );
        assert_eq!(
            price("1.2345678", "--max-price").unwrap_err().outcome,
            Outcome::Usage
        );
        assert_eq!(price("1.25", "--max-price").unwrap(), "1.25");
        assert_eq!(
            rfc3339("tomorrow", "--until").unwrap_err().outcome,
            Outcome::Usage
        );
        assert!(rfc3339("2030-01-02T03:04:05Z", "--until").is_ok());
        assert!(duration_text("24h").is_ok());
        assert!(duration_text("a day").is_err());
    }
}
