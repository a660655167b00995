//! Buyers' OpenSSH public keys (`ssh_public_keys` on a bid).
//!
//! Each key is one OpenSSH public key line, `<type> <base64 blob> [comment]`, as in a `.pub`
//! file or an `authorized_keys` line without options. Only three types are accepted:
//! `ssh-ed25519`, `ecdsa-sha2-nistp256` and `ssh-rsa` of [`RSA_BITS_MIN`] bits or more.
//!
//! The keys are parsed for real, from the SSH wire format (RFC 4253 section 6.6, RFC 5656
//! section 3.1, RFC 8709 section 4): the blob's own type string must match the type word,
//! each field must be present with its exact length, and nothing may follow the last field.
//! Nothing here checks that a point lies on its curve: a key that passes is well formed, and
//! a well-formed key that is not a real key can only fail to log in.
//!
//! A line with a control character (a newline above all, which would smuggle a second line
//! into `authorized_keys`) or an invisible formatting character is refused, and so is a line
//! that starts with `authorized_keys` options (`command="..."`): the type word must come first.

use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use base64::Engine as _;

/// The most keys one bid may carry.
pub const SSH_KEYS_MAX: usize = 8;

/// The longest key line accepted, in bytes, before trimming. A 16384-bit RSA key with a
/// comment of [`SSH_KEY_COMMENT_BYTES_MAX`] bytes fits (about 3,050 bytes).
pub const SSH_KEY_BYTES_MAX: usize = 4096;

/// The longest comment accepted after the key, in bytes (UTF-8).
pub const SSH_KEY_COMMENT_BYTES_MAX: usize = 256;

/// The smallest RSA modulus accepted, in bits, counted from its first non-zero bit.
pub const RSA_BITS_MIN: usize = 2048;

/// The largest RSA modulus accepted, in bits (OpenSSH's own limit).
pub const RSA_BITS_MAX: usize = 16384;

/// The largest RSA public exponent accepted, in bits (OpenSSL refuses larger ones for big
/// moduli; real keys use 65537).
pub const RSA_EXPONENT_BITS_MAX: usize = 64;

/// Type word of an Ed25519 key.
pub const SSH_ED25519: &str = "ssh-ed25519";

/// Type word of an ECDSA key on NIST P-256.
pub const SSH_ECDSA_NISTP256: &str = "ecdsa-sha2-nistp256";

/// Type word of an RSA key.
pub const SSH_RSA: &str = "ssh-rsa";

/// Length of an Ed25519 public key, in bytes.
const ED25519_KEY_BYTES: usize = 32;

/// Curve name inside an `ecdsa-sha2-nistp256` blob.
const NISTP256_CURVE_NAME: &[u8] = b"nistp256";

/// Length of an uncompressed P-256 point (0x04, x, y), in bytes.
const NISTP256_POINT_BYTES: usize = 65;

/// First byte of an uncompressed SEC1 point.
const SEC1_UNCOMPRESSED_TAG: u8 = 0x04;

/// How many characters of an unknown type word an error message repeats.
const ECHOED_TYPE_CHARS_MAX: usize = 40;

/// Why key `index` (0-based) was refused; Display reads as a sentence naming the index, e.g.
/// "ssh_public_keys[2]: an ssh-rsa key of 1024 bits; at least 2048 are required".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ssh_public_keys[{index}]: {reason}")]
pub struct SshKeyError {
    /// Position of the refused key in the list (0-based); [`SSH_KEYS_MAX`] when the list is too
    /// long.
    pub index: usize,
    /// What is wrong with it, as a clause a buyer can act on.
    pub reason: String,
}

/// Checks every key; returns them normalised (`"<type> <base64>"` plus `" <comment>"` when
/// present, single spaces, trimmed). More than [`SSH_KEYS_MAX`] keys is an error with index
/// [`SSH_KEYS_MAX`].
pub fn parse_ssh_public_keys(keys: &[String]) -> Result<Vec<String>, SshKeyError> {
    if keys.len() > SSH_KEYS_MAX {
        return Err(SshKeyError {
            index: SSH_KEYS_MAX,
            reason: format!(
                "at most {SSH_KEYS_MAX} keys are accepted; {} were given",
                keys.len()
            ),
        });
    }
    keys.iter()
        .enumerate()
        .map(|(index, line)| {
            normalise_key_line(line).map_err(|reason| SshKeyError { index, reason })
        })
        .collect()
}

/// One key line, checked and normalised; the error is the reason clause.
fn normalise_key_line(line: &str) -> Result<String, String> {
    if line.len() > SSH_KEY_BYTES_MAX {
        return Err(format!(
            "the key line is {} bytes long; at most {SSH_KEY_BYTES_MAX} are accepted",
            line.len()
        ));
    }
    let line = line.trim();
    if line.is_empty() {
        return Err("the key is empty".to_owned());
    }
    if let Some(bad) = line.chars().find(|&c| is_forbidden_char(c)) {
        return Err(format!(
            "the key line contains the control or formatting character U+{:04X}; \
             a key is one line of printable text",
            u32::from(bad)
        ));
    }

    let mut fields = line.split([' ', '\t']).filter(|field| !field.is_empty());
    // The line is non-empty after trimming, so there is a first field; stay total anyway.
    let type_word = fields.next().unwrap_or_default();
    let key_type = KeyType::from_word(type_word).ok_or_else(|| {
        format!(
            "the key type \"{}\" is not accepted; use {SSH_ED25519}, {SSH_ECDSA_NISTP256} or \
             {SSH_RSA} (at least {RSA_BITS_MIN} bits)",
            echo(type_word)
        )
    })?;
    let body = fields
        .next()
        .ok_or_else(|| format!("the {type_word} key has no base64 body after its type"))?;
    let comment_words: Vec<&str> = fields.collect();
    let comment = comment_words.join(" ");
    if comment.len() > SSH_KEY_COMMENT_BYTES_MAX {
        return Err(format!(
            "the key's comment is {} bytes long; at most {SSH_KEY_COMMENT_BYTES_MAX} are accepted",
            comment.len()
        ));
    }

    let blob = BASE64_STANDARD
        .decode(body)
        .map_err(|_| format!("the {type_word} key's body is not valid base64"))?;
    check_blob(key_type, &blob)?;

    let mut normalised = format!("{type_word} {}", BASE64_STANDARD.encode(&blob));
    if !comment.is_empty() {
        normalised.push(' ');
        normalised.push_str(&comment);
    }
    Ok(normalised)
}

/// The accepted key types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Ed25519,
    EcdsaNistp256,
    Rsa,
}

impl KeyType {
    fn from_word(word: &str) -> Option<KeyType> {
        match word {
            SSH_ED25519 => Some(KeyType::Ed25519),
            SSH_ECDSA_NISTP256 => Some(KeyType::EcdsaNistp256),
            SSH_RSA => Some(KeyType::Rsa),
            _ => None,
        }
    }

    fn word(self) -> &'static str {
        match self {
            KeyType::Ed25519 => SSH_ED25519,
            KeyType::EcdsaNistp256 => SSH_ECDSA_NISTP256,
            KeyType::Rsa => SSH_RSA,
        }
    }
}

/// Checks the decoded blob of a `key_type` key: its own type string, its fields, no trailer.
fn check_blob(key_type: KeyType, blob: &[u8]) -> Result<(), String> {
    let word = key_type.word();
    let truncated = || format!("the {word} key's blob is truncated");
    let mut reader = WireReader { rest: blob };

    let inner_type = reader.string().ok_or_else(truncated)?;
    if inner_type != word.as_bytes() {
        return Err(format!(
            "the key's blob is of type \"{}\", not {word} as its type word says",
            echo(&String::from_utf8_lossy(inner_type))
        ));
    }

    match key_type {
        KeyType::Ed25519 => {
            let key = reader.string().ok_or_else(truncated)?;
            if key.len() != ED25519_KEY_BYTES {
                return Err(format!(
                    "the {word} key is {} bytes long; an Ed25519 key is {ED25519_KEY_BYTES}",
                    key.len()
                ));
            }
        }
        KeyType::EcdsaNistp256 => {
            let curve = reader.string().ok_or_else(truncated)?;
            if curve != NISTP256_CURVE_NAME {
                return Err(format!(
                    "the {word} key names the curve \"{}\", not nistp256",
                    echo(&String::from_utf8_lossy(curve))
                ));
            }
            let point = reader.string().ok_or_else(truncated)?;
            if point.len() != NISTP256_POINT_BYTES || point.first() != Some(&SEC1_UNCOMPRESSED_TAG)
            {
                return Err(format!(
                    "the {word} key's point is not an uncompressed P-256 point \
                     ({NISTP256_POINT_BYTES} bytes starting with 0x04)"
                ));
            }
        }
        KeyType::Rsa => {
            let exponent = reader.string().ok_or_else(truncated)?;
            let modulus = reader.string().ok_or_else(truncated)?;
            let exponent = positive_mpint_magnitude(exponent)
                .ok_or_else(|| format!("the {word} key's exponent is not a positive mpint"))?;
            let exponent_bits = bit_length(exponent);
            let exponent_is_odd = exponent.last().is_some_and(|low| low & 1 == 1);
            if exponent_bits > RSA_EXPONENT_BITS_MAX || !exponent_is_odd || exponent_bits < 2 {
                return Err(format!(
                    "the {word} key's exponent must be odd, at least 3 and at most \
                     {RSA_EXPONENT_BITS_MAX} bits"
                ));
            }
            let modulus = positive_mpint_magnitude(modulus)
                .ok_or_else(|| format!("the {word} key's modulus is not a positive mpint"))?;
            let modulus_bits = bit_length(modulus);
            if modulus_bits < RSA_BITS_MIN {
                return Err(format!(
                    "an {word} key of {modulus_bits} bits; at least {RSA_BITS_MIN} are required"
                ));
            }
            if modulus_bits > RSA_BITS_MAX {
                return Err(format!(
                    "an {word} key of {modulus_bits} bits; at most {RSA_BITS_MAX} are accepted"
                ));
            }
            if modulus.last().is_some_and(|low| low & 1 == 0) {
                return Err(format!("the {word} key's modulus is even"));
            }
        }
    }

    if !reader.rest.is_empty() {
        return Err(format!(
            "the {word} key's blob has {} trailing bytes after the key",
            reader.rest.len()
        ));
    }
    Ok(())
}

/// Reads SSH wire-format `string`s (a big-endian u32 length, then that many bytes).
struct WireReader<'a> {
    rest: &'a [u8],
}

impl<'a> WireReader<'a> {
    /// The next `string`, or `None` when the blob ends before it does.
    fn string(&mut self) -> Option<&'a [u8]> {
        let (length, after_length) = self.rest.split_first_chunk::<4>()?;
        let length = usize::try_from(u32::from_be_bytes(*length)).ok()?;
        if length > after_length.len() {
            return None;
        }
        let (value, rest) = after_length.split_at(length);
        self.rest = rest;
        Some(value)
    }
}

/// The magnitude (big-endian, no leading zero byte) of a canonical, strictly positive SSH
/// `mpint` (RFC 4251 section 5: two's complement, no needless leading byte), or `None`.
fn positive_mpint_magnitude(mpint: &[u8]) -> Option<&[u8]> {
    match mpint {
        // Zero is the empty string; a set top bit without a 0x00 before it is negative.
        [] => None,
        [first, ..] if first & 0x80 != 0 => None,
        // A 0x00 is only there to keep a set top bit from reading as a sign.
        [0, rest @ ..] => match rest.first() {
            Some(next) if next & 0x80 != 0 => Some(rest),
            _ => None,
        },
        magnitude => Some(magnitude),
    }
}

/// Bits in a big-endian magnitude, from its first non-zero bit.
fn bit_length(magnitude: &[u8]) -> usize {
    let significant = match magnitude.iter().position(|&byte| byte != 0) {
        Some(first) => &magnitude[first..],
        None => return 0,
    };
    match significant.first() {
        Some(top) => (significant.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    }
}

/// A character no key line may hold: control characters other than the tab (a field
/// separator, as in OpenSSH), whitespace other than space and tab (line and paragraph
/// separators, no-break spaces), and invisible formatting (zero-width and bidirectional
/// controls, the byte order mark).
fn is_forbidden_char(c: char) -> bool {
    if c == ' ' || c == '\t' {
        return false;
    }
    c.is_control()
        || c.is_whitespace()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
        )
}

/// A piece of the buyer's input, cut short for an error message.
fn echo(text: &str) -> String {
    let mut chars = text.chars();
    let mut shown: String = chars.by_ref().take(ECHOED_TYPE_CHARS_MAX).collect();
    if chars.next().is_some() {
        shown.push('…');
    }
    shown
}

/// A refused key is 422 `invalid_ssh_key`, its message naming the key's index.
impl From<SshKeyError> for crate::error::ApiError {
    fn from(error: SshKeyError) -> Self {
        crate::error::ApiError::InvalidSshKey(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC5k3K7KDeQvz2YfHkn5XCT+dAunPX0yMg638MMYjOo9 alice@laptop";
    const ECDSA_P256_KEY: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJMe9VHGCCYekcSa+jiwCThf10J4J7aTmUxYohSRdvtTZnukIsmcfJO6V28HjQW9wZHPUeF04pk1xgMImTwxjAo= bob@ci";
    const ECDSA_P384_KEY: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBCkZPy5ERRSxHhdjmlDSkudoP5E7QofTaJ/69mQIg2cGiu4AYBwyNyY6VQzCfC3SzW96v4D5w+3Fo2xtIReBGe34DZCKXEZ2sA6VmuYbL82u0kDHD5O6kRc7upjRnuz6oA== carol";
    const RSA_2048_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCEQtrCs01y8Alku1Sf+bBqwWQLQMNKu747LrXajuso7QdXEecPllwZn0p1YSaqWpv9VvG7FbLnhgbN/35kDdhkNQWEdCCwmtkI0o0gfNGacHKPplBJVjYMzGpeExNCVHfHzMkmnoIFIxV1IY+z/SxCDYbRD8lvxBsu/jUnxhODLnwh5boQaGeD2yafAx8mfFdfjjZ1tP/euJIE+k8J6xh5164T2qGxpSAX4n3PzX77mHwxzy2jfhwqZ/UZOfAJpZtYVyJJRUImGiMDpjlkuCkrwtRTxriob9wcLTuAlmRoEZMfAcij9n3N/k/lzT4MQuVeuh+ZnmoffNdU3l1QCnKh dave@build-01";
    const RSA_1024_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCo5IhGs1jqhDE6YhDFNzGNCLuEagRDtm5+lVU2oD4SkYGfR4wILpwnLCEWoGey9kK6pEREDLsryQZeHnxT69NUhYzFKN5iPBDagpaFPCvXb5pDut9fogb8X9htG1U0CFF9r5aJRc3M1QUAUICCN5xXze6p5qbHq3d653t8hiPWQw== old@box";

    fn strings(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|line| (*line).to_owned()).collect()
    }

    /// The error for a single key line placed at `index` after `index` good keys.
    fn refusal_at(index: usize, line: &str) -> SshKeyError {
        let mut lines = vec![ED25519_KEY.to_owned(); index];
        lines.push(line.to_owned());
        match parse_ssh_public_keys(&lines) {
            Ok(keys) => panic!("{line:?} was accepted as {keys:?}"),
            Err(error) => {
                assert_eq!(error.index, index, "{error}");
                assert!(
                    error
                        .to_string()
                        .starts_with(&format!("ssh_public_keys[{index}]: ")),
                    "{error}"
                );
                error
            }
        }
    }

    fn wire_string(out: &mut Vec<u8>, value: &[u8]) {
        let length = u32::try_from(value.len()).expect("test strings are short");
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(value);
    }

    fn line_of(type_word: &str, blob: &[u8]) -> String {
        format!("{type_word} {}", BASE64_STANDARD.encode(blob))
    }

    /// An `ssh-rsa` blob with exponent 65537 and the given modulus mpint bytes.
    fn rsa_blob(modulus_mpint: &[u8]) -> Vec<u8> {
        let mut blob = Vec::new();
        wire_string(&mut blob, b"ssh-rsa");
        wire_string(&mut blob, &[0x01, 0x00, 0x01]);
        wire_string(&mut blob, modulus_mpint);
        blob
    }

    /// A positive mpint of exactly `bits` significant bits, odd.
    fn modulus_of_bits(bits: usize) -> Vec<u8> {
        let bytes = bits.div_ceil(8);
        let mut magnitude = vec![0xA5_u8; bytes];
        let top_bits = bits - (bytes - 1) * 8;
        magnitude[0] = 1 << (top_bits - 1);
        if let Some(last) = magnitude.last_mut() {
            *last |= 1;
        }
        if magnitude[0] & 0x80 != 0 {
            magnitude.insert(0, 0);
        }
        magnitude
    }

    fn ed25519_blob() -> Vec<u8> {
        let body = ED25519_KEY.split(' ').nth(1).expect("constant has a body");
        BASE64_STANDARD.decode(body).expect("constant is base64")
    }

    #[test]
    fn real_keys_of_the_three_types_are_accepted_and_normalised() {
        let keys = parse_ssh_public_keys(&strings(&[ED25519_KEY, ECDSA_P256_KEY, RSA_2048_KEY]))
            .expect("real keys");
        assert_eq!(keys, strings(&[ED25519_KEY, ECDSA_P256_KEY, RSA_2048_KEY]));
    }

    #[test]
    fn whitespace_is_normalised_and_the_comment_is_optional() {
        let body = ED25519_KEY.split(' ').nth(1).expect("constant has a body");
        let messy = format!("  ssh-ed25519 \t {body}   my   laptop key \n");
        let bare = format!("ssh-ed25519 {body}\r\n");
        let keys = parse_ssh_public_keys(&[messy, bare]).expect("valid keys");
        assert_eq!(keys[0], format!("ssh-ed25519 {body} my laptop key"));
        assert_eq!(keys[1], format!("ssh-ed25519 {body}"));
    }

    #[test]
    fn an_empty_list_is_fine() {
        assert_eq!(parse_ssh_public_keys(&[]), Ok(Vec::new()));
    }

    #[test]
    fn rsa_1024_is_refused_with_its_size() {
        let error = refusal_at(2, RSA_1024_KEY);
        assert_eq!(
            error.to_string(),
            "ssh_public_keys[2]: an ssh-rsa key of 1024 bits; at least 2048 are required"
        );
    }

    #[test]
    fn rsa_bits_count_from_the_first_non_zero_bit() {
        assert!(
            parse_ssh_public_keys(&[line_of("ssh-rsa", &rsa_blob(&modulus_of_bits(2048)))]).is_ok()
        );
        let error = refusal_at(0, &line_of("ssh-rsa", &rsa_blob(&modulus_of_bits(2047))));
        assert!(error.reason.contains("of 2047 bits"), "{error}");
        assert!(parse_ssh_public_keys(&[line_of(
            "ssh-rsa",
            &rsa_blob(&modulus_of_bits(RSA_BITS_MAX))
        )])
        .is_ok());
        let error = refusal_at(
            1,
            &line_of("ssh-rsa", &rsa_blob(&modulus_of_bits(RSA_BITS_MAX + 1))),
        );
        assert!(error.reason.contains("at most 16384"), "{error}");
    }

    #[test]
    fn rsa_mpints_must_be_canonical_and_positive() {
        let mut negative = modulus_of_bits(2048);
        negative.remove(0); // top bit set without its 0x00: a negative mpint
        let error = refusal_at(0, &line_of("ssh-rsa", &rsa_blob(&negative)));
        assert!(
            error.reason.contains("modulus is not a positive mpint"),
            "{error}"
        );

        let mut padded = modulus_of_bits(2040);
        padded.insert(0, 0); // a needless leading zero
        let error = refusal_at(0, &line_of("ssh-rsa", &rsa_blob(&padded)));
        assert!(error.reason.contains("not a positive mpint"), "{error}");

        let mut even = modulus_of_bits(2048);
        if let Some(last) = even.last_mut() {
            *last &= 0xFE;
        }
        let error = refusal_at(0, &line_of("ssh-rsa", &rsa_blob(&even)));
        assert!(error.reason.contains("even"), "{error}");

        let mut even_exponent = Vec::new();
        wire_string(&mut even_exponent, b"ssh-rsa");
        wire_string(&mut even_exponent, &[0x01, 0x00, 0x00]);
        wire_string(&mut even_exponent, &modulus_of_bits(2048));
        let error = refusal_at(0, &line_of("ssh-rsa", &even_exponent));
        assert!(error.reason.contains("exponent"), "{error}");
    }

    #[test]
    fn ecdsa_p384_is_refused() {
        let error = refusal_at(1, ECDSA_P384_KEY);
        assert!(error.reason.contains("ecdsa-sha2-nistp384"), "{error}");
        assert!(error.reason.contains("not accepted"), "{error}");
    }

    #[test]
    fn p384_blob_under_a_p256_type_word_is_refused() {
        let body = ECDSA_P384_KEY
            .split(' ')
            .nth(1)
            .expect("constant has a body");
        let error = refusal_at(0, &format!("ecdsa-sha2-nistp256 {body}"));
        assert!(error.reason.contains("ecdsa-sha2-nistp384"), "{error}");
    }

    #[test]
    fn a_blob_whose_inner_type_differs_from_the_type_word_is_refused() {
        let body = ED25519_KEY.split(' ').nth(1).expect("constant has a body");
        let error = refusal_at(3, &format!("ssh-rsa {body}"));
        assert_eq!(
            error.to_string(),
            "ssh_public_keys[3]: the key's blob is of type \"ssh-ed25519\", not ssh-rsa as \
             its type word says"
        );
    }

    #[test]
    fn bad_base64_is_refused() {
        let error = refusal_at(0, "ssh-ed25519 AAAA!!!notbase64 x");
        assert!(error.reason.contains("not valid base64"), "{error}");
        // Valid alphabet, missing padding.
        let body = ECDSA_P256_KEY
            .split(' ')
            .nth(1)
            .expect("constant has a body");
        let unpadded = body.trim_end_matches('=');
        let error = refusal_at(0, &format!("ecdsa-sha2-nistp256 {unpadded}"));
        assert!(error.reason.contains("not valid base64"), "{error}");
    }

    #[test]
    fn a_missing_body_is_refused() {
        let error = refusal_at(0, "ssh-ed25519");
        assert!(error.reason.contains("no base64 body"), "{error}");
    }

    #[test]
    fn a_truncated_blob_is_refused() {
        let blob = ed25519_blob();
        for cut in [3, 10, 15, blob.len() - 1] {
            let error = refusal_at(0, &line_of("ssh-ed25519", &blob[..cut]));
            assert!(
                error.reason.contains("truncated") || error.reason.contains("bytes long"),
                "cut at {cut}: {error}"
            );
        }
        let rsa = BASE64_STANDARD
            .decode(RSA_2048_KEY.split(' ').nth(1).expect("constant has a body"))
            .expect("constant is base64");
        let error = refusal_at(0, &line_of("ssh-rsa", &rsa[..rsa.len() - 7]));
        assert!(error.reason.contains("truncated"), "{error}");
    }

    #[test]
    fn a_huge_length_prefix_is_truncation_not_a_panic() {
        let mut blob = Vec::new();
        wire_string(&mut blob, b"ssh-ed25519");
        blob.extend_from_slice(&u32::MAX.to_be_bytes());
        blob.extend_from_slice(&[7; 32]);
        let error = refusal_at(0, &line_of("ssh-ed25519", &blob));
        assert!(error.reason.contains("truncated"), "{error}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut blob = ed25519_blob();
        blob.extend_from_slice(&[0, 0, 0, 0]);
        let error = refusal_at(1, &line_of("ssh-ed25519", &blob));
        assert_eq!(
            error.to_string(),
            "ssh_public_keys[1]: the ssh-ed25519 key's blob has 4 trailing bytes after the key"
        );
    }

    #[test]
    fn a_wrong_ed25519_length_and_a_bad_ecdsa_point_are_refused() {
        let mut short = Vec::new();
        wire_string(&mut short, b"ssh-ed25519");
        wire_string(&mut short, &[9; 31]);
        let error = refusal_at(0, &line_of("ssh-ed25519", &short));
        assert!(error.reason.contains("31 bytes long"), "{error}");

        let mut compressed = Vec::new();
        wire_string(&mut compressed, b"ecdsa-sha2-nistp256");
        wire_string(&mut compressed, b"nistp256");
        let mut point = vec![0x02];
        point.extend_from_slice(&[5; 32]);
        wire_string(&mut compressed, &point);
        let error = refusal_at(0, &line_of("ecdsa-sha2-nistp256", &compressed));
        assert!(error.reason.contains("uncompressed"), "{error}");

        let mut wrong_curve = Vec::new();
        wire_string(&mut wrong_curve, b"ecdsa-sha2-nistp256");
        wire_string(&mut wrong_curve, b"nistp384");
        let error = refusal_at(0, &line_of("ecdsa-sha2-nistp256", &wrong_curve));
        assert!(error.reason.contains("nistp384"), "{error}");
    }

    #[test]
    fn too_many_keys_are_refused_at_index_max() {
        let lines = vec![ED25519_KEY.to_owned(); SSH_KEYS_MAX + 1];
        let error = parse_ssh_public_keys(&lines).expect_err("too many");
        assert_eq!(error.index, SSH_KEYS_MAX);
        assert_eq!(
            error.to_string(),
            "ssh_public_keys[8]: at most 8 keys are accepted; 9 were given"
        );
        assert!(parse_ssh_public_keys(&lines[..SSH_KEYS_MAX]).is_ok());
    }

    #[test]
    fn oversized_lines_and_comments_are_refused() {
        let huge = format!("{ED25519_KEY}{}", "x".repeat(SSH_KEY_BYTES_MAX));
        let error = refusal_at(4, &huge);
        assert!(error.reason.contains("at most 4096"), "{error}");

        let long_comment = format!("{} {}", ED25519_KEY, "c".repeat(SSH_KEY_COMMENT_BYTES_MAX));
        let error = refusal_at(0, &long_comment);
        assert!(error.reason.contains("comment"), "{error}");
    }

    #[test]
    fn control_characters_are_refused() {
        for bad in [
            "\n",
            "\r",
            "\u{0}",
            "\u{1b}[31m",
            "\u{7f}",
            "\u{85}",
            "\u{2028}",
            "\u{202E}",
        ] {
            let line = format!("{ED25519_KEY} evil{bad}comment");
            let error = refusal_at(2, &line);
            assert!(
                error.reason.contains("control or formatting character"),
                "{error}"
            );
        }
        // A second key smuggled onto another authorized_keys line.
        let error = refusal_at(0, &format!("{ED25519_KEY}\n{RSA_2048_KEY}"));
        assert!(error.reason.contains("U+000A"), "{error}");
        // Printable UTF-8 is fine.
        let keys = parse_ssh_public_keys(&[format!("{ED25519_KEY} José's clé 🔑")]).expect("utf-8");
        assert!(keys[0].ends_with("José's clé 🔑"));
    }

    #[test]
    fn empty_and_blank_keys_are_refused() {
        for blank in ["", "   ", "\n"] {
            let error = refusal_at(0, blank);
            assert_eq!(error.to_string(), "ssh_public_keys[0]: the key is empty");
        }
    }

    #[test]
    fn authorized_keys_options_and_unknown_types_are_refused() {
        let error = refusal_at(0, &format!("command=\"/bin/sh\" {ED25519_KEY}"));
        assert!(error.reason.contains("not accepted"), "{error}");
        let error = refusal_at(0, &format!("ssh-dss {}", "A".repeat(200)));
        assert!(error.reason.contains("\"ssh-dss\""), "{error}");
        let error = refusal_at(0, &"z".repeat(300));
        assert!(
            error.reason.contains('…'),
            "a long type word is cut short: {error}"
        );
    }

    #[test]
    fn every_prefix_and_byte_flip_of_real_keys_is_handled_without_panic() {
        for line in [
            ED25519_KEY,
            ECDSA_P256_KEY,
            RSA_2048_KEY,
            RSA_1024_KEY,
            ECDSA_P384_KEY,
        ] {
            for (cut, _) in line.char_indices() {
                let _ = parse_ssh_public_keys(&[line[..cut].to_owned()]);
            }
            let body = line.split(' ').nth(1).expect("constant has a body");
            let blob = BASE64_STANDARD.decode(body).expect("constant is base64");
            let type_word = line.split(' ').next().expect("constant has a type");
            for position in 0..blob.len() {
                let mut mutated = blob.clone();
                mutated[position] ^= 0xFF;
                let _ = parse_ssh_public_keys(&[line_of(type_word, &mutated)]);
                let _ = parse_ssh_public_keys(&[line_of(type_word, &blob[..position])]);
            }
        }
    }
}
