//! A buyer's ssh public keys (role `buyer`, DESIGN section 11): `keys set` replaces the
//! account's default keys, which the leases of bids without keys of their own receive,
//! `keys list` shows them, `keys clear` removes them. `bid --ssh-key` reads keys the same way.
//!
//! A key is given as its line (`ssh-ed25519 AAAA... alice@laptop`, quoted), as a file of key
//! lines (a `.pub` file, or an `authorized_keys` file without options: blank lines and `#`
//! comments are skipped), or as `-` for standard input. Each key is checked here with the
//! server's own parser, so a wrong key is a usage error naming its file and line, and a
//! private key file is refused before any of it goes into a request.

use super::table::Table;
use super::{Answer, CliError, Client};
use crate::ssh_keys::{parse_ssh_public_keys, SSH_KEYS_MAX};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// `offpeak keys ...`.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Replace your default ssh keys: leases of bids without --ssh-key receive these.
    Set {
        /// A key line (quoted), a file of key lines such as ~/.ssh/id_ed25519.pub, or - to
        /// read key lines from stdin.
        #[arg(required = true, value_name = "FILE_OR_KEY")]
        keys: Vec<String>,
    },
    /// List your default ssh keys.
    List,
    /// Remove your default ssh keys.
    Clear,
}

/// Runs one `keys` subcommand.
pub async fn run(client: &Client, command: KeysCommand) -> Result<Answer, CliError> {
    let body = match command {
        KeysCommand::List => {
            let answer = client
                .authed(Method::GET, &["v1", "account", "ssh-keys"], &[], None)
                .await?;
            return Ok((answer, show_keys));
        }
        KeysCommand::Set { keys } => json!({ "keys": read_keys(&keys)? }),
        KeysCommand::Clear => json!({ "keys": [] }),
    };
    let answer = client
        .authed(
            Method::PUT,
            &["v1", "account", "ssh-keys"],
            &[],
            Some(&body),
        )
        .await?;
    Ok((answer, show_keys))
}

/// The keys named by `sources` (key lines, files, `-` for stdin), checked and normalised.
pub fn read_keys(sources: &[String]) -> Result<Vec<String>, CliError> {
    let mut keys = Vec::new();
    for source in sources {
        if looks_like_a_key(source) {
            keys.push(check_key(
                source,
                &format!("the key {:?}", abbreviate(source)),
            )?);
            continue;
        }
        let (text, origin) = if source == "-" {
            let text = std::io::read_to_string(std::io::stdin())
                .map_err(|e| CliError::usage(format!("cannot read keys from stdin: {e}")))?;
            (text, "stdin".to_owned())
        } else {
            let path = expand_home(source);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                CliError::usage(format!(
                    "{source:?} is neither a key line (ssh-ed25519 AAAA... comment) nor a \
                     readable file: {e}"
                ))
            })?;
            (text, source.clone())
        };
        keys.extend(keys_in(&text, &origin)?);
    }
    if keys.len() > SSH_KEYS_MAX {
        return Err(CliError::usage(format!(
            "{} keys given; at most {SSH_KEYS_MAX} are accepted",
            keys.len()
        )));
    }
    Ok(keys)
}

/// The key lines of a file's (or stdin's) text, each checked.
fn keys_in(text: &str, origin: &str) -> Result<Vec<String>, CliError> {
    // Refused before anything else: a private key must never leave the machine, not even
    // quoted in an error message.
    if text.contains("PRIVATE KEY") {
        return Err(CliError::usage(format!(
            "{origin} holds a private key: give its public half (the .pub file) instead"
        )));
    }
    let keys = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(number, line)| check_key(line, &format!("{origin} line {number}")))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(CliError::usage(format!(
            "{origin} holds no key line (such as ssh-ed25519 AAAA... comment)"
        )));
    }
    Ok(keys)
}

/// One key, parsed as the server parses it, normalised; `origin` says where it came from.
fn check_key(line: &str, origin: &str) -> Result<String, CliError> {
    match parse_ssh_public_keys(&[line.to_owned()]) {
        Ok(mut normalised) if normalised.len() == 1 => Ok(normalised.remove(0)),
        Ok(_) => Err(CliError::usage(format!("{origin}: not one key"))),
        Err(e) => Err(CliError::usage(format!("{origin}: {}", e.reason))),
    }
}

/// Whether an argument is a key line rather than a path: a type word, then more.
fn looks_like_a_key(source: &str) -> bool {
    let mut words = source.split_whitespace();
    let typed = words.next().is_some_and(|word| {
        ["ssh-", "ecdsa-", "sk-"]
            .iter()
            .any(|t| word.starts_with(t))
    });
    typed && words.next().is_some()
}

/// `~/x` as `$HOME/x`, for a path the shell did not expand (`--ssh-key=~/x`, or quoted).
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// The start of a key line, for messages: a key body says nothing to a person.
fn abbreviate(line: &str) -> String {
    const SHOWN_CHARS: usize = 32;
    if line.chars().count() <= SHOWN_CHARS {
        return line.to_owned();
    }
    let start: String = line.chars().take(SHOWN_CHARS).collect();
    format!("{start}...")
}

/// A key's fingerprint as `ssh-keygen -l` prints it: `SHA256:` and the unpadded base64 of
/// the SHA-256 of its blob.
pub fn fingerprint(line: &str) -> String {
    let blob = line
        .split_whitespace()
        .nth(1)
        .and_then(|body| STANDARD.decode(body).ok());
    match blob {
        Some(blob) => format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(&blob))),
        None => "-".to_owned(),
    }
}

fn show_keys(answer: &Value) {
    let mut t = Table::new(&["TYPE", "FINGERPRINT", "COMMENT"]);
    for key in answer["keys"].as_array().into_iter().flatten() {
        let line = key.as_str().unwrap_or_default();
        let mut words = line.split_whitespace();
        let kind = words.next().unwrap_or_default().to_owned();
        let comment = words.skip(1).collect::<Vec<_>>().join(" ");
        t.row(vec![kind, fingerprint(line), comment]);
    }
    t.print();
    if t.is_empty() {
        println!("(no default keys: leases get only the keys their bid carries)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Outcome;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC5k3K7KDeQvz2YfHkn5XCT+dAunPX0yMg638MMYjOo9 alice@laptop";

    #[test]
    fn key_files_skip_blank_and_comment_lines() {
        let text = format!("# laptop\n\n  {KEY}  \n");
        assert_eq!(keys_in(&text, "f").unwrap(), vec![KEY.to_owned()]);
        for bad in ["", "# only a comment\n", "ssh-ed25519 AAAA!!!\n"] {
            let error = keys_in(bad, "f").unwrap_err();
            assert_eq!(error.outcome, Outcome::Usage, "{bad:?}");
        }
        let error = keys_in(&format!("{KEY}\nssh-rsa AAAA\n"), "id.pub").unwrap_err();
        assert!(error.message.starts_with("id.pub line 2: "), "{error}");
    }

    #[test]
    fn a_private_key_is_refused_without_echoing_it() {
        let text = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n";
        let error = keys_in(text, "id_ed25519").unwrap_err();
        assert_eq!(error.outcome, Outcome::Usage);
        assert!(!error.message.contains("b3Blbn"), "{error}");
    }

    #[test]
    fn arguments_are_key_lines_or_paths() {
        assert!(looks_like_a_key(KEY));
        assert!(!looks_like_a_key("~/.ssh/id_ed25519.pub"));
        assert!(!looks_like_a_key("ssh-key.pub"));
        assert_eq!(read_keys(&[KEY.to_owned()]).unwrap(), vec![KEY.to_owned()]);
        let missing = read_keys(&["/nonexistent/id.pub".to_owned()]).unwrap_err();
        assert_eq!(missing.outcome, Outcome::Usage);
        let too_many = read_keys(&vec![KEY.to_owned(); SSH_KEYS_MAX + 1]).unwrap_err();
        assert_eq!(too_many.outcome, Outcome::Usage);
    }

    #[test]
    fn fingerprints_match_ssh_keygen() {
        // `ssh-keygen -lf` on this key prints this fingerprint.
        assert_eq!(
            fingerprint(KEY),
            "SHA256:i5CcGEHKcgQw8wrMvKeivnIRd23YosQwAQsNX+zJdfk"
        );
        assert_eq!(fingerprint("ssh-ed25519"), "-");
    }
}
