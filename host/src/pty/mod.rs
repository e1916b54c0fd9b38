//! Real terminals. Each PTY is owned by a detached holder process
//! ([`holder`], `happyx pty-holder`) that outlives host restarts; the host
//! ([`manager`]) talks to it over a Unix socket ([`protocol`]), records its
//! output as a redacted transcript ([`transcript`]) with end-to-end
//! backpressure, and fans the redacted stream out to live viewers.

pub mod holder;
pub mod manager;
pub mod protocol;
pub mod transcript;

pub use manager::{PtyManager, socket_path_for};
pub use transcript::Live;

/// Why a PTY operation failed. `Display` never contains secrets or terminal bytes.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("the holder socket path would be longer than 107 bytes; use a shorter data dir")]
    SocketPathTooLong,
    #[error("cannot start the holder process: {0}")]
    Launch(String),
    #[error("the holder did not answer as expected: {0}")]
    Holder(&'static str),
    #[error("the terminal is not running")]
    NotRunning,
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    KeyFile(#[from] crate::keyfile::KeyFileError),
}

impl PtyError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::SocketPathTooLong => "socket_path_too_long",
            Self::Launch(_) => "holder_launch_failed",
            Self::Holder(_) => "holder_refused",
            Self::NotRunning => "pty_not_running",
            Self::Protocol(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::Io(_) => "holder_io",
            Self::KeyFile(e) => e.code(),
        }
    }
}
