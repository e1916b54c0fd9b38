//! `happyx serve`: data dir and lock, store, plugins, runner, then HTTP(S)
//! until SIGINT/SIGTERM, with a graceful drain of in-flight requests.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::api::{self, AppState, Metrics};
use crate::config::Config;
use crate::datadir;
use crate::devices::DeviceService;
use crate::plugins::PluginHost;
use crate::runs::{ChildIdentity, Runner};
use crate::store::{Deployment, SCHEMA_VERSION, Store};
use crate::util::{new_id, now_ms};

/// Runs the host until a shutdown signal. Prints the bound address on stdout.
pub async fn serve(cfg: Config) -> Result<()> {
    let data_dir = datadir::ensure(&cfg.data_dir)?;
    let _lock = datadir::lock(&data_dir)?;
    let store = Store::open(&data_dir, &cfg.storage)
        .await
        .with_context(|| format!("cannot open the database in {}", data_dir.display()))?;
    let identity = ChildIdentity::prepare(&cfg.runs)?;
    let plugins = PluginHost::default();
    let metrics = Arc::new(Metrics::default());
    let lost = store.mark_unfinished_runs_lost().await?;
    if lost > 0 {
        tracing::warn!(
            runs = lost,
            "runs left unfinished by a previous host were marked lost"
        );
    }
    store
        .record_deployment(&Deployment {
            id: new_id(),
            started_at: now_ms(),
            version: env!("CARGO_PKG_VERSION").into(),
            schema_version: SCHEMA_VERSION,
            config_hash: cfg.hash(),
            plugin_hashes: json!({}),
            boot_id: datadir::boot_id(),
        })
        .await?;
    let runner = Runner::new(store.clone(), plugins, metrics.clone(), identity, &cfg.runs);
    let devices = Arc::new(
        DeviceService::start(
            store.clone(),
            &data_dir,
            metrics.clone(),
            cfg.envelopes.window_ms,
        )
        .context("cannot set up devices")?,
    );
    let cfg = Arc::new(cfg);
    let state = AppState {
        store: store.clone(),
        config: cfg.clone(),
        metrics,
        runner,
        devices,
    };
    let (router, _doc) = api::router_and_doc(state);

    let listener = TcpListener::bind(cfg.listen)
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let scheme = if cfg.tls.cert.is_some() {
        "https"
    } else {
        "http"
    };
    println!("{scheme}://{addr}");
    tracing::info!(%addr, data_dir = %data_dir.display(), "happyx listening");

    let handle = axum_server::Handle::new();
    let grace = Duration::from_millis(cfg.api.shutdown_grace_ms);
    tokio::spawn({
        let handle = handle.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down: draining in-flight requests");
            handle.graceful_shutdown(Some(grace));
        }
    });
    let app = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(cert), Some(key)) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "cannot load TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
            axum_server::from_tcp_rustls(listener, tls)
                .handle(handle)
                .serve(app)
                .await?;
        }
        _ => {
            axum_server::from_tcp(listener)
                .handle(handle)
                .serve(app)
                .await?;
        }
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {},
                _ = i.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
