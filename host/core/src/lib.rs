//! HappyX's shared base: the vocabulary every layer names things with and the few helpers every
//! layer needs (clock, identifiers, hashing, secret-free `Debug`, secret key files, progress).
//!
//! Everything here is synchronous and free of I/O frameworks (no tokio, sqlx, axum or
//! wasmtime), so that the envelope crate, the store, the policy runtime, the client and the
//! server can all depend on it without pulling each other in.

pub mod keyfile;
pub mod progress;
pub mod retention_kind;
pub mod util;
pub mod vocab;

pub use retention_kind::RetentionKind;
