//! Shadow (mirror) traffic: a copy of a request goes to another version after the client's request
//! is complete; its response is read and dropped. It runs on its own task, so it never delays or
//! fails the client's request.

use std::sync::Arc;

use pingora::http::RequestHeader;

use crate::routes::Routes;
use crate::state::Gateway;

/// Header marking a mirrored request, so backends and their metrics can tell copies apart.
pub const SHADOW_HEADER: &str = "x-meridian-shadow";

/// Sends the copy in the background.
pub fn send(
    gw: &Arc<Gateway>,
    routes: &Routes,
    model: usize,
    version: usize,
    req: &RequestHeader,
    body: Vec<bytes::Bytes>,
) {
    let cluster = &routes.clusters[model][version];
    let Some(pick) = cluster.pick(gw.registry.epoch(), gw.clock.now(), &mut rand::rng(), &[]) else {
        return;
    };
    let url = format!(
        "http://{}{}",
        pick.endpoint.address,
        req.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in req.headers.iter() {
        if !matches!(
            k.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding" | "keep-alive"
        ) {
            headers.append(k.clone(), v.clone());
        }
    }
    headers.insert(SHADOW_HEADER, reqwest::header::HeaderValue::from_static("true"));
    let method = req.method.clone();
    let timeout = routes.snap.models[model].policy.timeouts.request.get();
    let client = gw.shadow_client.clone();
    tokio::spawn(async move {
        let _in_flight = pick.endpoint.start();
        let body: Vec<u8> = body.concat();
        let sent = client
            .request(method, url)
            .headers(headers)
            .body(body)
            .timeout(timeout)
            .send()
            .await;
        if let Ok(resp) = sent {
            let _ = resp.bytes().await;
        }
    });
}
