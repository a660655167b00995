//! The Redis field formats (DESIGN section 8): a pool's capacity hash and a lease event's
//! stream fields. Every value is a string; prices are USD decimal strings, times RFC 3339.

use crate::feed::CapacityFigures;
use crate::money::Usd;
use crate::store::LeaseEventRecord;
use crate::timestamp::format_rfc3339;
use matching_engine::PriceMicros;

/// A pool's capacity hash: counts, prices as USD strings (empty when there is none).
pub fn capacity_hash_fields(figures: &CapacityFigures, updated_at: &str) -> Vec<(String, String)> {
    let usd = |p: Option<PriceMicros>| p.map(|p| Usd::from(p).to_string()).unwrap_or_default();
    vec![
        ("idle_gpus".into(), figures.idle_gpus.to_string()),
        ("leased_gpus".into(), figures.leased_gpus.to_string()),
        (
            "reclaiming_gpus".into(),
            figures.reclaiming_gpus.to_string(),
        ),
        ("best_bid".into(), usd(figures.best_bid)),
        ("best_ask".into(), usd(figures.best_ask)),
        ("last_price".into(), usd(figures.last_price)),
        ("updated_at".into(), updated_at.to_owned()),
    ]
}

/// The lease-events stream's fields for one recorded event.
pub fn lease_event_fields(record: &LeaseEventRecord) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::with_capacity(16);
    let mut put = |name: &str, value: String| fields.push((name.to_owned(), value));
    let event = match record.kind.as_str() {
        "opened" => "opened",
        "forecast" => "reclaim_warning",
        "notice" => "notice",
        "ready" => "ready",
        "failed" => "failed",
        "preempted" | "completed" | "released" => "ended",
        _ => "changed",
    };
    put("event", event.to_owned());
    put("lease_id", record.lease_id.to_string());
    put("buyer", record.buyer.to_string());
    put("seq", record.seq.to_string());
    put("at", format_rfc3339(record.at));
    if let Some(lease) = &record.lease {
        put("supplier", lease.supplier.to_string());
        put("pool", lease.pool.to_string());
        put("block_id", lease.block_id.to_string());
        put("order_id", lease.order_id.to_string());
        put("gpus", lease.gpus.to_string());
        put("price", Usd::from(lease.price).to_string());
    }
    match event {
        "opened" => {
            if let Some(lease) = &record.lease {
                put("started_at", format_rfc3339(lease.started_at));
                put("ends_at", format_rfc3339(lease.ends_at));
                // What the supplier's provisioner needs: the machines and the buyer's keys.
                put("nodes", json(&lease.nodes));
                let keys = lease.ssh_public_keys.as_deref().unwrap_or_default();
                put("ssh_public_keys", json(keys));
            }
        }
        "ready" => {
            if let Some(lease) = &record.lease {
                if let Some(at) = lease.access.ready_at {
                    put("ready_at", format_rfc3339(at));
                }
                if let Some(endpoint) = &lease.access.endpoint {
                    put("endpoint", endpoint.to_string());
                } else {
                    put("endpoints", json(&lease.access.endpoints));
                }
            }
        }
        "failed" => {
            if let Some(lease) = &record.lease {
                put(
                    "reason",
                    lease.access.reason.as_deref().unwrap_or("").to_owned(),
                );
                if let Some(ended) = lease.ended_at {
                    put("ended_at", format_rfc3339(ended));
                }
            }
        }
        "reclaim_warning" => {
            if let Some(at) = record.detail_at {
                put("reclaim_at", format_rfc3339(at));
            }
        }
        "notice" => {
            if let Some(at) = record.detail_at {
                put("notice_ends_at", format_rfc3339(at));
            }
            if let Some(lease) = &record.lease {
                put("emergency", lease.emergency.to_string());
            }
        }
        "ended" => {
            put("reason", record.kind.clone());
            if let Some(lease) = &record.lease {
                put("cost", Usd(lease.cost_micros).to_string());
                if let Some(ended) = lease.ended_at {
                    put("ended_at", format_rfc3339(ended));
                }
            }
        }
        _ => {
            if let Some(lease) = &record.lease {
                put("ends_at", format_rfc3339(lease.ends_at));
            }
        }
    }
    fields
}

/// A value as JSON text (a list of plain records always serializes).
fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use matching_engine::{LeaseId, LeaseStatus, LeaseView, Name, OrderId, TimeMs};

    /// A recorded lease event of this kind, for the tests here and in the publisher.
    pub(crate) fn record(kind: &str) -> LeaseEventRecord {
        LeaseEventRecord {
            seq: 42,
            row_id: 7,
            lease_id: LeaseId(9),
            buyer: Name::from("acme"),
            kind: kind.to_owned(),
            at: TimeMs(1_735_787_045_000),
            detail_at: Some(TimeMs(1_735_787_165_000)),
            lease: Some(LeaseView {
                id: LeaseId(9),
                order_id: OrderId(3),
                buyer: Name::from("acme"),
                supplier: Name::from("dc1"),
                pool: Name::from("h100-sxm.us-east"),
                block_id: Name::from("b1"),
                gpus: 8,
                price: PriceMicros(1_500_000),
                status: LeaseStatus::Preempted,
                started_at: TimeMs(1_735_787_000_000),
                ends_at: TimeMs(1_735_790_600_000),
                notice_ends_at: Some(TimeMs(1_735_787_165_000)),
                preempted_at: Some(TimeMs(1_735_787_045_000)),
                emergency: false,
                notice_s: 120,
                ended_at: Some(TimeMs(1_735_787_165_000)),
                cost_micros: 0,
                nodes: vec![matching_engine::NodeGpus {
                    node: Name::from("rack1-n1"),
                    gpus: 8,
                }],
                access: matching_engine::Access {
                    endpoints: vec![matching_engine::Endpoint {
                        node: Some(Name::from("rack1-n1")),
                        host: Name::from("10.0.0.7"),
                        port: 22,
                        user: Name::from("ubuntu"),
                    }],
                    ..matching_engine::Access::ready_at(TimeMs(1_735_787_010_000))
                },
                ssh_public_keys: Some(vec!["ssh-ed25519 AAAA alice".to_owned()].into()),
            }),
        }
    }

    #[test]
    fn an_opening_carries_the_nodes_and_keys_and_a_ready_the_endpoints() {
        let opened = lease_event_fields(&record("opened"));
        assert_eq!(field(&opened, "supplier"), Some("dc1"));
        assert_eq!(
            field(&opened, "nodes"),
            Some(r#"[{"node":"rack1-n1","gpus":8}]"#)
        );
        assert_eq!(
            field(&opened, "ssh_public_keys"),
            Some(r#"["ssh-ed25519 AAAA alice"]"#)
        );
        let ready = lease_event_fields(&record("ready"));
        assert_eq!(field(&ready, "event"), Some("ready"));
        assert_eq!(field(&ready, "ready_at"), Some("2025-01-02T03:03:30.000Z"));
        assert_eq!(
            field(&ready, "endpoints"),
            Some(r#"[{"node":"rack1-n1","host":"10.0.0.7","port":22,"user":"ubuntu"}]"#)
        );
        let failed = lease_event_fields(&record("failed"));
        assert_eq!(field(&failed, "event"), Some("failed"));
        assert!(field(&failed, "endpoints").is_none() && field(&failed, "nodes").is_none());
    }

    fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_notice_carries_when_it_ends_and_an_end_its_reason_and_cost() {
        let notice = lease_event_fields(&record("notice"));
        assert_eq!(field(&notice, "event"), Some("notice"));
        assert_eq!(
            field(&notice, "notice_ends_at"),
            Some("2025-01-02T03:06:05.000Z")
        );
        assert_eq!(field(&notice, "price"), Some("1.50"));
        let ended = lease_event_fields(&record("preempted"));
        assert_eq!(field(&ended, "event"), Some("ended"));
        assert_eq!(field(&ended, "reason"), Some("preempted"));
        assert_eq!(field(&ended, "cost"), Some("0.00"));
        let warning = lease_event_fields(&record("forecast"));
        assert_eq!(field(&warning, "event"), Some("reclaim_warning"));
        assert!(field(&warning, "reclaim_at").is_some());
        let opened = lease_event_fields(&record("opened"));
        assert_eq!(field(&opened, "ends_at"), Some("2025-01-02T04:03:20.000Z"));
    }

    #[test]
    fn capacity_hash_fields_are_strings_with_empty_prices_when_absent() {
        let fields = capacity_hash_fields(
            &CapacityFigures {
                pool: Name::from("p.x"),
                idle_gpus: 8,
                leased_gpus: 4,
                reclaiming_gpus: 0,
                best_bid: None,
                best_ask: Some(PriceMicros(1_250_000)),
                last_price: None,
            },
            "2030-01-01T00:00:00.000Z",
        );
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).unwrap().1.as_str();
        assert_eq!(get("idle_gpus"), "8");
        assert_eq!(get("best_ask"), "1.25");
        assert_eq!(get("best_bid"), "");
    }
}
