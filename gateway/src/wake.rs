//! Asking the region's control loop to wake a version scaled to zero: `POST
//! /v1/scale/{model}/{version}/wake` on its admin address, with the gateway's admin token when one
//! is set (control accepts the region's operator token). Fire and forget: the request that asked is
//! held until an endpoint is ready whatever the answer, and the next held request asks again after
//! [`meridian_gateway_core::activation::WAKE_EVERY`].

use std::time::Duration;

use crate::routes::Routes;

/// Sends wake-ups.
#[derive(Clone, Default)]
pub struct Waker {
    client: reqwest::Client,
}

impl Waker {
    /// Asks control to wake `model` `version` (in the background).
    pub fn wake(&self, routes: &Routes, model: &str, version: &str) {
        let Some(control) = routes.region().control.as_ref() else {
            tracing::warn!(model, version, "no ready endpoint and no control loop to wake it");
            return;
        };
        let url = format!("http://{}/v1/scale/{model}/{version}/wake", control.address);
        let mut req = self.client.post(url).timeout(Duration::from_secs(5));
        if let Some(token) = routes.gateway_spec().and_then(|g| g.admin.token.as_ref()) {
            req = req.bearer_auth(token.expose());
        }
        let (model, version) = (model.to_string(), version.to_string());
        tokio::spawn(async move {
            match req.send().await {
                Ok(r) if r.status().is_success() => tracing::info!(model, version, "asked control to wake it"),
                Ok(r) => tracing::warn!(model, version, status = %r.status(), "control refused the wake-up"),
                Err(e) => tracing::warn!(model, version, "control did not take the wake-up: {e}"),
            }
        });
    }
}
