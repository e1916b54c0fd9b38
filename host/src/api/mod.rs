//! The HTTP API: axum routers, one file per resource. Every route is declared
//! through `utoipa_axum::routes!`, so the OpenAPI document served at
//! `/v1/openapi.json` is generated from the same list that builds the router.

mod approvals;
mod caller;
mod codes;
mod console;
mod devices;
mod envelopes;
mod error;
mod events;
mod extract;
mod gate;
mod health;
mod metrics;
mod page;
mod permissions;
mod plugins;
mod pty;
mod public;
mod ratelimit;
mod runs;
mod sessions;
mod status;
mod stream;
mod tasks;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub use error::{ApiError, ApiResult, ErrorBody};
pub use extract::parse_json;
pub use metrics::Metrics;
pub use page::{PageQuery, Paged};

use crate::config::Config;
use crate::devices::DeviceService;
use crate::runs::Runner;
use crate::store::Store;

/// Shared state of every handler: one `Arc`, because axum clones the state for every request
/// (and for every middleware that takes it), and cloning the services one by one was a
/// measurable part of a cheap request.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> AppState {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Services {
    pub store: Store,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub runner: Runner,
    /// `(seq, digest)` of the event-log hash chain, extended on demand.
    pub event_digest: Arc<tokio::sync::Mutex<(i64, [u8; 32])>>,
    pub pty: crate::pty::PtyManager,
    pub devices: Arc<DeviceService>,
    /// Where children run and which isolation guarantees hold.
    pub children: crate::children::Children,
    /// The address the host listens on.
    pub address: std::net::SocketAddr,
    /// Plugin reloads from the configuration (API, SIGHUP, watcher).
    pub reloader: crate::reload::Reloader,
    /// Wakes `GET /v1/events/stream` when the audit log grows.
    pub feed: crate::console::feed::EventFeed,
    /// This host among the hosts of a shared database: forwarding to a terminal's owner.
    pub cluster: crate::cluster::Cluster,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "HappyX host API",
        description = "Private API under /v1 (Authorization: Bearer <token>); public allowlisted views under /public. \
                       Every error body is {\"code\",\"message\"}."
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The one list of routes: it builds both the router and the OpenAPI document.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::openapi_json))
        .routes(routes!(status::status))
        .routes(routes!(metrics::metrics))
        .routes(routes!(events::list_events))
        .routes(routes!(stream::event_stream))
        .routes(routes!(
            console::sign_in,
            console::whoami,
            console::sign_out
        ))
        .routes(routes!(console::overview))
        .routes(routes!(tasks::create_task, tasks::list_tasks))
        .routes(routes!(tasks::get_task, tasks::update_task))
        .routes(routes!(sessions::create_session, sessions::list_sessions))
        .routes(routes!(sessions::get_session, sessions::update_session))
        .routes(routes!(
            permissions::create_permission,
            permissions::list_permissions
        ))
        .routes(routes!(
            permissions::get_permission,
            permissions::update_permission
        ))
        .routes(routes!(runs::create_run, runs::list_runs))
        .routes(routes!(runs::get_run))
        .routes(routes!(runs::get_run_output))
        .routes(routes!(runs::list_recipes))
        .routes(routes!(approvals::list_approvals))
        .routes(routes!(approvals::approve))
        .routes(routes!(approvals::deny))
        .routes(routes!(approvals::get_approval))
        .routes(routes!(approvals::withdraw))
        .routes(routes!(plugins::list_plugins))
        .routes(routes!(plugins::list_hosts))
        .routes(routes!(plugins::reload_plugins))
        .routes(routes!(public::public_state))
        .routes(routes!(public::public_evidence))
        .routes(routes!(public::public_checkpoints))
        .routes(routes!(public::public_runs))
        .routes(routes!(public::public_session))
        .routes(routes!(public::public_sessions))
        .routes(routes!(public::public_terminals))
        .routes(routes!(public::public_terminal))
        .routes(routes!(pty::create_pty))
        .routes(routes!(console::list_ptys))
        .routes(routes!(pty::get_pty))
        .routes(routes!(pty::resize_pty))
        .routes(routes!(pty::interrupt_pty))
        .routes(routes!(pty::kill_pty))
        .routes(routes!(pty::get_transcript))
        .routes(routes!(pty::attach_pty))
        .routes(routes!(pty::pty_ws))
        .routes(routes!(devices::create_enrollment))
        .routes(routes!(devices::enrollment_challenge))
        .routes(routes!(devices::complete_enrollment))
        .routes(routes!(devices::list_devices))
        .routes(routes!(devices::get_device))
        .routes(routes!(devices::revoke_device))
        .routes(routes!(devices::device_keys))
        .routes(routes!(envelopes::open_session))
        .routes(routes!(envelopes::rotate_session))
        .routes(routes!(envelopes::session_keys))
        .routes(routes!(envelopes::post_envelope, envelopes::read_envelopes))
        .routes(routes!(envelopes::envelope_meta))
        .routes(
            routes!(envelopes::post_envelope_batch).layer(DefaultBodyLimit::max(
                crate::envelope::limits::MAX_BATCH_JSON_LEN,
            )),
        )
}

/// The OpenAPI document of [`routes`], with each route's error codes (see `api/codes.rs`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = routes().split_for_parts();
    codes::document(&mut doc);
    doc
}

/// Builds the router and the OpenAPI document from one list of routes.
pub fn router_and_doc(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut doc) = routes().split_for_parts();
    codes::document(&mut doc);
    let doc_json = Arc::new(doc.clone());
    let max_body = state.config.api.max_body_bytes;
    let metrics = state.metrics.clone();
    let public_limit =
        ratelimit::PublicLimit::new(state.config.api.public_requests_per_second, metrics.clone());
    let router = router
        .merge(crate::console::router())
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::Extension(doc_json))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            public_limit,
            ratelimit::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::count,
        ))
        .layer(axum::middleware::from_fn(crate::console::security_headers))
        .with_state(state);
    (router, doc)
}

async fn fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Validates a path id; ids outside our shape cannot exist.
pub fn path_id<'a>(id: &'a str, what: &str) -> Result<&'a str, ApiError> {
    if crate::util::is_valid_id(id) {
        Ok(id)
    } else {
        Err(ApiError::not_found(what))
    }
}

/// Checks a free-text field's length (in characters).
pub fn check_text(field: &str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("`{field}`: length must be between {min} and {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("`{field}`: control characters are not allowed"),
        ));
    }
    Ok(())
}
