//! The leak scanner behind `happyx verify-public`: finds secret material in a
//! public response body (or header value) and names its kind, never the secret.
//!
//! # Rules
//!
//! | kind | what |
//! | --- | --- |
//! | `happyx_token` | `hpx_` + 12 `[a-z0-9]` + `_` + 43 base64url characters, anywhere in the bytes |
//! | `key_material` | a PEM block (`-----BEGIN`); a string of exactly 64 or 128 hex characters, or base64 that decodes to exactly 32 or 64 bytes, that is not a declared hash |
//! | `high_entropy` | a base64/base64url/hex-looking string of ≥ 24 characters (no whitespace) with upper and lower case letters and digits and a Shannon entropy ≥ 3.8 bits per character, or a hex string of ≥ 32 characters, that is not a declared hash or a UUID |
//! | `canary` | any canary value, raw, hex (lower/upper), base64 std/url with and without padding (also at any byte alignment inside a longer base64 text), JSON-escaped or percent-encoded |
//! | `redactor:<rule>` | whatever the injected extra scanner (the redaction plugin) reports |
//!
//! String-level rules (`key_material` blobs, `high_entropy`) look at the string
//! values of a JSON body (keys are checked too, by the byte-level rules); a
//! body that is not JSON is split into runs of base64/hex characters.
//!
//! A **declared hash** is a value of 64 hex characters (optionally prefixed
//! with `sha256:`) whose field — or an enclosing field, for maps such as
//! `plugin_hashes` — is a hash field: its name ends in `hash`, `hashes`,
//! `sha256`, `checksum` or `digest`, or the OpenAPI document declares a
//! property of that name with `format: "sha256"` (or `"hash"`) or a description
//! mentioning a hash / SHA-256 ([`HashFields::from_openapi`]). UUIDs (8-4-4-4-12
//! hex) are identifiers, never findings. The `public_key` and `signature` of a signed
//! checkpoint ([`crate::checkpoint`]) are not findings when its signature verifies under that
//! key (the proof that they are a public key and a signature); unverified, they are scanned.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::Value;

/// An extra scanner (the WASM redactor, wired by the host): returns
/// `(rule, start, end)` byte ranges of what it considers secret.
pub type ExtraScanner = Arc<dyn Fn(&[u8]) -> Vec<(String, usize, usize)> + Send + Sync>;

/// The kind of material found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    HappyxToken,
    KeyMaterial,
    HighEntropy,
    Canary,
    /// A rule of the extra scanner.
    Redactor(String),
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::HappyxToken => f.write_str("happyx_token"),
            Kind::KeyMaterial => f.write_str("key_material"),
            Kind::HighEntropy => f.write_str("high_entropy"),
            Kind::Canary => f.write_str("canary"),
            Kind::Redactor(rule) => write!(f, "redactor:{rule}"),
        }
    }
}

/// One piece of secret material on a public surface. `detail` locates it
/// (field, byte offset, encoding) and never contains the material.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub surface: String,
    pub kind: Kind,
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.surface, self.kind, self.detail)
    }
}

/// Field names whose 64-hex values are declared hashes.
#[derive(Debug, Clone, Default)]
pub struct HashFields {
    declared: BTreeSet<String>,
}

impl HashFields {
    /// Collects every property the OpenAPI document declares as a hash:
    /// `format` of `sha256`/`hash`, or a description that mentions a hash or SHA-256.
    pub fn from_openapi(doc: &Value) -> Self {
        let mut out = HashFields::default();
        collect_hash_props(doc, &mut out.declared, 0);
        out
    }

    /// Whether `name` is a hash field (by the naming rule or the document).
    pub fn is_hash_field(&self, name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        ["hash", "hashes", "sha256", "checksum", "digest"]
            .iter()
            .any(|s| n.ends_with(s))
            || self.declared.contains(name)
    }
}

fn collect_hash_props(v: &Value, out: &mut BTreeSet<String>, depth: usize) {
    if depth > 64 {
        return;
    }
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = m.get("properties") {
                for (name, schema) in props {
                    let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
                    let desc = schema
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    if matches!(format, "sha256" | "hash")
                        || desc.contains("hash")
                        || desc.contains("sha-256")
                        || desc.contains("sha256")
                    {
                        out.insert(name.clone());
                    }
                }
            }
            for child in m.values() {
                collect_hash_props(child, out, depth + 1);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_hash_props(c, out, depth + 1)),
        _ => {}
    }
}

/// Canary values and their encodings, prepared once.
#[derive(Clone, Default)]
pub struct Canaries {
    /// (canary number, encoding name, needle)
    needles: Vec<(usize, &'static str, Vec<u8>)>,
}

impl fmt::Debug for Canaries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Canaries({} needles)", self.needles.len())
    }
}

impl Canaries {
    /// Prepares every encoding of every non-empty value (one per line of a
    /// canary file; surrounding whitespace is ignored).
    pub fn new<S: AsRef<str>>(values: &[S]) -> Self {
        let mut needles = Vec::new();
        for (n, v) in values
            .iter()
            .map(|v| v.as_ref().trim())
            .filter(|v| !v.is_empty())
            .enumerate()
        {
            let b = v.as_bytes();
            let mut add = |enc: &'static str, needle: Vec<u8>| {
                if needle.len() >= 4 && !needles.iter().any(|x: &(usize, _, Vec<u8>)| x.2 == needle)
                {
                    needles.push((n + 1, enc, needle));
                }
            };
            add("raw", b.to_vec());
            add("hex", hex::encode(b).into_bytes());
            add("hex", hex::encode_upper(b).into_bytes());
            add("base64", STANDARD.encode(b).into_bytes());
            add("base64", STANDARD_NO_PAD.encode(b).into_bytes());
            add("base64url", URL_SAFE.encode(b).into_bytes());
            add("base64url", URL_SAFE_NO_PAD.encode(b).into_bytes());
            if let Ok(j) = serde_json::to_string(v) {
                add("json-escaped", j.trim_matches('"').as_bytes().to_vec());
            }
            add("json-escaped", json_escape_all(v).into_bytes());
            add("percent-encoded", percent_encode(b, false).into_bytes());
            add("percent-encoded", percent_encode(b, true).into_bytes());
            for k in 1..3 {
                add("base64", aligned_base64(b, k, false).into_bytes());
                add("base64url", aligned_base64(b, k, true).into_bytes());
            }
        }
        Canaries { needles }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }
}

/// Every non-alphanumeric character as `\uXXXX` (another valid JSON escaping).
fn json_escape_all(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Percent-encodes every byte outside RFC 3986's unreserved set.
fn percent_encode(b: &[u8], upper: bool) -> String {
    let mut out = String::new();
    for &c in b {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c as char);
        } else if upper {
            out.push_str(&format!("%{c:02X}"));
        } else {
            out.push_str(&format!("%{c:02x}"));
        }
    }
    out
}

/// The base64 characters fully determined by `b` when it starts `k` bytes
/// into a longer base64-encoded text.
fn aligned_base64(b: &[u8], k: usize, url: bool) -> String {
    let mut data = vec![0u8; k];
    data.extend_from_slice(b);
    let enc = if url {
        URL_SAFE_NO_PAD.encode(&data)
    } else {
        STANDARD_NO_PAD.encode(&data)
    };
    let first = (8 * k).div_ceil(6);
    let last = (8 * (k + b.len())) / 6; // exclusive
    enc.get(first..last.min(enc.len()))
        .filter(|s| s.len() >= 8)
        .unwrap_or("")
        .to_string()
}

/// What to scan a body against.
#[derive(Clone, Default)]
pub struct ScanContext<'a> {
    /// The surface, e.g. `GET /public/runs?after=…` — named in findings.
    pub surface: &'a str,
    pub hash_fields: Option<&'a HashFields>,
    pub canaries: Option<&'a Canaries>,
    pub extra: Option<&'a ExtraScanner>,
    /// Apply the string-level rules (off for header values).
    pub strings: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Offsets of well-formed HappyX tokens in `body`.
pub fn token_offsets(body: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = find(&body[from..], crate::auth::TOKEN_PREFIX.as_bytes()) {
        let at = from + i;
        let rest = &body[at + 4..];
        let ok = rest.len() >= 12 + 1 + 43
            && rest[..12]
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && rest[12] == b'_'
            && rest[13..56]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
        if ok {
            out.push(at);
        }
        from = at + 4;
    }
    out
}

/// Scans one body. Findings are deduplicated and ordered.
pub fn scan(body: &[u8], ctx: &ScanContext<'_>) -> Vec<Finding> {
    let mut out = BTreeSet::new();
    let mut push = |kind: Kind, detail: String| {
        out.insert(Finding {
            surface: ctx.surface.to_string(),
            kind,
            detail,
        });
    };
    for at in token_offsets(body) {
        push(Kind::HappyxToken, format!("a bearer token at byte {at}"));
    }
    let mut from = 0;
    while let Some(i) = find(&body[from..], b"-----BEGIN") {
        push(
            Kind::KeyMaterial,
            format!("a PEM block at byte {}", from + i),
        );
        from += i + 10;
    }
    if let Some(c) = ctx.canaries {
        for (n, enc, needle) in &c.needles {
            if let Some(at) = find(body, needle) {
                push(Kind::Canary, format!("canary #{n} ({enc}) at byte {at}"));
            }
        }
    }
    if let Some(extra) = ctx.extra {
        for (rule, start, end) in extra(body) {
            push(
                Kind::Redactor(rule),
                format!("bytes {start}..{end} flagged by the redactor"),
            );
        }
    }
    if ctx.strings {
        let default = HashFields::default();
        let hashes = ctx.hash_fields.unwrap_or(&default);
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => walk(&v, "$", false, hashes, &mut push, 0),
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                for word in text.split(|c: char| !is_blob_char(c)) {
                    if let Some((kind, what)) = classify_string(word, false) {
                        push(kind, format!("{what} in the body"));
                    }
                }
            }
        }
    }
    out.into_iter().collect()
}

fn walk(
    v: &Value,
    path: &str,
    in_hash: bool,
    hashes: &HashFields,
    push: &mut impl FnMut(Kind, String),
    depth: usize,
) {
    if depth > 128 {
        return;
    }
    match v {
        Value::String(s) => {
            if let Some((kind, what)) = classify_string(s, in_hash) {
                push(kind, format!("{what} in field {path}"));
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                walk(c, &format!("{path}[{i}]"), in_hash, hashes, push, depth + 1);
            }
        }
        Value::Object(m) => {
            // A signed checkpoint whose signature verifies: its public key and signature are
            // public by proof (a private key in their place would not verify).
            let signed = crate::checkpoint::Checkpoint::is_verified_json(m);
            for (k, c) in m {
                if signed && matches!(k.as_str(), "public_key" | "signature") {
                    continue;
                }
                let h = in_hash || hashes.is_hash_field(k);
                walk(c, &format!("{path}.{k}"), h, hashes, push, depth + 1);
            }
        }
        _ => {}
    }
}

fn is_blob_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_')
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Shannon entropy in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether a short identifier-like string (a recipe name, say) would be a finding on a public
/// surface: a bearer token, key material or a high-entropy blob (UUIDs and declared hashes are not).
pub fn is_secret_shaped(s: &str) -> bool {
    !token_offsets(s.as_bytes()).is_empty()
        || s.contains("-----BEGIN")
        || classify_string(s, false).is_some()
}

/// Classifies one string value; `None` when it is ordinary metadata.
fn classify_string(s: &str, in_hash_field: bool) -> Option<(Kind, &'static str)> {
    let t = s.trim();
    if t.len() < 24 || is_uuid(t) || !t.chars().all(is_blob_char) {
        return None;
    }
    let hexpart = t.strip_prefix("sha256:").unwrap_or(t);
    let is_hex = hexpart.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex && hexpart.len() == 64 && in_hash_field {
        return None; // a declared hash
    }
    if is_hex && (hexpart.len() == 64 || hexpart.len() == 128) {
        return Some((Kind::KeyMaterial, "a 32/64-byte hex blob"));
    }
    let decoded = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(t).ok());
    if let Some(d) = &decoded
        && (d.len() == 32 || d.len() == 64)
        && !is_hex
    {
        return Some((Kind::KeyMaterial, "a 32/64-byte base64 blob"));
    }
    if is_hex && t.len() >= 32 && !in_hash_field {
        return Some((Kind::HighEntropy, "a long hex blob"));
    }
    let (lower, upper, digit) = (
        t.bytes().any(|b| b.is_ascii_lowercase()),
        t.bytes().any(|b| b.is_ascii_uppercase()),
        t.bytes().any(|b| b.is_ascii_digit()),
    );
    if lower && upper && digit && entropy(t) >= 3.8 {
        return Some((Kind::HighEntropy, "a high-entropy string"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx<'a>(h: &'a HashFields, c: &'a Canaries) -> ScanContext<'a> {
        ScanContext {
            surface: "GET /public/x",
            hash_fields: Some(h),
            canaries: Some(c),
            extra: None,
            strings: true,
        }
    }

    fn kinds(f: &[Finding]) -> Vec<String> {
        f.iter().map(|f| f.kind.to_string()).collect()
    }

    fn token() -> String {
        format!("hpx_abcdefghij12_{}", URL_SAFE_NO_PAD.encode([9u8; 32]))
    }

    #[test]
    fn metadata_with_hashes_and_uuids_is_clean() {
        let body = json!({
            "items": [{
                "id": "01890a5d-ac96-774b-bcce-b302099a8057",
                "recipe": "echo",
                "status": "succeeded",
                "action_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "plugin_hashes": {"recipes": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
                "code": "approval_required_for_shell_command",
                "stdout_bytes": 12,
                "next": "01890a5d-ac96-774b-bcce-b302099a8057"
            }]
        });
        let h = HashFields::default();
        let c = Canaries::default();
        let f = scan(body.to_string().as_bytes(), &ctx(&h, &c));
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn a_verified_checkpoint_passes_a_forged_one_does_not() {
        let tmp = tempfile::tempdir().expect("tmp");
        let key = crate::transfer::signing::HostKey::load_or_create(tmp.path()).expect("key");
        let cp = crate::checkpoint::Checkpoint::sign(&key, 3, &"ab".repeat(32), 5).expect("cp");
        let h = HashFields::default();
        let c = Canaries::default();
        let body = json!({ "checkpoint": cp });
        assert!(scan(body.to_string().as_bytes(), &ctx(&h, &c)).is_empty());
        let forged = json!({ "checkpoint": crate::checkpoint::Checkpoint { seq: 4, ..cp } });
        let f = scan(forged.to_string().as_bytes(), &ctx(&h, &c));
        assert!(
            f.iter().any(|x| x.kind == Kind::KeyMaterial),
            "an unverified signature is scanned: {f:?}"
        );
    }

    #[test]
    fn openapi_declared_hashes_pass_undeclared_hex_does_not() {
        let doc = json!({"components": {"schemas": {"Dep": {"properties": {
            "config": {"type": "string", "description": "SHA-256 of the configuration"},
            "fp": {"type": "string", "format": "sha256"}
        }}}}});
        let h = HashFields::from_openapi(&doc);
        let hex64 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let c = Canaries::default();
        let ok = json!({"config": hex64, "fp": hex64}).to_string();
        assert!(scan(ok.as_bytes(), &ctx(&h, &c)).is_empty());
        let bad = json!({"note": hex64}).to_string();
        assert_eq!(kinds(&scan(bad.as_bytes(), &ctx(&h, &c))), ["key_material"]);
    }

    #[test]
    fn tokens_keys_and_entropy_are_found_without_echoing_them() {
        let h = HashFields::default();
        let c = Canaries::default();
        let tok = token();
        let body = json!({"name": format!("x {tok} y")}).to_string();
        let f = scan(body.as_bytes(), &ctx(&h, &c));
        assert_eq!(kinds(&f), ["happyx_token"]);
        assert!(!f[0].to_string().contains(&tok[4..]), "{}", f[0]);

        let key = STANDARD.encode([7u8; 32]);
        let body = json!({"public_key_like": key}).to_string();
        assert_eq!(
            kinds(&scan(body.as_bytes(), &ctx(&h, &c))),
            ["key_material"]
        );

        let body = json!({"x": "-----BEGIN PRIVATE KEY-----\nMC4CAQ\n-----END"}).to_string();
        assert!(kinds(&scan(body.as_bytes(), &ctx(&h, &c))).contains(&"key_material".into()));

        let blob = "aZ3kQ9pLm2Xv8TnB4wYc7RdE1fGh";
        let body = json!({"title": blob}).to_string();
        let f = scan(body.as_bytes(), &ctx(&h, &c));
        assert_eq!(kinds(&f), ["high_entropy"]);
        assert!(!f[0].detail.contains(blob));

        // Plain text bodies are scanned too.
        let f = scan(format!("hello {blob} world").as_bytes(), &ctx(&h, &c));
        assert_eq!(kinds(&f), ["high_entropy"]);
    }

    #[test]
    fn canaries_in_every_encoding() {
        let canary = "CANARY-7f3a/9+q?x=1";
        let c = Canaries::new(&[canary]);
        let h = HashFields::default();
        let encodings = [
            canary.to_string(),
            hex::encode(canary),
            hex::encode_upper(canary),
            STANDARD.encode(canary),
            STANDARD_NO_PAD.encode(canary),
            URL_SAFE.encode(canary),
            URL_SAFE_NO_PAD.encode(canary),
            json_escape_all(canary),
            percent_encode(canary.as_bytes(), true),
            percent_encode(canary.as_bytes(), false),
            STANDARD.encode(format!("x{canary}yz")),
            URL_SAFE_NO_PAD.encode(format!("ab{canary}")),
        ];
        for e in encodings {
            let body = format!("{{\"note\": \"some text {e} more\"}}");
            let f = scan(body.as_bytes(), &ctx(&h, &c));
            assert!(
                f.iter().any(|f| f.kind == Kind::Canary),
                "missed encoding {e}: {f:?}"
            );
            for x in &f {
                assert!(!x.to_string().contains(canary));
            }
        }
        let clean = scan(b"{\"note\": \"nothing here\"}", &ctx(&h, &c));
        assert!(clean.is_empty());
    }

    #[test]
    fn the_extra_scanner_is_called() {
        let extra: ExtraScanner = Arc::new(|b: &[u8]| {
            find(b, b"password=")
                .map(|i| vec![("password".to_string(), i, i + 9)])
                .unwrap_or_default()
        });
        let s = ScanContext {
            surface: "GET /public/state",
            extra: Some(&extra),
            strings: true,
            ..Default::default()
        };
        let f = scan(b"{\"x\": \"password=hunter2\"}", &s);
        assert_eq!(kinds(&f), ["redactor:password"]);
        assert_eq!(f[0].surface, "GET /public/state");
    }
}
