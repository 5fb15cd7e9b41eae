//! Runs the config's canary plans for one region: on each plan's analysis interval it scrapes the
//! region's gateway metrics, judges the canary version's traffic and moves the plan
//! ([`crate::canary`]); the weights go out on the state feed, so the region's gateways route by
//! them. Progress is written to `control.state_file` after every change and read back at start,
//! so a restarted control loop resumes where it was.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use meridian_clock::Clock;
use meridian_config::feed::{CanaryProgress, CanaryWeight};
use meridian_config::Snapshot;
use parking_lot::Mutex;
use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

use crate::analysis::{sample, AnalysisError, Window};
use crate::canary::{Command, CommandError, Event, Progress};

/// The metrics texts of the region's gateways (the admin listener's `/metrics`, with the admin
/// token when one is set): what canary analysis and the scaler read.
pub async fn scrape_gateways(
    client: &reqwest::Client,
    snap: &Snapshot,
    region: usize,
) -> Result<Vec<String>, AnalysisError> {
    let gw = snap.config.regions[region]
        .gateway
        .as_ref()
        .ok_or(AnalysisError::NoGateway)?;
    let mut req = client.get(format!("http://{}/metrics", gw.admin.address));
    if let Some(token) = &gw.admin.token {
        req = req.bearer_auth(token.expose());
    }
    let r = req
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| AnalysisError::Unreachable(e.to_string()))?;
    Ok(vec![r.text().await.map_err(|e| AnalysisError::Body(e.to_string()))?])
}

/// The runner.
pub struct Canaries {
    /// Wall time: plans' progress is persisted, so it counts in Unix seconds.
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    client: reqwest::Client,
    metrics: CanaryMetrics,
}

#[derive(Default)]
struct State {
    progress: BTreeMap<String, Progress>,
    windows: HashMap<String, Window>,
    next_eval: HashMap<String, f64>,
    loaded_from: Option<PathBuf>,
}

struct CanaryMetrics {
    weight: GaugeVec,
    step: GaugeVec,
    phase: GaugeVec,
    rollbacks: IntCounterVec,
    promotions: IntCounterVec,
}

impl CanaryMetrics {
    fn new(r: &Registry) -> anyhow::Result<CanaryMetrics> {
        let gauge = |name: &str, help: &str, labels: &[&str]| -> anyhow::Result<GaugeVec> {
            let g = GaugeVec::new(Opts::new(name, help), labels)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> anyhow::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), &["plan"])?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(CanaryMetrics {
            weight: gauge(
                "meridian_canary_weight",
                "Percent of the plan's rule sent to each version",
                &["plan", "model", "version"],
            )?,
            step: gauge("meridian_canary_step", "Index of the plan's current step", &["plan"])?,
            phase: gauge(
                "meridian_canary_phase",
                "1 for the phase the plan is in (progressing, paused, promoted, rolled_back, aborted)",
                &["plan", "phase"],
            )?,
            rollbacks: counter(
                "meridian_canary_rollbacks_total",
                "Canary plans rolled back by a failed analysis",
            )?,
            promotions: counter("meridian_canary_promotions_total", "Canary plans promoted")?,
        })
    }
}

/// Why an operator's command on a plan was refused.
#[derive(Debug, thiserror::Error)]
pub enum RefusedCommand {
    /// No plan has that name.
    #[error("no canary plan named {0}")]
    NoPlan(String),
    /// The plan has not had its first analysis yet.
    #[error("canary plan {0} has not started yet")]
    NotStarted(String),
    /// The command does not apply in the plan's phase.
    #[error(transparent)]
    Phase(#[from] CommandError),
}

impl Canaries {
    /// A runner registering its metrics in `registry`.
    pub fn new(registry: &Registry, clock: Arc<dyn Clock>) -> anyhow::Result<Canaries> {
        Ok(Canaries {
            clock,
            state: Mutex::new(State::default()),
            client: reqwest::Client::builder().pool_max_idle_per_host(1).build()?,
            metrics: CanaryMetrics::new(registry)?,
        })
    }

    fn state_file(snap: &Snapshot) -> Option<PathBuf> {
        snap.config.control.state_file.as_ref().map(|p| snap.base_dir.join(p))
    }

    /// Reads saved progress once per state file; plans whose versions changed start over.
    fn load(&self, snap: &Snapshot, st: &mut State) {
        let path = Self::state_file(snap);
        if path.is_none() || st.loaded_from == path {
            return;
        }
        st.loaded_from = path.clone();
        let Some(text) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) else {
            return;
        };
        match serde_json::from_str::<BTreeMap<String, Progress>>(&text) {
            Ok(saved) => {
                for (name, p) in saved {
                    if snap
                        .config
                        .canaries
                        .iter()
                        .any(|plan| plan.name == name && p.fits(plan))
                    {
                        tracing::info!(plan = %name, phase = ?p.phase, step = p.step, "canary progress restored");
                        st.progress.insert(name, p);
                    }
                }
            }
            Err(e) => tracing::warn!("canary state file unreadable, starting over: {e}"),
        }
    }

    fn save(snap: &Snapshot, st: &State) {
        let Some(path) = Self::state_file(snap) else { return };
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec_pretty(&st.progress)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::error!(path = %path.display(), "canary state not saved: {e}");
        }
    }

    /// Runs the analyses that are due; returns whether any plan changed.
    pub async fn evaluate(&self, snap: &Snapshot, region: usize) -> bool {
        let now = self.clock.unix_f64();
        let due: Vec<usize> = {
            let mut st = self.state.lock();
            self.load(snap, &mut st);
            snap.config
                .canaries
                .iter()
                .enumerate()
                .filter(|(_, p)| st.next_eval.get(&p.name).is_none_or(|t| now >= *t))
                .map(|(i, _)| i)
                .collect()
        };
        if due.is_empty() {
            return false;
        }
        let texts = scrape_gateways(&self.client, snap, region).await;
        let mut st = self.state.lock();
        let mut changed = false;
        for i in due {
            let plan = &snap.config.canaries[i];
            let a = &plan.analysis;
            st.next_eval
                .insert(plan.name.clone(), now + a.interval.get().as_secs_f64());
            let fresh = !st.progress.get(&plan.name).is_some_and(|p| p.fits(plan));
            if fresh {
                tracing::info!(plan = %plan.name, "canary plan starting");
                st.progress.insert(plan.name.clone(), Progress::start(plan, now));
                st.windows.remove(&plan.name);
                changed = true;
            }
            let verdict = match &texts {
                Ok(texts) => match sample(texts, &plan.model, &plan.canary, now) {
                    Ok(s) => {
                        let w = st.windows.entry(plan.name.clone()).or_default();
                        w.push(s, a.window.get().as_secs_f64());
                        w.evaluate(a)
                    }
                    Err(e) => crate::canary::Verdict::Inconclusive(e.to_string()),
                },
                Err(e) => crate::canary::Verdict::Inconclusive(e.to_string()),
            };
            let Some(progress) = st.progress.get_mut(&plan.name) else {
                continue;
            };
            if let Some(event) = progress.tick(plan, now, verdict) {
                self.note(&plan.name, &event, progress);
                changed = true;
            }
        }
        if changed {
            Self::save(snap, &st);
        }
        self.export(snap, &st);
        changed
    }

    fn note(&self, plan: &str, event: &Event, p: &Progress) {
        match event {
            Event::RolledBack => {
                self.metrics.rollbacks.with_label_values(&[plan]).inc();
                tracing::warn!(plan, reason = p.reason.as_deref().unwrap_or(""), "canary rolled back");
            }
            Event::Promoted => {
                self.metrics.promotions.with_label_values(&[plan]).inc();
                tracing::info!(plan, "canary promoted");
            }
            Event::Advanced { step, weight } => tracing::info!(plan, step, weight, "canary advanced"),
            Event::Operator(what) => tracing::info!(plan, what, "canary command"),
        }
    }

    fn export(&self, snap: &Snapshot, st: &State) {
        for g in [&self.metrics.weight, &self.metrics.step, &self.metrics.phase] {
            g.reset();
        }
        for plan in &snap.config.canaries {
            let Some(p) = st.progress.get(&plan.name) else { continue };
            let w = f64::from(p.weight);
            self.metrics
                .weight
                .with_label_values(&[&plan.name, &plan.model, &plan.canary])
                .set(w);
            self.metrics
                .weight
                .with_label_values(&[&plan.name, &plan.model, &plan.stable])
                .set(100.0 - w);
            self.metrics.step.with_label_values(&[&plan.name]).set(p.step as f64);
            let phase = serde_json::to_value(p.phase).ok();
            if let Some(name) = phase.as_ref().and_then(|v| v.as_str()) {
                self.metrics.phase.with_label_values(&[&plan.name, name]).set(1.0);
            }
        }
    }

    /// The weights to publish: one per plan that has started.
    pub fn weights(&self, snap: &Snapshot) -> Vec<CanaryWeight> {
        let st = self.state.lock();
        snap.config
            .canaries
            .iter()
            .filter_map(|plan| {
                let p = st.progress.get(&plan.name).filter(|p| p.fits(plan))?;
                Some(CanaryWeight {
                    plan: plan.name.clone(),
                    model: plan.model.clone(),
                    route: plan.route.clone(),
                    stable: plan.stable.clone(),
                    canary: plan.canary.clone(),
                    weight: p.weight,
                    progress: Some(CanaryProgress {
                        phase: serde_json::to_value(p.phase)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        step: p.step,
                        steps: plan.steps.len(),
                        failures: p.failures,
                        last_analysis: p.last_analysis.clone(),
                        reason: p.reason.clone(),
                    }),
                })
            })
            .collect()
    }

    /// Every plan's progress, for the admin API.
    pub fn list(&self) -> Vec<Progress> {
        self.state.lock().progress.values().cloned().collect()
    }

    /// An operator's command on plan `name`.
    pub fn command(&self, snap: &Snapshot, name: &str, cmd: Command) -> Result<Progress, RefusedCommand> {
        let mut st = self.state.lock();
        let plan = snap
            .config
            .canaries
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| RefusedCommand::NoPlan(name.into()))?;
        let p = st
            .progress
            .get_mut(name)
            .filter(|p| p.fits(plan))
            .ok_or_else(|| RefusedCommand::NotStarted(name.into()))?;
        let event = p.command(cmd, self.clock.unix_f64())?;
        let out = p.clone();
        self.note(name, &event, &out);
        Self::save(snap, &st);
        self.export(snap, &st);
        Ok(out)
    }
}
