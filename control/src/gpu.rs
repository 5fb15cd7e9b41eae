//! Per-GPU health as `meridian gpu-agent` reports it: the readings, the source they come from
//! (NVML behind a trait, so the agent's logic is tested without a GPU) and their Prometheus and
//! JSON renderings. NVML missing is a state the agent reports, never a crash.

use prometheus::{Encoder, GaugeVec, Opts, Registry, TextEncoder};
use serde::Serialize;

/// One GPU's health.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuReading {
    /// NVML index.
    pub index: u32,
    /// Stable GPU UUID.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// Share of the last sample period a kernel ran, 0..=1.
    pub utilization: f64,
    /// Framebuffer memory in use.
    pub memory_used_bytes: u64,
    /// Framebuffer memory installed.
    pub memory_total_bytes: u64,
    /// Core temperature.
    pub temperature_celsius: u32,
    /// Power draw.
    pub power_watts: f64,
    /// Uncorrected ECC errors since the driver loaded (volatile counter).
    pub ecc_uncorrected: u64,
    /// Critical XID errors seen since the agent started.
    pub xid_errors: u64,
    /// The last XID error code, if any.
    pub last_xid: Option<u64>,
}

/// Why GPU readings could not be had: the step that failed and the driver library's words.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{step}: {reason}")]
pub struct GpuError {
    /// What was being done (`NVML`, `NVML device count`, `NVML read`).
    pub step: &'static str,
    /// Why it failed.
    pub reason: String,
}

impl GpuError {
    /// `step` failed with `reason`.
    pub fn new(step: &'static str, reason: impl std::fmt::Display) -> GpuError {
        GpuError {
            step,
            reason: reason.to_string(),
        }
    }
}

/// Where readings come from.
pub trait GpuSource: Send {
    /// Waits up to `wait` (collecting fault events meanwhile), then reads every GPU.
    fn poll(&mut self, wait: std::time::Duration) -> Result<Vec<GpuReading>, GpuError>;
    /// The driver version, for the report.
    fn driver(&self) -> Option<String>;
}

/// What the agent serves.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentView {
    /// Whether NVML is loaded and answering.
    pub nvml_available: bool,
    /// Why not, when it is not (e.g. no driver on this node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// NVIDIA driver version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// The GPUs.
    pub gpus: Vec<GpuReading>,
    /// When the readings were taken, Unix seconds.
    pub updated_unix: u64,
}

impl AgentView {
    /// Prometheus text. `meridian_gpu_xid_errors` and `meridian_gpu_ecc_uncorrected_errors` are
    /// what control's scrape reads as GPU faults.
    pub fn render(&self) -> String {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
            registry.register(Box::new(g.clone())).expect("metric registered once");
            g
        };
        let available = gauge("meridian_gpu_nvml_available", "1 when NVML answers on this node", &[]);
        available
            .with_label_values::<&str>(&[])
            .set(f64::from(u8::from(self.nvml_available)));
        let l = &["gpu", "uuid"];
        let util = gauge("meridian_gpu_utilization_ratio", "Share of time a kernel ran, 0..1", l);
        let used = gauge("meridian_gpu_memory_used_bytes", "Framebuffer memory in use", l);
        let total = gauge("meridian_gpu_memory_total_bytes", "Framebuffer memory installed", l);
        let temp = gauge("meridian_gpu_temperature_celsius", "GPU core temperature", l);
        let power = gauge("meridian_gpu_power_watts", "GPU power draw", l);
        let ecc = gauge(
            "meridian_gpu_ecc_uncorrected_errors",
            "Uncorrected ECC errors since the driver loaded",
            l,
        );
        let xid = gauge(
            "meridian_gpu_xid_errors",
            "Critical XID errors seen since the agent started",
            l,
        );
        for g in &self.gpus {
            let idx = g.index.to_string();
            let lv = [idx.as_str(), g.uuid.as_str()];
            util.with_label_values(&lv).set(g.utilization);
            used.with_label_values(&lv).set(g.memory_used_bytes as f64);
            total.with_label_values(&lv).set(g.memory_total_bytes as f64);
            temp.with_label_values(&lv).set(f64::from(g.temperature_celsius));
            power.with_label_values(&lv).set(g.power_watts);
            ecc.with_label_values(&lv).set(g.ecc_uncorrected as f64);
            xid.with_label_values(&lv).set(g.xid_errors as f64);
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headroom::{score, Scoring};

    fn reading(xid: u64) -> GpuReading {
        GpuReading {
            index: 0,
            uuid: "GPU-1".into(),
            name: "NVIDIA H100 80GB HBM3".into(),
            utilization: 0.6,
            memory_used_bytes: 40 << 30,
            memory_total_bytes: 80 << 30,
            temperature_celsius: 60,
            power_watts: 350.5,
            ecc_uncorrected: 0,
            xid_errors: xid,
            last_xid: (xid > 0).then_some(79),
        }
    }

    #[test]
    fn agent_metrics_feed_control_headroom_and_faults() {
        let view = AgentView {
            nvml_available: true,
            gpus: vec![reading(0)],
            ..AgentView::default()
        };
        let s = crate::scrape::signals(&view.render(), 5.0).unwrap();
        assert_eq!((s.gpu_util, s.memory, s.gpu_errors), (Some(0.6), Some(0.5), Some(0.0)));
        let h = score(&s, 5.0, &Scoring::default());
        assert!(!h.faulted && (h.score.unwrap() - 0.4).abs() < 1e-9, "{h:?}");
        let faulted = AgentView {
            nvml_available: true,
            gpus: vec![reading(2)],
            ..AgentView::default()
        };
        let s = crate::scrape::signals(&faulted.render(), 5.0).unwrap();
        assert!(score(&s, 5.0, &Scoring::default()).faulted);
        let none = AgentView {
            error: Some("NVML shared library not found".into()),
            ..AgentView::default()
        };
        assert!(none.render().contains("meridian_gpu_nvml_available 0"));
    }
}
