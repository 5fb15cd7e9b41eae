//! `meridian gpu-agent`: runs on each GPU node and serves its GPUs' health, `/gpus` as JSON and
//! `/metrics` as Prometheus text (which control scrapes with the `gpu-agent` telemetry source).
//! Readings are taken on a thread of their own (NVML calls block); without NVML the agent says so
//! in both views and keeps running, trying again every 30 seconds.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use meridian_clock::{Clock, SystemClock};

use crate::gpu::{AgentView, GpuError, GpuSource};

/// Runs the agent until SIGINT or SIGTERM.
pub fn run(listen: SocketAddr, interval: Duration) -> anyhow::Result<()> {
    let view = Arc::new(RwLock::new(AgentView::default()));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    std::thread::Builder::new().name("nvml".into()).spawn({
        let view = view.clone();
        move || {
            read_forever(&view, interval, &*clock.clone(), || {
                crate::nvml::NvmlSource::init(clock.clone()).map(|s| Box::new(s) as _)
            })
        }
    })?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("gpu-agent listening on {listen}");
        axum::serve(listener, router(view))
            .with_graceful_shutdown(crate::server::stop_signal())
            .await?;
        anyhow::Ok(())
    })
}

/// The agent's HTTP API over a shared view.
pub fn router(view: Arc<RwLock<AgentView>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/gpus", get(gpus))
        .route("/metrics", get(metrics))
        .with_state(view)
}

async fn gpus(State(view): State<Arc<RwLock<AgentView>>>) -> Json<AgentView> {
    Json(view.read().unwrap_or_else(|p| p.into_inner()).clone())
}

async fn metrics(State(view): State<Arc<RwLock<AgentView>>>) -> impl axum::response::IntoResponse {
    let text = view.read().unwrap_or_else(|p| p.into_inner()).render();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Keeps `view` current from the source `open` gives, reopening it after failures.
pub fn read_forever(
    view: &RwLock<AgentView>,
    interval: Duration,
    clock: &dyn Clock,
    open: impl Fn() -> Result<Box<dyn GpuSource>, GpuError>,
) {
    loop {
        let mut source = match open() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("no GPU telemetry on this node: {e}");
                *view.write().unwrap_or_else(|p| p.into_inner()) = AgentView {
                    error: Some(e.to_string()),
                    updated_unix: clock.unix_secs(),
                    ..AgentView::default()
                };
                std::thread::sleep(Duration::from_secs(30));
                continue;
            }
        };
        let driver = source.driver();
        loop {
            let polled = source.poll(interval);
            let mut v = view.write().unwrap_or_else(|p| p.into_inner());
            match polled {
                Ok(gpus) => {
                    *v = AgentView {
                        nvml_available: true,
                        error: None,
                        driver_version: driver.clone(),
                        gpus,
                        updated_unix: clock.unix_secs(),
                    };
                }
                Err(e) => {
                    // Keep the last readings (their timestamp ages) and say what went wrong.
                    v.nvml_available = false;
                    v.error = Some(e.to_string());
                    break;
                }
            }
        }
        std::thread::sleep(interval);
    }
}
