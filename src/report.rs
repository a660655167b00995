//! The owner's report (DESIGN section 13): per pool and time bucket, what idle capacity was
//! offered, how much of it was leased, and what it earned.
//!
//! Pure: it takes the usage minutes the engine integrated (`pool_usage`) and the leases that
//! ran in the window (`leases`), and computes. Revenue is spread over time exactly: a lease
//! billed from `since` has earned `c(t) = cost(price, gpus, whole seconds since..t)` by `t`,
//! capped at its final cost once it has ended, so its share of a bucket is `c(end of bucket) -
//! c(start of bucket)` and the shares of all buckets add up to its `cost_micros` (or, running,
//! to what it has accrued now). A lease whose final cost is 0 (never ready, or preempted in its
//! free first hour) earns nothing in any bucket.

use crate::journal::UsageDelta;
use crate::money::Usd;
use crate::timestamp::Rfc3339Time;
use matching_engine::{cost_micros, LeaseStatus, LeaseView, Name, TimeMs};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// What one report covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportWindow {
    /// Start (inclusive), on a bucket boundary.
    pub from: TimeMs,
    /// End (exclusive), on a bucket boundary.
    pub to: TimeMs,
    /// Bucket length in milliseconds (a whole number of minutes).
    pub bucket_ms: i64,
    /// Running leases have accrued up to here.
    pub now: TimeMs,
}

impl ReportWindow {
    /// `[from, to)` widened to whole buckets.
    pub fn aligned(from: TimeMs, to: TimeMs, bucket_ms: i64, now: TimeMs) -> ReportWindow {
        let down = |t: i64| t - t.rem_euclid(bucket_ms);
        let up = |t: i64| {
            let d = down(t);
            if d == t {
                t
            } else {
                d.saturating_add(bucket_ms)
            }
        };
        ReportWindow {
            from: TimeMs(down(from.0)),
            to: TimeMs(up(to.0)),
            bucket_ms,
            now,
        }
    }

    fn buckets(&self) -> usize {
        ((self.to.0 - self.from.0) / self.bucket_ms).max(0) as usize
    }

    fn bucket_of(&self, at: TimeMs) -> Option<usize> {
        (at >= self.from && at < self.to).then(|| ((at.0 - self.from.0) / self.bucket_ms) as usize)
    }
}

/// The raw sums of one bucket (or of a total).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sums {
    offered_gpu_ms: u128,
    leased_gpu_ms: u128,
    revenue_micros: u128,
    /// GPU-milliseconds billed, and billed GPU-ms times price (for the average price).
    billed_gpu_ms: u128,
    billed_value: u128,
    preemptions: u64,
    emergencies: u64,
}

impl Sums {
    fn add(&mut self, other: &Sums) {
        self.offered_gpu_ms += other.offered_gpu_ms;
        self.leased_gpu_ms += other.leased_gpu_ms;
        self.revenue_micros += other.revenue_micros;
        self.billed_gpu_ms += other.billed_gpu_ms;
        self.billed_value += other.billed_value;
        self.preemptions += other.preemptions;
        self.emergencies += other.emergencies;
    }
}

/// The figures of a bucket, a pool or the whole fleet, as the API shows them.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Figures {
    /// Unsold plus sold GPU-hours in open windows.
    pub offered_gpu_hours: f64,
    /// GPU-hours in running leases.
    pub leased_gpu_hours: f64,
    /// Leased / offered (absent when nothing was offered).
    pub utilisation: Option<f64>,
    /// Money earned, accrued per second (running leases up to now).
    pub revenue: Usd,
    /// Revenue per offered GPU-hour (absent when nothing was offered).
    pub revenue_per_offered_gpu_hour: Option<Usd>,
    /// Billed-GPU-hour-weighted price (absent when nothing was billed).
    pub average_price: Option<Usd>,
    /// Leases given preemption notice.
    pub preemptions: u64,
    /// Of those, notices shorter than promised (emergency reclaims).
    pub emergency_reclaims: u64,
    /// Notices at least as long as promised, in percent of preemptions (absent without any).
    pub notices_honoured_pct: Option<f64>,
}

impl From<&Sums> for Figures {
    fn from(s: &Sums) -> Figures {
        let hours = |gpu_ms: u128| (gpu_ms as f64 / 3_600_000.0 * 1000.0).round() / 1000.0;
        let micros = |v: u128| Usd(v.min(u64::MAX as u128) as u64);
        Figures {
            offered_gpu_hours: hours(s.offered_gpu_ms),
            leased_gpu_hours: hours(s.leased_gpu_ms),
            utilisation: (s.offered_gpu_ms > 0)
                .then(|| s.leased_gpu_ms as f64 / s.offered_gpu_ms as f64),
            revenue: micros(s.revenue_micros),
            revenue_per_offered_gpu_hour: (s.offered_gpu_ms > 0)
                .then(|| micros(s.revenue_micros * 3_600_000 / s.offered_gpu_ms)),
            average_price: (s.billed_gpu_ms > 0).then(|| micros(s.billed_value / s.billed_gpu_ms)),
            preemptions: s.preemptions,
            emergency_reclaims: s.emergencies,
            notices_honoured_pct: (s.preemptions > 0)
                .then(|| 100.0 * (s.preemptions - s.emergencies) as f64 / s.preemptions as f64),
        }
    }
}

/// One bucket of one pool.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Bucket {
    /// Its first instant.
    pub start: Rfc3339Time,
    /// Its figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// One pool's buckets and total.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct PoolReport {
    /// The pool.
    pub pool: String,
    /// Every bucket of the window, oldest first.
    pub buckets: Vec<Bucket>,
    /// The pool over the whole window.
    pub total: Figures,
}

/// `GET /v1/admin/report`.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Report {
    /// Window start (on a bucket boundary).
    pub from: Rfc3339Time,
    /// Window end (exclusive).
    pub to: Rfc3339Time,
    /// Bucket length, e.g. `1h`.
    pub bucket: String,
    /// Per pool, by id.
    pub pools: Vec<PoolReport>,
    /// The whole fleet over the window.
    pub total: Figures,
}

/// What a lease has earned by `t` (see the module documentation).
fn earned_by(lease: &LeaseView, since: TimeMs, end: TimeMs, t: TimeMs) -> u128 {
    if t <= since {
        return 0;
    }
    if t >= end && lease.status.is_ended() {
        return u128::from(lease.cost_micros);
    }
    let seconds = ((t.min(end).0 - since.0).max(0) / 1000) as u64;
    let accrued = u128::from(cost_micros(lease.price, lease.gpus, seconds));
    if lease.status.is_ended() {
        accrued.min(u128::from(lease.cost_micros))
    } else {
        accrued
    }
}

/// Builds the report: `pools` lists the pools to show (each gets a row, even if idle).
pub fn build(
    window: &ReportWindow,
    bucket_label: &str,
    pools: &[Name],
    usage: &[UsageDelta],
    leases: &[LeaseView],
) -> Report {
    let buckets = window.buckets();
    let mut sums: BTreeMap<Name, Vec<Sums>> = pools
        .iter()
        .map(|p| (p.clone(), vec![Sums::default(); buckets]))
        .collect();
    for minute in usage {
        if let (Some(rows), Some(b)) = (sums.get_mut(&minute.pool), window.bucket_of(minute.minute))
        {
            rows[b].offered_gpu_ms += u128::from(minute.offered_gpu_ms);
            rows[b].leased_gpu_ms += u128::from(minute.leased_gpu_ms);
        }
    }
    for lease in leases {
        let Some(rows) = sums.get_mut(&lease.pool) else {
            continue;
        };
        if lease.status == LeaseStatus::Preempted || lease.preempted_at.is_some() {
            if let Some(b) = lease.preempted_at.and_then(|at| window.bucket_of(at)) {
                rows[b].preemptions += 1;
                rows[b].emergencies += u64::from(lease.emergency);
            }
        }
        let free = lease.status.is_ended() && lease.cost_micros == 0;
        let Some(since) = lease.access.ready_at.or(
            // Leases from before the handoff were billed from their start.
            (lease.access.status == matching_engine::AccessStatus::Ready)
                .then_some(lease.started_at),
        ) else {
            continue;
        };
        if free {
            continue;
        }
        let end = lease
            .ended_at
            .unwrap_or(window.now)
            .min(window.now.max(since));
        for (b, row) in rows.iter_mut().enumerate() {
            let start = TimeMs(window.from.0 + b as i64 * window.bucket_ms);
            let stop = TimeMs(start.0 + window.bucket_ms);
            if stop <= since || start >= end {
                continue;
            }
            let earned = earned_by(lease, since, end, stop) - earned_by(lease, since, end, start);
            let billed_ms = (stop.min(end).0 - start.max(since).0).max(0) as u128;
            row.revenue_micros += earned;
            row.billed_gpu_ms += billed_ms * u128::from(lease.gpus);
            row.billed_value += billed_ms * u128::from(lease.gpus) * u128::from(lease.price.0);
        }
    }
    let mut fleet = Sums::default();
    let pools = sums
        .into_iter()
        .map(|(pool, rows)| {
            let mut total = Sums::default();
            for row in &rows {
                total.add(row);
            }
            fleet.add(&total);
            PoolReport {
                pool: pool.to_string(),
                buckets: rows
                    .iter()
                    .enumerate()
                    .map(|(b, row)| Bucket {
                        start: Rfc3339Time(TimeMs(window.from.0 + b as i64 * window.bucket_ms)),
                        figures: Figures::from(row),
                    })
                    .collect(),
                total: Figures::from(&total),
            }
        })
        .collect();
    Report {
        from: Rfc3339Time(window.from),
        to: Rfc3339Time(window.to),
        bucket: bucket_label.to_owned(),
        pools,
        total: Figures::from(&fleet),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use matching_engine::{Access, LeaseId, OrderId, PriceMicros};

    const HOUR: i64 = 3_600_000;
    const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % HOUR;

    fn lease(id: u64, ready: i64, ended: Option<(i64, u64)>, status: LeaseStatus) -> LeaseView {
        LeaseView {
            id: LeaseId(id),
            order_id: OrderId(id),
            buyer: "acme".into(),
            supplier: "dc1".into(),
            pool: "p.x".into(),
            block_id: "b".into(),
            gpus: 4,
            price: PriceMicros(2_000_000),
            status,
            started_at: TimeMs(ready - 60_000),
            ends_at: TimeMs(T0 + 10 * HOUR),
            notice_ends_at: None,
            preempted_at: None,
            emergency: false,
            notice_s: 120,
            ended_at: ended.map(|(at, _)| TimeMs(at)),
            cost_micros: ended.map_or(0, |(_, cost)| cost),
            nodes: vec![],
            access: Access::ready_at(TimeMs(ready)),
            ssh_public_keys: None,
        }
    }

    #[test]
    fn revenue_spreads_over_buckets_and_adds_up_to_the_leases_costs() {
        // Ready at 00:30, released at 02:15 (1 h 45 min at $2 x 4 GPUs = $14.00); another
        // running since 01:00 and accrued to 03:00 ($16.00).
        let ended_cost = cost_micros(PriceMicros(2_000_000), 4, 105 * 60);
        let leases = [
            lease(
                1,
                T0 + HOUR / 2,
                Some((T0 + 2 * HOUR + HOUR / 4, ended_cost)),
                LeaseStatus::Released,
            ),
            lease(2, T0 + HOUR, None, LeaseStatus::Active),
        ];
        let window = ReportWindow::aligned(
            TimeMs(T0),
            TimeMs(T0 + 4 * HOUR),
            HOUR,
            TimeMs(T0 + 3 * HOUR),
        );
        let usage = [UsageDelta {
            pool: "p.x".into(),
            minute: TimeMs(T0 + 60_000),
            offered_gpu_ms: 8 * HOUR as u64,
            leased_gpu_ms: 4 * HOUR as u64,
        }];
        let report = build(&window, "1h", &["p.x".into()], &usage, &leases);
        let pool = &report.pools[0];
        let revenue: Vec<String> = pool
            .buckets
            .iter()
            .map(|b| b.figures.revenue.to_string())
            .collect();
        assert_eq!(revenue, ["4.00", "16.00", "10.00", "0.00"]);
        assert_eq!(pool.total.revenue, Usd(ended_cost + 16_000_000));
        assert_eq!(report.total.revenue, pool.total.revenue);
        assert_eq!(pool.buckets[0].figures.offered_gpu_hours, 8.0);
        assert_eq!(pool.buckets[0].figures.utilisation, Some(0.5));
        assert_eq!(pool.total.average_price, Some(Usd(2_000_000)));
    }

    #[test]
    fn a_free_or_never_ready_lease_earns_nothing_and_preemptions_are_counted() {
        let mut free = lease(1, T0, Some((T0 + HOUR / 2, 0)), LeaseStatus::Preempted);
        free.preempted_at = Some(TimeMs(T0 + HOUR / 4));
        let mut hurried = lease(
            2,
            T0,
            Some((T0 + 2 * HOUR, 16_000_000)),
            LeaseStatus::Preempted,
        );
        hurried.preempted_at = Some(TimeMs(T0 + 2 * HOUR - 1000));
        hurried.emergency = true;
        let mut failed = lease(3, T0, Some((T0 + HOUR, 0)), LeaseStatus::Failed);
        failed.access = Access::provisioning();
        let window = ReportWindow::aligned(
            TimeMs(T0),
            TimeMs(T0 + 3 * HOUR),
            HOUR,
            TimeMs(T0 + 3 * HOUR),
        );
        let report = build(
            &window,
            "1h",
            &["p.x".into()],
            &[],
            &[free, hurried, failed],
        );
        let total = &report.pools[0].total;
        assert_eq!(total.revenue, Usd(16_000_000));
        assert_eq!(total.preemptions, 2);
        assert_eq!(total.emergency_reclaims, 1);
        assert_eq!(total.notices_honoured_pct, Some(50.0));
        assert_eq!(total.utilisation, None, "nothing offered");
    }
}
