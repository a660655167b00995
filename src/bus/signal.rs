//! A capacity stream entry's fields, parsed into an engine command, and what a refusal means.
//!
//! The fields are those of the matching REST body (DESIGN section 8), as flat strings:
//!
//! | `type` | required | optional |
//! |---|---|---|
//! | `release` | `supplier`, `block_id`, `pool`, `gpus`, `reserve_price`, `available_until` | `available_from`, `nodes` (JSON `[{"node","gpus"}]`) |
//! | `update` | `supplier`, `block_id` | `reserve_price`, `available_until` |
//! | `reclaim` | `supplier`, `block_id`, `gpus` | `notice_s`, `emergency` (`true`/`false`) |
//! | `forecast` | `supplier`, `block_id`, `reclaim_at` | |
//! | `ready` | `supplier`, `lease_id`, and `endpoints` (JSON `[{"node","host","port","user"}]`) or `endpoint` (a model gateway's URL) | `block_id` |
//! | `provision_failed` | `supplier`, `lease_id`, `reason` | `block_id` |
//!
//! Prices are USD decimal strings (`"1.25"`, parsed exactly like the REST API), times RFC 3339,
//! counts decimal integers. As with REST, a field the type does not take is refused rather than
//! ignored: a typo must not silently change what a signal does.
//!
//! Poison or refused: an entry that can never be applied as written is *poison* and goes to the
//! dead letters, for a person to fix the producer: fields that do not parse, and the engine's
//! refusals that depend only on the entry and the pool's rules ([`is_poison`]). A refusal that
//! depends on the market's state at that moment (the block is gone or its id taken, the kill
//! switch, a reclaim larger than what the block still holds, a time already past) is the
//! signal's ordinary answer: it is journaled, recorded and reported on the results stream like
//! a REST 4xx, and the entry is acknowledged.

use super::Fields;
use crate::limits::{SIGNAL_BYTES_MAX, SIGNAL_FIELDS_MAX};
use crate::money::parse_usd;
use crate::timestamp::parse_rfc3339;
use crate::validate::{self, Invalid};
use matching_engine::{
    Command, Endpoint, LeaseId, LeaseReady, NodeGpus, PriceMicros, ReclaimCapacity, Rejection,
    ReleaseCapacity, TimeMs, UpdateCapacity,
};
use serde::Deserialize;

/// Why an entry can never be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Poison {
    /// A stable snake_case code: `malformed`, `unknown_type`, an engine rejection code...
    pub reason: &'static str,
    /// What exactly is wrong, for the person reading the dead letter.
    pub detail: String,
}

impl Poison {
    fn malformed(detail: impl Into<String>) -> Poison {
        Poison {
            reason: "malformed",
            detail: detail.into(),
        }
    }
}

/// A field REST would refuse is poison: `malformed` with REST's message, or the engine's
/// rejection code (only an impossible pool id is refused before the engine).
impl From<Invalid> for Poison {
    fn from(invalid: Invalid) -> Poison {
        match invalid {
            Invalid::Malformed(detail) => Poison::malformed(detail),
            Invalid::Rejected(reason) => Poison {
                reason: reason.as_str(),
                detail: "no pool has that id".into(),
            },
        }
    }
}

/// The engine refusals that make a signal poison: the entry itself is wrong (an unknown pool,
/// values outside the pool's rules, nodes that do not add up, an update that changes nothing),
/// so applying it again, now or later, can only be refused again.
pub const POISON_REJECTIONS: [Rejection; 8] = [
    Rejection::UnknownPool,
    Rejection::GpusMustNotBeZero,
    Rejection::GpusOverMax,
    Rejection::PriceNotOnTick,
    Rejection::PriceOutOfBand,
    Rejection::NodesDoNotMatchGpus,
    Rejection::NothingToChange,
    Rejection::EndpointsInvalid,
];

/// Whether this refusal makes a signal poison (see [`POISON_REJECTIONS`]).
pub fn is_poison(rejection: Rejection) -> bool {
    POISON_REJECTIONS.contains(&rejection)
}

/// [`is_poison`] of a recorded rejection code.
pub fn is_poison_code(code: &str) -> bool {
    POISON_REJECTIONS.iter().any(|r| r.as_str() == code)
}

/// The fields of a parsed entry that the results stream repeats, so a producer can match them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignalSummary {
    /// `release`, `update`, `reclaim`, `forecast`, or what the entry said.
    pub kind: String,
    /// The supplier, if given.
    pub supplier: String,
    /// The block id, if given.
    pub block_id: String,
}

/// The summary of an entry's fields, whether or not they parse.
pub fn summary(fields: &Fields) -> SignalSummary {
    let text = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).chars().take(128).collect())
            .unwrap_or_default()
    };
    SignalSummary {
        kind: text("type"),
        supplier: text("supplier"),
        block_id: text("block_id"),
    }
}

/// The fields as UTF-8 name/value pairs, checked for size, duplicates and encoding.
fn text_fields(fields: &Fields) -> Result<Vec<(&str, &str)>, Poison> {
    if fields.len() > SIGNAL_FIELDS_MAX {
        return Err(Poison::malformed(format!(
            "{} fields; a signal has at most {SIGNAL_FIELDS_MAX}",
            fields.len()
        )));
    }
    let bytes: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > SIGNAL_BYTES_MAX {
        return Err(Poison::malformed(format!(
            "{bytes} bytes; a signal has at most {SIGNAL_BYTES_MAX}"
        )));
    }
    let mut out: Vec<(&str, &str)> = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        let name = std::str::from_utf8(name)
            .map_err(|_| Poison::malformed("a field name is not UTF-8"))?;
        let value = std::str::from_utf8(value)
            .map_err(|_| Poison::malformed(format!("field `{name}` is not UTF-8")))?;
        if out.iter().any(|(seen, _)| *seen == name) {
            return Err(Poison::malformed(format!("field `{name}` is given twice")));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// The fields of one entry, taken one by one; whatever is left at the end was not expected.
struct Taker<'a> {
    fields: Vec<(&'a str, &'a str)>,
    kind: &'static str,
}

impl<'a> Taker<'a> {
    fn optional(&mut self, name: &str) -> Option<&'a str> {
        let at = self.fields.iter().position(|(k, _)| *k == name)?;
        Some(self.fields.swap_remove(at).1)
    }

    fn required(&mut self, name: &str) -> Result<&'a str, Poison> {
        self.optional(name)
            .ok_or_else(|| Poison::malformed(format!("a {} needs the field `{name}`", self.kind)))
    }

    fn finish(self) -> Result<(), Poison> {
        match self.fields.first() {
            None => Ok(()),
            Some((name, _)) => Err(Poison::malformed(format!(
                "a {} does not take the field `{name}`",
                self.kind
            ))),
        }
    }
}

fn count(value: &str, field: &str) -> Result<u32, Poison> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Poison::malformed(format!(
            "{field} must be a whole number, not {value:?}"
        )));
    }
    value
        .parse()
        .map_err(|_| Poison::malformed(format!("{field} {value} is too large")))
}

fn price(value: &str, field: &str) -> Result<PriceMicros, Poison> {
    parse_usd(value)
        .map(PriceMicros)
        .map_err(|e| Poison::malformed(format!("{field}: {e}")))
}

fn time(value: &str, field: &str) -> Result<TimeMs, Poison> {
    parse_rfc3339(value).map_err(|e| Poison::malformed(format!("{field}: {e}")))
}

fn flag(value: &str, field: &str) -> Result<bool, Poison> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Poison::malformed(format!(
            "{field} must be true or false, not {value:?}"
        ))),
    }
}

fn nodes(value: &str) -> Result<Vec<NodeGpus>, Poison> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Node {
        node: String,
        gpus: u32,
    }
    let list: Vec<Node> = serde_json::from_str(value).map_err(|e| {
        Poison::malformed(format!(
            "nodes must be a JSON list like [{{\"node\":\"rack1-n1\",\"gpus\":8}}]: {e}"
        ))
    })?;
    validate::nodes(list.iter().map(|n| n.node.as_str()))?;
    Ok(list
        .into_iter()
        .map(|n| NodeGpus {
            node: n.node.into(),
            gpus: n.gpus,
        })
        .collect())
}

/// A provisioner's answer for a lease: `ready` with how to reach it, or `provision_failed`.
/// The block id is optional (the lease id names the lease; the supplier must own it).
fn handoff(kind: &str, supplier: String, take: &mut Taker<'_>) -> Result<Command, Poison> {
    let block_id = match take.optional("block_id") {
        Some(id) => validate::block_id(id)?.to_owned(),
        None => String::new(),
    };
    let lease_text = take.required("lease_id")?;
    let lease_id = match validate::numeric_id(lease_text) {
        Some(id) => LeaseId(id),
        None => {
            return Err(Poison::malformed(format!(
                "lease_id must be a lease id (digits), not {:?}",
                lease_text.chars().take(64).collect::<String>()
            )))
        }
    };
    if kind == "provision_failed" {
        let reason = take.required("reason")?;
        validate::failure_reason(reason)?;
        return Ok(Command::LeaseFailed {
            supplier,
            block_id,
            lease_id,
            reason: reason.to_owned(),
        });
    }
    let endpoints = match take.optional("endpoints") {
        Some(json) => {
            let list: Vec<Endpoint> = serde_json::from_str(json).map_err(|e| {
                Poison::malformed(format!(
                    "endpoints must be a JSON list like \
                     [{{\"node\":\"rack1-n1\",\"host\":\"10.0.0.7\",\"port\":22,\"user\":\"ubuntu\"}}]: {e}"
                ))
            })?;
            validate::endpoints(&list)?;
            list
        }
        None => Vec::new(),
    };
    let endpoint = take.optional("endpoint").map(str::to_owned);
    if let Some(url) = &endpoint {
        validate::endpoint_url(url)?;
    }
    Ok(Command::LeaseReady(LeaseReady {
        supplier,
        block_id,
        lease_id,
        endpoints,
        endpoint,
    }))
}

/// Parses an entry's fields into the command it asks for.
pub fn parse(fields: &Fields) -> Result<Command, Poison> {
    let fields = text_fields(fields)?;
    let mut take = Taker {
        fields,
        kind: "signal",
    };
    let kind = take.required("type")?;
    take.kind = match kind {
        "release" => "release",
        "update" => "update",
        "reclaim" => "reclaim",
        "forecast" => "forecast",
        "ready" => "ready",
        "provision_failed" => "provision_failed",
        other => {
            return Err(Poison {
                reason: "unknown_type",
                detail: format!(
                    "type must be release, update, reclaim, forecast, ready or \
                     provision_failed, not {:?}",
                    other.chars().take(64).collect::<String>()
                ),
            })
        }
    };
    let supplier = validate::supplier(take.required("supplier")?)?.to_owned();
    if matches!(kind, "ready" | "provision_failed") {
        let command = handoff(kind, supplier, &mut take)?;
        take.finish()?;
        return Ok(command);
    }
    let block_id = validate::block_id(take.required("block_id")?)?.to_owned();
    let command = match kind {
        "release" => {
            let pool = take.required("pool")?;
            if pool.is_empty() {
                return Err(Invalid::Rejected(Rejection::UnknownPool).into());
            }
            validate::pool(pool)?;
            Command::ReleaseCapacity(ReleaseCapacity {
                supplier,
                block_id,
                pool: pool.to_owned(),
                gpus: count(take.required("gpus")?, "gpus")?,
                reserve_price: price(take.required("reserve_price")?, "reserve_price")?,
                available_from: take
                    .optional("available_from")
                    .map(|v| time(v, "available_from"))
                    .transpose()?,
                available_until: time(take.required("available_until")?, "available_until")?,
                nodes: take
                    .optional("nodes")
                    .map(nodes)
                    .transpose()?
                    .unwrap_or_default(),
            })
        }
        "update" => Command::UpdateCapacity(UpdateCapacity {
            supplier,
            block_id,
            reserve_price: take
                .optional("reserve_price")
                .map(|v| price(v, "reserve_price"))
                .transpose()?,
            available_until: take
                .optional("available_until")
                .map(|v| time(v, "available_until"))
                .transpose()?,
        }),
        "reclaim" => Command::ReclaimCapacity(ReclaimCapacity {
            supplier,
            block_id,
            gpus: count(take.required("gpus")?, "gpus")?,
            notice_s: take
                .optional("notice_s")
                .map(|v| count(v, "notice_s"))
                .transpose()?,
            emergency: take
                .optional("emergency")
                .map(|v| flag(v, "emergency"))
                .transpose()?
                .unwrap_or(false),
        }),
        _ => Command::ForecastReclaim {
            supplier,
            block_id,
            reclaim_at: time(take.required("reclaim_at")?, "reclaim_at")?,
        },
    };
    take.finish()?;
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_release_parses_like_the_rest_body() {
        let command = parse(&fields(&[
            ("type", "release"),
            ("supplier", "dc1"),
            ("block_id", "b-1"),
            ("pool", "h100-sxm.us-east"),
            ("gpus", "16"),
            ("reserve_price", "1.25"),
            ("available_from", "2030-01-01T00:00:00Z"),
            ("available_until", "2030-01-01T06:00:00Z"),
            (
                "nodes",
                r#"[{"node":"rack1-n1","gpus":8},{"node":"rack1-n2","gpus":8}]"#,
            ),
        ]))
        .unwrap();
        let Command::ReleaseCapacity(release) = command else {
            panic!("{command:?}");
        };
        assert_eq!(release.reserve_price, PriceMicros(1_250_000));
        assert_eq!(release.gpus, 16);
        assert_eq!(release.nodes.len(), 2);
        assert_eq!(
            release.available_until.0 - release.available_from.unwrap().0,
            6 * 3600 * 1000
        );
    }

    #[test]
    fn reclaim_update_and_forecast_parse() {
        let reclaim = parse(&fields(&[
            ("type", "reclaim"),
            ("supplier", "dc1"),
            ("block_id", "b-1"),
            ("gpus", "8"),
            ("notice_s", "30"),
            ("emergency", "true"),
        ]))
        .unwrap();
        assert_eq!(
            reclaim,
            Command::ReclaimCapacity(ReclaimCapacity {
                supplier: "dc1".into(),
                block_id: "b-1".into(),
                gpus: 8,
                notice_s: Some(30),
                emergency: true,
            })
        );
        let update = parse(&fields(&[
            ("type", "update"),
            ("supplier", "dc1"),
            ("block_id", "b-1"),
            ("reserve_price", "2"),
        ]))
        .unwrap();
        assert!(
            matches!(update, Command::UpdateCapacity(u) if u.reserve_price == Some(PriceMicros(2_000_000)) && u.available_until.is_none())
        );
        let forecast = parse(&fields(&[
            ("type", "forecast"),
            ("supplier", "dc1"),
            ("block_id", "b-1"),
            ("reclaim_at", "2030-01-01T00:00:00+01:00"),
        ]))
        .unwrap();
        assert!(matches!(forecast, Command::ForecastReclaim { .. }));
    }

    #[test]
    fn bad_entries_are_poison_with_a_reason_never_a_panic() {
        let base = [("supplier", "dc1"), ("block_id", "b-1")];
        let with = |extra: &[(&str, &str)]| {
            let mut all: Vec<(&str, &str)> = base.to_vec();
            all.extend_from_slice(extra);
            parse(&fields(&all))
        };
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![], "malformed"),
            (vec![("type", "explode")], "unknown_type"),
            (vec![("type", "reclaim")], "malformed"),
            (vec![("type", "reclaim"), ("gpus", "-1")], "malformed"),
            (
                vec![("type", "reclaim"), ("gpus", "99999999999")],
                "malformed",
            ),
            (
                vec![("type", "reclaim"), ("gpus", "1"), ("emergency", "yes")],
                "malformed",
            ),
            (
                vec![("type", "reclaim"), ("gpus", "1"), ("pool", "x.y")],
                "malformed",
            ),
            (
                vec![("type", "forecast"), ("reclaim_at", "tomorrow")],
                "malformed",
            ),
            (
                vec![
                    ("type", "release"),
                    ("pool", "p.q"),
                    ("gpus", "1"),
                    ("reserve_price", "1.0000001"),
                    ("available_until", "2030-01-01T00:00:00Z"),
                ],
                "malformed",
            ),
            (
                vec![
                    ("type", "release"),
                    ("pool", "p.q"),
                    ("gpus", "1"),
                    ("reserve_price", "1"),
                    ("available_until", "2030-01-01T00:00:00Z"),
                    ("nodes", "[{"),
                ],
                "malformed",
            ),
        ];
        for (extra, reason) in cases {
            let got = with(&extra).expect_err(&format!("{extra:?}"));
            assert_eq!(got.reason, reason, "{extra:?}: {got:?}");
        }
        // Names are checked like REST's, duplicates and non-UTF-8 refused.
        assert_eq!(
            parse(&fields(&[
                ("type", "reclaim"),
                ("supplier", "d c"),
                ("block_id", "b"),
                ("gpus", "1")
            ]))
            .unwrap_err()
            .reason,
            "malformed"
        );
        assert!(parse(&fields(&[("type", "reclaim"), ("type", "reclaim")])).is_err());
        let binary: Fields = vec![(b"type".to_vec(), vec![0xff, 0xfe])];
        assert_eq!(parse(&binary).unwrap_err().reason, "malformed");
        let huge: Fields = (0..100)
            .map(|i| (format!("f{i}").into_bytes(), vec![]))
            .collect();
        assert_eq!(parse(&huge).unwrap_err().reason, "malformed");
    }

    #[test]
    fn poison_is_what_the_entry_alone_decides() {
        assert!(is_poison(Rejection::UnknownPool));
        assert!(is_poison(Rejection::PriceNotOnTick));
        assert!(!is_poison(Rejection::UnknownBlock));
        assert!(!is_poison(Rejection::BlockIdTaken));
        assert!(!is_poison(Rejection::KillSwitch));
        assert!(!is_poison(Rejection::ReclaimOverBlock));
        assert!(is_poison_code("unknown_pool"));
        assert!(!is_poison_code("unknown_block"));
        assert!(!is_poison_code(""));
    }

    #[test]
    fn the_summary_survives_garbage() {
        let s = summary(&vec![
            (b"type".to_vec(), vec![0xff]),
            (b"block_id".to_vec(), b"b-9".to_vec()),
        ]);
        assert_eq!(s.block_id, "b-9");
        assert_eq!(s.kind, "\u{fffd}");
        assert_eq!(s.supplier, "");
    }
}
