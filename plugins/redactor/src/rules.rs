//! The secret-detection rules of the sample redactor, as plain Rust.
//!
//! This module has no WIT bindings in it, so the host's native benchmark can
//! compile the very same rules (`#[path]` include) and compare them with the
//! WASM build.
//!
//! Each rule searches the data on its own, from the places its matches may
//! start ([`Start`]): a single literal is left to the regex engine's
//! prefilter (a vectorised substring search); a rule that starts with one of
//! several literals or words — which the engine would find with a
//! multi-literal search, fast with x86 SIMD but slow in WebAssembly — is
//! searched from a vectorised search for one byte (its prefixes' first byte,
//! or the `:` and `=` of an assignment) and its regex is tried anchored at
//! each candidate only, with one byte of left context for `\b`. That yields
//! exactly the matches of an unanchored left-to-right search (checked by the
//! host's `redactor_rules` test). Every regex is byte-oriented and
//! ASCII-only (`unicode(false)`), so arbitrary bytes are fine and the lazy DFA
//! never falls back on non-ASCII input.
//!
//! A rule masks either its whole match or only one capture group (the value of
//! `password=...`, the userinfo of `https://user:pass@host`). Capture searches
//! are the costliest part of a scan, so a rule whose masked group is simply
//! what follows the match's last whitespace (`Bearer <token>`) is searched
//! without one, and an anchored rule without a group is tried with a plain
//! DFA search.

use regex::bytes::{Regex, RegexBuilder};

/// How a rule finds the places its matches may start.
#[derive(Clone, Copy)]
enum Start {
    /// The regex engine's own prefilter (a single literal: a vectorised
    /// substring search).
    Engine,
    /// Every match is one of these words (ASCII case-insensitive), an
    /// optional quote, whitespace, then `:` or `=`: searched from each `:`
    /// and `=` back to the word.
    Assign(&'static [&'static str]),
    /// Every match starts with one of these prefixes (ASCII case-insensitive
    /// when `nocase`), which share their first byte: searched from each
    /// occurrence of that byte.
    Prefix {
        prefixes: &'static [&'static str],
        nocase: bool,
    },
}

/// One rule: a stable name, a pattern and which part of a match is secret.
struct RuleDef {
    name: &'static str,
    pattern: &'static str,
    /// `Some(i)`: mask only capture group `i`; `None`: mask the whole match.
    group: Option<usize>,
    /// The masked group is the part of the match after its last whitespace
    /// byte, so it is found without a capture search (the costliest part of
    /// a scan, and more so in WebAssembly). Set only where that is exact: the
    /// pattern ends with `\s{1,n}` and then group `group` of bytes that are
    /// never whitespace, to the end of the match.
    group_after_space: bool,
    /// Where matches may start, when the regex engine's own prefilter would
    /// be a multi-literal search (fast with x86 SIMD, slow in WebAssembly).
    start: Start,
    /// What the host's prefilter searches for: every match contains one of these.
    triggers: Triggers,
}

/// A rule's prefilter triggers (see [`Rules::triggers`]): every match of the
/// rule contains one of `words` (in either ASCII case when `nocase`), starts at
/// most `before` bytes before it (counting one byte of context for a leading
/// `\b`) and ends, with its context, at most `after` bytes after it — except
/// a match whose last part is an unbounded greedy run or `\z`, which runs to
/// the end of a window that cuts it, so that the host widens the window.
struct Triggers {
    words: &'static [&'static str],
    nocase: bool,
    before: u32,
    after: u32,
}

/// Longest run of whitespace the rules accept around an assignment's `:` or
/// `=` and after an auth scheme: bounded, so that every match fits its
/// triggers' bounds (a run longer than this is not taken for an assignment).
pub const MAX_GAP: usize = 256;

/// Longest JWT header and payload segment, in characters (bounded for the
/// same reason).
pub const MAX_JWT_SEGMENT: usize = 8192;

/// The built-in rules. Names are stable: operators use them in `disable=`.
const RULES: &[RuleDef] = &[
    RuleDef {
        name: "private-key",
        // Through the END line, or to the end of the data when the block is
        // cut off (fail closed: the rest of a split key is still masked).
        pattern: r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY( BLOCK)?-----(?s:.*?)(-----END[ A-Z0-9]{0,40}PRIVATE KEY( BLOCK)?-----|\z)",
        group: None,
        group_after_space: false,
        start: Start::Engine,
        triggers: Triggers {
            words: &["-----BEGIN"],
            nocase: false,
            before: 1,
            after: 4096,
        },
    },
    RuleDef {
        name: "aws-access-key",
        pattern: r"\b(AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",
        group: None,
        group_after_space: false,
        start: Start::Prefix {
            prefixes: &[
                "AKIA", "ASIA", "AIDA", "AROA", "AGPA", "ANPA", "ANVA", "AIPA",
            ],
            nocase: false,
        },
        triggers: Triggers {
            words: &[
                "AKIA", "ASIA", "AIDA", "AROA", "AGPA", "ANPA", "ANVA", "AIPA",
            ],
            nocase: false,
            before: 1,
            after: 18,
        },
    },
    RuleDef {
        name: "aws-secret-key",
        pattern: r#"(?i)aws_?secret_?access_?key["']?\s{0,256}[:=]\s{0,256}["']?([A-Za-z0-9/+=]{16,})"#,
        group: Some(1),
        group_after_space: false,
        start: Start::Assign(&[
            "awssecretaccesskey",
            "aws_secretaccesskey",
            "awssecret_accesskey",
            "awssecretaccess_key",
            "aws_secret_accesskey",
            "aws_secretaccess_key",
            "awssecret_access_key",
            "aws_secret_access_key",
        ]),
        triggers: Triggers {
            words: &["secret"],
            nocase: true,
            before: 5,
            after: 600,
        },
    },
    RuleDef {
        name: "github-token",
        pattern: r"\b(gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{22,255})",
        group: None,
        group_after_space: false,
        start: Start::Prefix {
            prefixes: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
            nocase: false,
        },
        triggers: Triggers {
            words: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
            nocase: false,
            before: 1,
            after: 256,
        },
    },
    RuleDef {
        name: "gitlab-token",
        pattern: r"\bglpat-[A-Za-z0-9_\-]{20,}",
        group: None,
        group_after_space: false,
        start: Start::Engine,
        triggers: Triggers {
            words: &["glpat-"],
            nocase: false,
            before: 1,
            after: 24,
        },
    },
    RuleDef {
        name: "slack-token",
        pattern: r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",
        group: None,
        group_after_space: false,
        start: Start::Prefix {
            prefixes: &["xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"],
            nocase: false,
        },
        triggers: Triggers {
            words: &["xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"],
            nocase: false,
            before: 1,
            after: 16,
        },
    },
    RuleDef {
        name: "slack-webhook",
        pattern: r"https://hooks\.slack\.com/(services|workflows)/[A-Za-z0-9/_\-]+",
        group: None,
        group_after_space: false,
        start: Start::Engine,
        triggers: Triggers {
            words: &["://"],
            nocase: false,
            before: 6,
            after: 32,
        },
    },
    RuleDef {
        name: "jwt",
        pattern: r"\beyJ[A-Za-z0-9_\-]{8,8192}\.[A-Za-z0-9_\-]{8,8192}\.[A-Za-z0-9_\-]{8,}",
        group: None,
        group_after_space: false,
        start: Start::Engine,
        triggers: Triggers {
            words: &["eyJ"],
            nocase: false,
            before: 1,
            after: 16_400,
        },
    },
    RuleDef {
        name: "auth-header",
        pattern: r#"(?i)\b(proxy-)?authorization["']?\s{0,256}[:=]\s{0,256}["']?(bearer|basic|token|digest|negotiate)\s{1,256}([^\s"',;<>]+)"#,
        group: Some(3),
        group_after_space: true,
        start: Start::Assign(&["proxy-authorization", "authorization"]),
        triggers: Triggers {
            words: &["authorization"],
            nocase: true,
            before: 7,
            after: 800,
        },
    },
    RuleDef {
        name: "bearer-token",
        pattern: r"(?i)\bbearer\s{1,256}([A-Za-z0-9._~+/=\-]{16,})",
        group: Some(1),
        group_after_space: true,
        start: Start::Prefix {
            prefixes: &["bearer"],
            nocase: true,
        },
        triggers: Triggers {
            words: &["bearer"],
            nocase: true,
            before: 1,
            after: 300,
        },
    },
    RuleDef {
        name: "password-assignment",
        // The name may carry any prefix (`DB_PASSWORD=`, `x-api-key:`); only
        // the value after the keyword is masked, so the match starts at the
        // keyword.
        pattern: r#"(?i)(password|passwd|secret|token|api_?key|apikey|access_?key|private_?key|credentials?)["']?\s{0,256}[:=]\s{0,256}["']?([^\s"'&,;<>{}\[\]()]{3,})"#,
        group: Some(2),
        group_after_space: false,
        start: Start::Assign(&[
            "password",
            "passwd",
            "secret",
            "token",
            "apikey",
            "api_key",
            "accesskey",
            "access_key",
            "privatekey",
            "private_key",
            "credential",
            "credentials",
        ]),
        triggers: Triggers {
            words: &[
                "password",
                "passwd",
                "secret",
                "token",
                "apikey",
                "api_key",
                "accesskey",
                "access_key",
                "privatekey",
                "private_key",
                "credential",
            ],
            nocase: true,
            before: 1,
            after: 600,
        },
    },
    RuleDef {
        name: "url-credentials",
        pattern: r#"\b[A-Za-z][A-Za-z0-9+.\-]{1,20}://([^\s:/@"'<>]{1,256}:[^\s/@"'<>]{1,256})@"#,
        group: Some(1),
        group_after_space: false,
        start: Start::Engine,
        triggers: Triggers {
            words: &["://"],
            nocase: false,
            before: 22,
            after: 520,
        },
    },
    RuleDef {
        name: "happyx-token",
        // `hpx_` + 12-char lookup id (lowercase alnum) + `_` + 43 base64url
        // chars (32 random bytes, no padding).
        pattern: r"hpx_[a-z0-9]{12}_[A-Za-z0-9_\-]{43}",
        group: None,
        group_after_space: false,
        start: Start::Engine,
        triggers: Triggers {
            words: &["hpx_"],
            nocase: false,
            before: 1,
            after: 64,
        },
    },
];

/// The names of all built-in rules, in order.
pub fn rule_names() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.name)
}

/// Each built-in rule's name, pattern and masked capture group (`None`: the
/// whole match), in order: what [`Rules::scan`] must find, for reference
/// searches in tests.
#[allow(dead_code)] // the guest has no use for it; the host's tests do
pub fn rule_patterns() -> impl Iterator<Item = (&'static str, &'static str, Option<usize>)> {
    RULES.iter().map(|r| (r.name, r.pattern, r.group))
}

/// Rule name used for operator-supplied literals (`extra_literals`).
pub const LITERAL_RULE: &str = "literal";

/// Longest accepted extra literal, in bytes.
const MAX_LITERAL: usize = 1024;
/// Most extra literals accepted.
const MAX_LITERALS: usize = 256;

/// A finding: rule name and byte range `start..end` in the scanned data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub rule: &'static str,
    pub start: usize,
    pub end: usize,
}

/// Where an [`Anchored`] rule's candidate starts come from.
enum Candidates {
    /// Each occurrence of `lead` (in either ASCII case when `nocase`) where
    /// one of the words starts.
    Prefix { lead: u8, nocase: bool },
    /// Each `:` and `=`, back over whitespace and one quote to where one of
    /// the words ends.
    Assign,
}

/// A rule searched from its candidate starts, its pattern tried anchored at
/// each one.
struct Anchored {
    /// The words (prefixes or assignment keywords), longest first.
    words: Vec<&'static str>,
    candidates: Candidates,
    /// The pattern anchored at the start of its haystack.
    at_start: Regex,
    /// The same after one byte of left context (so `\b` sees the byte
    /// before the match).
    after_one: Regex,
}

impl Anchored {
    /// `None` for a rule left to the regex engine's own prefilter.
    fn new(def: &RuleDef) -> Result<Option<Anchored>, String> {
        let (words, candidates) = match def.start {
            Start::Engine => return Ok(None),
            Start::Assign(words) => (words, Candidates::Assign),
            Start::Prefix { prefixes, nocase } => {
                let lead = prefixes.first().and_then(|w| w.bytes().next());
                let lead = lead.ok_or_else(|| format!("rule {}: no prefix", def.name))?;
                (prefixes, Candidates::Prefix { lead, nocase })
            }
        };
        let anchored = |context: &str| {
            builder(&format!("^{context}(?:{})", def.pattern))
                .build()
                .map_err(|e| format!("rule {}: {e}", def.name))
        };
        let mut words = words.to_vec();
        words.sort_by_key(|w| std::cmp::Reverse(w.len()));
        Ok(Some(Anchored {
            words,
            candidates,
            at_start: anchored("")?,
            after_one: anchored("(?s-u:.)")?,
        }))
    }

    /// The span of the pattern's match starting exactly at `at`, judged with
    /// the byte before it as context — or of its capture group `group` — in
    /// `data` offsets, and where the match ends. Without a group this is one
    /// DFA search; a group needs a capture search.
    fn match_at(
        &self,
        data: &[u8],
        at: usize,
        group: Option<usize>,
    ) -> Option<(usize, usize, usize)> {
        let (regex, base) = match at.checked_sub(1) {
            None => (&self.at_start, 0),
            Some(before) => (&self.after_one, before),
        };
        let hay = &data[base..];
        let (span, end) = match group {
            None => {
                let m = regex.find(hay)?;
                ((m.start(), m.end()), m.end())
            }
            Some(g) => {
                let caps = regex.captures(hay)?;
                let end = caps.get(0).map_or(0, |m| m.end());
                let Some(m) = caps.get(g) else {
                    return Some((base + end, base + end, base + end));
                };
                ((m.start(), m.end()), end)
            }
        };
        // nothing before `at` (a context byte) is part of the match
        Some(((base + span.0).max(at), base + span.1, base + end))
    }

    /// Calls `found(start, end)` with the span of each match, or of its
    /// capture group `group`, left to right and non-overlapping — the
    /// matches an unanchored search of the pattern would find.
    fn for_each_match(
        &self,
        data: &[u8],
        group: Option<usize>,
        mut found: impl FnMut(usize, usize),
    ) {
        // Tries the pattern at `at` unless inside the last match; true if it matched.
        let mut resume = 0;
        let mut try_at = |at: usize| {
            if at < resume {
                return false;
            }
            let Some((start, end, match_end)) = self.match_at(data, at, group) else {
                return false;
            };
            found(start, end);
            resume = match_end.max(at + 1);
            true
        };
        match self.candidates {
            Candidates::Prefix { lead, nocase } => {
                let (a, b) = if nocase {
                    (lead.to_ascii_lowercase(), lead.to_ascii_uppercase())
                } else {
                    (lead, lead)
                };
                for at in memchr::memchr2_iter(a, b, data) {
                    let rest = &data[at..];
                    let starts = self.words.iter().any(|w| {
                        rest.len() >= w.len()
                            && if nocase {
                                rest[..w.len()].eq_ignore_ascii_case(w.as_bytes())
                            } else {
                                rest.starts_with(w.as_bytes())
                            }
                    });
                    if starts {
                        try_at(at);
                    }
                }
            }
            Candidates::Assign => {
                for sep in memchr::memchr2_iter(b':', b'=', data) {
                    let mut end = sep;
                    while end > 0 && is_regex_space(data[end - 1]) {
                        end -= 1;
                    }
                    if end > 0 && matches!(data[end - 1], b'"' | b'\'') {
                        end -= 1;
                    }
                    // longest word first: the leftmost place a match may start
                    for w in &self.words {
                        let Some(at) = end.checked_sub(w.len()) else {
                            continue;
                        };
                        if data[at..end].eq_ignore_ascii_case(w.as_bytes()) && try_at(at) {
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Which part of a match a rule masks.
#[derive(Clone, Copy)]
enum Mask {
    Whole,
    /// Capture group `i` (a capture search).
    Group(usize),
    /// The part after the match's last whitespace byte (see
    /// `RuleDef::group_after_space`).
    AfterSpace,
}

struct Compiled {
    name: &'static str,
    regex: Regex,
    mask: Mask,
    /// For rules not left to the engine's prefilter (see [`Start`]).
    anchored: Option<Anchored>,
}

/// A compiled rule set. Build it once per instance and reuse it.
pub struct Rules {
    rules: Vec<Compiled>,
    triggers: Vec<Trigger>,
}

/// One trigger of the host's prefilter (`redaction.trigger` of
/// `happyx:policy@0.4.0`): a literal every match of the rule `group` contains
/// (the rule's index in the compiled set), and how far around it the match and
/// its context reach.
#[derive(Clone, PartialEq, Eq)]
pub struct Trigger {
    pub literal: Vec<u8>,
    pub nocase: bool,
    pub before: u32,
    pub after: u32,
    pub group: u32,
}

// Extra literals are site secrets: never printed.
impl std::fmt::Debug for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Trigger({} bytes, nocase {}, before {}, after {}, group {})",
            self.literal.len(),
            self.nocase,
            self.before,
            self.after,
            self.group
        )
    }
}

/// Longest trigger literal the host accepts: a longer extra literal is
/// triggered by its first bytes.
const MAX_TRIGGER: usize = 64;

/// Adds a trigger, or widens the bounds of the same literal already there for
/// the same group.
fn add_trigger(triggers: &mut Vec<Trigger>, t: Trigger) {
    match triggers
        .iter_mut()
        .find(|o| o.literal == t.literal && o.nocase == t.nocase && o.group == t.group)
    {
        Some(o) => {
            o.before = o.before.max(t.before);
            o.after = o.after.max(t.after);
        }
        None => triggers.push(t),
    }
}

/// Settings the redactor understands (see [`Rules::from_settings`]).
#[derive(Debug, Default, Clone)]
pub struct Settings {
    /// Built-in rules switched off by name.
    pub disabled: Vec<String>,
    /// Literal strings (e.g. canaries, site-specific secrets) always masked.
    pub literals: Vec<String>,
}

impl Settings {
    /// Parses `key=value` settings.
    ///
    /// * `disable` — comma-separated rule names to switch off; an unknown
    ///   name is an error.
    /// * `extra_literals` — comma-separated literal strings to mask (rule
    ///   `literal`); empty entries are ignored.
    ///
    /// Any other key is an error naming the key.
    pub fn parse(settings: &[(String, String)]) -> Result<Settings, String> {
        let mut out = Settings::default();
        for (key, value) in settings {
            match key.as_str() {
                "disable" => {
                    for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        if !rule_names().any(|r| r == name) {
                            return Err(format!("disable: unknown rule `{name}`"));
                        }
                        out.disabled.push(name.to_string());
                    }
                }
                "extra_literals" => {
                    for lit in value.split(',').filter(|s| !s.is_empty()) {
                        if lit.len() > MAX_LITERAL {
                            return Err(format!(
                                "extra_literals: a literal is longer than {MAX_LITERAL} bytes"
                            ));
                        }
                        out.literals.push(lit.to_string());
                    }
                    if out.literals.len() > MAX_LITERALS {
                        return Err(format!("extra_literals: more than {MAX_LITERALS} literals"));
                    }
                }
                other => return Err(format!("unknown setting `{other}`")),
            }
        }
        Ok(out)
    }
}

/// `\s` of an ASCII-only regex: space, tab, newline, vertical tab, form feed,
/// carriage return.
fn is_regex_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

fn builder(pattern: &str) -> RegexBuilder {
    let mut b = RegexBuilder::new(pattern);
    b.unicode(false).size_limit(8 << 20).dfa_size_limit(4 << 20);
    b
}

impl Rules {
    /// Compiles the rules selected by `settings`.
    pub fn new(settings: &Settings) -> Result<Rules, String> {
        let mut rules = Vec::new();
        let mut triggers = Vec::new();
        for def in RULES {
            if settings.disabled.iter().any(|d| d == def.name) {
                continue;
            }
            let group = rules.len() as u32;
            for word in def.triggers.words {
                add_trigger(
                    &mut triggers,
                    Trigger {
                        literal: word.as_bytes().to_vec(),
                        nocase: def.triggers.nocase,
                        before: def.triggers.before,
                        after: def.triggers.after,
                        group,
                    },
                );
            }
            let regex = builder(def.pattern)
                .build()
                .map_err(|e| format!("rule {}: {e}", def.name))?;
            let anchored = Anchored::new(def)?;
            let mask = match (def.group, def.group_after_space) {
                (None, _) => Mask::Whole,
                (Some(_), true) => Mask::AfterSpace,
                (Some(g), false) => Mask::Group(g),
            };
            rules.push(Compiled {
                name: def.name,
                regex,
                mask,
                anchored,
            });
        }
        if !settings.literals.is_empty() {
            let alternation = settings
                .literals
                .iter()
                .map(|l| regex::escape(l))
                .collect::<Vec<_>>()
                .join("|");
            let regex = builder(&alternation)
                .build()
                .map_err(|e| format!("extra_literals: {e}"))?;
            let group = rules.len() as u32;
            rules.push(Compiled {
                name: LITERAL_RULE,
                regex,
                mask: Mask::Whole,
                anchored: None,
            });
            for lit in &settings.literals {
                let head = &lit.as_bytes()[..lit.len().min(MAX_TRIGGER)];
                add_trigger(
                    &mut triggers,
                    Trigger {
                        literal: head.to_vec(),
                        nocase: false,
                        before: 1,
                        // MAX_LITERAL bounds it well below the host's limit
                        after: (lit.len() - head.len() + 1) as u32,
                        group,
                    },
                );
            }
        }
        Ok(Rules { rules, triggers })
    }

    /// The prefilter triggers of the enabled rules and extra literals: every
    /// match [`Rules::scan`] finds contains one of them, within its bounds
    /// (whitespace runs and JWT segments are bounded for that: [`MAX_GAP`],
    /// [`MAX_JWT_SEGMENT`]). Empty when no rule is enabled.
    pub fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }

    /// Compiles the rules from `key=value` settings (see [`Settings::parse`]).
    pub fn from_settings(settings: &[(String, String)]) -> Result<Rules, String> {
        Rules::new(&Settings::parse(settings)?)
    }

    /// All findings in `data`, ordered by start. Ranges are non-empty and
    /// inside `data`; ranges of different rules may overlap.
    pub fn scan(&self, data: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        for rule in &self.rules {
            rule.scan(data, 0, &mut hits);
        }
        hits.sort_by_key(|h| (h.start, h.end));
        hits
    }

    /// The findings of each window `data[range]`, scanned as if it were the
    /// whole data with only the rules its groups name (a group is a rule's
    /// index, as [`Rules::triggers`] numbers them), in `data` offsets and
    /// ordered by start. A window outside `data` or a group no rule has is an
    /// error.
    pub fn scan_windows(
        &self,
        data: &[u8],
        windows: &[(std::ops::Range<usize>, &[u32])],
    ) -> Result<Vec<Hit>, String> {
        let mut hits = Vec::new();
        for (range, groups) in windows {
            let window = data
                .get(range.clone())
                .ok_or_else(|| format!("window {range:?} is outside the data"))?;
            for &g in groups.iter() {
                let rule = usize::try_from(g)
                    .ok()
                    .and_then(|g| self.rules.get(g))
                    .ok_or_else(|| {
                        format!("window {range:?} names group {g}, which no rule has")
                    })?;
                rule.scan(window, range.start, &mut hits);
            }
        }
        hits.sort_by_key(|h| (h.start, h.end));
        Ok(hits)
    }
}

impl Compiled {
    /// Pushes this rule's findings in `data` onto `hits`, shifted by `offset`.
    fn scan(&self, data: &[u8], offset: usize, hits: &mut Vec<Hit>) {
        let mut push = |start: usize, end: usize| {
            if start < end {
                hits.push(Hit {
                    rule: self.name,
                    start: offset + start,
                    end: offset + end,
                });
            }
        };
        // The masked part of a match that ends with whitespace and then its group.
        let after_space = |start: usize, end: usize| {
            data[start..end]
                .iter()
                .rposition(|&b| is_regex_space(b))
                .map_or(start, |i| start + i + 1)
        };
        match (&self.anchored, self.mask) {
            (Some(anchored), Mask::Whole) => anchored.for_each_match(data, None, &mut push),
            (Some(anchored), Mask::Group(g)) => anchored.for_each_match(data, Some(g), &mut push),
            (Some(anchored), Mask::AfterSpace) => {
                anchored.for_each_match(data, None, |s, e| push(after_space(s, e), e))
            }
            (None, Mask::Whole) => {
                for m in self.regex.find_iter(data) {
                    push(m.start(), m.end());
                }
            }
            (None, Mask::AfterSpace) => {
                for m in self.regex.find_iter(data) {
                    push(after_space(m.start(), m.end()), m.end());
                }
            }
            (None, Mask::Group(g)) => {
                for caps in self.regex.captures_iter(data) {
                    if let Some(m) = caps.get(g) {
                        push(m.start(), m.end());
                    }
                }
            }
        }
    }
}
