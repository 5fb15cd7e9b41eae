//! `meridian sim-backend`: a simulated GPU model server for demos, tests and load tests.
//!
//! It speaks KServe V1, Open Inference Protocol V2 and the OpenAI-style API for one model version,
//! says in every answer which endpoint and version served it, takes a configurable latency, and
//! exposes Triton- and vLLM-style metrics that move with its load. Failures are injected at run time
//! through `POST /sim/control` (error rate, hang, close the connection, go unready), so tests and the
//! lab's chaos mode can break a backend without restarting it.

mod handlers;
mod llm;
mod metrics;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use state::SimState;

/// Options of `meridian sim-backend`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Model name served.
    #[arg(long, default_value = "sklearn-iris")]
    pub model: String,
    /// Model version served.
    #[arg(long, default_value = "v1")]
    pub version: String,
    /// Endpoint id echoed in answers (`x-served-by`); the listen address when absent.
    #[arg(long)]
    pub id: Option<String>,
    /// Mean latency of an inference, e.g. 5ms.
    #[arg(long, default_value = "2ms", value_parser = humantime::parse_duration)]
    pub latency: std::time::Duration,
    /// Uniform jitter added to or taken from the latency, e.g. 1ms.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub jitter: std::time::Duration,
    /// Requests served at once before queueing (the simulated GPU's batch slots).
    #[arg(long, default_value_t = 8)]
    pub capacity: u32,
    /// Share of inferences answered with an error, 0..=1.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Status of injected errors.
    #[arg(long, default_value_t = 500)]
    pub error_status: u16,
    /// Serve TLS (h2 and http/1.1 by ALPN) with this PEM certificate chain; needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// LLM model: KV-cache capacity in prompt blocks.
    #[arg(long, default_value_t = 4096)]
    pub kv_blocks: usize,
    /// LLM model: estimated tokens per prompt block (as the gateway's `llm.block_tokens`).
    #[arg(long, default_value_t = 64)]
    pub block_tokens: u32,
    /// LLM model: bytes of prompt per estimated token (as the gateway's `llm.bytes_per_token`).
    #[arg(long, default_value_t = 4)]
    pub bytes_per_token: u32,
    /// LLM model: prefill time per thousand uncached prompt tokens (one prefill at a time), e.g. 40ms.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub prefill_per_1k_tokens: std::time::Duration,
    /// LLM model: decode time per output token; the mean latency when absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub decode_per_token: Option<std::time::Duration>,
    /// LLM model: output tokens when a request does not ask for fewer.
    #[arg(long, default_value_t = 8)]
    pub output_tokens: u32,
    /// LLM model: LoRA adapters held at once.
    #[arg(long, default_value_t = 4)]
    pub lora_slots: u32,
    /// LLM model: time to load a LoRA adapter that is not held.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub lora_load: std::time::Duration,
}

/// The TLS acceptor of a sim backend started with --tls-cert/--tls-key.
fn tls_acceptor(args: &SimArgs) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let chain = meridian_config::read_cert_chain(cert).map_err(anyhow::Error::msg)?;
    let key = meridian_config::read_private_key(key).map_err(anyhow::Error::msg)?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut conf = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    conf.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(conf))))
}

/// Runs the simulated backend until the process is stopped.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(serve(args, None))
}

/// Serves until the process ends; prints `listening on ADDR` once bound, as a readiness signal.
pub async fn serve(args: SimArgs, ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let tls = tls_acceptor(&args)?;
    let state = Arc::new(SimState::new(&args, addr));
    println!(
        "sim-backend {} {}/{} listening on {addr}",
        state.id, args.model, args.version
    );
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handlers::handle(state.clone(), req));
            let http = auto::Builder::new(TokioExecutor::new());
            // An error here is a connection the simulator closed on purpose or the peer dropped.
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            }
        });
    }
}
