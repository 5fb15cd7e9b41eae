//! Canary analysis from the gateways' own metrics: `inference_requests_total` (success = not 5xx)
//! and the `inference_latency_seconds` histogram of the canary version, compared between two
//! scrapes a window apart (counters only grow, so deltas are the window's traffic). The same
//! sample carries the version's concurrency, which the scaler sizes replicas by.

use std::collections::VecDeque;

use meridian_config::schema::Analysis;
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::PrometheusValue;

use crate::canary::Verdict;

/// Why an analysis round has no sample: the gateways' metrics could not be had or read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AnalysisError {
    /// The region has no gateway.
    #[error("the region has no gateway to read metrics from")]
    NoGateway,
    /// The gateway's admin listener did not answer.
    #[error("gateway metrics unreachable: {0}")]
    Unreachable(String),
    /// The answer broke off.
    #[error("gateway metrics: {0}")]
    Body(String),
    /// The answer is not Prometheus text.
    #[error("gateway metrics unreadable: {0}")]
    Unreadable(String),
}

/// One scrape's counters for one model version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// When it was taken, seconds.
    pub at: f64,
    /// Requests answered.
    pub total: f64,
    /// Of which 5xx.
    pub errors: f64,
    /// Latency histogram: (upper bound, cumulative count), ascending.
    pub buckets: Vec<(f64, f64)>,
    /// Requests in flight to the version plus those held for it (`meridian_version_concurrency`).
    pub concurrency: f64,
}

/// Reads the counters of `model`/`version` from one or more gateways' metrics texts (summed).
pub fn sample(texts: &[String], model: &str, version: &str, at: f64) -> Result<Sample, AnalysisError> {
    let mut s = Sample {
        at,
        ..Sample::default()
    };
    for text in texts {
        let exp = parse_prometheus(text).map_err(|e| AnalysisError::Unreadable(format!("{e:?}")))?;
        let ours = |labels: Option<openmetrics_parser::LabelSet<'_>>| {
            labels.is_some_and(|l| {
                l.get_label_value("model_name") == Some(model) && l.get_label_value("model_version") == Some(version)
            })
        };
        if let Some(f) = exp.families.get("inference_requests_total") {
            for x in f.iter_samples().filter(|x| ours(x.get_labelset().ok())) {
                let v = match &x.value {
                    PrometheusValue::Counter(c) => c.value.as_f64(),
                    PrometheusValue::Unknown(n) | PrometheusValue::Gauge(n) => n.as_f64(),
                    _ => continue,
                };
                s.total += v;
                let status = x
                    .get_labelset()
                    .ok()
                    .and_then(|l| l.get_label_value("status").map(str::to_owned));
                if status.is_some_and(|c| c.starts_with('5')) {
                    s.errors += v;
                }
            }
        }
        if let Some(f) = exp.families.get("meridian_version_concurrency") {
            for x in f.iter_samples().filter(|x| ours(x.get_labelset().ok())) {
                if let PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) = &x.value {
                    s.concurrency += n.as_f64();
                }
            }
        }
        if let Some(f) = exp.families.get("inference_latency_seconds") {
            for x in f.iter_samples().filter(|x| ours(x.get_labelset().ok())) {
                if let PrometheusValue::Histogram(h) = &x.value {
                    for b in &h.buckets {
                        match s.buckets.iter_mut().find(|(le, _)| *le == b.upper_bound) {
                            Some(e) => e.1 += b.count.as_f64(),
                            None => s.buckets.push((b.upper_bound, b.count.as_f64())),
                        }
                    }
                }
            }
        }
    }
    s.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(s)
}

/// Recent samples of one plan's canary, enough to span its window.
#[derive(Debug, Default)]
pub struct Window {
    samples: VecDeque<Sample>,
}

impl Window {
    /// Adds a sample, dropping those older than needed for `span` seconds.
    pub fn push(&mut self, s: Sample, span: f64) {
        self.samples.push_back(s);
        while self.samples.len() > 2 && self.samples[1].at <= self.samples.back().map_or(0.0, |l| l.at) - span {
            self.samples.pop_front();
        }
    }

    /// Judges the traffic between the oldest sample within the window and the newest.
    pub fn evaluate(&self, a: &Analysis) -> Verdict {
        let (Some(old), Some(new)) = (self.samples.front(), self.samples.back()) else {
            return Verdict::Inconclusive("no metrics from the gateway yet".into());
        };
        let total = new.total - old.total;
        if total < f64::from(a.min_requests.max(1)) {
            return Verdict::Inconclusive(format!(
                "{total:.0} canary requests in the window, {} needed",
                a.min_requests.max(1)
            ));
        }
        let success = 1.0 - (new.errors - old.errors) / total;
        if success < a.success_rate {
            return Verdict::Fail(format!("success rate {success:.3} < {}", a.success_rate));
        }
        if let Some(bound) = a.p99_latency {
            let p99 = quantile(old, new, 0.99);
            if p99 > bound.get().as_secs_f64() {
                return Verdict::Fail(format!(
                    "p99 latency {}s > {}s",
                    if p99.is_finite() {
                        format!("{p99}")
                    } else {
                        "+Inf".into()
                    },
                    bound.get().as_secs_f64()
                ));
            }
        }
        Verdict::Pass
    }
}

/// The upper bound of the bucket holding quantile `q` of the requests between two samples.
fn quantile(old: &Sample, new: &Sample, q: f64) -> f64 {
    let delta = |le: f64, count: f64| count - old.buckets.iter().find(|(l, _)| *l == le).map_or(0.0, |(_, c)| *c);
    let total = new.buckets.last().map_or(0.0, |(le, c)| delta(*le, *c));
    new.buckets
        .iter()
        .find(|(le, c)| delta(*le, *c) >= q * total)
        .map_or(f64::INFINITY, |(le, _)| *le)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_config::units::Duration;

    fn text(ok: u64, err: u64, fast: u64, slow: u64) -> String {
        let total = fast + slow;
        format!(
            "# HELP inference_requests_total Inference requests.\n# TYPE inference_requests_total counter\n\
             inference_requests_total{{model_name=\"m\",model_version=\"v2\",status=\"200\"}} {ok}\n\
             inference_requests_total{{model_name=\"m\",model_version=\"v2\",status=\"503\"}} {err}\n\
             inference_requests_total{{model_name=\"m\",model_version=\"v1\",status=\"500\"}} 999\n\
             # HELP inference_latency_seconds Latency.\n# TYPE inference_latency_seconds histogram\n\
             inference_latency_seconds_bucket{{model_name=\"m\",model_version=\"v2\",le=\"0.1\"}} {fast}\n\
             inference_latency_seconds_bucket{{model_name=\"m\",model_version=\"v2\",le=\"1\"}} {total}\n\
             inference_latency_seconds_bucket{{model_name=\"m\",model_version=\"v2\",le=\"+Inf\"}} {total}\n\
             inference_latency_seconds_sum{{model_name=\"m\",model_version=\"v2\"}} 1\n\
             inference_latency_seconds_count{{model_name=\"m\",model_version=\"v2\"}} {total}\n"
        )
    }

    fn analysis() -> Analysis {
        Analysis {
            min_requests: 50,
            success_rate: 0.99,
            p99_latency: Some(Duration::millis(500)),
            ..Analysis::default()
        }
    }

    #[test]
    fn deltas_over_the_window_decide() {
        let mut w = Window::default();
        w.push(sample(&[text(100, 0, 100, 0)], "m", "v2", 0.0).unwrap(), 60.0);
        assert!(
            matches!(w.evaluate(&analysis()), Verdict::Inconclusive(_)),
            "one sample"
        );
        w.push(sample(&[text(120, 0, 120, 0)], "m", "v2", 10.0).unwrap(), 60.0);
        assert!(matches!(w.evaluate(&analysis()), Verdict::Inconclusive(m) if m.contains("20 canary requests")));
        w.push(sample(&[text(200, 0, 200, 0)], "m", "v2", 20.0).unwrap(), 60.0);
        assert_eq!(w.evaluate(&analysis()), Verdict::Pass);
        // Errors in the window, not before it, count (v1's 500s never do).
        w.push(sample(&[text(230, 10, 240, 0)], "m", "v2", 30.0).unwrap(), 60.0);
        assert!(matches!(w.evaluate(&analysis()), Verdict::Fail(m) if m.contains("success rate 0.929")));
    }

    #[test]
    fn slow_tails_fail_the_latency_bound() {
        let mut w = Window::default();
        w.push(sample(&[text(0, 0, 0, 0)], "m", "v2", 0.0).unwrap(), 60.0);
        w.push(sample(&[text(100, 0, 95, 5)], "m", "v2", 10.0).unwrap(), 60.0);
        assert!(matches!(w.evaluate(&analysis()), Verdict::Fail(m) if m.contains("p99 latency 1s > 0.5s")));
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut w = Window::default();
        for (i, n) in [(0, 0), (10, 100), (20, 200), (30, 210)] {
            w.push(sample(&[text(n, 0, n, 0)], "m", "v2", f64::from(i)).unwrap(), 15.0);
        }
        // The window reaches back to the last sample at or before its edge (t=10): 110 requests.
        let a = Analysis {
            min_requests: 200,
            ..analysis()
        };
        assert!(matches!(w.evaluate(&a), Verdict::Inconclusive(m) if m.contains("110 canary")));
    }
}

#[cfg(test)]
mod concurrency_tests {
    use super::*;

    #[test]
    fn concurrency_is_the_versions_own() {
        let text =
            "# HELP meridian_version_concurrency In flight plus held.\n# TYPE meridian_version_concurrency gauge\n\
                    meridian_version_concurrency{model_name=\"cold\",model_version=\"v1\"} 0\n\
                    meridian_version_concurrency{model_name=\"llm\",model_version=\"v1\"} 3\n"
                .to_string();
        let texts = [text.clone(), text];
        assert_eq!(sample(&texts, "llm", "v1", 0.0).unwrap().concurrency, 6.0);
        assert_eq!(sample(&texts, "cold", "v1", 0.0).unwrap().concurrency, 0.0);
    }
}
