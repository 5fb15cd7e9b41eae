//! The gateway's admin API on its own listener: health, readiness, the running config (secrets
//! redacted), endpoint state, reload and drain. Loopback clients need no token; any other client
//! must send `Authorization: Bearer <token>`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meridian_config::admin_auth;
use meridian_gateway_core::endpoint::{flags, Registry};
use meridian_gateway_core::llm::state::LlmState;
use serde_json::{json, Value};

use crate::explain;
use crate::exposition::Exposition;
use crate::lifecycle::Lifecycle;
use crate::reloader::{ReloadError, Reloader};
use crate::routes::Routing;
use crate::status::{self, StatusSource};

/// What the admin API reads and acts on.
pub struct AdminApi {
    /// The table (the admin address and token, the endpoints by locality) and endpoint states
    /// (drain and undrain).
    pub routing: Arc<Routing>,
    /// Reloads and their counters.
    pub reloader: Arc<Reloader>,
    /// Readiness and draining (`/readyz`).
    pub lifecycle: Arc<Lifecycle>,
    /// `/metrics`.
    pub exposition: Arc<Exposition>,
    /// The status page's sources (request rates, the control feed).
    pub status: Arc<StatusSource>,
}

type Api = State<Arc<AdminApi>>;

/// Serves the admin API until the task is aborted.
pub async fn serve(api: Arc<AdminApi>) {
    let addr = {
        let routes = api.routing.routes.load();
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
    let app = router(api);
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
pub fn router(api: Arc<AdminApi>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/status.json", get(status_json))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/config", get(config))
        .route("/metrics", get(metrics))
        .route("/endpoints", get(endpoints))
        .route("/reload", post(reload))
        .route("/explain", post(explain))
        .route("/endpoints/{id}/drain", post(drain))
        .route("/endpoints/{id}/undrain", post(undrain))
        .layer(middleware::from_fn_with_state(api.clone(), authorize))
        .with_state(api)
}

async fn authorize(
    State(api): Api,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let checked = {
        let routes = api.routing.routes.load();
        admin_auth::check(peer.ip(), &req, routes.gateway_spec().map(|g| &g.admin))
    };
    match checked {
        Ok(()) => next.run(req).await,
        // The page itself, without its state: it asks for the token and fetches itself with it.
        Err(r) if r.status == 401 && req.uri().path() == "/" => {
            Html(status_of(&api).html(false, REFRESH_MS)).into_response()
        }
        Err(r) => error(
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN),
            &r.message,
        ),
    }
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

/// How often the status page refreshes its cells.
const REFRESH_MS: u32 = 2000;

/// The status page from the admin API's parts.
fn status_of(api: &AdminApi) -> meridian_statuspage::Page {
    status::page(&status::Parts {
        routing: &api.routing,
        reloader: &api.reloader,
        lifecycle: &api.lifecycle,
        status: &api.status,
    })
}

async fn status_page(State(api): Api) -> Response {
    Html(status_of(&api).html(true, REFRESH_MS)).into_response()
}

async fn status_json(State(api): Api) -> Json<Value> {
    Json(status_of(&api).json())
}

async fn readyz(State(api): Api) -> Response {
    let draining = api.lifecycle.draining();
    let ready = api.lifecycle.ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "draining": draining }))).into_response()
}

async fn metrics(State(api): Api) -> Response {
    let text = api.exposition.render();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn config(State(api): Api) -> Json<Value> {
    let routes = api.routing.routes.load();
    let reloads = api.reloader.stats();
    Json(json!({
        "generation": routes.generation,
        "file": routes.snap.file,
        "region": api.reloader.region(),
        "zone": api.reloader.zone(),
        "reloads": {"ok": reloads.ok, "failed": reloads.failed, "last_error": reloads.last_error},
        "config": routes.snap.config,
    }))
}

async fn endpoints(State(api): Api) -> Json<Value> {
    let routes = api.routing.routes.load();
    let now = api.routing.clock.now();
    let epoch = api.routing.registry.epoch();
    let mut out = Vec::new();
    for (m, v, version) in routes.versions() {
        let model = &routes.snap.models[m];
        let cluster = &version.cluster;
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
                    "llm": ep.llm().map(|l| llm_json(l)),
                }));
            }
        }
    }
    Json(json!({ "generation": routes.generation, "endpoints": out }))
}

/// What the LLM-aware pick knows of an endpoint.
fn llm_json(l: &LlmState) -> Value {
    let lora = l.lora();
    let names = |v: &[Arc<str>]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    json!({
        "freshness": format!("{:?}", l.freshness()).to_lowercase(),
        "index_blocks": l.index.capacity(),
        "prompt_tokens_in_flight": l.tokens_in_flight(),
        "waiting": l.waiting(), "running": l.running(), "kv_usage": l.kv_usage(),
        "lora": {"max": lora.max, "running": names(&lora.running), "waiting": names(&lora.waiting)},
    })
}

async fn reload(State(api): Api) -> Response {
    let reloader = api.reloader.clone();
    match tokio::task::spawn_blocking(move || reloader.reload()).await {
        Ok(Ok(generation)) => Json(json!({ "generation": generation })).into_response(),
        Ok(Err(ReloadError::Invalid(errors))) => {
            let lines: Vec<_> = errors.0.iter().map(ToString::to_string).collect();
            (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": "config rejected; the previous config keeps serving", "errors": lines })),
            )
                .into_response()
        }
        Ok(Err(e @ ReloadError::Unfit(_))) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "reload task failed"),
    }
}

/// `POST /explain[?format=text]` with a [`explain::Query`] body: why that request would go where it
/// goes now.
async fn explain(State(api): Api, Query(format): Query<Format>, body: axum::body::Bytes) -> Response {
    let query: explain::Query = match serde_json::from_slice(&body) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("explain body: {e}")),
    };
    match explain::explain(&api.routing, &query) {
        Ok(x) if format.format.as_deref() == Some("text") => (
            [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            explain::render_text(&x),
        )
            .into_response(),
        Ok(x) => Json(x).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

/// `?format=` of `/explain`.
#[derive(serde::Deserialize)]
struct Format {
    format: Option<String>,
}

async fn drain(State(api): Api, Path(id): Path<String>) -> Response {
    set_drain(&api.routing.registry, &id, true)
}

async fn undrain(State(api): Api, Path(id): Path<String>) -> Response {
    set_drain(&api.routing.registry, &id, false)
}

fn set_drain(registry: &Registry, id: &str, on: bool) -> Response {
    match registry.by_id(id) {
        Some(ep) => {
            registry.set_flag(&ep, flags::DRAINED, on);
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

    use meridian_gateway_core::clock::SystemClock;

    use crate::gateway::Gateway;

    /// One region whose admin listener is off loopback, with a token.
    fn config() -> String {
        use meridian_config::build;
        let mut cfg = meridian_config::Config::default();
        let mut region = build::region("r", &["r-a"]);
        let mut gw = build::gateway("127.0.0.1:1".parse().unwrap(), "0.0.0.0:9901".parse().unwrap());
        gw.admin.token = Some(meridian_config::schema::Secret("s3cret".into()));
        region.gateway = Some(gw);
        cfg.regions.push(region);
        let mut model = build::model("m");
        let mut version = build::version("v1");
        let at = "127.0.0.1:2".parse().unwrap();
        version.endpoints.push(build::endpoint(Some("e1"), at, "r", "r-a"));
        model.versions.push(version);
        cfg.models.push(model);
        meridian_config::to_yaml(&cfg)
    }

    async fn get(gw: &Gateway, path: &str, peer: &str, auth: Option<&str>) -> (StatusCode, String) {
        let app = super::router(Arc::new(gw.admin())).layer(MockConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let mut req = Request::get(path).header("host", "127.0.0.1:9901");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_status_page_asks_for_the_token_off_loopback_and_shows_nothing_without_it() {
        let dir = std::env::temp_dir().join(format!("meridian-admin-page-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meridian.yaml");
        std::fs::write(&path, config()).unwrap();
        let gw = Gateway::start(&path, None, None, Arc::new(SystemClock)).unwrap();
        // Loopback: the whole page, with its endpoint and the login form hidden.
        let (status, html) = get(&gw, "/", "127.0.0.1:5000", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains("<td>e1</td>") && html.contains("<form id=\"login\" hidden>"),
            "{html}"
        );
        // Elsewhere without a token: the page asks for one and holds no state.
        let (status, html) = get(&gw, "/", "10.1.2.3:5000", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("<form id=\"login\">") && !html.contains("e1"), "{html}");
        assert_eq!(
            get(&gw, "/status.json", "10.1.2.3:5000", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        // With the token (as the page's script sends it): the page and its cells.
        let (status, html) = get(&gw, "/", "10.1.2.3:5000", Some("Bearer s3cret")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("<td>e1</td>"), "{html}");
        let (status, json) = get(&gw, "/status.json", "10.1.2.3:5000", Some("Bearer s3cret")).await;
        assert_eq!(status, StatusCode::OK);
        let cells: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(cells["cells"]["ep/m/v1/e1/state"][0], "available", "{cells}");
    }

    async fn status(gw: &Gateway, peer: &str, auth: Option<&str>) -> StatusCode {
        status_for(gw, peer, auth, "127.0.0.1:9901").await
    }

    async fn status_for(gw: &Gateway, peer: &str, auth: Option<&str>, host: &str) -> StatusCode {
        let app = super::router(Arc::new(gw.admin())).layer(MockConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let mut req = Request::get("/config").header("host", host);
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
        std::fs::write(&path, config()).unwrap();
        let gw = Gateway::start(&path, None, None, Arc::new(SystemClock)).unwrap();
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
        // DNS rebinding: a page whose name now resolves to loopback is refused, token or not.
        assert_eq!(
            status_for(&gw, "127.0.0.1:5000", None, "evil.example:9901").await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status_for(&gw, "10.1.2.3:5000", Some("Bearer s3cret"), "evil.example").await,
            StatusCode::FORBIDDEN
        );
    }
}
