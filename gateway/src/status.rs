//! The gateway's status page (`/` on the admin listener) and its live cells (`/status.json`): this
//! gateway and its reloads, the regions as it sees them, and per model its request and error rates,
//! routing rules, split and canary weights, and every endpoint with its locality level, level share,
//! health, ejections, latency, load, GPU headroom and drain state (with drain/undrain buttons).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use meridian_config::feed::{CanaryWeight, FeedState};
use meridian_config::snapshot::RouteTarget;
use meridian_gateway_core::clock::Nanos;
use meridian_gateway_core::cluster::LevelKind;
use meridian_gateway_core::endpoint::EndpointState;
use meridian_statuspage::{percent, rate, Cell, Page, Section, Table, Tone};
use parking_lot::Mutex;
use prometheus::core::Collector;

use crate::explain::{out_reasons, test_text};
use crate::feed::FeedView;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::reloader::Reloader;
use crate::routes::{Routes, Routing};

/// What the status page reads beyond the admin API's parts, and the request counts it turns into
/// rates.
pub struct StatusSource {
    /// Request counters by model and status.
    pub metrics: Arc<Metrics>,
    /// The control loop's last state (canary progress, feed age).
    pub feed: Arc<FeedView>,
    samples: Mutex<VecDeque<Sample>>,
}

/// Requests and 5xx answers so far, per model, at a time.
struct Sample {
    at: Nanos,
    counts: HashMap<String, (u64, u64)>,
}

/// Rates are over the samples of the last this many seconds (a sample is taken at most once a
/// second, when a page or its JSON is asked for).
const RATE_WINDOW_S: u64 = 10;

impl StatusSource {
    /// A source over `metrics` and `feed`, started at `now`: until the window has filled, rates
    /// are over the time since then.
    pub fn new(metrics: Arc<Metrics>, feed: Arc<FeedView>, now: Nanos) -> StatusSource {
        let source = StatusSource {
            metrics,
            feed,
            samples: Mutex::default(),
        };
        let counts = source.counts();
        source.samples.lock().push_back(Sample { at: now, counts });
        source
    }

    /// Requests per second and 5xx per second of each model over the last [`RATE_WINDOW_S`].
    fn rates(&self, now: Nanos) -> HashMap<String, (f64, f64)> {
        let mut samples = self.samples.lock();
        if samples.back().is_none_or(|s| now.saturating_sub(s.at) >= 1_000_000_000) {
            samples.push_back(Sample {
                at: now,
                counts: self.counts(),
            });
        }
        while samples.len() > 2 && now.saturating_sub(samples[1].at) >= RATE_WINDOW_S * 1_000_000_000 {
            samples.pop_front();
        }
        let (Some(first), Some(last)) = (samples.front(), samples.back()) else {
            return HashMap::new();
        };
        let dt = last.at.saturating_sub(first.at) as f64 / 1e9;
        last.counts
            .iter()
            .map(|(model, &(n, e))| {
                let (n0, e0) = first.counts.get(model).copied().unwrap_or((0, 0));
                let per_s = |a: u64, b: u64| if dt > 0.0 { a.saturating_sub(b) as f64 / dt } else { 0.0 };
                (model.clone(), (per_s(n, n0), per_s(e, e0)))
            })
            .collect()
    }

    /// `inference_requests_total` summed per model: (all, 5xx).
    fn counts(&self) -> HashMap<String, (u64, u64)> {
        let mut out: HashMap<String, (u64, u64)> = HashMap::new();
        for family in self.metrics.requests.collect() {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                        .unwrap_or_default()
                };
                let n = m.get_counter().get_value() as u64;
                let entry = out.entry(label("model_name")).or_default();
                entry.0 += n;
                if label("status").starts_with('5') {
                    entry.1 += n;
                }
            }
        }
        out
    }
}

/// What the page reads: the admin API's parts.
pub struct Parts<'a> {
    /// The table and endpoint states.
    pub routing: &'a Routing,
    /// Where the gateway runs, and its reloads.
    pub reloader: &'a Reloader,
    /// Ready or draining.
    pub lifecycle: &'a Lifecycle,
    /// Request rates and the control feed.
    pub status: &'a StatusSource,
}

/// The gateway's status page as of now.
pub fn page(api: &Parts<'_>) -> Page {
    let routes = api.routing.routes.load();
    let snap = &routes.snap;
    let now = api.routing.clock.now();
    let epoch = api.routing.registry.epoch();
    let status = api.status;
    let feed = status.feed.current();
    let mut page = Page {
        title: format!(
            "Meridian gateway · {}{}",
            api.reloader.region(),
            api.reloader.zone().map(|z| format!(" · {z}")).unwrap_or_default()
        ),
        sections: Vec::new(),
    };

    // This gateway.
    let mut me = Section::new("Gateway");
    let ready = api.lifecycle.ready();
    let (state, tone) = match (api.lifecycle.draining(), ready) {
        (true, _) => ("draining", Tone::Warn),
        (false, true) => ("ready", Tone::Good),
        (false, false) => ("not ready", Tone::Bad),
    };
    me.fact("state", Cell::live("gw/state", state, tone));
    me.fact("config", Cell::text(snap.file.clone()));
    me.fact(
        "table generation",
        Cell::live("gw/generation", routes.generation.to_string(), Tone::Plain),
    );
    let control = match (&feed, status.feed.staleness(now)) {
        (Some(f), Some(age)) => (format!("state v{} ({age:.0}s ago)", f.version), Tone::Plain),
        _ if routes.region().control.is_some() => ("no state yet".to_string(), Tone::Warn),
        _ => ("none configured".to_string(), Tone::Plain),
    };
    me.fact("control", Cell::live("gw/control", control.0, control.1));
    if let Some(dns) = &snap.config.dns {
        me.fact(
            "world view",
            Cell::text(format!("DNS admin http://{}/", dns.admin.address)),
        );
    }
    page.sections.push(me);

    // Regions as this gateway sees them: its own, its failovers, and how many endpoints each has up.
    let mut regions = Section::new("Regions");
    let mut t = Table::new(&["region", "zones", "from here", "endpoints available"]);
    let own = routes.region();
    let mut up: HashMap<&str, (usize, usize)> = HashMap::new();
    for (_, _, version) in routes.versions() {
        for level in &version.cluster.levels {
            let region = match &level.kind {
                LevelKind::Failover(r) => &**r,
                LevelKind::Zone | LevelKind::Region => &*own.name,
            };
            for (e, _) in &level.members {
                let c = up.entry(region).or_default();
                c.0 += usize::from(e.available());
                c.1 += 1;
            }
        }
    }
    for r in &snap.config.regions {
        let role = if r.name == own.name {
            "this gateway's region".to_string()
        } else if let Some(i) = own.failover.iter().position(|f| *f == r.name) {
            format!("failover {}", i + 1)
        } else {
            "not a failover".to_string()
        };
        let (a, n) = up.get(&*r.name).copied().unwrap_or((0, 0));
        let tone = if n == 0 {
            Tone::Plain
        } else if a == 0 {
            Tone::Bad
        } else if a < n {
            Tone::Warn
        } else {
            Tone::Good
        };
        t.row(vec![
            Cell::text(r.name.to_string()),
            Cell::text(r.zones.join(", ")),
            Cell::text(role),
            Cell::live(format!("region/{}/up", r.name), format!("{a} of {n}"), tone),
        ]);
    }
    regions.table(None, t);
    page.sections.push(regions);

    // Models.
    let rates = status.rates(now);
    let zones = zones_of(&routes, feed.as_deref());
    for (m, entry) in snap.models.iter().enumerate() {
        let name = &*entry.name;
        let mut s = Section::new(format!("Model {name}"));
        let (rps, eps) = rates.get(name).copied().unwrap_or((0.0, 0.0));
        s.fact(
            "requests",
            Cell::live(format!("model/{name}/rate"), rate(rps), Tone::Plain),
        );
        let err_tone = if eps > 0.0 { Tone::Bad } else { Tone::Plain };
        s.fact("5xx", Cell::live(format!("model/{name}/errors"), rate(eps), err_tone));
        if !entry.routes.is_empty() {
            let mut rules = Table::new(&["rule", "match", "sends to"]);
            for (i, route) in entry.routes.iter().enumerate() {
                let cond: Vec<_> = route
                    .headers
                    .iter()
                    .map(|c| format!("{} {}", c.name, test_text(&c.test)))
                    .collect();
                let vname = |v: usize| entry.versions[v].name.to_string();
                let target = match &route.target {
                    RouteTarget::Version(v) => vname(*v),
                    RouteTarget::Split(ws) => {
                        let parts: Vec<_> = ws.iter().map(|(v, w)| format!("{} {w}%", vname(*v))).collect();
                        format!("split {}", parts.join(" / "))
                    }
                };
                let rule = route
                    .name
                    .as_deref()
                    .map_or_else(|| i.to_string(), |n| format!("{i} {n}"));
                rules.row(vec![
                    Cell::text(rule),
                    Cell::text(if cond.is_empty() {
                        "every request".into()
                    } else {
                        cond.join(" and ")
                    }),
                    Cell::live(format!("model/{name}/rule/{i}"), target, Tone::Plain),
                ]);
            }
            s.table(Some("Routing rules".into()), rules);
        }
        let canaries: Vec<&CanaryWeight> = feed
            .iter()
            .flat_map(|f| f.canaries.iter())
            .filter(|c| c.model == name)
            .collect();
        if !canaries.is_empty() {
            let mut t = Table::new(&[
                "plan",
                "stable → canary",
                "canary weight",
                "step",
                "phase",
                "last analysis",
            ]);
            for c in canaries {
                let key = |k: &str| format!("canary/{}/{k}", c.plan);
                let p = c.progress.as_ref();
                let phase = p.map_or("", |p| p.phase.as_str());
                let tone = match phase {
                    "rolled_back" | "aborted" => Tone::Bad,
                    "paused" => Tone::Warn,
                    "promoted" => Tone::Good,
                    _ => Tone::Plain,
                };
                t.row(vec![
                    Cell::text(c.plan.clone()),
                    Cell::text(format!("{} → {}", c.stable, c.canary)),
                    Cell::live(key("weight"), format!("{}%", c.weight), Tone::Plain),
                    Cell::live(
                        key("step"),
                        p.map_or(String::new(), |p| format!("{} of {}", p.step + 1, p.steps)),
                        Tone::Plain,
                    ),
                    Cell::live(key("phase"), phase, tone),
                    Cell::live(
                        key("analysis"),
                        p.map_or(String::new(), |p| {
                            let mut a = p.last_analysis.clone().unwrap_or_else(|| "none yet".into());
                            if p.failures > 0 {
                                a.push_str(&format!(" ({} failed)", p.failures));
                            }
                            a
                        }),
                        if p.is_some_and(|p| p.failures > 0) {
                            Tone::Warn
                        } else {
                            Tone::Plain
                        },
                    ),
                ]);
            }
            s.table(Some("Canary".into()), t);
        }
        for (v, version) in entry.versions.iter().enumerate() {
            let cluster = &routes.version(m, v).cluster;
            let loads = cluster.level_loads(epoch);
            let mut t = Table::new(&[
                "endpoint",
                "address",
                "zone",
                "locality",
                "level share",
                "state",
                "ejections",
                "EWMA",
                "in flight",
                "GPU headroom",
                "",
            ]);
            for (li, level) in cluster.levels.iter().enumerate() {
                let load = loads.get(li);
                for (e, _) in &level.members {
                    let key = |k: &str| format!("ep/{name}/{}/{}/{k}", version.name, e.id);
                    let zone = zones.get(&e.address).copied().unwrap_or_default();
                    let share_tone = if load.is_some_and(|l| l.panic) {
                        Tone::Warn
                    } else {
                        Tone::Plain
                    };
                    let share = load.map_or(String::new(), |l| {
                        let mut s = percent(l.share);
                        if l.panic {
                            s.push_str(" panic");
                        }
                        s
                    });
                    let (state, tone) = endpoint_state(e);
                    let drained = e.flags() & meridian_gateway_core::endpoint::flags::DRAINED != 0;
                    t.row(vec![
                        Cell::text(e.id.to_string()),
                        Cell::text(e.address.to_string()),
                        Cell::text(zone),
                        Cell::text(level.kind.label().to_string()),
                        Cell::live(key("share"), share, share_tone),
                        Cell::live(key("state"), state, tone),
                        Cell::live(
                            key("ejections"),
                            e.outlier
                                .total_ejections
                                .load(std::sync::atomic::Ordering::Relaxed)
                                .to_string(),
                            Tone::Plain,
                        ),
                        Cell::live(key("ewma"), format!("{:.1} ms", e.latency(now) / 1e6), Tone::Plain),
                        Cell::live(key("inflight"), e.in_flight().to_string(), Tone::Plain),
                        Cell::live(key("headroom"), percent(e.headroom()), Tone::Plain),
                        Cell::button(
                            key("action"),
                            if drained { "undrain" } else { "drain" },
                            format!("/endpoints/{}/", e.id),
                        ),
                    ]);
                }
            }
            s.table(Some(format!("Version {} endpoints", version.name)), t);
        }
        page.sections.push(s);
    }

    // Reloads.
    let stats = api.reloader.stats();
    let mut reloads = Section::new("Reloads");
    reloads.fact("applied", Cell::live("reload/ok", stats.ok.to_string(), Tone::Plain));
    let failed_tone = if stats.failed > 0 { Tone::Warn } else { Tone::Plain };
    reloads.fact(
        "rejected",
        Cell::live("reload/failed", stats.failed.to_string(), failed_tone),
    );
    let mut t = Table::new(&["when", "result", "error"]);
    let started = Cell::text(format!(
        "started {} with generation 1",
        clock_time(api.reloader.started_at())
    ));
    for (i, r) in stats.recent.iter().enumerate() {
        let key = |k: &str| format!("reload/{i}/{k}");
        let (result, tone) = match r.generation {
            Some(g) => (format!("applied, generation {g}"), Tone::Good),
            None => ("rejected: the previous config keeps serving".to_string(), Tone::Bad),
        };
        t.row(vec![
            Cell::live(key("at"), clock_time(r.at), Tone::Plain),
            Cell::live(key("result"), result, tone),
            Cell::live(key("error"), r.error.clone().unwrap_or_default(), Tone::Bad),
        ]);
    }
    reloads.fact("config", started);
    reloads.table(Some("Recent reloads, newest first".into()), t);
    page.sections.push(reloads);
    page
}

/// An endpoint's state in words: available, or why not.
fn endpoint_state(e: &EndpointState) -> (String, Tone) {
    let why = out_reasons(e.flags());
    if why.is_empty() {
        return ("available".into(), Tone::Good);
    }
    let tone = if why.iter().all(|w| w.starts_with("drained")) {
        Tone::Warn
    } else {
        Tone::Bad
    };
    (why.join(", "), tone)
}

/// Every endpoint's zone by address, from the config and the control feed.
fn zones_of<'a>(routes: &'a Routes, feed: Option<&'a FeedState>) -> HashMap<SocketAddr, &'a str> {
    let configured = routes
        .snap
        .config
        .models
        .iter()
        .flat_map(|m| m.versions.iter().flat_map(|v| v.endpoints.iter()))
        .map(|spec| (spec.address, spec.zone.as_str()));
    let fed = feed
        .into_iter()
        .flat_map(|f| f.endpoints.iter())
        .map(|e| (e.address, e.zone.as_str()));
    configured.chain(fed).collect()
}

/// Unix seconds as `HH:MM:SS UTC`.
fn clock_time(unix: f64) -> String {
    let s = unix as u64 % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}
