//! DNS over TCP (RFC 7766): each message framed by a two-byte length, answered in order with
//! [`respond`], the same code as UDP. RRL never applies here (TCP proves the source address), so
//! the limits are on connections: a cap per client address and in total, checked at accept, and
//! an idle timeout (`dns.tcp`, read at each accept so a reload applies to new connections).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use meridian_config::schema::TcpLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::respond::respond;
use crate::state::DnsState;

/// Open connections per client address and in total. Touched at accept and close only, never per
/// query, so a plain mutex serves.
#[derive(Default)]
pub struct Slots {
    open: Mutex<(HashMap<IpAddr, u32>, u32)>,
}

/// Why a connection was refused at accept.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The client holds `max_per_client` already.
    PerClient,
    /// The server holds `max_connections` already.
    Total,
}

impl Refused {
    fn label(&self) -> &'static str {
        match self {
            Refused::PerClient => "per_client",
            Refused::Total => "total",
        }
    }
}

impl Slots {
    /// Takes a slot for `client` within `limits`; the slot is given back when the guard drops.
    pub fn take(self: &Arc<Self>, client: IpAddr, limits: &TcpLimits) -> Result<Slot, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (per, total) = &mut *open;
        if *total >= limits.max_connections {
            return Err(Refused::Total);
        }
        let mine = per.entry(client).or_insert(0);
        if *mine >= limits.max_per_client {
            return Err(Refused::PerClient);
        }
        *mine += 1;
        *total += 1;
        Ok(Slot {
            slots: self.clone(),
            client,
        })
    }

    fn give_back(&self, client: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (per, total) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = per.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                per.remove(&client);
            }
        }
    }
}

/// One connection's hold on its [`Slots`].
pub struct Slot {
    slots: Arc<Slots>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.give_back(self.client);
    }
}

/// Accepts connections on `listener` for the life of the process.
pub async fn serve(listener: TcpListener, state: Arc<DnsState>) {
    let slots = Arc::new(Slots::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait a moment rather than spin.
                tracing::warn!("dns tcp accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let limits = state.dns_setting(|d| d.tcp.clone());
        match slots.take(peer.ip(), &limits) {
            Ok(slot) => {
                let state = state.clone();
                tokio::spawn(async move {
                    state.metrics.tcp_open.inc();
                    connection(stream, peer, &state, limits.idle_timeout.get()).await;
                    state.metrics.tcp_open.dec();
                    drop(slot);
                });
            }
            Err(why) => {
                state.metrics.tcp_refused.with_label_values(&[why.label()]).inc();
                drop(stream);
            }
        }
    }
}

/// Answers the messages on one connection until the client closes it, idles out or sends what is
/// not a query (a response, or fewer than 12 bytes).
async fn connection(mut stream: TcpStream, peer: SocketAddr, state: &DnsState, idle: std::time::Duration) {
    let _ = stream.set_nodelay(true);
    let mut message = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(512);
    loop {
        let read = async {
            let len = stream.read_u16().await? as usize;
            message.resize(len, 0);
            stream.read_exact(&mut message).await
        };
        match tokio::time::timeout(idle, read).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
        let Some(reply) = respond(state, &message, peer, true, None) else {
            return;
        };
        out.clear();
        out.extend_from_slice(&(reply.bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(&reply.bytes);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_each_client_and_the_total_and_come_back_on_drop() {
        let limits = TcpLimits {
            max_per_client: 2,
            max_connections: 3,
            ..TcpLimits::default()
        };
        let slots = Arc::new(Slots::default());
        let (a, b, c) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), [10, 0, 0, 3].into());
        let a1 = slots.take(a, &limits).unwrap();
        let _a2 = slots.take(a, &limits).unwrap();
        assert_eq!(slots.take(a, &limits).err(), Some(Refused::PerClient));
        let _b1 = slots.take(b, &limits).unwrap();
        assert_eq!(slots.take(c, &limits).err(), Some(Refused::Total));
        drop(a1);
        let _c1 = slots.take(c, &limits).expect("a closed connection frees its slot");
        assert_eq!(slots.take(a, &limits).err(), Some(Refused::Total));
    }
}
