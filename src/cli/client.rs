//! The CLI's HTTP client: base URL and token from the environment, JSON in and out, and every
//! failure sorted into an exit code a script can act on.

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

/// The server the CLI talks to when `OFFPEAK_URL` is not set.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a CLI run ended with; each is one documented exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 0: done.
    Ok = 0,
    /// 1: the server understood the request and refused it (HTTP 4xx: a rejection, not found,
    /// unauthorized, forbidden, rate limited). Retrying the same request will not help.
    Refused = 1,
    /// 2: the command line is wrong (unknown flag, bad value, missing `OFFPEAK_TOKEN`); nothing
    /// was sent.
    Usage = 2,
    /// 3: the server could not be reached, timed out, answered 5xx (e.g. 503 while its
    /// database is down) or answered something that is not the API. Retrying later may help.
    Unavailable = 3,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> ExitCode {
        ExitCode::from(outcome as u8)
    }
}

/// A failure, with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub outcome: Outcome,
    /// A one-line explanation for people.
    pub message: String,
    /// The server's error body, printed as is with `--json`.
    pub body: Option<Value>,
}

impl CliError {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            outcome: Outcome::Usage,
            message: message.into(),
            body: None,
        }
    }

    /// A refusal the CLI decides itself from what the server answered (exit 1, as for a
    /// 4xx): `offpeak ssh` on a lease that is not ready, say. The body has the server's error
    /// shape, so `--json` prints the same kind of JSON on stderr either way.
    pub fn refused(code: &str, message: impl Into<String>) -> CliError {
        let message = message.into();
        CliError {
            outcome: Outcome::Refused,
            body: Some(serde_json::json!({"error": {"code": code, "message": message}})),
            message: format!("{code}: {message}"),
        }
    }

    /// The server's error code (`unknown_pool`, `kill_switch`, ...), when it sent one.
    pub fn code(&self) -> Option<&str> {
        self.body.as_ref()?["error"]["code"].as_str()
    }

    fn unavailable(message: impl Into<String>) -> CliError {
        CliError {
            outcome: Outcome::Unavailable,
            message: message.into(),
            body: None,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A client of one offpeak server.
pub struct Client {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client for `url` (or `OFFPEAK_URL`, or [`DEFAULT_URL`]) with `OFFPEAK_TOKEN` if set.
    pub fn from_env(url: Option<&str>) -> Result<Client, CliError> {
        let url = match url {
            Some(url) => url.to_owned(),
            None => std::env::var("OFFPEAK_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_URL.to_owned()),
        };
        let token = std::env::var("OFFPEAK_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        Client::new(&url, token)
    }

    /// A client for `url` with this bearer token.
    pub fn new(url: &str, token: Option<String>) -> Result<Client, CliError> {
        let base = Url::parse(url.trim()).map_err(|e| {
            CliError::usage(format!(
                "{url:?} is not a URL such as {DEFAULT_URL} (OFFPEAK_URL): {e}"
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(CliError::usage(format!(
                "{url:?} is not an http:// or https:// URL (OFFPEAK_URL)"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("offpeak-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::unavailable(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client { base, token, http })
    }

    /// The URL of a path given as segments (each escaped), with a query.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// `GET`s a public path: no token is sent, none is needed.
    pub async fn get_public(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, CliError> {
        self.send(Method::GET, self.url(segments, query), None, false)
            .await
    }

    /// Sends a request with the bearer token (and requires one).
    pub async fn authed(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        self.send(method, self.url(segments, query), body, true)
            .await
    }

    fn token(&self) -> Result<&str, CliError> {
        self.token.as_deref().ok_or_else(|| {
            CliError::usage(
                "OFFPEAK_TOKEN is not set: mint one with `offpeak token --sub <account> --role buyer` \
                 (or supplier) and `export OFFPEAK_TOKEN=<token>`",
            )
        })
    }

    /// Sends a request; `authenticated` adds the bearer token (and requires one).
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        authenticated: bool,
    ) -> Result<Value, CliError> {
        let mut request = self.http.request(method, url.clone());
        if authenticated {
            request = request.bearer_auth(self.token()?);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            let why = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "request failed"
            };
            CliError::unavailable(format!(
                "{why}: {} ({}); is `offpeak serve` running there? (OFFPEAK_URL)",
                self.base,
                root_cause(&e)
            ))
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            CliError::unavailable(format!("reading the answer from {url} failed: {e}"))
        })?;
        let value: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return value.ok_or_else(|| {
                CliError::unavailable(format!(
                    "{url} answered {status} with something that is not JSON: is OFFPEAK_URL an offpeak server?"
                ))
            });
        }
        let (code, message) = match value.as_ref().map(|v| &v["error"]) {
            Some(error) if error.is_object() => (
                error["code"].as_str().unwrap_or("unknown").to_owned(),
                error["message"].as_str().unwrap_or("").to_owned(),
            ),
            _ => (
                "http_error".to_owned(),
                text.chars().take(200).collect::<String>(),
            ),
        };
        let outcome = if status.is_client_error() {
            Outcome::Refused
        } else {
            Outcome::Unavailable
        };
        Err(CliError {
            outcome,
            message: format!("{code}: {message} (HTTP {})", status_text(status)),
            body: value,
        })
    }
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        let client = Client::new("http://localhost:8080/base/", None).unwrap();
        let url = client.url(&["v1", "orders", "a/b?c"], &[("status", "open".to_owned())]);
        assert_eq!(
            url.as_str(),
            "http://localhost:8080/base/v1/orders/a%2Fb%3Fc?status=open"
        );
    }

    #[test]
    fn bad_urls_are_usage_errors() {
        for bad in ["", "localhost:8080", "ftp://x", "mailto:a@b"] {
            let error = Client::new(bad, None).err().expect(bad);
            assert_eq!(error.outcome, Outcome::Usage, "{bad}");
        }
    }
}
