//! Host bindings generated from `wit/` for each world (one module per world,
//! since each world generates its own copy of the shared `config` types), for the
//! current package version and, in [`v0_1`], for `happyx:policy@0.1.0`
//! (`wit/0.1.0/`), whose components the host still loads through an adapter.

/// World `redactor`.
pub mod redactor {
    wasmtime::component::bindgen!({ world: "redactor", path: "../../wit" });
}

/// World `retention-policy`.
pub mod retention {
    wasmtime::component::bindgen!({ world: "retention-policy", path: "../../wit" });
}

/// World `recipe-book`.
pub mod recipes {
    wasmtime::component::bindgen!({ world: "recipe-book", path: "../../wit" });
}

/// The three worlds of `happyx:policy@0.1.0`, where retention kinds were strings.
pub mod v0_1 {
    /// World `redactor` at 0.1.0.
    pub mod redactor {
        wasmtime::component::bindgen!({ world: "redactor", path: "../../wit/0.1.0" });
    }

    /// World `retention-policy` at 0.1.0.
    pub mod retention {
        wasmtime::component::bindgen!({ world: "retention-policy", path: "../../wit/0.1.0" });
    }

    /// World `recipe-book` at 0.1.0.
    pub mod recipes {
        wasmtime::component::bindgen!({ world: "recipe-book", path: "../../wit/0.1.0" });
    }
}

/// The `happyx:policy` version this host was built against.
pub const WIT_VERSION: &str = "0.2.0";
/// The older version the host still loads (with a warning), through an adapter.
pub const WIT_VERSION_V0_1: &str = "0.1.0";
/// The WIT package name (without version).
pub const WIT_PACKAGE: &str = "happyx:policy";
