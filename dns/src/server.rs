//! `meridian dns --config FILE`: the authoritative server on every listen address over UDP and TCP,
//! with probes, reload triggers (file change, SIGHUP, admin) and the admin API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::state::DnsState;
use anyhow::Context;

/// Runs the DNS server until SIGTERM or SIGINT.
pub fn run(config: &Path, threads: Option<usize>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.unwrap_or(2).max(1))
        .enable_all()
        .build()?;
    rt.block_on(async {
        let state = Arc::new(DnsState::start(config, Arc::new(meridian_clock::SystemClock))?);
        let dns = state
            .zones
            .load()
            .snap
            .config
            .dns
            .clone()
            .context("the config has no dns section")?;
        let mut listeners = Vec::new();
        let workers = threads.unwrap_or(2).max(1);
        for addr in &dns.listen {
            // UDP: one SO_REUSEPORT socket per worker thread. TCP: a task per connection.
            for _ in 0..workers {
                let udp = crate::udp::bind(*addr).with_context(|| format!("binding UDP {addr}"))?;
                crate::udp::spawn_worker(udp, state.clone()).context("starting a UDP worker")?;
            }
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding TCP {addr}"))?;
            listeners.push(tokio::spawn(crate::tcp::serve(tcp, state.clone())));
            println!("dns listening on {addr} (udp, tcp)");
        }
        println!("dns admin on {}", dns.admin.address);
        let tasks = [
            tokio::spawn(crate::probe::supervise(state.clone())),
            tokio::spawn(crate::feed::supervise(state.clone())),
            tokio::spawn(crate::admin::serve(state.clone(), dns.admin.address)),
            tokio::spawn(watch(state.clone())),
            tokio::spawn(on_sighup(state.clone())),
        ];
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        for t in tasks.into_iter().chain(listeners) {
            t.abort();
        }
        Ok(())
    })
}

async fn watch(state: Arc<DnsState>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if state.config.changed() {
            let _ = state.reload();
        }
    }
}

async fn on_sighup(state: Arc<DnsState>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let _ = state.reload();
    }
}
