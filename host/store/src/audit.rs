//! The tamper-evident event chain: the hash every event row stores, and the
//! offline check of a whole log (`happyx audit verify`, import, export).
//!
//! Each event `n` stores `hash_n`, lowercase hex of
//!
//! ```text
//! hash_n = SHA-256( "happyx-event-v1\n"
//!                   || hash_{n-1}                  (32 bytes)
//!                   || u64be(seq)
//!                   || lp(id) || i64be(at)
//!                   || lp(code) || lp(actor) || lp(subject) || lp(data) )
//! ```
//!
//! where `lp(x)` is `u32be(len(x)) || x` over the UTF-8 bytes, `data` is the
//! stored JSON text, and `hash_0` (the genesis value) is 32 zero bytes. The
//! hash is computed in the same transaction as the insert. Pruning deletes only
//! the oldest events and keeps the anchor: the `seq` and hash of the last
//! pruned event; the first remaining event must have `seq = anchor_seq + 1` and
//! chain from the anchor's hash. With no anchor the chain starts at seq 1 from
//! the genesis value.
//!
//! The chain shows any change, deletion, reordering or insertion inside the
//! log; removing the newest events is only visible against a published head
//! (`/public/evidence` shows it).

use sha2::{Digest, Sha256};

/// `hash_0`: where an unpruned chain starts.
pub const GENESIS: [u8; 32] = [0; 32];

/// Domain separator of the version-1 event hash.
const DOMAIN: &[u8] = b"happyx-event-v1\n";

/// The fields of one event that the chain covers, as stored.
#[derive(Clone, Copy)]
pub struct EventFields<'a> {
    pub seq: i64,
    pub id: &'a str,
    pub at: i64,
    pub code: &'a str,
    pub actor: &'a str,
    pub subject: &'a str,
    pub data: &'a str,
}

fn lp(h: &mut Sha256, s: &str) {
    h.update((s.len() as u32).to_be_bytes());
    h.update(s.as_bytes());
}

/// `hash_n` of `ev` chained to `prev` (see the module docs).
pub fn event_hash(prev: &[u8; 32], ev: &EventFields<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(prev);
    h.update((ev.seq as u64).to_be_bytes());
    lp(&mut h, ev.id);
    h.update(ev.at.to_be_bytes());
    lp(&mut h, ev.code);
    lp(&mut h, ev.actor);
    lp(&mut h, ev.subject);
    lp(&mut h, ev.data);
    h.finalize().into()
}

/// Parses a stored hash (64 lowercase or uppercase hex digits).
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Why the chain breaks at a `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// The event with this `seq` is missing (the next one has a higher `seq`).
    Missing,
    /// The event's stored hash is absent or not a hash.
    NoHash,
    /// The stored hash is not the hash of the event chained to the one before.
    Mismatch,
    /// The event is older than the anchor (it should have been pruned with it).
    BeforeAnchor,
    /// The anchor itself is malformed.
    BadAnchor,
}

impl Break {
    fn describe(self) -> &'static str {
        match self {
            Self::Missing => "the event is missing (deleted, or the log was renumbered)",
            Self::NoHash => "the stored hash is missing or malformed",
            Self::Mismatch => {
                "the stored hash does not match the event and the hash before it (changed, swapped or inserted)"
            }
            Self::BeforeAnchor => "the event is older than the prune anchor",
            Self::BadAnchor => "the prune anchor's hash is malformed",
        }
    }
}

/// The chain is broken; `seq` is the first bad one. Holds no stored values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the event chain is broken at seq {seq}: {}", .reason.describe())]
pub struct ChainError {
    pub seq: i64,
    pub reason: Break,
}

impl ChainError {
    pub fn code(&self) -> &'static str {
        "audit_chain_broken"
    }
}

/// What a successful check established.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainSummary {
    /// Events checked.
    pub events: u64,
    /// `seq` of the newest event (the anchor's when none remain).
    pub head_seq: i64,
    /// Hex hash of the newest event (the anchor's when none remain).
    pub head_hash: String,
    pub anchor_seq: i64,
    pub anchor_hash: String,
}

/// Checks a log fed oldest first, one event at a time.
#[derive(Debug)]
pub struct Verifier {
    anchor_seq: i64,
    anchor_hash: [u8; 32],
    prev: [u8; 32],
    next_seq: i64,
    events: u64,
}

impl Verifier {
    /// Starts after the anchor (`None`: nothing was pruned).
    pub fn new(anchor: Option<(i64, &str)>) -> Result<Self, ChainError> {
        let (seq, hash) = match anchor {
            None => (0, GENESIS),
            Some((seq, h)) => match parse_hash(h) {
                Some(h) if seq >= 0 => (seq, h),
                _ => {
                    return Err(ChainError {
                        seq: seq.max(0),
                        reason: Break::BadAnchor,
                    });
                }
            },
        };
        Ok(Self {
            anchor_seq: seq,
            anchor_hash: hash,
            prev: hash,
            next_seq: seq + 1,
            events: 0,
        })
    }

    /// Checks the next event against its stored hash.
    pub fn push(&mut self, ev: &EventFields<'_>, stored: Option<&str>) -> Result<(), ChainError> {
        if ev.seq < self.next_seq {
            return Err(ChainError {
                seq: ev.seq,
                reason: if ev.seq <= self.anchor_seq {
                    Break::BeforeAnchor
                } else {
                    Break::Mismatch
                },
            });
        }
        if ev.seq > self.next_seq {
            return Err(ChainError {
                seq: self.next_seq,
                reason: Break::Missing,
            });
        }
        let Some(stored) = stored.and_then(parse_hash) else {
            return Err(ChainError {
                seq: ev.seq,
                reason: Break::NoHash,
            });
        };
        if event_hash(&self.prev, ev) != stored {
            return Err(ChainError {
                seq: ev.seq,
                reason: Break::Mismatch,
            });
        }
        self.prev = stored;
        self.next_seq += 1;
        self.events += 1;
        Ok(())
    }

    /// Events checked so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn finish(self) -> ChainSummary {
        ChainSummary {
            events: self.events,
            head_seq: self.next_seq - 1,
            head_hash: hex::encode(self.prev),
            anchor_seq: self.anchor_seq,
            anchor_hash: hex::encode(self.anchor_hash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64, data: &str) -> EventFields<'_> {
        EventFields {
            seq,
            id: "e",
            at: 1,
            code: "c",
            actor: "a",
            subject: "s",
            data,
        }
    }

    fn chain(n: i64) -> Vec<(i64, String)> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|s| {
                prev = event_hash(&prev, &ev(s, "{}"));
                (s, hex::encode(prev))
            })
            .collect()
    }

    fn check(rows: &[(i64, &str, String)]) -> Result<ChainSummary, ChainError> {
        let mut v = Verifier::new(None)?;
        for (s, d, h) in rows {
            v.push(&ev(*s, d), Some(h))?;
        }
        Ok(v.finish())
    }

    #[test]
    fn a_fixed_vector_pins_the_definition() {
        let h = event_hash(&GENESIS, &ev(1, "{}"));
        // Recomputed by hand from the module docs' layout.
        let mut m = Vec::new();
        m.extend_from_slice(b"happyx-event-v1\n");
        m.extend_from_slice(&[0; 32]);
        m.extend_from_slice(&1u64.to_be_bytes());
        for (i, f) in ["e", "c", "a", "s", "{}"].iter().enumerate() {
            if i == 1 {
                m.extend_from_slice(&1i64.to_be_bytes());
            }
            m.extend_from_slice(&(f.len() as u32).to_be_bytes());
            m.extend_from_slice(f.as_bytes());
        }
        assert_eq!(h, <[u8; 32]>::from(Sha256::digest(&m)));
    }

    #[test]
    fn names_the_first_bad_seq() {
        let good: Vec<_> = chain(5).into_iter().map(|(s, h)| (s, "{}", h)).collect();
        assert_eq!(check(&good).map(|s| s.head_seq), Ok(5));
        let mut changed = good.clone();
        changed[2].1 = "{\"x\":1}";
        assert_eq!(check(&changed).map_err(|e| e.seq), Err(3));
        let mut deleted = good.clone();
        deleted.remove(1);
        assert_eq!(
            check(&deleted).map_err(|e| (e.seq, e.reason)),
            Err((2, Break::Missing))
        );
        let mut swapped = good.clone();
        swapped.swap(1, 3);
        swapped[1].0 = 2;
        swapped[3].0 = 4;
        assert_eq!(check(&swapped).map_err(|e| e.seq), Err(2));
        let mut nohash = good;
        nohash[4].2 = "zz".into();
        assert_eq!(
            check(&nohash).map_err(|e| (e.seq, e.reason)),
            Err((5, Break::NoHash))
        );
    }

    #[test]
    fn an_anchor_starts_the_chain_where_pruning_stopped() {
        let c = chain(4);
        let mut v = Verifier::new(Some((2, &c[1].1))).expect("anchor");
        v.push(&ev(3, "{}"), Some(&c[2].1)).expect("3");
        v.push(&ev(4, "{}"), Some(&c[3].1)).expect("4");
        let s = v.finish();
        assert_eq!((s.events, s.head_seq, s.anchor_seq), (2, 4, 2));
        let mut v = Verifier::new(Some((2, &c[1].1))).expect("anchor");
        assert_eq!(
            v.push(&ev(2, "{}"), Some(&c[1].1)).map_err(|e| e.reason),
            Err(Break::BeforeAnchor)
        );
        assert!(Verifier::new(Some((2, "nope"))).is_err());
    }
}
