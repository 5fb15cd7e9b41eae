//! The compiled, immutable runtime view of a validated config.
//!
//! Readers on the request path must not parse, look up names linearly or chase strings: the snapshot
//! resolves every name to an index, compiles regexes once, resolves each model's policy overrides, and
//! builds hash indexes so that model and version lookups are O(1). A process holds it in an
//! `Arc` (behind arc-swap in the gateway) and swaps a whole new one on reload.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use foldhash::HashMap as FastMap;

use crate::error::ConfigErrors;
use crate::load::{load_file, Loaded};
use crate::schema::{
    Balancer, Config, HealthCheck, Limits, LlmRouting, Locality, OutlierDetection, PriorityClass, Retries, Scale,
    StickyKey, Timeouts, Upstream,
};

/// Index of a region in [`Snapshot::regions`].
pub type RegionId = usize;
/// Index of a zone in [`Snapshot::zones`].
pub type ZoneId = usize;
/// Index of a model in [`Snapshot::models`].
pub type ModelId = usize;
/// Index of a version in [`ModelEntry::versions`].
pub type VersionId = usize;
/// Index of a LoRA adapter in a model's `llm.adapters`.
pub type AdapterId = usize;

/// A validated config compiled for fast reads.
#[derive(Debug)]
pub struct Snapshot {
    /// The config as written (secrets redact themselves when serialized).
    pub config: Config,
    /// The file it came from.
    pub file: String,
    /// Where relative paths in it start.
    pub base_dir: PathBuf,
    /// Regions, by [`RegionId`].
    pub regions: Vec<RegionInfo>,
    /// Zones, by [`ZoneId`].
    pub zones: Vec<ZoneInfo>,
    /// Models, by [`ModelId`].
    pub models: Vec<ModelEntry>,
    region_by_name: HashMap<String, RegionId>,
    zone_by_name: HashMap<String, ZoneId>,
    /// foldhash: every request looks its model up here, at a fifth of SipHash's cost (the keys
    /// come from the config, so there is no flooding to resist).
    model_by_name: FastMap<String, (ModelId, Option<AdapterId>)>,
}

/// A region with names resolved.
#[derive(Debug)]
pub struct RegionInfo {
    /// Region name.
    pub name: Arc<str>,
    /// Its zones.
    pub zones: Vec<ZoneId>,
    /// Regions to spill to, in order.
    pub failover: Vec<RegionId>,
}

/// A zone and the region it belongs to.
#[derive(Debug)]
pub struct ZoneInfo {
    /// Zone name.
    pub name: Arc<str>,
    /// Its region.
    pub region: RegionId,
}

/// A model with its versions, compiled routes and effective policy.
#[derive(Debug)]
pub struct ModelEntry {
    /// Model name.
    pub name: Arc<str>,
    /// Versions, by [`VersionId`].
    pub versions: Vec<VersionEntry>,
    /// Routing rules in order.
    pub routes: Vec<CompiledRoute>,
    /// The gateway policy with this model's overrides applied.
    pub policy: Policy,
    /// How requests are spread over a locality level's endpoints.
    pub balancer: Balancer,
    /// LLM-aware routing of its OpenAI-style requests, when configured.
    pub llm: Option<LlmRouting>,
    version_by_name: FastMap<String, VersionId>,
}

/// The traffic policy in force for one model.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Locality-aware balancing.
    pub locality: Locality,
    /// Active health checks.
    pub health_check: HealthCheck,
    /// Outlier detection.
    pub outlier_detection: OutlierDetection,
    /// Retries.
    pub retries: Retries,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Limits.
    pub limits: Limits,
    /// `limits.priority_header` parsed once, so the request path looks it up without parsing.
    pub priority_header: http::HeaderName,
}

/// One version of a model.
#[derive(Debug)]
pub struct VersionEntry {
    /// Version name.
    pub name: Arc<str>,
    /// Stable hash of the name (xxh3), the per-version seed of sticky split hashing; the same in
    /// every process and build, so all gateway replicas agree.
    pub name_hash: u64,
    /// Static endpoints.
    pub endpoints: Vec<EndpointSpec>,
    /// How to connect to them.
    pub upstream: Upstream,
    /// Its scaling, from zero included.
    pub scale: Option<Scale>,
    /// Whether it takes gRPC calls (HTTP/2 upstream, or endpoints with a gRPC port).
    pub grpc: bool,
}

/// A static endpoint with its locality resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Stable id (the address unless set).
    pub id: Arc<str>,
    /// Socket address.
    pub address: SocketAddr,
    /// Its gRPC port on the same host, when it serves gRPC there.
    pub grpc_port: Option<u16>,
    /// Region.
    pub region: RegionId,
    /// Zone.
    pub zone: ZoneId,
    /// Relative weight.
    pub weight: u32,
}

/// A routing rule ready to evaluate.
#[derive(Debug)]
pub struct CompiledRoute {
    /// Rule name, if any.
    pub name: Option<Arc<str>>,
    /// Header conditions, all of which must hold.
    pub headers: Vec<HeaderCondition>,
    /// Where matching requests go.
    pub target: RouteTarget,
    /// Sticky key of a split.
    pub sticky: Option<Sticky>,
    /// Mirrored version and percent.
    pub shadow: Option<(VersionId, f64)>,
    /// Default priority class of the rule's requests.
    pub priority: Option<PriorityClass>,
}

/// Where a split's sticky key comes from, with header names parsed once.
#[derive(Debug)]
pub enum Sticky {
    /// A request header.
    Header(http::HeaderName),
    /// A cookie of this name.
    Cookie(String),
}

/// Where a rule sends requests.
#[derive(Debug)]
pub enum RouteTarget {
    /// Always this version.
    Version(VersionId),
    /// Versions with weights summing to 100.
    Split(Vec<(VersionId, u32)>),
}

/// A compiled header condition.
#[derive(Debug)]
pub struct HeaderCondition {
    /// Header name.
    pub name: http::HeaderName,
    /// The test applied to its value.
    pub test: ValueTest,
}

/// A test of a header value.
#[derive(Debug)]
pub enum ValueTest {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// The whole value matches (anchored).
    Regex(regex::Regex),
}

impl ValueTest {
    /// Whether `value` passes.
    pub fn test(&self, value: &[u8]) -> bool {
        match self {
            ValueTest::Exact(s) => value == s.as_bytes(),
            ValueTest::Prefix(s) => value.starts_with(s.as_bytes()),
            ValueTest::Regex(re) => std::str::from_utf8(value).is_ok_and(|v| re.is_match(v)),
        }
    }
}

impl Snapshot {
    /// Loads, validates and compiles a config file.
    pub fn load(path: &Path) -> Result<Snapshot, ConfigErrors> {
        load_file(path).map(Snapshot::compile)
    }

    /// Compiles a validated config.
    pub fn compile(loaded: Loaded) -> Snapshot {
        let Loaded { config, file, base_dir } = loaded;
        let region_by_name: HashMap<String, RegionId> = config
            .regions
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();
        let mut zones = Vec::new();
        let mut zone_by_name = HashMap::new();
        let mut regions = Vec::new();
        for (ri, r) in config.regions.iter().enumerate() {
            let mut ids = Vec::new();
            for z in &r.zones {
                zone_by_name.insert(z.clone(), zones.len());
                ids.push(zones.len());
                zones.push(ZoneInfo {
                    name: z.as_str().into(),
                    region: ri,
                });
            }
            regions.push(RegionInfo {
                name: r.name.as_str().into(),
                zones: ids,
                failover: r
                    .failover
                    .iter()
                    .filter_map(|f| region_by_name.get(f).copied())
                    .collect(),
            });
        }
        let gw = &config.gateway;
        let mut models = Vec::new();
        let mut model_by_name = FastMap::default();
        for m in &config.models {
            let version_by_name: FastMap<String, VersionId> = m
                .versions
                .iter()
                .enumerate()
                .map(|(i, v)| (v.name.clone(), i))
                .collect();
            let versions = m
                .versions
                .iter()
                .map(|v| VersionEntry {
                    name: v.name.as_str().into(),
                    name_hash: xxhash_rust::xxh3::xxh3_64(v.name.as_bytes()),
                    endpoints: v
                        .endpoints
                        .iter()
                        .filter_map(|e| {
                            Some(EndpointSpec {
                                id: e.id.clone().unwrap_or_else(|| e.address.to_string()).into(),
                                address: e.address,
                                grpc_port: e.grpc_port,
                                region: *region_by_name.get(&e.region)?,
                                zone: *zone_by_name.get(&e.zone)?,
                                weight: e.weight,
                            })
                        })
                        .collect(),
                    upstream: v.upstream.clone(),
                    scale: v.scale.clone(),
                    grpc: v.serves_grpc(),
                })
                .collect();
            let routes = compile_routes(m, &version_by_name);
            let limits = m.limits.clone().unwrap_or_else(|| gw.limits.clone());
            // Validation checks the name; a default keeps compile infallible all the same.
            let priority_header = limits
                .priority_header
                .parse()
                .unwrap_or(http::HeaderName::from_static("x-priority"));
            let policy = Policy {
                locality: gw.locality.clone(),
                health_check: m.health_check.clone().unwrap_or_else(|| gw.health_check.clone()),
                outlier_detection: m
                    .outlier_detection
                    .clone()
                    .unwrap_or_else(|| gw.outlier_detection.clone()),
                retries: m.retries.clone().unwrap_or_else(|| gw.retries.clone()),
                timeouts: m.timeouts.clone().unwrap_or_else(|| gw.timeouts.clone()),
                limits,
                priority_header,
            };
            model_by_name.insert(m.name.clone(), (models.len(), None));
            for (a, adapter) in m.llm.iter().flat_map(|l| l.adapters.iter().enumerate()) {
                model_by_name.entry(adapter.clone()).or_insert((models.len(), Some(a)));
            }
            models.push(ModelEntry {
                name: m.name.as_str().into(),
                versions,
                routes,
                policy,
                balancer: m.balancer,
                llm: m.llm.clone(),
                version_by_name,
            });
        }
        Snapshot {
            config,
            file,
            base_dir,
            regions,
            zones,
            models,
            region_by_name,
            zone_by_name,
            model_by_name,
        }
    }

    /// A model by name (or by the name of one of its LoRA adapters), O(1).
    pub fn model(&self, name: &str) -> Option<ModelId> {
        self.model_by_name.get(name).map(|&(m, _)| m)
    }

    /// A model by name, and the LoRA adapter when the name is one of its adapters', O(1).
    pub fn model_and_adapter(&self, name: &str) -> Option<(ModelId, Option<AdapterId>)> {
        self.model_by_name.get(name).copied()
    }

    /// A region by name.
    pub fn region(&self, name: &str) -> Option<RegionId> {
        self.region_by_name.get(name).copied()
    }

    /// A zone by name.
    pub fn zone(&self, name: &str) -> Option<ZoneId> {
        self.zone_by_name.get(name).copied()
    }
}

impl ModelEntry {
    /// The name of LoRA adapter `id` of its LLM routing, when a request asked for one.
    pub fn adapter(&self, id: Option<AdapterId>) -> Option<&str> {
        Some(self.llm.as_ref()?.adapters.get(id?)?.as_str())
    }

    /// A version by name, O(1).
    pub fn version(&self, name: &str) -> Option<VersionId> {
        self.version_by_name.get(name).copied()
    }
}

fn compile_routes(m: &crate::schema::Model, versions: &FastMap<String, VersionId>) -> Vec<CompiledRoute> {
    let mut out: Vec<CompiledRoute> = m
        .routes
        .iter()
        .filter_map(|r| {
            let target = match &r.version {
                Some(v) => RouteTarget::Version(*versions.get(v)?),
                None => RouteTarget::Split(
                    r.split
                        .iter()
                        .filter_map(|w| Some((*versions.get(&w.version)?, w.weight)))
                        .collect(),
                ),
            };
            let headers = r
                .matches
                .iter()
                .flat_map(|mt| &mt.headers)
                .filter_map(|h| {
                    let test = if let Some(v) = &h.exact {
                        ValueTest::Exact(v.clone())
                    } else if let Some(v) = &h.prefix {
                        ValueTest::Prefix(v.clone())
                    } else {
                        ValueTest::Regex(regex::Regex::new(&format!("^(?:{})$", h.regex.as_deref()?)).ok()?)
                    };
                    Some(HeaderCondition {
                        name: h.name.parse().ok()?,
                        test,
                    })
                })
                .collect();
            Some(CompiledRoute {
                name: r.name.as_deref().map(Into::into),
                headers,
                target,
                sticky: r.sticky.as_ref().and_then(|k| match k {
                    StickyKey::Header(h) => h.parse().ok().map(Sticky::Header),
                    StickyKey::Cookie(c) => Some(Sticky::Cookie(c.clone())),
                }),
                shadow: r
                    .shadow
                    .as_ref()
                    .and_then(|s| Some((*versions.get(&s.version)?, s.percent))),
                priority: r.priority,
            })
        })
        .collect();
    // A single-version model with no rules gets one implicit catch-all.
    if out.is_empty() && m.versions.len() == 1 {
        out.push(CompiledRoute {
            name: None,
            headers: Vec::new(),
            target: RouteTarget::Version(0),
            sticky: None,
            shadow: None,
            priority: None,
        });
    }
    out
}
