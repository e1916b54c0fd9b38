//! A device's local state: its key directory, send counters, pinned peers and session keys.

pub mod keystore;
