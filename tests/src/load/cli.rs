//! Command-line interface of `happyx-load`: the `soak`, `datadir` and `bench` subcommands,
//! the soak's rates and bounds, and the duration syntax (`300ms`, `90s`, `5m`, `7h`, or combinations
//! such as `1h30m`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "happyx-load",
    version,
    about = "Soak and chaos harness for a HappyX host"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at startup; boxing the soak's arguments buys nothing"
)]
pub enum Command {
    /// Drive a mixed workload for a while, then check every acknowledged write and the
    /// resource series; exits non-zero unless the verdict is `pass`.
    Soak(SoakArgs),
    /// Write a large data dir through the store API (a million events, transcript chunks,
    /// envelopes) and a `prune.toml` beside it, for the `audit verify` and `prune` figures.
    Datadir(crate::datadir::DataDirArgs),
    /// Measure a host over real HTTP against same-run baselines: authenticated reads vs
    /// `/healthz`, and single envelopes vs the in-process ingest path; prints the figures and
    /// their ratios on stdout (JSON, or `--format table`).
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// A running host to drive (needs `--data-dir` of that host to mint tokens).
    #[arg(long, conflicts_with = "spawn", required_unless_present = "spawn")]
    pub url: Option<String>,
    /// Start (and with `--kill-every`, kill and restart) a host on a temporary data dir.
    #[arg(long)]
    pub spawn: bool,
    /// Data dir of the host given with `--url` (tokens are created with `happyx token create`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// How long the workload runs.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Duration,
    /// SIGKILL the spawned host at this interval and restart it on the same data dir.
    #[arg(long, value_parser = parse_duration, requires = "spawn")]
    pub kill_every: Option<Duration>,
    /// Where summary.json, samples.json and the pictures go (created).
    #[arg(long)]
    pub report: PathBuf,
    /// The `happyx` binary (default: beside this one, then `happyx` on PATH).
    #[arg(long)]
    pub happyx: Option<PathBuf>,
    /// Agents: each creates tasks, sessions, runs and terminals.
    #[arg(long, default_value_t = 20)]
    pub agents: usize,
    /// Operators: each approves what agents request and observes terminals.
    #[arg(long, default_value_t = 3)]
    pub operators: usize,
    /// Enrolled devices exchanging envelopes.
    #[arg(long, default_value_t = 4)]
    pub devices: usize,
    /// Viewers reading the public views and lists.
    #[arg(long, default_value_t = 2)]
    pub viewers: usize,
    /// Pause of each agent between two actions (lower = higher rate).
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub agent_think: Duration,
    /// Pause of each device between two sends.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub device_think: Duration,
    /// Pause of each viewer between two reads.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub viewer_think: Duration,
    /// Terminals open at once (besides the sentinel that lives for the whole run).
    #[arg(long, default_value_t = 3)]
    pub terminals: usize,
    /// How long an agent's terminal lives before the agent kills it.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub terminal_life: Duration,
    /// Sampling interval.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub sample_every: Duration,
    /// Samples this long after the start and after each (re)start of the host are excluded
    /// from the fitted slopes.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub warmup: Duration,
    /// With `--spawn`: how often the host runs the retention pass.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub retention_interval: Duration,
    /// With `--spawn`: age past which run output and transcript chunks are pruned.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub retention_window: Duration,
    /// With `--spawn`: events kept at most (the oldest are pruned).
    #[arg(long, default_value_t = 50_000)]
    pub retention_events: u64,
    /// RSS growth bound: the fitted growth over the measured span may not exceed the larger of
    /// this many MiB and `--growth-rel` of the series' mean.
    #[arg(long, default_value_t = 16.0)]
    pub rss_bound_mib: f64,
    /// Open-descriptor growth bound (descriptors), with the same rule.
    #[arg(long, default_value_t = 8.0)]
    pub fd_bound: f64,
    /// Retained-content growth bound (MiB) for the kinds the retention pass governs.
    #[arg(long, default_value_t = 4.0)]
    pub retained_bound_mib: f64,
    /// Relative part of the growth bounds (fraction of the mean).
    #[arg(long, default_value_t = 0.10)]
    pub growth_rel: f64,
    /// Keep the spawned host's temporary data dir (its path is printed).
    #[arg(long)]
    pub keep_data: bool,
}

/// Parses `300ms`, `90s`, `5m`, `7h`, `1h30m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("`{text}`: expected a number before `{rest}`"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "" => return Err(format!("`{text}`: a unit (ms, s, m, h) must follow {n}")),
            other => return Err(format!("`{text}`: unknown unit `{other}` (ms, s, m, h)")),
        };
        total += part;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("7h"), Ok(Duration::from_secs(7 * 3600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
    }
}
