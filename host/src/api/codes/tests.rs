//! Pins the error codes of every route: the rendered OpenAPI document against the checked-in
//! snapshot `docs/api-error-codes.txt` (`UPDATE_SNAPSHOTS=1` rewrites it), and the catalogue
//! against the codes the server source constructs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{CATALOGUE, NO_ROUTE, ROUTES};

fn snapshot_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api-error-codes.txt")
}

/// One line per route and error status, `METHOD PATH STATUS code,code`, sorted; a route
/// without error responses is `METHOD PATH -`.
fn render(doc: &serde_json::Value) -> Result<String, String> {
    let mut lines = Vec::new();
    let paths = doc["paths"].as_object().ok_or("no paths")?;
    for (path, item) in paths {
        let item = item.as_object().ok_or("path item is not an object")?;
        for (method, op) in item {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let method = method.to_uppercase();
            let mut any = false;
            let responses = op["responses"].as_object().ok_or("no responses")?;
            for (status, resp) in responses {
                if !status.starts_with('4') && !status.starts_with('5') {
                    continue;
                }
                any = true;
                let codes = resp["x-error-codes"]
                    .as_array()
                    .ok_or_else(|| format!("{method} {path} {status}: no x-error-codes"))?;
                let codes: Vec<&str> = codes.iter().filter_map(|c| c.as_str()).collect();
                lines.push(format!("{method} {path} {status} {}", codes.join(",")));
            }
            if !any {
                lines.push(format!("{method} {path} -"));
            }
        }
    }
    lines.sort();
    Ok(lines.join("\n") + "\n")
}

fn rendered() -> String {
    let doc = serde_json::to_value(crate::api::openapi()).expect("document serializes");
    render(&doc).expect("every error response lists its codes")
}

#[test]
fn route_error_codes_match_the_snapshot() {
    let now = rendered();
    let path = snapshot_path();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &now).expect("write snapshot");
        return;
    }
    let pinned = std::fs::read_to_string(&path).unwrap_or_default();
    if pinned != now {
        let old: BTreeSet<&str> = pinned.lines().collect();
        let new: BTreeSet<&str> = now.lines().collect();
        let gone: Vec<_> = old.difference(&new).collect();
        let added: Vec<_> = new.difference(&old).collect();
        panic!(
            "the error codes of the API changed; update docs/api-error-codes.txt with \
             UPDATE_SNAPSHOTS=1 cargo test -p happyx --lib api::codes if intended\n\
             no longer in the document: {gone:#?}\nnew in the document: {added:#?}"
        );
    }
}

#[test]
fn the_document_carries_the_catalogue() {
    let doc = serde_json::to_value(crate::api::openapi()).expect("document serializes");
    assert_eq!(doc["x-error-codes"], serde_json::json!(CATALOGUE));
    assert_eq!(
        doc["x-error-codes-no-route"],
        serde_json::json!({"404": ["not_found"], "405": ["method_not_allowed"]})
    );
    let op = &doc["paths"]["/v1/runs"]["post"];
    assert_eq!(op["operationId"], "create_run");
    let codes = op["x-error-codes"].as_array().expect("operation codes");
    assert!(codes.contains(&serde_json::json!("approval_required")));
    let resp = &op["responses"]["409"];
    assert_eq!(
        resp["x-error-codes"],
        serde_json::json!(["idempotency_conflict"])
    );
    assert!(
        resp["description"]
            .as_str()
            .is_some_and(|d| d.contains("`idempotency_conflict`")),
        "{resp}"
    );
}

#[test]
fn every_operation_has_exactly_one_table_entry() {
    let doc = serde_json::to_value(crate::api::openapi()).expect("document serializes");
    let mut ids = BTreeSet::new();
    for item in doc["paths"].as_object().expect("paths").values() {
        for op in item.as_object().expect("path item").values() {
            if let Some(id) = op["operationId"].as_str() {
                assert!(ids.insert(id.to_string()), "operation id {id} twice");
            }
        }
    }
    let table: Vec<&str> = ROUTES.iter().map(|(id, _)| *id).collect();
    let unique: BTreeSet<&str> = table.iter().copied().collect();
    assert_eq!(unique.len(), table.len(), "a route is in the table twice");
    let table: BTreeSet<String> = unique.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        ids.difference(&table).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "routes without an entry in api::codes::ROUTES"
    );
    assert_eq!(
        table.difference(&ids).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "entries in api::codes::ROUTES without a route"
    );
}

#[test]
fn the_table_is_ordered_and_uses_catalogued_codes_only() {
    assert!(
        CATALOGUE.windows(2).all(|w| w[0] < w[1]),
        "CATALOGUE is sorted and has no duplicates"
    );
    let mut used = BTreeSet::new();
    for (id, errors) in ROUTES.iter().chain([("(no route)", NO_ROUTE)].iter()) {
        assert!(
            errors.windows(2).all(|w| w[0].0 < w[1].0),
            "{id}: statuses ascending, each once"
        );
        for (status, codes) in errors.iter() {
            assert!((400..600).contains(status), "{id}: {status} is no error");
            assert!(!codes.is_empty(), "{id} {status}: no codes");
            assert!(
                codes.windows(2).all(|w| w[0] < w[1]),
                "{id} {status}: codes sorted, each once"
            );
            for c in codes.iter() {
                assert!(
                    CATALOGUE.contains(c),
                    "{id} {status}: `{c}` not in CATALOGUE"
                );
                used.insert(*c);
            }
        }
    }
    let unused: Vec<_> = CATALOGUE.iter().filter(|c| !used.contains(*c)).collect();
    assert!(
        unused.is_empty(),
        "catalogued but no route answers with: {unused:?}"
    );
}

/// The string literal codes the source passes to `ApiError::new` (second argument) and
/// `ApiError::bad_request` / `bad_request` (first argument).
fn constructed_codes(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (needle, arg) in [("ApiError::new(", 1), ("bad_request(", 0)] {
        let mut rest = src;
        while let Some(at) = rest.find(needle) {
            rest = &rest[at + needle.len()..];
            if let Some(code) = nth_arg(rest, arg).and_then(literal) {
                out.push(code);
            }
        }
    }
    out
}

/// The `n`th top-level argument of a call whose text starts right after its `(`.
fn nth_arg(s: &str, n: usize) -> Option<&str> {
    let (mut depth, mut start, mut index, mut in_str) = (0usize, 0usize, 0usize, false);
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_str {
            if b == b'\\' {
                i += 1;
            } else if b == b'"' {
                in_str = false;
            }
        } else {
            match b {
                b'"' => in_str = true,
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' if depth == 0 => {
                    return (index == n).then(|| s[start..i].trim());
                }
                b')' | b']' | b'}' => depth -= 1,
                b',' if depth == 0 => {
                    if index == n {
                        return Some(s[start..i].trim());
                    }
                    index += 1;
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn literal(arg: &str) -> Option<String> {
    let inner = arg.strip_prefix('"')?.strip_suffix('"')?;
    inner
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b == b'_')
        .then(|| inner.to_string())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_parser_finds_codes_in_calls() {
    let src = r#"ApiError::new(StatusCode::CONFLICT, "pty_not_running", e.to_string())
        ApiError::new(status, e.code(), format!("a, {}", x))
        ApiError::bad_request("invalid_query", format!("limit must be {a}, {b}"))
        ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "a console request, \"quoted\"",
        )"#;
    assert_eq!(
        constructed_codes(src),
        ["pty_not_running", "csrf_failed", "invalid_query"]
    );
}

#[test]
fn every_constructed_code_is_documented_for_a_route() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut documented = BTreeSet::new();
    for (_, errors) in ROUTES.iter().chain([("", NO_ROUTE)].iter()) {
        for (_, codes) in errors.iter() {
            documented.extend(codes.iter().copied());
        }
    }
    let mut found = 0;
    for file in files {
        if file.ends_with("api/codes/tests.rs") {
            continue;
        }
        let src = std::fs::read_to_string(&file).expect("read source");
        for code in constructed_codes(&src) {
            found += 1;
            assert!(
                documented.contains(code.as_str()),
                "{}: `{code}` is constructed but no route documents it in api::codes::ROUTES",
                file.display()
            );
        }
    }
    assert!(found > 20, "the scan found only {found} codes");
}
