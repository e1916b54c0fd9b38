//! What isolating children costs a run's start: spawn to first byte of output, for
//!
//! - `plain`: the program started as the host would without isolation (the host's uid, its
//!   cwd, piped stdout) — the baseline;
//! - `per_identity`: the real path of a run on a root host — the identity's uid looked up in
//!   the store, its workspace checked, the scrubbed environment, uid/gid switch, its own
//!   process group, every descriptor above 2 closed (needs root; skipped otherwise);
//! - `landlock`: the real path on a host that is not root — its own workspace and the
//!   Landlock ruleset built and entered before exec (skipped without Landlock).
//!
//! All measured in the same run, one after the other, so the differences are comparable on a
//! noisy machine. Criterion reports the means; each sample's latency is also kept, and p50/p99 per
//! variant (and their difference from `plain`) are printed to stderr at the end.
//!
//! Run: `cargo bench -p happyx --bench isolation`.

// A bench that cannot set up its data has nothing to measure: it stops at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use happyx::children::{ChildContext, Children};
use happyx::config::{RunsConfig, StorageConfig};
use happyx::sandbox::{self, Confinement};
use happyx::store::Store;
use tokio::io::AsyncReadExt;
use tokio::runtime::Runtime;

/// The child: prints one byte at once (what a run's first output costs to reach the host).
const PROGRAM: &str = "/bin/echo";

/// Every sample's latency, by variant.
static SAMPLES: Mutex<BTreeMap<&'static str, Vec<Duration>>> = Mutex::new(BTreeMap::new());

/// Spawns `cmd` and waits for the first byte of its stdout; returns the time taken.
async fn first_byte(mut cmd: tokio::process::Command) -> Duration {
    let start = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut byte = [0u8; 1];
    let n = out.read(&mut byte).await.expect("read");
    let took = start.elapsed();
    assert_eq!(n, 1, "the child printed nothing");
    let _ = child.wait().await;
    took
}

fn record(variant: &'static str, took: Duration) {
    if let Ok(mut s) = SAMPLES.lock() {
        s.entry(variant).or_default().push(took);
    }
}

fn plain(workspace: &std::path::Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(PROGRAM);
    cmd.arg("x").current_dir(workspace);
    cmd
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let store = rt
        .block_on(Store::open(&data, &StorageConfig::default()))
        .expect("store");
    let root_ws = tmp.path().join("ws");
    let is_root = nix::unistd::geteuid().is_root();
    let cfg = RunsConfig {
        workspaces: vec![root_ws.clone()],
        ..RunsConfig::default()
    };
    let children = {
        let _guard = rt.enter();
        Children::prepare(&cfg, store.clone()).expect("children")
    };
    // The confined context a host that is not root gives an identity.
    let confined_ws = tmp.path().join("confined");
    std::fs::create_dir_all(Confinement::tmp_dir(&confined_ws)).expect("workspace");
    let confined = ChildContext {
        ids: None,
        workspace: confined_ws.clone(),
        home: children.root().join(".home"),
        confinement: Some(Confinement {
            workspace: confined_ws.clone(),
            home: children.root().join(".home"),
        }),
    };
    let landlock = sandbox::abi() > 0;
    if !is_root {
        eprintln!("isolation bench: not root, per_identity skipped");
    }
    if !landlock {
        eprintln!("isolation bench: no Landlock, landlock skipped");
    }

    let mut group = c.benchmark_group("spawn_to_first_byte");
    group.sample_size(60);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("plain", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let workspace = confined_ws.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let took = first_byte(plain(&workspace)).await;
                    record("plain", took);
                    total += took;
                }
                total
            }
        })
    });
    if is_root {
        let children = children.clone();
        group.bench_function("per_identity", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let children = children.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let ctx = children.for_actor("token:bench").await.expect("placed");
                        let cmd = ctx.command(PROGRAM, &["x".into()]).expect("command");
                        let took = start.elapsed() + first_byte(cmd).await;
                        record("per_identity", took);
                        total += took;
                    }
                    total
                }
            })
        });
    }
    if landlock {
        group.bench_function("landlock", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let confined = confined.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let cmd = confined.command(PROGRAM, &["x".into()]).expect("command");
                        let took = start.elapsed() + first_byte(cmd).await;
                        record("landlock", took);
                        total += took;
                    }
                    total
                }
            })
        });
    }
    group.finish();
    report();
}

/// p50/p99 per variant and their difference from `plain`, on stderr.
fn report() {
    let Ok(mut samples) = SAMPLES.lock() else {
        return;
    };
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).copied().unwrap_or_default()
    };
    let base = samples
        .get_mut("plain")
        .map(|v| (pct(v, 0.5), pct(v, 0.99)));
    for (variant, v) in samples.iter_mut() {
        let (p50, p99) = (pct(v, 0.5), pct(v, 0.99));
        let added = base.map_or_else(String::new, |(b50, b99)| {
            format!(
                "  added p50 {:+.3} ms, p99 {:+.3} ms",
                (p50.as_secs_f64() - b50.as_secs_f64()) * 1e3,
                (p99.as_secs_f64() - b99.as_secs_f64()) * 1e3
            )
        });
        eprintln!(
            "spawn_to_first_byte/{variant}: {} samples, p50 {:.3} ms, p99 {:.3} ms{added}",
            v.len(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
