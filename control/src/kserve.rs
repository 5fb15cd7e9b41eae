//! KServe discovery: InferenceServices (`serving.kserve.io/v1beta1`, read through kube's dynamic
//! API, no generated types) in the configured namespaces become models. [`derive`] is the pure
//! mapping, unit-tested on InferenceService JSON as the API serves it:
//!
//! - the model is named like the InferenceService (what KServe's V1/V2 paths name it);
//! - serverless (Knative) predictors: each revision in `status.components.predictor.traffic` with a
//!   share becomes a version named like the revision, its endpoints the pods labelled
//!   `serving.knative.dev/revision=<revision>`; without a traffic list, `canaryTrafficPercent`
//!   splits between the last revision rolled out to 100% and the latest ready one, else the latest
//!   ready revision takes everything. Two versions make a sticky split (`kserve.sticky_header`);
//! - RawDeployment predictors (`status.deploymentMode`): one version, `predictor`, the endpoints
//!   of the `<name>-predictor` Service's EndpointSlices.
//!
//! An InferenceService with no ready revision yet is left out until it has one. RBAC: get, list,
//! watch on `inferenceservices` (serving.kserve.io) besides discovery's.

use std::collections::BTreeMap;

use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use meridian_config::feed::DiscoveredModel;
use meridian_config::schema::{Discovery, KServe, KubeDiscovery, Model};
use serde_json::Value;

use crate::discovery::reflect_into;

/// The label Knative puts on a revision's pods.
pub const REVISION_LABEL: &str = "serving.knative.dev/revision";

/// What one InferenceService stands for: the model the feed publishes, and where each version's
/// endpoints are found.
#[derive(Clone, Debug)]
pub struct Derived {
    /// The model, its versions and split.
    pub model: DiscoveredModel,
    /// Discovery of each version, in the model's order.
    pub discovery: Vec<KubeDiscovery>,
}

impl Derived {
    /// The model as control's own config entry, each version with its discovery.
    pub fn to_model(&self) -> Model {
        let mut m = self.model.to_model();
        for (v, d) in m.versions.iter_mut().zip(&self.discovery) {
            v.discovery = Some(Discovery::Kubernetes(d.clone()));
        }
        m
    }
}

/// The model an InferenceService (as JSON) stands for, `None` while it has no ready revision.
pub fn derive(isvc: &Value, cfg: &KServe) -> Option<Derived> {
    let name = isvc["metadata"]["name"].as_str()?;
    let namespace = isvc["metadata"]["namespace"].as_str().unwrap_or("default");
    let status = &isvc["status"];
    let predictor = &status["components"]["predictor"];
    let kube = |service: Option<String>, selector: BTreeMap<String, String>| KubeDiscovery {
        namespace: namespace.to_string(),
        service,
        selector,
        port: cfg.port,
        grpc_port: cfg.grpc_port,
        port_name: "http".into(),
        grpc_port_name: "grpc".into(),
    };
    let (versions, discovery): (Vec<(String, u32)>, Vec<KubeDiscovery>) =
        if status["deploymentMode"].as_str() == Some("RawDeployment") {
            let service = format!("{name}-predictor");
            (
                vec![("predictor".into(), 100)],
                vec![kube(Some(service), BTreeMap::new())],
            )
        } else {
            let shares = revision_shares(predictor, isvc["spec"]["predictor"]["canaryTrafficPercent"].as_u64())?;
            let discovery = shares
                .iter()
                .map(|(rev, _)| kube(None, BTreeMap::from([(REVISION_LABEL.to_string(), rev.clone())])))
                .collect();
            (shares, discovery)
        };
    Some(Derived {
        model: DiscoveredModel {
            name: name.to_string(),
            sticky_header: (versions.len() > 1).then(|| cfg.sticky_header.clone()),
            versions,
        },
        discovery,
    })
}

/// The revisions with traffic and their percent: the status's traffic list, else the canary
/// percent between the last rolled-out revision and the latest ready one.
fn revision_shares(predictor: &Value, canary: Option<u64>) -> Option<Vec<(String, u32)>> {
    let from_traffic: Vec<(String, u32)> = predictor["traffic"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let percent = t["percent"].as_u64()? as u32;
            Some((t["revisionName"].as_str()?.to_string(), percent)).filter(|_| percent > 0)
        })
        .collect();
    if !from_traffic.is_empty() {
        return Some(from_traffic);
    }
    let latest = predictor["latestReadyRevision"].as_str()?.to_string();
    let stable = predictor["latestRolledoutRevision"]
        .as_str()
        .filter(|r| *r != latest)
        .or_else(|| predictor["previousRolledoutRevision"].as_str().filter(|r| *r != latest));
    match (canary.map(|c| c.min(100) as u32), stable) {
        (Some(c), Some(stable)) if c < 100 => Some(vec![(stable.to_string(), 100 - c), (latest, c)]),
        _ => Some(vec![(latest, 100)]),
    }
}

/// Watches the InferenceServices of the configured namespaces.
pub struct KServeWatcher {
    namespaces: Vec<String>,
    stores: Vec<Store<DynamicObject>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for KServeWatcher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl KServeWatcher {
    /// Starts a watcher per namespace.
    pub fn new(client: &Client, namespaces: &[String]) -> KServeWatcher {
        let gvk = GroupVersionKind::gvk("serving.kserve.io", "v1beta1", "InferenceService");
        let ar = ApiResource::from_gvk(&gvk);
        let mut tasks = Vec::new();
        let stores = namespaces
            .iter()
            .map(|ns| {
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
                let writer = reflector::store::Writer::new(ar.clone());
                reflect_into(api, watcher::Config::default(), writer, &mut tasks)
            })
            .collect();
        KServeWatcher {
            namespaces: namespaces.to_vec(),
            stores,
            tasks,
        }
    }

    /// Whether it watches exactly `namespaces`.
    pub fn watches(&self, namespaces: &[String]) -> bool {
        self.namespaces == namespaces
    }

    /// The models the InferenceServices stand for now, by name.
    pub fn derived(&self, cfg: &KServe) -> Vec<Derived> {
        let mut out: Vec<Derived> = self
            .stores
            .iter()
            .flat_map(|s| s.state())
            .filter_map(|o| derive(&serde_json::to_value(&*o).ok()?, cfg))
            .collect();
        out.sort_by(|a, b| a.model.name.cmp(&b.model.name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> KServe {
        KServe {
            namespaces: vec!["ml".into()],
            port: 8080,
            grpc_port: Some(8081),
            sticky_header: "x-user-id".into(),
        }
    }

    fn isvc(spec: Value, predictor: Value) -> Value {
        json!({
            "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "iris", "namespace": "ml"},
            "spec": {"predictor": spec},
            "status": {"components": {"predictor": predictor}}
        })
    }

    #[test]
    fn a_canary_is_a_sticky_split_between_rolled_out_and_latest() {
        let d = derive(
            &isvc(
                json!({"canaryTrafficPercent": 10}),
                json!({"latestReadyRevision": "iris-predictor-00002", "latestRolledoutRevision": "iris-predictor-00001"}),
            ),
            &cfg(),
        )
        .unwrap();
        assert_eq!(
            d.model.versions,
            [
                ("iris-predictor-00001".to_string(), 90),
                ("iris-predictor-00002".to_string(), 10)
            ]
        );
        assert_eq!(d.model.sticky_header.as_deref(), Some("x-user-id"));
        assert_eq!(d.discovery[1].selector[REVISION_LABEL], "iris-predictor-00002");
        assert_eq!((d.discovery[1].port, d.discovery[1].grpc_port), (8080, Some(8081)));
        let m = d.to_model();
        assert_eq!(m.routes[0].split.len(), 2);
        assert!(m.versions.iter().all(|v| v.discovery.is_some()));
    }

    #[test]
    fn the_traffic_list_wins_and_one_revision_takes_all() {
        let traffic = json!({"latestReadyRevision": "iris-predictor-00003", "traffic": [
            {"revisionName": "iris-predictor-00002", "percent": 75, "tag": "prev"},
            {"revisionName": "iris-predictor-00003", "percent": 25, "latestRevision": true},
            {"revisionName": "iris-predictor-00001", "percent": 0}]});
        let d = derive(&isvc(json!({"canaryTrafficPercent": 10}), traffic), &cfg()).unwrap();
        let names: Vec<_> = d.model.versions.iter().map(|(v, w)| (v.as_str(), *w)).collect();
        assert_eq!(names, [("iris-predictor-00002", 75), ("iris-predictor-00003", 25)]);
        let d = derive(
            &isvc(json!({}), json!({"latestReadyRevision": "iris-predictor-00001"})),
            &cfg(),
        )
        .unwrap();
        assert_eq!(d.model.versions, [("iris-predictor-00001".to_string(), 100)]);
        assert_eq!(d.model.sticky_header, None);
        assert!(d.to_model().routes.is_empty());
        assert!(
            derive(&isvc(json!({}), json!({})), &cfg()).is_none(),
            "no ready revision yet"
        );
    }

    #[test]
    fn raw_deployments_are_their_predictor_service() {
        let mut v = isvc(json!({}), json!({}));
        v["status"]["deploymentMode"] = json!("RawDeployment");
        let d = derive(&v, &cfg()).unwrap();
        assert_eq!(d.model.versions, [("predictor".to_string(), 100)]);
        assert_eq!(d.discovery[0].service.as_deref(), Some("iris-predictor"));
    }
}
