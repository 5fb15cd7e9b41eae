//! Assembling a gateway process: pingora server, listeners, proxy and background tasks.

use std::path::Path;
use std::sync::Arc;

use pingora::apps::HttpServerOptions;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;

use crate::clock::SystemClock;
use crate::proxy::Proxy;
use crate::state::Gateway;
use crate::tasks::Tasks;

/// Runs `meridian gateway` until SIGTERM (graceful: in-flight requests finish within the grace
/// period) or SIGINT.
pub fn run(config: &Path, region: Option<&str>, zone: Option<&str>, threads: Option<usize>) -> anyhow::Result<()> {
    let gw = Arc::new(Gateway::start(config, region, zone, Arc::new(SystemClock))?);
    let routes = gw.routes.load_full();
    let Some(spec) = routes.snap.config.regions[routes.origin.region].gateway.clone() else {
        anyhow::bail!("region {} has no gateway", gw.region);
    };
    let conf = ServerConf {
        threads: threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Proxy { gw: gw.clone() },
        "meridian gateway",
    );
    let h2c = spec
        .listeners
        .iter()
        .any(|l| l.tls.is_none() && l.protocols.contains(&meridian_config::schema::Protocol::H2c));
    if let Some(app) = proxy.app_logic_mut() {
        let mut opts = HttpServerOptions::default();
        opts.h2c = h2c;
        app.server_options = Some(opts);
    }
    for l in &spec.listeners {
        match &l.tls {
            None => proxy.add_tcp(&l.address.to_string()),
            Some(tls) => {
                let h2 = l.protocols.contains(&meridian_config::schema::Protocol::H2);
                let (settings, resolver) = crate::tls::settings(tls, &routes.snap.base_dir, h2)?;
                gw.tls.lock().push((l.name.clone(), resolver));
                proxy.add_tls_with_settings(&l.address.to_string(), None, settings);
            }
        }
        println!("gateway {} listening on {} ({})", gw.region, l.address, l.name);
    }
    println!("gateway {} admin on {}", gw.region, spec.admin.address);
    server.add_service(proxy);
    server.add_service(background_service("meridian tasks", Tasks { gw }));
    server.run_forever();
}
