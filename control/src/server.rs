//! `meridian control --config FILE --region R`: the region's control loop. Each telemetry
//! interval it probes and scrapes the region's endpoints, publishes the state feed when anything
//! changed, and serves the feed, `/healthz` and `/metrics` on the region's `control.address`.
//! The config file is re-read when it changes; an invalid one is ignored (the last good one stays).

use std::path::Path;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path as AxPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meridian_config::feed::{DiscoveredModel, FeedEndpoint, FEED_PATH};
use meridian_config::{ConfigFile, Snapshot};
use parking_lot::Mutex;
use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use serde_json::json;

use crate::canary::Command;
use crate::collect::{static_targets, Collector};
use crate::discovery::Discoverer;
use crate::feed::Feed;
use crate::headroom::Scoring;
use crate::kserve::{Derived, KServeWatcher};
use crate::runner::{scrape_gateways, Canaries};
use crate::scaler::{Scaler, WakeError};
use meridian_clock::{Clock, SystemClock};

/// Control's own metrics.
pub struct ControlMetrics {
    registry: Registry,
    version: IntGauge,
    rounds: IntCounter,
    scrape_errors: IntCounter,
    endpoints: IntGaugeVec,
    last_round: IntGauge,
}

impl ControlMetrics {
    fn new() -> anyhow::Result<ControlMetrics> {
        let registry = Registry::new();
        let version = IntGauge::new("meridian_control_state_version", "Version of the published state feed")?;
        let rounds = IntCounter::new("meridian_control_rounds_total", "Collection rounds run")?;
        let scrape_errors = IntCounter::new(
            "meridian_control_scrape_errors_total",
            "Endpoint metrics scrapes that failed (unreachable or not Prometheus text)",
        )?;
        let endpoints = IntGaugeVec::new(
            Opts::new("meridian_control_endpoints", "Endpoints by state as control sees them"),
            &["state"],
        )?;
        let last_round = IntGauge::new(
            "meridian_control_last_round_timestamp_seconds",
            "Unix time the last collection round finished",
        )?;
        registry.register(Box::new(version.clone()))?;
        registry.register(Box::new(rounds.clone()))?;
        registry.register(Box::new(scrape_errors.clone()))?;
        registry.register(Box::new(endpoints.clone()))?;
        registry.register(Box::new(last_round.clone()))?;
        Ok(ControlMetrics {
            registry,
            version,
            rounds,
            scrape_errors,
            endpoints,
            last_round,
        })
    }

    fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Runs the control loop of `region` until SIGINT or SIGTERM, bound to `listen` or else to the
/// region's `control.address`.
pub fn run(config: &Path, region: &str, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(config, region, listen))
}

/// What the loop, the feed and the admin API share.
struct Control {
    clock: Arc<dyn Clock>,
    region: String,
    region_index: usize,
    feed: Arc<Feed>,
    metrics: ControlMetrics,
    canaries: Canaries,
    scaler: Scaler,
    /// Models found in the cluster (KServe), published on the feed.
    models: Mutex<Vec<DiscoveredModel>>,
    /// The gateways' metrics client (the scaler's reads).
    http: reqwest::Client,
    snap: Mutex<Arc<Snapshot>>,
    endpoints: Mutex<Vec<FeedEndpoint>>,
}

impl Control {
    fn snap(&self) -> Arc<Snapshot> {
        self.snap.lock().clone()
    }

    /// Publishes the latest endpoints with the canaries' current weights.
    fn publish(&self) -> u64 {
        let snap = self.snap();
        let version = self.feed.publish(
            self.endpoints.lock().clone(),
            self.canaries.weights(&snap),
            self.models.lock().clone(),
        );
        self.metrics.version.set(version as i64);
        version
    }
}

async fn serve(config: &Path, region: &str, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    let file = ConfigFile::new(config);
    let snap = file.load().map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
    let r = snap
        .region(region)
        .ok_or_else(|| anyhow::anyhow!("region `{region}` is not in the config"))?;
    let addr = snap.config.regions[r]
        .control
        .as_ref()
        .map(|c| c.address)
        .ok_or_else(|| anyhow::anyhow!("region `{region}` has no control section (control.address)"))?;
    let metrics = ControlMetrics::new()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let canaries = Canaries::new(&metrics.registry, clock.clone())?;
    let scaler = Scaler::new(&metrics.registry, clock.clone())?;
    let control = Arc::new(Control {
        clock,
        region: region.to_string(),
        region_index: r,
        feed: Arc::new(Feed::new(region)),
        metrics,
        canaries,
        scaler,
        models: Mutex::new(Vec::new()),
        http: reqwest::Client::new(),
        snap: Mutex::new(Arc::new(snap)),
        endpoints: Mutex::new(Vec::new()),
    });
    tokio::spawn(collect_forever(file, control.clone()));

    let addr = listen.unwrap_or(addr);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("control {region} listening on {addr}");
    let feed_routes = Router::new()
        .route(FEED_PATH, get(crate::feed::serve_poll))
        .with_state(control.feed.clone());
    let app = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics_text))
        .route("/v1/canaries", get(list_canaries))
        .route("/v1/canaries/{name}/{command}", post(canary_command))
        .route("/v1/scale/{model}/{version}/wake", post(wake))
        .layer(axum::middleware::from_fn_with_state(control.clone(), authorize))
        .with_state(control)
        .merge(feed_routes);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(stop_signal())
    .await?;
    Ok(())
}

async fn metrics_text(State(c): State<Arc<Control>>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        c.metrics.render(),
    )
        .into_response()
}

async fn list_canaries(State(c): State<Arc<Control>>) -> Json<serde_json::Value> {
    Json(json!({ "region": c.region, "canaries": c.canaries.list() }))
}

async fn canary_command(State(c): State<Arc<Control>>, AxPath((name, command)): AxPath<(String, String)>) -> Response {
    let Some(cmd) = Command::parse(&command) else {
        let msg = format!("unknown command {command}; use pause, resume, abort or promote");
        return (StatusCode::NOT_FOUND, Json(json!({ "error": msg }))).into_response();
    };
    match c.canaries.command(&c.snap(), &name, cmd) {
        Ok(p) => {
            c.publish();
            Json(json!(p)).into_response()
        }
        Err(e) => (StatusCode::CONFLICT, Json(json!({ "error": e.to_string() }))).into_response(),
    }
}

/// A gateway holds requests for a version with no ready endpoint: scale it up now.
async fn wake(State(c): State<Arc<Control>>, AxPath((model, version)): AxPath<(String, String)>) -> Response {
    match c.scaler.wake(&c.snap(), &model, &version).await {
        Ok(replicas) => (StatusCode::ACCEPTED, Json(json!({ "replicas": replicas }))).into_response(),
        Err(e @ WakeError::NotScaled(..)) => {
            (StatusCode::NOT_FOUND, Json(json!({ "error": e.to_string() }))).into_response()
        }
        Err(e) => {
            tracing::error!("wake-up of {model} {version} failed: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": e.to_string() }))).into_response()
        }
    }
}

/// Changes need a bearer token off loopback: the region's gateway admin token (the same operator
/// secret guards both); reads are open like the feed.
async fn authorize(
    State(c): State<Arc<Control>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Reads (the feed, the canary list) are open like the feed itself; changes need the token.
    if req.method() == axum::http::Method::GET {
        return next.run(req).await;
    }
    let checked = {
        let snap = c.snap();
        let admin = snap.config.regions[c.region_index].gateway.as_ref().map(|g| &g.admin);
        meridian_config::admin_auth::check(peer.ip(), &req, admin)
    };
    match checked {
        Ok(()) => next.run(req).await,
        Err(r) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN);
            (status, Json(json!({ "error": r.message }))).into_response()
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `snap` with the `derived` models it does not name itself: those models (for the feed) and the
/// snapshot discovery follows.
fn with_derived(snap: &Arc<Snapshot>, derived: Vec<Derived>) -> (Vec<DiscoveredModel>, Arc<Snapshot>) {
    let fresh: Vec<Derived> = derived
        .into_iter()
        .filter(|d| snap.model(&d.model.name).is_none())
        .collect();
    if fresh.is_empty() {
        return (Vec::new(), snap.clone());
    }
    let mut config = snap.config.clone();
    config.models.extend(fresh.iter().map(Derived::to_model));
    let compiled = Snapshot::compile(meridian_config::Loaded {
        config,
        file: snap.file.clone(),
        base_dir: snap.base_dir.clone(),
    });
    (fresh.into_iter().map(|d| d.model).collect(), Arc::new(compiled))
}

async fn collect_forever(file: ConfigFile, control: Arc<Control>) {
    let mut collector = Collector::new(control.clock.clone());
    let mut discoverer: Option<Discoverer> = None;
    let mut kube: Option<kube::Client> = None;
    let mut kserve: Option<KServeWatcher> = None;
    let mut kube_error_logged = false;
    let region = control.region.clone();
    loop {
        if file.changed() {
            match file.load() {
                Ok(s) if s.region(&region) == Some(control.region_index) => *control.snap.lock() = Arc::new(s),
                Ok(_) => tracing::error!("reloaded config moved or lost region {region}; keeping the previous one"),
                Err(e) => tracing::error!("config rejected, the previous one stays:\n{e}"),
            }
        }
        let snap = control.snap();
        let t = &snap.config.control.telemetry;
        let scoring = Scoring {
            stale_after: (t.interval.get() * t.stale_after_intervals).as_secs_f64(),
            ..Scoring::default()
        };
        let mut targets = static_targets(&snap, &region);
        let wants_kube = snap
            .config
            .models
            .iter()
            .any(|m| m.versions.iter().any(|v| v.discovery.is_some()))
            || Scaler::wanted(&snap)
            || snap.config.control.kserve.is_some();
        if wants_kube && discoverer.is_none() {
            let access = snap.config.control.kubernetes.clone().unwrap_or_default();
            match crate::discovery::client(&access, &snap.base_dir).await {
                Ok(client) => {
                    control.scaler.set_client(client.clone());
                    kube = Some(client.clone());
                    discoverer = Some(Discoverer::new(client));
                }
                Err(e) if !kube_error_logged => {
                    tracing::error!("no Kubernetes API for discovery (static endpoints only until it answers): {e}");
                    kube_error_logged = true;
                }
                Err(_) => {}
            }
        }
        // KServe InferenceServices join the config's models (discovery follows their revisions).
        let (found, found_snap) = match (&snap.config.control.kserve, &kube) {
            (Some(k), Some(client)) => {
                if !kserve.as_ref().is_some_and(|w| w.watches(&k.namespaces)) {
                    kserve = Some(KServeWatcher::new(client, &k.namespaces));
                }
                let derived = kserve.as_ref().map(|w| w.derived(k)).unwrap_or_default();
                with_derived(&snap, derived)
            }
            _ => (Vec::new(), snap.clone()),
        };
        *control.models.lock() = found;
        if let Some(d) = discoverer.as_mut() {
            d.follow(&found_snap);
            targets.extend(d.targets(&found_snap, &region));
        }
        let round = collector.round(&targets, t.source, t.timeout.get(), &scoring).await;
        let metrics = &control.metrics;
        let count = |f: &dyn Fn(&FeedEndpoint) -> bool| round.endpoints.iter().filter(|e| f(e)).count() as i64;
        metrics
            .endpoints
            .with_label_values(&["serving"])
            .set(count(&|e| e.serving()));
        metrics
            .endpoints
            .with_label_values(&["not_ready"])
            .set(count(&|e| !e.ready));
        metrics
            .endpoints
            .with_label_values(&["drained"])
            .set(count(&|e| e.drained));
        metrics.scrape_errors.inc_by(round.scrape_errors);
        *control.endpoints.lock() = round.endpoints;
        control.canaries.evaluate(&snap, control.region_index).await;
        if Scaler::wanted(&snap) {
            let texts = scrape_gateways(&control.http, &snap, control.region_index).await;
            let at = control.clock.now() as f64 / 1e9;
            let concurrency = |m: &str, v: &str| {
                let texts = texts.as_ref().ok()?;
                crate::analysis::sample(texts, m, v, at).ok().map(|s| s.concurrency)
            };
            control.scaler.round(&snap, concurrency).await;
        }
        control.publish();
        metrics.rounds.inc();
        metrics.last_round.set(control.clock.unix_secs() as i64);
        tokio::time::sleep(t.interval.get()).await;
    }
}
