//! Host bindings generated from `wit/` for each world (one module per world,
//! since each world generates its own copy of the shared `config` types), for the
//! current package version and, in [`v0_3`], [`v0_2`] and [`v0_1`], for
//! `happyx:policy@0.3.0` (`wit/0.3.0/`), `happyx:policy@0.2.0` (`wit/0.2.0/`) and
//! `happyx:policy@0.1.0` (`wit/0.1.0/`), whose components the host still loads.

/// One module per world of the package in `$path`.
macro_rules! worlds {
    ($path:literal) => {
        /// World `redactor`.
        pub mod redactor {
            wasmtime::component::bindgen!({ world: "redactor", path: $path });
        }

        /// World `retention-policy`.
        pub mod retention {
            wasmtime::component::bindgen!({ world: "retention-policy", path: $path });
        }

        /// World `recipe-book`.
        pub mod recipes {
            wasmtime::component::bindgen!({ world: "recipe-book", path: $path });
        }
    };
}

worlds!("../../wit");

/// The three worlds of `happyx:policy@0.3.0`, before trigger groups and
/// `redaction.redact-windows`.
pub mod v0_3 {
    worlds!("../../wit/0.3.0");
}

/// The three worlds of `happyx:policy@0.2.0`, before `redaction.prefilter`.
pub mod v0_2 {
    worlds!("../../wit/0.2.0");
}

/// The three worlds of `happyx:policy@0.1.0`, where retention kinds were strings.
pub mod v0_1 {
    worlds!("../../wit/0.1.0");
}

/// The `happyx:policy` version this host was built against.
pub const WIT_VERSION: &str = "0.4.0";
/// The older version the host still loads with a prefilter whose windows are each given to
/// `redact` with every rule (no groups).
pub const WIT_VERSION_V0_3: &str = "0.3.0";
/// The older version the host still loads (with a warning) with whole-chunk redaction.
pub const WIT_VERSION_V0_2: &str = "0.2.0";
/// The oldest version the host still loads (with a warning), through an adapter.
pub const WIT_VERSION_V0_1: &str = "0.1.0";
/// The WIT package name (without version).
pub const WIT_PACKAGE: &str = "happyx:policy";
