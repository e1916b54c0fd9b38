//! The redaction prefilter of `happyx:policy@0.3.0` (`redaction.prefilter`): the triggers a
//! redactor declares once per load, validated against explicit limits and compiled into one
//! Aho-Corasick automaton, and the windowed scan that calls the guest only around trigger
//! occurrences.
//!
//! It lives in the host because a native, vectorised multi-literal search is several times
//! faster than the same search compiled to WebAssembly, and most chunks contain no trigger
//! at all: those cost one search and no guest call. The plugin still owns its rules: it is
//! called on every window that may hold a match, and its findings are validated as usual.
//!
//! **Fail closed.** A finding that touches an edge of its window that is not an edge of the
//! data may have been cut by the window (a key block or an unbounded run longer than the
//! declared bounds): the window is widened on that side by its own length, merged with any
//! window it now reaches, and scanned again, until no finding touches an inner edge or the
//! window is the whole data.

use std::fmt;
use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};

use super::types::Finding;

/// Most triggers in one prefilter.
pub const MAX_TRIGGERS: usize = 1024;
/// Longest trigger literal, in bytes.
pub const MAX_TRIGGER_LEN: usize = 64;
/// Largest `before` or `after` bound of a trigger, in bytes.
pub const MAX_BOUND: u32 = 65_536;
/// Windows closer than this are scanned as one: a guest call costs about as much as
/// scanning this many bytes in it.
pub const MERGE_GAP: usize = 1024;
/// When the windows would cost more guest calls and bytes than one call on the whole data
/// (each call counted as [`MERGE_GAP`] bytes), the data is scanned whole: same findings,
/// fewer calls.
const CALL_COST_BYTES: usize = MERGE_GAP;

/// One trigger as the plugin declared it (`redaction.trigger`).
#[derive(Clone, PartialEq, Eq)]
pub struct TriggerSpec {
    pub literal: Vec<u8>,
    pub ascii_case_insensitive: bool,
    pub before: u32,
    pub after: u32,
}

// Literals may be operator-configured secrets (a redactor's extra literals): never shown.
impl fmt::Debug for TriggerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TriggerSpec")
            .field("literal_len", &self.literal.len())
            .field("ascii_case_insensitive", &self.ascii_case_insensitive)
            .field("before", &self.before)
            .field("after", &self.after)
            .finish()
    }
}

/// A compiled trigger: the pattern the automaton searches for, its bounds, the exact bytes
/// to check when the automaton searched a lowercased copy for a case-sensitive trigger, and
/// the triggers that may occur at the same position (one is a prefix of the other).
struct Trigger {
    pattern: Vec<u8>,
    exact: Option<Vec<u8>>,
    before: usize,
    after: usize,
    same_start: Vec<usize>,
}

/// A validated, compiled prefilter.
pub struct Prefilter {
    automaton: AhoCorasick,
    triggers: Vec<Trigger>,
    /// The automaton searches an ASCII-lowercased copy of the data (some trigger is case
    /// insensitive): a case-insensitive automaton gets no vectorised prefilter, a
    /// lowercased one does.
    fold: bool,
}

impl fmt::Debug for Prefilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prefilter")
            .field("triggers", &self.triggers.len())
            .field("fold", &self.fold)
            .finish()
    }
}

impl Prefilter {
    /// Validates `specs` and compiles them; the reason a spec is refused names the trigger by
    /// index, never its bytes.
    pub fn build(specs: &[TriggerSpec]) -> Result<Prefilter, String> {
        if specs.is_empty() {
            return Err("prefilter has no triggers (return none for no prefilter)".into());
        }
        if specs.len() > MAX_TRIGGERS {
            return Err(format!(
                "prefilter has {} triggers, more than {MAX_TRIGGERS}",
                specs.len()
            ));
        }
        for (i, t) in specs.iter().enumerate() {
            if t.literal.is_empty() || t.literal.len() > MAX_TRIGGER_LEN {
                return Err(format!(
                    "prefilter trigger {i} is {} bytes long, outside 1..={MAX_TRIGGER_LEN}",
                    t.literal.len()
                ));
            }
            if t.before > MAX_BOUND || t.after > MAX_BOUND {
                return Err(format!(
                    "prefilter trigger {i} has bounds before {} after {}, above {MAX_BOUND}",
                    t.before, t.after
                ));
            }
        }
        let fold = specs.iter().any(|t| t.ascii_case_insensitive);
        let patterns: Vec<Vec<u8>> = specs
            .iter()
            .map(|t| {
                if fold {
                    t.literal.to_ascii_lowercase()
                } else {
                    t.literal.clone()
                }
            })
            .collect();
        // Leftmost-first, for the vectorised (Teddy) prefilter a standard automaton lacks;
        // every occurrence is still seen: the search resumes one byte after each start, and
        // the triggers that may share that start are checked there.
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)
            .map_err(|e| format!("prefilter triggers do not compile: {e}"))?;
        let triggers = specs
            .iter()
            .zip(&patterns)
            .map(|(t, pattern)| Trigger {
                pattern: pattern.clone(),
                exact: (fold && !t.ascii_case_insensitive).then(|| t.literal.clone()),
                before: t.before as usize,
                after: t.after as usize,
                same_start: patterns
                    .iter()
                    .enumerate()
                    .filter(|(_, q)| q.starts_with(pattern) || pattern.starts_with(q))
                    .map(|(j, _)| j)
                    .collect(),
            })
            .collect();
        Ok(Prefilter {
            automaton,
            triggers,
            fold,
        })
    }

    /// The windows of `data` around every trigger occurrence, merged: sorted, disjoint and
    /// not adjacent. Empty when no trigger occurs.
    pub fn windows(&self, data: &[u8]) -> Vec<Range<usize>> {
        let folded;
        let hay: &[u8] = if self.fold {
            folded = data.to_ascii_lowercase();
            &folded
        } else {
            data
        };
        let mut raw: Vec<Range<usize>> = Vec::new();
        let mut at = 0;
        while at < hay.len() {
            let Some(m) = self.automaton.find(Input::new(hay).span(at..hay.len())) else {
                break;
            };
            let s = m.start();
            let group = self
                .triggers
                .get(m.pattern().as_usize())
                .map_or(&[][..], |t| t.same_start.as_slice());
            for t in group.iter().filter_map(|&j| self.triggers.get(j)) {
                let end = s + t.pattern.len();
                if hay.get(s..end) != Some(t.pattern.as_slice()) {
                    continue;
                }
                if let Some(exact) = &t.exact
                    && data.get(s..end) != Some(exact.as_slice())
                {
                    continue;
                }
                let start = s.saturating_sub(t.before);
                let end = end.saturating_add(t.after).min(data.len());
                match raw.last_mut() {
                    Some(last) if start <= last.end && start >= last.start => {
                        last.end = last.end.max(end)
                    }
                    _ => raw.push(start..end),
                }
            }
            at = s + 1;
        }
        merge(raw)
    }

    /// The findings of `scan` over the windows of `data`, in data offsets, sorted by
    /// `(start, end)`. `scan` gets each window as if it were the whole data and returns
    /// validated findings relative to it. A window a finding touches at an inner edge is
    /// widened and scanned again (see the module docs).
    pub fn scan<E>(
        &self,
        data: &[u8],
        mut scan: impl FnMut(&[u8]) -> Result<Vec<Finding>, E>,
    ) -> Result<Vec<Finding>, E> {
        let windows = self.windows(data);
        let window_cost: usize = windows.iter().map(|w| w.len() + CALL_COST_BYTES).sum();
        if windows.len() > 1 && window_cost >= data.len() + CALL_COST_BYTES {
            return scan(data);
        }
        let mut pending = windows.into_iter().peekable();
        let mut done: Vec<(Range<usize>, Vec<Finding>)> = Vec::new();
        let mut next = pending.next();
        while let Some(mut w) = next.take() {
            // A widened window absorbs every window it now reaches, scanned or not.
            while let Some((last, _)) = done.last() {
                if last.end < w.start {
                    break;
                }
                w.start = w.start.min(last.start);
                done.pop();
            }
            while let Some(p) = pending.peek() {
                if p.start > w.end {
                    break;
                }
                w.end = w.end.max(p.end);
                pending.next();
            }
            let found = scan(&data[w.clone()])?;
            let len = w.len();
            let cut_start = w.start > 0 && found.iter().any(|f| f.start == 0);
            let cut_end = w.end < data.len() && found.iter().any(|f| f.end >= len);
            if cut_start || cut_end {
                let grow = len.max(1);
                if cut_start {
                    w.start = w.start.saturating_sub(grow);
                }
                if cut_end {
                    w.end = w.end.saturating_add(grow).min(data.len());
                }
                tracing::trace!(start = w.start, end = w.end, "prefilter window widened");
                next = Some(w);
                continue;
            }
            done.push((w, found));
            next = pending.next();
        }
        Ok(done
            .into_iter()
            .flat_map(|(w, found)| {
                found.into_iter().map(move |f| Finding {
                    rule: f.rule,
                    start: f.start + w.start,
                    end: f.end + w.start,
                })
            })
            .collect())
    }
}

/// Sorts `windows` and merges the overlapping ones and those less than [`MERGE_GAP`] apart.
fn merge(mut windows: Vec<Range<usize>>) -> Vec<Range<usize>> {
    windows.sort_by_key(|w| w.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(windows.len());
    for w in windows {
        match out.last_mut() {
            Some(last) if w.start < last.end.saturating_add(MERGE_GAP) => {
                last.end = last.end.max(w.end)
            }
            _ => out.push(w),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(lit: &str, nocase: bool, before: u32, after: u32) -> TriggerSpec {
        TriggerSpec {
            literal: lit.as_bytes().to_vec(),
            ascii_case_insensitive: nocase,
            before,
            after,
        }
    }

    #[test]
    fn every_limit_is_refused_one_past_its_edge() {
        let at_limit = vec![trigger("a", false, MAX_BOUND, MAX_BOUND); MAX_TRIGGERS];
        assert!(Prefilter::build(&at_limit).is_ok());
        let mut over = at_limit.clone();
        over.push(trigger("a", false, 0, 0));
        let e = Prefilter::build(&over).unwrap_err();
        assert!(e.contains("more than 1024"), "{e}");

        assert!(Prefilter::build(&[]).unwrap_err().contains("no triggers"));
        let e = Prefilter::build(&[trigger("", false, 0, 0)]).unwrap_err();
        assert!(e.contains("trigger 0 is 0 bytes"), "{e}");
        let long = "x".repeat(MAX_TRIGGER_LEN);
        assert!(Prefilter::build(&[trigger(&long, false, 0, 0)]).is_ok());
        let e = Prefilter::build(&[
            trigger("ok", true, 1, 1),
            trigger(&format!("{long}y"), false, 0, 0),
        ])
        .unwrap_err();
        assert!(e.contains("trigger 1 is 65 bytes"), "{e}");
        assert!(
            !e.contains("xxx"),
            "the reason never quotes the literal: {e}"
        );
        for (before, after) in [(MAX_BOUND + 1, 0), (0, MAX_BOUND + 1)] {
            let e = Prefilter::build(&[trigger("a", false, before, after)]).unwrap_err();
            assert!(e.contains("above 65536"), "{e}");
        }
    }

    #[test]
    fn windows_are_clamped_merged_and_respect_case() {
        let p =
            Prefilter::build(&[trigger("KEY", false, 2, 3), trigger("token", true, 1, 1)]).unwrap();
        assert!(p.windows(b"nothing here, not even a key").is_empty());
        assert_eq!(p.windows(b"KEY"), vec![0..3]);
        assert_eq!(p.windows(b"....KEY......"), vec![2..10]);
        // overlapping and adjacent windows merge; a case-insensitive trigger in any case
        assert_eq!(p.windows(b"KEY..ToKeN......KEY"), vec![0..19]);
        let gap = |n: usize| format!("KEY{}TOKEN", ".".repeat(n));
        // windows 0..6 and (n + 2)..(n + 8): merged while less than MERGE_GAP apart
        assert_eq!(
            p.windows(gap(MERGE_GAP + 3).as_bytes()),
            vec![0..MERGE_GAP + 11]
        );
        assert_eq!(
            p.windows(gap(MERGE_GAP + 4).as_bytes()),
            vec![0..6, MERGE_GAP + 6..MERGE_GAP + 12]
        );
        // overlapping occurrences of different triggers all count
        let q = Prefilter::build(&[trigger("ab", false, 0, 0), trigger("abcd", false, 0, 2000)])
            .unwrap();
        assert_eq!(
            q.windows(format!("xabcd{}", "y".repeat(3000)).as_bytes()),
            vec![1..2005]
        );
        let r = Prefilter::build(&[trigger("bcd", false, 0, 2000), trigger("abc", false, 0, 0)])
            .unwrap();
        assert_eq!(
            r.windows(format!("abcd{}", "y".repeat(3000)).as_bytes()),
            vec![0..2004]
        );
        // a case-sensitive trigger next to a case-insensitive one matches only its own case
        assert!(p.windows(b"the key to it").is_empty());
        let dbg = format!("{:?}", trigger("hunter2", false, 0, 0));
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }

    #[test]
    fn a_finding_at_an_inner_edge_widens_its_window_until_it_does_not() {
        let p = Prefilter::build(&[trigger("BEGIN", false, 1, 4)]).unwrap();
        let mut data = b"xxxxxxxxxx BEGIN ".to_vec();
        data.extend(std::iter::repeat_n(b'k', 100));
        data.extend_from_slice(b" END yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy");
        // A "rule" from BEGIN through END, or to the end of what it is given.
        let mut calls = Vec::new();
        let found = p
            .scan(&data, |w: &[u8]| -> Result<Vec<Finding>, ()> {
                calls.push(w.len());
                let Some(s) = w.windows(5).position(|x| x == b"BEGIN") else {
                    return Ok(Vec::new());
                };
                let end = w[s..]
                    .windows(3)
                    .position(|x| x == b"END")
                    .map_or(w.len(), |e| s + e + 3);
                Ok(vec![Finding {
                    rule: "block".into(),
                    start: s,
                    end,
                }])
            })
            .unwrap();
        let start = 11;
        let end = data.windows(3).position(|x| x == b"END").unwrap() + 3;
        assert_eq!(
            found,
            vec![Finding {
                rule: "block".into(),
                start,
                end
            }]
        );
        assert!(calls.len() > 2, "widened: {calls:?}");
        assert!(calls.windows(2).all(|c| c[0] < c[1]), "{calls:?}");
    }
}
