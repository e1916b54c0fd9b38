//! Several hosts on one PostgreSQL database: who this host is, what it forwards to the host
//! that owns a terminal, and the background work that keeps the hosts in step (marking a gone
//! host's runs `lost`, reloading plugins when another host reloaded).
//!
//! **Identity.** A host's id is derived from its signing key (`host-signing.key` in its data
//! dir): stable across restarts, different per data dir, and refused to a second process that
//! serves with a copy of the same data dir (the store's host lock, `happyx_store::hosts`).
//!
//! **Forwarding, not redirecting.** A terminal's holder is a process of the host that started
//! it, so its resize, interrupt, kill and live attach must run there. Any host accepts them:
//! the request is forwarded to the owner's `cluster.advertise_url` with the caller's own
//! credentials (the bearer token, or the single-use attach ticket), and the owner's answer is
//! passed back, status and body. A redirect would have been simpler for the host and worse
//! for clients: HTTP clients drop `Authorization` on a redirect to another origin, and
//! browsers' WebSockets do not follow redirects at all. A forwarded request carries
//! [`FORWARDED_HEADER`]; a host never forwards such a request again (two hosts that disagree
//! about an owner get an error, not a loop). An owner that is not serving answers
//! `503 owner_unavailable` (its terminals wait for it: it adopts them when it starts again);
//! one that cannot be reached, `502 owner_unreachable`.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::Digest;

use crate::api::ApiError;
use crate::reload::Reloader;
use crate::store::{HostRecord, PLUGINS_CHANNEL, Store};
use crate::transfer::signing::HostKey;

/// Marks a request one host forwarded to another (its value: the forwarding host's id).
pub const FORWARDED_HEADER: &str = "x-happyx-forwarded-by";

/// What a forwarded request keeps of the caller's: a bearer token, or a console session
/// (its cookie and CSRF proof, with `Origin` and the `Host` it was sent to, which the
/// owner's same-origin check compares).
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    crate::console::session::CSRF_HEADER,
    "origin",
    "host",
];

/// How long a forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// The id of the host whose signing key is `key`: `h-` and the first 16 hex digits of the
/// SHA-256 of its public key.
pub fn host_id(key: &HostKey) -> String {
    let digest = sha2::Sha256::digest(key.public().to_string().as_bytes());
    format!("h-{}", &hex::encode(digest)[..16])
}

/// This host's part in a cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    id: String,
    store: Store,
    client: reqwest::Client,
}

/// Where a request about a terminal is served.
pub enum Owner {
    /// Here: this host owns it (or it has no recorded owner).
    Here,
    /// Another serving host, at this address.
    Elsewhere(HostRecord),
}

impl Cluster {
    pub fn new(id: String, store: Store) -> Self {
        let client = reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            // The answer is passed back as it is; a redirect is the owner's to explain.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { id, store, client }
    }

    /// This host's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where work on something owned by `owner` runs; an error when the owner is another
    /// host that is not serving, or when `headers` show the request was forwarded already.
    pub async fn locate(
        &self,
        owner: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Owner, ApiError> {
        let Some(owner) = owner.filter(|o| *o != self.id) else {
            return Ok(Owner::Here);
        };
        if headers.contains_key(FORWARDED_HEADER) {
            return Err(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "forward_loop",
                format!("forwarded here, but host {owner} owns it"),
            ));
        }
        let unavailable = || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "owner_unavailable",
                format!(
                    "host {owner}, which owns it, is not serving; its terminals wait for it to start again"
                ),
            )
        };
        if !self.store.host_alive(owner).await? {
            return Err(unavailable());
        }
        match self.store.host(owner).await? {
            Some(h) => Ok(Owner::Elsewhere(h)),
            None => Err(unavailable()),
        }
    }

    /// Sends `POST path` with `body` (JSON) to `owner` with the caller's credentials
    /// ([`CREDENTIAL_HEADERS`]), and answers with the owner's status and body.
    pub async fn forward_post(
        &self,
        owner: &HostRecord,
        path: &str,
        headers: &HeaderMap,
        body: Option<serde_json::Value>,
    ) -> Result<Response, ApiError> {
        let mut req = self
            .client
            .post(format!("{}{path}", owner.advertise_url))
            .header(FORWARDED_HEADER, &self.id);
        for name in CREDENTIAL_HEADERS {
            if let Some(value) = headers.get(*name) {
                req = req.header(*name, value);
            }
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let answer = req.send().await.map_err(|e| unreachable_owner(owner, &e))?;
        let status =
            StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let content_type = answer.headers().get(reqwest::header::CONTENT_TYPE).cloned();
        let bytes = answer
            .bytes()
            .await
            .map_err(|e| unreachable_owner(owner, &e))?;
        let mut response = (status, bytes).into_response();
        if let Some(ct) = content_type {
            response
                .headers_mut()
                .insert(axum::http::header::CONTENT_TYPE, ct);
        }
        Ok(response)
    }

    /// The owner's WebSocket URL for `path_and_query` (`ws://` for `http://`).
    pub fn ws_url(owner: &HostRecord, path_and_query: &str) -> String {
        let base = &owner.advertise_url;
        let base = match base.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => format!("ws://{}", base.trim_start_matches("http://")),
        };
        format!("{base}{path_and_query}")
    }

    /// Marks the unfinished runs of hosts that stopped serving `lost`, every `interval`
    /// (shared databases only).
    pub fn spawn_sweeper(&self, interval: Duration) {
        if !self.store.is_shared() {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match store.mark_runs_of_gone_hosts_lost().await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(
                        runs = n,
                        "runs of a host that stopped serving were marked lost"
                    ),
                    Err(e) => {
                        tracing::warn!(code = e.code(), error = %e, "cannot look for gone hosts")
                    }
                }
            }
        });
    }

    /// Reloads this host's plugins whenever another host announces a reload (shared
    /// databases only; see [`PLUGINS_CHANNEL`]). A lost listening connection is opened again;
    /// a reload is done then too, as an announcement may have been missed meanwhile.
    pub fn spawn_plugin_follower(&self, reloader: Reloader) {
        let Some(pool) = self.store.postgres_pool() else {
            return;
        };
        let id = self.id.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                if !first {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for plugin reloads; retrying");
                        first = false;
                        continue;
                    }
                };
                if let Err(e) = listener.listen(PLUGINS_CHANNEL).await {
                    tracing::warn!(error = %e, "cannot listen for plugin reloads; retrying");
                    first = false;
                    continue;
                }
                if !first {
                    // An announcement may have come while nobody listened.
                    let _ = reloader.reload("host", "peer").await;
                }
                first = false;
                loop {
                    match listener.try_recv().await {
                        Ok(Some(n)) if n.payload() != id => {
                            let _ = reloader.reload("host", "peer").await;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => {
                            tracing::warn!("lost the plugin reload channel; listening again");
                            break;
                        }
                    }
                }
            }
        });
    }
}

fn unreachable_owner(owner: &HostRecord, e: &reqwest::Error) -> ApiError {
    // The error names the address, never the request (its credentials).
    let why = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "refused or unreachable"
    } else {
        "failed"
    };
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "owner_unreachable",
        format!(
            "host {}, which owns it, cannot be reached at {} ({why})",
            owner.id, owner.advertise_url
        ),
    )
}
