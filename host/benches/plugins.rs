//! Plugin runtime benchmarks: WASM redactor vs the same rules compiled
//! natively, cached load, fresh instantiation, a warm small call, and a cold
//! compile.

// A bench that cannot set up its data has nothing to measure: it stops at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
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

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let host = PluginHost::load(&PluginsConfig::default(), None).expect("load builtins");
    let chunk = sample_chunk();
    let native = rules::Rules::new(&rules::Settings::default()).expect("rules");
    assert_eq!(
        native.scan(&chunk).len(),
        rt.block_on(host.redact("stdout", &chunk))
            .expect("redact")
            .findings
            .len()
    );

    let mut g = c.benchmark_group("redact_64k");
    g.throughput(criterion::Throughput::Bytes(chunk.len() as u64));
    g.bench_function("wasm", |b| {
        b.iter(|| {
            rt.block_on(host.redact("stdout", black_box(&chunk)))
                .expect("redact")
        })
    });
    g.bench_function("native", |b| b.iter(|| native.scan(black_box(&chunk))));
    g.finish();

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
