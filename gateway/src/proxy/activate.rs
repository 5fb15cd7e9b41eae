//! The activation stage (after admission, before the first try): a request for a version that
//! scales from zero and has no endpoint ready is held in the version's
//! [`meridian_gateway_core::activation::Activator`] instead of failing, the region's control loop
//! is asked to wake the version ([`crate::wake::Waker`], once however many wait), and the request
//! goes on when an endpoint is ready, on the routing table current then. The time held does not
//! count against the request's own timeout: the activation timeout bounds it.

use meridian_gateway_core::decide::Routed;
use meridian_gateway_core::reply::Reply;

use super::context::Ctx;
use super::Proxy;
use crate::routes::Routes;

impl Proxy {
    /// Holds `routed` while its version has no endpoint ready; the routed request (moved onto the
    /// current table when it was held), or the answer when no endpoint came in time.
    pub(super) async fn activate(&self, ctx: &mut Ctx, routed: Routed) -> Result<Routed, Reply> {
        let Some(routes) = ctx.routes.clone() else {
            return Ok(routed);
        };
        let route = routes.version(routed.model, routed.version);
        let Some(activator) = &route.activator else {
            return Ok(routed);
        };
        let seen = activator.releases();
        if route.cluster.endpoints().any(|e| e.available()) {
            return Ok(routed);
        }
        let entry = &routes.snap.models[routed.model];
        let version = &entry.versions[routed.version].name;
        let now = self.routing.clock.now();
        if activator.should_wake(now) {
            self.waker.wake(&routes, &entry.name, version);
        }
        let held = self.metrics.held.with_label_values(&[&entry.name, version]);
        held.inc();
        let outcome = activator.hold(routed.class, seen, tokio::time::sleep).await;
        held.dec();
        ctx.held += self.routing.clock.now().saturating_sub(now);
        if let Err(not) = outcome {
            self.metrics
                .not_woken
                .with_label_values(&[&entry.name, version, not.label()])
                .inc();
            return Err(not.reply(&entry.name, version, activator.timeout()));
        }
        let current = self.routing.routes.load_full();
        match moved(&routes, &current, routed) {
            Some(moved) => {
                ctx.labels.model = Some(moved.model);
                ctx.labels.version = Some(moved.version);
                ctx.routes = Some(current);
                Ok(moved)
            }
            None => Ok(routed),
        }
    }
}

/// `routed` (made on `from`) on table `to`, by model and version names; `None` when `to` no
/// longer has them.
fn moved(from: &Routes, to: &Routes, routed: Routed) -> Option<Routed> {
    let entry = &from.snap.models[routed.model];
    let model = to.snap.model(&entry.name)?;
    let target = &to.snap.models[model];
    let version = |v: usize| target.version(&entry.versions[v].name);
    Some(Routed {
        model,
        version: version(routed.version)?,
        shadow: routed.shadow.and_then(version),
        ..routed
    })
}
