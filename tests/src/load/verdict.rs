//! The verdict's pure parts: least-squares slopes (plain, and pooled within the host's
//! lifetimes so restarts do not read as shrinkage or growth), the growth bound, and the rule
//! that combines the checks. Nothing here does I/O, so every rule is unit-tested.

use serde::Serialize;

/// Least-squares slope of `y` over `x`; `None` with fewer than 3 points or no spread in `x`.
#[cfg(test)]
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    pooled_slope(&[points.to_vec()])
}

/// The common slope of several groups, each with its own intercept (the within-group
/// estimator): used for host series, where each host lifetime starts afresh.
pub fn pooled_slope(groups: &[Vec<(f64, f64)>]) -> Option<f64> {
    let (mut sxy, mut sxx, mut n) = (0.0, 0.0, 0usize);
    for g in groups {
        if g.len() < 2 {
            continue;
        }
        let k = g.len() as f64;
        let mx = g.iter().map(|p| p.0).sum::<f64>() / k;
        let my = g.iter().map(|p| p.1).sum::<f64>() / k;
        for (x, y) in g {
            sxy += (x - mx) * (y - my);
            sxx += (x - mx) * (x - mx);
        }
        n += g.len();
    }
    (n >= 3 && sxx > 0.0).then(|| sxy / sxx)
}

/// One series checked for growth.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Growth {
    pub series: String,
    /// Units per hour.
    pub slope_per_hour: Option<f64>,
    /// Hours of post-warm-up samples of the longest group (host lifetime) fitted.
    pub span_hours: f64,
    pub mean: f64,
    /// `slope × span`: what the series grew by in its longest lifetime, as fitted.
    pub fitted_growth: f64,
    /// `slope × 7 h`: the same rate over the plan's gate.
    pub growth_over_7h: f64,
    pub bound: f64,
    pub pass: bool,
}

/// Checks `groups` (time in seconds, value) for growth: the fitted growth over the longest
/// group's span may not exceed `max(rel × mean, floor)`. Shrinking and flat series pass; a series with
/// too few points passes with no slope (and says so).
pub fn growth(series: &str, groups: &[Vec<(f64, f64)>], rel: f64, floor: f64) -> Growth {
    let slope_s = pooled_slope(groups);
    // The longest lifetime measured: what one host process accumulates at this rate.
    let span_s: f64 = groups
        .iter()
        .filter(|g| g.len() >= 2)
        .map(|g| g[g.len() - 1].0 - g[0].0)
        .fold(0.0, f64::max);
    let (sum, n) = groups
        .iter()
        .flatten()
        .fold((0.0, 0usize), |(s, n), p| (s + p.1, n + 1));
    let mean = if n > 0 { sum / n as f64 } else { 0.0 };
    let bound = (rel * mean.abs()).max(floor);
    let fitted = slope_s.map(|s| s * span_s).unwrap_or(0.0);
    Growth {
        series: series.to_string(),
        slope_per_hour: slope_s.map(|s| s * 3600.0),
        span_hours: span_s / 3600.0,
        mean,
        fitted_growth: fitted,
        growth_over_7h: slope_s.map(|s| s * 7.0 * 3600.0).unwrap_or(0.0),
        bound,
        pass: fitted <= bound,
    }
}

/// Splits samples `(t, epoch, value)` into per-epoch groups, dropping the first `warmup_s` of
/// each epoch (an epoch is one host lifetime; `epoch_start` gives its start time).
pub fn after_warmup(
    samples: &[(f64, u64, f64)],
    epoch_start: impl Fn(u64) -> f64,
    warmup_s: f64,
) -> Vec<Vec<(f64, f64)>> {
    let mut groups: Vec<(u64, Vec<(f64, f64)>)> = Vec::new();
    for &(t, epoch, v) in samples {
        if t < epoch_start(epoch) + warmup_s {
            continue;
        }
        match groups.last_mut() {
            Some((e, g)) if *e == epoch => g.push((t, v)),
            _ => groups.push((epoch, vec![(t, v)])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// Every reason the run fails; empty means pass.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub server_errors: u64,
    pub lost: u64,
    pub refused_present: u64,
    pub unexpected_extra: u64,
    pub audit_ok: Option<bool>,
    pub terminal_survived: Option<bool>,
    pub growth: Vec<Growth>,
    pub acknowledged: u64,
    pub setup_failed: Option<String>,
}

pub fn failures(i: &Inputs) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(why) = &i.setup_failed {
        out.push(format!("the workload could not run: {why}"));
    }
    if i.acknowledged == 0 {
        out.push("no write was acknowledged".into());
    }
    if i.server_errors > 0 {
        out.push(format!("{} answers were 5xx", i.server_errors));
    }
    if i.lost > 0 {
        out.push(format!("{} acknowledged writes are missing", i.lost));
    }
    if i.refused_present > 0 {
        out.push(format!("{} refused writes are present", i.refused_present));
    }
    if i.unexpected_extra > 0 {
        out.push(format!(
            "{} rows exist that no acknowledged or unanswered write explains",
            i.unexpected_extra
        ));
    }
    if i.audit_ok == Some(false) {
        out.push("the audit chain does not verify".into());
    }
    if i.terminal_survived == Some(false) {
        out.push("the sentinel terminal did not survive".into());
    }
    for g in i.growth.iter().filter(|g| !g.pass) {
        out.push(format!(
            "{} grew by {:.1} (fitted) over {:.2} h, bound {:.1}",
            g.series, g.fitted_growth, g.span_hours, g.bound
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random sequence in [-1, 1) (xorshift), for noise.
    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2000) as f64 / 1000.0 - 1.0
            })
            .collect()
    }

    const MIB: f64 = 1024.0 * 1024.0;

    #[test]
    fn slope_of_a_line_is_exact() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 7.0)).collect();
        assert!((slope(&pts).unwrap_or(0.0) - 3.0).abs() < 1e-9);
        assert_eq!(slope(&pts[..2]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]), None);
    }

    #[test]
    fn a_leaking_series_fails() {
        // 80 MiB steady, +40 MiB per hour, sampled every 5 s for 30 minutes, ±4 MiB noise.
        let n = 360;
        let pts: Vec<(f64, f64)> = noise(n, 7)
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let t = i as f64 * 5.0;
                (t, 80.0 * MIB + 40.0 * MIB * t / 3600.0 + 4.0 * MIB * e)
            })
            .collect();
        let g = growth("host_rss", &[pts], 0.10, 16.0 * MIB);
        assert!(!g.pass, "{g:?}");
        let per_hour = g.slope_per_hour.unwrap_or(0.0) / MIB;
        assert!((per_hour - 40.0).abs() < 5.0, "{per_hour}");
    }

    #[test]
    fn a_flat_noisy_series_passes() {
        let n = 360;
        let pts: Vec<(f64, f64)> = noise(n, 11)
            .into_iter()
            .enumerate()
            .map(|(i, e)| (i as f64 * 5.0, 80.0 * MIB + 10.0 * MIB * e))
            .collect();
        let g = growth("host_rss", &[pts], 0.10, 16.0 * MIB);
        assert!(g.pass, "{g:?}");
    }

    #[test]
    fn restarts_do_not_read_as_growth_or_hide_a_leak() {
        // Each lifetime starts at 50 MiB and stays flat; the level differs between lifetimes.
        let flat: Vec<Vec<(f64, f64)>> = (0..5)
            .map(|e| {
                (0..12)
                    .map(|i| {
                        let t = e as f64 * 60.0 + i as f64 * 5.0;
                        (t, (50.0 + 20.0 * e as f64) * MIB)
                    })
                    .collect()
            })
            .collect();
        // One plain fit over the sawtooth-free staircase would see +20 MiB/min.
        let all: Vec<(f64, f64)> = flat.iter().flatten().copied().collect();
        assert!(slope(&all).unwrap_or(0.0) > 0.0);
        let g = growth("host_rss", &flat, 0.10, 16.0 * MIB);
        assert!(g.pass, "{g:?}");
        assert!(g.slope_per_hour.unwrap_or(1.0).abs() < 1e-6);
        // A leak of 1 MiB/s inside every lifetime is found although each restart resets it.
        let leaky: Vec<Vec<(f64, f64)>> = (0..5)
            .map(|e| {
                (0..12)
                    .map(|i| {
                        let t = e as f64 * 60.0 + i as f64 * 5.0;
                        (t, 50.0 * MIB + MIB * i as f64 * 5.0)
                    })
                    .collect()
            })
            .collect();
        assert!(!growth("host_rss", &leaky, 0.10, 16.0 * MIB).pass);
    }

    #[test]
    fn warmup_is_dropped_per_epoch() {
        let samples = vec![
            (0.0, 1, 1.0),
            (10.0, 1, 2.0),
            (20.0, 1, 3.0),
            (30.0, 2, 9.0),
            (45.0, 2, 9.0),
            (50.0, 2, 9.0),
        ];
        let starts = |e: u64| if e == 1 { 0.0 } else { 30.0 };
        let g = after_warmup(&samples, starts, 10.0);
        assert_eq!(
            g,
            vec![
                vec![(10.0, 2.0), (20.0, 3.0)],
                vec![(45.0, 9.0), (50.0, 9.0)]
            ]
        );
    }

    #[test]
    fn any_server_error_or_loss_fails() {
        let ok = Inputs {
            acknowledged: 10,
            audit_ok: Some(true),
            terminal_survived: Some(true),
            ..Inputs::default()
        };
        assert!(failures(&ok).is_empty());
        for bad in [
            Inputs {
                server_errors: 1,
                ..ok.clone()
            },
            Inputs {
                lost: 1,
                ..ok.clone()
            },
            Inputs {
                refused_present: 1,
                ..ok.clone()
            },
            Inputs {
                audit_ok: Some(false),
                ..ok.clone()
            },
            Inputs {
                acknowledged: 0,
                ..ok.clone()
            },
        ] {
            assert_eq!(failures(&bad).len(), 1, "{bad:?}");
        }
    }
}
