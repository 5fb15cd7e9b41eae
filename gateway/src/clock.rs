//! Time as the core sees it: monotonic nanoseconds from an injectable clock, so ejection timelines
//! and EWMA decay are unit-tested deterministically with a fake clock.

use std::sync::OnceLock;
use std::time::Instant;

/// Monotonic nanoseconds since an arbitrary origin.
pub type Nanos = u64;

/// A source of monotonic time.
pub trait Clock: Send + Sync + 'static {
    /// Now, in nanoseconds since the clock's origin.
    fn now(&self) -> Nanos;
}

/// The process's monotonic clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(Instant::now);
        u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A duration in nanoseconds, saturating.
pub fn nanos(d: std::time::Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
