//! GPU telemetry from a model server's or GPU node's own Prometheus metrics: Triton (`nv_*`), vLLM
//! (`vllm:*`) and NVIDIA's DCGM exporter (`DCGM_FI_*`), parsed as Prometheus text with
//! openmetrics-parser (which, unlike some parsers, accepts the colons in vLLM's names) and reduced
//! to the [`Signals`] the headroom score reads.

use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};

use crate::headroom::{LoraSignals, Signals};

type Exposition = MetricsExposition<PrometheusType, PrometheusValue>;

/// A scrape that is not Prometheus text, with the parser's words.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("not Prometheus text: {0}")]
pub struct NotPrometheus(pub String);

/// Reads the signals out of one scrape, collected at `at` (seconds, the collector's clock).
pub fn signals(text: &str, at: f64) -> Result<Signals, NotPrometheus> {
    if text.trim().is_empty() {
        // A server with nothing to report yet: no signal, which scores as unknown.
        return Ok(Signals {
            at,
            ..Signals::default()
        });
    }
    let exp = parse_prometheus(text).map_err(|e| NotPrometheus(format!("{e:?}")))?;
    let waiting = add(
        sum(&exp, "nv_inference_pending_request_count"),
        sum(&exp, "vllm:num_requests_waiting"),
    );
    let gpu_util = max(&exp, "nv_gpu_utilization")
        .or_else(|| max(&exp, "DCGM_FI_DEV_GPU_UTIL").map(|p| p / 100.0))
        .or_else(|| max(&exp, "meridian_gpu_utilization_ratio"));
    let memory = ratio(
        sum(&exp, "nv_gpu_memory_used_bytes"),
        sum(&exp, "nv_gpu_memory_total_bytes"),
    )
    .or_else(|| {
        let used = sum(&exp, "DCGM_FI_DEV_FB_USED")?;
        ratio(Some(used), add(Some(used), sum(&exp, "DCGM_FI_DEV_FB_FREE")))
    })
    .or_else(|| {
        ratio(
            sum(&exp, "meridian_gpu_memory_used_bytes"),
            sum(&exp, "meridian_gpu_memory_total_bytes"),
        )
    });
    Ok(Signals {
        waiting,
        running: sum(&exp, "vllm:num_requests_running"),
        // vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc (v0.10); read either.
        kv_cache: max(&exp, "vllm:kv_cache_usage_perc").or_else(|| max(&exp, "vllm:gpu_cache_usage_perc")),
        gpu_util,
        memory,
        // DCGM reports the last XID code seen (0: none); meridian gpu-agent XID and ECC counts.
        gpu_errors: add(
            add(
                max(&exp, "DCGM_FI_DEV_XID_ERRORS"),
                max(&exp, "meridian_gpu_xid_errors"),
            ),
            max(&exp, "meridian_gpu_ecc_uncorrected_errors"),
        ),
        lora: lora(&exp),
        kv_tokens: kv_tokens(&exp),
        at,
    })
}

/// `vllm:cache_config_info{num_gpu_blocks, block_size}` (an info gauge: the config is in labels):
/// the tokens the KV cache holds, summed over engines (data-parallel ranks each have their own).
fn kv_tokens(exp: &Exposition) -> Option<u64> {
    let family = exp.families.get("vllm:cache_config_info")?;
    let mut total = None;
    for s in family.iter_samples() {
        let labels = s.get_labelset().ok()?;
        let blocks: u64 = labels.get_label_value("num_gpu_blocks")?.parse().ok()?;
        let size: u64 = labels.get_label_value("block_size")?.parse().ok()?;
        total = Some(total.unwrap_or(0) + blocks * size);
    }
    total
}

/// `vllm:lora_requests_info{max_lora, running_lora_adapters, waiting_lora_adapters}` (comma-separated
/// lists in labels; vLLM sets the sample's value to the time it was updated): the latest sample's.
fn lora(exp: &Exposition) -> Option<LoraSignals> {
    let family = exp.families.get("vllm:lora_requests_info")?;
    let latest = family.iter_samples().max_by(|a, b| match (&a.value, &b.value) {
        (PrometheusValue::Gauge(x), PrometheusValue::Gauge(y)) => x.as_f64().total_cmp(&y.as_f64()),
        _ => std::cmp::Ordering::Equal,
    })?;
    let labels = latest.get_labelset().ok()?;
    let list = |name: &str| -> Vec<String> {
        labels
            .get_label_value(name)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect()
    };
    Some(LoraSignals {
        max: labels.get_label_value("max_lora")?.parse().ok()?,
        running: list("running_lora_adapters"),
        waiting: list("waiting_lora_adapters"),
    })
}

fn values<'a>(exp: &'a Exposition, name: &str) -> impl Iterator<Item = f64> + 'a {
    exp.families
        .get(name)
        .into_iter()
        .flat_map(|f| f.iter_samples())
        .filter_map(|s| match &s.value {
            PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => Some(n.as_f64()),
            PrometheusValue::Counter(c) => Some(c.value.as_f64()),
            _ => None,
        })
        .filter(|v| v.is_finite())
}

fn sum(exp: &Exposition, name: &str) -> Option<f64> {
    values(exp, name).fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
}

fn max(exp: &Exposition, name: &str) -> Option<f64> {
    values(exp, name).fold(None, |acc: Option<f64>, v| Some(acc.map_or(v, |a| a.max(v))))
}

fn add(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
    }
}

fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    Some(num? / den.filter(|d| *d > 0.0)?)
}
