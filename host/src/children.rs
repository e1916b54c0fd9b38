//! Who a child process (a run, or a terminal's program) runs as, where, and with what
//! environment — the isolation of identities from each other and from the host.
//!
//! # Layout of the workspace root (host running as root)
//!
//! ```text
//! <root>/                 root:root 0711  — children may traverse, not list or write
//! <root>/.home/           root:root 0555  — every child's HOME: empty, unwritable
//! <root>/<identity>/      uid:uid   0700  — one per identity (`token-<id>`), the child's cwd
//! ```
//!
//! With `runs.isolation = "per-identity"` (the default) each identity — each token — gets its
//! own uid and gid, allocated once from `runs.uid_range` and recorded in the store
//! (`child_identities`), so one identity's children cannot read, write or signal another's
//! processes, terminals (the PTY slave is `uid 0600`) or workspace files, and none of them can
//! reach the data dir (0700, the host's). With `"shared"` every child runs as `runs.run_as` in
//! `<root>/shared`: the data dir stays closed, identities are not kept apart.
//!
//! A host that is not root cannot switch users: every child runs as the host's own uid. Where
//! the kernel has Landlock, each child is confined to its identity's own workspace
//! (`<root>/token-<id>`), the system directories and a few device files, and (ABI ≥ 6) cannot
//! signal outside itself — see [`crate::sandbox`]. Without Landlock every child shares
//! `<root>/shared`. [`Guarantees`] says which promises are off (logged at start, served in
//! `GET /v1/status`).
//!
//! # Environment
//!
//! Nothing of the host's own: `PATH`, `HOME` (the empty, unwritable `.home`, outside every
//! workspace, so no workspace content can be a dotfile a later program reads), `LANG`, and
//! git told to read no system or global configuration. Config-driven execution that a
//! repository's own `.git/config` can ask for is the recipe's to neutralise (see
//! `docs/writing-a-plugin.md`). Every descriptor above 2 is closed before exec.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use crate::config::{Isolation, RunsConfig};
use crate::sandbox::{self, Confinement, SandboxError};
use crate::store::{Store, StoreError};

/// Why children cannot be set up or started.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("runs.run_as: the user `{0}` does not exist")]
    NoSuchUser(String),
    #[error("runs.run_as: refusing to run children as root (`{0}`)")]
    RootUser(String),
    #[error("runs.uid_range: {0}")]
    UidRange(&'static str),
    #[error("cannot prepare the workspace {path}: {source}")]
    Workspace {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the workspace root {root} is out of reach of the children's uid {uid}: {blocker} is mode \
         {mode:04o} owned by uid {owner}; make it searchable by others (chmod o+x {blocker}) or \
         choose runs.workspaces outside it"
    )]
    Unreachable {
        root: PathBuf,
        uid: u32,
        blocker: PathBuf,
        mode: u32,
        owner: u32,
    },
    #[error("no uid left in runs.uid_range for a new identity")]
    RangeExhausted,
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Store(StoreError),
}

impl ChildError {
    /// Stable, snake_case error code.
    pub fn code(&self) -> &'static str {
        match self {
            ChildError::NoSuchUser(_) => "no_such_user",
            ChildError::RootUser(_) => "root_user",
            ChildError::UidRange(_) => "invalid_uid_range",
            ChildError::Workspace { .. } => "workspace_unavailable",
            ChildError::Unreachable { .. } => "workspace_unreachable",
            ChildError::RangeExhausted => "uid_range_exhausted",
            ChildError::Sandbox(e) => e.code(),
            ChildError::Store(e) => e.code(),
        }
    }
}

impl From<StoreError> for ChildError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UidRangeExhausted => ChildError::RangeExhausted,
            other => ChildError::Store(other),
        }
    }
}

/// Which isolation promises hold on this host (served in `GET /v1/status`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Guarantees {
    /// `per-identity`, `shared` or `host-user` (the host is not root).
    pub isolation: &'static str,
    /// Children never run with the host's uid, so they cannot read the data dir, plugin files or
    /// holder sockets, nor signal the host.
    pub host_closed: bool,
    /// One identity's children cannot read, write or signal another identity's processes,
    /// terminals or workspace files.
    pub identities_apart: bool,
    /// The Landlock ABI children are confined with when the host is not root (0: none).
    pub landlock: u32,
    /// What is off, in words, for the start-up log and the status route.
    pub off: Vec<&'static str>,
}

/// How children are placed: built once at start from the configuration.
#[derive(Clone)]
pub struct Children {
    inner: Arc<Inner>,
}

struct Inner {
    mode: Mode,
    root: PathBuf,
    home: PathBuf,
    store: Store,
}

#[derive(Clone, Copy)]
enum Mode {
    PerIdentity {
        lo: u32,
        hi: u32,
    },
    Shared {
        uid: u32,
        gid: u32,
    },
    /// Not root: the host's uid; confined by Landlock when `landlock` (its ABI) is not 0.
    HostUser {
        landlock: u32,
    },
}

/// Everything one child needs: its uid/gid (none when the host cannot switch), its workspace,
/// its home, and its Landlock confinement (a host that is not root).
#[derive(Debug, Clone)]
pub struct ChildContext {
    pub ids: Option<(u32, u32)>,
    pub workspace: PathBuf,
    pub home: PathBuf,
    pub confinement: Option<Confinement>,
}

impl Children {
    /// Resolves the configuration, creates the workspace root and its `.home`, and checks that
    /// the children's uid can reach the root — naming the directory to fix when it cannot.
    pub fn prepare(cfg: &RunsConfig, store: Store) -> Result<Self, ChildError> {
        let root = cfg.workspaces[0].clone();
        let ws_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ChildError::Workspace { path, source }
        };
        std::fs::create_dir_all(&root).map_err(ws_err(&root))?;
        let root = root.canonicalize().map_err(ws_err(&root))?;
        let is_root = nix::unistd::geteuid().is_root();
        let mode = match (is_root, cfg.isolation) {
            (false, _) => Mode::HostUser {
                landlock: sandbox::abi(),
            },
            (true, Isolation::PerIdentity) => {
                let [lo, hi] = cfg.uid_range;
                if lo == 0 || lo > hi {
                    return Err(ChildError::UidRange(
                        "expected [first, last] with 0 < first <= last",
                    ));
                }
                if nix::unistd::User::from_uid(lo.into())
                    .ok()
                    .flatten()
                    .is_some()
                {
                    return Err(ChildError::UidRange(
                        "its first uid belongs to an existing user; choose unused uids",
                    ));
                }
                Mode::PerIdentity { lo, hi }
            }
            (true, Isolation::Shared) => {
                let user = nix::unistd::User::from_name(&cfg.run_as)
                    .ok()
                    .flatten()
                    .ok_or_else(|| ChildError::NoSuchUser(cfg.run_as.clone()))?;
                if user.uid.is_root() {
                    return Err(ChildError::RootUser(cfg.run_as.clone()));
                }
                Mode::Shared {
                    uid: user.uid.as_raw(),
                    gid: user.gid.as_raw(),
                }
            }
        };
        let home = root.join(".home");
        std::fs::create_dir_all(&home).map_err(ws_err(&home))?;
        if is_root {
            // Root-owned: no child can list the identities' directories, plant a dotfile in
            // HOME, or replace HOME itself.
            for (dir, m) in [(&root, 0o711), (&home, 0o555)] {
                nix::unistd::chown(dir, Some(0.into()), Some(0.into()))
                    .map_err(|e| ws_err(dir)(std::io::Error::from(e)))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(m))
                    .map_err(ws_err(dir))?;
            }
        } else {
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o555))
                .map_err(ws_err(&home))?;
        }
        let probe = match mode {
            Mode::PerIdentity { lo, .. } => Some((lo, lo)),
            Mode::Shared { uid, gid } => Some((uid, gid)),
            Mode::HostUser { .. } => None,
        };
        if let Some((uid, gid)) = probe {
            check_reachable(&root, uid, gid)?;
        }
        let children = Self {
            inner: Arc::new(Inner {
                mode,
                root,
                home,
                store,
            }),
        };
        let g = children.guarantees();
        if g.off.is_empty() {
            tracing::info!(isolation = g.isolation, "children: identities isolated");
        } else {
            for off in &g.off {
                tracing::warn!(isolation = g.isolation, "children: {off}");
            }
        }
        Ok(children)
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Which promises hold.
    pub fn guarantees(&self) -> Guarantees {
        match self.inner.mode {
            Mode::PerIdentity { .. } => Guarantees {
                isolation: "per-identity",
                host_closed: true,
                identities_apart: true,
                landlock: 0,
                off: vec![],
            },
            Mode::Shared { .. } => Guarantees {
                isolation: "shared",
                host_closed: true,
                identities_apart: false,
                landlock: 0,
                off: vec![
                    "runs.isolation = \"shared\": every identity's children run as runs.run_as \
                     and can read, write and signal each other's processes, terminals and files",
                ],
            },
            Mode::HostUser { landlock: 0 } => Guarantees {
                isolation: "host-user",
                host_closed: false,
                identities_apart: false,
                landlock: 0,
                off: vec![
                    "the host is not root and the kernel has no Landlock: children run as the \
                     host's own user, so they can reach its data dir, plugin files and holder \
                     sockets",
                    "the host is not root and the kernel has no Landlock: identities' children \
                     share one uid and can read, write and signal each other's processes, \
                     terminals and files",
                ],
            },
            Mode::HostUser { landlock } if landlock < 6 => Guarantees {
                isolation: "host-user",
                host_closed: false,
                identities_apart: false,
                landlock,
                off: vec![
                    "the host is not root: children share its uid; Landlock keeps them out of \
                     the data dir, other identities' workspaces and terminals, but this kernel's \
                     Landlock (ABI < 6) cannot stop them signalling the host or each other",
                ],
            },
            Mode::HostUser { landlock } => Guarantees {
                isolation: "host-user",
                host_closed: true,
                identities_apart: true,
                landlock,
                off: vec![
                    "the host is not root: children share its uid; Landlock keeps them out of \
                     the data dir and of other identities' workspaces, terminals and processes, \
                     but they share the host's resource limits, may see each other's command \
                     lines in /proc, and have no /tmp (TMPDIR is inside their workspace)",
                ],
            },
        }
    }

    /// The uid, workspace and home of `actor`'s children, creating its workspace directory
    /// (owned by its uid, 0700) on first use.
    pub async fn for_actor(&self, actor: &str) -> Result<ChildContext, ChildError> {
        let inner = &self.inner;
        let (ids, dir) = match inner.mode {
            Mode::PerIdentity { lo, hi } => {
                let uid = inner.store.child_uid(actor, lo, hi).await?;
                (Some((uid, uid)), workspace_name(actor, uid))
            }
            Mode::Shared { uid, gid } => (Some((uid, gid)), "shared".to_string()),
            Mode::HostUser { landlock: 0 } => (None, "shared".to_string()),
            Mode::HostUser { .. } => (None, host_user_workspace(actor)),
        };
        let workspace = inner.root.join(dir);
        let ws_err = |source| ChildError::Workspace {
            path: workspace.clone(),
            source,
        };
        match std::fs::create_dir(&workspace) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(ws_err(e)),
        }
        let meta = std::fs::symlink_metadata(&workspace).map_err(ws_err)?;
        if !meta.is_dir() {
            return Err(ws_err(std::io::Error::other("not a directory")));
        }
        if let Some((uid, gid)) = ids
            && (meta.uid() != uid || meta.gid() != gid)
        {
            nix::unistd::chown(&workspace, Some(uid.into()), Some(gid.into()))
                .map_err(|e| ws_err(std::io::Error::from(e)))?;
        }
        if meta.permissions().mode() & 0o7777 != 0o700 {
            std::fs::set_permissions(&workspace, std::fs::Permissions::from_mode(0o700))
                .map_err(ws_err)?;
        }
        let confinement = match inner.mode {
            Mode::HostUser { landlock } if landlock > 0 => {
                let tmp = Confinement::tmp_dir(&workspace);
                match std::fs::create_dir(&tmp) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(ws_err(e)),
                }
                Some(Confinement {
                    workspace: workspace.clone(),
                    home: inner.home.clone(),
                })
            }
            _ => None,
        };
        Ok(ChildContext {
            ids,
            workspace,
            home: inner.home.clone(),
            confinement,
        })
    }
}

/// `token:abc123` → `token-abc123`; anything not of that plain shape → `uid-<uid>`.
fn workspace_name(actor: &str, uid: u32) -> String {
    let plain = !actor.is_empty()
        && actor.len() <= 64
        && actor
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'_');
    if plain {
        actor.replace(':', "-")
    } else {
        format!("uid-{uid}")
    }
}

/// A confined identity's workspace when the host is not root: `token-<id>` for a plain actor,
/// else a name derived from a hash of it (never the actor's own characters).
fn host_user_workspace(actor: &str) -> String {
    let name = workspace_name(actor, 0);
    if name != "uid-0" {
        return name;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(actor.as_bytes());
    format!("id-{}", hex::encode(&digest[..8]))
}

/// Walks from `/` to `root`: every directory must be searchable by `uid`/`gid` (by the
/// owner, group or other class that applies to them).
fn check_reachable(root: &Path, uid: u32, gid: u32) -> Result<(), ChildError> {
    let mut path = PathBuf::new();
    for part in root.components() {
        path.push(part);
        let meta = std::fs::metadata(&path).map_err(|source| ChildError::Workspace {
            path: path.clone(),
            source,
        })?;
        let mode = meta.permissions().mode();
        let bit = if meta.uid() == uid {
            0o100
        } else if meta.gid() == gid {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            return Err(ChildError::Unreachable {
                root: root.to_path_buf(),
                uid,
                blocker: path,
                mode: mode & 0o7777,
                owner: meta.uid(),
            });
        }
    }
    Ok(())
}

impl ChildContext {
    /// The whole environment a child gets (nothing of the host's own).
    pub fn env(&self) -> Vec<(String, String)> {
        let pairs: [(&str, &str); 6] = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("LANG", "C.UTF-8"),
            // No system or global git configuration: what git reads is the repository's own,
            // which recipes neutralise on their command line.
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GIT_PAGER", "cat"),
        ];
        let mut env: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        env.push(("HOME".into(), self.home.to_string_lossy().into_owned()));
        if self.confinement.is_some() {
            // A confined child has no /tmp: its temporary files stay in its own workspace.
            let tmp = Confinement::tmp_dir(&self.workspace);
            env.push(("TMPDIR".into(), tmp.to_string_lossy().into_owned()));
        }
        env
    }

    /// A command for `program args` as this child: its uid/gid, its workspace as cwd, the
    /// scrubbed environment, its own process group, no stdin, no descriptor of the host's
    /// above 2, and its Landlock confinement if it has one.
    pub fn command(
        &self,
        program: &str,
        args: &[String],
    ) -> Result<tokio::process::Command, ChildError> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .current_dir(&self.workspace)
            .env_clear()
            .envs(self.env())
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        if let Some((uid, gid)) = self.ids {
            // std drops supplementary groups (setgroups) when uid is set as root.
            cmd.uid(uid).gid(gid);
        }
        // Built here, entered in the child; the closure owns the descriptor, so it lives as
        // long as the command (close-on-exec: no other child inherits it).
        let ruleset = match &self.confinement {
            Some(c) => c.ruleset()?,
            None => None,
        };
        // SAFETY: only system calls between fork and exec (prctl, landlock_restrict_self,
        // close_range), all async-signal-safe; no allocation.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = sandbox::raw(&ruleset) {
                    sandbox::enter(fd)?;
                }
                close_from(3);
                Ok(())
            });
        }
        Ok(cmd)
    }
}

/// Closes every descriptor from `first` up (between fork and exec: no allocation).
pub fn close_from(first: u32) {
    // SAFETY: close_range takes plain integers; on kernels without it, close one by one.
    unsafe {
        if libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) != 0 {
            let max = libc::sysconf(libc::_SC_OPEN_MAX);
            let max = if max > 0 { max as i32 } else { 1024 };
            for fd in first as i32..max {
                libc::close(fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_names_are_plain() {
        assert_eq!(workspace_name("token:abc123", 7), "token-abc123");
        assert_eq!(workspace_name("token:../x", 7), "uid-7");
        assert_eq!(workspace_name("", 7), "uid-7");
    }

    #[test]
    fn an_unsearchable_parent_is_named() {
        let tmp = tempfile::tempdir().expect("tmp");
        let closed = tmp.path().join("closed");
        let root = closed.join("ws");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let stranger = 3_999_999;
        match check_reachable(&root, stranger, stranger) {
            Err(ChildError::Unreachable { blocker, mode, .. }) => {
                assert_eq!(blocker, closed);
                assert_eq!(mode, 0o700);
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        check_reachable(&root, stranger, stranger).expect("reachable once searchable");
    }
}
