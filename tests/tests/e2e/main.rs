//! The end-to-end suites, linked into one test binary (one link of the host and
//! its dependencies instead of one per suite). Each module drives the real
//! `happyx` binary over real HTTP on its own temporary data dir, so tests run in
//! parallel safely. Run one suite with `cargo test -p happyx-tests --test e2e pty::`.

mod approvals;
mod audit;
mod canaries;
mod checkpoints;
mod console;
mod envelopes;
mod first_hour;
mod foundation;
mod hardening;
mod ops;
mod plugins;
mod pty;
mod retention;
mod rotation;
mod scaleout;
mod transfer;
mod transfer_perf;
