//! Admission control per model: a concurrency limit with a bounded wait queue and a deadline, and
//! priority classes that shed the lowest first. `sheddable` requests are refused (429) once the model
//! is past `shed_sheddable_at` percent of its limit; `standard` ones wait in the queue up to its
//! deadline (503 + Retry-After) and are refused when the queue is full (429); `critical` ones wait
//! even when the queue is full. Permits are tokio semaphore permits, so waiting is FIFO and a
//! finished request hands its slot to the next waiter at once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meridian_config::schema::{Limits, PriorityClass};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One model's admission state (per routing table generation).
#[derive(Debug)]
pub struct Admission {
    permits: Option<Arc<Semaphore>>,
    limit: u32,
    waiting: AtomicU32,
    queue_size: u32,
    queue_timeout: Duration,
    shed_at: f64,
}

/// Why a request was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// A sheddable request while the model is busy (429).
    LowPriority,
    /// The wait queue is full (429).
    QueueFull,
    /// The request waited past the queue deadline (503).
    Deadline,
}

impl Shed {
    /// HTTP status and label.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Shed::LowPriority => (429, "low_priority"),
            Shed::QueueFull => (429, "queue_full"),
            Shed::Deadline => (503, "queue_deadline"),
        }
    }
}

/// Keeps a request's slot until dropped.
#[derive(Debug)]
pub struct Admitted(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    /// Admission for a model with these limits; unlimited without `per_model_concurrency`.
    pub fn new(limits: &Limits) -> Admission {
        let limit = limits.per_model_concurrency.unwrap_or(0);
        Admission {
            permits: limits
                .per_model_concurrency
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            limit,
            waiting: AtomicU32::new(0),
            queue_size: limits.queue.size,
            queue_timeout: limits.queue.timeout.get(),
            shed_at: limits.shed_sheddable_at,
        }
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Admits a request of `class`, waiting in the queue if needed.
    pub async fn admit(&self, class: PriorityClass) -> Result<Admitted, Shed> {
        let Some(sem) = &self.permits else {
            return Ok(Admitted(None));
        };
        let in_use = self.limit.saturating_sub(sem.available_permits() as u32);
        if class == PriorityClass::Sheddable && f64::from(in_use) >= f64::from(self.limit) * self.shed_at / 100.0 {
            return Err(Shed::LowPriority);
        }
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok(Admitted(Some(p)));
        }
        if class != PriorityClass::Critical && self.waiting.load(Ordering::Relaxed) >= self.queue_size {
            return Err(Shed::QueueFull);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _w = Waiting(&self.waiting);
        match tokio::time::timeout(self.queue_timeout, sem.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Admitted(Some(p))),
            _ => Err(Shed::Deadline),
        }
    }
}

/// The priority class a request asks for in `header`, if it names a known one.
pub fn class_of(value: Option<&[u8]>) -> Option<PriorityClass> {
    match value? {
        b"critical" => Some(PriorityClass::Critical),
        b"standard" => Some(PriorityClass::Standard),
        b"sheddable" => Some(PriorityClass::Sheddable),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_config::units::Duration as D;

    fn limits(n: u32, queue: u32) -> Limits {
        let mut l = Limits {
            per_model_concurrency: Some(n),
            shed_sheddable_at: 50.0,
            ..Limits::default()
        };
        l.queue.size = queue;
        l.queue.timeout = D::millis(50);
        l
    }

    #[tokio::test]
    async fn limit_queue_deadline_and_priorities() {
        let a = Admission::new(&limits(2, 1));
        let first = a.admit(PriorityClass::Standard).await.unwrap();
        assert_eq!(
            a.admit(PriorityClass::Sheddable).await.unwrap_err(),
            Shed::LowPriority,
            "1 of 2 in use is 50%"
        );
        let _second = a.admit(PriorityClass::Critical).await.unwrap();
        // Full: a standard request waits, then times out.
        assert_eq!(a.admit(PriorityClass::Standard).await.unwrap_err(), Shed::Deadline);
        // A waiter gets the slot a finished request frees.
        let waiter = a.admit(PriorityClass::Standard);
        let release = async {
            tokio::task::yield_now().await;
            drop(first);
        };
        let (got, ()) = tokio::join!(waiter, release);
        assert!(got.is_ok());
        assert_eq!(a.waiting(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_sheds_standard_but_not_critical() {
        let a = Arc::new(Admission::new(&limits(1, 0)));
        let _held = a.admit(PriorityClass::Standard).await.unwrap();
        assert_eq!(a.admit(PriorityClass::Standard).await.unwrap_err(), Shed::QueueFull);
        assert_eq!(
            a.admit(PriorityClass::Critical).await.unwrap_err(),
            Shed::Deadline,
            "critical waits even past the queue size"
        );
        assert!(
            Admission::new(&Limits::default())
                .admit(PriorityClass::Sheddable)
                .await
                .is_ok(),
            "no model limit"
        );
        assert_eq!(class_of(Some(b"critical")), Some(PriorityClass::Critical));
        assert_eq!(class_of(Some(b"bogus")), None);
    }
}
