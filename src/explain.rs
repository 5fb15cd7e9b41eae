//! `meridian explain`: why a request would go where it goes, from a config file (endpoints as a
//! fresh gateway sees them: healthy and idle) or from a running gateway's admin API (its live
//! endpoint state). Both run the gateway's own decision code (`meridian_gateway::explain`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use meridian_gateway::explain::{self, Headers, Query};
use meridian_gateway_core::clock::SystemClock;

/// Arguments of `meridian explain`.
#[derive(clap::Args)]
pub struct ExplainArgs {
    /// Config file: explain against a table built from it.
    #[arg(long, required_unless_present = "admin", conflicts_with = "admin")]
    config: Option<PathBuf>,
    /// Region of the gateway whose view to take; optional when the config has one gateway region.
    #[arg(long)]
    region: Option<String>,
    /// Zone of that gateway (its level 0); the whole region when absent.
    #[arg(long)]
    zone: Option<String>,
    /// A running gateway's admin address (e.g. http://127.0.0.1:9901): explain against its live state.
    #[arg(long)]
    admin: Option<String>,
    /// Admin token for a gateway off loopback.
    #[arg(long, env = "MERIDIAN_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A request header, `name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// The request body (`@file` reads a file).
    #[arg(short = 'd', long = "data", value_name = "BODY")]
    data: Option<String>,
    /// The client's address (a split's fallback sticky key).
    #[arg(long)]
    client: Option<IpAddr>,
    /// Print JSON for tools instead of text.
    #[arg(long)]
    json: bool,
    /// HTTP method.
    method: String,
    /// Path (and query).
    path: String,
}

/// Runs `meridian explain`.
pub fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let query = query(&args)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let out = match (&args.config, &args.admin) {
        (Some(config), _) => {
            let gw = rt.block_on(async {
                meridian_gateway::gateway::Gateway::start(
                    config,
                    args.region.as_deref(),
                    args.zone.as_deref(),
                    Arc::new(SystemClock),
                )
            })?;
            let x = explain::explain(&gw.admin().routing, &query).map_err(anyhow::Error::msg)?;
            if args.json {
                serde_json::to_string_pretty(&x)?
            } else {
                explain::render_text(&x)
            }
        }
        (None, Some(admin)) => rt.block_on(ask(admin, args.token.as_deref(), &query, args.json))?,
        (None, None) => bail!("give --config FILE or --admin URL"),
    };
    println!("{}", out.trim_end());
    Ok(())
}

fn query(args: &ExplainArgs) -> anyhow::Result<Query> {
    let mut headers = Vec::new();
    for h in &args.headers {
        let Some((k, v)) = h.split_once(':') else {
            bail!("header {h:?} is not `name: value`");
        };
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let body = match args.data.as_deref() {
        Some(file) if file.starts_with('@') => {
            Some(std::fs::read_to_string(&file[1..]).with_context(|| format!("reading {}", &file[1..]))?)
        }
        other => other.map(str::to_string),
    };
    Ok(Query {
        method: args.method.clone(),
        path: args.path.clone(),
        headers: Headers::List(headers),
        body,
        client: args.client,
    })
}

/// The explanation from a running gateway's `POST /explain`.
async fn ask(admin: &str, token: Option<&str>, query: &Query, json: bool) -> anyhow::Result<String> {
    let format = if json { "json" } else { "text" };
    let url = format!("{}/explain?format={format}", admin.trim_end_matches('/'));
    let mut req = reqwest::Client::new().post(&url).json(query);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let body = resp.text().await.with_context(|| format!("POST {url}"))?;
    if !status.is_success() {
        bail!("{url}: {status}: {body}");
    }
    Ok(body)
}
