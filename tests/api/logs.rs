//! Logs of the real binary: readable lines by default, one JSON object per line with
//! `offpeak serve --log-format json`.

use crate::first_start::BIN;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Starts `offpeak <args>` in a fresh directory and returns its stderr lines up to and
/// including the one that says it is listening.
fn lines_until_listening(args: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("OFFPEAK_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("stderr");
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    let listening = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match receive.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains("listening on http://");
                lines.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "no listening line in {lines:#?}");
    lines
}

#[test]
fn serve_logs_readable_lines_by_default() {
    let lines = lines_until_listening(&["serve"]);
    let listening = lines.last().unwrap();
    assert!(listening.contains("INFO"), "{listening}");
    assert!(
        serde_json::from_str::<Value>(listening).is_err(),
        "{listening}"
    );
}

#[test]
fn serve_logs_one_json_object_per_line_with_log_format_json() {
    let lines = lines_until_listening(&["serve", "--log-format", "json"]);
    assert!(lines.len() >= 2, "{lines:#?}");
    for line in &lines {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(event["timestamp"].is_string(), "{line}");
        assert!(event["level"].is_string(), "{line}");
        assert!(event["target"].is_string(), "{line}");
        assert!(event["message"].is_string(), "{line}");
    }
    let listening: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(listening["level"], "INFO");
    // The event's fields are at the top level, next to the message.
    assert!(
        listening["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{listening}"
    );
}
