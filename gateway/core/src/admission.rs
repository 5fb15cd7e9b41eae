//! Admission control per model: a concurrency limit with a bounded wait queue and a deadline, and
//! priority classes that shed the lowest first. `sheddable` requests are refused (429) once the model
//! is past `shed_sheddable_at` percent of its limit; `standard` ones wait in the queue up to its
//! deadline (503 + Retry-After) and are refused when the queue is full (429); `critical` ones wait
//! even when the queue is full. A freed slot goes to the highest class waiting (FIFO within a
//! class), and a full queue makes room for a higher class by displacing the newest waiter of the
//! lowest class (429).
//!
//! The state sits behind a short mutex, taken only for models with a concurrency limit: an admit or
//! a release holds it for a few queue operations, never across an await. The queue deadline's timer
//! is the caller's (a `sleep` it passes in), so this stays free of any runtime.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{select, Either};

use meridian_config::schema::{Limits, PriorityClass};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::reply::Reply;

/// One model's admission state, kept across reloads while its limits stay the same.
#[derive(Debug)]
pub struct Admission {
    limit: Option<u32>,
    queue_size: u32,
    queue_timeout: Duration,
    shed_at: f64,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    in_use: u32,
    queue: WaitQueue,
}

impl State {
    /// Hands a slot to the highest class waiting; false when nobody (alive) waits.
    fn hand_over(&mut self) -> bool {
        while let Some(w) = self.queue.pop_next() {
            if w.wake.send(Ok(())).is_ok() {
                return true;
            }
        }
        false
    }
}

/// Requests waiting, by priority class: the next out is the oldest of the highest class waiting.
/// Admission's queue, and the activator's hold.
#[derive(Debug, Default)]
pub(crate) struct WaitQueue {
    /// Waiters by class (index: `PriorityClass as usize`), oldest first.
    queues: [VecDeque<Waiter>; 3],
    next_id: u64,
}

/// One waiting request: what it will be told.
#[derive(Debug)]
pub(crate) struct Waiter {
    id: u64,
    /// Where its answer goes: `Ok` to go on, or why it was shed.
    pub(crate) wake: oneshot::Sender<Result<(), Shed>>,
}

impl WaitQueue {
    /// Requests waiting.
    pub(crate) fn len(&self) -> u32 {
        self.queues.iter().map(|q| q.len() as u32).sum()
    }

    /// Queues a request of `class` in a queue of at most `size` (critical requests wait even when
    /// it is full); a full queue makes room by displacing the newest waiter of a lower class.
    pub(crate) fn join(
        &mut self,
        class: PriorityClass,
        size: u32,
    ) -> Result<(u64, oneshot::Receiver<Result<(), Shed>>), Shed> {
        if self.len() >= size && class != PriorityClass::Critical {
            let lower = self.queues[..class as usize].iter_mut().find(|q| !q.is_empty());
            match lower.and_then(VecDeque::pop_back) {
                Some(w) => {
                    let _ = w.wake.send(Err(Shed::Displaced));
                }
                None => return Err(Shed::QueueFull),
            }
        }
        let (tx, rx) = oneshot::channel();
        self.next_id += 1;
        let id = self.next_id;
        self.queues[class as usize].push_back(Waiter { id, wake: tx });
        Ok((id, rx))
    }

    /// Takes waiter `id` of `class` out; false when it is no longer queued (it was answered).
    pub(crate) fn leave(&mut self, class: PriorityClass, id: u64) -> bool {
        let q = &mut self.queues[class as usize];
        match q.iter().position(|w| w.id == id) {
            Some(at) => {
                q.remove(at);
                true
            }
            None => false,
        }
    }

    /// The next waiter out: the oldest of the highest class.
    pub(crate) fn pop_next(&mut self) -> Option<Waiter> {
        self.queues.iter_mut().rev().find_map(VecDeque::pop_front)
    }
}

/// Why a request was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// A sheddable request while the model is busy (429).
    LowPriority,
    /// The wait queue is full (429).
    QueueFull,
    /// A higher class took this request's place in the full queue (429).
    Displaced,
    /// The request waited past the queue deadline (503).
    Deadline,
}

impl Shed {
    /// HTTP status and label.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Shed::LowPriority => (429, "low_priority"),
            Shed::QueueFull => (429, "queue_full"),
            Shed::Displaced => (429, "displaced"),
            Shed::Deadline => (503, "queue_deadline"),
        }
    }

    /// What the client of a request of `class` for `model` is told (429 or 503, with Retry-After).
    pub fn reply(self, model: &str, class: PriorityClass) -> Reply {
        let msg = match self {
            Shed::LowPriority => {
                format!("model {model} is busy; {} requests are shed first", class_label(class))
            }
            Shed::Displaced => {
                format!("model {model} is busy; a higher-priority request took this one's place in the queue")
            }
            Shed::QueueFull => format!("model {model} is at its concurrency limit and its queue is full"),
            Shed::Deadline => format!("model {model} stayed at its concurrency limit past the queue deadline"),
        };
        Reply::error(self.status().0, msg)
    }
}

/// A priority class as metrics and messages name it.
pub fn class_label(class: PriorityClass) -> &'static str {
    match class {
        PriorityClass::Critical => "critical",
        PriorityClass::Standard => "standard",
        PriorityClass::Sheddable => "sheddable",
    }
}

/// Keeps a request's slot until dropped, then hands it to the next waiter.
#[derive(Debug)]
pub struct Admitted(Option<Arc<Mutex<State>>>);

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(state) = &self.0 {
            let mut s = state.lock();
            if !s.hand_over() {
                s.in_use -= 1;
            }
        }
    }
}

impl Admission {
    /// Admission for a model with these limits; unlimited without `per_model_concurrency`.
    pub fn new(limits: &Limits) -> Admission {
        Admission {
            limit: limits.per_model_concurrency,
            queue_size: limits.queue.size,
            queue_timeout: limits.queue.timeout.get(),
            shed_at: limits.shed_sheddable_at,
            state: Arc::default(),
        }
    }

    /// Whether this admission enforces exactly `limits` (so a reload can keep it, with the
    /// requests it admitted and the ones waiting).
    pub fn same_limits(&self, limits: &Limits) -> bool {
        self.limit == limits.per_model_concurrency
            && self.queue_size == limits.queue.size
            && self.queue_timeout == limits.queue.timeout.get()
            && self.shed_at == limits.shed_sheddable_at
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> u32 {
        self.state.lock().queue.len()
    }

    /// Admits a request of `class`, waiting in the queue if needed; `sleep` makes the timer of the
    /// queue deadline (e.g. `tokio::time::sleep`), polled only while the request waits.
    pub async fn admit<F: Future<Output = ()>>(
        &self,
        class: PriorityClass,
        sleep: impl FnOnce(Duration) -> F,
    ) -> Result<Admitted, Shed> {
        let Some(limit) = self.limit else {
            return Ok(Admitted(None));
        };
        let (id, rx) = {
            let mut s = self.state.lock();
            // At 100% sheddable requests are never refused early: they queue, last in line.
            if class == PriorityClass::Sheddable
                && self.shed_at < 100.0
                && f64::from(s.in_use) >= f64::from(limit) * self.shed_at / 100.0
            {
                return Err(Shed::LowPriority);
            }
            if s.in_use < limit {
                s.in_use += 1;
                return Ok(Admitted(Some(self.state.clone())));
            }
            s.queue.join(class, self.queue_size)?
        };
        let mut queued = Queued {
            state: &self.state,
            class,
            id,
            rx,
            settled: false,
        };
        let deadline = std::pin::pin!(sleep(self.queue_timeout));
        let woke = match select(&mut queued.rx, deadline).await {
            Either::Left((answer, _)) => answer.ok(),
            Either::Right(((), _)) => None,
        };
        queued.outcome(woke)
    }
}

/// A request in the wait queue. However its wait ends (woken, deadline, or the client going away
/// and the future dropped), it leaves the queue, and a slot handed to it unused is passed on.
struct Queued<'a> {
    state: &'a Arc<Mutex<State>>,
    class: PriorityClass,
    id: u64,
    rx: oneshot::Receiver<Result<(), Shed>>,
    /// Set once `outcome` took the answer; the drop then has nothing left to do.
    settled: bool,
}

impl Queued<'_> {
    /// What the wait came to (`woke`: the answer, when one arrived in time); the slot, if
    /// granted, now belongs to the caller.
    fn outcome(mut self, woke: Option<Result<(), Shed>>) -> Result<Admitted, Shed> {
        let granted = woke.or_else(|| self.leave());
        self.settled = true;
        match granted {
            Some(Ok(())) => Ok(Admitted(Some(self.state.clone()))),
            Some(Err(shed)) => Err(shed),
            None => Err(Shed::Deadline),
        }
    }

    /// Leaves the queue; returns what was sent to this waiter, if anything was.
    fn leave(&mut self) -> Option<Result<(), Shed>> {
        // Senders only send under the lock, so once it is held the answer is settled.
        if self.state.lock().queue.leave(self.class, self.id) {
            return None;
        }
        self.rx.try_recv().ok()
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if let Some(Ok(())) = self.leave() {
            let mut s = self.state.lock();
            if !s.hand_over() {
                s.in_use -= 1;
            }
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
    use tokio::time::sleep;

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
        let first = a.admit(PriorityClass::Standard, sleep).await.unwrap();
        assert_eq!(
            a.admit(PriorityClass::Sheddable, sleep).await.unwrap_err(),
            Shed::LowPriority,
            "1 of 2 in use is 50%"
        );
        let _second = a.admit(PriorityClass::Critical, sleep).await.unwrap();
        // Full: a standard request waits, then times out.
        assert_eq!(
            a.admit(PriorityClass::Standard, sleep).await.unwrap_err(),
            Shed::Deadline
        );
        // A waiter gets the slot a finished request frees.
        let waiter = a.admit(PriorityClass::Standard, sleep);
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
        let _held = a.admit(PriorityClass::Standard, sleep).await.unwrap();
        assert_eq!(
            a.admit(PriorityClass::Standard, sleep).await.unwrap_err(),
            Shed::QueueFull
        );
        assert_eq!(
            a.admit(PriorityClass::Critical, sleep).await.unwrap_err(),
            Shed::Deadline,
            "critical waits even past the queue size"
        );
        assert!(
            Admission::new(&Limits::default())
                .admit(PriorityClass::Sheddable, sleep)
                .await
                .is_ok(),
            "no model limit"
        );
        assert_eq!(class_of(Some(b"critical")), Some(PriorityClass::Critical));
        assert_eq!(class_of(Some(b"bogus")), None);
    }

    fn patient(n: u32, queue: u32, shed_at: f64) -> Arc<Admission> {
        let mut l = limits(n, queue);
        l.queue.timeout = D::secs(60);
        l.shed_sheddable_at = shed_at;
        Arc::new(Admission::new(&l))
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_highest_class_first() {
        let a = patient(1, 8, 100.0);
        let held = a.admit(PriorityClass::Standard, sleep).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, class) in [
            ("sheddable", PriorityClass::Sheddable),
            ("standard", PriorityClass::Standard),
            ("critical", PriorityClass::Critical),
        ] {
            let (a, order) = (a.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let slot = a.admit(class, sleep).await.unwrap();
                order.lock().push(name);
                settle().await;
                drop(slot);
            }));
            settle().await;
        }
        assert_eq!(a.waiting(), 3);
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock(), ["critical", "standard", "sheddable"]);
        assert_eq!(a.state.lock().in_use, 0);
    }

    #[tokio::test]
    async fn a_full_queue_displaces_the_lowest_class_and_cancelled_waiters_leave() {
        let a = patient(1, 1, 100.0);
        let held = a.admit(PriorityClass::Standard, sleep).await.unwrap();
        let low = tokio::spawn({
            let a = a.clone();
            async move { a.admit(PriorityClass::Sheddable, sleep).await.map(drop) }
        });
        settle().await;
        let high = tokio::spawn({
            let a = a.clone();
            async move { a.admit(PriorityClass::Standard, sleep).await.map(drop) }
        });
        settle().await;
        assert_eq!(low.await.unwrap(), Err(Shed::Displaced));
        // Same class, queue full: refused, not displaced.
        assert_eq!(
            a.admit(PriorityClass::Standard, sleep).await.unwrap_err(),
            Shed::QueueFull
        );
        drop(held);
        assert_eq!(high.await.unwrap(), Ok(()));

        // A waiter whose client went away leaves the queue and takes no slot with it.
        let held = a.admit(PriorityClass::Standard, sleep).await.unwrap();
        let gone = tokio::spawn({
            let a = a.clone();
            async move { a.admit(PriorityClass::Standard, sleep).await.map(drop) }
        });
        settle().await;
        assert_eq!(a.waiting(), 1);
        gone.abort();
        settle().await;
        assert_eq!(a.waiting(), 0);
        drop(held);
        assert_eq!(a.state.lock().in_use, 0);
        assert!(a.admit(PriorityClass::Standard, sleep).await.is_ok());
    }
}
