//! Plugin runtime benchmarks: WASM redactor vs the same rules compiled
//! natively (on a 64 KiB chunk with secrets and on one without, the common
//! case; the WASM redactor goes through its prefilter, `wasm_whole` bypasses
//! it), cached load, fresh instantiation, a warm small call, and a cold
//! compile. The WASM/native ratios are printed from medians measured in the
//! same run, WASM and native calls taken in turn (`redact_64k ratio ...`
//! lines): through the prefilter with and without secrets, and the secret-dense
//! chunk given whole, which is what a redactor without trigger groups (0.3.0)
//! costs on it: its windows cover the chunk.

// A bench that cannot set up its data has nothing to measure: it stops at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use happyx::plugins::{Kind, PluginHost, PluginsConfig, bench_compile, builtin_components};

#[path = "../../plugins/redactor/src/rules.rs"]
#[allow(dead_code)]
mod rules;

/// 64 KiB of log-like text with a few secrets in it.
fn sample_chunk() -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut i = 0u32;
    while out.len() < 64 * 1024 {
        let line = match i % 50 {
            7 => "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n".to_string(),
            23 => "pushing with ghp_0123456789abcdefghijklmnopqrstuvwxyzAB\n".to_string(),
            41 => "curl -H 'Authorization: Bearer abcdefghijklmnop0123456789'\n".to_string(),
            _ => format!("[{i:06}] compiling crate_{i} v0.{i}.0 (/src/crate_{i}) in 0.{i}s ok\n"),
        };
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    out.truncate(64 * 1024);
    out
}

/// 64 KiB of build and service output with no secret (and no trigger) in it.
fn clean_chunk() -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut i = 0u32;
    while out.len() < 64 * 1024 {
        let line = match i % 8 {
            0 => format!(
                "   Compiling crate_{i} v0.{}.{} (/src/crates/crate_{i})\n",
                i % 13,
                i % 7
            ),
            1 => format!("test module_{}::case_{i} ... ok\n", i % 31),
            2 => format!(
                "2026-12-02T08:{:02}:{:02}.{:03}Z INFO worker{}: request done method=GET path=/v1/items/{i} status=200 took={}ms\n",
                i % 60,
                (i * 7) % 60,
                i % 1000,
                i % 4,
                i % 97
            ),
            3 => format!(
                "warning: unused variable `x{i}` at src/lib.rs:{}:{}\n",
                i % 900,
                i % 80
            ),
            4 => format!(
                "[{i:06}] fetched {} objects, {} KiB, 12.{}% done\n",
                i * 3,
                i % 512,
                i % 10
            ),
            5 => "    Finished `release` profile [optimized] target(s) in 41.07s\n".to_string(),
            6 => format!(
                "drwxr-xr-x  2 build build 4096 Dec  2 08:{:02} dist_{i}\n",
                i % 60
            ),
            _ => format!(
                "{i:>8} | {:<24} | {:>6} | passed\n",
                format!("suite_{}", i % 17),
                i % 1000
            ),
        };
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    out.truncate(64 * 1024);
    out
}

/// How a bench calls the redactor: through its prefilter, or on the whole chunk.
#[derive(Clone, Copy)]
enum Path {
    Prefiltered,
    Whole,
}

/// One redaction of `data`, as the server makes it.
async fn redact(host: &PluginHost, data: &[u8], path: Path) {
    let r = match path {
        Path::Prefiltered => host.redact("stdout", black_box(data)).await,
        Path::Whole => host.redact_whole("stdout", black_box(data)).await,
    };
    black_box(r.expect("redact"));
}

/// Runs `f` in a task on one of `rt`'s workers, where the server's redactions run (a guest
/// call there goes through `block_in_place`, which costs a worker hand-off that a call from
/// `block_on` on the bench's own thread would not pay), and returns its result.
fn on_worker<R: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl Future<Output = R> + Send + 'static,
) -> R {
    rt.block_on(rt.spawn(f)).expect("bench task")
}

/// Medians of `n` timings of a redaction of `data` and of `native`, taken in turn (wasm,
/// native, wasm, native, …) by one task on a runtime worker, so that both see the same
/// machine: on a shared machine, two medians taken one after the other can differ by half
/// for reasons neither has.
fn paired_medians(
    rt: &tokio::runtime::Runtime,
    n: usize,
    host: &PluginHost,
    data: &Arc<Vec<u8>>,
    path: Path,
    native: &Arc<rules::Rules>,
) -> (Duration, Duration) {
    let (host, data, native) = (host.clone(), data.clone(), native.clone());
    on_worker(rt, async move {
        let (mut sa, mut sb) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let t = Instant::now();
            redact(&host, &data, path).await;
            sa.push(t.elapsed());
            let t = Instant::now();
            black_box(native.scan(black_box(&data)));
            sb.push(t.elapsed());
        }
        sa.sort();
        sb.sort();
        (sa[n / 2], sb[n / 2])
    })
}

fn benches(c: &mut Criterion) {
    // Two workers, as the server has on this machine kind.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let host = PluginHost::load(&PluginsConfig::default(), None).expect("load builtins");
    let chunk = Arc::new(sample_chunk());
    let clean = Arc::new(clean_chunk());
    let native = Arc::new(rules::Rules::new(&rules::Settings::default()).expect("rules"));
    assert!(host.redactor_has_prefilter());
    for data in [&chunk, &clean] {
        let wasm = rt.block_on(host.redact("stdout", data)).expect("redact");
        let whole = rt
            .block_on(host.redact_whole("stdout", data))
            .expect("redact");
        assert_eq!(native.scan(data).len(), wasm.findings.len());
        assert_eq!(wasm.findings, whole.findings);
    }
    assert!(native.scan(&clean).is_empty());

    let mut g = c.benchmark_group("redact_64k");
    g.throughput(criterion::Throughput::Bytes(chunk.len() as u64));
    for (name, data, path) in [
        ("wasm", &chunk, Path::Prefiltered),
        ("wasm_whole", &chunk, Path::Whole),
        ("wasm_clean", &clean, Path::Prefiltered),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (host, data) = (host.clone(), data.clone());
                on_worker(&rt, async move {
                    let t = Instant::now();
                    for _ in 0..iters {
                        redact(&host, &data, path).await;
                    }
                    t.elapsed()
                })
            })
        });
    }
    g.bench_function("native", |b| b.iter(|| native.scan(black_box(&chunk))));
    g.bench_function("native_clean", |b| {
        b.iter(|| native.scan(black_box(&clean)))
    });
    g.finish();
    // The ratios, from medians of this run, the two sides taken in turn: through the
    // prefilter, and the secret-dense chunk given whole.
    for (name, data, path) in [
        ("with secrets", &chunk, Path::Prefiltered),
        ("no secret", &clean, Path::Prefiltered),
        ("with secrets, whole chunk", &chunk, Path::Whole),
    ] {
        let (wasm, nat) = paired_medians(&rt, 2001, &host, data, path, &native);
        println!(
            "redact_64k ratio ({name}): wasm {wasm:?} / native {nat:?} = {:.2}",
            wasm.as_secs_f64() / nat.as_secs_f64()
        );
    }

    c.bench_function("warm_small_call", |b| {
        b.iter(|| rt.block_on(host.redact("text", black_box(b"hello world, nothing to see"))))
    });

    c.bench_function("fresh_instantiate", |b| {
        b.iter(|| host.bench_instantiate(Kind::Redactor).expect("instantiate"))
    });
    // p99 of instantiation, measured directly.
    let mut samples: Vec<Duration> = (0..2000)
        .map(|_| {
            let t = Instant::now();
            host.bench_instantiate(Kind::Redactor).expect("instantiate");
            t.elapsed()
        })
        .collect();
    samples.sort();
    println!(
        "fresh_instantiate redactor: p50 {:?} p99 {:?}",
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100]
    );

    let redactor = builtin_components()[0].1;
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || {
        cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority())
            .expect("open cache dir")
    };
    bench_compile(redactor, Some(open())).expect("fill cache");
    c.bench_function("cached_load_redactor", |b| {
        b.iter(|| bench_compile(redactor, Some(open())).expect("cached load"))
    });

    let mut g = c.benchmark_group("cold");
    g.sample_size(10);
    g.bench_function("compile_redactor", |b| {
        b.iter(|| bench_compile(redactor, None).expect("compile"))
    });
    g.finish();
}

criterion_group!(plugin_benches, benches);
criterion_main!(plugin_benches);
