//! `happyx serve`: data dir and lock, store, plugins, runner, then HTTP(S)
//! until SIGINT/SIGTERM, with a graceful drain of in-flight requests.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::api::{self, AppState, Metrics};
use crate::children::Children;
use crate::config::Config;
use crate::datadir;
use crate::devices::DeviceService;
use crate::plugins::PluginHost;
use crate::progress::Progress;
use crate::pty::PtyManager;
use crate::runs::Runner;
use crate::store::{Deployment, SCHEMA_VERSION, Store};
use crate::util::{new_id, now_ms};

/// Runs the host until a shutdown signal. Prints the bound address on stdout.
pub async fn serve(cfg: Config) -> Result<()> {
    let data_dir = datadir::ensure(&cfg.data_dir)?;
    let _lock = datadir::lock(&data_dir)?;
    let store = Store::open(&data_dir, &cfg.storage)
        .await
        .with_context(|| format!("cannot open the database in {}", data_dir.display()))?;
    let host_key = Arc::new(
        crate::transfer::signing::HostKey::load_or_create(&data_dir)
            .context("cannot load the host signing key")?,
    );
    // Every clone below acts for this host: the runs and terminals it starts are its own.
    let host_id = crate::cluster::host_id(&host_key);
    let store = store.for_host(&host_id);
    // Bound now, so the advertised address is known when the host registers; nothing is
    // accepted before the router serves.
    let listener = TcpListener::bind(cfg.listen)
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let scheme = if cfg.tls.cert.is_some() {
        "https"
    } else {
        "http"
    };
    let children = Children::prepare(&cfg.runs, store.clone())
        .context("cannot set up the children's workspace")?;
    let plugins = load_plugins(&cfg, &data_dir).await?;
    let reloader = crate::reload::Reloader::new(store.clone(), plugins.clone(), cfg.source.clone());
    reloader.spawn_watcher();
    reloader.spawn_sighup();
    let metrics = Arc::new(Metrics::default());
    plugins.observe_calls(metrics.labelled.plugin_calls.clone());
    let advertise_url = match cfg.cluster.checked_advertise_url() {
        Ok(Some(url)) => url,
        _ => {
            if store.is_shared() && (addr.ip().is_unspecified() || addr.ip().is_loopback()) {
                tracing::warn!(%addr, "cluster.advertise_url is not set and the listen address may not be reachable from other hosts");
            }
            format!("{scheme}://{addr}")
        }
    };
    let host_guard = store.claim_host(&host_id).await?.with_context(|| {
        format!(
            "another process serves as host {host_id} (a copy of this data dir, with its host-signing.key, \
             serves on the same database); give each host a data dir of its own"
        )
    })?;
    tracing::info!(host = %host_id, advertise_url = %advertise_url, "serving as this host");
    let cluster = crate::cluster::Cluster::new(host_id.clone(), store.clone());
    cluster.spawn_sweeper(Duration::from_millis(cfg.cluster.sweep_interval_ms));
    cluster.spawn_plugin_follower(reloader.clone());
    let lost = store.mark_unfinished_runs_lost().await?;
    if lost > 0 {
        tracing::warn!(
            runs = lost,
            "runs left unfinished by a previous host were marked lost"
        );
    }
    let started_at = now_ms();
    let plugin_hashes = crate::reload::plugin_hashes(&plugins.status());
    store
        .record_deployment(
            &Deployment {
                id: new_id(),
                started_at,
                version: env!("CARGO_PKG_VERSION").into(),
                schema_version: SCHEMA_VERSION,
                config_hash: cfg.hash(),
                plugin_hashes: plugin_hashes.clone(),
                boot_id: datadir::boot_id(),
            },
            &crate::store::HostRecord {
                id: host_id.clone(),
                advertise_url: advertise_url.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
                started_at,
                plugins: plugin_hashes,
                plugins_at: started_at,
            },
        )
        .await?;
    checkpoint(&store, &host_key, cfg.audit.checkpoint_keep).await;
    spawn_checkpointer(
        store.clone(),
        host_key,
        cfg.audit.checkpoint_interval_ms,
        cfg.audit.checkpoint_keep,
    );
    if cfg.retention.interval_ms > 0 {
        spawn_pruner(
            store.clone(),
            plugins.clone(),
            cfg.retention.interval_ms,
            cfg.retention.batch,
        );
    }
    let pty = PtyManager::new(
        store.clone(),
        plugins.clone(),
        metrics.clone(),
        children.clone(),
        &data_dir,
    )?;
    pty.set_max_transcript_bytes(cfg.pty.max_transcript_bytes);
    let (adopted, lost) = pty.recover().await?;
    if adopted + lost > 0 {
        tracing::info!(adopted, lost, "terminals left by a previous host");
    }
    let runner = Runner::new(
        store.clone(),
        plugins,
        metrics.clone(),
        children.clone(),
        &cfg.runs,
    );
    let devices = Arc::new(
        DeviceService::start(
            store.clone(),
            &data_dir,
            metrics.clone(),
            &cfg.envelopes,
            &cfg.devices,
        )
        .context("cannot set up devices")?,
    );
    let cfg = Arc::new(cfg);
    let state = AppState::new(api::Services {
        store: store.clone(),
        config: cfg.clone(),
        metrics: metrics.clone(),
        runner,
        event_digest: Default::default(),
        pty,
        devices,
        children,
        address: addr,
        reloader,
        feed: crate::console::feed::EventFeed::spawn(store.clone()),
        cluster,
    });
    let (router, _doc) = api::router_and_doc(state);

    // Registered before the address is printed: a SIGTERM sent as soon as the host answers
    // finds the handler, not the default action.
    let shutdown = shutdown_signal();
    println!("{scheme}://{addr}");
    tracing::info!(%addr, data_dir = %data_dir.display(), "happyx listening");

    let handle = axum_server::Handle::new();
    let grace = Duration::from_millis(cfg.api.shutdown_grace_ms);
    tokio::spawn({
        let handle = handle.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            handle.graceful_shutdown(Some(grace));
        }
    });
    let app = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let header_timeout = Duration::from_millis(cfg.api.header_read_timeout_ms);
    let limiter = crate::connlimit::Limiter::new(
        cfg.api.max_connections,
        cfg.api.max_connections_per_address,
        header_timeout,
        metrics.clone(),
    );
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
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls).acceptor(limiter);
            let mut server = axum_server::from_tcp(listener).acceptor(acceptor);
            http_timeouts(server.http_builder(), header_timeout);
            server.handle(handle).serve(app).await?;
        }
        _ => {
            let mut server = axum_server::from_tcp(listener).acceptor(limiter);
            http_timeouts(server.http_builder(), header_timeout);
            server.handle(handle).serve(app).await?;
        }
    }
    host_guard.release().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// A connection that sends no complete request head within `header` — new, or idle between
/// keep-alive requests — is closed (see `connlimit`).
fn http_timeouts(
    b: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    header: Duration,
) {
    b.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header);
    b.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(header))
        .keep_alive_timeout(header);
}

/// Signs a checkpoint of the chain's head if it moved ([`crate::checkpoint`]).
async fn checkpoint(store: &Store, key: &crate::transfer::signing::HostKey, keep: u32) {
    match store.take_checkpoint(key, keep).await {
        Ok(Some(cp)) => tracing::debug!(seq = cp.seq, "signed a checkpoint of the event chain"),
        Ok(None) => {}
        Err(e) => tracing::warn!(code = e.code(), error = %e, "cannot sign a checkpoint"),
    }
}

/// Signs a checkpoint every `interval_ms` when the head moved.
fn spawn_checkpointer(
    store: Store,
    key: Arc<crate::transfer::signing::HostKey>,
    interval_ms: u64,
    keep: u32,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            checkpoint(&store, &key, keep).await;
        }
    });
}

/// Runs the pruner every `interval_ms` (first pass one interval after start).
fn spawn_pruner(store: Store, plugins: PluginHost, interval_ms: u64, batch: u32) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(interval_ms));
        tick.tick().await;
        loop {
            tick.tick().await;
            if store.is_shared() && ran_lately(&store, interval_ms).await {
                tracing::debug!("another host ran the retention pass within half an interval");
                continue;
            }
            match crate::retention::prune_once(&store, &plugins, batch, &Progress::hidden()).await {
                Ok(r) => tracing::info!(pruned = ?r.pruned, "retention pass done"),
                Err(crate::retention::PruneError::Busy) => {
                    tracing::debug!("another host is running the retention pass");
                }
                Err(e) => tracing::warn!(code = e.code(), error = %e, "retention pass failed"),
            }
        }
    });
}

/// Whether any host recorded a retention pass within half of `interval_ms`: hosts sharing a
/// database then take turns instead of each running a pass every interval.
async fn ran_lately(store: &Store, interval_ms: u64) -> bool {
    let half = i64::try_from(interval_ms / 2).unwrap_or(i64::MAX);
    match store.last_prune().await {
        Ok(Some(last)) => crate::util::now_ms().saturating_sub(last.at) < half,
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(code = e.code(), error = %e, "cannot read the last retention pass");
            false
        }
    }
}

/// Loads the policy plugins off the async executor, with the compile cache in
/// `plugins.cache_dir` (default `DATA/plugin-cache`, created 0700).
pub async fn load_plugins(cfg: &Config, data_dir: &std::path::Path) -> Result<PluginHost> {
    let cache_path = cfg
        .plugins
        .cache_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("plugin-cache"));
    let cache = match crate::datadir::ensure(&cache_path) {
        Ok(p) => cap_std::fs::Dir::open_ambient_dir(&p, cap_std::ambient_authority()).ok(),
        Err(e) => {
            tracing::warn!(error = %e, "plugin compile cache unavailable; compiling every start");
            None
        }
    };
    let pcfg = cfg.plugins.clone();
    let host = tokio::task::spawn_blocking(move || PluginHost::load(&pcfg, cache))
        .await
        .context("plugin loader panicked")?
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("cannot load the policy plugins")?;
    Ok(host)
}

/// Installs the SIGTERM and SIGINT handlers now; the future ends at the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
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
}
