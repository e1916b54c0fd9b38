//! Host bindings generated from `wit/` for each world (one module per world,
//! since each world generates its own copy of the shared `config` types).

/// World `redactor`.
pub mod redactor {
    wasmtime::component::bindgen!({ world: "redactor", path: "../wit" });
}

/// World `retention-policy`.
pub mod retention {
    wasmtime::component::bindgen!({ world: "retention-policy", path: "../wit" });
}

/// World `recipe-book`.
pub mod recipes {
    wasmtime::component::bindgen!({ world: "recipe-book", path: "../wit" });
}

/// The `happyx:policy` version this host was built against.
pub const WIT_VERSION: &str = "0.1.0";
/// The WIT package name (without version).
pub const WIT_PACKAGE: &str = "happyx:policy";
