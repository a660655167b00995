//! Deterministic shapes over simulated time: the internal load's forecastable cycle and the
//! startups' arrival rate, both in the pool's local time, plus the random draws they use.
//!
//! Simulated time is engine time (milliseconds since the epoch); the scenario's
//! `start_at_ms` is taken to be Monday 00:00 UTC, so hours since it give the weekday.

use super::scenario::{InternalLoad, StartupDemand};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::f64::consts::TAU;

/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;

/// Where in the week a moment falls, in a pool's local time.
#[derive(Clone, Copy, Debug)]
pub struct LocalTime {
    /// Hour of the day, 0 to 24.
    pub hour: f64,
    /// Whether it is Saturday or Sunday.
    pub weekend: bool,
}

impl LocalTime {
    /// The local time `at_ms` milliseconds after the scenario's start (Monday 00:00 UTC).
    pub fn of(since_start_ms: i64, utc_offset_h: f64) -> LocalTime {
        let hours = since_start_ms as f64 / HOUR_MS as f64 + utc_offset_h;
        let day = hours.div_euclid(24.0) as i64;
        LocalTime {
            hour: hours.rem_euclid(24.0),
            weekend: day.rem_euclid(7) >= 5,
        }
    }
}

/// A raised cosine peaking at `peak_hour`: 1 at the peak, 0 twelve hours away.
fn daily_shape(hour: f64, peak_hour: f64, sharpness: f64) -> f64 {
    let phase = (hour - peak_hour) / 24.0 * TAU;
    ((1.0 + phase.cos()) / 2.0).powf(sharpness)
}

/// The forecastable share of nodes busy with internal work: the daily and weekly cycle,
/// without noise or bursts. This is what a scheduler's forecast knows.
pub fn forecast_load_share(load: &InternalLoad, local: LocalTime) -> f64 {
    let swing = (load.peak_share - load.trough_share)
        * if local.weekend {
            load.weekend_swing_factor
        } else {
            1.0
        };
    load.trough_share + swing * daily_shape(local.hour, load.peak_hour, load.sharpness)
}

/// Startup jobs arriving per hour at a moment, for a pool whose weekday peak rate is
/// `peak_per_hour`.
pub fn arrival_rate_per_hour(demand: &StartupDemand, peak_per_hour: f64, local: LocalTime) -> f64 {
    let shape = daily_shape(local.hour, demand.arrival_peak_hour, 1.0);
    let day = demand.arrival_trough_share + (1.0 - demand.arrival_trough_share) * shape;
    let week = if local.weekend {
        demand.arrival_weekend_share
    } else {
        1.0
    };
    peak_per_hour * day * week
}

/// A standard normal draw (Box-Muller).
pub fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

/// A lognormal draw with the given median and sigma of its logarithm.
pub fn lognormal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * standard_normal(rng)).exp()
}

/// An exponential draw with the given mean.
pub fn exponential(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    -mean * u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_time_counts_weekdays_from_monday_utc() {
        let saturday_noon = (5 * 24 + 12) * HOUR_MS;
        let t = LocalTime::of(saturday_noon, 0.0);
        assert!(t.weekend);
        assert!((t.hour - 12.0).abs() < 1e-9);
        // Sunday 23:00 in New York is Monday 04:00 UTC.
        let t = LocalTime::of(7 * 24 * HOUR_MS + 4 * HOUR_MS, -5.0);
        assert!(t.weekend && (t.hour - 23.0).abs() < 1e-9);
    }

    #[test]
    fn forecast_load_runs_from_trough_to_peak() {
        let load = super::super::scenario::Scenario::default_week().internal_load;
        let at = |hour| {
            forecast_load_share(
                &load,
                LocalTime {
                    hour,
                    weekend: false,
                },
            )
        };
        assert!((at(load.peak_hour) - load.peak_share).abs() < 1e-9);
        assert!((at((load.peak_hour + 12.0) % 24.0) - load.trough_share).abs() < 1e-9);
    }
}
