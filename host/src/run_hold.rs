//! What of a live run's redacted output viewers may see yet.
//!
//! Run output is stored in chunks, each redacted together with the last
//! [`OVERLAP`](crate::runs::OVERLAP) bytes of the previous chunk of its stream; a
//! secret split across the boundary is found when the second chunk arrives, and
//! the stored masked copy of the first is then corrected. Until then the newest
//! chunk's overlap window may still change, so it is *held*: viewers of a live
//! run (`GET /v1/runs/{id}/output`, polled by `happyx runs logs --follow` and
//! the console) are served only up to the first held byte. A hold ends when
//! the next chunk of its stream is stored (after the correction), when
//! [`OUTPUT_HOLD`] passes with no more output on that stream, or when the run
//! ends. So a follower only ever sees a growing prefix of the final stored
//! output, and live and stored views mask the same bytes.
//!
//! The state is in memory and per host: a run this host is not executing is
//! either finished (everything is served) or not started yet (nothing is).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use happyx_core::vocab::OutputStream;

/// How long the newest chunk's overlap window is held back from live viewers when no more
/// output follows on its stream. It exceeds the wait of a partial chunk for more bytes
/// (`FLUSH_AFTER` in [`crate::runs`], 100 ms): a secret is split across two chunks only
/// when its writer pauses longer than that wait, and the hold must outlast such a pause.
/// The last bytes of a pausing run reach live viewers this much later than they are stored.
pub const OUTPUT_HOLD: Duration = Duration::from_millis(500);

/// How far a live run's output may be served: every chunk below `chunk` in full, then the
/// first `bytes` of chunk `chunk`, then nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Frontier {
    pub chunk: i64,
    pub bytes: usize,
}

/// What viewers of a run may be served now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// The run's output is final: all of it, as stored.
    Everything,
    /// The run is live: up to this point.
    UpTo(Frontier),
}

impl Served {
    /// Nothing at all (a live run with no output released yet).
    pub const NOTHING: Served = Served::UpTo(Frontier { chunk: 0, bytes: 0 });
}

struct Held {
    at: Frontier,
    /// `None`: pinned while the next chunk of its stream is being redacted and stored.
    until: Option<Instant>,
}

impl Held {
    fn active(&self, now: Instant) -> bool {
        self.until.is_none_or(|u| now < u)
    }
}

#[derive(Default)]
struct Live {
    /// Chunks stored so far (every index below is in the store).
    stored: i64,
    /// Per stream (stdout, stderr): the newest chunk's held overlap window.
    held: [Option<Held>; 2],
    /// Every chunk is stored and final.
    done: bool,
}

impl Live {
    fn served(&self, now: Instant) -> Served {
        if self.done {
            return Served::Everything;
        }
        let stored = Frontier {
            chunk: self.stored,
            bytes: 0,
        };
        let first_held = self
            .held
            .iter()
            .flatten()
            .filter(|h| h.active(now))
            .map(|h| h.at)
            .min();
        Served::UpTo(first_held.map_or(stored, |h| h.min(stored)))
    }
}

fn slot(stream: OutputStream) -> usize {
    usize::from(stream == OutputStream::Stderr)
}

/// The holds of every run this host is executing (shared by the runner and the API).
#[derive(Clone, Default)]
pub struct Holds {
    runs: Arc<Mutex<HashMap<String, Live>>>,
}

impl Holds {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        // The map holds no invariant a panic could break halfway.
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A run is about to execute: nothing of it is served until its chunks are stored.
    pub fn begin(&self, run_id: &str) {
        self.lock().insert(run_id.to_string(), Live::default());
    }

    /// A chunk of `stream` is about to be redacted: a hold still in force on that stream stays
    /// until the chunk is stored; one whose deadline passed stays released.
    pub fn next_chunk(&self, run_id: &str, stream: OutputStream) {
        self.next_chunk_at(run_id, stream, Instant::now());
    }

    fn next_chunk_at(&self, run_id: &str, stream: OutputStream, now: Instant) {
        if let Some(live) = self.lock().get_mut(run_id) {
            let held = &mut live.held[slot(stream)];
            match held {
                Some(h) if h.active(now) => h.until = None,
                _ => *held = None,
            }
        }
    }

    /// Chunk `index` of `stream` is stored (and the previous chunk of the stream corrected).
    /// `hold_from`: where its overlap window starts in its masked copy (`None`: nothing of it
    /// can change, e.g. it was withheld). Releases the stream's previous hold.
    pub fn stored(&self, run_id: &str, stream: OutputStream, index: i64, hold_from: Option<usize>) {
        self.stored_at(run_id, stream, index, hold_from, Instant::now());
    }

    fn stored_at(
        &self,
        run_id: &str,
        stream: OutputStream,
        index: i64,
        hold_from: Option<usize>,
        now: Instant,
    ) {
        if let Some(live) = self.lock().get_mut(run_id) {
            live.stored = live.stored.max(index + 1);
            live.held[slot(stream)] = hold_from.map(|bytes| Held {
                at: Frontier {
                    chunk: index,
                    bytes,
                },
                until: Some(now + OUTPUT_HOLD),
            });
        }
    }

    /// Every chunk of the run is stored: all of it may be served. Called before the run's
    /// final status is written, so a viewer that reads that status finds everything.
    pub fn finish(&self, run_id: &str) {
        if let Some(live) = self.lock().get_mut(run_id) {
            live.done = true;
            live.held = Default::default();
        }
    }

    /// The run's final status is written: forget it.
    pub fn end(&self, run_id: &str) {
        self.lock().remove(run_id);
    }

    /// What of the run may be served now; `None` when this host is not executing it. Read it
    /// before the run's status and output: a run whose status is then still live but that had
    /// no entry had not begun, so nothing of it may be served.
    pub fn served(&self, run_id: &str) -> Option<Served> {
        self.served_at(run_id, Instant::now())
    }

    fn served_at(&self, run_id: &str, now: Instant) -> Option<Served> {
        self.lock().get(run_id).map(|l| l.served(now))
    }
}

/// The prefix of a run's output that `served` allows. `chunks` are `(index, bytes a chunk
/// shows)` in index order.
pub fn served_prefix<'a>(
    served: Served,
    chunks: impl IntoIterator<Item = (i64, &'a [u8])>,
) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, bytes) in chunks {
        match served {
            Served::Everything => out.extend_from_slice(bytes),
            Served::UpTo(f) if index < f.chunk => out.extend_from_slice(bytes),
            Served::UpTo(f) if index == f.chunk => {
                out.extend_from_slice(&bytes[..f.bytes.min(bytes.len())]);
                break;
            }
            Served::UpTo(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up_to(chunk: i64, bytes: usize) -> Option<Served> {
        Some(Served::UpTo(Frontier { chunk, bytes }))
    }

    #[test]
    fn a_run_serves_nothing_until_its_first_chunk_is_stored() {
        let h = Holds::default();
        assert_eq!(h.served("r"), None, "not executing");
        h.begin("r");
        assert_eq!(h.served("r"), Some(Served::NOTHING));
    }

    #[test]
    fn the_newest_chunks_window_is_held_until_the_deadline_and_no_longer() {
        let h = Holds::default();
        h.begin("r");
        let t = Instant::now();
        h.stored_at("r", OutputStream::Stdout, 0, Some(6), t);
        assert_eq!(h.served_at("r", t), up_to(0, 6));
        let edge = t + OUTPUT_HOLD;
        assert_eq!(
            h.served_at("r", edge - Duration::from_millis(1)),
            up_to(0, 6)
        );
        assert_eq!(
            h.served_at("r", edge),
            up_to(1, 0),
            "released at the deadline"
        );
    }

    #[test]
    fn the_next_chunk_of_the_stream_releases_the_hold_and_holds_its_own() {
        let h = Holds::default();
        h.begin("r");
        let t = Instant::now();
        h.stored_at("r", OutputStream::Stdout, 0, Some(6), t);
        // The next chunk is being redacted past the deadline: the hold stays meanwhile.
        h.next_chunk_at("r", OutputStream::Stdout, t + Duration::from_millis(10));
        assert_eq!(h.served_at("r", t + OUTPUT_HOLD * 4), up_to(0, 6));
        h.stored_at("r", OutputStream::Stdout, 1, Some(0), t + OUTPUT_HOLD * 4);
        assert_eq!(h.served_at("r", t + OUTPUT_HOLD * 4), up_to(1, 0));
    }

    #[test]
    fn a_hold_past_its_deadline_is_not_taken_back() {
        let h = Holds::default();
        h.begin("r");
        let t = Instant::now();
        h.stored_at("r", OutputStream::Stdout, 0, Some(6), t);
        let late = t + OUTPUT_HOLD;
        assert_eq!(h.served_at("r", late), up_to(1, 0));
        h.next_chunk_at("r", OutputStream::Stdout, late);
        assert_eq!(
            h.served_at("r", late),
            up_to(1, 0),
            "what was served stays served"
        );
    }

    #[test]
    fn the_first_held_byte_of_either_stream_bounds_what_is_served() {
        let h = Holds::default();
        h.begin("r");
        let t = Instant::now();
        h.stored_at("r", OutputStream::Stdout, 0, Some(3), t);
        h.stored_at("r", OutputStream::Stderr, 1, Some(2), t);
        assert_eq!(h.served_at("r", t), up_to(0, 3));
        // A withheld chunk of stdout releases stdout's hold; stderr's still bounds.
        h.next_chunk_at("r", OutputStream::Stdout, t);
        h.stored_at("r", OutputStream::Stdout, 2, None, t);
        assert_eq!(h.served_at("r", t), up_to(1, 2));
        h.finish("r");
        assert_eq!(h.served_at("r", t), Some(Served::Everything));
        h.end("r");
        assert_eq!(h.served_at("r", t), None);
    }

    #[test]
    fn the_served_prefix_stops_at_the_frontier() {
        let chunks = [(0, &b"abc"[..]), (1, &b"def"[..]), (2, &b"gh"[..])];
        let cut = |s| String::from_utf8(served_prefix(s, chunks)).expect("utf-8");
        assert_eq!(cut(Served::Everything), "abcdefgh");
        assert_eq!(cut(Served::NOTHING), "");
        assert_eq!(cut(Served::UpTo(Frontier { chunk: 1, bytes: 2 })), "abcde");
        assert_eq!(
            cut(Served::UpTo(Frontier { chunk: 3, bytes: 0 })),
            "abcdefgh"
        );
        assert_eq!(
            cut(Served::UpTo(Frontier { chunk: 2, bytes: 9 })),
            "abcdefgh"
        );
    }
}
