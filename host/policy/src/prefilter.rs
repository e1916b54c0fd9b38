//! The redaction prefilter (`redaction.prefilter`, `happyx:policy` 0.3.0 and later): the
//! triggers a redactor declares once per load, validated against explicit limits and compiled
//! into one Aho-Corasick automaton, and the windowed scans that call the guest only around
//! trigger occurrences.
//!
//! It lives in the host because a native, vectorised multi-literal search is several times
//! faster than the same search compiled to WebAssembly, and most chunks contain no trigger
//! at all: those cost one search and no guest call. The plugin still owns its rules: it is
//! called on every window that may hold a match, and its findings are validated as usual.
//!
//! Two scans, by WIT version:
//! - [`Prefilter::scan_grouped`] (0.4.0): each window carries the groups of the triggers that
//!   made it, and every window of a chunk goes to the guest in one `redact-windows` call, which
//!   runs only those groups' rules on it. A secret-dense chunk then costs the guest a few
//!   rules over a few windows instead of every rule over the whole chunk.
//! - [`Prefilter::scan`] (0.3.0, no groups): each window is its own `redact` call with every
//!   rule; windows less than [`MERGE_GAP`] apart are merged to save calls, and a chunk whose
//!   windows would cost more than one whole call is scanned whole.
//!
//! **Fail closed.** A finding that touches an edge of its window that is not an edge of the
//! data may have been cut by the window (a key block or an unbounded run longer than the
//! declared bounds): the window is widened on that side by its own length, merged with any
//! window it now reaches, and scanned again, until no finding touches an inner edge or the
//! window is the whole data.

use std::cell::RefCell;
use std::fmt;
use std::ops::{ControlFlow, Range};

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};

use super::types::Finding;

/// Most triggers in one prefilter.
pub const MAX_TRIGGERS: usize = 1024;
/// Longest trigger literal, in bytes.
pub const MAX_TRIGGER_LEN: usize = 64;
/// Largest `before` or `after` bound of a trigger, in bytes.
pub const MAX_BOUND: u32 = 65_536;
/// Trigger groups are `0..MAX_GROUPS`: enough for a group per trigger.
pub const MAX_GROUPS: u32 = MAX_TRIGGERS as u32;
/// Windows closer than this are scanned as one: a guest call costs about as much as
/// scanning this many bytes in it.
pub const MERGE_GAP: usize = 1024;
/// When the windows would cost more guest calls and bytes than one call on the whole data
/// (each call counted as [`MERGE_GAP`] bytes), the data is scanned whole: same findings,
/// fewer calls.
const CALL_COST_BYTES: usize = MERGE_GAP;

thread_local! {
    /// The lowercased copy of the data a folding prefilter searches, kept for the thread's
    /// next search: a chunk is searched once or twice per redaction, and allocating and
    /// freeing a chunk-sized copy each time showed in profiles.
    static FOLDED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Largest lowercased copy kept for the next search on a thread; a larger one is freed.
const KEEP_FOLDED: usize = 1 << 20;

/// One trigger as the plugin declared it (`redaction.trigger`).
#[derive(Clone, PartialEq, Eq)]
pub struct TriggerSpec {
    pub literal: Vec<u8>,
    pub ascii_case_insensitive: bool,
    pub before: u32,
    pub after: u32,
    /// The rule group the trigger stands for (0 for a 0.3.0 plugin, which has none).
    pub group: u32,
}

// Literals may be operator-configured secrets (a redactor's extra literals): never shown.
impl fmt::Debug for TriggerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TriggerSpec")
            .field("literal_len", &self.literal.len())
            .field("ascii_case_insensitive", &self.ascii_case_insensitive)
            .field("before", &self.before)
            .field("after", &self.after)
            .field("group", &self.group)
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
    group: u32,
    same_start: Vec<usize>,
}

/// A window of a chunk for a grouped scan: `data[range]`, and the sorted, distinct groups
/// whose triggers occur in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub range: Range<usize>,
    pub groups: Vec<u32>,
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
            if t.group >= MAX_GROUPS {
                return Err(format!(
                    "prefilter trigger {i} has group {}, outside 0..{MAX_GROUPS}",
                    t.group
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
                group: t.group,
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

    /// Calls `f(start, trigger)` for every trigger occurrence in `data`, in order of start,
    /// until it breaks.
    fn each_occurrence(&self, data: &[u8], f: impl FnMut(usize, &Trigger) -> ControlFlow<()>) {
        if !self.fold {
            return self.search(data, data, f);
        }
        FOLDED.with(|cell| match cell.try_borrow_mut() {
            Ok(mut folded) => {
                folded.clear();
                // one pass, copy and fold (vectorised)
                folded.extend(data.iter().map(u8::to_ascii_lowercase));
                self.search(&folded, data, f);
                if folded.capacity() > KEEP_FOLDED {
                    *folded = Vec::new();
                }
            }
            Err(_) => self.search(&data.to_ascii_lowercase(), data, f),
        })
    }

    /// [`Self::each_occurrence`] over `hay`, which is `data` or its lowercased copy.
    fn search(
        &self,
        hay: &[u8],
        data: &[u8],
        mut f: impl FnMut(usize, &Trigger) -> ControlFlow<()>,
    ) {
        let mut at = 0;
        while at < hay.len() {
            let Some(m) = self.automaton.find(Input::new(hay).span(at..hay.len())) else {
                break;
            };
            let s = m.start();
            let candidates = self
                .triggers
                .get(m.pattern().as_usize())
                .map_or(&[][..], |t| t.same_start.as_slice());
            for t in candidates.iter().filter_map(|&j| self.triggers.get(j)) {
                let end = s + t.pattern.len();
                if hay.get(s..end) != Some(t.pattern.as_slice()) {
                    continue;
                }
                if let Some(exact) = &t.exact
                    && data.get(s..end) != Some(exact.as_slice())
                {
                    continue;
                }
                if f(s, t).is_break() {
                    return;
                }
            }
            at = s + 1;
        }
    }

    /// Whether any trigger occurs in `data`: the search stops at the first occurrence.
    pub fn occurs_in(&self, data: &[u8]) -> bool {
        let mut found = false;
        self.each_occurrence(data, |_, _| {
            found = true;
            ControlFlow::Break(())
        });
        found
    }

    /// Every trigger occurrence in `data` as its window (clamped to the data) and group, in
    /// order of occurrence; an occurrence whose window lies within the previous one of the same
    /// group extends it instead of adding one.
    fn occurrences(&self, data: &[u8]) -> Vec<(Range<usize>, u32)> {
        let mut raw: Vec<(Range<usize>, u32)> = Vec::new();
        self.each_occurrence(data, |s, t| {
            let start = s.saturating_sub(t.before);
            let end = (s + t.pattern.len())
                .saturating_add(t.after)
                .min(data.len());
            match raw.last_mut() {
                Some((last, g)) if *g == t.group && start <= last.end && start >= last.start => {
                    last.end = last.end.max(end)
                }
                _ => raw.push((start..end, t.group)),
            }
            ControlFlow::Continue(())
        });
        raw
    }

    /// The windows of `data` around every trigger occurrence, merged: sorted, disjoint and
    /// not adjacent. Empty when no trigger occurs.
    pub fn windows(&self, data: &[u8]) -> Vec<Range<usize>> {
        merge(self.occurrences(data).into_iter().map(|(w, _)| w).collect())
    }

    /// The windows of a grouped scan: those around every trigger occurrence, each with its
    /// trigger's group, merged where they overlap or touch (their groups too). Sorted and
    /// disjoint, with a gap between any two; empty when no trigger occurs.
    pub fn grouped_windows(&self, data: &[u8]) -> Vec<Window> {
        merge_grouped(
            self.occurrences(data)
                .into_iter()
                .map(|(range, g)| (range, std::iter::once(g)))
                .collect(),
        )
    }

    /// The findings of a grouped scan of `data` (0.4.0, `redact-windows`), in data offsets,
    /// sorted by `(start, end)`. `scan` gets every window still to scan at once (it may
    /// borrow their groups, and must give them back) and returns validated findings in data
    /// offsets, each inside one of the windows it was given (the caller checks that:
    /// [`inside`]). A window a finding touches at an inner edge is widened by its own length
    /// on that side, merged with every window it now overlaps or touches (scanned ones are
    /// scanned again, with their groups), and scanned again in the next call; calls go on
    /// until no finding touches an inner edge.
    pub fn scan_grouped<E>(
        &self,
        data: &[u8],
        scan: impl FnMut(&mut [Window]) -> Result<Vec<Finding>, E>,
    ) -> Result<Vec<Finding>, E> {
        scan_grouped_from(data, self.grouped_windows(data), scan)
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
            let cut = found.iter().map(|f| (f.start + w.start, f.end + w.start));
            if let Some(range) = widen(&w, cut, data.len()) {
                next = Some(range);
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

/// [`Prefilter::scan_grouped`] from `windows`, the [`Prefilter::grouped_windows`] of `data`
/// computed beforehand (the native search can run on one thread and the guest calls on
/// another).
pub fn scan_grouped_from<E>(
    data: &[u8],
    windows: Vec<Window>,
    mut scan: impl FnMut(&mut [Window]) -> Result<Vec<Finding>, E>,
) -> Result<Vec<Finding>, E> {
    let mut todo = windows;
    let mut done: Vec<(Window, Vec<Finding>)> = Vec::new();
    while !todo.is_empty() {
        let mut found = scan(&mut todo)?;
        found.sort_by_key(|f| (f.start, f.end));
        // The findings of window `w`: those starting in it (each lies inside its window).
        let of = |w: &Window| {
            let lo = found.partition_point(|f| f.start < w.range.start);
            let hi = found.partition_point(|f| f.start < w.range.end);
            &found[lo..hi]
        };
        let cut = |w: &Window| widen(&w.range, of(w).iter().map(|f| (f.start, f.end)), data.len());
        // The common case, a first answer that cuts no window, is the whole answer.
        if done.is_empty() && todo.iter().all(|w| cut(w).is_none()) {
            return Ok(found);
        }
        let mut widened = Vec::new();
        for mut w in todo {
            match cut(&w) {
                Some(range) => {
                    w.range = range;
                    widened.push(w);
                }
                None => {
                    let mine = of(&w).to_vec();
                    done.push((w, mine));
                }
            }
        }
        // Widened windows take in every window they now reach, until none reaches another:
        // scanned windows are dropped with their findings and scanned again.
        todo = loop {
            let merged = merge_grouped(widened.into_iter().map(|w| (w.range, w.groups)).collect());
            let before = done.len();
            let mut absorbed = Vec::new();
            done.retain(|(d, _)| {
                let reached = merged
                    .iter()
                    .any(|m| d.range.start <= m.range.end && m.range.start <= d.range.end);
                if reached {
                    absorbed.push(d.clone());
                }
                !reached
            });
            if done.len() == before {
                break merged;
            }
            widened = merged;
            widened.extend(absorbed);
        };
    }
    let mut out: Vec<Finding> = done.into_iter().flat_map(|(_, found)| found).collect();
    out.sort_by_key(|f| (f.start, f.end));
    Ok(out)
}

/// The window `w` of data `len` bytes long, widened by its own length on each side that a
/// finding (`(start, end)` in data offsets) touches and that is not an edge of the data;
/// `None` when no finding touches an inner edge (see the module docs: fail closed).
fn widen(
    w: &Range<usize>,
    found: impl IntoIterator<Item = (usize, usize)>,
    len: usize,
) -> Option<Range<usize>> {
    let (mut cut_start, mut cut_end) = (false, false);
    for (start, end) in found {
        cut_start |= w.start > 0 && start == w.start;
        cut_end |= w.end < len && end >= w.end;
    }
    if !(cut_start || cut_end) {
        return None;
    }
    let grow = w.len().max(1);
    let start = if cut_start {
        w.start.saturating_sub(grow)
    } else {
        w.start
    };
    let end = if cut_end {
        w.end.saturating_add(grow).min(len)
    } else {
        w.end
    };
    tracing::trace!(start, end, "prefilter window widened");
    Some(start..end)
}

/// Whether every finding lies inside one of `windows` (sorted and disjoint): what a grouped
/// scan's guest must answer.
pub fn inside(findings: &[Finding], windows: &[Window]) -> bool {
    findings.iter().all(|f| {
        let i = windows.partition_point(|w| w.range.end <= f.start);
        windows
            .get(i)
            .is_some_and(|w| w.range.start <= f.start && f.end <= w.range.end)
    })
}

/// Sorts `windows` (ranges and their groups) and merges those that overlap or touch, with
/// their groups (sorted, distinct). A groups list is made per merged window, not per item: a
/// secret-dense chunk has dozens of trigger occurrences, each an item.
fn merge_grouped<G: IntoIterator<Item = u32>>(mut windows: Vec<(Range<usize>, G)>) -> Vec<Window> {
    windows.sort_by_key(|(range, _)| range.start);
    let mut out: Vec<Window> = Vec::with_capacity(windows.len());
    for (range, groups) in windows {
        match out.last_mut() {
            Some(last) if range.start <= last.range.end => {
                last.range.end = last.range.end.max(range.end);
                last.groups.extend(groups);
            }
            _ => out.push(Window {
                range,
                groups: groups.into_iter().collect(),
            }),
        }
    }
    for w in &mut out {
        w.groups.sort_unstable();
        w.groups.dedup();
    }
    out
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
        grouped(lit, nocase, before, after, 0)
    }

    fn grouped(lit: &str, nocase: bool, before: u32, after: u32, group: u32) -> TriggerSpec {
        TriggerSpec {
            literal: lit.as_bytes().to_vec(),
            ascii_case_insensitive: nocase,
            before,
            after,
            group,
        }
    }

    fn window(range: Range<usize>, groups: &[u32]) -> Window {
        Window {
            range,
            groups: groups.to_vec(),
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
        assert!(Prefilter::build(&[grouped("a", false, 0, 0, MAX_GROUPS - 1)]).is_ok());
        let e = Prefilter::build(&[grouped("a", false, 0, 0, MAX_GROUPS)]).unwrap_err();
        assert!(
            e.contains("trigger 0 has group 1024, outside 0..1024"),
            "{e}"
        );
    }

    #[test]
    fn grouped_windows_keep_their_groups_and_merge_only_where_they_touch() {
        let p = Prefilter::build(&[
            grouped("KEY", false, 2, 3, 4),
            grouped("token", true, 1, 1, 1),
            // the same literal for a second group
            grouped("KEY", false, 0, 10, 2),
        ])
        .unwrap();
        assert!(p.grouped_windows(b"nothing at all").is_empty());
        assert!(!p.occurs_in(b"nothing at all, not even a key"));
        assert!(p.occurs_in(b"the last word is a ToKeN"));
        assert!(p.occurs_in(b"KEY"));
        assert_eq!(p.grouped_windows(b"..KEY"), vec![window(0..5, &[2, 4])]);
        assert_eq!(
            p.grouped_windows(b"....KEY.............."),
            vec![window(2..17, &[2, 4])]
        );
        // apart by one byte: two windows, each with its own groups
        assert_eq!(
            p.grouped_windows(b"TOKEN.x.TOKEN"),
            vec![window(0..6, &[1]), window(7..13, &[1])]
        );
        // touching: one window
        assert_eq!(
            p.grouped_windows(b"TOKEN..TOKEN"),
            vec![window(0..12, &[1])]
        );
        let far = format!("ToKeN{}KEY", ".".repeat(40));
        assert_eq!(
            p.grouped_windows(far.as_bytes()),
            vec![window(0..6, &[1]), window(43..48, &[2, 4])]
        );
        // the ungrouped windows of the same data merge across MERGE_GAP, as before
        assert_eq!(p.windows(far.as_bytes()), vec![0..48]);
    }

    #[test]
    fn a_grouped_scan_widens_a_cut_window_and_rescans_what_it_reaches() {
        // BEGIN..END blocks (group 0) and short `pin` findings (group 1).
        let p = Prefilter::build(&[
            grouped("BEGIN", false, 1, 4, 0),
            grouped("pin", false, 0, 4, 1),
        ])
        .unwrap();
        let mut data = b"xxxxxxxxxx BEGIN ".to_vec();
        data.extend(std::iter::repeat_n(b'k', 100));
        data.extend_from_slice(b" END yy pin123 yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy");
        let mut calls: Vec<Vec<Window>> = Vec::new();
        let found = p
            .scan_grouped(
                &data,
                |windows: &mut [Window]| -> Result<Vec<Finding>, ()> {
                    calls.push(windows.to_vec());
                    let mut out = Vec::new();
                    for w in windows.iter() {
                        let text = &data[w.range.clone()];
                        if w.groups.contains(&0)
                            && let Some(s) = text.windows(5).position(|x| x == b"BEGIN")
                        {
                            let end = text[s..]
                                .windows(3)
                                .position(|x| x == b"END")
                                .map_or(text.len(), |e| s + e + 3);
                            out.push(Finding {
                                rule: "block".into(),
                                start: w.range.start + s,
                                end: w.range.start + end,
                            });
                        }
                        if w.groups.contains(&1)
                            && let Some(s) = text.windows(3).position(|x| x == b"pin")
                        {
                            out.push(Finding {
                                rule: "pin".into(),
                                start: w.range.start + s,
                                end: w.range.start + (s + 6).min(text.len()),
                            });
                        }
                    }
                    assert!(inside(&out, windows));
                    Ok(out)
                },
            )
            .unwrap();
        let block_end = data.windows(3).position(|x| x == b"END").unwrap() + 3;
        let pin = data.windows(3).position(|x| x == b"pin").unwrap();
        assert_eq!(
            found,
            vec![
                Finding {
                    rule: "block".into(),
                    start: 11,
                    end: block_end
                },
                Finding {
                    rule: "pin".into(),
                    start: pin,
                    end: pin + 6
                },
            ]
        );
        // First call: both windows at once; the block's window is cut and widened until it
        // reaches END, taking in the `pin` window, which is scanned again with it.
        assert_eq!(calls[0].len(), 2, "{calls:?}");
        assert!(calls.len() > 2, "{calls:?}");
        let last = calls.last().unwrap();
        assert_eq!(last.len(), 1, "{calls:?}");
        assert_eq!(last[0].groups, vec![0, 1]);
        assert!(last[0].range.end > pin + 6);
    }

    #[test]
    fn the_kept_lowercased_copy_never_carries_one_search_into_the_next() {
        let p = Prefilter::build(&[trigger("token", true, 0, 0)]).unwrap();
        // Larger than the copy a thread keeps, with the trigger at its very end.
        let mut big = vec![b'x'; KEEP_FOLDED + 10];
        big.extend_from_slice(b"TOKEN");
        assert_eq!(p.windows(&big), vec![big.len() - 5..big.len()]);
        // A shorter search after a longer one sees none of the longer data's bytes.
        assert!(p.windows(b"xxxxx").is_empty());
        assert!(!p.occurs_in(b"tok"));
        assert_eq!(p.windows(b"a Token"), vec![2..7]);
        assert!(p.occurs_in(b"tOkEn"));
    }

    #[test]
    fn inside_refuses_a_finding_outside_or_across_its_windows() {
        let ws = [window(2..5, &[0]), window(8..12, &[0])];
        let f = |start, end| Finding {
            rule: "r".into(),
            start,
            end,
        };
        assert!(inside(&[f(2, 5), f(8, 9), f(11, 12)], &ws));
        assert!(!inside(&[f(1, 3)], &ws));
        assert!(!inside(&[f(4, 9)], &ws));
        assert!(!inside(&[f(5, 6)], &ws));
        assert!(!inside(&[f(12, 13)], &ws));
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
