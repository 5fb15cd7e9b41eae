//! `meridian lab`: the whole local world on loopback, for demos and drills.
//!
//! Regions `us-east` and `eu-west` (more with `--regions`), two zones each, simulated backends for
//! `sklearn-iris` v1 in every zone and v2 in the first region only, a gateway per region, and the DNS
//! server on 127.0.0.1:5353 answering `api.meridian.test` by the `nearest` policy. Every part is this
//! same binary in a child process on its own 127.0.x.y address, so the lab exercises exactly what
//! production runs. It writes the config it generated, prints what runs where with example `curl`
//! and `dig` commands, and stops everything on Ctrl-C or after `--duration`. `--chaos` breaks a
//! backend, then a zone, then a region in turn, so failover can be watched in the admin APIs.

mod chaos;
mod world;

use std::path::PathBuf;
use std::time::Duration;

pub use world::World;

/// Options of `meridian lab`.
#[derive(clap::Args, Debug, Clone)]
pub struct LabArgs {
    /// Stop after this long (e.g. 5m); runs until Ctrl-C when absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Number of regions (1-4): us-east, eu-west, ap-south, sa-east.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub regions: u8,
    /// Zones per region (1-3).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub zones: u8,
    /// Backends per zone and version (1-8).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub backends: u8,
    /// Periodically fail a backend, a zone and a region, and heal them.
    #[arg(long)]
    pub chaos: bool,
    /// Folder for the generated config and the parts' logs.
    #[arg(long, default_value = "lab-out")]
    pub out: PathBuf,
}

/// Runs the lab until Ctrl-C, SIGTERM or `--duration`.
pub fn run(args: LabArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut world = World::plan(&args);
        world.write_config()?;
        if let Err(e) = world.start().await {
            world.stop();
            return Err(e);
        }
        world.print();
        let chaos = args.chaos.then(|| tokio::spawn(chaos::run(world.handle())));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let sleep = async {
            match args.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => println!("\nlab: stopping (Ctrl-C)"),
            _ = term.recv() => println!("lab: stopping (SIGTERM)"),
            _ = sleep => println!("lab: stopping (--duration reached)"),
        }
        if let Some(c) = chaos {
            c.abort();
        }
        world.stop();
        println!("lab: stopped");
        Ok(())
    })
}
