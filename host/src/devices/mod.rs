//! Devices, the server side: enrollment, device-signed requests, encrypted sessions and
//! envelope ingest ([`service`], [`ingest`], [`auth`]). The crypto lives in the envelope crate
//! ([`crate::envelope`]); the device's side (its keystore and CLI) and the wire bodies both
//! sides share live in the client crate, re-exported here as [`keystore`], [`client`] and
//! [`protocol`].

pub mod auth;
mod check;
pub mod ingest;
pub mod service;

#[cfg(test)]
mod ingest_tests;
#[cfg(test)]
mod rotation_tests;

pub use happyx_client::device as client;
pub use happyx_client::{keystore, protocol};
pub use keystore::{DeviceDir, KeystoreError};
pub use service::{DeviceCaller, DeviceError, DeviceService, SignedHeaders, provision};
