//! `happyx-load`: the soak and chaos harness of HappyX.
//!
//! `happyx-load soak [--url URL | --spawn] --duration D [--kill-every D] --report DIR` drives a
//! mixed workload (agents, operators, devices, terminals and their observers, viewers) against a
//! host, keeps a ledger of every acknowledged write, samples the host's resources, optionally
//! kills and restarts a spawned host, and at the end checks the ledger against the host and
//! writes `DIR/summary.json`, `DIR/samples.json` and one picture per series. The summary goes to
//! stdout, progress to stderr; the exit status is 0 only when the verdict is `pass`.
//! `docs/soak.md` describes the workload, the series and the verdict.
//!
//! `happyx-load datadir --data-dir DIR` writes a large data dir for the `audit verify` and
//! `prune` figures (`docs/storage.md`).
//!
//! `happyx-load bench --spawn` measures a host over real HTTP against baselines of the same run
//! (authenticated reads vs `/healthz`, single envelopes vs the in-process ingest path), the two
//! sides alternating round by round; figures and ratios go to stdout (`docs/soak.md`, "bench").

mod bench;
mod bench_cluster;
mod bench_envelopes;
mod bench_http;
mod cli;
mod datadir;
mod host;
mod ledger;
mod plot;
mod sampler;
mod soak;
mod stats;
mod verdict;
mod verify;
mod workload;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("happyx-load: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match args.command {
        cli::Command::Soak(soak_args) => match runtime.block_on(soak::run(soak_args)) {
            Ok(true) => std::process::ExitCode::SUCCESS,
            Ok(false) => std::process::ExitCode::from(1),
            Err(e) => {
                eprintln!("happyx-load: {e:#}");
                std::process::ExitCode::from(2)
            }
        },
        cli::Command::Bench(args) => match runtime.block_on(bench::run(args)) {
            Ok(true) => std::process::ExitCode::SUCCESS,
            Ok(false) => std::process::ExitCode::from(1),
            Err(e) => {
                eprintln!("happyx-load: {e:#}");
                std::process::ExitCode::from(2)
            }
        },
        cli::Command::Datadir(args) => match runtime.block_on(datadir::run(args)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("happyx-load: {e:#}");
                std::process::ExitCode::from(2)
            }
        },
    }
}
