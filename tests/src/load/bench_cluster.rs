//! The cluster pair of `happyx-load bench` (`--part cluster`): single-envelope ingest over HTTP
//! into one PostgreSQL database served by `--hosts` hosts, against the same database served by
//! one of them.
//!
//! The bench makes a fresh database on the `--postgres` cluster (dropped at the end), spawns
//! the hosts on it (each with its own data dir, so its own host id), enrolls `--clients`
//! devices through the first host, and alternates the sides round by round as every pair does:
//!
//! - A, several hosts: sender `i` posts to host `i mod N`;
//! - B, one host: every sender posts to the first host, while the others stay up and idle.
//!
//! Both sides write into the same database and the same event chain, so the only difference is
//! how many host processes share the work. Each side reports, besides the rate and latencies,
//! the CPU time per envelope of the hosts (summed), of the PostgreSQL server's processes and of
//! this tool, and how busy the machine's cores were: the figures that say what limits the rate
//! (every accepted envelope is one write transaction under the database-wide write lock, and on
//! a small machine the hosts, the server and the clients share the same cores).
//!
//! At the end every envelope a host acknowledged is counted in the database: a lost
//! acknowledged write fails the bench.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use sqlx::Connection as _;

use crate::bench::{
    BenchArgs, FIRST_GUESS_PER_S, Probe, Side, SideAcc, SideFigures, config_text, next_best, ratio,
    round_ratios, spans, supply_per_sender, timed,
};
use crate::bench_envelopes::{HttpSender, enroll_http, http_worker, seal_supplies};
use crate::bench_http::{Conn, Target};
use crate::host::{Spawned, create_token};
use crate::workload::Ctx;

/// The cluster pair.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub hosts: usize,
    pub clients: usize,
    pub payload_bytes: usize,
    /// The machine's cores (hosts, PostgreSQL and this tool share them).
    pub cores: usize,
    /// Side A: the senders spread over every host.
    pub several_hosts: SideFigures,
    /// Side B: every sender on the first host.
    pub one_host: SideFigures,
    /// `several_hosts.per_s ÷ one_host.per_s`.
    pub ratio: Option<f64>,
    pub ratio_rounds: Vec<Option<f64>>,
    /// Envelopes the hosts acknowledged over the whole bench (warm-ups included), and the
    /// envelopes the database holds at the end: equal, or the bench fails.
    pub acknowledged: u64,
    pub stored: u64,
}

/// The hosts' configuration: the bench's, on the database `url`.
fn cluster_config(args: &BenchArgs, url: &str) -> String {
    let url = serde_json::to_string(url).unwrap_or_default();
    format!("{}\n[storage]\nurl = {url}\n", config_text(args))
}

/// Runs the cluster pair on a fresh database of the `--postgres` cluster.
pub async fn measure(args: &BenchArgs, bin: &Path, scratch: &Path) -> Result<ClusterReport> {
    let admin = args
        .postgres
        .as_ref()
        .context("the cluster pair needs --postgres URL (a role that may create databases)")?;
    let url = happyx_store::test_support::create_database(admin.expose(), "happyx_bench")
        .await
        .map_err(|e| anyhow::anyhow!("on the --postgres cluster: {e}"))?;
    let result = on_database(args, bin, scratch, &url).await;
    if let Err(e) = happyx_store::test_support::drop_database(admin.expose(), &url).await {
        eprintln!("happyx-load bench: the bench database was left in place: {e}");
    }
    result
}

async fn on_database(
    args: &BenchArgs,
    bin: &Path,
    scratch: &Path,
    url: &str,
) -> Result<ClusterReport> {
    let config = cluster_config(args, url);
    let mut hosts = Vec::with_capacity(usize::from(args.hosts));
    for i in 0..args.hosts {
        let s = Spawned::prepare_with(
            bin.to_path_buf(),
            &scratch.join(format!("host-{i}")),
            &config,
        )?;
        hosts.push(s);
    }
    // One at a time: the first migrates the database, the others find it current.
    for (i, s) in hosts.iter_mut().enumerate() {
        eprintln!("happyx-load bench: starting host {i} on {}", s.url);
        if let Err(e) = s.start().await {
            stop_all(&mut hosts).await;
            return Err(e);
        }
    }
    let result = pair(args, &hosts, scratch, url).await;
    stop_all(&mut hosts).await;
    result
}

async fn stop_all(hosts: &mut [Spawned]) {
    for s in hosts {
        s.stop(Duration::from_secs(10)).await;
    }
}

async fn pair(
    args: &BenchArgs,
    hosts: &[Spawned],
    scratch: &Path,
    url: &str,
) -> Result<ClusterReport> {
    let first = &hosts[0];
    let operator = create_token(
        first.bin(),
        &first.data_dir,
        Some(first.config_path()),
        "operator",
        "bench-operator",
    )
    .await?;
    let ctx = Ctx::new(
        first.url.clone(),
        format!("bench-{:x}", happyx::util::now_ms()),
    )?;
    let targets = hosts
        .iter()
        .map(|s| Target::parse(&s.url))
        .collect::<Result<Vec<_>>>()?;
    let pids: Vec<u32> = hosts
        .iter()
        .map(|s| s.pid.load(std::sync::atomic::Ordering::SeqCst))
        .filter(|p| *p != 0)
        .collect();
    let probe = Probe {
        hosts: pids,
        postgres: true,
    };
    eprintln!(
        "happyx-load bench: enrolling {} devices through host 0",
        args.clients
    );
    let mut sealers = enroll_http(&ctx, &operator, scratch, args.clients).await?;
    let plaintext = Arc::new(vec![0x5a_u8; args.payload]);
    let mut best = [FIRST_GUESS_PER_S; 2];
    let mut a = SideAcc::new(
        &format!("one envelope per request over {} hosts", hosts.len()),
        true,
    );
    let mut b = SideAcc::new("one envelope per request over one host", true);
    let mut acknowledged = 0u64;
    for (round, side, d) in spans(args) {
        let several = side == Side::A;
        let i = usize::from(!several);
        let per_sender = supply_per_sender(best[i], d, args.clients, args.payload);
        let supplies =
            tokio::task::block_in_place(|| seal_supplies(&mut sealers, per_sender, &plaintext))?;
        let mut conns = Vec::with_capacity(args.clients);
        for n in 0..args.clients {
            let host = if several { n % targets.len() } else { 0 };
            conns.push(Conn::open(&targets[host]).await?);
        }
        let states = HttpSender::zip(std::mem::take(&mut sealers), supplies, conns, &plaintext);
        let (back, span) = timed(states, d, &probe, http_worker).await?;
        sealers = back.into_iter().map(|s| s.sealer).collect();
        let done = span.accepted();
        acknowledged += done;
        let per_s = done as f64 / span.seconds().max(1e-9);
        best[i] = next_best(round, best[i], per_s);
        let name = if several {
            format!("{} hosts", hosts.len())
        } else {
            "one host".to_string()
        };
        if round == 0 {
            eprintln!("happyx-load bench: cluster warm-up {name}: {per_s:.0}/s");
            continue;
        }
        let acc = if several { &mut a } else { &mut b };
        let f = acc.add(round, span);
        eprintln!(
            "happyx-load bench: cluster round {round} {name}: {:.0}/s, p99 {} ms",
            f.per_s, f.p99_ms
        );
    }
    let stored = stored_envelopes(url).await?;
    if stored != acknowledged {
        bail!("the database holds {stored} envelopes, the hosts acknowledged {acknowledged}");
    }
    let (a, b) = (a.finish(true), b.finish(true));
    let r = ratio(a.per_s, b.per_s);
    Ok(ClusterReport {
        hosts: hosts.len(),
        clients: args.clients,
        payload_bytes: args.payload,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ratio_rounds: round_ratios(&a, &b),
        several_hosts: a,
        one_host: b,
        ratio: r,
        acknowledged,
        stored,
    })
}

/// Envelopes in the bench database, read directly (not through a host).
async fn stored_envelopes(url: &str) -> Result<u64> {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the bench database: {e}"))?;
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM envelopes")
        .fetch_one(&mut conn)
        .await
        .context("count the stored envelopes")?;
    let _ = conn.close().await;
    Ok(u64::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_share_the_benchs_settings_and_the_database() {
        use clap::Parser;
        let args = crate::cli::Cli::try_parse_from([
            "happyx-load",
            "bench",
            "--spawn",
            "--part",
            "cluster",
            "--postgres",
            "postgres://u:pw@127.0.0.1:5432/postgres",
        ])
        .expect("args");
        let crate::cli::Command::Bench(args) = args.command else {
            panic!("not bench");
        };
        let url = "postgres://u:p%22w@127.0.0.1:5432/happyx_bench_00";
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("happyx.toml");
        std::fs::write(&file, cluster_config(&args, url)).expect("write");
        // The file the hosts get is one `happyx serve` accepts, on that database.
        let cfg = happyx::config::Config::load(Some(&file), &Default::default()).expect("valid");
        assert_eq!(cfg.storage.url.as_ref().map(|u| u.expose()), Some(url));
        assert!(cfg.devices.enroll_burst >= 20);
        // The admin URL's password is never shown.
        assert!(!format!("{args:?}").contains("pw@"), "{args:?}");
    }
}
