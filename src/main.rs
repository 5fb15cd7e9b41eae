//! `meridian`: one binary for every part of the system (gateway, DNS, control, GPU agent, simulated
//! backend, config check, local lab), so operators deploy and version one artifact.

mod check;
mod explain;
mod lab;
mod sim;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the proxy allocates per request (headers, buffers); a thread-caching allocator cut the
/// gateway's malloc/free share of CPU under load (see benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Edge gateway and global traffic router for ML inference.
#[derive(Parser)]
#[command(name = "meridian", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a region's L7 inference gateway.
    Gateway {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Region whose listeners this gateway serves; optional when the config has one region with a gateway.
        #[arg(long)]
        region: Option<String>,
        /// Zone this gateway runs in (priority level 0); the whole region is level 0 when absent.
        #[arg(long, env = "MERIDIAN_ZONE")]
        zone: Option<String>,
        /// Worker threads of the proxy; the number of CPUs when absent.
        #[arg(long)]
        threads: Option<usize>,
        /// Zero-downtime upgrade: take over the listening sockets of the gateway already running
        /// with the same admin address (signalled through its pid file); it drains and exits.
        #[arg(long)]
        upgrade: bool,
        /// Folder of the upgrade socket and pid file.
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        run_dir: PathBuf,
    },
    /// Run the authoritative DNS server with global load balancing.
    Dns {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Worker threads; 2 when absent.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Run a region's control loop (discovery, GPU health, state feed, canaries).
    Control {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Region this control loop watches.
        #[arg(long)]
        region: String,
        /// Address to bind when it differs from the region's `control.address` (which is where
        /// gateways and DNS servers reach it, e.g. a Service in front of a pod bound to 0.0.0.0).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Run the NVML node agent that serves per-GPU health as JSON and Prometheus text.
    GpuAgent {
        /// Listen address.
        #[arg(long, default_value = "0.0.0.0:9400")]
        listen: std::net::SocketAddr,
        /// Time between readings (XID events are counted as they come).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
    },
    /// Run a simulated GPU model server (V1, V2 and OpenAI APIs) for demos, tests and load tests.
    SimBackend(sim::SimArgs),
    /// Validate a config file: exit 0 with a summary, or exit 1 with one `FILE:LINE:COL: path: message` line per error.
    Check {
        /// Config file.
        file: PathBuf,
    },
    /// Print the JSON Schema of the config file, for editors.
    Schema,
    /// Start the complete local multi-region lab on loopback.
    Lab(lab::LabArgs),
    /// Explain where a request would go and why: classification, each routing rule, the split,
    /// the locality levels, the candidates' costs and the pick.
    Explain(explain::ExplainArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file } => check::run(&file),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&meridian_config::json_schema()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Command::Gateway {
            config,
            region,
            zone,
            threads,
            upgrade,
            run_dir,
        } => {
            init_logging();
            let opts = meridian_gateway::Options {
                region,
                zone,
                threads,
                upgrade,
                run_dir: Some(run_dir),
            };
            exit(meridian_gateway::run(&config, &opts))
        }
        Command::SimBackend(args) => {
            init_logging();
            exit(sim::run(args))
        }
        Command::Dns { config, threads } => {
            init_logging();
            exit(meridian_dns::run(&config, threads))
        }
        Command::Control { config, region, listen } => {
            init_logging();
            exit(meridian_control::run(&config, &region, listen))
        }
        Command::GpuAgent { listen, interval } => {
            init_logging();
            exit(meridian_control::agent::run(listen, interval))
        }
        Command::Explain(args) => exit(explain::run(args)),
        Command::Lab(args) => {
            init_logging();
            exit(lab::run(args))
        }
    }
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meridian: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MERIDIAN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
