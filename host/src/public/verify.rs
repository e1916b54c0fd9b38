//! `happyx verify-public`: fetch every public surface of a running host and
//! scan it for secret material. Needs no token.
//!
//! 1. `GET URL/v1/openapi.json` (itself scanned as a surface); every path
//!    under `/public` with a `GET` operation is a surface.
//! 2. Paths without parameters first, in order. A JSON response with a
//!    non-null top-level `next` is followed with `?<cursor>=<next>` (the
//!    operation's query parameter named `after`, `cursor` or `page_token`;
//!    `after` when none is declared), up to `--max-pages` pages.
//! 3. Every string value of a field named `id` or ending in `_id` seen in the
//!    responses is a candidate value for templated paths
//!    (`/public/sessions/{id}`): first values of a field named like the
//!    parameter, then `id`s from the listing at the path's prefix
//!    (`/public/sessions`), then `<singular>_id` fields — or, when none of
//!    these exist, any other id; up to `--max-values` per path. A templated path with no candidate is
//!    skipped with a note on stderr.
//!    The host lists its session and terminal views (`/public/sessions`,
//!    `/public/terminals`, when `public.sessions` is on), so their ids come
//!    from those listings and every such view is reached.
//! 4. Each response body is scanned with [`scan`](super::scan::scan), its
//!    header values with the byte-level rules. The report counts, per
//!    OpenAPI path, the successful responses scanned (`views`), so that an
//!    operator sees which views were actually reached.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::scan::{Canaries, ExtraScanner, Finding, HashFields, ScanContext, scan};

/// Largest response body read (bigger ones are scanned up to this size).
const MAX_BODY: usize = 16 << 20;

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Base URL of the running host, e.g. http://127.0.0.1:7878.
    #[arg(long)]
    pub url: String,
    /// A file of canary values, one per line, that must appear nowhere.
    #[arg(long)]
    pub canaries: Option<PathBuf>,
    /// Pages followed per listing.
    #[arg(long, default_value_t = 100)]
    pub max_pages: usize,
    /// Values tried per templated path.
    #[arg(long, default_value_t = 10)]
    pub max_values: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url} is not an OpenAPI document with `paths`")]
    NotOpenApi { url: String },
    #[error("cannot read the canary file {path}: {source}")]
    Canaries {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl VerifyError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Fetch { .. } => "fetch_failed",
            Self::NotOpenApi { .. } => "not_openapi",
            Self::Canaries { .. } => "canaries_unreadable",
        }
    }
}

/// What a verification found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub url: String,
    /// Responses fetched and scanned (including the OpenAPI document).
    pub surfaces: usize,
    /// Templated paths skipped for lack of a value.
    pub skipped: Vec<String>,
    /// Per OpenAPI path (`/public/sessions/{id}`…): successful responses scanned.
    pub views: BTreeMap<String, usize>,
    pub findings: Vec<Finding>,
}

impl Report {
    /// The one line printed on stdout (JSON; findings never hold secrets).
    pub fn summary_line(&self) -> String {
        let findings: Vec<Value> = self
            .findings
            .iter()
            .map(|f| json!({"surface": f.surface, "kind": f.kind.to_string(), "detail": f.detail}))
            .collect();
        json!({
            "url": self.url,
            "clean": self.findings.is_empty(),
            "surfaces": self.surfaces,
            "skipped": self.skipped,
            "views": self.views,
            "findings": findings,
        })
        .to_string()
    }
}

/// Runs the command: reads the canary file, loads the built-in redactor as
/// the extra scanner (anything it flags is a finding), and verifies.
pub async fn run(args: &VerifyArgs) -> Result<Report, VerifyError> {
    let extra = redactor_scanner().await;
    let canaries = match &args.canaries {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| VerifyError::Canaries {
                path: path.clone(),
                source,
            })?;
            text.lines().map(str::to_string).collect()
        }
        None => Vec::new(),
    };
    verify(args, &canaries, extra).await
}

/// The built-in sample redactor as an [`ExtraScanner`]; `None` (with a
/// warning) if it cannot be loaded, so the other checks still run.
async fn redactor_scanner() -> Option<ExtraScanner> {
    let loaded = tokio::task::spawn_blocking(|| {
        crate::plugins::PluginHost::load(&crate::plugins::PluginsConfig::default(), None)
    })
    .await;
    let host = match loaded {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::warn!(code = e.code(), "redactor unavailable; scanning without it");
            return None;
        }
        Err(_) => return None,
    };
    let handle = tokio::runtime::Handle::current();
    Some(std::sync::Arc::new(move |body: &[u8]| {
        let found = tokio::task::block_in_place(|| {
            handle.block_on(host.redact(crate::plugins::source::TEXT, body))
        });
        match found {
            Ok(r) => r
                .findings
                .into_iter()
                .map(|f| (f.rule, f.start, f.end))
                .collect(),
            Err(e) => vec![(format!("redactor-failed:{}", e.code()), 0, 0)],
        }
    }))
}

struct Fetched {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Fetched, VerifyError> {
    let err = |e: reqwest::Error| VerifyError::Fetch {
        url: url.to_string(),
        reason: e.without_url().to_string(),
    };
    let mut resp = client.get(url).send().await.map_err(err)?;
    let status = resp.status().as_u16();
    let mut headers = String::new();
    for (k, v) in resp.headers() {
        headers.push_str(k.as_str());
        headers.push_str(": ");
        headers.push_str(&String::from_utf8_lossy(v.as_bytes()));
        headers.push('\n');
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(err)? {
        let room = MAX_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok(Fetched {
        status,
        headers,
        body,
    })
}

/// An id seen in a response: (field name, path of the listing, value).
type SeenId = (String, String, String);

fn collect_ids(v: &Value, listing: &str, out: &mut Vec<SeenId>, depth: usize) {
    if depth > 64 || out.len() > 10_000 {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                if let Value::String(s) = c
                    && (k == "id" || k.ends_with("_id"))
                    && !s.is_empty()
                    && s.len() <= 200
                    && !s.contains(['/', '?', '#'])
                {
                    let e = (k.clone(), listing.to_string(), s.clone());
                    if !out.contains(&e) {
                        out.push(e);
                    }
                }
                collect_ids(c, listing, out, depth + 1);
            }
        }
        Value::Array(a) => a
            .iter()
            .for_each(|c| collect_ids(c, listing, out, depth + 1)),
        _ => {}
    }
}

/// `{name}` parameters of a templated path, in order.
fn params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_string)
        .collect()
}

/// Candidate values for parameter `param` of `path`, best first.
fn candidates(path: &str, param: &str, ids: &[SeenId], max: usize) -> Vec<String> {
    let marker = format!("{{{param}}}");
    let prefix = path
        .split_once(&marker)
        .map(|(p, _)| p.trim_end_matches('/'))
        .unwrap_or("");
    let singular = prefix
        .rsplit('/')
        .next()
        .map(|s| s.strip_suffix('s').unwrap_or(s))
        .unwrap_or("");
    let singular_id = format!("{singular}_id");
    let mut out: Vec<String> = Vec::new();
    let ranks: [&dyn Fn(&SeenId) -> bool; 4] = [
        &|(k, _, _)| param != "id" && k == param,
        &|(k, l, _)| k == "id" && l == prefix,
        &|(k, _, _)| *k == singular_id,
        &|_| true,
    ];
    for (n, rank) in ranks.iter().enumerate() {
        // Any other id only when nothing fits the path.
        if n == 3 && !out.is_empty() {
            break;
        }
        for e in ids.iter().filter(|e| rank(e)) {
            if out.len() >= max {
                return out;
            }
            if !out.contains(&e.2) {
                out.push(e.2.clone());
            }
        }
    }
    out
}

fn cursor_param(op: &Value) -> String {
    op.get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("in").and_then(Value::as_str) == Some("query"))
        .filter_map(|p| p.get("name").and_then(Value::as_str))
        .find(|n| matches!(*n, "after" | "cursor" | "page_token"))
        .unwrap_or("after")
        .to_string()
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

/// Fetches and scans every public surface of the host at `args.url`.
/// `extra` is the redactor hook (see [`ExtraScanner`]).
pub async fn verify(
    args: &VerifyArgs,
    canaries: &[String],
    extra: Option<ExtraScanner>,
) -> Result<Report, VerifyError> {
    let base = args.url.trim_end_matches('/').to_string();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| VerifyError::Fetch {
            url: base.clone(),
            reason: e.to_string(),
        })?;
    let canaries = Canaries::new(canaries);
    let mut report = Report {
        url: base.clone(),
        ..Report::default()
    };

    let doc_url = format!("{base}/v1/openapi.json");
    let doc_resp = fetch(&client, &doc_url).await?;
    let doc: Value = serde_json::from_slice(&doc_resp.body)
        .ok()
        .filter(|d: &Value| d.get("paths").is_some_and(Value::is_object))
        .ok_or(VerifyError::NotOpenApi {
            url: doc_url.clone(),
        })?;
    let hash_fields = HashFields::from_openapi(&doc);
    let mut findings: BTreeSet<Finding> = BTreeSet::new();
    let progress = crate::progress::Progress::counter("verify-public: scanned", "responses");
    let mut scan_one = |surface: &str, f: &Fetched, report: &mut Report| {
        progress.inc(1);
        report.surfaces += 1;
        let body_ctx = ScanContext {
            surface,
            hash_fields: Some(&hash_fields),
            canaries: Some(&canaries),
            extra: extra.as_ref(),
            strings: true,
        };
        findings.extend(scan(&f.body, &body_ctx));
        let header_surface = format!("{surface} (headers)");
        let header_ctx = ScanContext {
            surface: &header_surface,
            strings: false,
            ..body_ctx
        };
        findings.extend(scan(f.headers.as_bytes(), &header_ctx));
    };
    scan_one("GET /v1/openapi.json", &doc_resp, &mut report);

    let mut plain: Vec<(String, String)> = Vec::new();
    let mut templated: Vec<String> = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            if !(path == "/public" || path.starts_with("/public/")) {
                continue;
            }
            let Some(op) = item.get("get") else { continue };
            if path.contains('{') {
                templated.push(path.clone());
            } else {
                plain.push((path.clone(), cursor_param(op)));
            }
        }
    }
    templated.sort_by_key(|p| (params(p).len(), p.clone()));

    let mut ids: Vec<SeenId> = Vec::new();
    for (path, cursor) in &plain {
        let mut next: Option<String> = None;
        let mut seen_cursors = BTreeSet::new();
        for _ in 0..args.max_pages.max(1) {
            let rel = match &next {
                Some(n) => format!("{path}?{cursor}={}", percent(n)),
                None => path.clone(),
            };
            let f = fetch(&client, &format!("{base}{rel}")).await?;
            scan_one(&format!("GET {rel}"), &f, &mut report);
            if (200..300).contains(&f.status) {
                *report.views.entry(path.clone()).or_default() += 1;
            }
            let v: Option<Value> = serde_json::from_slice(&f.body).ok();
            let Some(v) = v.filter(|_| (200..300).contains(&f.status)) else {
                break;
            };
            collect_ids(&v, path, &mut ids, 0);
            next = match v.get("next") {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            match &next {
                Some(n) if seen_cursors.insert(n.clone()) => {}
                _ => break,
            }
        }
    }

    for path in &templated {
        let names = params(path);
        let lists: Vec<Vec<String>> = names
            .iter()
            .map(|p| candidates(path, p, &ids, args.max_values.max(1)))
            .collect();
        if lists.iter().any(Vec::is_empty) {
            eprintln!("happyx: note: skipped {path}: no value found for its parameters");
            report.skipped.push(path.clone());
            continue;
        }
        let tries = lists.iter().map(Vec::len).max().unwrap_or(0);
        for i in 0..tries {
            let mut rel = path.clone();
            for (name, list) in names.iter().zip(&lists) {
                let v = &list[i.min(list.len() - 1)];
                rel = rel.replace(&format!("{{{name}}}"), &percent(v));
            }
            let f = fetch(&client, &format!("{base}{rel}")).await?;
            scan_one(&format!("GET {rel}"), &f, &mut report);
            if (200..300).contains(&f.status) {
                *report.views.entry(path.clone()).or_default() += 1;
            }
            if let Ok(v) = serde_json::from_slice::<Value>(&f.body) {
                collect_ids(&v, path, &mut ids, 0);
            }
        }
    }
    report.findings = findings.into_iter().collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_order_prefers_the_listing_of_the_resource() {
        let ids: Vec<SeenId> = vec![
            ("task_id".into(), "/public/runs".into(), "t1".into()),
            ("id".into(), "/public/runs".into(), "r1".into()),
            ("id".into(), "/public/sessions".into(), "s1".into()),
            ("session_id".into(), "/public/runs".into(), "s2".into()),
        ];
        let c = candidates("/public/sessions/{id}", "id", &ids, 10);
        assert_eq!(c, ["s1", "s2"]);
        let c = candidates("/public/things/{id}", "id", &ids, 10);
        assert_eq!(c, ["t1", "r1", "s1", "s2"]);
        let c = candidates("/public/x/{session_id}", "session_id", &ids, 2);
        assert_eq!(c, ["s2"]);
        assert_eq!(params("/public/a/{x}/b/{y}"), ["x", "y"]);
    }

    /// A host with session and terminal listings (the shape `happyx serve` offers with
    /// `public.sessions` on); `leak` plants `secret` in one terminal view's transcript field.
    async fn fake_host(leak: Option<&'static str>) -> String {
        use axum::extract::Path as UrlPath;
        use axum::routing::get;
        let doc = json!({
            "openapi": "3.1.0",
            "info": {"title": "fake", "version": "1"},
            "paths": {
                "/public/state": {"get": {}},
                "/public/sessions": {"get": {"parameters": [{"name": "after", "in": "query"}]}},
                "/public/sessions/{id}": {"get": {}},
                "/public/terminals": {"get": {"parameters": [{"name": "after", "in": "query"}]}},
                "/public/terminals/{id}": {"get": {}},
            }
        });
        let view = move |id: String| {
            let transcript = match leak {
                Some(secret) if id == "term-2" => json!({"bytes": 10, "note": secret}),
                _ => json!({"bytes": 10, "findings": 0}),
            };
            json!({"id": id, "kind": "pty", "status": "running", "transcript": transcript})
        };
        let app = axum::Router::new()
            .route(
                "/v1/openapi.json",
                get(move || async move { axum::Json(doc) }),
            )
            .route(
                "/public/state",
                get(|| async { axum::Json(json!({"version": "1"})) }),
            )
            .route(
                "/public/sessions",
                get(|| async {
                    axum::Json(json!({"items": [{"id": "sess-1", "kind": "agent"}], "next": null}))
                }),
            )
            .route(
                "/public/sessions/{id}",
                get(|UrlPath(id): UrlPath<String>| async move {
                    axum::Json(json!({"id": id, "kind": "agent", "status": "open"}))
                }),
            )
            .route(
                "/public/terminals",
                get(|| async {
                    // Ids only: the views themselves are reached through `/public/terminals/{id}`.
                    axum::Json(json!({"items": [{"id": "term-1"}, {"id": "term-2"}], "next": null}))
                }),
            )
            .route(
                "/public/terminals/{id}",
                get(move |UrlPath(id): UrlPath<String>| async move { axum::Json(view(id)) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn args(url: String) -> VerifyArgs {
        VerifyArgs {
            url,
            canaries: None,
            max_pages: 10,
            max_values: 10,
        }
    }

    #[tokio::test]
    async fn session_and_terminal_views_are_discovered_and_scanned() {
        let url = fake_host(None).await;
        let report = verify(&args(url), &[], None).await.expect("verify");
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        assert_eq!(report.views.get("/public/sessions/{id}"), Some(&1));
        assert_eq!(report.views.get("/public/terminals/{id}"), Some(&2));
        assert_eq!(report.views.get("/public/terminals"), Some(&1));
        let line: Value = serde_json::from_str(&report.summary_line()).expect("json");
        assert_eq!(line["views"]["/public/terminals/{id}"], 2);
    }

    #[tokio::test]
    async fn a_secret_in_a_terminal_view_is_found() {
        const SECRET: &str = "CANARYterminalview42";
        let url = fake_host(Some(SECRET)).await;
        let report = verify(&args(url), &[SECRET.to_string()], None)
            .await
            .expect("verify");
        let found: Vec<String> = report.findings.iter().map(Finding::to_string).collect();
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("GET /public/terminals/term-2: canary")),
            "{found:?}"
        );
        assert!(found.iter().all(|f| !f.contains(SECRET)), "{found:?}");
        assert!(!report.summary_line().contains(SECRET));
    }
}
