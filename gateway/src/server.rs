//! Assembling a gateway process: pingora server, listeners, proxy and background tasks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;

use meridian_gateway_core::clock::SystemClock;

use crate::gateway::Gateway;

/// How a gateway process starts, beyond its config file.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Region whose listeners this process serves (optional with one gateway region).
    pub region: Option<String>,
    /// Zone this process runs in (locality level 0).
    pub zone: Option<String>,
    /// Proxy worker threads; the number of CPUs when absent.
    pub threads: Option<usize>,
    /// Take over the listening sockets of the gateway running with the same admin address.
    pub upgrade: bool,
    /// Folder of the upgrade socket and pid file; the system's temporary folder when absent.
    pub run_dir: Option<PathBuf>,
}

/// Runs `meridian gateway` until SIGTERM (graceful: requests in progress finish within the
/// region's `shutdown_grace`), SIGQUIT (graceful upgrade: the listening sockets go to the new
/// process, then the same drain) or SIGINT (immediate).
pub fn run(config: &Path, opts: &Options) -> anyhow::Result<()> {
    let gw = Gateway::start(
        config,
        opts.region.as_deref(),
        opts.zone.as_deref(),
        Arc::new(SystemClock),
    )?;
    let region = gw.reloader.region().to_string();
    let routes = gw.proxy.routing.routes.load_full();
    let Some(spec) = routes.gateway_spec().cloned() else {
        anyhow::bail!("region {region} has no gateway");
    };
    // The certificate files as they are now, before the listeners load them: later changes reload.
    gw.reloader.reload_changed_certificates();
    let files = RunFiles::new(opts.run_dir.as_deref(), spec.admin.address);
    let conf = ServerConf {
        threads: opts
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        // Our drain task exits the process as soon as the last request ends; pingora's fixed
        // grace sleep is only the outer bound.
        grace_period_seconds: Some(spec.shutdown_grace.get().as_secs() + 5),
        // One single-threaded runtime per worker thread: a connection's tasks stay on the thread
        // that accepted it, and the direct upstream leg's per-thread pools need no lock.
        work_stealing: false,
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: files.socket.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade: opts.upgrade,
        ..Default::default()
    };
    if opts.upgrade {
        // The config is valid (Gateway::start checked it): only now is the old process told to go.
        files.signal_old()?;
    }
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();
    files.write_pid()?;
    let phases = server.watch_execution_phase();
    let proxy = gw.proxy.clone();
    let mut app = pingora::proxy::http_proxy(&server.configuration, proxy.clone());
    let h2c = spec
        .listeners
        .iter()
        .any(|l| l.tls.is_none() && l.speaks(meridian_config::schema::Protocol::H2c));
    let mut opts = HttpServerOptions::default();
    opts.h2c = h2c;
    app.server_options = Some(opts);
    let app = Arc::new(app);
    let mut proxy = pingora::services::listening::Service::new(
        "meridian gateway".into(),
        crate::listener::Listener {
            http1: crate::proxy::Http1::new(proxy.clone()),
            http2: Arc::new(crate::proxy::Http2::new(proxy, app.clone())),
            pingora: app,
        },
    );
    for l in &spec.listeners {
        match &l.tls {
            // No L4 read buffer on plaintext listeners: pingora's default is 64 KiB per accepted
            // connection, in front of our own 8 KiB read buffer (and pingora's, after a
            // handoff), which made an idle keep-alive connection cost ~90 KiB against NGINX's
            // ~1 KiB (benches/soak). TLS keeps it: rustls reads record by record.
            None => proxy.add_listener(
                ListenerConfig::tcp(l.address.to_string())
                    .l4_buffer(L4BufferSettings::default().read(0).write(DEFAULT_L4_WRITE_BUFFER_SIZE)),
            ),
            Some(tls) => {
                let h2 = l.speaks(meridian_config::schema::Protocol::H2);
                let (settings, resolver) = crate::tls::settings(tls, &routes.snap.base_dir, h2)?;
                gw.reloader.certificates.register(&l.name, resolver);
                proxy.add_tls_with_settings(&l.address.to_string(), None, settings);
            }
        }
        println!("gateway {region} listening on {} ({})", l.address, l.name);
    }
    println!("gateway {region} admin on {}", spec.admin.address);
    server.add_service(proxy);
    let signals = gw.signals();
    let tasks = crate::tasks::Tasks {
        gw: Arc::new(gw),
        phases: parking_lot::Mutex::new(Some(phases)),
    };
    server.add_service(background_service("meridian tasks", tasks));
    server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(signals),
    });
    std::process::exit(0)
}

/// The upgrade socket and pid file of one gateway, named after its admin address (unique per host).
struct RunFiles {
    socket: PathBuf,
    pid: PathBuf,
}

impl RunFiles {
    fn new(dir: Option<&Path>, admin: std::net::SocketAddr) -> RunFiles {
        let dir = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let stem = format!("meridian-gateway-{}", admin.to_string().replace([':', '[', ']'], "_"));
        RunFiles {
            socket: dir.join(format!("{stem}.sock")),
            pid: dir.join(format!("{stem}.pid")),
        }
    }

    /// Asks the running gateway to hand over its sockets (SIGQUIT), found through its pid file.
    fn signal_old(&self) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&self.pid)
            .map_err(|e| anyhow::anyhow!("--upgrade: no running gateway found ({}: {e})", self.pid.display()))?;
        let pid: i32 = text
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("--upgrade: {} does not hold a pid", self.pid.display()))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGQUIT)
            .map_err(|e| anyhow::anyhow!("--upgrade: cannot signal gateway pid {pid}: {e}"))?;
        println!("upgrade: asked gateway pid {pid} for its listening sockets");
        Ok(())
    }

    fn write_pid(&self) -> anyhow::Result<()> {
        let tmp = self.pid.with_extension("pid.tmp");
        std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
        std::fs::rename(&tmp, &self.pid)?;
        Ok(())
    }
}
