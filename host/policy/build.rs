//! Builds the sample policy plugins (`../plugins`, a separate cargo workspace)
//! for `wasm32-wasip2` with their size-optimised `guest` profile and copies
//! the three components into `OUT_DIR`, where `src/builtin.rs`
//! embeds them with `include_bytes!`.
//!
//! The nested cargo gets its own target dir (`plugins/target`, or
//! `HAPPYX_PLUGINS_TARGET_DIR`), because sharing the outer one deadlocks on
//! the build lock, and an environment scrubbed of everything the outer build
//! sets for its own crates (flags, wrappers, target, profile settings).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const PLUGINS: [(&str, &str); 3] = [
    ("redactor", "happyx_redactor.wasm"),
    ("retention", "happyx_retention.wasm"),
    ("recipes", "happyx_recipes.wasm"),
];
const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "guest";

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let repo = manifest_dir
        .ancestors()
        .nth(2)
        .ok_or("host/policy has no repository two levels up")?
        .to_path_buf();
    let plugins = repo.join("plugins");
    let wit = repo.join("wit");

    // Only real inputs: watching `plugins/` itself would see `plugins/target`
    // change on every build and rerun this script every time.
    println!("cargo:rerun-if-changed={}", wit.display());
    println!(
        "cargo:rerun-if-changed={}",
        plugins.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        plugins.join("Cargo.lock").display()
    );
    for (name, _) in PLUGINS {
        println!(
            "cargo:rerun-if-changed={}",
            plugins.join(name).join("Cargo.toml").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            plugins.join(name).join("src").display()
        );
    }
    println!("cargo:rerun-if-env-changed=HAPPYX_PLUGINS_TARGET_DIR");

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    check_target_installed(Path::new(&rustc))?;

    let target_dir = env::var_os("HAPPYX_PLUGINS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| plugins.join("target"));

    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&plugins)
        .arg("build")
        .arg("--locked")
        .arg("--target")
        .arg(TARGET)
        .arg("--profile")
        .arg(PROFILE)
        .arg("--target-dir")
        .arg(&target_dir);
    scrub_env(&mut cmd);
    let output = cmd
        .output()
        .map_err(|e| format!("running nested cargo for the plugins: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "building the sample plugins failed ({}):\n{stderr}",
            output.status
        ));
    }

    let built = target_dir.join(TARGET).join(PROFILE);
    for (name, file) in PLUGINS {
        let from = built.join(file);
        let to = out_dir.join(format!("{name}.wasm"));
        fs::copy(&from, &to)
            .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
    }
    Ok(())
}

/// Makes sure the wasm32-wasip2 standard library is installed for the compiler in use: when
/// it is missing and the toolchain is managed by rustup, installs it (`rustup target add`,
/// for the active toolchain), so that building HappyX needs no manual step. Fails naming the
/// command to run when that is not possible.
fn check_target_installed(rustc: &Path) -> Result<(), String> {
    let lib = target_lib(rustc)?;
    if lib.is_dir() {
        return Ok(());
    }
    let toolchain = env::var("RUSTUP_TOOLCHAIN").ok();
    let mut add = Command::new("rustup");
    add.args(["target", "add", TARGET]);
    if let Some(t) = &toolchain {
        add.args(["--toolchain", t]);
    }
    println!(
        "cargo:warning=installing the Rust target {TARGET} for the sample plugins (rustup target add {TARGET})"
    );
    match add.output() {
        Ok(out) if out.status.success() && target_lib(rustc)?.is_dir() => Ok(()),
        Ok(out) => Err(format!(
            "the Rust target {TARGET} is not installed (no {}) and `rustup target add {TARGET}` \
             failed:\n{}\nInstall it, then build again.",
            lib.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!(
            "the Rust target {TARGET} is not installed (no {}) and rustup could not be run \
             ({e}); install the {TARGET} standard library for this compiler, then build again.",
            lib.display()
        )),
    }
}

/// `<sysroot>/lib/rustlib/wasm32-wasip2` of the compiler in use.
fn target_lib(rustc: &Path) -> Result<PathBuf, String> {
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .env_remove("RUSTC_WRAPPER")
        .output()
        .map_err(|e| format!("running {} --print sysroot: {e}", rustc.display()))?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(Path::new(&sysroot).join("lib").join("rustlib").join(TARGET))
}

/// Removes what the outer build sets for its own compilation, so the nested
/// build is the same whatever profile, flags or wrappers the host uses.
fn scrub_env(cmd: &mut Command) {
    const KEEP: [&str; 6] = [
        "CARGO_HOME",
        "CARGO_NET_OFFLINE",
        "CARGO_HTTP_",
        "CARGO_NET_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
    ];
    const REMOVE: [&str; 13] = [
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "TARGET",
        "HOST",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "NUM_JOBS",
        "OUT_DIR",
        "MAKEFLAGS",
        "MFLAGS",
    ];
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let cargo_var = key.starts_with("CARGO_") && !KEEP.iter().any(|k| key.starts_with(k));
        if cargo_var || REMOVE.contains(&key) || key.starts_with("DEP_") {
            cmd.env_remove(key);
        }
    }
}
