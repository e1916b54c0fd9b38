//! The host ↔ holder wire protocol (version [`VERSION`]), over the holder's
//! Unix socket. Every frame is `u32-BE length || u8 kind || payload`, where the
//! length counts kind and payload and is at most [`MAX_FRAME`].
//!
//! | kind | name | direction | payload |
//! | --- | --- | --- | --- |
//! | 1 | hello | host → holder | JSON `{version, secret, session, boot_id, nonce}` |
//! | 2 | ok | holder → host | JSON `{version, pid, state, exit_code, signal, ring_start, ring_end, proof}` |
//! | 3 | refused | holder → host | JSON `{code}` |
//! | 4 | output | holder → host | `u64-BE offset || bytes` |
//! | 5 | ack | host → holder | `u64-BE offset` (everything below it is persisted) |
//! | 6 | input | host → holder | bytes for the terminal |
//! | 7 | resize | host → holder | `u16-BE rows || u16-BE cols` |
//! | 8 | signal | host → holder | `u8`: 1 interrupt, 2 hangup, 3 kill (hangup, then SIGKILL after a grace) |
//! | 9 | exited | holder → host | JSON `{exit_code, signal, end_offset}` |
//! | 10 | release | host → holder | empty: the exit is recorded and every byte persisted; the holder may exit |
//! | 11 | input dropped | holder → host | `u64-BE bytes`: input discarded since the last report because the program was not reading it |
//!
//! The first frame on a connection must be `hello`; anything else, a wrong
//! version, secret, session or boot id is answered with `refused` and the
//! connection is closed. `proof` is `sha256("happyx-holder-proof" || secret ||
//! nonce)` in hex, so the host knows it reached the holder it spawned.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Protocol version spoken by this binary.
pub const VERSION: u32 = 1;
/// Largest frame (kind + payload) either side accepts.
pub const MAX_FRAME: usize = 128 * 1024;
/// Largest output payload the holder sends in one frame.
pub const MAX_OUTPUT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("malformed frame (kind {0})")]
    Malformed(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
}

impl ProtocolError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Closed => "holder_closed",
            Self::Io(_) => "holder_io",
            Self::TooLarge(_) => "frame_too_large",
            Self::Malformed(_) => "frame_malformed",
            Self::UnknownKind(_) => "frame_unknown",
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// Hex of the 32-byte holder secret.
    pub secret: String,
    pub session: String,
    pub boot_id: String,
    /// Hex of 16 random bytes; the holder proves knowledge of the secret over it.
    pub nonce: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HelloOk {
    pub version: u32,
    pub pid: i64,
    /// `running` or `exited`.
    pub state: String,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub ring_start: u64,
    pub ring_end: u64,
    pub proof: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExitInfo {
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub end_offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    Interrupt,
    Hangup,
    Kill,
}

impl SignalKind {
    fn byte(self) -> u8 {
        match self {
            Self::Interrupt => 1,
            Self::Hangup => 2,
            Self::Kill => 3,
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Interrupt),
            2 => Some(Self::Hangup),
            3 => Some(Self::Kill),
            _ => None,
        }
    }
}

/// One protocol frame. `Debug` never shows the secret or terminal bytes.
#[derive(Clone)]
pub enum Frame {
    Hello(Hello),
    Ok(HelloOk),
    Refused(String),
    Output { offset: u64, data: Vec<u8> },
    Ack(u64),
    Input(Vec<u8>),
    Resize { rows: u16, cols: u16 },
    Signal(SignalKind),
    Exited(ExitInfo),
    Release,
    InputDropped(u64),
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hello(h) => write!(f, "Hello(v{}, session {})", h.version, h.session),
            Self::Ok(o) => write!(f, "Ok({o:?})"),
            Self::Refused(c) => write!(f, "Refused({c})"),
            Self::Output { offset, data } => write!(f, "Output({offset}, {} bytes)", data.len()),
            Self::Ack(o) => write!(f, "Ack({o})"),
            Self::Input(d) => write!(f, "Input({} bytes)", d.len()),
            Self::Resize { rows, cols } => write!(f, "Resize({rows}x{cols})"),
            Self::Signal(s) => write!(f, "Signal({s:?})"),
            Self::Exited(e) => write!(f, "Exited({e:?})"),
            Self::Release => write!(f, "Release"),
            Self::InputDropped(n) => write!(f, "InputDropped({n} bytes)"),
        }
    }
}

/// The holder's proof of the secret over the host's nonce.
pub fn proof(secret: &[u8], nonce: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"happyx-holder-proof");
    h.update(secret);
    h.update(nonce.as_bytes());
    hex::encode(h.finalize())
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl Frame {
    /// The whole frame, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Self::Hello(h) => (1, json(h)),
            Self::Ok(o) => (2, json(o)),
            Self::Refused(c) => (3, json(&serde_json::json!({ "code": c }))),
            Self::Output { offset, data } => {
                let mut p = Vec::with_capacity(8 + data.len());
                p.extend_from_slice(&offset.to_be_bytes());
                p.extend_from_slice(data);
                (4, p)
            }
            Self::Ack(o) => (5, o.to_be_bytes().to_vec()),
            Self::Input(d) => (6, d.clone()),
            Self::Resize { rows, cols } => {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend_from_slice(&cols.to_be_bytes());
                (7, p)
            }
            Self::Signal(s) => (8, vec![s.byte()]),
            Self::Exited(e) => (9, json(e)),
            Self::Release => (10, Vec::new()),
            Self::InputDropped(n) => (11, n.to_be_bytes().to_vec()),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.extend_from_slice(&((payload.len() + 1) as u32).to_be_bytes());
        out.push(kind);
        out.extend_from_slice(&payload);
        out
    }

    /// Parses kind and payload (the length prefix already consumed).
    pub fn decode(kind: u8, p: &[u8]) -> Result<Frame, ProtocolError> {
        let bad = || ProtocolError::Malformed(kind);
        let u64_at = |p: &[u8]| -> Result<u64, ProtocolError> {
            let b: [u8; 8] = p.get(..8).and_then(|s| s.try_into().ok()).ok_or_else(bad)?;
            Ok(u64::from_be_bytes(b))
        };
        Ok(match kind {
            1 => Frame::Hello(serde_json::from_slice(p).map_err(|_| bad())?),
            2 => Frame::Ok(serde_json::from_slice(p).map_err(|_| bad())?),
            3 => {
                let v: serde_json::Value = serde_json::from_slice(p).map_err(|_| bad())?;
                Frame::Refused(
                    v["code"]
                        .as_str()
                        .unwrap_or("refused")
                        .chars()
                        .take(64)
                        .collect(),
                )
            }
            4 => Frame::Output {
                offset: u64_at(p)?,
                data: p[8..].to_vec(),
            },
            5 => {
                if p.len() != 8 {
                    return Err(bad());
                }
                Frame::Ack(u64_at(p)?)
            }
            6 => Frame::Input(p.to_vec()),
            7 => {
                if p.len() != 4 {
                    return Err(bad());
                }
                Frame::Resize {
                    rows: u16::from_be_bytes([p[0], p[1]]),
                    cols: u16::from_be_bytes([p[2], p[3]]),
                }
            }
            8 => match p {
                [b] => Frame::Signal(SignalKind::from_byte(*b).ok_or_else(bad)?),
                _ => return Err(bad()),
            },
            9 => Frame::Exited(serde_json::from_slice(p).map_err(|_| bad())?),
            10 if p.is_empty() => Frame::Release,
            11 => {
                if p.len() != 8 {
                    return Err(bad());
                }
                Frame::InputDropped(u64_at(p)?)
            }
            k => return Err(ProtocolError::UnknownKind(k)),
        })
    }
}

fn check_len(len: u32) -> Result<usize, ProtocolError> {
    let len = len as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(ProtocolError::TooLarge(len));
    }
    Ok(len)
}

/// Reads one frame from a blocking reader.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Frame, ProtocolError> {
    let mut len = [0u8; 4];
    if let Err(e) = r.read_exact(&mut len) {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtocolError::Closed
        } else {
            e.into()
        });
    }
    let len = check_len(u32::from_be_bytes(len))?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Frame::decode(body[0], &body[1..])
}

/// Writes one frame to a blocking writer.
pub fn write_frame<W: Write>(w: &mut W, f: &Frame) -> Result<(), ProtocolError> {
    w.write_all(&f.encode())?;
    Ok(())
}

/// Reads one frame from an async reader (not cancel-safe: use from one task).
pub async fn read_frame_async<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, ProtocolError> {
    let mut len = [0u8; 4];
    if let Err(e) = r.read_exact(&mut len).await {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtocolError::Closed
        } else {
            e.into()
        });
    }
    let len = check_len(u32::from_be_bytes(len))?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Frame::decode(body[0], &body[1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let frames = vec![
            Frame::Output {
                offset: 7,
                data: b"abc".to_vec(),
            },
            Frame::Ack(u64::MAX),
            Frame::Input(b"ls\r".to_vec()),
            Frame::Resize {
                rows: 40,
                cols: 120,
            },
            Frame::Signal(SignalKind::Kill),
            Frame::InputDropped(65_536),
            Frame::Exited(ExitInfo {
                exit_code: Some(3),
                signal: None,
                end_offset: 9,
            }),
        ];
        for f in frames {
            let bytes = f.encode();
            let back = read_frame(&mut &bytes[..]).expect("decode");
            assert_eq!(format!("{f:?}"), format!("{back:?}"));
        }
        // Oversized, empty, unknown kind, short payloads.
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            read_frame(&mut &huge[..]),
            Err(ProtocolError::TooLarge(_))
        ));
        assert!(matches!(
            read_frame(&mut &[0, 0, 0, 0][..]),
            Err(ProtocolError::TooLarge(0))
        ));
        assert!(matches!(
            read_frame(&mut &[0, 0, 0, 1, 99][..]),
            Err(ProtocolError::UnknownKind(99))
        ));
        assert!(matches!(
            read_frame(&mut &[0, 0, 0, 3, 5, 1, 2][..]),
            Err(ProtocolError::Malformed(5))
        ));
        assert!(matches!(
            read_frame(&mut &[0, 0, 0, 2, 8, 9][..]),
            Err(ProtocolError::Malformed(8))
        ));
        assert!(matches!(
            read_frame(&mut &[0, 0][..]),
            Err(ProtocolError::Closed)
        ));
    }

    #[test]
    fn debug_hides_the_secret_and_terminal_bytes() {
        let f = Frame::Hello(Hello {
            version: 1,
            secret: "deadbeefsecret".into(),
            session: "s".into(),
            boot_id: "b".into(),
            nonce: "n".into(),
        });
        assert!(!format!("{f:?}").contains("deadbeef"));
        let o = Frame::Output {
            offset: 0,
            data: b"AKIAXXXX".to_vec(),
        };
        assert!(!format!("{o:?}").contains("AKIA"));
    }
}
