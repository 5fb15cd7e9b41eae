//! The gateway's admin API on its own listener: health, readiness, the running config (secrets
//! redacted), endpoint state, reload and drain. Loopback clients need no token; any other client
//! must send `Authorization: Bearer <token>`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meridian_config::admin_auth;
use serde_json::{json, Value};

use crate::endpoint::flags;
use crate::state::{Gateway, ReloadError};

/// Serves the admin API until the task is aborted.
pub async fn serve(gw: Arc<Gateway>) {
    let addr = {
        let routes = gw.routes.load();
        routes.gateway_spec().map(|g| g.admin.address)
    };
    let Some(addr) = addr else { return };
    let listener = match bind_shared(addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("admin listener {addr}: {e}");
            return;
        }
    };
    tracing::info!("admin listening on {addr}");
    let app = router(gw);
    let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
}

/// Binds with SO_REUSEPORT so a new process taking over in a graceful upgrade can open the admin
/// listener while the old one still drains; the old one closes its own as it hands over.
fn bind_shared(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The admin routes.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/config", get(config))
        .route("/metrics", get(metrics))
        .route("/endpoints", get(endpoints))
        .route("/reload", post(reload))
        .route("/endpoints/{id}/drain", post(drain))
        .route("/endpoints/{id}/undrain", post(undrain))
        .layer(middleware::from_fn_with_state(gw.clone(), authorize))
        .with_state(gw)
}

async fn authorize(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let ok = {
        let routes = gw.routes.load();
        let token = routes
            .gateway_spec()
            .and_then(|g| g.admin.token.as_ref().map(|t| t.expose()));
        admin_auth::permits(peer.ip(), &req, token)
    };
    if ok {
        next.run(req).await
    } else {
        error(StatusCode::UNAUTHORIZED, admin_auth::REFUSAL)
    }
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let draining = gw.drain.draining();
    let ready = gw.ready.load(Ordering::Relaxed) && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "draining": draining }))).into_response()
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let text = gw.metrics.render(&gw);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn config(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    let routes = gw.routes.load();
    Json(json!({
        "generation": routes.generation,
        "file": routes.snap.file,
        "region": gw.region,
        "zone": gw.zone,
        "reloads": {"ok": gw.reloads_ok.load(Ordering::Relaxed), "failed": gw.reloads_failed.load(Ordering::Relaxed),
                    "last_error": *gw.last_reload_error.lock()},
        "config": routes.snap.config,
    }))
}

async fn endpoints(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    let routes = gw.routes.load();
    let now = gw.clock.now();
    let epoch = gw.registry.epoch();
    let mut out = Vec::new();
    for (m, versions) in routes.clusters.iter().enumerate() {
        let model = &routes.snap.models[m];
        for (v, cluster) in versions.iter().enumerate() {
            let loads = cluster.level_loads(epoch);
            for (li, level) in cluster.levels.iter().enumerate() {
                for (ep, weight) in &level.members {
                    let f = ep.flags();
                    out.push(json!({
                        "id": &*ep.id, "address": ep.address, "model": &*model.name, "version": &*model.versions[v].name,
                        "locality": level.kind.label(), "level": li, "level_share": loads.get(li).map(|l| l.share),
                        "panic": loads.get(li).map(|l| l.panic),
                        "weight": weight, "available": f == 0,
                        "healthy": f & flags::UNHEALTHY == 0, "ejected": f & flags::EJECTED != 0,
                        "drained": f & flags::DRAINED != 0,
                        "ejections": ep.outlier.total_ejections.load(Ordering::Relaxed),
                        "in_flight": ep.in_flight(), "ewma_ms": ep.latency(now) / 1e6, "headroom": ep.headroom(),
                    }));
                }
            }
        }
    }
    Json(json!({ "generation": routes.generation, "endpoints": out }))
}

async fn reload(State(gw): State<Arc<Gateway>>) -> Response {
    let gw2 = gw.clone();
    match tokio::task::spawn_blocking(move || gw2.reload()).await {
        Ok(Ok(generation)) => Json(json!({ "generation": generation })).into_response(),
        Ok(Err(ReloadError::Invalid(errors))) => {
            let lines: Vec<_> = errors.0.iter().map(ToString::to_string).collect();
            (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": "config rejected; the previous config keeps serving", "errors": lines })),
            )
                .into_response()
        }
        Ok(Err(ReloadError::Unfit(e))) => error(StatusCode::BAD_REQUEST, &e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "reload task failed"),
    }
}

async fn drain(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    set_drain(&gw, &id, true)
}

async fn undrain(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    set_drain(&gw, &id, false)
}

fn set_drain(gw: &Gateway, id: &str, on: bool) -> Response {
    match gw.registry.by_id(id) {
        Some(ep) => {
            gw.registry.set_flag(&ep, flags::DRAINED, on);
            Json(json!({ "id": id, "drained": on })).into_response()
        }
        None => error(StatusCode::NOT_FOUND, &format!("endpoint {id} not found")),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use crate::clock::SystemClock;
    use crate::state::Gateway;

    const CONFIG: &str = "
regions:
  - name: r
    zones: [r-a]
    gateway:
      listeners: [{ name: public, address: 127.0.0.1:1 }]
      admin: { address: 0.0.0.0:9901, token: s3cret }
models:
  - name: m
    versions: [{ name: v1, endpoints: [{ id: e1, address: 127.0.0.1:2, region: r, zone: r-a }] }]
";

    async fn status(gw: &Arc<Gateway>, peer: &str, auth: Option<&str>) -> StatusCode {
        let app = super::router(gw.clone()).layer(MockConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let mut req = Request::get("/config");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap().status()
    }

    #[tokio::test]
    async fn a_bearer_token_is_required_off_loopback() {
        let dir = std::env::temp_dir().join(format!("meridian-admin-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meridian.yaml");
        std::fs::write(&path, CONFIG).unwrap();
        let gw = Arc::new(Gateway::start(&path, None, None, Arc::new(SystemClock)).unwrap());
        assert_eq!(status(&gw, "127.0.0.1:5000", None).await, StatusCode::OK);
        assert_eq!(status(&gw, "[::1]:5000", None).await, StatusCode::OK);
        assert_eq!(status(&gw, "10.1.2.3:5000", None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(&gw, "10.1.2.3:5000", Some("Bearer wrong")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&gw, "10.1.2.3:5000", Some("s3cret")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&gw, "10.1.2.3:5000", Some("Bearer s3cret")).await,
            StatusCode::OK
        );
    }
}
