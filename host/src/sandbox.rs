//! Landlock confinement of children when the host cannot switch users (it is not root).
//!
//! A host running as root keeps identities apart with uids ([`crate::children`]). A host that
//! is not root runs every child as its own uid, so the kernel's permission checks no longer
//! separate a child from the data dir, from another identity's workspace or terminal, or from
//! the host itself. Landlock (Linux ≥ 5.13; scoping of signals and abstract sockets from
//! ABI 6, Linux 6.12) still lets each child give up what it must not reach, as an unprivileged
//! process, between fork and exec:
//!
//! - **Files**: read and execute beneath the system directories ([`SYSTEM_READ`]); read and
//!   write the few device files a program expects ([`DEVICES`]) — not `/dev/pts`, so no
//!   other terminal can be opened; read the empty `HOME`; everything beneath the identity's
//!   own workspace. Nothing else: not the data dir, not another workspace, not `/tmp`
//!   (`TMPDIR` points into the workspace). Descriptors the child inherits (its own terminal,
//!   its pipes) keep working: Landlock checks paths when they are opened.
//! - **Processes** (ABI ≥ 6): no signal to a process outside the child's own domain (the
//!   host, another identity's children), no connection to an abstract Unix socket made
//!   outside it; Landlock has always refused `ptrace` (and so `/proc/<pid>/mem`, `environ`
//!   and `fd/`) of processes outside the domain.
//!
//! Each child gets its own domain, so two children of one identity are apart from each other
//! as well. The ruleset is built in the parent (it allocates and opens paths); the child only
//! enters it with two async-signal-safe system calls ([`enter`]).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, path_beneath_rules,
};
use serde::{Deserialize, Serialize};

/// Directories children may read and execute beneath (those that exist).
pub const SYSTEM_READ: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/proc", "/sys",
];

/// Device files children may open for reading and writing (their own terminal is reopened
/// through `/dev/tty`).
pub const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// The Landlock ABI the rules are written for; a newer kernel enforces them as written, an
/// older one enforces what it knows (see [`abi`]).
const TARGET: ABI = ABI::V6;

/// Why a child's ruleset could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot build the Landlock ruleset for {workspace}: {reason}")]
    Ruleset { workspace: PathBuf, reason: String },
}

impl SandboxError {
    /// Stable, snake_case error code.
    pub fn code(&self) -> &'static str {
        "sandbox_unavailable"
    }
}

/// The Landlock ABI version the running kernel offers (0: none).
pub fn abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_ulong = 1;
    // SAFETY: with a null attribute, size 0 and the VERSION flag the call only returns a number.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).unwrap_or(0)
}

/// Where one child may write and what it may read besides the system: sent to the terminal
/// holder too, which builds the same ruleset for a terminal's program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// The identity's workspace: everything allowed beneath it.
    pub workspace: PathBuf,
    /// The empty, unwritable `HOME`: read only.
    pub home: PathBuf,
}

impl Confinement {
    /// The child's temporary directory (`TMPDIR`), inside its workspace.
    pub fn tmp_dir(workspace: &Path) -> PathBuf {
        workspace.join(".tmp")
    }

    /// Builds the ruleset (in the parent: it allocates and opens the allowed paths). `None`
    /// when the kernel has no Landlock. The returned descriptor is what [`enter`] takes in the
    /// child; the parent drops it after the spawn.
    pub fn ruleset(&self) -> Result<Option<OwnedFd>, SandboxError> {
        let err = |e: &dyn std::fmt::Display| SandboxError::Ruleset {
            workspace: self.workspace.clone(),
            reason: e.to_string(),
        };
        let created = Ruleset::default()
            .handle_access(AccessFs::from_all(TARGET))
            .map_err(|e| err(&e))?
            .scope(Scope::from_all(TARGET))
            .map_err(|e| err(&e))?
            .create()
            .map_err(|e| err(&e))?
            .add_rules(path_beneath_rules(SYSTEM_READ, AccessFs::from_read(TARGET)))
            .map_err(|e| err(&e))?
            .add_rules(path_beneath_rules(
                DEVICES,
                AccessFs::from_read(TARGET) | AccessFs::from_write(TARGET),
            ))
            .map_err(|e| err(&e))?
            .add_rules(path_beneath_rules(
                [&self.home],
                AccessFs::from_read(TARGET),
            ))
            .map_err(|e| err(&e))?
            .add_rules(path_beneath_rules(
                [&self.workspace],
                AccessFs::from_all(TARGET),
            ))
            .map_err(|e| err(&e))?;
        Ok(created.into())
    }
}

/// Enters the ruleset `fd` (between fork and exec: two system calls, no allocation). The
/// child can never regain what it gave up, nor gain privileges by exec (`no_new_privs`).
pub fn enter(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: prctl and landlock_restrict_self take plain integers; both are async-signal-safe.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The raw descriptor of an optional ruleset (for a `pre_exec` closure).
pub fn raw(fd: &Option<OwnedFd>) -> Option<RawFd> {
    fd.as_ref().map(AsRawFd::as_raw_fd)
}
