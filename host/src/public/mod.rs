//! Public surfaces: the leak scanner ([`scan`]) and `happyx verify-public`
//! ([`verify`]), which fetches every public view of a running host and fails
//! on any token, key, high-entropy blob, redactor finding or canary.

pub mod scan;
pub mod verify;
