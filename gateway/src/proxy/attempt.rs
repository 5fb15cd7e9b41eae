//! Each upstream try and what its end decides: the outcome fed to outlier detection (once per try),
//! the endpoint's latency, and whether another try may go out. A retry needs a reason the route
//! allows, no response byte written to the client, a body that can be replayed, the attempt count,
//! a token from the retry budget, and (for a 503) another endpoint to go to.

use meridian_config::schema::RetryOn;
use meridian_gateway_core::clock::Nanos;
use meridian_gateway_core::cluster::Pick;
use meridian_gateway_core::outlier::Outcome;
use meridian_gateway_core::reply::Reply;
use pingora::protocols::http::ServerSession;
use pingora::{Error, ErrorSource, ErrorType};

use super::context::{Attempt, Ctx};
use super::downstream::Downstream;
use super::Proxy;
use crate::metrics::OUTCOMES;

impl Proxy {
    /// Starts a try at `pick`, ending the previous try's span.
    pub(super) fn start_attempt(&self, method: &http::Method, ctx: &mut Ctx, pick: Pick, now: Nanos) {
        ctx.end_attempt_span();
        ctx.tried.push(pick.endpoint.address);
        let span = match (&self.telemetry, &ctx.trace, ctx.routed()) {
            (Some(t), Some(server), Some((routes, routed))) => {
                let level = routes
                    .version(routed.model, routed.version)
                    .cluster
                    .levels
                    .get(pick.level);
                let ep = &pick.endpoint;
                Some(t.attempt_span(
                    server,
                    method.as_str(),
                    &ep.id,
                    ep.address,
                    ctx.tried.len() - 1,
                    level.map_or("", |l| l.kind.label()),
                ))
            }
            _ => None,
        };
        // LLM routing: the endpoint now holds the prompt's blocks, and their prefill is its load.
        let prompt = ctx.flight.as_ref().and_then(|f| f.prompt.as_ref());
        let prefill = pick.endpoint.llm().zip(prompt).map(|(state, p)| {
            state.index.insert(&p.chain);
            state.start_prefill((p.tokens as f64 * (1.0 - pick.prefix)) as u64)
        });
        ctx.attempt = Some(Attempt {
            in_flight: Some(pick.endpoint.start()),
            prefill,
            pick,
            started: now,
            recorded: false,
            retrying_503: false,
            status: 0,
            error: None,
            span,
        });
    }

    /// Feeds the current try's outcome to outlier detection, once.
    pub(super) fn record(&self, ctx: &mut Ctx, outcome: Outcome) {
        let (Some(attempt), Some(routes), Some(flight)) =
            (ctx.attempt.as_mut(), ctx.routes.as_ref(), ctx.flight.as_ref())
        else {
            return;
        };
        if attempt.recorded {
            return;
        }
        attempt.recorded = true;
        let (model, version) = (flight.routed.model, flight.routed.version);
        let entry = &routes.snap.models[model];
        let cfg = &entry.policy.outlier_detection;
        let ep = &attempt.pick.endpoint;
        let i = match outcome {
            Outcome::Success => 0,
            Outcome::ServerError => 1,
            Outcome::GatewayFailure => 2,
        };
        match routes.version(model, version).attempts.get(&ep.address) {
            Some(series) => series[i].inc(),
            None => {
                let labels = [&*entry.name, &*entry.versions[version].name, &*ep.id, OUTCOMES[i]];
                self.metrics.attempts.with_label_values(&labels).inc();
            }
        }
        if let Some(reason) = self.routing.detector.record(ep, outcome, cfg) {
            let members: Vec<_> = routes.version(model, version).cluster.endpoints().collect();
            if self
                .routing
                .detector
                .eject(&self.routing.registry, &members, ep, self.routing.clock.now(), cfg)
            {
                tracing::warn!(endpoint = %ep.id, ?reason, "endpoint ejected");
                self.metrics
                    .ejections
                    .with_label_values(&[&ep.id, reason.label()])
                    .inc();
            }
        }
    }

    /// Whether another try is allowed for `why`; takes a retry from the budget if so.
    pub(super) fn may_retry(&self, ctx: &mut Ctx, why: RetryOn, d: &impl Downstream) -> bool {
        let Some((routes, routed)) = ctx.routed() else {
            return false;
        };
        let entry = &routes.snap.models[routed.model];
        let r = &entry.policy.retries;
        let attempts = ctx.tried.len() as u32;
        if attempts > r.attempts || !r.on.contains(&why) || d.written().is_some() {
            return false;
        }
        if d.truncated() {
            return false; // the body streamed past the replay buffer; it cannot be sent again
        }
        let Some(token) = self.budget.try_retry(r.budget_percent, r.min_concurrent) else {
            return false;
        };
        let reason = match why {
            RetryOn::ConnectFailure => "connect-failure",
            RetryOn::RefusedStream => "refused-stream",
            RetryOn::Reset => "reset",
            RetryOn::Unavailable => "unavailable",
        };
        self.metrics.retries.with_label_values(&[&entry.name, reason]).inc();
        ctx.retry = Some(token);
        true
    }

    /// The try's response header arrived with `status`: latency, outcome, and whether a 503 goes
    /// to another endpoint (true: retry).
    pub(super) fn response_status(&self, d: &impl Downstream, status: u16, ctx: &mut Ctx) -> bool {
        let now = self.routing.clock.now();
        if let Some(a) = ctx.attempt.as_mut() {
            a.status = status;
            let rtt = now.saturating_sub(a.started);
            a.pick.endpoint.observe_latency(now, rtt);
            if let Some((routes, routed)) = ctx.routed() {
                let series = &routes.version(routed.model, routed.version).series;
                series.attempt_latency.observe(rtt as f64 / 1e9);
            }
        }
        self.record(ctx, Outcome::of_status(status));
        if status == 503 && self.may_retry(ctx, RetryOn::Unavailable, d) && has_other(ctx) {
            if let Some(a) = ctx.attempt.as_mut() {
                a.retrying_503 = true;
            }
            return true;
        }
        false
    }

    /// The pingora leg's response header: a 503 retried elsewhere becomes a retryable error.
    pub(super) fn response_header(&self, session: &ServerSession, status: u16, ctx: &mut Ctx) -> pingora::Result<()> {
        if self.response_status(session, status, ctx) {
            let mut e = Error::explain(ErrorType::HTTPStatus(503), "backend unavailable, retrying elsewhere");
            e.set_retry(true);
            return Err(e);
        }
        Ok(())
    }

    /// The try could not connect.
    pub(super) fn connect_failed(&self, session: &ServerSession, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
        self.record(ctx, Outcome::GatewayFailure);
        if let Some(a) = ctx.attempt.as_mut() {
            a.in_flight = None;
            a.error = Some(e.etype().as_str());
        }
        let retry = self.may_retry(ctx, RetryOn::ConnectFailure, session);
        e.set_retry(retry);
        e
    }

    /// The try failed after connecting (a reset, a read error, our own refusal).
    pub(super) fn proxy_failed(&self, peer: &str, session: &ServerSession, e: Box<Error>, ctx: &mut Ctx) -> Box<Error> {
        let mut e = e.more_context(format!("endpoint {peer}"));
        if ctx.attempt.as_ref().is_some_and(|a| a.retrying_503) {
            e.set_retry(true);
            return e;
        }
        if ctx.refusal.is_some() {
            // Our own refusal (a body over the limit): not the endpoint's failure, and final.
            e.set_retry(false);
            return e;
        }
        self.record(ctx, Outcome::GatewayFailure);
        if let Some(a) = ctx.attempt.as_mut() {
            a.error = Some(e.etype().as_str());
        }
        let reset = matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::H2Error
        ) && *e.esource() == ErrorSource::Upstream;
        let retry = reset && self.may_retry(ctx, RetryOn::Reset, session);
        e.set_retry(retry);
        e
    }
}

/// What the client is told when proxying failed for good; `None` when the client went away.
pub(super) fn failure_reply(ctx: &mut Ctx, e: &Error) -> Option<Reply> {
    if let Some(reply) = ctx.refusal.take() {
        return Some(reply);
    }
    let (status, msg) = match e.etype() {
        ErrorType::HTTPStatus(503) if ctx.attempt.as_ref().is_some_and(|a| a.retrying_503) => {
            (503, "every endpoint tried answered 503".to_string())
        }
        ErrorType::HTTPStatus(c) => (*c, format!("request failed with status {c}")),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => (504, "upstream timed out".into()),
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError => (502, "upstream connect error".into()),
        _ => match e.esource() {
            ErrorSource::Upstream => (502, "upstream error".into()),
            ErrorSource::Downstream => return None,
            _ => (500, "internal error".into()),
        },
    };
    Some(Reply::error(status, msg))
}

/// Whether the request's version has an available endpoint this request has not tried.
fn has_other(ctx: &Ctx) -> bool {
    let Some((routes, routed)) = ctx.routed() else {
        return false;
    };
    routes
        .version(routed.model, routed.version)
        .cluster
        .endpoints()
        .any(|e| e.available() && !ctx.tried.contains(&e.address))
}

impl Proxy {
    /// Answers a request whose proxying failed for good with the gateway's reply, when no response
    /// byte went out yet; the connection then closes (its state is unknown). Returns the status.
    pub async fn fail(&self, d: &mut impl Downstream, ctx: &mut Ctx, e: &Error) -> u16 {
        let reply = failure_reply(ctx, e);
        let status = reply.as_ref().map_or(0, |r| r.status);
        d.close();
        if let Some(reply) = reply.filter(|_| d.written().is_none()) {
            let _ = d.reply(&reply).await;
        }
        status
    }
}
