//! The running server a load scenario drives: its URLs, tokens minted with its secret, and the
//! CPU time its process uses (read from `/proc`, so the generator must run on the same machine
//! to report it).

use anyhow::{bail, Context};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Linux reports process CPU time in clock ticks of `USER_HZ`, which is 100 on every
/// architecture it runs on (it is part of the user-space ABI, unlike the kernel's `HZ`).
const USER_HZ: u64 = 100;

/// A server under load.
#[derive(Clone, Debug)]
pub struct Target {
    /// `http://host:port`, no trailing slash.
    pub http_base: String,
    /// `ws://host:port`.
    pub ws_base: String,
    secret: String,
    issuer: String,
    audience: String,
}

impl Target {
    /// A server at `url` (`http://host:port`) whose tokens are HS256 with `secret`.
    pub fn new(url: &str, secret: &str, issuer: &str, audience: &str) -> anyhow::Result<Target> {
        let http_base = url.trim_end_matches('/').to_owned();
        let ws_base = match http_base.split_once("://") {
            Some(("http", rest)) => format!("ws://{rest}"),
            Some(("https", rest)) => format!("wss://{rest}"),
            _ => bail!("--url must start with http:// (got {url:?})"),
        };
        Ok(Target {
            http_base,
            ws_base,
            secret: secret.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// A token for `sub` in `role`, valid for `ttl`.
    pub fn token(&self, sub: &str, role: &str, ttl: Duration) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = json!({
            "sub": sub, "role": role, "iss": self.issuer, "aud": self.audience,
            "iat": now, "exp": now + ttl.as_secs(),
        });
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .context("signing a token")
    }

    /// The port in the URL.
    pub fn port(&self) -> anyhow::Result<u16> {
        let authority = self
            .http_base
            .split_once("://")
            .map_or(self.http_base.as_str(), |(_, rest)| rest);
        let port = authority
            .rsplit_once(':')
            .map(|(_, port)| port)
            .unwrap_or("80");
        port.parse()
            .with_context(|| format!("no port in {:?}", self.http_base))
    }
}

/// The process listening on local TCP `port`, found through `/proc/net/tcp{,6}` and the
/// processes' socket file descriptors.
pub fn listening_pid(port: u16) -> anyhow::Result<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; field 9 is the inode.
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let listening_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && listening_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        bail!("nothing listens on port {port} on this machine (pass --server-pid)");
    }
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| link.as_os_str() == i.as_str()) {
                    return Ok(pid);
                }
            }
        }
    }
    bail!("cannot tell which process listens on port {port} (pass --server-pid)")
}

/// User plus system CPU time the process has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after its closing paren are plain.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is index 0, so utime (field 14) is index 11 and stime index 12.
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// Milliseconds since the Unix epoch, now (with microsecond precision).
pub fn now_ms_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp.
pub fn rfc3339_ms(text: &str) -> Option<f64> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(at.unix_timestamp_nanos() as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_cpu_time_and_parses_times() {
        let me = std::process::id();
        assert!(cpu_time(me).is_ok());
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500.0));
        let target = Target::new("http://127.0.0.1:8080/", "s", "offpeak", "offpeak").unwrap();
        assert_eq!(target.ws_base, "ws://127.0.0.1:8080");
        assert_eq!(target.port().unwrap(), 8080);
    }

    #[test]
    fn finds_the_process_listening_on_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(listening_pid(port).unwrap(), std::process::id());
    }
}
