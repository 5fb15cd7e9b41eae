//! Where the gateway stands in its life: ready once every endpoint has its first health check
//! result, draining once it stops, and the requests in progress. A stopping gateway (SIGTERM, or a
//! graceful upgrade handing its listening sockets to a new process) exits the moment the last
//! request ends, token streams included, instead of cutting them or sleeping out a fixed grace
//! period.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Readiness, draining, and the requests in progress.
#[derive(Default)]
pub struct Lifecycle {
    checked: AtomicBool,
    active: AtomicUsize,
    draining: AtomicBool,
    idle: Notify,
}

/// Held by a request from its first byte to its last log line, and by an HTTP/2 connection
/// until it closes (its streams' last frames leave after their requests end).
pub struct InProgress(Arc<Lifecycle>);

impl Lifecycle {
    /// Records that every endpoint has a first health check result.
    pub fn mark_checked(&self) {
        self.checked.store(true, Ordering::Release);
    }

    /// Whether the first health round finished (the V2 and gRPC readiness answers).
    pub fn checked(&self) -> bool {
        self.checked.load(Ordering::Acquire)
    }

    /// Whether the gateway takes new traffic: checked and not draining (`/readyz`).
    pub fn ready(&self) -> bool {
        self.checked() && !self.draining()
    }

    /// Counts a request in; the count drops when the returned guard does.
    pub fn enter(self: &Arc<Self>) -> InProgress {
        self.active.fetch_add(1, Ordering::SeqCst);
        InProgress(self.clone())
    }

    /// Requests in progress now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Whether draining has started (readiness reports false from then on).
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts draining: readiness turns false and responses close their connections.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Starts draining and waits until no request is in progress or `grace` passes; true when idle.
    pub async fn until_idle(&self, grace: Duration) -> bool {
        self.begin();
        let idle = async {
            loop {
                let notified = self.idle.notified();
                tokio::pin!(notified);
                // Registered before the count is read, so a request ending in between still wakes us.
                notified.as_mut().enable();
                if self.active.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(grace, idle).await.is_ok() || self.active.load(Ordering::SeqCst) == 0
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        // Only a draining process pays for the wake-up; serving never touches the Notify's lock.
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 && self.0.draining.load(Ordering::SeqCst) {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_checked_until_draining() {
        let l = Lifecycle::default();
        assert!(!l.ready());
        l.mark_checked();
        assert!(l.ready() && l.checked());
        l.begin();
        assert!(
            !l.ready() && l.checked(),
            "draining takes it out, the V2 answer keeps its check"
        );
    }

    #[tokio::test]
    async fn waits_for_the_last_request() {
        let d = Arc::new(Lifecycle::default());
        assert!(d.until_idle(Duration::ZERO).await, "idle at once without requests");
        let a = d.enter();
        let b = d.enter();
        assert!(
            !d.until_idle(Duration::from_millis(1)).await,
            "two requests still in progress"
        );
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.until_idle(Duration::from_secs(60)).await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        assert!(waiter.await.unwrap());
        assert!(d.draining());
        assert_eq!(d.active(), 0);
    }
}
