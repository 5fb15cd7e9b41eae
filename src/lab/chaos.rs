//! Chaos mode: in turn, a backend fails its requests, a zone's backends go unready, and a region's
//! gateway dies; each heals after a while. Failover shows in the gateways' `/endpoints` and
//! `/metrics` and in DNS's `/regions`.

use std::time::Duration;

use serde_json::json;

use super::world::{wait_http, Handle};

const FAULT: Duration = Duration::from_secs(20);
const CALM: Duration = Duration::from_secs(20);

async fn control(addr: &str, patch: serde_json::Value) {
    let _ = reqwest::Client::new()
        .post(format!("http://{addr}/sim/control"))
        .json(&patch)
        .send()
        .await;
}

/// Runs the fault cycle forever.
pub async fn run(h: Handle) {
    let mut turn = 0usize;
    loop {
        tokio::time::sleep(CALM).await;
        match turn % 3 {
            0 => {
                let b = &h.backends[turn / 3 % h.backends.len()];
                println!("chaos: backend {} fails every request for {}s", b.id, FAULT.as_secs());
                control(&b.addr, json!({"error_rate": 1.0, "error_status": 503})).await;
                tokio::time::sleep(FAULT).await;
                control(&b.addr, json!({"error_rate": 0.0})).await;
                println!("chaos: backend {} healed", b.id);
            }
            1 => {
                let zone = h.backends[0].zone.clone();
                let members: Vec<_> = h.backends.iter().filter(|b| b.zone == zone).collect();
                println!(
                    "chaos: zone {zone} goes unready for {}s ({} backends)",
                    FAULT.as_secs(),
                    members.len()
                );
                for b in &members {
                    control(&b.addr, json!({"ready": false})).await;
                }
                tokio::time::sleep(FAULT).await;
                for b in &members {
                    control(&b.addr, json!({"ready": true})).await;
                }
                println!("chaos: zone {zone} healed");
            }
            _ => {
                let i = h.regions.len() - 1;
                let name = format!("gateway-{}", h.regions[i]);
                println!(
                    "chaos: region {} loses its gateway for {}s (DNS fails over)",
                    h.regions[i],
                    FAULT.as_secs()
                );
                h.kill(&name);
                tokio::time::sleep(FAULT).await;
                if h.start_gateway(i).is_ok() {
                    let _ = wait_http(&format!("http://{}:9901/readyz", super::world::gateway_ip(i))).await;
                }
                println!("chaos: region {} is back", h.regions[i]);
            }
        }
        turn += 1;
    }
}
