//! Kubernetes discovery with kube-rs watchers (watch, not poll): the EndpointSlices of a version's
//! Service, or the Pods its label selector picks, plus every Node (readiness, cordon, taints,
//! zone). kube-runtime's watcher lists, then watches from the list's resourceVersion; a dropped
//! watch resumes and an expired resourceVersion (410 Gone) relists, with backoff on errors, so
//! a flapping API server never turns into a crash loop. Reflector stores keep the current objects;
//! each collection round reads them into endpoint targets.
//!
//! RBAC: get, list and watch on `endpointslices` (discovery.k8s.io), `pods` and `nodes`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use meridian_config::feed::FeedEndpoint;
use meridian_config::schema::{Discovery, KubeAccess, KubeDiscovery};
use meridian_config::Snapshot;

use crate::collect::Target;

/// The zone label Kubernetes sets on nodes (and EndpointSlices copy to endpoints).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Connects to the API server: the kubeconfig file when configured, else in-cluster or
/// `KUBECONFIG` (kube's inference).
pub async fn client(access: &KubeAccess, base: &std::path::Path) -> anyhow::Result<Client> {
    let config = match &access.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(base.join(path))?;
            let opts = kube::config::KubeConfigOptions {
                context: access.context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kc, &opts).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// What one version's discovery watches.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Source {
    namespace: String,
    /// `kubernetes.io/service-name=<service>` for EndpointSlices, or the pod selector.
    labels: String,
    pods: bool,
}

impl Source {
    fn of(k: &KubeDiscovery) -> Source {
        match &k.service {
            Some(svc) => Source {
                namespace: k.namespace.clone(),
                labels: format!("kubernetes.io/service-name={svc}"),
                pods: false,
            },
            None => Source {
                namespace: k.namespace.clone(),
                labels: k
                    .selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                pods: true,
            },
        }
    }
}

enum Watched {
    Slices(Store<EndpointSlice>),
    Pods(Store<Pod>),
}

/// The running watchers and their stores.
pub struct Discoverer {
    client: Client,
    nodes: Store<Node>,
    sources: BTreeMap<Source, Watched>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Discoverer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs a watcher into a store until aborted.
fn spawn_reflector<K>(api: Api<K>, cfg: watcher::Config, tasks: &mut Vec<tokio::task::JoinHandle<()>>) -> Store<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    reflect_into(api, cfg, reflector::store::Writer::default(), tasks)
}

/// Runs a watcher into `writer`'s store until aborted (with backoff on errors); returns the store.
pub fn reflect_into<K>(
    api: Api<K>,
    cfg: watcher::Config,
    writer: reflector::store::Writer<K>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Store<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let reader = writer.as_reader();
    let stream = reflector::reflector(writer, watcher(api, cfg)).default_backoff();
    tasks.push(tokio::spawn(async move {
        stream
            .for_each(|event| async move {
                if let Err(e) = event {
                    tracing::warn!("kubernetes watch: {e}");
                }
            })
            .await
    }));
    reader
}

impl Discoverer {
    /// Starts the node watcher; sources are added as the config names them.
    pub fn new(client: Client) -> Discoverer {
        let mut tasks = Vec::new();
        let nodes = spawn_reflector(Api::<Node>::all(client.clone()), watcher::Config::default(), &mut tasks);
        Discoverer {
            client,
            nodes,
            sources: BTreeMap::new(),
            tasks,
        }
    }

    /// Makes sure every discovery source of the config is watched.
    pub fn follow(&mut self, snap: &Snapshot) {
        for (_, _, k) in kube_versions(snap) {
            let src = Source::of(k);
            if self.sources.contains_key(&src) {
                continue;
            }
            let cfg = watcher::Config::default().labels(&src.labels);
            let watched = if src.pods {
                Watched::Pods(spawn_reflector(
                    Api::<Pod>::namespaced(self.client.clone(), &src.namespace),
                    cfg,
                    &mut self.tasks,
                ))
            } else {
                Watched::Slices(spawn_reflector(
                    Api::<EndpointSlice>::namespaced(self.client.clone(), &src.namespace),
                    cfg,
                    &mut self.tasks,
                ))
            };
            self.sources.insert(src, watched);
        }
    }

    /// The endpoints the stores hold now, as collection targets of `region`.
    pub fn targets(&self, snap: &Snapshot, region: &str) -> Vec<Target> {
        let nodes: HashMap<String, NodeState> = self
            .nodes
            .state()
            .iter()
            .filter_map(|n| Some((n.metadata.name.clone()?, NodeState::of(n))))
            .collect();
        let mut out = Vec::new();
        for (model, version, k) in kube_versions(snap) {
            let health_path = snap
                .model(model)
                .map_or("/v2/health/ready", |m| snap.models[m].policy.health_check.path.as_str());
            let found = match self.sources.get(&Source::of(k)) {
                Some(Watched::Slices(s)) => from_slices(&s.state(), &Ports::of(k), &nodes),
                Some(Watched::Pods(s)) => from_pods(&s.state(), &Ports::of(k), &nodes),
                None => Vec::new(),
            };
            for d in found {
                out.push(Target {
                    ready_url: format!("http://{}{health_path}", d.address),
                    metrics_url: format!("http://{}/metrics", d.address),
                    kube_ready: Some((d.ready, d.reason.clone())),
                    endpoint: FeedEndpoint {
                        id: format!("{}/{}", k.namespace, d.name),
                        address: d.address,
                        grpc_port: d.grpc_port,
                        model: model.to_string(),
                        version: version.to_string(),
                        region: region.to_string(),
                        zone: d.zone.unwrap_or_default(),
                        ready: false,
                        headroom: None,
                        server: None,
                        drained: d.drained,
                        reason: d.reason,
                    },
                });
            }
        }
        out
    }
}

/// Versions of the config's models discovered through Kubernetes.
fn kube_versions(snap: &Snapshot) -> impl Iterator<Item = (&str, &str, &KubeDiscovery)> {
    snap.config.models.iter().flat_map(|m| {
        m.versions.iter().filter_map(move |v| {
            let Discovery::Kubernetes(k) = v.discovery.as_ref()?;
            Some((m.name.as_str(), v.name.as_str(), k))
        })
    })
}

/// What a Node says about the endpoints on it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeState {
    /// Its Ready condition is True.
    pub ready: bool,
    /// Cordoned (`spec.unschedulable`) or tainted NoExecute: its endpoints are drained.
    pub drain: Option<String>,
    /// `topology.kubernetes.io/zone`.
    pub zone: Option<String>,
}

impl NodeState {
    /// Reads a Node.
    pub fn of(n: &Node) -> NodeState {
        let spec = n.spec.as_ref();
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let drain = if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
            Some("node cordoned".to_string())
        } else {
            spec.and_then(|s| s.taints.as_ref())
                .and_then(|t| t.iter().find(|t| t.effect == "NoExecute"))
                .map(|t| format!("node tainted {}:NoExecute", t.key))
        };
        NodeState {
            ready,
            drain,
            zone: n.metadata.labels.as_ref().and_then(|l| l.get(ZONE_LABEL).cloned()),
        }
    }
}

/// An endpoint found in the stores.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// Pod name (or the address when the slice names no pod).
    pub name: String,
    /// IP and the REST port.
    pub address: SocketAddr,
    /// The gRPC port, when the version's endpoints serve one.
    pub grpc_port: Option<u16>,
    /// Ready by Kubernetes: the endpoint (or pod) is ready and not terminating, its node ready.
    pub ready: bool,
    /// Drained by its node's state.
    pub drained: bool,
    /// Why it is not ready or drained.
    pub reason: Option<String>,
    /// Zone, from the endpoint or its node.
    pub zone: Option<String>,
}

fn node_verdict(node: Option<&NodeState>, ready: bool, why_not: &str) -> (bool, bool, Option<String>) {
    let node_ready = node.is_none_or(|n| n.ready);
    let drain = node.and_then(|n| n.drain.clone());
    let reason = drain
        .clone()
        .or_else(|| (!node_ready).then(|| "node not ready".to_string()))
        .or_else(|| (!ready).then(|| why_not.to_string()));
    (ready && node_ready, drain.is_some(), reason)
}

/// Which ports of a discovered endpoint serve REST and gRPC: a port named as configured wins over
/// the configured number (the Service's named ports, `http`/`grpc` by default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports {
    /// REST port number, when no port is named `http_name`.
    pub http: u16,
    /// gRPC port number, when no port is named `grpc_name`; `None`: no gRPC unless named.
    pub grpc: Option<u16>,
    /// Name of the REST port.
    pub http_name: String,
    /// Name of the gRPC port.
    pub grpc_name: String,
}

impl Ports {
    /// The ports a version's discovery asks for.
    pub fn of(k: &KubeDiscovery) -> Ports {
        Ports {
            http: k.port,
            grpc: k.grpc_port,
            http_name: k.port_name.clone(),
            grpc_name: k.grpc_port_name.clone(),
        }
    }

    /// REST and gRPC ports given the named ports an object lists.
    fn resolve<'a>(&self, named: impl Iterator<Item = (Option<&'a str>, Option<i32>)> + Clone) -> (u16, Option<u16>) {
        let find = |name: &str| {
            named
                .clone()
                .find(|(n, _)| *n == Some(name))
                .and_then(|(_, p)| u16::try_from(p?).ok())
        };
        let http = find(&self.http_name).unwrap_or(self.http);
        // A named gRPC port counts only for a version that takes gRPC (a grpc_port is configured).
        let grpc = self.grpc.map(|g| find(&self.grpc_name).unwrap_or(g));
        (http, grpc)
    }
}

/// Endpoints of EndpointSlices (discovery.k8s.io/v1): ready and serving, not terminating.
pub fn from_slices(slices: &[Arc<EndpointSlice>], ports: &Ports, nodes: &HashMap<String, NodeState>) -> Vec<Found> {
    let mut out = Vec::new();
    for s in slices {
        let named = s.ports.iter().flatten().map(|p| (p.name.as_deref(), p.port));
        let (port, grpc_port) = ports.resolve(named);
        for e in &s.endpoints {
            let c = e.conditions.as_ref();
            // Unknown readiness counts as ready (the API's own convention for slices).
            let ready = c.and_then(|c| c.ready).unwrap_or(true)
                && c.and_then(|c| c.serving).unwrap_or(true)
                && !c.and_then(|c| c.terminating).unwrap_or(false);
            let node = e.node_name.as_ref().and_then(|n| nodes.get(n));
            let why = if c.and_then(|c| c.terminating).unwrap_or(false) {
                "terminating"
            } else {
                "not ready in its EndpointSlice"
            };
            let (ready, drained, reason) = node_verdict(node, ready, why);
            for ip in e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                let address = SocketAddr::new(ip, port);
                out.push(Found {
                    grpc_port,
                    name: e
                        .target_ref
                        .as_ref()
                        .and_then(|r| r.name.clone())
                        .unwrap_or_else(|| address.to_string()),
                    address,
                    ready,
                    drained,
                    reason: reason.clone(),
                    zone: e.zone.clone().or_else(|| node.and_then(|n| n.zone.clone())),
                });
            }
        }
    }
    out
}

/// Endpoints of Pods picked by a label selector: Ready condition, not being deleted.
pub fn from_pods(pods: &[Arc<Pod>], ports: &Ports, nodes: &HashMap<String, NodeState>) -> Vec<Found> {
    pods.iter()
        .filter_map(|p| {
            let containers = p.spec.iter().flat_map(|s| &s.containers);
            let named = containers
                .flat_map(|c| c.ports.iter().flatten())
                .map(|p| (p.name.as_deref(), Some(p.container_port)));
            let (port, grpc_port) = ports.resolve(named);
            let status = p.status.as_ref()?;
            let ip: IpAddr = status.pod_ip.as_ref()?.parse().ok()?;
            let deleting = p.metadata.deletion_timestamp.is_some();
            let ready = !deleting
                && status
                    .conditions
                    .as_ref()
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .and_then(|n| nodes.get(n));
            let why = if deleting { "terminating" } else { "pod not ready" };
            let (ready, drained, reason) = node_verdict(node, ready, why);
            Some(Found {
                name: p.metadata.name.clone().unwrap_or_else(|| ip.to_string()),
                address: SocketAddr::new(ip, port),
                grpc_port,
                ready,
                drained,
                reason,
                zone: node.and_then(|n| n.zone.clone()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(ports: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "s"}, "addressType": "IPv4", "ports": ports,
                "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}]
            }))
            .unwrap(),
        )
    }

    fn ports(grpc: Option<u16>) -> Ports {
        let Discovery::Kubernetes(mut k) = meridian_config::build::kube("ml", Some("svc"), &[], 8080);
        k.grpc_port = grpc;
        Ports::of(&k)
    }

    #[test]
    fn named_ports_win_and_grpc_needs_asking_for() {
        let named = slice(serde_json::json!([{"name": "http", "port": 9000}, {"name": "grpc", "port": 9001}]));
        let nodes = HashMap::new();
        let found = &from_slices(std::slice::from_ref(&named), &ports(Some(8081)), &nodes)[0];
        assert_eq!((found.address.port(), found.grpc_port), (9000, Some(9001)));
        let found = &from_slices(std::slice::from_ref(&named), &ports(None), &nodes)[0];
        assert_eq!(
            (found.address.port(), found.grpc_port),
            (9000, None),
            "no gRPC unless configured"
        );
        let unnamed = slice(serde_json::json!([{"port": 7000}]));
        let found = &from_slices(&[unnamed], &ports(Some(8081)), &nodes)[0];
        assert_eq!(
            (found.address.port(), found.grpc_port),
            (8080, Some(8081)),
            "the configured numbers"
        );
    }
}
