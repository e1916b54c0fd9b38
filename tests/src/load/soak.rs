//! `happyx-load soak`: sets the run up (host, tokens, devices, the sentinel terminal), starts
//! the actors, samples every interval, kills and restarts a spawned host on schedule, then
//! stops, verifies the ledger, fits the growth of each series and writes the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::cli::SoakArgs;
use crate::host::{SpawnConfig, Spawned, create_token, locate_binary};
use crate::plot::{Chart, Line, draw};
use crate::sampler::{self, Sample};
use crate::verdict::{self, Growth};
use crate::verify::{self, Verification};
use crate::workload::{self, Ctx, Device, Rates};

const MIB: f64 = 1024.0 * 1024.0;

/// What the sampler reads.
struct Probe {
    host_pid: Arc<AtomicU32>,
    epoch: Arc<AtomicU64>,
    bin: PathBuf,
    db: Option<PathBuf>,
    sentinel_holder: Arc<AtomicU32>,
}

/// Survival checks of the sentinel terminal after each restart.
#[derive(Debug, Default, Clone, Serialize)]
struct SentinelReport {
    id: Option<String>,
    checks: u64,
    survived: u64,
    failures: Vec<String>,
    final_state: Option<String>,
    final_output_bytes: Option<u64>,
}

/// Runs the soak; `Ok(true)` when the verdict is `pass`.
pub async fn run(args: SoakArgs) -> Result<bool> {
    std::fs::create_dir_all(&args.report)
        .with_context(|| format!("create {}", args.report.display()))?;
    let bin = locate_binary(args.happyx.as_deref());
    let tag = format!("{:x}", happyx::util::now_ms());
    // Temporary files: the spawned host's data dir, device keystores, the export.
    let scratch = tempfile::Builder::new().prefix("happyx-load-").tempdir()?;
    let scratch_path = scratch.path().to_path_buf();
    let mut spawned = if args.spawn {
        let cfg = SpawnConfig {
            retention_interval: args.retention_interval,
            retention_window: args.retention_window,
            retention_events: args.retention_events,
        };
        let mut s = Spawned::prepare(bin.clone(), &scratch_path.join("host"), &cfg)?;
        eprintln!("happyx-load: starting {} on {}", bin.display(), s.url);
        s.start().await?;
        Some(s)
    } else {
        None
    };
    let (url, data_dir) = match (&spawned, &args.url) {
        (Some(s), _) => (s.url.clone(), s.data_dir.clone()),
        (None, Some(u)) => {
            let d = args
                .data_dir
                .clone()
                .context("--url needs --data-dir of that host, to create tokens")?;
            (u.trim_end_matches('/').to_string(), d)
        }
        (None, None) => bail!("give --url URL or --spawn"),
    };
    let ctx = Arc::new(Ctx::new(url.clone(), tag.clone())?);

    eprintln!("happyx-load: creating tokens");
    let mint = |role: &'static str, name: String| {
        let bin = bin.clone();
        let data_dir = data_dir.clone();
        async move { create_token(&bin, &data_dir, None, role, &name).await }
    };
    let mut operators = Vec::new();
    for i in 0..args.operators.max(1) {
        operators.push(mint("operator", format!("soak-operator-{i}")).await?);
    }
    let mut agents = Vec::new();
    for i in 0..args.agents {
        agents.push(mint("agent", format!("soak-agent-{i}")).await?);
    }
    let mut viewers = Vec::new();
    for i in 0..args.viewers {
        viewers.push(mint("viewer", format!("soak-viewer-{i}")).await?);
    }
    let sentinel_agent = mint("agent", "soak-sentinel".into()).await?;

    let started = Instant::now();
    ctx.set_deadline(started + args.duration);
    let rates = Rates {
        agent_think: args.agent_think,
        device_think: args.device_think,
        viewer_think: args.viewer_think,
        terminals: args.terminals,
        terminal_life: args.terminal_life,
    };
    let mut actors = tokio::task::JoinSet::new();
    for (i, t) in operators.iter().enumerate() {
        actors.spawn(workload::operator(ctx.clone(), i, t.clone()));
    }

    // The sentinel terminal lives for the whole run; it must survive every restart.
    let sentinel_holder = Arc::new(AtomicU32::new(0));
    let sentinel = workload::open_terminal(&ctx, &sentinel_agent, 0).await;
    let mut sentinel_report = SentinelReport {
        id: sentinel.clone(),
        ..SentinelReport::default()
    };
    if let Some(id) = &sentinel {
        *ctx.sentinel.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
        if let Some(a) = ctx
            .call(
                "pty.get",
                Method::GET,
                &format!("/v1/pty/{id}"),
                Some(&operators[0]),
                None,
                None,
            )
            .await
            && let Some(child) = a.body["pid"].as_u64()
            && let Some(holder) = sampler::parent_pid(child as u32)
        {
            sentinel_holder.store(holder, Ordering::SeqCst);
        }
    } else {
        sentinel_report
            .failures
            .push("the sentinel terminal could not be opened".into());
    }

    eprintln!("happyx-load: enrolling {} devices", args.devices);
    let mut devices: Vec<Device> = Vec::new();
    for i in 0..args.devices {
        let dir = scratch_path.join(format!("device-{i}"));
        let dev = workload::enroll_device(&ctx, &operators[0], dir, format!("soak-device-{i}"))
            .await
            .with_context(|| format!("enroll device {i}"))?;
        devices.push(dev);
    }
    for (i, t) in agents.iter().enumerate() {
        actors.spawn(workload::agent(ctx.clone(), i, t.clone(), rates.clone()));
    }
    for (i, t) in viewers.iter().enumerate() {
        actors.spawn(workload::viewer(
            ctx.clone(),
            i,
            t.clone(),
            rates.viewer_think,
        ));
    }
    for (i, d) in devices.iter().enumerate() {
        actors.spawn(workload::device(
            ctx.clone(),
            i,
            d.clone(),
            rates.device_think,
        ));
    }
    eprintln!(
        "happyx-load: load running for {:?} ({} agents, {} operators, {} devices, {} viewers)",
        args.duration,
        agents.len(),
        operators.len(),
        devices.len(),
        viewers.len()
    );

    // Sampling.
    let probe = Arc::new(Probe {
        host_pid: spawned.as_ref().map(|s| s.pid.clone()).unwrap_or_default(),
        epoch: spawned
            .as_ref()
            .map(|s| s.epoch.clone())
            .unwrap_or_default(),
        bin: bin.clone(),
        db: spawned.as_ref().map(|s| s.data_dir.join("happyx.db")),
        sentinel_holder: sentinel_holder.clone(),
    });
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let epoch_starts: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(vec![0.0]));
    let sampler_task = {
        let (ctx, probe, samples) = (ctx.clone(), probe.clone(), samples.clone());
        let every = args.sample_every;
        let samples_path = args.report.join("samples.json");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            let mut n = 0u64;
            while ctx.running() {
                tick.tick().await;
                let s = take_sample(&ctx, &probe, started).await;
                n += 1;
                if n.is_multiple_of(12) {
                    eprintln!(
                        "happyx-load: t={:.0}s acked={} errors={} host_rss={:.1} MiB db={:.1} MiB",
                        s.t,
                        s.acknowledged,
                        s.errors_total,
                        s.host_rss.unwrap_or(0) as f64 / MIB,
                        s.db_bytes.unwrap_or(0) as f64 / MIB
                    );
                }
                let mut g = samples.lock().unwrap_or_else(|p| p.into_inner());
                g.push(s);
                // Keep the samples on disk as the run goes, for long runs.
                if n.is_multiple_of(12)
                    && let Ok(text) = serde_json::to_vec(&*g)
                {
                    let _ = std::fs::write(&samples_path, text);
                }
            }
        })
    };

    // Chaos.
    let mut restarts = 0u64;
    if let (Some(host), Some(every)) = (spawned.as_mut(), args.kill_every) {
        loop {
            let next = Instant::now() + every;
            if next >= ctx.deadline() {
                break;
            }
            tokio::time::sleep_until(next.into()).await;
            let before = sentinel_bytes(&ctx, &operators[0], sentinel.as_deref()).await;
            eprintln!("happyx-load: SIGKILL the host (restart {})", restarts + 1);
            host.kill9().await;
            let mut tries = 0;
            loop {
                match host.start().await {
                    Ok(()) => break,
                    Err(e) if tries < 3 => {
                        tries += 1;
                        eprintln!("happyx-load: restart failed ({e:#}); retrying");
                    }
                    Err(e) => return Err(e.context("the host does not restart")),
                }
            }
            restarts += 1;
            epoch_starts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(started.elapsed().as_secs_f64());
            if let (Some(id), Some(before)) = (sentinel.as_deref(), before) {
                sentinel_report.checks += 1;
                match sentinel_progress(&ctx, &operators[0], id, before).await {
                    Ok(()) => sentinel_report.survived += 1,
                    Err(why) => sentinel_report
                        .failures
                        .push(format!("after restart {restarts}: {why}")),
                }
            }
        }
    }
    tokio::time::sleep_until(ctx.deadline().into()).await;
    eprintln!("happyx-load: load stopped; waiting for in-flight actions");
    let drain = tokio::time::timeout(Duration::from_secs(240), async {
        while actors.join_next().await.is_some() {}
    })
    .await;
    if drain.is_err() {
        eprintln!("happyx-load: some actors did not finish in 240 s; aborting them");
        actors.abort_all();
    }
    let _ = sampler_task.await;
    let elapsed = started.elapsed().as_secs_f64();

    // The sentinel must still run at the end; then it is killed.
    if let Some(id) = sentinel.as_deref() {
        if let Some(a) = ctx
            .call(
                "pty.get",
                Method::GET,
                &format!("/v1/pty/{id}"),
                Some(&operators[0]),
                None,
                None,
            )
            .await
        {
            sentinel_report.final_state = a.body["state"].as_str().map(str::to_string);
            sentinel_report.final_output_bytes = a.body["output_bytes"].as_u64();
        }
        ctx.call(
            "pty.kill",
            Method::POST,
            &format!("/v1/pty/{id}/kill"),
            Some(&sentinel_agent),
            Some(&json!({})),
            None,
        )
        .await;
    }
    let final_sample = take_sample(&ctx, &probe, started).await;
    samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(final_sample);

    // Verification.
    let ledger = ctx.ledger.snapshot();
    eprintln!(
        "happyx-load: verifying {} acknowledged writes",
        ledger.acknowledged()
    );
    let verification: Result<Verification> = match spawned.as_mut() {
        Some(host) => {
            // Let the terminals the agents killed finish, then stop the host cleanly.
            tokio::time::sleep(Duration::from_secs(2)).await;
            host.stop(Duration::from_secs(30)).await;
            kill_stray_holders(host.bin());
            let out = scratch_path.join("export.json");
            verify::by_export(host.bin(), &host.data_dir, &out, &ledger).await
        }
        None => verify::by_api(&ctx, &operators[0], &devices, &ledger).await,
    };
    let (verification, setup_failed) = match verification {
        Ok(v) => (v, None),
        Err(e) => (
            Verification::default(),
            Some(format!("verification: {e:#}")),
        ),
    };

    // Verdict.
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let starts = epoch_starts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let growth = fit_growth(&samples, &starts, &args);
    let sentinel_ok = sentinel.as_ref().map(|_| {
        sentinel_report.failures.is_empty()
            && sentinel_report.final_state.as_deref() == Some("running")
    });
    let inputs = verdict::Inputs {
        server_errors: ctx.stats.server_errors(),
        lost: verification.lost_total(),
        refused_present: verification.refused_present,
        unexpected_extra: verification.unexpected_extra,
        audit_ok: verification.audit_ok,
        terminal_survived: sentinel_ok.or(Some(false)),
        growth: growth.iter().filter(|g| g.1).map(|g| g.0.clone()).collect(),
        acknowledged: ledger.acknowledged(),
        setup_failed,
    };
    let mut failures = verdict::failures(&inputs);
    let gaps = ctx.stream_gaps.load(Ordering::Relaxed);
    if gaps > 0 {
        failures.push(format!(
            "{gaps} terminal stream frames had an offset gap or overlap"
        ));
    }
    let pass = failures.is_empty();

    // Pictures.
    let pictures = draw_all(&args.report, &samples);
    let samples_path = args.report.join("samples.json");
    std::fs::write(&samples_path, serde_json::to_vec(&samples)?)?;

    let totals = ctx.stats.totals();
    let ops: BTreeMap<String, Value> = totals
        .iter()
        .map(|(op, f)| {
            (
                op.clone(),
                json!({
                    "count": f.count,
                    "per_s": f.count as f64 / elapsed.max(1e-9),
                    "p50_ms": f.p50_ms,
                    "p99_ms": f.p99_ms,
                    "max_ms": f.max_ms,
                }),
            )
        })
        .collect();
    let acked_by_kind: BTreeMap<&str, usize> = ledger
        .acked
        .iter()
        .map(|(k, v)| (k.name(), v.len()))
        .collect();
    let summary = json!({
        "verdict": if pass { "pass" } else { "fail" },
        "failures": failures,
        "acknowledged": ledger.acknowledged(),
        "lost": verification.lost_total(),
        "server_errors": ctx.stats.server_errors(),
        "restarts": restarts,
        "mode": if args.spawn { "spawn" } else { "url" },
        "duration_s": elapsed,
        "parameters": {
            "duration_s": args.duration.as_secs_f64(),
            "kill_every_s": args.kill_every.map(|d| d.as_secs_f64()),
            "agents": args.agents,
            "operators": operators.len(),
            "devices": args.devices,
            "viewers": args.viewers,
            "agent_think_ms": args.agent_think.as_millis() as u64,
            "device_think_ms": args.device_think.as_millis() as u64,
            "viewer_think_ms": args.viewer_think.as_millis() as u64,
            "terminals": args.terminals,
            "terminal_life_s": args.terminal_life.as_secs_f64(),
            "sample_every_s": args.sample_every.as_secs_f64(),
            "warmup_s": args.warmup.as_secs_f64(),
            "retention_interval_s": args.retention_interval.as_secs_f64(),
            "retention_window_s": args.retention_window.as_secs_f64(),
            "retention_events": args.retention_events,
            "rss_bound_mib": args.rss_bound_mib,
            "fd_bound": args.fd_bound,
            "retained_bound_mib": args.retained_bound_mib,
            "growth_rel": args.growth_rel,
        },
        "ledger": {
            "acknowledged_by_kind": acked_by_kind,
            "refused": ledger.refused.len(),
            "ambiguous": ledger.ambiguous.iter().map(|(k, v)| (k.name(), *v)).collect::<BTreeMap<_, _>>(),
            "envelopes_stored_on_retry": ledger.envelopes_stored_on_retry,
        },
        "verification": verification,
        "ops": ops,
        "errors": ctx.stats.errors(),
        "growth": growth.iter().map(|(g, gating)| {
            let mut v = serde_json::to_value(g).unwrap_or(Value::Null);
            v["gating"] = Value::from(*gating);
            v
        }).collect::<Vec<_>>(),
        "terminals": {
            "sentinel": sentinel_report,
            "observed_bytes": ctx.observed_bytes.load(Ordering::Relaxed),
            "stream_gaps": gaps,
        },
        "samples": samples_path,
        "pictures": pictures,
        "host_log": spawned.as_ref().map(|s| s.log_path().to_path_buf()),
    });
    std::fs::write(
        args.report.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if args.keep_data {
        let kept = scratch.keep();
        eprintln!("happyx-load: kept {}", kept.display());
    } else if let Some(s) = &spawned {
        // Keep the host's log beside the report; the scratch dir goes away.
        let _ = std::fs::copy(s.log_path(), args.report.join("serve.log"));
    }
    Ok(pass)
}

async fn take_sample(ctx: &Ctx, probe: &Probe, started: Instant) -> Sample {
    let pid = probe.host_pid.load(Ordering::SeqCst);
    let status = (pid != 0).then(|| sampler::proc_status(pid)).flatten();
    let holders = sampler::holder_pids(&probe.bin);
    let holders_rss = holders
        .iter()
        .filter_map(|p| sampler::proc_status(*p))
        .map(|s| s.rss)
        .sum();
    let sentinel = probe.sentinel_holder.load(Ordering::SeqCst);
    let (db_bytes, wal_bytes, retained) = match &probe.db {
        Some(db) => {
            let wal = PathBuf::from(format!("{}-wal", db.display()));
            (
                sampler::file_size(db),
                sampler::file_size(&wal),
                sampler::retained(db).await,
            )
        }
        None => (None, None, BTreeMap::new()),
    };
    Sample {
        t: started.elapsed().as_secs_f64(),
        epoch: probe.epoch.load(Ordering::SeqCst),
        host_up: status.is_some(),
        host_rss: status.map(|s| s.rss),
        host_fds: (pid != 0).then(|| sampler::open_fds(pid)).flatten(),
        host_threads: status.map(|s| s.threads),
        holders: holders.len() as u64,
        holders_rss,
        sentinel_holder_rss: (sentinel != 0)
            .then(|| sampler::proc_status(sentinel))
            .flatten()
            .map(|s| s.rss),
        db_bytes,
        wal_bytes,
        retained,
        ops: ctx.stats.take_window(),
        errors_total: ctx.stats.errors().values().sum(),
        acknowledged: ctx.ledger.snapshot().acknowledged(),
    }
}

async fn sentinel_bytes(ctx: &Ctx, token: &str, id: Option<&str>) -> Option<u64> {
    let id = id?;
    let a = ctx
        .call(
            "pty.get",
            Method::GET,
            &format!("/v1/pty/{id}"),
            Some(token),
            None,
            None,
        )
        .await?;
    a.body["output_bytes"].as_u64()
}

/// After a restart the sentinel must be adopted: `running`, with output beyond `before`.
async fn sentinel_progress(ctx: &Ctx, token: &str, id: &str, before: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(a) = ctx
            .call(
                "pty.get",
                Method::GET,
                &format!("/v1/pty/{id}"),
                Some(token),
                None,
                None,
            )
            .await
        {
            let state = a.body["state"].as_str().unwrap_or("?").to_string();
            let bytes = a.body["output_bytes"].as_u64().unwrap_or(0);
            if state == "running" && bytes > before {
                return Ok(());
            }
            if matches!(state.as_str(), "lost" | "exited" | "killed") {
                return Err(format!("state {state}"));
            }
            last = format!("state {state}, {bytes} bytes (before the kill: {before})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("no progress within 60 s: {last}"))
}

/// Holders of this binary left behind after the host stopped (terminals are killed through the
/// API first, so normally none): SIGKILL each by pid.
fn kill_stray_holders(bin: &Path) {
    std::thread::sleep(Duration::from_millis(500));
    for pid in sampler::holder_pids(bin) {
        eprintln!("happyx-load: killing leftover pty-holder {pid}");
        // SAFETY: kill(2) of a holder process of our own binary, by its pid.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// The growth checks; the bool says whether the check gates the verdict.
fn fit_growth(samples: &[Sample], starts: &[f64], args: &SoakArgs) -> Vec<(Growth, bool)> {
    let warm = args.warmup.as_secs_f64();
    let start_of = |e: u64| -> f64 {
        let i = e.saturating_sub(1) as usize;
        starts.get(i).copied().unwrap_or(0.0)
    };
    let per_epoch = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<Vec<(f64, f64)>> {
        let pts: Vec<(f64, u64, f64)> = samples
            .iter()
            .filter_map(|s| f(s).map(|v| (s.t, s.epoch, v)))
            .collect();
        verdict::after_warmup(&pts, start_of, warm)
    };
    // Series that outlive host restarts are fitted as one group after the first warm-up.
    let whole_from = |from: f64, f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<Vec<(f64, f64)>> {
        vec![
            samples
                .iter()
                .filter(|s| s.t >= from)
                .filter_map(|s| f(s).map(|v| (s.t, v)))
                .collect(),
        ]
    };
    let whole = |f: &dyn Fn(&Sample) -> Option<f64>| whole_from(warm, f);
    // Retained content can only level off once the oldest items pass the retention window and
    // a pass has run: its fit starts after the window plus two intervals.
    let retained_from =
        warm.max(args.retention_window.as_secs_f64() + 2.0 * args.retention_interval.as_secs_f64());
    let rel = args.growth_rel;
    let retained = |s: &Sample, kinds: &[&str]| -> Option<f64> {
        if s.retained.is_empty() {
            return None;
        }
        Some(
            kinds
                .iter()
                .map(|k| s.retained.get(*k).copied().unwrap_or(0) as f64)
                .sum(),
        )
    };
    vec![
        (
            verdict::growth(
                "host_rss_bytes",
                &per_epoch(&|s| s.host_rss.map(|v| v as f64)),
                rel,
                args.rss_bound_mib * MIB,
            ),
            true,
        ),
        (
            verdict::growth(
                "host_fds",
                &per_epoch(&|s| s.host_fds.map(|v| v as f64)),
                rel,
                args.fd_bound,
            ),
            true,
        ),
        (
            verdict::growth(
                "host_threads",
                &per_epoch(&|s| s.host_threads.map(|v| v as f64)),
                rel,
                args.fd_bound,
            ),
            false,
        ),
        (
            verdict::growth(
                "sentinel_holder_rss_bytes",
                &whole(&|s| s.sentinel_holder_rss.map(|v| v as f64)),
                rel,
                args.rss_bound_mib * MIB / 4.0,
            ),
            true,
        ),
        (
            verdict::growth(
                "retained_pruned_kinds_bytes",
                &whole_from(retained_from, &|s| {
                    retained(s, &["run-output", "transcript-chunk", "event"])
                }),
                rel,
                args.retained_bound_mib * MIB,
            ),
            true,
        ),
        (
            verdict::growth(
                "retained_envelope_bytes",
                &whole_from(retained_from, &|s| retained(s, &["envelope"])),
                rel,
                args.retained_bound_mib * MIB,
            ),
            false,
        ),
        (
            verdict::growth(
                "db_and_wal_bytes",
                &whole(&|s| s.db_bytes.map(|d| (d + s.wal_bytes.unwrap_or(0)) as f64)),
                rel,
                args.retained_bound_mib * MIB,
            ),
            false,
        ),
    ]
}

/// One chart per series; returns the paths written.
fn draw_all(dir: &Path, samples: &[Sample]) -> Vec<PathBuf> {
    let mins = |s: &Sample| s.t / 60.0;
    let series = |name: &str, unit: &str, f: &dyn Fn(&Sample) -> Option<f64>| Chart {
        name: name.to_string(),
        unit: unit.to_string(),
        lines: vec![Line {
            name: name.to_string(),
            points: samples
                .iter()
                .filter_map(|s| f(s).map(|v| (mins(s), v)))
                .collect(),
        }],
    };
    let mut charts = vec![
        series("host_rss", "MiB", &|s| s.host_rss.map(|v| v as f64 / MIB)),
        series("host_fds", "open descriptors", &|s| {
            s.host_fds.map(|v| v as f64)
        }),
        series("host_threads", "threads", &|s| {
            s.host_threads.map(|v| v as f64)
        }),
        series("holders", "pty-holder processes", &|s| {
            Some(s.holders as f64)
        }),
        series("holders_rss", "MiB, all holders", &|s| {
            Some(s.holders_rss as f64 / MIB)
        }),
        series("sentinel_holder_rss", "MiB", &|s| {
            s.sentinel_holder_rss.map(|v| v as f64 / MIB)
        }),
        series("db_size", "MiB", &|s| s.db_bytes.map(|v| v as f64 / MIB)),
        series("wal_size", "MiB", &|s| s.wal_bytes.map(|v| v as f64 / MIB)),
        series("errors_total", "errors (cumulative)", &|s| {
            Some(s.errors_total as f64)
        }),
        series(
            "acknowledged_total",
            "acknowledged writes (cumulative)",
            &|s| Some(s.acknowledged as f64),
        ),
    ];
    for kind in ["run-output", "transcript-chunk", "envelope", "event"] {
        charts.push(series(
            &format!("retained_{}", kind.replace('-', "_")),
            "MiB",
            &|s| s.retained.get(kind).map(|v| *v as f64 / MIB),
        ));
    }
    // Throughput and latency per operation.
    let mut ops: Vec<String> = samples.iter().flat_map(|s| s.ops.keys().cloned()).collect();
    ops.sort();
    ops.dedup();
    let mut prev_t = 0.0;
    let mut rate_points: Vec<(f64, f64)> = Vec::new();
    for s in samples {
        let dt = (s.t - prev_t).max(1e-3);
        prev_t = s.t;
        let n: u64 = s.ops.values().map(|f| f.count).sum();
        rate_points.push((mins(s), n as f64 / dt));
    }
    charts.push(Chart {
        name: "ops_per_s".into(),
        unit: "operations per second, all kinds".into(),
        lines: vec![Line {
            name: "ops/s".into(),
            points: rate_points,
        }],
    });
    for op in ops {
        let pick = |q: fn(&crate::stats::OpFigures) -> f64| -> Vec<(f64, f64)> {
            samples
                .iter()
                .filter_map(|s| s.ops.get(&op).map(|f| (mins(s), q(f))))
                .collect()
        };
        charts.push(Chart {
            name: format!("latency_{}", op.replace('.', "_")),
            unit: "ms".into(),
            lines: vec![
                Line {
                    name: "p50".into(),
                    points: pick(|f| f.p50_ms),
                },
                Line {
                    name: "p99".into(),
                    points: pick(|f| f.p99_ms),
                },
            ],
        });
    }
    let mut out = Vec::new();
    for c in &charts {
        match draw(dir, c) {
            Ok(p) => out.push(p),
            Err(e) => eprintln!("happyx-load: {e:#}"),
        }
    }
    out
}
