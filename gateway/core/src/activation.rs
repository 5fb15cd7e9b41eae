//! Holding requests for a version that has no ready endpoint while it scales up from zero: the
//! gateway as Knative's activator. A request finding no endpoint waits here (bounded, by priority
//! class, up to `activation_timeout`) instead of failing; the first one asks the shell to wake the
//! version (once per [`WAKE_EVERY`] at most, however many wait), and the shell releases every
//! waiter, highest class and oldest first, when an endpoint becomes ready.
//!
//! A release is counted (`released`): a request that saw no endpoint and then finds a release
//! happened before it joined the queue goes on at once, so no wake-up is lost between the look and
//! the wait.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::{select, Either};
use meridian_config::schema::{PriorityClass, Scale};
use parking_lot::Mutex;

use crate::admission::{Shed, WaitQueue};
use crate::clock::Nanos;
use crate::reply::Reply;

/// How often the shell is asked to wake a version while requests keep arriving for it (a lost
/// wake-up is asked again; a flood of requests asks once).
pub const WAKE_EVERY: Duration = Duration::from_secs(5);

/// One version's hold, kept across reloads while its scale settings stay the same.
#[derive(Debug)]
pub struct Activator {
    timeout: Duration,
    max_held: u32,
    /// When the last wake was asked for, in [`Nanos`] + 1 (0: never).
    asked: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    queue: WaitQueue,
    /// Releases so far.
    released: u64,
}

/// Why a held request was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotWoken {
    /// No endpoint became ready within the activation timeout (503).
    Timeout,
    /// The hold is full (429).
    Full,
    /// A higher priority class took this request's place in the full hold (429).
    Displaced,
}

impl NotWoken {
    /// The answer to the client of a request for `model` `version` (with Retry-After).
    pub fn reply(self, model: &str, version: &str, timeout: Duration) -> Reply {
        match self {
            NotWoken::Timeout => Reply::error(
                503,
                format!(
                    "model {model} version {version} is scaling up from zero and had no ready endpoint within {}s",
                    timeout.as_secs()
                ),
            ),
            NotWoken::Full => Reply::error(
                429,
                format!("model {model} version {version} is scaling up from zero and holds as many requests as it may"),
            ),
            NotWoken::Displaced => Reply::error(
                429,
                format!("model {model} version {version} is scaling up from zero; a higher-priority request took this one's place"),
            ),
        }
    }

    /// The label metrics give it.
    pub fn label(self) -> &'static str {
        match self {
            NotWoken::Timeout => "activation_timeout",
            NotWoken::Full => "hold_full",
            NotWoken::Displaced => "displaced",
        }
    }
}

impl Activator {
    /// The hold of a version scaled by `scale`.
    pub fn new(scale: &Scale) -> Activator {
        Activator {
            timeout: scale.activation_timeout.get(),
            max_held: scale.max_held,
            asked: AtomicU64::new(0),
            state: Mutex::default(),
        }
    }

    /// Whether it holds requests exactly as `scale` says (so a reload keeps it, with its waiters).
    pub fn same_scale(&self, scale: &Scale) -> bool {
        self.timeout == scale.activation_timeout.get() && self.max_held == scale.max_held
    }

    /// How long a request is held at most.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Requests held now.
    pub fn held(&self) -> u32 {
        self.state.lock().queue.len()
    }

    /// Releases so far: read before looking for an endpoint, and passed to [`Activator::hold`].
    pub fn releases(&self) -> u64 {
        self.state.lock().released
    }

    /// Whether the version should be woken now (at `now`): true for the first request in
    /// [`WAKE_EVERY`], false for the rest.
    pub fn should_wake(&self, now: Nanos) -> bool {
        let every = WAKE_EVERY.as_nanos() as u64;
        let last = self.asked.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last - 1) < every {
            return false;
        }
        self.asked
            .compare_exchange(last, now + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Holds a request of `class` that found no endpoint after `seen` releases, until the next
    /// release or the activation timeout (`sleep` makes its timer).
    pub async fn hold<F: Future<Output = ()>>(
        &self,
        class: PriorityClass,
        seen: u64,
        sleep: impl FnOnce(Duration) -> F,
    ) -> Result<(), NotWoken> {
        let (id, rx) = {
            let mut s = self.state.lock();
            if s.released != seen {
                return Ok(());
            }
            s.queue.join(class, self.max_held).map_err(|_| NotWoken::Full)?
        };
        let mut held = Held {
            state: &self.state,
            class,
            id,
        };
        let deadline = std::pin::pin!(sleep(self.timeout));
        let answer = match select(rx, deadline).await {
            Either::Left((answer, _)) => answer.ok(),
            Either::Right(((), mut rx)) => {
                // Out of the queue under its lock, so the answer (if any) is settled.
                if held.leave() {
                    None
                } else {
                    rx.try_recv().ok()
                }
            }
        };
        held.id = 0;
        match answer {
            Some(Ok(())) => Ok(()),
            Some(Err(Shed::Displaced)) => Err(NotWoken::Displaced),
            Some(Err(_)) => Err(NotWoken::Full),
            None => Err(NotWoken::Timeout),
        }
    }

    /// An endpoint is ready: every held request goes on, highest class and oldest first. Returns
    /// how many were held.
    pub fn release(&self) -> u32 {
        let mut s = self.state.lock();
        s.released += 1;
        let mut n = 0;
        while let Some(w) = s.queue.pop_next() {
            n += u32::from(w.wake.send(Ok(())).is_ok());
        }
        n
    }
}

/// A request in the hold; leaves it however its wait ends (the client going away included).
struct Held<'a> {
    state: &'a Mutex<State>,
    class: PriorityClass,
    /// 0 once settled.
    id: u64,
}

impl Held<'_> {
    fn leave(&self) -> bool {
        self.state.lock().queue.leave(self.class, self.id)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.id != 0 {
            self.leave();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn scale(max_held: u32) -> Scale {
        Scale {
            max_held,
            activation_timeout: meridian_config::units::Duration::millis(50),
            ..Scale::default()
        }
    }

    #[tokio::test]
    async fn held_requests_go_on_at_the_release_in_priority_order() {
        let a = Arc::new(Activator::new(&scale(10)));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, class) in [
            PriorityClass::Standard,
            PriorityClass::Critical,
            PriorityClass::Standard,
        ]
        .into_iter()
        .enumerate()
        {
            let (a2, order) = (a.clone(), order.clone());
            let seen = a.releases();
            tasks.push(tokio::spawn(async move {
                let r = a2.hold(class, seen, |_| std::future::pending()).await;
                order.lock().push(i);
                r
            }));
            while a.held() < i as u32 + 1 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(a.release(), 3);
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(()));
        }
        assert_eq!(order.lock()[0], 1, "critical first: {:?}", order.lock());
        assert_eq!(a.held(), 0);
    }

    #[tokio::test]
    async fn a_release_between_look_and_hold_is_not_lost_and_timeouts_answer() {
        let a = Activator::new(&scale(1));
        let seen = a.releases();
        a.release();
        assert_eq!(a.hold(PriorityClass::Standard, seen, tokio::time::sleep).await, Ok(()));
        let seen = a.releases();
        assert_eq!(
            a.hold(PriorityClass::Standard, seen, tokio::time::sleep).await,
            Err(NotWoken::Timeout)
        );
        assert_eq!(a.held(), 0, "a timed-out request leaves the hold");
        let r = NotWoken::Timeout.reply("m", "v1", a.timeout());
        assert_eq!((r.status, r.retry_after.is_some()), (503, true));
    }

    #[tokio::test]
    async fn a_full_hold_refuses_and_a_higher_class_displaces() {
        let a = Arc::new(Activator::new(&scale(1)));
        let seen = a.releases();
        let first = {
            let a = a.clone();
            tokio::spawn(async move { a.hold(PriorityClass::Sheddable, seen, |_| std::future::pending()).await })
        };
        while a.held() < 1 {
            tokio::task::yield_now().await;
        }
        let never = |_| std::future::pending::<()>();
        assert_eq!(
            a.hold(PriorityClass::Sheddable, seen, |_| async {}).await,
            Err(NotWoken::Full)
        );
        let second = {
            let a = a.clone();
            tokio::spawn(async move { a.hold(PriorityClass::Standard, seen, never).await })
        };
        assert_eq!(first.await.unwrap(), Err(NotWoken::Displaced));
        a.release();
        assert_eq!(second.await.unwrap(), Ok(()));
    }

    #[test]
    fn wakes_are_asked_once_per_interval() {
        let a = Activator::new(&scale(1));
        assert!(a.should_wake(0));
        assert!(!a.should_wake(1_000));
        assert!(!a.should_wake(WAKE_EVERY.as_nanos() as u64 - 1));
        assert!(a.should_wake(WAKE_EVERY.as_nanos() as u64));
    }
}
