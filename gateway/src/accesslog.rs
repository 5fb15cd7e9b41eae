//! Access logs: one line per request on stdout, JSON for log pipelines (Fluent Bit, Loki) or text
//! for people. Lines go through a bounded queue to a writer thread, so a slow stdout consumer drops
//! lines (counted in `meridian_access_log_dropped_total`) instead of stalling requests.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use meridian_config::schema::LogFormat;
use serde::Serialize;

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// Completion time, RFC 3339 UTC.
    pub time: String,
    /// W3C trace id from the client's `traceparent`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    /// Client address.
    pub client: String,
    /// HTTP method.
    pub method: &'a str,
    /// Request path.
    pub path: &'a str,
    /// Model, when the request named a known one.
    pub model: &'a str,
    /// Version served.
    pub version: &'a str,
    /// Endpoint of the last attempt.
    pub endpoint: &'a str,
    /// Locality level of the last attempt (zone, region, or a failover region).
    pub locality: &'a str,
    /// Final status (0 when the client went away first).
    pub status: u16,
    /// Time in the gateway, milliseconds.
    pub duration_ms: f64,
    /// Attempts beyond the first.
    pub retries: usize,
    /// Request body bytes received.
    pub bytes_in: usize,
    /// Response body bytes sent.
    pub bytes_out: usize,
}

/// The access log sink.
pub struct AccessLog {
    tx: SyncSender<String>,
    /// Lines queued and not yet flushed, so a stopping process can wait for its last lines.
    pending: Arc<AtomicUsize>,
}

impl AccessLog {
    /// Starts the writer thread on stdout.
    pub fn stdout() -> AccessLog {
        let (tx, rx) = sync_channel::<String>(16_384);
        let pending = Arc::new(AtomicUsize::new(0));
        let written = pending.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    // Lock stdout per batch only: other output of the process must not wait on us.
                    let out = std::io::stdout();
                    let mut w = std::io::BufWriter::new(out.lock());
                    let _ = w.write_all(line.as_bytes());
                    let mut n = 1;
                    while let Ok(more) = rx.try_recv() {
                        let _ = w.write_all(more.as_bytes());
                        n += 1;
                    }
                    // Flushed whenever the queue runs dry, so lines appear promptly at low rates.
                    let _ = w.flush();
                    written.fetch_sub(n, Ordering::Release);
                }
            })
            .map(|_| ())
            .unwrap_or(());
        AccessLog { tx, pending }
    }

    /// Waits (bounded) until every queued line is written: the last step of a graceful stop.
    pub fn flush(&self, within: Duration) {
        const STEP: Duration = Duration::from_millis(5);
        for _ in 0..within.as_millis().div_ceil(STEP.as_millis()) {
            if self.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            std::thread::sleep(STEP);
        }
    }

    /// Queues a line; false when it was dropped.
    pub fn write(&self, e: &Entry<'_>, format: LogFormat) -> bool {
        let line = match format {
            LogFormat::Json => serde_json::to_string(e).map(|mut s| {
                s.push('\n');
                s
            }),
            LogFormat::Text => Ok(format!(
                "{} {} {} {} {}/{} -> {} [{}] {} {:.1}ms retries={} trace={}\n",
                e.time,
                e.client,
                e.method,
                e.path,
                e.model,
                e.version,
                e.endpoint,
                e.locality,
                e.status,
                e.duration_ms,
                e.retries,
                e.trace_id.unwrap_or("-")
            )),
        };
        match line {
            Ok(l) => {
                self.pending.fetch_add(1, Ordering::Release);
                let sent = !matches!(
                    self.tx.try_send(l),
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_))
                );
                if !sent {
                    self.pending.fetch_sub(1, Ordering::Release);
                }
                sent
            }
            Err(_) => false,
        }
    }
}

/// The trace id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id("garbage"), None);
        assert_eq!(trace_id("00-xyz-00f067aa0ba902b7-01"), None);
    }
}
