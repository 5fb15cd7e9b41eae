//! Per-endpoint live state: load, latency, health, ejection and drain, kept outside the config
//! snapshot so a reload never resets it.
//!
//! Every field the request path reads is an atomic; nothing here takes a lock a request can wait on.
//! The [`Registry`] hands out one shared state per backend address, so the same backend keeps its
//! counters across reloads and across the versions that share it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::clock::Nanos;
use crate::llm::state::LlmState;

/// Time constant of the peak-EWMA latency decay (linkerd and Finagle use 10 s).
pub const EWMA_TAU_NANOS: f64 = 10e9;

/// Why an endpoint is out of rotation, as bit flags.
pub mod flags {
    /// Active health checks failed past the threshold.
    pub const UNHEALTHY: u8 = 1;
    /// Ejected by outlier detection.
    pub const EJECTED: u8 = 2;
    /// Drained by an operator.
    pub const DRAINED: u8 = 4;
    /// Control reports it not ready (readiness failing, Kubernetes not ready or terminating).
    pub const NOT_READY: u8 = 8;
    /// Drained by control: its GPU reported a fault, or its node is cordoned.
    pub const CONTROL_DRAINED: u8 = 16;
}

/// Live state of one backend endpoint.
#[derive(Debug)]
pub struct EndpointState {
    /// Stable id (admin API, metrics).
    pub id: Arc<str>,
    /// Backend address.
    pub address: SocketAddr,
    /// Its gRPC port on the same host (0: none), from the latest table that lists it.
    grpc_port: AtomicU16,
    flags: AtomicU8,
    in_flight: AtomicU32,
    /// Peak-EWMA latency in nanoseconds, as f64 bits.
    ewma: AtomicU64,
    ewma_at: AtomicU64,
    /// GPU headroom in permille (1000 = idle or unknown), from control.
    headroom: AtomicU32,
    /// Outlier detection counters.
    pub outlier: OutlierCounters,
    /// Active health check progress: consecutive passes (positive) or failures (negative).
    check_streak: Mutex<i32>,
    /// Whether the first active check round has finished for this endpoint.
    checked: AtomicBool,
    /// What the LLM-aware pick knows of it, once a model with LLM routing uses it.
    llm: OnceLock<Arc<LlmState>>,
}

/// Counters outlier detection keeps per endpoint.
#[derive(Debug, Default)]
pub struct OutlierCounters {
    /// Consecutive 5xx answers.
    pub consecutive_5xx: AtomicU32,
    /// Consecutive gateway failures (502/503/504, connect failures, resets).
    pub consecutive_gateway: AtomicU32,
    /// Successes in the current interval.
    pub successes: AtomicU32,
    /// Requests in the current interval.
    pub requests: AtomicU32,
    /// Times ejected (the ejection time multiplier); decremented while healthy.
    pub ejections: AtomicU32,
    /// When the current ejection ends, in clock nanoseconds; 0 when not ejected.
    pub ejected_until: AtomicU64,
    /// Total ejections over the endpoint's life, for the admin API and metrics.
    pub total_ejections: AtomicU64,
}

impl EndpointState {
    /// A fresh, healthy, idle endpoint.
    pub fn new(id: Arc<str>, address: SocketAddr) -> Self {
        EndpointState {
            id,
            address,
            flags: AtomicU8::new(0),
            in_flight: AtomicU32::new(0),
            ewma: AtomicU64::new(0f64.to_bits()),
            ewma_at: AtomicU64::new(0),
            headroom: AtomicU32::new(1000),
            outlier: OutlierCounters::default(),
            check_streak: Mutex::new(0),
            checked: AtomicBool::new(false),
            llm: OnceLock::new(),
            grpc_port: AtomicU16::new(0),
        }
    }

    /// Where its gRPC service listens, when it has one apart from `address`.
    pub fn grpc_address(&self) -> Option<SocketAddr> {
        match self.grpc_port.load(Ordering::Relaxed) {
            0 => None,
            port => Some(SocketAddr::new(self.address.ip(), port)),
        }
    }

    /// Where a request goes: a gRPC call (`grpc`) to its gRPC port when it has one, everything
    /// else to `address`.
    pub fn upstream_address(&self, grpc: bool) -> SocketAddr {
        self.grpc_address().filter(|_| grpc).unwrap_or(self.address)
    }

    /// Sets its gRPC port (`None`: it serves gRPC, if at all, at `address`).
    pub fn set_grpc_port(&self, port: Option<u16>) {
        self.grpc_port.store(port.unwrap_or(0), Ordering::Relaxed);
    }

    /// Gives the endpoint LLM routing state remembering about `blocks` prompt blocks of
    /// `block_tokens` at the most (the first call decides; the state then lives as long as the
    /// endpoint, across reloads).
    pub fn enable_llm(&self, blocks: usize, block_tokens: u32) -> &Arc<LlmState> {
        self.llm.get_or_init(|| Arc::new(LlmState::new(blocks, block_tokens)))
    }

    /// Its LLM routing state, when a model with LLM routing uses it.
    pub fn llm(&self) -> Option<&Arc<LlmState>> {
        self.llm.get()
    }

    /// Whether the endpoint takes traffic.
    pub fn available(&self) -> bool {
        self.flags.load(Ordering::Relaxed) == 0
    }

    /// Current out-of-rotation flags.
    pub fn flags(&self) -> u8 {
        self.flags.load(Ordering::Relaxed)
    }

    /// Sets or clears a flag; true when the endpoint's availability changed.
    pub fn set_flag(&self, flag: u8, on: bool) -> bool {
        let before = if on {
            self.flags.fetch_or(flag, Ordering::AcqRel)
        } else {
            self.flags.fetch_and(!flag, Ordering::AcqRel)
        };
        let after = if on { before | flag } else { before & !flag };
        (before == 0) != (after == 0)
    }

    /// Records an active check result: whether it was the first, and the streak it makes
    /// (consecutive passes positive, failures negative).
    pub fn record_check(&self, passed: bool) -> (bool, i32) {
        let first = !self.checked.swap(true, Ordering::AcqRel);
        let mut s = self.check_streak.lock();
        *s = match (passed, *s) {
            (true, n) if n > 0 => n + 1,
            (true, _) => 1,
            (false, n) if n < 0 => n - 1,
            (false, _) => -1,
        };
        (first, *s)
    }

    /// Marks the endpoint checked without a check (health checks are off for it).
    pub fn mark_checked(&self) {
        self.checked.store(true, Ordering::Release);
    }

    /// Whether a first check result (or [`Self::mark_checked`]) is in.
    pub fn checked_once(&self) -> bool {
        self.checked.load(Ordering::Acquire)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Marks a request started; the guard ends it when dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// GPU headroom, 0..=1.
    pub fn headroom(&self) -> f64 {
        f64::from(self.headroom.load(Ordering::Relaxed).clamp(1, 1000)) / 1000.0
    }

    /// Sets GPU headroom from control, 0..=1 (clamped; 0 is treated as nearly full, never as zero
    /// capacity, so a stale zero cannot black-hole an endpoint).
    pub fn set_headroom(&self, h: f64) {
        self.headroom
            .store((h.clamp(0.0, 1.0) * 1000.0) as u32, Ordering::Relaxed);
    }

    /// Peak-EWMA latency at `now`, decayed since its last update, in nanoseconds.
    pub fn latency(&self, now: Nanos) -> f64 {
        let v = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        let at = self.ewma_at.load(Ordering::Relaxed);
        v * decay(now.saturating_sub(at))
    }

    /// Records an observed round-trip time: a peak is taken at once, a lower value blends in.
    pub fn observe_latency(&self, now: Nanos, rtt: Nanos) {
        let rtt = rtt as f64;
        let current = self.latency(now);
        let next = if rtt > current {
            rtt
        } else {
            let w = decay(now.saturating_sub(self.ewma_at.load(Ordering::Relaxed)).max(1_000_000));
            current * w + rtt * (1.0 - w)
        };
        self.ewma.store(next.to_bits(), Ordering::Relaxed);
        self.ewma_at.store(now, Ordering::Relaxed);
    }
}

fn decay(elapsed: Nanos) -> f64 {
    (-(elapsed as f64) / EWMA_TAU_NANOS).exp()
}

/// Ends an in-flight request when dropped, whatever path the request took.
#[derive(Debug)]
pub struct InFlight(Arc<EndpointState>);

impl InFlight {
    /// The endpoint.
    pub fn endpoint(&self) -> &Arc<EndpointState> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Shared endpoint states by address, so state outlives any one snapshot.
#[derive(Debug, Default)]
pub struct Registry {
    by_addr: Mutex<HashMap<SocketAddr, Arc<EndpointState>>>,
    /// Bumped on every availability change; cached level loads recompute when it moves.
    epoch: AtomicU64,
}

impl Registry {
    /// The state of `address`, created on first use.
    pub fn get_or_create(&self, id: &Arc<str>, address: SocketAddr) -> Arc<EndpointState> {
        self.by_addr
            .lock()
            .entry(address)
            .or_insert_with(|| Arc::new(EndpointState::new(id.clone(), address)))
            .clone()
    }

    /// Forgets endpoints no longer in use, keeping the given addresses.
    pub fn retain(&self, keep: &std::collections::HashSet<SocketAddr>) {
        self.by_addr.lock().retain(|a, _| keep.contains(a));
    }

    /// Every endpoint state, for the admin API and background tasks.
    pub fn all(&self) -> Vec<Arc<EndpointState>> {
        let mut v: Vec<_> = self.by_addr.lock().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The endpoint at this address, if any.
    pub fn by_address(&self, address: SocketAddr) -> Option<Arc<EndpointState>> {
        self.by_addr.lock().get(&address).cloned()
    }

    /// The endpoint with this id, if any.
    pub fn by_id(&self, id: &str) -> Option<Arc<EndpointState>> {
        self.by_addr.lock().values().find(|e| &*e.id == id).cloned()
    }

    /// The availability epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Sets a flag on an endpoint, moving the epoch when availability changed.
    pub fn set_flag(&self, ep: &EndpointState, flag: u8, on: bool) -> bool {
        let changed = ep.set_flag(flag, on);
        if changed {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_ewma_takes_peaks_at_once_and_decays() {
        let e = EndpointState::new("e".into(), "127.0.0.1:1".parse().unwrap());
        e.observe_latency(1_000_000_000, 50_000_000);
        assert_eq!(e.latency(1_000_000_000), 50e6);
        e.observe_latency(1_100_000_000, 10_000_000);
        let blended = e.latency(1_100_000_000);
        assert!(blended < 50e6 && blended > 10e6, "{blended}");
        e.observe_latency(1_200_000_000, 200_000_000);
        assert_eq!(e.latency(1_200_000_000), 200e6, "a peak is taken at once");
        let later = e.latency(1_200_000_000 + 10_000_000_000);
        assert!(
            (later - 200e6 / std::f64::consts::E).abs() < 1.0,
            "decays with tau: {later}"
        );
    }

    #[test]
    fn flags_report_availability_changes_once() {
        let r = Registry::default();
        let e = r.get_or_create(&"e".into(), "127.0.0.1:1".parse().unwrap());
        let epoch = r.epoch();
        assert!(r.set_flag(&e, flags::EJECTED, true));
        assert!(!r.set_flag(&e, flags::DRAINED, true), "already unavailable");
        assert!(!r.set_flag(&e, flags::EJECTED, false), "still drained");
        assert!(r.set_flag(&e, flags::DRAINED, false));
        assert_eq!(r.epoch(), epoch + 2);
        assert!(e.available());
    }

    #[test]
    fn state_is_shared_by_address() {
        let r = Registry::default();
        let a = r.get_or_create(&"a".into(), "127.0.0.1:1".parse().unwrap());
        let _g = a.start();
        let again = r.get_or_create(&"a".into(), "127.0.0.1:1".parse().unwrap());
        assert_eq!(again.in_flight(), 1);
        drop(_g);
        assert_eq!(again.in_flight(), 0);
    }
}
