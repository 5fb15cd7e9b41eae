//! The DNS server's admin API: the status page (`/`, `/status.json`), `/healthz`, `/metrics`, and `/regions` (each region's health as this
//! server sees it, with the reason), plus `POST /reload`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;

use crate::state::DnsState;

/// Serves the admin API on `addr` until the task is aborted.
pub async fn serve(state: Arc<DnsState>, addr: SocketAddr) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("dns admin listener {addr}: {e}");
            return;
        }
    };
    let app = Router::new()
        .route("/", get(status_page))
        .route("/status.json", get(status_json))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .route("/regions", get(regions))
        .route("/reload", post(reload))
        .route("/regions/{region}/report", put(report))
        .layer(axum::middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
}

/// Off loopback, changes (reload, control reports) and the region view need `dns.admin.token`.
async fn authorize(
    State(state): State<Arc<DnsState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let checked = {
        let zones = state.zones.load();
        meridian_config::admin_auth::check(peer.ip(), &req, zones.snap.config.dns.as_ref().map(|d| &d.admin))
    };
    match checked {
        Ok(()) => next.run(req).await,
        // The page itself, without its state: it asks for the token and fetches itself with it.
        Err(r) if r.status == 401 && req.uri().path() == "/" => {
            Html(crate::status::page(&state).html(false, REFRESH_MS)).into_response()
        }
        Err(r) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN);
            (status, Json(json!({ "error": r.message }))).into_response()
        }
    }
}

/// How often the status page refreshes its cells.
const REFRESH_MS: u32 = 2000;

async fn status_page(State(state): State<Arc<DnsState>>) -> Response {
    Html(crate::status::page(&state).html(true, REFRESH_MS)).into_response()
}

async fn status_json(State(state): State<Arc<DnsState>>) -> Json<serde_json::Value> {
    Json(crate::status::page(&state).json())
}

fn region_view(state: &DnsState) -> Vec<(String, bool, String)> {
    // Probe view only; control reports are shown by `regions`.
    let zones = state.zones.load();
    let health = state.by_index.load();
    zones
        .regions
        .iter()
        .zip(health.iter())
        .map(|(r, h)| {
            (
                r.name.to_string(),
                h.healthy.load(Ordering::Relaxed),
                h.reason.lock().map(|s| s.clone()).unwrap_or_default(),
            )
        })
        .collect()
}

async fn metrics(State(state): State<Arc<DnsState>>) -> Response {
    let regions: Vec<(String, bool)> = region_view(&state).into_iter().map(|(n, h, _)| (n, h)).collect();
    let now = state.clock.now();
    let staleness: Vec<(String, f64)> = state
        .health
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|(name, h)| Some((name.clone(), h.feed_staleness(now)?)))
        .collect();
    let text = state.metrics.render(&regions, &staleness);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn regions(State(state): State<Arc<DnsState>>) -> Json<serde_json::Value> {
    let health = state.health();
    let list: Vec<_> = region_view(&state)
        .into_iter()
        .enumerate()
        .map(|(i, (name, probes_pass, reason))| {
            json!({
                "region": name,
                "healthy": health.up(i, &[]),
                "probes_pass": probes_pass,
                "reason": reason,
                "control_report": health.capacity.get(i).cloned().flatten(),
            })
        })
        .collect();
    Json(json!({ "serial": state.serial(), "regions": list }))
}

/// A control loop's report: healthy endpoints per model in the region.
#[derive(serde::Deserialize)]
struct Report {
    models: std::collections::HashMap<String, u32>,
}

async fn report(State(state): State<Arc<DnsState>>, Path(region): Path<String>, Json(r): Json<Report>) -> Response {
    if state.report(&region, r.models) {
        Json(json!({ "region": region, "accepted": true })).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("region {region} not found") })),
        )
            .into_response()
    }
}

async fn reload(State(state): State<Arc<DnsState>>) -> Response {
    let s = state.clone();
    match tokio::task::spawn_blocking(move || s.reload()).await {
        Ok(Ok(serial)) => Json(json!({ "serial": serial })).into_response(),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, Json(json!({ "error": "config rejected; the previous zones keep answering", "errors": e.to_string().lines().collect::<Vec<_>>() }))).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "reload task failed"}))).into_response(),
    }
}
