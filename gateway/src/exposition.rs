//! The Prometheus text on the admin listener's `/metrics`: the request-path families of
//! [`crate::metrics`] plus gauges read at scrape time from the live state (endpoint states and
//! load, locality shares, queue lengths, the routing table's generation, the state feed's age, the
//! retry budget's use).

use std::sync::Arc;

use meridian_gateway_core::budget::RetryBudget;
use meridian_gateway_core::endpoint::flags;
use prometheus::{Encoder, Gauge, GaugeVec, IntGauge, Opts, TextEncoder};

use crate::feed::FeedView;
use crate::metrics::Metrics;
use crate::routes::Routing;

/// Renders the exposition from the state it reads.
pub struct Exposition {
    routing: Arc<Routing>,
    metrics: Arc<Metrics>,
    feed: Arc<FeedView>,
    budget: Arc<RetryBudget>,
    gauges: Gauges,
}

/// The gauges set from live state at each scrape.
struct Gauges {
    generation: IntGauge,
    feed_staleness: Gauge,
    feed_version: IntGauge,
    endpoint_state: GaugeVec,
    endpoint_in_flight: GaugeVec,
    endpoint_latency: GaugeVec,
    endpoint_headroom: GaugeVec,
    level_share: GaugeVec,
    queue_waiting: GaugeVec,
    version_concurrency: GaugeVec,
    model_concurrency: GaugeVec,
    retries_in_flight: Gauge,
}

fn gauge(metrics: &Metrics, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    metrics
        .registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl Gauges {
    fn register(m: &Metrics) -> Gauges {
        let generation = IntGauge::new("meridian_config_generation", "Generation of the routing table in use")
            .expect("static metric definition");
        m.registry
            .register(Box::new(generation.clone()))
            .expect("metric registered once");
        let retries_in_flight = Gauge::new(
            "meridian_retries_in_flight",
            "Retries in flight (the retry budget's use)",
        )
        .expect("static metric definition");
        m.registry
            .register(Box::new(retries_in_flight.clone()))
            .expect("metric registered once");
        Gauges {
            generation,
            // Registered only once the feed answered: a gateway without control shows no staleness.
            feed_staleness: Gauge::new(
                "meridian_state_feed_staleness_seconds",
                "Seconds since the region's control state feed last answered (absent before the first answer)",
            )
            .expect("static metric definition"),
            feed_version: IntGauge::new("meridian_state_feed_version", "Version of the control state in use")
                .expect("static metric definition"),
            endpoint_state: gauge(
                m,
                "meridian_endpoint_state",
                "1 when the endpoint is in the given state (healthy, ejected, drained, available)",
                &["endpoint", "model_name", "model_version", "locality", "state"],
            ),
            endpoint_in_flight: gauge(
                m,
                "meridian_endpoint_in_flight",
                "Requests in flight to the endpoint",
                &["endpoint"],
            ),
            endpoint_latency: gauge(
                m,
                "meridian_endpoint_latency_ewma_seconds",
                "Peak-EWMA latency of the endpoint",
                &["endpoint"],
            ),
            endpoint_headroom: gauge(
                m,
                "meridian_endpoint_gpu_headroom",
                "GPU headroom of the endpoint, 0..1 (1 when unknown)",
                &["endpoint"],
            ),
            level_share: gauge(
                m,
                "meridian_locality_level_share",
                "Share of a version's traffic each locality level takes",
                &["model_name", "model_version", "locality"],
            ),
            queue_waiting: gauge(
                m,
                "meridian_queue_waiting",
                "Requests waiting for a model concurrency slot",
                &["model_name"],
            ),
            version_concurrency: gauge(
                m,
                "meridian_version_concurrency",
                "Requests in flight to the version's endpoints plus those held for it (the autoscaling signal: Knative KPA's concurrency)",
                &["model_name", "model_version"],
            ),
            model_concurrency: gauge(
                m,
                "meridian_model_concurrency",
                "Requests in flight to the model's endpoints plus those held for it, over its versions",
                &["model_name"],
            ),
            retries_in_flight,
        }
    }
}

impl Exposition {
    /// Registers the scrape-time gauges beside `metrics`' families.
    pub fn new(
        routing: Arc<Routing>,
        metrics: Arc<Metrics>,
        feed: Arc<FeedView>,
        budget: Arc<RetryBudget>,
    ) -> Exposition {
        let gauges = Gauges::register(&metrics);
        Exposition {
            routing,
            metrics,
            feed,
            budget,
            gauges,
        }
    }

    /// Prometheus text of every family, with the gauges read now.
    pub fn render(&self) -> String {
        let g = &self.gauges;
        let routes = self.routing.routes.load();
        let now = self.routing.clock.now();
        g.generation.set(routes.generation as i64);
        if let Some(s) = self.feed.staleness(now) {
            if self
                .metrics
                .registry
                .register(Box::new(g.feed_staleness.clone()))
                .is_ok()
            {
                let _ = self.metrics.registry.register(Box::new(g.feed_version.clone()));
            }
            g.feed_staleness.set(s);
            g.feed_version.set(self.feed.current().map_or(0, |f| f.version as i64));
        }
        g.retries_in_flight.set(self.budget.in_flight() as f64);
        for family in [
            &g.endpoint_state,
            &g.endpoint_in_flight,
            &g.endpoint_latency,
            &g.endpoint_headroom,
            &g.level_share,
            &g.queue_waiting,
            &g.version_concurrency,
            &g.model_concurrency,
        ] {
            family.reset();
        }
        let epoch = self.routing.registry.epoch();
        for (entry, model) in routes.snap.models.iter().zip(&routes.models) {
            g.queue_waiting
                .with_label_values(&[&entry.name])
                .set(f64::from(model.admission.waiting()));
        }
        for (m, v, route) in routes.versions() {
            let (entry, cluster) = (&routes.snap.models[m], &route.cluster);
            let version = &entry.versions[v].name;
            let in_flight: u32 = cluster.endpoints().map(|e| e.in_flight()).sum();
            let held = route.activator.as_ref().map_or(0, |a| a.held());
            g.version_concurrency
                .with_label_values(&[&entry.name, version])
                .set(f64::from(in_flight + held));
            g.model_concurrency
                .with_label_values(&[&entry.name])
                .add(f64::from(in_flight + held));
            let loads = cluster.level_loads(epoch);
            for (li, level) in cluster.levels.iter().enumerate() {
                let loc = level.kind.label();
                if let Some(l) = loads.get(li) {
                    g.level_share
                        .with_label_values(&[&entry.name, version, loc])
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
                        g.endpoint_state
                            .with_label_values(&[&ep.id, &entry.name, version, loc, state])
                            .set(f64::from(u8::from(on)));
                    }
                    g.endpoint_in_flight
                        .with_label_values(&[&ep.id])
                        .set(f64::from(ep.in_flight()));
                    g.endpoint_latency
                        .with_label_values(&[&ep.id])
                        .set(ep.latency(now) / 1e9);
                    g.endpoint_headroom.with_label_values(&[&ep.id]).set(ep.headroom());
                }
            }
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.metrics.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
