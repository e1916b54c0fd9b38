//! Devices: a device's local state on disk ([`keystore`]), the device CLI ([`client`]), and
//! the server side of enrollment, device-signed requests, encrypted sessions and envelope
//! ingest ([`service`], [`ingest`], [`auth`]). The crypto lives in [`crate::envelope`]; the
//! wire bodies both sides share in [`protocol`].

pub mod auth;
mod check;
pub mod client;
pub mod ingest;
pub mod keystore;
pub mod protocol;
pub mod service;

#[cfg(test)]
mod ingest_tests;
#[cfg(test)]
mod rotation_tests;

pub use keystore::{DeviceDir, KeystoreError};
pub use service::{DeviceCaller, DeviceError, DeviceService, SignedHeaders};
