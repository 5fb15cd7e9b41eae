//! Closes the worker thread's idle backend connections on a timer, as NGINX's upstream
//! `keepalive_timeout` and HAProxy's idle-connection purge do: once a connection of our own
//! upstream legs ([`crate::http1::client`], [`crate::http2::client`]) has idled past its idle
//! timeout, or an HTTP/1 backend closed it while it idled, it is let go within [`EVERY`]. Without
//! this, a connection idle when traffic stops would stay open (or half-closed, in `CLOSE_WAIT`, once
//! the backend gave up on it) until the next request to its backend, which may never come.
//!
//! The pools are per worker thread (pingora's runtimes do not steal work), and so is the sweeper:
//! a task spawned on the thread when a connection joins its pool, ending once the pools are empty.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use meridian_gateway_core::clock::Clock;

use crate::{http1, http2};

/// How often a thread's pools are swept: how long past its idle timeout a connection may stay.
pub const EVERY: Duration = Duration::from_secs(1);

thread_local! {
    /// Whether this thread's sweeper runs.
    static SWEEPING: Cell<bool> = const { Cell::new(false) };
}

/// Makes sure this thread's pools are swept: called when a connection joins one (a thread-local
/// read otherwise, so it may be called per request).
pub fn watch(clock: &Arc<dyn Clock>) {
    if SWEEPING.get() {
        return;
    }
    SWEEPING.set(true);
    let clock = clock.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(EVERY).await;
            let now = clock.now();
            if http1::client::sweep(now) + http2::client::sweep(now) == 0 {
                SWEEPING.set(false);
                return;
            }
        }
    });
}
