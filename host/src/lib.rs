//! The HappyX server: domain services, the HTTP API, runs, PTYs, the console and the `happyx`
//! binary's commands.
//!
//! The layers below it are crates of their own, and dependencies point one way:
//!
//! ```text
//! happyx (this crate: api → domain → …)
//!   ├── happyx-client    typed HTTP client, device keystore and protocol
//!   ├── happyx-store     schema, migrations, all SQL, the event chain, checkpoints
//!   ├── happyx-policy    wasmtime runtime, WIT bindings, limits, cache, contract checks
//!   ├── happyx-envelope  envelope wire form and crypto (pure: no tokio, sqlx, axum, wasmtime)
//!   └── happyx-core      vocabulary and small helpers shared by all
//! ```
//!
//! Inside this crate, data flows one way too: [`api`] → domain modules ([`auth`],
//! [`approvals`], [`runs`]) → the store and the plugins. Domain modules never import `api`
//! except for shared counters. The lower crates are re-exported under the names this crate
//! has always used ([`store`], [`plugins`], [`envelope`], …), so `happyx::store::Store` is
//! `happyx_store::Store`.

pub mod api;
pub mod approvals;
pub mod auth;
pub mod checkpoint;
pub mod children;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod connlimit;
pub mod console;
pub mod datadir;
pub mod devices;
pub mod metrics;
pub mod ops;
pub mod pty;
pub mod public;
pub mod reload;
pub mod retention;
pub mod run_hold;
pub mod runs;
pub mod sandbox;
pub mod server;
pub mod transfer;

pub use happyx_client as client;
pub use happyx_core::{keyfile, progress, retention_kind, util, vocab};
pub use happyx_envelope as envelope;
pub use happyx_policy as plugins;
pub use happyx_store as store;
pub use happyx_store::audit;
