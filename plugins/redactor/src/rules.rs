//! The secret-detection rules of the sample redactor, as plain Rust.
//!
//! This module has no WIT bindings in it, so the host's native benchmark can
//! compile the very same rules (`#[path]` include) and compare them with the
//! WASM build.
//!
//! Matching is two-phase: one [`RegexSet`] pass over the data tells which
//! rules match anywhere (for clean data, the common case, that is the only
//! pass), then each matching rule's own regex reports its ranges. Every regex
//! is byte-oriented and ASCII-only (`unicode(false)`), so arbitrary bytes are
//! fine and the lazy DFA never falls back on non-ASCII input.
//!
//! A rule masks either its whole match or only one capture group (the value of
//! `password=...`, the userinfo of `https://user:pass@host`).

use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

/// One rule: a stable name, a pattern and which part of a match is secret.
struct RuleDef {
    name: &'static str,
    pattern: &'static str,
    /// `Some(i)`: mask only capture group `i`; `None`: mask the whole match.
    group: Option<usize>,
}

/// The built-in rules. Names are stable: operators use them in `disable=`.
const RULES: &[RuleDef] = &[
    RuleDef {
        name: "private-key",
        // Through the END line, or to the end of the data when the block is
        // cut off (fail closed: the rest of a split key is still masked).
        pattern: r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY( BLOCK)?-----(?s:.*?)(-----END[ A-Z0-9]{0,40}PRIVATE KEY( BLOCK)?-----|\z)",
        group: None,
    },
    RuleDef {
        name: "aws-access-key",
        pattern: r"\b(AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",
        group: None,
    },
    RuleDef {
        name: "aws-secret-key",
        pattern: r#"(?i)aws_?secret_?access_?key["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{16,})"#,
        group: Some(1),
    },
    RuleDef {
        name: "github-token",
        pattern: r"\b(gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{22,255})",
        group: None,
    },
    RuleDef {
        name: "gitlab-token",
        pattern: r"\bglpat-[A-Za-z0-9_\-]{20,}",
        group: None,
    },
    RuleDef {
        name: "slack-token",
        pattern: r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",
        group: None,
    },
    RuleDef {
        name: "slack-webhook",
        pattern: r"https://hooks\.slack\.com/(services|workflows)/[A-Za-z0-9/_\-]+",
        group: None,
    },
    RuleDef {
        name: "jwt",
        pattern: r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
        group: None,
    },
    RuleDef {
        name: "auth-header",
        pattern: r#"(?i)\b(proxy-)?authorization["']?\s*[:=]\s*["']?(bearer|basic|token|digest|negotiate)\s+([^\s"',;<>]+)"#,
        group: Some(3),
    },
    RuleDef {
        name: "bearer-token",
        pattern: r"(?i)\bbearer\s+([A-Za-z0-9._~+/=\-]{16,})",
        group: Some(1),
    },
    RuleDef {
        name: "password-assignment",
        pattern: r#"(?i)\b[A-Za-z0-9_.\-]*(password|passwd|secret|token|api_?key|apikey|access_?key|private_?key|credentials?)["']?\s*[:=]\s*["']?([^\s"'&,;<>{}\[\]()]{3,})"#,
        group: Some(2),
    },
    RuleDef {
        name: "url-credentials",
        pattern: r#"\b[A-Za-z][A-Za-z0-9+.\-]{1,20}://([^\s:/@"'<>]{1,256}:[^\s/@"'<>]{1,256})@"#,
        group: Some(1),
    },
    RuleDef {
        name: "happyx-token",
        // `hpx_` + 12-char lookup id (lowercase alnum) + `_` + 43 base64url
        // chars (32 random bytes, no padding).
        pattern: r"hpx_[a-z0-9]{12}_[A-Za-z0-9_\-]{43}",
        group: None,
    },
];

/// The names of all built-in rules, in order.
pub fn rule_names() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.name)
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

struct Compiled {
    name: &'static str,
    regex: Regex,
    group: Option<usize>,
}

/// A compiled rule set. Build it once per instance and reuse it.
pub struct Rules {
    set: RegexSet,
    rules: Vec<Compiled>,
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

fn builder(pattern: &str) -> RegexBuilder {
    let mut b = RegexBuilder::new(pattern);
    b.unicode(false).size_limit(8 << 20).dfa_size_limit(4 << 20);
    b
}

impl Rules {
    /// Compiles the rules selected by `settings`.
    pub fn new(settings: &Settings) -> Result<Rules, String> {
        let mut rules = Vec::new();
        for def in RULES {
            if settings.disabled.iter().any(|d| d == def.name) {
                continue;
            }
            let regex = builder(def.pattern)
                .build()
                .map_err(|e| format!("rule {}: {e}", def.name))?;
            rules.push(Compiled {
                name: def.name,
                regex,
                group: def.group,
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
            rules.push(Compiled {
                name: LITERAL_RULE,
                regex,
                group: None,
            });
        }
        let set = RegexSetBuilder::new(rules.iter().map(|r| r.regex.as_str()))
            .unicode(false)
            .size_limit(32 << 20)
            .dfa_size_limit(8 << 20)
            .build()
            .map_err(|e| format!("rule set: {e}"))?;
        Ok(Rules { set, rules })
    }

    /// Compiles the rules from `key=value` settings (see [`Settings::parse`]).
    pub fn from_settings(settings: &[(String, String)]) -> Result<Rules, String> {
        Rules::new(&Settings::parse(settings)?)
    }

    /// All findings in `data`, ordered by start. Ranges are non-empty and
    /// inside `data`; ranges of different rules may overlap.
    pub fn scan(&self, data: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        let matched = self.set.matches(data);
        if !matched.matched_any() {
            return hits;
        }
        for index in matched.iter() {
            let Some(rule) = self.rules.get(index) else {
                continue;
            };
            match rule.group {
                None => {
                    for m in rule.regex.find_iter(data) {
                        if m.start() < m.end() {
                            hits.push(Hit {
                                rule: rule.name,
                                start: m.start(),
                                end: m.end(),
                            });
                        }
                    }
                }
                Some(group) => {
                    for caps in rule.regex.captures_iter(data) {
                        if let Some(m) = caps.get(group)
                            && m.start() < m.end()
                        {
                            hits.push(Hit {
                                rule: rule.name,
                                start: m.start(),
                                end: m.end(),
                            });
                        }
                    }
                }
            }
        }
        hits.sort_by_key(|h| (h.start, h.end));
        hits
    }
}
