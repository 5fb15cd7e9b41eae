//! Prometheus metrics of a gateway, served on the admin listener's `/metrics`.
//!
//! Names and buckets are the ones operators' dashboards and alerts already use
//! (`inference_requests_total`, `inference_latency_seconds`). Label values come only from the config
//! (model, version, endpoint ids) or small fixed sets (status codes, outcomes), never from raw
//! request data: a request for a model the config does not know counts as `model_name="unknown"`.
//! The per-version series every request touches are resolved once per routing table, so the request
//! path does no label lookups for them.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::endpoint::flags;
use crate::state::Gateway;

/// Latency buckets of `inference_latency_seconds` (ARCHITECTURE.md section 4).
pub const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Label value for requests whose model the config does not know.
pub const UNKNOWN_MODEL: &str = "unknown";

/// Every metric family of a gateway.
pub struct Metrics {
    registry: Registry,
    /// `inference_requests_total{model_name,model_version,status}`.
    pub requests: IntCounterVec,
    /// `inference_latency_seconds{model_name,model_version}`.
    pub latency: HistogramVec,
    /// `meridian_upstream_attempts_total{model_name,model_version,endpoint,outcome}`.
    pub attempts: IntCounterVec,
    /// `meridian_upstream_attempt_duration_seconds{model_name,model_version}`.
    pub attempt_latency: HistogramVec,
    /// `meridian_retries_total{model_name,reason}`.
    pub retries: IntCounterVec,
    /// `meridian_endpoint_ejections_total{endpoint,reason}`.
    pub ejections: IntCounterVec,
    /// `meridian_config_reloads_total{result}`.
    pub reloads: IntCounterVec,
    /// `meridian_shed_total{model_name,priority,reason}`.
    pub shed: IntCounterVec,
    /// `meridian_access_log_dropped_total`.
    pub access_log_dropped: IntCounter,
    generation: IntGauge,
    feed_staleness: Gauge,
    feed_version: IntGauge,
    endpoint_state: GaugeVec,
    endpoint_in_flight: GaugeVec,
    endpoint_latency: GaugeVec,
    endpoint_headroom: GaugeVec,
    level_share: GaugeVec,
    queue_waiting: GaugeVec,
    retries_in_flight: Gauge,
}

/// The per-version series a request always touches, resolved ahead of time.
#[derive(Clone, Debug)]
pub struct VersionSeries {
    /// `inference_latency_seconds` of the version.
    pub latency: Histogram,
    /// `meridian_upstream_attempt_duration_seconds` of the version.
    pub attempt_latency: Histogram,
    /// `inference_requests_total` with status 200.
    pub ok: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry.register(Box::new(g.clone())).expect("metric registered once");
    g
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels)
        .expect("static metric definition");
    registry.register(Box::new(h.clone())).expect("metric registered once");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let r = Registry::new();
        let mv = &["model_name", "model_version"];
        let generation = IntGauge::new("meridian_config_generation", "Generation of the routing table in use")
            .expect("static metric definition");
        r.register(Box::new(generation.clone()))
            .expect("metric registered once");
        let feed_staleness = Gauge::new(
            "meridian_state_feed_staleness_seconds",
            "Seconds since the region's control state feed last answered (absent before the first answer)",
        )
        .expect("static metric definition");
        let feed_version = IntGauge::new("meridian_state_feed_version", "Version of the control state in use")
            .expect("static metric definition");
        let dropped = IntCounter::new(
            "meridian_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind",
        )
        .expect("static metric definition");
        r.register(Box::new(dropped.clone())).expect("metric registered once");
        let retries_in_flight = Gauge::new(
            "meridian_retries_in_flight",
            "Retries in flight (the retry budget's use)",
        )
        .expect("static metric definition");
        r.register(Box::new(retries_in_flight.clone()))
            .expect("metric registered once");
        Metrics {
            requests: counter(
                &r,
                "inference_requests_total",
                "Inference requests answered, by model, version and HTTP status",
                &["model_name", "model_version", "status"],
            ),
            latency: histogram(
                &r,
                "inference_latency_seconds",
                "Inference request latency through the gateway",
                mv,
            ),
            attempts: counter(
                &r,
                "meridian_upstream_attempts_total",
                "Attempts at backend endpoints, by outcome",
                &["model_name", "model_version", "endpoint", "outcome"],
            ),
            attempt_latency: histogram(
                &r,
                "meridian_upstream_attempt_duration_seconds",
                "Time from sending to an endpoint to its response header",
                mv,
            ),
            retries: counter(
                &r,
                "meridian_retries_total",
                "Retries, by reason",
                &["model_name", "reason"],
            ),
            ejections: counter(
                &r,
                "meridian_endpoint_ejections_total",
                "Outlier ejections, by endpoint and reason",
                &["endpoint", "reason"],
            ),
            reloads: counter(
                &r,
                "meridian_config_reloads_total",
                "Config reloads, by result",
                &["result"],
            ),
            shed: counter(
                &r,
                "meridian_shed_total",
                "Requests refused by admission control, by priority class and reason",
                &["model_name", "priority", "reason"],
            ),
            access_log_dropped: dropped,
            generation,
            feed_staleness,
            feed_version,
            endpoint_state: gauge(
                &r,
                "meridian_endpoint_state",
                "1 when the endpoint is in the given state (healthy, ejected, drained, available)",
                &["endpoint", "model_name", "model_version", "locality", "state"],
            ),
            endpoint_in_flight: gauge(
                &r,
                "meridian_endpoint_in_flight",
                "Requests in flight to the endpoint",
                &["endpoint"],
            ),
            endpoint_latency: gauge(
                &r,
                "meridian_endpoint_latency_ewma_seconds",
                "Peak-EWMA latency of the endpoint",
                &["endpoint"],
            ),
            endpoint_headroom: gauge(
                &r,
                "meridian_endpoint_gpu_headroom",
                "GPU headroom of the endpoint, 0..1 (1 when unknown)",
                &["endpoint"],
            ),
            level_share: gauge(
                &r,
                "meridian_locality_level_share",
                "Share of a version's traffic each locality level takes",
                &["model_name", "model_version", "locality"],
            ),
            retries_in_flight,
            queue_waiting: gauge(
                &r,
                "meridian_queue_waiting",
                "Requests waiting for a model concurrency slot",
                &["model_name"],
            ),
            registry: r,
        }
    }

    /// The series of one model version.
    pub fn version_series(&self, model: &str, version: &str) -> VersionSeries {
        VersionSeries {
            latency: self.latency.with_label_values(&[model, version]),
            attempt_latency: self.attempt_latency.with_label_values(&[model, version]),
            ok: self.requests.with_label_values(&[model, version, "200"]),
        }
    }

    /// Counts a finished request.
    pub fn request(&self, series: Option<&VersionSeries>, model: &str, version: &str, status: u16, seconds: f64) {
        match series {
            Some(s) => {
                s.latency.observe(seconds);
                if status == 200 {
                    s.ok.inc();
                } else {
                    self.requests
                        .with_label_values(&[model, version, status_label(status)])
                        .inc();
                }
            }
            None => self
                .requests
                .with_label_values(&[model, version, status_label(status)])
                .inc(),
        }
    }

    /// Prometheus text of every family, with the endpoint gauges read now.
    pub fn render(&self, gw: &Gateway) -> String {
        let routes = gw.routes.load();
        self.generation.set(routes.generation as i64);
        // Registered only once the feed answered: a gateway without control shows no staleness.
        if let Some(s) = crate::feed::staleness(gw) {
            if self.registry.register(Box::new(self.feed_staleness.clone())).is_ok() {
                let _ = self.registry.register(Box::new(self.feed_version.clone()));
            }
            self.feed_staleness.set(s);
            self.feed_version
                .set(gw.feed.load().as_ref().map_or(0, |f| f.version as i64));
        }
        self.retries_in_flight.set(gw.budget.in_flight() as f64);
        for g in [
            &self.endpoint_state,
            &self.endpoint_in_flight,
            &self.endpoint_latency,
            &self.endpoint_headroom,
            &self.level_share,
            &self.queue_waiting,
        ] {
            g.reset();
        }
        let now = gw.clock.now();
        let epoch = gw.registry.epoch();
        for (m, versions) in routes.clusters.iter().enumerate() {
            let model = &routes.snap.models[m];
            self.queue_waiting
                .with_label_values(&[&model.name])
                .set(f64::from(routes.admission[m].waiting()));
            for (v, cluster) in versions.iter().enumerate() {
                let version = &model.versions[v].name;
                let loads = cluster.level_loads(epoch);
                for (li, level) in cluster.levels.iter().enumerate() {
                    let loc = level.kind.label();
                    if let Some(l) = loads.get(li) {
                        self.level_share
                            .with_label_values(&[&model.name, version, loc])
                            .set(l.share);
                    }
                    for (ep, _) in &level.members {
                        let f = ep.flags();
                        for (state, on) in [
                            ("healthy", f & flags::UNHEALTHY == 0),
                            ("ejected", f & flags::EJECTED != 0),
                            ("drained", f & (flags::DRAINED | flags::CONTROL_DRAINED) != 0),
                            ("ready", f & flags::NOT_READY == 0),
                            ("available", f == 0),
                        ] {
                            self.endpoint_state
                                .with_label_values(&[&ep.id, &model.name, version, loc, state])
                                .set(f64::from(u8::from(on)));
                        }
                        self.endpoint_in_flight
                            .with_label_values(&[&ep.id])
                            .set(f64::from(ep.in_flight()));
                        self.endpoint_latency
                            .with_label_values(&[&ep.id])
                            .set(ep.latency(now) / 1e9);
                        self.endpoint_headroom.with_label_values(&[&ep.id]).set(ep.headroom());
                    }
                }
            }
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A status code as a label without allocating for the common ones.
fn status_label(status: u16) -> &'static str {
    const CODES: [(u16, &str); 16] = [
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (413, "413"),
        (429, "429"),
        (431, "431"),
        (500, "500"),
        (501, "501"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    CODES.iter().find(|(c, _)| *c == status).map_or(
        match status {
            0 => "0",
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        },
        |(_, s)| s,
    )
}
