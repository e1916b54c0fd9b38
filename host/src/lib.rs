//! HappyX host library: storage, crypto, PTYs, plugins and the HTTP API.

pub mod devices;
pub mod envelope;
