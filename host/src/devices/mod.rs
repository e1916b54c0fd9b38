//! A device's local state on disk: its secret keys, per-session send counters, pinned peer
//! fingerprints and the session content keys it has unwrapped. The crypto lives in
//! [`crate::envelope`]; this module only keeps its results safely.

pub mod keystore;

pub use keystore::{DeviceDir, KeystoreError};
