//! `meridian control --config FILE --region R`: the region's control loop. Each telemetry
//! interval it probes and scrapes the region's endpoints, publishes the state feed when anything
//! changed, and serves the feed, `/healthz` and `/metrics` on the region's `control.address`.
//! The config file is re-read when it changes; an invalid one is ignored (the last good one stays).

use std::path::Path;
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use meridian_config::feed::FEED_PATH;
use meridian_config::{ConfigFile, Snapshot};
use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use serde_json::json;

use crate::collect::{static_targets, Collector};
use crate::feed::Feed;
use crate::headroom::Scoring;

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

/// Runs the control loop of `region` until SIGINT or SIGTERM.
pub fn run(config: &Path, region: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(config, region))
}

async fn serve(config: &Path, region: &str) -> anyhow::Result<()> {
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
    let feed = Arc::new(Feed::new(region));
    let metrics = Arc::new(ControlMetrics::new()?);
    tokio::spawn(collect_forever(
        file,
        snap,
        region.to_string(),
        feed.clone(),
        metrics.clone(),
    ));

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("control {region} listening on {addr}");
    let app = Router::new()
        .route(FEED_PATH, get(crate::feed::serve_poll))
        .with_state(feed.clone())
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        m.render(),
                    )
                }
            }),
        );
    axum::serve(listener, app).with_graceful_shutdown(stop_signal()).await?;
    Ok(())
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

async fn collect_forever(
    file: ConfigFile,
    mut snap: Snapshot,
    region: String,
    feed: Arc<Feed>,
    metrics: Arc<ControlMetrics>,
) {
    let mut collector = Collector::default();
    loop {
        if file.changed() {
            match file.load() {
                Ok(s) if s.region(&region).is_some() => snap = s,
                Ok(_) => tracing::error!("reloaded config lost region {region}; keeping the previous one"),
                Err(e) => tracing::error!("config rejected, the previous one stays:\n{e}"),
            }
        }
        let t = &snap.config.control.telemetry;
        let scoring = Scoring {
            stale_after: (t.interval.get() * t.stale_after_intervals).as_secs_f64(),
            ..Scoring::default()
        };
        let targets = static_targets(&snap, &region);
        let round = collector.round(&targets, t.source, t.timeout.get(), &scoring).await;
        let count = |f: &dyn Fn(&meridian_config::feed::FeedEndpoint) -> bool| {
            round.endpoints.iter().filter(|e| f(e)).count() as i64
        };
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
        let version = feed.publish(round.endpoints);
        metrics.version.set(version as i64);
        metrics.rounds.inc();
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        metrics.last_round.set(unix);
        tokio::time::sleep(t.interval.get()).await;
    }
}
