//! Shadow (mirror) traffic: a copy of a request goes to another version after the client's request
//! is complete; its response is read and dropped. It runs on its own task, so it never delays or
//! fails the client's request.

use std::sync::Arc;

use meridian_config::snapshot::{ModelId, VersionId};
use meridian_gateway_core::head::RequestHead;

use crate::routes::{Routes, Routing};

/// Header marking a mirrored request, so backends and their metrics can tell copies apart.
pub const SHADOW_HEADER: &str = "x-meridian-shadow";

/// What mirroring needs: its own HTTP client, and the endpoint states and time the pick reads
/// (the copy counts in its endpoint's in-flight load).
pub struct Mirror {
    /// The client the copies go out on.
    pub client: reqwest::Client,
    /// Endpoint states and time.
    pub routing: Arc<Routing>,
}

impl Mirror {
    /// Sends a copy of `req` with `body` to version `version` of `model` in the background.
    pub fn send(
        &self,
        routes: &Routes,
        model: ModelId,
        version: VersionId,
        req: &impl RequestHead,
        body: Vec<bytes::Bytes>,
    ) {
        let cluster = &routes.version(model, version).cluster;
        let Some(pick) = cluster.pick(
            self.routing.registry.epoch(),
            self.routing.clock.now(),
            &mut rand::rng(),
            &[],
        ) else {
            return;
        };
        let url = format!("http://{}{}", pick.endpoint.address, req.path_and_query());
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in req.fields() {
            if matches!(
                k,
                b"host" | b"content-length" | b"connection" | b"transfer-encoding" | b"keep-alive"
            ) {
                continue;
            }
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k),
                reqwest::header::HeaderValue::from_bytes(v),
            ) {
                headers.append(k, v);
            }
        }
        headers.insert(SHADOW_HEADER, reqwest::header::HeaderValue::from_static("true"));
        let method = req.method().clone();
        let timeout = routes.snap.models[model].policy.timeouts.request.get();
        let client = self.client.clone();
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
}

/// A request being mirrored: its body captured as it streams to the primary, up to the replay
/// limit; the copy goes out once the client's request is complete, unless the body overflowed.
pub struct ShadowCopy {
    /// The version that gets the copy.
    pub version: VersionId,
    body: Vec<bytes::Bytes>,
    size: usize,
    limit: usize,
    overflow: bool,
}

impl ShadowCopy {
    /// An empty copy for `version`, holding at most `limit` body bytes.
    pub fn new(version: VersionId, limit: usize) -> ShadowCopy {
        ShadowCopy {
            version,
            body: Vec::new(),
            size: 0,
            limit,
            overflow: false,
        }
    }

    /// Captures the next chunk of the body.
    pub fn add(&mut self, chunk: &bytes::Bytes) {
        self.size += chunk.len();
        if self.size > self.limit {
            self.overflow = true;
            self.body.clear();
        } else if !self.overflow {
            self.body.push(chunk.clone());
        }
    }

    /// The captured body, unless it overflowed the limit.
    pub fn into_body(self) -> Option<Vec<bytes::Bytes>> {
        (!self.overflow).then_some(self.body)
    }
}
