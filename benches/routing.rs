//! The per-request routing decision at scale, through the same functions a request runs: `decide`
//! (the header block's size, the path, the model, the version by header rules then a sticky weighted
//! split, the body limit, the priority class) and the pick (locality levels + power of two choices).
//! Target (ARCHITECTURE.md): < 1 us at 1,000 models x 1,000 endpoints.
//!
//! `cargo bench --bench routing` runs the full size; under `cargo test` the same code runs once at a
//! small size, so it stays compiled and correct.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use meridian_config::schema::{
    Config, HeaderMatch, LlmRouting, Model, Region, Route, RouteMatch, StickyKey, Version, WeightedVersion,
};
use meridian_config::{Loaded, Snapshot};
use meridian_gateway_core::classify::{classify, Target};
use meridian_gateway_core::cluster::{Cluster, Origin};
use meridian_gateway_core::decide::{decide, Decision, Env};
use meridian_gateway_core::endpoint::Registry;
use meridian_gateway_core::llm::blocks::{self, BlockSpec};
use meridian_gateway_core::llm_pick::Prompt;
use meridian_gateway_core::select::select;
use rand::rngs::SmallRng;
use rand::SeedableRng;

fn region(name: &str, zones: &[&str], failover: &[&str]) -> Region {
    Region {
        name: name.into(),
        zones: zones.iter().map(|z| z.to_string()).collect(),
        location: None,
        failover: failover.iter().map(|f| f.to_string()).collect(),
        gateway: None,
        control: None,
    }
}

/// `models` models, each with a v1 and a v2 of `endpoints / 2` endpoints spread over 2 regions x 2 zones.
fn config(models: usize, endpoints: usize) -> Config {
    let mut cfg = Config {
        regions: vec![
            region("us", &["us-a", "us-b"], &["eu"]),
            region("eu", &["eu-a", "eu-b"], &["us"]),
        ],
        ..Config::default()
    };
    let zones = [("us", "us-a"), ("us", "us-b"), ("eu", "eu-a"), ("eu", "eu-b")];
    let mut n: u32 = 0;
    for m in 0..models {
        let mut versions = Vec::new();
        for v in ["v1", "v2"] {
            let eps = (0..endpoints / 2)
                .map(|i| {
                    n += 1;
                    let (r, z) = zones[i % 4];
                    let address = SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 8000));
                    meridian_config::build::endpoint(None, address, r, z)
                })
                .collect();
            versions.push(Version {
                endpoints: eps,
                ..meridian_config::build::version(v)
            });
        }
        cfg.models.push(Model {
            name: format!("model-{m}"),
            versions,
            routes: vec![
                Route {
                    matches: Some(RouteMatch {
                        headers: vec![HeaderMatch {
                            name: "x-user-segment".into(),
                            exact: Some("premium".into()),
                            ..Default::default()
                        }],
                    }),
                    version: Some("v2".into()),
                    ..Default::default()
                },
                Route {
                    split: vec![
                        WeightedVersion {
                            version: "v1".into(),
                            weight: 90,
                        },
                        WeightedVersion {
                            version: "v2".into(),
                            weight: 10,
                        },
                    ],
                    sticky: Some(StickyKey::Header("x-user-id".into())),
                    ..Default::default()
                },
            ],
            ..meridian_config::build::model("")
        });
    }
    cfg
}

fn bench(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    // MERIDIAN_BENCH_SIZE=models,endpoints overrides the full size, to see how the cost scales.
    let size = std::env::var("MERIDIAN_BENCH_SIZE").ok().and_then(|s| {
        let (m, e) = s.split_once(',')?;
        Some((m.parse().ok()?, e.parse().ok()?))
    });
    let (models, endpoints) = match (full, size) {
        (true, Some(s)) => s,
        (true, None) => (1000, 1000),
        (false, _) => (10, 20),
    };
    let snap = Snapshot::compile(Loaded {
        config: config(models, endpoints),
        file: "bench".into(),
        base_dir: PathBuf::new(),
    });
    let registry = Registry::default();
    let origin = Origin {
        region: 0,
        zone: snap.zone("us-a"),
    };
    let clusters: Vec<Vec<Cluster>> = snap
        .models
        .iter()
        .map(|m| {
            m.versions
                .iter()
                .map(|v| Cluster::build(&snap, origin, &v.endpoints, &registry, &m.policy.locality))
                .collect()
        })
        .collect();
    let heads: Vec<http::request::Parts> = (0..models)
        .map(|m| {
            let req = http::Request::post(format!("/v2/models/model-{m}/infer"))
                .header("host", "api.example.com")
                .header("content-type", "application/json")
                .header("content-length", "96")
                .header("x-user-id", "user-12345")
                .body(())
                .unwrap();
            req.into_parts().0
        })
        .collect();
    let env = Env {
        ready: true,
        client: Some("10.0.0.1".parse().unwrap()),
        shadow_draw: 0.5,
    };
    let mut rng = SmallRng::seed_from_u64(1);
    let mut i = 0usize;
    let epoch = registry.epoch();
    c.bench_function(&format!("decide+pick {models} models x {endpoints} endpoints"), |b| {
        b.iter(|| {
            i = (i + 7919) % models;
            let Ok(Decision::Route(r)) = decide(&snap, black_box(&heads[i]), None, &env) else {
                unreachable!()
            };
            let pick = clusters[r.model][r.version].pick(epoch, 1, &mut rng, &[]).unwrap();
            black_box(pick.endpoint.address)
        })
    });
    // The same requests through the parts `decide` is made of (classify, select, pick) without its
    // header-size, body-limit and priority checks: what the decision cost before `decide`
    // existed, measured in the same run for comparison.
    c.bench_function(
        &format!("classify+select+pick {models} models x {endpoints} endpoints"),
        |b| {
            b.iter(|| {
                i = (i + 7919) % models;
                let head = black_box(&heads[i]);
                let Ok(Target::Model { model, version, .. }) = classify(&head.method, head.uri.path()) else {
                    unreachable!()
                };
                let m = snap.model(model).unwrap();
                let sel = select(&snap.models[m], version, head, b"10.0.0.1", 0.5).unwrap();
                let pick = clusters[m][sel.version].pick(epoch, 1, &mut rng, &[]).unwrap();
                black_box(pick.endpoint.address)
            })
        },
    );
    llm(c);
}

/// The LLM-aware pick at 8 endpoints for a 7,200-token chat prompt (113 blocks of 256 bytes), each
/// endpoint holding some of 16 prompt groups: the decision alone (target < 10 us), and the prompt's
/// hashing, which runs once per request before it.
fn llm(c: &mut Criterion) {
    let mut cfg = config(1, 8);
    cfg.models[0].routes.clear();
    cfg.models[0].versions.truncate(1);
    cfg.models[0].llm = Some(LlmRouting::default());
    let snap = Snapshot::compile(Loaded {
        config: cfg,
        file: "bench".into(),
        base_dir: PathBuf::new(),
    });
    let (registry, entry) = (Registry::default(), &snap.models[0]);
    let origin = Origin {
        region: 0,
        zone: snap.zone("us-a"),
    };
    let policy = entry.llm.clone().unwrap();
    let cluster = Cluster::build(
        &snap,
        origin,
        &entry.versions[0].endpoints,
        &registry,
        &entry.policy.locality,
    )
    .with_llm(&policy);
    let spec = BlockSpec {
        bytes: policy.block_bytes(),
        max_blocks: policy.max_blocks as usize,
    };
    let bodies: Vec<Vec<u8>> = (0..16)
        .map(|g| {
            let system = format!("Group {g}: ") + &"the device must be reset before the update. ".repeat(550);
            let question = "what does the amber light mean? ".repeat(150);
            serde_json::json!({"model": "m", "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]})
                .to_string()
                .into_bytes()
        })
        .collect();
    let chains: Vec<Vec<u64>> = bodies
        .iter()
        .map(|b| {
            let mut chain = Vec::new();
            blocks::chain(blocks::prompt(b).unwrap(), blocks::seed("m", None), spec, &mut chain);
            chain
        })
        .collect();
    let mut rng = SmallRng::seed_from_u64(2);
    let endpoints: Vec<_> = cluster.endpoints().collect();
    for (g, chain) in chains.iter().enumerate() {
        let e = endpoints[g % endpoints.len()];
        e.llm().unwrap().index.insert(chain);
    }
    let epoch = registry.epoch();
    let mut i = 0usize;
    c.bench_function("llm pick, 8 endpoints, 113-block prompt", |b| {
        b.iter(|| {
            i = (i + 1) % chains.len();
            let prompt = Prompt {
                chain: &chains[i],
                tokens: 7200,
                adapter: None,
            };
            let pick = cluster.pick_llm(epoch, 1, &mut rng, &[], &prompt, &policy).unwrap();
            black_box(pick.endpoint.address)
        })
    });
    let mut chain = Vec::new();
    c.bench_function("llm prompt hashing, 29 KB chat body", |b| {
        b.iter(|| {
            i = (i + 1) % bodies.len();
            blocks::chain(
                blocks::prompt(black_box(&bodies[i])).unwrap(),
                blocks::seed("m", None),
                spec,
                &mut chain,
            );
            black_box(chain.len())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
