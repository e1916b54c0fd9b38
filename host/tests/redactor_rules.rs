//! The sample redactor's rules, compiled natively (the same source the WASM
//! guest is built from): every rule's findings must be exactly those of its
//! pattern searched unanchored, left to right, over the whole data — also for
//! the rules searched from `:` and `=` back to their keyword — and the keyword
//! rule masks what its older form (`\b` and any identifier prefix before the
//! keyword) masked. Through the host's prefilter, built from the rules' own
//! triggers, the rules find exactly what they find on the whole data.

// The helpers of a test suite fail the test when they cannot do their part.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../plugins/redactor/src/rules.rs"]
#[allow(dead_code)]
mod rules;

use std::sync::LazyLock;

use happyx::plugins::Finding;
use happyx::plugins::prefilter::{Prefilter, TriggerSpec, Window};
use proptest::prelude::*;
use regex::bytes::{Regex, RegexBuilder};

/// The keyword rule as it was before it was searched from its separators.
const PASSWORD_BEFORE: &str = r#"(?i)\b[A-Za-z0-9_.\-]*(password|passwd|secret|token|api_?key|apikey|access_?key|private_?key|credentials?)["']?\s*[:=]\s*["']?([^\s"'&,;<>{}\[\]()]{3,})"#;

fn regex(pattern: &str) -> Regex {
    RegexBuilder::new(pattern)
        .unicode(false)
        .build()
        .expect("pattern")
}

/// Unanchored, non-overlapping, left to right: (start, end) of the masked part.
fn reference(re: &Regex, group: Option<usize>, data: &[u8]) -> Vec<(usize, usize)> {
    re.captures_iter(data)
        .filter_map(|c| c.get(group.unwrap_or(0)))
        .filter(|m| m.start() < m.end())
        .map(|m| (m.start(), m.end()))
        .collect()
}

fn fragments() -> impl Strategy<Value = Vec<u8>> {
    let words = prop_oneof![
        Just("password"),
        Just("PassWd"),
        Just("SECRET"),
        Just("token"),
        Just("api_key"),
        Just("ApiKey"),
        Just("access_key"),
        Just("privatekey"),
        Just("credential"),
        Just("credentials"),
        Just("db_"),
        Just("x-"),
        Just("."),
        Just("="),
        Just(":"),
        Just("=="),
        Just(" "),
        Just("\t"),
        Just("\x0b"),
        Just("\n"),
        Just("\""),
        Just("'"),
        Just("&"),
        Just("abc"),
        Just("hunter2"),
        Just("Bearer "),
        Just("Authorization: "),
        Just("https://user:pw@host/"),
        Just("ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"),
        Just("AKIAIOSFODNN7EXAMPLE"),
        Just("\u{e9}"),
        Just("proxy-"),
        Just("Authorization"),
        Just("basic "),
        Just("x"),
        Just("AWS"),
        Just("_SECRET"),
        Just("_access"),
        Just("Key"),
        Just("AbCdEfGh12345678/+="),
        Just("gh"),
        Just("ghp_"),
        Just("github_pat_"),
        Just("xox"),
        Just("xoxb-"),
        Just("AKIA"),
        Just("A"),
        Just("ABCDEFGHIJ0123456789"),
        Just("bearer"),
        Just("BeArEr "),
        Just("0123456789abcdefghij"),
        Just("_-"),
    ];
    proptest::collection::vec(words, 0..40).prop_map(|w| w.concat().into_bytes())
}

/// The rules, each rule's reference regex and the keyword rule's older form, compiled once.
type Compiled = (
    rules::Rules,
    Vec<(&'static str, Regex, Option<usize>)>,
    Regex,
);

static COMPILED: LazyLock<Compiled> = LazyLock::new(|| {
    (
        rules::Rules::new(&rules::Settings::default()).expect("rules"),
        rules::rule_patterns()
            .map(|(name, pattern, group)| (name, regex(pattern), group))
            .collect(),
        regex(PASSWORD_BEFORE),
    )
});

/// The host's prefilter built from the rules' triggers.
static PREFILTER: LazyLock<Prefilter> = LazyLock::new(|| {
    let (rules, _, _) = &*COMPILED;
    let specs: Vec<TriggerSpec> = rules
        .triggers()
        .iter()
        .map(|t| TriggerSpec {
            literal: t.literal.clone(),
            ascii_case_insensitive: t.nocase,
            before: t.before,
            after: t.after,
            group: t.group,
        })
        .collect();
    Prefilter::build(&specs).expect("the rules' triggers are a valid prefilter")
});

fn to_findings(hits: Vec<rules::Hit>) -> Vec<Finding> {
    let mut f: Vec<Finding> = hits
        .into_iter()
        .map(|h| Finding {
            rule: h.rule.to_string(),
            start: h.start,
            end: h.end,
        })
        .collect();
    f.sort_by_key(|f| (f.start, f.end));
    f
}

/// The rules' findings through the prefilter — windows each scanned with every rule (0.3.0),
/// and windows scanned with their groups' rules only (0.4.0) — and on the whole data.
fn through_prefilter(
    rules: &rules::Rules,
    data: &[u8],
) -> (Vec<Finding>, Vec<Finding>, Vec<Finding>) {
    let filtered = PREFILTER
        .scan(data, |w| Ok::<_, ()>(to_findings(rules.scan(w))))
        .expect("infallible");
    let grouped = PREFILTER
        .scan_grouped(data, |windows: &mut [Window]| {
            let ranges: Vec<_> = windows
                .iter()
                .map(|w| (w.range.clone(), w.groups.as_slice()))
                .collect();
            rules.scan_windows(data, &ranges).map(to_findings)
        })
        .expect("every window and group is the rules' own");
    (filtered, grouped, to_findings(rules.scan(data)))
}

fn check(data: &[u8]) {
    let (rules, references, before_form) = &*COMPILED;
    let (filtered, grouped, whole) = through_prefilter(rules, data);
    assert_eq!(
        filtered,
        whole,
        "through the prefilter on {:?}",
        String::from_utf8_lossy(data)
    );
    assert_eq!(
        grouped,
        whole,
        "through the grouped prefilter on {:?}",
        String::from_utf8_lossy(data)
    );
    let hits = rules.scan(data);
    for (name, re, group) in references {
        let mine: Vec<(usize, usize)> = hits
            .iter()
            .filter(|h| h.rule == *name)
            .map(|h| (h.start, h.end))
            .collect();
        let mut want = reference(re, *group, data);
        want.sort();
        assert_eq!(
            mine,
            want,
            "rule {name} on {:?}",
            String::from_utf8_lossy(data)
        );
        if *name == "password-assignment" {
            let mut before = reference(before_form, Some(2), data);
            before.sort();
            assert_eq!(
                mine,
                before,
                "older form on {:?}",
                String::from_utf8_lossy(data)
            );
        }
    }
}

#[test]
fn known_cases() {
    for case in [
        "password=hunter2",
        "DB_PASSWORD = \"hunter2\"",
        "x-api-key: abcdef",
        "passwordtoken=abc",
        "secretoken=xyz",
        "password ==abc token=def",
        "'token' :\t'abc'",
        "credentials=abc&credential=def",
        "TOKEN\x0b=abc",
        "password=a token=bcd",
        "==== token",
        "xproxy-authorization: Basic abc",
        "proxy-authorization: Basic abc",
        "-Authorization=bearer t0k3n",
        "aws_secret_access_key = AbCdEfGh12345678/+=",
        "AWSSECRETACCESSKEY:'AbCdEfGh12345678'",
        "AKIAAKIAIOSFODNN7EXAMPLE",
        "xAKIAIOSFODNN7EXAMPLE AKIAIOSFODNN7EXAMPLE",
        "xoxoxb-0123456789",
        "gghp_0123456789abcdefghijklmnopqrstuvwxyzAB ghp_0123456789abcdefghijklmnopqrstuvwxyzAB",
        "github_pat_0123456789abcdefghijklmn",
        "bbearer 0123456789abcdefghij BEARER 0123456789abcdefghij",
        "",
    ] {
        check(case.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn scan_equals_unanchored_search(data in fragments()) {
        check(&data);
    }
}
