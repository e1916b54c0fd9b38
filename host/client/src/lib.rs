//! The client side of HappyX, for the CLI, the e2e tests, the load tool and anyone writing an
//! API client in Rust:
//!
//! - [`http`]: the typed HTTP client of the operator commands (bearer token, JSON, the host's
//!   `{code,message}` errors as [`http::ClientError::Api`]);
//! - [`device`]: the device side of encrypted sessions (enrollment with a proof of possession,
//!   sessions, sending and reading envelopes, every peer key pinned and checked);
//! - [`keystore`]: the device directory holding a device's secrets on disk;
//! - [`protocol`]: the JSON bodies device and host exchange, shared with the server so the two
//!   cannot drift.
//!
//! It depends on the envelope crate for all crypto and on no server code.

pub mod device;
pub mod http;
pub mod keystore;
pub mod protocol;

pub use keystore::{DeviceDir, KeystoreError};
