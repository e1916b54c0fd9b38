//! `GET /healthz` and `GET /v1/openapi.json` (no auth).

use std::sync::Arc;

use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the host answers.
    status: &'static str,
    /// Host version.
    version: &'static str,
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "host", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "host", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi_json(
    Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json((*doc).clone())
}
