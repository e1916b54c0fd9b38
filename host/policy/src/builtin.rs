//! The sample plugins built from `plugins/` by `build.rs` and embedded in
//! the binary.

use super::config::Kind;

const REDACTOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/redactor.wasm"));
const RETENTION: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/retention.wasm"));
const RECIPES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/recipes.wasm"));

/// The built-in components with their file names, one per world.
pub fn builtin_components() -> [(&'static str, &'static [u8]); 3] {
    [
        ("redactor.wasm", REDACTOR),
        ("retention.wasm", RETENTION),
        ("recipes.wasm", RECIPES),
    ]
}

/// The built-in component for `kind`.
pub fn builtin(kind: Kind) -> &'static [u8] {
    match kind {
        Kind::Redactor => REDACTOR,
        Kind::Retention => RETENTION,
        Kind::Recipes => RECIPES,
    }
}
