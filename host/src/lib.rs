//! HappyX host library: storage, crypto, PTYs, plugins and the HTTP API.
//!
//! Data flows one way: [`api`] → domain modules ([`auth`], [`approvals`],
//! [`runs`]) → [`store`] / [`plugins`]. Domain modules never import `api`
//! except for shared counters; `store` imports nothing from the domain except
//! plain row types.

pub mod api;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod checkpoint;
pub mod children;
pub mod cli;
pub mod config;
pub mod connlimit;
pub mod console;
pub mod datadir;
pub mod devices;
pub mod envelope;
pub mod keyfile;
pub mod metrics;
pub mod ops;
pub mod plugins;
pub mod progress;
pub mod pty;
pub mod public;
pub mod reload;
pub mod retention;
pub mod retention_kind;
pub mod run_hold;
pub mod runs;
pub mod sandbox;
pub mod server;
pub mod store;
pub mod transfer;
pub mod util;
