//! Scales versions' workloads through the Kubernetes scale subresource: at once when a gateway
//! asks to wake a version scaled to zero (single-flight: one PATCH however many gateways and
//! requests ask), and every collection round to the replicas [`crate::scale`] recommends from the
//! gateways' concurrency. The first time a workload is seen its current replicas are read and
//! taken as the recent desired count, so a restarted control loop never scales down before the
//! delay.
//!
//! RBAC: get and patch on `deployments/scale` and `statefulsets/scale` (apps).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use meridian_clock::Clock;
use meridian_config::schema::{Scale, Workload, WorkloadKind};
use meridian_config::Snapshot;
use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::scale::{desired, Sizer};

/// Why a wake-up was not acted on.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    /// No such version, or it has no `scale`.
    #[error("model {0} version {1} is not scaled by Meridian")]
    NotScaled(String, String),
    /// No Kubernetes API to scale with.
    #[error("no Kubernetes API to scale with")]
    NoKube,
    /// The API refused or failed.
    #[error("scaling {0}/{1}: {2}")]
    Api(String, String, kube::Error),
}

/// One version's scaling state.
#[derive(Debug, Default)]
struct Versioned {
    sizer: Sizer,
    /// Replicas last read or set (`None`: not known yet).
    replicas: Option<u32>,
}

/// The scaler of one region's control loop.
pub struct Scaler {
    clock: Arc<dyn Clock>,
    kube: Mutex<Option<Client>>,
    versions: Mutex<HashMap<(String, String), Versioned>>,
    replicas: IntGaugeVec,
    patches: IntCounterVec,
    wakes: IntCounterVec,
}

impl Scaler {
    /// A scaler with its metrics in `registry`.
    pub fn new(registry: &Registry, clock: Arc<dyn Clock>) -> anyhow::Result<Scaler> {
        let mv = &["model_name", "model_version"];
        let replicas = IntGaugeVec::new(
            Opts::new("meridian_control_scale_replicas", "Replicas control last read or set"),
            mv,
        )?;
        let patches = IntCounterVec::new(
            Opts::new(
                "meridian_control_scale_patches_total",
                "Scale subresource changes, by direction",
            ),
            &["model_name", "model_version", "direction"],
        )?;
        let wakes = IntCounterVec::new(
            Opts::new(
                "meridian_control_wakes_total",
                "Wake-ups asked by gateways for versions at zero",
            ),
            mv,
        )?;
        registry.register(Box::new(replicas.clone()))?;
        registry.register(Box::new(patches.clone()))?;
        registry.register(Box::new(wakes.clone()))?;
        Ok(Scaler {
            clock,
            kube: Mutex::new(None),
            versions: Mutex::default(),
            replicas,
            patches,
            wakes,
        })
    }

    /// Gives it the Kubernetes API.
    pub fn set_client(&self, client: Client) {
        *self.kube.lock() = Some(client);
    }

    /// Whether any version in `snap` is scaled (control then needs the Kubernetes API).
    pub fn wanted(snap: &Snapshot) -> bool {
        snap.config
            .models
            .iter()
            .any(|m| m.versions.iter().any(|v| v.scale.is_some()))
    }

    /// A gateway holds requests for `model` `version`, which has no ready endpoint: scale it up
    /// now unless it already is (or is being) scaled up. Returns the replicas asked for.
    pub async fn wake(&self, snap: &Snapshot, model: &str, version: &str) -> Result<u32, WakeError> {
        let (scale, workload) =
            scaled(snap, model, version).ok_or_else(|| WakeError::NotScaled(model.to_string(), version.to_string()))?;
        self.wakes.with_label_values(&[model, version]).inc();
        let kube = self.kube.lock().clone().ok_or(WakeError::NoKube)?;
        let key = (model.to_string(), version.to_string());
        let up = scale.min.max(1);
        let now = self.clock.now() as f64 / 1e9;
        let before = {
            let mut versions = self.versions.lock();
            let v = versions.entry(key.clone()).or_default();
            v.sizer.observe(now, up);
            match v.replicas {
                Some(n) if n >= 1 => return Ok(n),
                before => {
                    v.replicas = Some(up);
                    before
                }
            }
        };
        match set_replicas(&kube, &workload, up).await {
            Ok(()) => {
                tracing::info!(model, version, replicas = up, "woken from zero");
                self.note(model, version, before.unwrap_or(0), up);
                Ok(up)
            }
            Err(e) => {
                self.versions.lock().entry(key).or_default().replicas = before;
                Err(WakeError::Api(workload.namespace, workload.name, e))
            }
        }
    }

    /// One round: sizes every scaled version from its concurrency (`concurrency(model, version)`,
    /// summed over the region's gateways; `None` when their metrics could not be read, which
    /// changes nothing).
    pub async fn round(&self, snap: &Snapshot, concurrency: impl Fn(&str, &str) -> Option<f64>) {
        let Some(kube) = self.kube.lock().clone() else {
            return;
        };
        for m in &snap.config.models {
            for v in &m.versions {
                let (Some(scale), Some(workload)) = (&v.scale, v.workload()) else {
                    continue;
                };
                let Some(c) = concurrency(&m.name, &v.name) else {
                    continue;
                };
                if let Err(e) = self.size(&kube, (&m.name, &v.name), scale, &workload, c).await {
                    tracing::warn!(model = m.name, version = v.name, "scaling: {e}");
                }
            }
        }
    }

    async fn size(
        &self,
        kube: &Client,
        (model, version): (&str, &str),
        scale: &Scale,
        workload: &Workload,
        concurrency: f64,
    ) -> Result<(), kube::Error> {
        let key = (model.to_string(), version.to_string());
        let now = self.clock.now() as f64 / 1e9;
        let known = self.versions.lock().get(&key).and_then(|v| v.replicas);
        let current = match known {
            Some(n) => n,
            None => {
                let n = get_replicas(kube, workload).await?;
                let mut versions = self.versions.lock();
                let v = versions.entry(key.clone()).or_default();
                // Taken as desired until now: a restart never scales down before the delay.
                v.sizer.observe(now, n);
                v.replicas = Some(n);
                n
            }
        };
        let target = {
            let mut versions = self.versions.lock();
            let v = versions.entry(key.clone()).or_default();
            v.sizer.observe(now, desired(concurrency, scale));
            let target = v.sizer.recommend(now, scale.scale_down_delay.get().as_secs_f64());
            if v.replicas != Some(current) || target == current {
                // A wake-up moved it meanwhile, or nothing to do.
                self.replicas
                    .with_label_values(&[model, version])
                    .set(i64::from(current));
                return Ok(());
            }
            v.replicas = Some(target);
            target
        };
        if let Err(e) = set_replicas(kube, workload, target).await {
            self.versions.lock().entry(key).or_default().replicas = None;
            return Err(e);
        }
        tracing::info!(model, version, from = current, to = target, concurrency, "scaled");
        self.note(model, version, current, target);
        Ok(())
    }

    fn note(&self, model: &str, version: &str, from: u32, to: u32) {
        let direction = if to > from { "up" } else { "down" };
        self.patches.with_label_values(&[model, version, direction]).inc();
        self.replicas.with_label_values(&[model, version]).set(i64::from(to));
    }
}

/// A scaled version's settings and workload.
fn scaled<'a>(snap: &'a Snapshot, model: &str, version: &str) -> Option<(&'a Scale, Workload)> {
    let m = snap.config.models.iter().find(|m| m.name == model)?;
    let v = m.versions.iter().find(|v| v.name == version)?;
    Some((v.scale.as_ref()?, v.workload()?))
}

async fn get_replicas(kube: &Client, w: &Workload) -> Result<u32, kube::Error> {
    let scale = match w.kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(kube.clone(), &w.namespace)
                .get_scale(&w.name)
                .await?
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(kube.clone(), &w.namespace)
                .get_scale(&w.name)
                .await?
        }
    };
    Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0).max(0) as u32)
}

async fn set_replicas(kube: &Client, w: &Workload, replicas: u32) -> Result<(), kube::Error> {
    let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
    let pp = PatchParams::default();
    match w.kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(kube.clone(), &w.namespace)
                .patch_scale(&w.name, &pp, &patch)
                .await?;
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(kube.clone(), &w.namespace)
                .patch_scale(&w.name, &pp, &patch)
                .await?;
        }
    }
    Ok(())
}
