//! The end of a request (pingora's `logging`): its metrics, the end of its trace, its access log
//! line, and the mirrored copy sent off. Everything here reads what the request resolved to; nothing
//! changes how it was served.

use meridian_gateway_core::cluster::Level;
use meridian_gateway_core::endpoint::EndpointState;
use meridian_gateway_core::head::RequestHead;
use opentelemetry::trace::TraceContextExt;

use super::context::Ctx;
use super::downstream::Downstream;
use super::Proxy;
use crate::accesslog::{trace_id, Entry};
use crate::metrics::UNKNOWN_MODEL;
use crate::routes::Routes;

/// Where a request ended up, resolved once for every record of it.
struct Served<'a> {
    model: &'a str,
    version: &'a str,
    /// The last try's endpoint and locality level.
    endpoint: Option<(&'a EndpointState, Option<&'a Level>)>,
}

impl<'a> Served<'a> {
    fn of(routes: &'a Routes, ctx: &'a Ctx) -> Served<'a> {
        let model = ctx.labels.model.map(|m| &routes.snap.models[m]);
        let version = model.zip(ctx.labels.version).map(|(m, v)| &*m.versions[v].name);
        let endpoint = ctx.attempt.as_ref().map(|a| {
            let level = match (ctx.labels.model, ctx.labels.version) {
                (Some(m), Some(v)) => routes.version(m, v).cluster.levels.get(a.pick.level),
                _ => None,
            };
            (&*a.pick.endpoint, level)
        });
        Served {
            model: model.map_or("", |m| &m.name),
            version: version.unwrap_or(""),
            endpoint,
        }
    }

    fn locality(&self) -> &'a str {
        self.endpoint.and_then(|(_, l)| l).map_or("", |l| l.kind.label())
    }
}

impl Proxy {
    /// Accounts for a finished request and sends its mirrored copy.
    pub fn finish(&self, d: &impl Downstream, ctx: &mut Ctx) {
        if let Some(a) = ctx.attempt.as_mut() {
            a.in_flight = None;
        }
        self.account(d, ctx);
        ctx.end_attempt_span();
        if let Some(server) = ctx.trace.take() {
            self.end_trace(d, ctx, &server);
        }
        let copy = ctx.flight.as_mut().and_then(|f| f.shadow.take());
        if let (Some(copy), Some((routes, routed))) = (copy, ctx.routed()) {
            let version = copy.version;
            if let Some(body) = copy.into_body() {
                self.mirror.send(routes, routed.model, version, d.head(), body);
            }
        }
    }

    /// Ends the request's server span with what the request came to.
    fn end_trace(&self, d: &impl Downstream, ctx: &Ctx, server: &opentelemetry::Context) {
        let req = d.head();
        let served = ctx.routes.as_ref().map(|r| Served::of(r, ctx));
        let served = served.as_ref();
        let model = served.filter(|_| ctx.labels.model.is_some()).map(|s| s.model);
        let version = served.filter(|_| ctx.labels.version.is_some()).map(|s| s.version);
        let route = model.map(|m| route_template(req.path(), m, version));
        let outcome = crate::telemetry::Outcome {
            status: d.written().unwrap_or(0),
            route: route.as_deref(),
            model: model.zip(version),
            endpoint: served.and_then(|s| Some((&*s.endpoint?.0.id, s.locality()))),
            retries: ctx.tried.len().saturating_sub(1),
            gen_ai: ctx.llm.as_ref().map(|a| crate::telemetry::GenAi {
                model: &a.model,
                operation: a.operation,
                usage: a.usage().map(|u| (u.prompt_tokens, u.completion_tokens)),
            }),
        };
        crate::telemetry::end_request(server, req.method().as_str(), &outcome);
    }

    /// Metrics and the access log line of a finished request.
    fn account(&self, d: &impl Downstream, ctx: &Ctx) {
        let Some(routes) = ctx.routes.as_ref() else { return };
        let served = Served::of(routes, ctx);
        let status = d.written().unwrap_or(0);
        let seconds = self.routing.clock.now().saturating_sub(ctx.started) as f64 / 1e9;
        let series = match (ctx.labels.model, ctx.labels.version, &ctx.attempt) {
            (Some(m), Some(v), Some(_)) => Some(&routes.version(m, v).series),
            _ => None,
        };
        let model_label = if ctx.labels.model.is_some() {
            served.model
        } else {
            UNKNOWN_MODEL
        };
        self.metrics
            .request(series, model_label, served.version, status, seconds);
        self.close_account(ctx, status);
        let log = &routes.snap.config.observability.access_log;
        if !log.enabled {
            return;
        }
        let req = d.head();
        // The trace this request's spans belong to; without tracing, the one the client named.
        let traced = ctx
            .trace
            .as_ref()
            .map(|c| c.span().span_context().trace_id().to_string());
        let entry = Entry {
            time: humantime::format_rfc3339_millis(self.routing.clock.wall()).to_string(),
            trace_id: traced.as_deref().or_else(|| {
                req.find("traceparent")
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(trace_id)
            }),
            client: d.client().map(|a| a.to_string()).unwrap_or_default(),
            method: req.method().as_str(),
            path: req.path(),
            model: served.model,
            version: served.version,
            endpoint: served.endpoint.map_or("", |(e, _)| &e.id),
            locality: served.locality(),
            status,
            duration_ms: seconds * 1e3,
            retries: ctx.tried.len().saturating_sub(1),
            bytes_in: ctx.bytes_in,
            bytes_out: d.bytes_sent(),
        };
        if !self.access_log.write(&entry, log.format) {
            self.metrics.access_log_dropped.inc();
        }
    }
}

/// `http.route` of a model request: its path with the model and version as placeholders
/// (`/v2/models/{model}/versions/{version}/infer`); other paths are fixed routes already.
fn route_template(path: &str, model: &str, version: Option<&str>) -> String {
    let mut route = path.replacen(&format!("/models/{model}"), "/models/{model}", 1);
    if let Some(v) = version {
        route = route.replacen(&format!("/versions/{v}"), "/versions/{version}", 1);
    }
    route
}
