//! Time as every Meridian part reads it: one injectable [`Clock`] with a monotonic reading (for
//! deadlines, EWMA decay, ejection timelines, staleness) and a wall reading (for log timestamps and
//! state that outlives the process, such as canary progress and SOA serials).
//!
//! Decision cores take `now` as an argument; shells hold an `Arc<dyn Clock>` and pass its readings
//! in. Tests swap in a [`ManualClock`] and move time by hand, so timelines are deterministic.
//!
//! This crate imports only nix (for the clock reading itself): every part of the workspace may
//! depend on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Monotonic nanoseconds since an arbitrary origin.
pub type Nanos = u64;

/// A source of time.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic now, in nanoseconds since the clock's origin: never goes back.
    fn now(&self) -> Nanos;

    /// Wall-clock now, as time since the Unix epoch: may jump (NTP), so only for timestamps.
    fn unix(&self) -> Duration;

    /// Wall-clock now in whole seconds since the Unix epoch.
    fn unix_secs(&self) -> u64 {
        self.unix().as_secs()
    }

    /// Wall-clock now in fractional seconds since the Unix epoch.
    fn unix_f64(&self) -> f64 {
        self.unix().as_secs_f64()
    }

    /// Wall-clock now as a [`SystemTime`], for formatting.
    fn wall(&self) -> SystemTime {
        UNIX_EPOCH + self.unix()
    }
}

/// The process's clocks: `Instant` for monotonic readings, `SystemTime` for wall readings.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        static ORIGIN: OnceLock<Nanos> = OnceLock::new();
        let now = monotonic();
        now.saturating_sub(*ORIGIN.get_or_init(|| now))
    }

    fn unix(&self) -> Duration {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
    }
}

/// A clock that moves only when told to, for deterministic tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    mono: AtomicU64,
    unix_nanos: AtomicU64,
}

impl ManualClock {
    /// A clock at monotonic 0 and wall time `unix`.
    pub fn at(unix: Duration) -> ManualClock {
        ManualClock {
            mono: AtomicU64::new(0),
            unix_nanos: AtomicU64::new(nanos(unix)),
        }
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = nanos(by);
        self.mono.fetch_add(by, Ordering::Relaxed);
        self.unix_nanos.fetch_add(by, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        self.mono.load(Ordering::Relaxed)
    }

    fn unix(&self) -> Duration {
        Duration::from_nanos(self.unix_nanos.load(Ordering::Relaxed))
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds (`Instant`'s clock, read without its arithmetic).
fn monotonic() -> Nanos {
    // clock_gettime fails only for an unknown clock or a bad pointer: neither can happen here.
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is readable");
    (t.tv_sec() as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec() as u64)
}

/// A duration in nanoseconds, saturating.
pub fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_time_moves_only_when_told() {
        let c = ManualClock::at(Duration::from_secs(1_700_000_000));
        assert_eq!((c.now(), c.unix_secs()), (0, 1_700_000_000));
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now(), 1_500_000_000);
        assert_eq!(c.unix(), Duration::from_millis(1_700_000_001_500));
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }

    #[test]
    fn the_system_clock_is_monotonic() {
        let c = SystemClock;
        let a = c.now();
        assert!(c.now() >= a);
        assert!(c.unix_secs() > 1_600_000_000);
    }
}
