//! Kubernetes discovery end to end. There is no cluster here, so the test serves the Kubernetes
//! list and watch JSON API itself (Nodes, EndpointSlices, Pods; resourceVersions; chunked watch
//! streams; 410 Gone) and drives a real `meridian control`, through its kube-rs watchers, over
//! adds, readiness flips, a zone move, a dropped watch, an expired resourceVersion and deletions,
//! checking the state feed and a real gateway that routes to what was discovered.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use meridian_config::schema::{Discovery, KubeAccess, KubeDiscovery};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

/// The API kinds served, by the collection path kube asks for.
const KINDS: [(&str, &str, &str); 3] = [
    ("nodes", "/api/v1/nodes", "NodeList"),
    (
        "slices",
        "/apis/discovery.k8s.io/v1/namespaces/ml/endpointslices",
        "EndpointSliceList",
    ),
    ("pods", "/api/v1/namespaces/ml/pods", "PodList"),
];

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A tiny Kubernetes API server: objects by kind, a global resourceVersion, an event log.
#[derive(Default)]
struct FakeApi {
    objects: Mutex<HashMap<&'static str, BTreeMap<String, Value>>>,
    log: Mutex<Vec<(u64, &'static str, Value)>>,
    rv: AtomicU64,
    events: Mutex<Option<broadcast::Sender<()>>>,
    /// Kinds whose next watch answers 410 Gone.
    gone: Mutex<Vec<&'static str>>,
    /// Bumped to end every open watch stream.
    cut: Mutex<Option<broadcast::Sender<()>>>,
}

impl FakeApi {
    fn new() -> Arc<FakeApi> {
        let f = FakeApi::default();
        *f.events.lock().unwrap() = Some(broadcast::channel(1024).0);
        *f.cut.lock().unwrap() = Some(broadcast::channel(16).0);
        Arc::new(f)
    }

    /// Creates or replaces an object; `announce: false` changes it without a watch event, so
    /// only a relist can see it.
    fn put(&self, kind: &'static str, mut obj: Value, announce: bool) {
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

    fn delete(&self, kind: &'static str, name: &str) {
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

    fn cut_watches(&self) {
        let _ = self.cut.lock().unwrap().as_ref().unwrap().send(());
    }

    fn list(&self, kind: &'static str, list_kind: &str) -> Value {
        let items: Vec<Value> = self
            .objects
            .lock()
            .unwrap()
            .get(kind)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let api = if kind == "slices" { "discovery.k8s.io/v1" } else { "v1" };
        json!({
            "apiVersion": api, "kind": list_kind,
            "metadata": {"resourceVersion": self.rv.load(Ordering::SeqCst).to_string()},
            "items": items
        })
    }

    /// A chunked watch stream from `since`: logged events, then new ones until cut.
    fn watch(self: &Arc<Self>, kind: &'static str, since: u64) -> Body {
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
                    .filter(|(rv, k, _)| *k == kind && *rv > sent)
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

    async fn serve(self: Arc<Self>, addr: &str) {
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
                        let Some((kind, _, list_kind)) = KINDS.iter().find(|(_, p, _)| *p == path) else {
                            return Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(404)
                                    .body(http_body_util::Full::new(Bytes::from("{}")).boxed())
                                    .unwrap(),
                            );
                        };
                        let body = if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                            let since = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
                            me.watch(kind, since)
                        } else {
                            http_body_util::Full::new(Bytes::from(me.list(kind, list_kind).to_string())).boxed()
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

fn node(name: &str, zone: &str, ready: bool, cordoned: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": {"topology.kubernetes.io/zone": zone}},
        "spec": {"unschedulable": cordoned},
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    })
}

fn slice(a_zone: &str, b_ready: bool) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "llm-v1-abcde", "namespace": "ml", "uid": "uid-slice",
                     "labels": {"kubernetes.io/service-name": "llm-v1"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [PODS[0]], "conditions": {"ready": true, "serving": true, "terminating": false},
             "nodeName": "n1", "zone": a_zone, "targetRef": {"kind": "Pod", "name": "pod-a", "namespace": "ml"}},
            {"addresses": [PODS[1]], "conditions": {"ready": b_ready, "serving": b_ready, "terminating": false},
             "nodeName": "n2", "zone": "r-b", "targetRef": {"kind": "Pod", "name": "pod-b", "namespace": "ml"}}
        ]
    })
}

fn pod(ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pod-c", "namespace": "ml", "uid": "uid-pod-c", "labels": {"app": "llm", "track": "v2"}},
        "spec": {"nodeName": "n2", "containers": [{"name": "server", "image": "triton"}]},
        "status": {"podIP": PODS[2], "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    })
}

/// The fake cluster's pod IPs (pod-a, pod-b behind the llm-v1 Service; pod-c picked by selector).
const PODS: [&str; 3] = ["127.106.1.1", "127.106.1.2", "127.106.1.3"];

/// A gateway and control loop for a model whose versions control discovers in Kubernetes: v1
/// from the llm-v1 Service's EndpointSlices, v2 from the pods its selector picks.
fn world() -> (World, Gw, String) {
    let mut w = World::new(106);
    let gw = w.gateway("r", &["r-a", "r-b"]);
    let control = w.control("r");
    w.config.gateway.health_check.enabled = false;
    w.config.gateway.retries.attempts = 0;
    let kube = |service: Option<&str>, selector: &[(&str, &str)]| {
        Some(Discovery::Kubernetes(KubeDiscovery {
            namespace: "ml".into(),
            service: service.map(str::to_string),
            selector: selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            port: 8000,
        }))
    };
    w.version("llm", "v1").discovery = kube(Some("llm-v1"), &[]);
    w.version("llm", "v2").discovery = kube(None, &[("app", "llm"), ("track", "v2")]);
    w.route("llm", pin("v1"));
    w.config.control.kubernetes = Some(KubeAccess {
        kubeconfig: Some("kubeconfig.yaml".into()),
        context: None,
    });
    let t = &mut w.config.control.telemetry;
    (t.interval, t.timeout) = (ms(200), ms(500));
    (w, gw, control)
}

const KUBECONFIG: &str = "
apiVersion: v1
kind: Config
clusters: [{ name: fake, cluster: { server: 'http://127.106.0.9:6443' } }]
users: [{ name: tester, user: { token: not-a-secret } }]
contexts: [{ name: fake, context: { cluster: fake, user: tester, namespace: ml } }]
current-context: fake
";

/// The state feed's endpoints by id.
fn feed(control: &str) -> HashMap<String, Value> {
    let v: Value = client()
        .get(format!("http://{control}/v1/state"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

fn feed_has(control: &str, what: &str, f: impl Fn(&HashMap<String, Value>) -> bool) {
    wait_until(what, Duration::from_secs(30), || f(&feed(control)));
}

#[test]
fn kube_watchers_follow_the_cluster() {
    let dir = scratch("kube");
    let (w, gw, control_at) = world();
    let cfg = w.write(&dir);
    std::fs::write(dir.join("kubeconfig.yaml"), KUBECONFIG).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = FakeApi::new();
    api.put("nodes", node("n1", "r-a", true, false), true);
    api.put("nodes", node("n2", "r-b", true, false), true);
    api.put("slices", slice("r-a", false), true);
    api.put("pods", pod(true), true);
    rt.spawn(api.clone().serve("127.106.0.9:6443"));
    let _a = sim(&format!("{}:8000", PODS[0]), "pod-a", "llm", "v1", &[]);
    let _b = sim(&format!("{}:8000", PODS[1]), "pod-b", "llm", "v1", &[]);
    let _c = sim(&format!("{}:8000", PODS[2]), "pod-c", "llm", "v2", &[]);
    let mut control = start(
        "control",
        &["control", "--config", cfg.to_str().unwrap(), "--region", "r"],
        &dir.join("control.log"),
        "listening on",
    );

    // Listed: the slice's ready endpoint, its not-ready one, and the selected pod (zone from its node).
    feed_has(&control_at, "discovered endpoints", |f| {
        f.get("ml/pod-a")
            .is_some_and(|e| e["ready"] == true && e["zone"] == "r-a")
            && f.get("ml/pod-b").is_some_and(|e| e["ready"] == false)
            && f.get("ml/pod-c")
                .is_some_and(|e| e["ready"] == true && e["zone"] == "r-b" && e["version"] == "v2")
    });
    assert_eq!(
        feed(&control_at)["ml/pod-b"]["reason"],
        "not ready in its EndpointSlice"
    );

    // A gateway routes to what control discovered.
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", Some("r-a"), admin, public);
    wait_until("gateway knows pod-a", Duration::from_secs(20), || {
        endpoints(admin).iter().any(|e| e["id"] == "ml/pod-a")
    });
    let a = infer(&client(), public, "/v2/models/llm/versions/v1/infer", &[]);
    assert_eq!((a.status, a.served_by.as_str()), (200, "pod-a"), "{:?}", a.body);

    // Watched changes: a readiness flip and a zone move.
    api.put("slices", slice("r-a", true), true);
    feed_has(&control_at, "pod-b ready", |f| f["ml/pod-b"]["ready"] == true);
    api.put("slices", slice("r-b", true), true);
    feed_has(&control_at, "pod-a moved to r-b", |f| f["ml/pod-a"]["zone"] == "r-b");

    // A dropped watch resumes: later changes still arrive.
    api.cut_watches();
    api.put("pods", pod(false), true);
    feed_has(&control_at, "pod-c not ready after the watch dropped", |f| {
        f["ml/pod-c"]["ready"] == false
    });

    // An expired resourceVersion (410 Gone) makes the watcher relist: a change made without any
    // watch event (node n1 cordoned) becomes visible only that way.
    api.gone.lock().unwrap().push("nodes");
    api.put("nodes", node("n1", "r-a", true, true), false);
    api.cut_watches();
    feed_has(&control_at, "cordoned node drains pod-a", |f| {
        f["ml/pod-a"]["drained"] == true && f["ml/pod-a"]["reason"] == "node cordoned"
    });

    // Deletion.
    api.delete("pods", "pod-c");
    feed_has(&control_at, "pod-c gone", |f| !f.contains_key("ml/pod-c"));
    assert!(control.child.try_wait().unwrap().is_none(), "control survived it all");
    control.kill();
}
