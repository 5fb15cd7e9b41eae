//! A tiny Kubernetes API server for the tests (there is no cluster here): Nodes, EndpointSlices,
//! Pods and KServe InferenceServices of namespace `ml` with resourceVersions, list and chunked watch streams, 410 Gone on
//! demand; and the scale subresource of Deployments, whose PATCHes it records. kube-rs talks to it
//! as to a real API server.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

/// A Node in `zone`.
pub fn node(name: &str, zone: &str, ready: bool, cordoned: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": {"topology.kubernetes.io/zone": zone}},
        "spec": {"unschedulable": cordoned},
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    })
}

/// The EndpointSlice `{service}-abcde` of Service `service` in `ml`, port 8000, with `endpoints`
/// (see [`slice_endpoint`]).
pub fn slice(service: &str, endpoints: Vec<Value>) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-abcde"), "namespace": "ml", "uid": format!("uid-{service}"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
        "endpoints": endpoints
    })
}

/// One endpoint of a slice: pod `pod` at `ip` on `node` in `zone`.
pub fn slice_endpoint(ip: &str, pod: &str, node: &str, zone: &str, ready: bool) -> Value {
    json!({"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": false},
           "nodeName": node, "zone": zone, "targetRef": {"kind": "Pod", "name": pod, "namespace": "ml"}})
}

/// A pod `name` at `ip` on `node` with `labels`.
pub fn pod(name: &str, ip: &str, node: &str, labels: Value, ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml", "uid": format!("uid-{name}"), "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "kserve-container", "image": "kserve/sklearnserver"}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    })
}

/// A kubeconfig for a fake API server at `server` (e.g. `http://127.106.0.9:6443`).
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters: [{{ name: fake, cluster: {{ server: '{server}' }} }}]
users: [{{ name: tester, user: {{ token: not-a-secret }} }}]
contexts: [{{ name: fake, context: {{ cluster: fake, user: tester, namespace: ml }} }}]
current-context: fake
"
    )
}

/// The API kinds served, by the collection path kube asks for.
const KINDS: [(&str, &str, &str); 4] = [
    ("nodes", "/api/v1/nodes", "NodeList"),
    (
        "slices",
        "/apis/discovery.k8s.io/v1/namespaces/ml/endpointslices",
        "EndpointSliceList",
    ),
    ("pods", "/api/v1/namespaces/ml/pods", "PodList"),
    (
        "isvcs",
        "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices",
        "InferenceServiceList",
    ),
];

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A tiny Kubernetes API server: objects by kind, a global resourceVersion, an event log.
#[derive(Default)]
pub struct FakeApi {
    objects: Mutex<HashMap<&'static str, BTreeMap<String, Value>>>,
    log: Mutex<Vec<(u64, &'static str, Value)>>,
    rv: AtomicU64,
    events: Mutex<Option<broadcast::Sender<()>>>,
    /// Kinds whose next watch answers 410 Gone.
    pub gone: Mutex<Vec<&'static str>>,
    /// Bumped to end every open watch stream.
    cut: Mutex<Option<broadcast::Sender<()>>>,
    /// Deployments' replicas, by name.
    replicas: Mutex<BTreeMap<String, u32>>,
    /// Every PATCH of a scale subresource: (deployment, replicas), in order.
    pub patches: Mutex<Vec<(String, u32)>>,
}

impl FakeApi {
    pub fn new() -> Arc<FakeApi> {
        let f = FakeApi::default();
        *f.events.lock().unwrap() = Some(broadcast::channel(1024).0);
        *f.cut.lock().unwrap() = Some(broadcast::channel(16).0);
        Arc::new(f)
    }

    /// Creates or replaces an object; `announce: false` changes it without a watch event, so
    /// only a relist can see it.
    pub fn put(&self, kind: &'static str, mut obj: Value, announce: bool) {
        let rv = self.rv.fetch_add(1, Ordering::SeqCst) + 1;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let existed = self
            .objects
            .lock()
            .unwrap()
            .entry(kind)
            .or_default()
            .insert(name, obj.clone())
            .is_some();
        if announce {
            let t = if existed { "MODIFIED" } else { "ADDED" };
            self.log
                .lock()
                .unwrap()
                .push((rv, kind, json!({"type": t, "object": obj})));
            let _ = self.events.lock().unwrap().as_ref().unwrap().send(());
        }
    }

    pub fn delete(&self, kind: &'static str, name: &str) {
        let rv = self.rv.fetch_add(1, Ordering::SeqCst) + 1;
        let obj = self
            .objects
            .lock()
            .unwrap()
            .get_mut(kind)
            .unwrap()
            .remove(name)
            .unwrap();
        let mut obj = obj;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.log
            .lock()
            .unwrap()
            .push((rv, kind, json!({"type": "DELETED", "object": obj})));
        let _ = self.events.lock().unwrap().as_ref().unwrap().send(());
    }

    /// Sets a Deployment's replicas (as an operator or the HPA would).
    pub fn set_replicas(&self, deployment: &str, n: u32) {
        self.replicas.lock().unwrap().insert(deployment.to_string(), n);
    }

    /// The scale subresource of a Deployment, as the API answers it.
    fn scale(&self, deployment: &str) -> Value {
        let n = self.replicas.lock().unwrap().get(deployment).copied().unwrap_or(0);
        json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": deployment, "namespace": "ml"},
            "spec": {"replicas": n}, "status": {"replicas": n}
        })
    }

    pub fn cut_watches(&self) {
        let _ = self.cut.lock().unwrap().as_ref().unwrap().send(());
    }

    fn list(&self, kind: &'static str, list_kind: &str, selector: &Selector) -> Value {
        let items: Vec<Value> = self
            .objects
            .lock()
            .unwrap()
            .get(kind)
            .map(|m| m.values().filter(|o| selector.matches(o)).cloned().collect())
            .unwrap_or_default();
        let api = match kind {
            "slices" => "discovery.k8s.io/v1",
            "isvcs" => "serving.kserve.io/v1beta1",
            _ => "v1",
        };
        json!({
            "apiVersion": api, "kind": list_kind,
            "metadata": {"resourceVersion": self.rv.load(Ordering::SeqCst).to_string()},
            "items": items
        })
    }

    /// A chunked watch stream from `since`: logged events, then new ones until cut.
    fn watch(self: &Arc<Self>, kind: &'static str, since: u64, selector: Selector) -> Body {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(256);
        let gone = {
            let mut g = self.gone.lock().unwrap();
            let hit = g.contains(&kind);
            g.retain(|k| *k != kind);
            hit
        };
        let me = self.clone();
        tokio::spawn(async move {
            let line = |v: &Value| Ok(Frame::data(Bytes::from(format!("{v}\n"))));
            if gone {
                let status = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}});
                let _ = tx.send(line(&status)).await;
                return;
            }
            let mut events = me.events.lock().unwrap().as_ref().unwrap().subscribe();
            let mut cut = me.cut.lock().unwrap().as_ref().unwrap().subscribe();
            let mut sent = since;
            loop {
                let pending: Vec<(u64, Value)> = me
                    .log
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(rv, k, e)| *k == kind && *rv > sent && selector.matches(&e["object"]))
                    .map(|(rv, _, e)| (*rv, e.clone()))
                    .collect();
                for (rv, e) in pending {
                    if tx.send(line(&e)).await.is_err() {
                        return;
                    }
                    sent = rv;
                }
                tokio::select! {
                    _ = events.recv() => {}
                    _ = cut.recv() => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => return,
                }
            }
        });
        StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed()
    }

    pub async fn serve(self: Arc<Self>, addr: &str) {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let me = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let me = me.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let query: HashMap<String, String> = req
                            .uri()
                            .query()
                            .unwrap_or("")
                            .split('&')
                            .filter_map(|kv| kv.split_once('='))
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                        let json_of = |v: Value| {
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(http_body_util::Full::new(Bytes::from(v.to_string())).boxed())
                                    .unwrap(),
                            )
                        };
                        if let Some(name) = path
                            .strip_prefix("/apis/apps/v1/namespaces/ml/deployments/")
                            .and_then(|p| p.strip_suffix("/scale"))
                        {
                            let name = name.to_string();
                            if req.method() == hyper::Method::PATCH {
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                                let n = patch["spec"]["replicas"].as_u64().unwrap_or(0) as u32;
                                me.patches.lock().unwrap().push((name.clone(), n));
                                me.set_replicas(&name, n);
                            }
                            return json_of(me.scale(&name));
                        }
                        let Some((kind, _, list_kind)) = KINDS.iter().find(|(_, p, _)| *p == path) else {
                            return Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(404)
                                    .body(http_body_util::Full::new(Bytes::from("{}")).boxed())
                                    .unwrap(),
                            );
                        };
                        let selector = Selector::parse(query.get("labelSelector").map(String::as_str));
                        let body = if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                            let since = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
                            me.watch(kind, since, selector)
                        } else {
                            http_body_util::Full::new(Bytes::from(me.list(kind, list_kind, &selector).to_string()))
                                .boxed()
                        };
                        Ok(hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(body)
                            .unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    }
}

/// A `labelSelector` of `k=v` pairs (what kube-rs sends for a Service's slices or a pod selector).
#[derive(Clone, Debug, Default)]
struct Selector(Vec<(String, String)>);

impl Selector {
    fn parse(query: Option<&str>) -> Selector {
        let decoded = query
            .unwrap_or("")
            .replace("%2F", "/")
            .replace("%2f", "/")
            .replace("%3D", "=")
            .replace("%3d", "=")
            .replace("%2C", ",")
            .replace("%2c", ",");
        Selector(
            decoded
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn matches(&self, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|(k, v)| obj["metadata"]["labels"][k].as_str() == Some(v.as_str()))
    }
}
