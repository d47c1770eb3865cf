//! Prometheus metrics of every role, through `prometheus-client`: requests by role, verb,
//! resource and code class, their latency, requests in flight and open watches (recorded by
//! the [`Track`] layer from the request's [`RequestInfo`]), plus the index's and the
//! controllers' counters read at scrape time, the latency of every store operation (through
//! [`MeteredStore`], which wraps each store a role opens) and the lag of remote readers. Label
//! sets are bounded: verbs, code classes and store operations are fixed sets, stores and remote
//! sources are named by role (`cache`, `workspaces`, `shard-<n>`), and resources beyond
//! [`MAX_RESOURCES`] distinct names (or of requests that found nothing) are reported as `other`.

use axum::extract::Request;
use axum::response::Response;
use kube_api::request::RequestInfo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

/// Distinct resource label values kept before others are reported as `other`.
pub const MAX_RESOURCES: usize = 200;

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// cache-server, virtual-workspace, shard, none.
    pub role: &'static str,
    /// Kubernetes verb.
    pub verb: String,
    /// `<group>/<resource>` (`core/…` for the empty group; an identity-based resource without
    /// its `:<identityHash>`), `other`, or "" for non-resource requests.
    pub resource: String,
    /// 2xx, 3xx, 4xx, 5xx.
    pub code: &'static str,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// Role.
    pub role: &'static str,
    /// Verb.
    pub verb: String,
    /// Resource.
    pub resource: String,
}

/// Labels of the in-flight and open-watch gauges.
/// Labels of the durable-store metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// `cache` or `workspaces`.
    pub store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    /// Role.
    pub role: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms … about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The request metrics of one process.
#[derive(Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<RoleLabels, Gauge>,
    watches: Family<RoleLabels, Gauge>,
    resources: Arc<parking_lot::Mutex<HashSet<String>>>,
    /// Each series a request records into, found with one fast hash of its role, verb and
    /// resource (the families hash their whole label set with SipHash on every lookup: three
    /// lookups a request were about 2% of a GET's instructions).
    hot: Arc<parking_lot::RwLock<HotSeries>>,
    /// The in-flight gauge of each of [`ROLES`], made when first used.
    in_flight_by_role: Arc<[std::sync::OnceLock<Gauge>; 4]>,
}

/// The roles a request is counted under ([`kube_api::request::Surface::role`]).
const ROLES: [&str; 4] = ["cache-server", "virtual-workspace", "shard", "none"];

/// The series of one (role, verb, resource), by [`HotKey`]. Bounded as the labels are: only
/// resources within [`MAX_RESOURCES`] get an entry.
type HotSeries = hashbrown::HashMap<HotKey, Arc<Series>, foldhash::fast::RandomState>;

#[derive(Hash, PartialEq, Eq)]
struct HotKey {
    role: &'static str,
    verb: String,
    resource: String,
}

/// A borrowed [`HotKey`] (hashes as the owned one does).
#[derive(Hash)]
struct HotRef<'a> {
    role: &'a str,
    verb: &'a str,
    resource: &'a str,
}

impl hashbrown::Equivalent<HotKey> for HotRef<'_> {
    fn equivalent(&self, key: &HotKey) -> bool {
        self.role == key.role && self.verb == key.verb && self.resource == key.resource
    }
}

/// The handles of one (role, verb, resource): its latency histogram and its counter per code
/// class, each made (and so exported) when first used.
struct Series {
    role: &'static str,
    verb: String,
    resource: String,
    latency: std::sync::OnceLock<Histogram>,
    codes: [std::sync::OnceLock<Counter>; 4],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            in_flight: Family::default(),
            watches: Family::default(),
            resources: Arc::default(),
            hot: Arc::default(),
            in_flight_by_role: Arc::default(),
        }
    }
}

fn code_class(status: u16) -> &'static str {
    CODE_CLASSES[code_index(status)]
}

const CODE_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

fn code_index(status: u16) -> usize {
    match status {
        200..=299 => 0,
        300..=399 => 1,
        400..=499 => 2,
        _ => 3,
    }
}

/// Counters read from other parts of the process at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Cached objects refused at ingest.
    pub invalid_objects: u64,
    /// Store events applied to the index.
    pub store_events: u64,
    /// Objects served without validating them again, on the validation memo's word.
    pub memo_served: u64,
    /// Controller passes, writes and the last pass's duration (shards only).
    pub controllers: Option<(u64, u64, f64)>,
    /// Durable stores (`--storage local`) by name (`cache`, `workspaces`).
    pub stores: Vec<(String, store::local::LocalStats)>,
    /// Objects the virtual workspace index serves, by `<group>/<resource>`.
    pub index_objects: Vec<(String, u64)>,
    /// The revision the virtual workspace index has applied.
    pub index_revision: u64,
    /// This role's store revision (the cache server's or the shard's workspaces).
    pub store_revision: Option<u64>,
    /// Objects refused at ingest and not served now, by `<group>/<resource>`.
    pub refused_objects: Vec<(String, u64)>,
    /// Remote sources of the index (`cache`, `shard-<n>`): reachable, and lag in seconds.
    pub remotes: Vec<(String, bool, f64)>,
}

/// Labels of the store latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// `cache` or `workspaces`.
    pub store: &'static str,
    /// get, list, list_at, create, update, delete, watch, revision.
    pub operation: &'static str,
}

/// Labels of the remote reader gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `cache` or `shard-<n>`.
    pub source: String,
}

fn backend_histogram() -> Histogram {
    // 10 µs … about 5 s: memory answers in microseconds, etcd in milliseconds.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 20))
}

/// Histograms by store and operation.
type BackendFamily = Family<BackendLabels, Histogram, fn() -> Histogram>;

/// Latency of store operations in this process, by store and operation.
fn backend() -> &'static BackendFamily {
    static BACKEND: std::sync::OnceLock<BackendFamily> = std::sync::OnceLock::new();
    BACKEND.get_or_init(|| Family::new_with_constructor(backend_histogram))
}

/// A store whose every operation is timed into `replication_vw_store_request_duration_seconds`.
pub struct MeteredStore {
    inner: Arc<dyn store::Store>,
    /// One histogram per [`Op`], in its order.
    ops: [Histogram; 8],
}

/// The store operations, in the order of [`OPERATIONS`].
#[derive(Clone, Copy)]
enum Op {
    Get,
    List,
    Create,
    Update,
    Delete,
    ListAt,
    Watch,
    Revision,
}

const OPERATIONS: [&str; 8] = [
    "get", "list", "create", "update", "delete", "list_at", "watch", "revision",
];

impl MeteredStore {
    /// Wrap `inner`, reported as `store` (`cache` or `workspaces`).
    pub fn wrap(inner: Arc<dyn store::Store>, store: &'static str) -> Arc<dyn store::Store> {
        let ops = OPERATIONS.map(|operation| {
            backend()
                .get_or_create(&BackendLabels { store, operation })
                .clone()
        });
        Arc::new(MeteredStore { inner, ops })
    }

    /// Run `operation`, observing how long it took.
    async fn timed<T>(&self, op: Op, operation: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let result = operation.await;
        self.ops[op as usize].observe(started.elapsed().as_secs_f64());
        result
    }
}

#[async_trait::async_trait]
impl store::Store for MeteredStore {
    async fn get(&self, key: &store::Key) -> Result<Option<store::Record>, store::StoreError> {
        self.timed(Op::Get, self.inner.get(key)).await
    }

    async fn list(&self, scope: &store::Scope) -> Result<store::Listing, store::StoreError> {
        self.timed(Op::List, self.inner.list(scope)).await
    }

    async fn create(
        &self,
        key: store::Key,
        value: bytes::Bytes,
    ) -> Result<store::Record, store::StoreError> {
        self.timed(Op::Create, self.inner.create(key, value)).await
    }

    async fn update(
        &self,
        key: store::Key,
        value: bytes::Bytes,
        expected: Option<u64>,
    ) -> Result<store::Record, store::StoreError> {
        self.timed(Op::Update, self.inner.update(key, value, expected))
            .await
    }

    async fn delete(
        &self,
        key: &store::Key,
        expected: Option<u64>,
    ) -> Result<store::Record, store::StoreError> {
        self.timed(Op::Delete, self.inner.delete(key, expected))
            .await
    }

    async fn list_at(
        &self,
        scope: &store::Scope,
        revision: u64,
    ) -> Result<store::Listing, store::StoreError> {
        self.timed(Op::ListAt, self.inner.list_at(scope, revision))
            .await
    }

    async fn watch(
        &self,
        scope: store::Scope,
        after: u64,
    ) -> Result<store::WatchStream, store::StoreError> {
        self.timed(Op::Watch, self.inner.watch(scope, after)).await
    }

    async fn revision(&self) -> Result<u64, store::StoreError> {
        self.timed(Op::Revision, self.inner.revision()).await
    }

    fn is_stale(&self, key: &store::Key) -> bool {
        self.inner.is_stale(key)
    }
}

/// Labels of the per-resource index gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// `<group>/<resource>`.
    pub resource: String,
}

/// The bounded label of a group and resource (see [`kube_api::request::resource_label`]).
pub use kube_api::request::resource_label as resource_label_of;

impl Metrics {
    /// The resource label for a request: bounded, and `other` for requests that found nothing.
    #[cfg(test)]
    fn resource_label(&self, info: &RequestInfo, status: u16) -> String {
        self.resource_label_from(
            info.is_resource_request
                .then(|| resource_label_of(&info.group, &info.resource)),
            status,
        )
    }

    /// The series a request of `role` and `verb` with answer `status` records into;
    /// `candidate` is its resource label before [`Metrics::resource_label_from`] bounds it.
    fn series(
        &self,
        role: &'static str,
        verb: &str,
        candidate: Option<String>,
        status: u16,
    ) -> Arc<Series> {
        // What the label is when the candidate is already known (the usual case).
        let quick = match &candidate {
            None => "",
            Some(_) if status == 404 || status == 400 => "other",
            Some(c) => c.as_str(),
        };
        let key = HotRef {
            role,
            verb,
            resource: quick,
        };
        if let Some(series) = self.hot.read().get(&key) {
            return series.clone();
        }
        let resource = self.resource_label_from(candidate, status);
        let key = HotRef {
            role,
            verb,
            resource: &resource,
        };
        let mut hot = self.hot.write();
        if let Some(series) = hot.get(&key) {
            return series.clone();
        }
        let series = Arc::new(Series {
            role,
            verb: verb.to_string(),
            resource: resource.clone(),
            latency: std::sync::OnceLock::new(),
            codes: Default::default(),
        });
        hot.insert(
            HotKey {
                role,
                verb: verb.to_string(),
                resource,
            },
            series.clone(),
        );
        series
    }

    /// The resource label of a request whose resource would be labelled `candidate` (`None`
    /// for non-resource requests), once its answer is `status`.
    fn resource_label_from(&self, candidate: Option<String>, status: u16) -> String {
        let Some(label) = candidate else {
            return String::new();
        };
        if status == 404 || status == 400 {
            return "other".into();
        }
        let mut known = self.resources.lock();
        if known.contains(&label) {
            return label;
        }
        if known.len() < MAX_RESOURCES {
            known.insert(label.clone());
            return label;
        }
        "other".into()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut registry = Registry::with_prefix("replication_vw");
        registry.register(
            "requests",
            "Requests by role, verb, resource and code class.",
            self.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a request (watches excluded), by role, verb and resource.",
            self.latency.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests being answered (watches included).",
            self.in_flight.clone(),
        );
        registry.register(
            "open_watches",
            "Watches whose response stream is open.",
            self.watches.clone(),
        );
        registry.register(
            "invalid_objects",
            "Cached objects refused at ingest (failed to unwrap or validate).",
            ConstCounter::new(snapshot.invalid_objects),
        );
        registry.register(
            "store_events",
            "Store events applied to the virtual workspace index.",
            ConstCounter::new(snapshot.store_events),
        );
        registry.register(
            "memo_served_objects",
            "Cached objects served after a restart or relist without validating them again, because the validation memo knew their text and schema.",
            ConstCounter::new(snapshot.memo_served),
        );
        if let Some((passes, writes, last)) = snapshot.controllers {
            registry.register(
                "controller_passes",
                "Passes of the local shard's controllers.",
                ConstCounter::new(passes),
            );
            registry.register(
                "controller_writes",
                "Writes the controllers made (workspaces and cache).",
                ConstCounter::new(writes),
            );
            registry.register(
                "controller_last_pass_seconds",
                "Duration of the last controller pass.",
                ConstGauge::new(last),
            );
        }
        use std::sync::atomic::Ordering::Relaxed;
        registry.register(
            "watch_frames_sent",
            "Watch frames (events, bookmarks, errors) written to watchers, counted per watcher.",
            ConstCounter::new(kube_api::watch::FRAMES_SENT.load(Relaxed)),
        );
        registry.register(
            "watch_bookmarks_sent",
            "Bookmarks sent to watchers.",
            ConstCounter::new(kube_api::watch::BOOKMARKS_SENT.load(Relaxed)),
        );
        registry.register(
            "watches_closed_behind",
            "Watches ended with 410 because the watcher fell behind the retained history.",
            ConstCounter::new(kube_api::watch::CLOSED_BEHIND.load(Relaxed)),
        );
        registry.register(
            "connections_closed_write_stall",
            "Connections closed because the client accepted no bytes for --write-stall-timeout (watchers that stopped reading).",
            ConstCounter::new(crate::tls::CLOSED_WRITE_STALL.load(Relaxed)),
        );
        registry.register(
            "store_request_duration_seconds",
            "Time a store operation took (watch: to open the stream), by store and operation.",
            backend().clone(),
        );
        if !snapshot.refused_objects.is_empty() {
            let refused = Family::<ResourceLabels, Gauge>::default();
            for (resource, n) in &snapshot.refused_objects {
                refused
                    .get_or_create(&ResourceLabels {
                        resource: resource.clone(),
                    })
                    .set(*n as i64);
            }
            registry.register(
                "refused_objects",
                "Cached objects refused at ingest (failed to unwrap or validate against their schema) and not served now, by resource.",
                refused,
            );
        }
        if !snapshot.remotes.is_empty() {
            let up = Family::<SourceLabels, Gauge>::default();
            let lag = Family::<SourceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
            for (source, reachable, seconds) in &snapshot.remotes {
                let l = SourceLabels {
                    source: source.clone(),
                };
                up.get_or_create(&l).set(i64::from(*reachable));
                lag.get_or_create(&l).set(*seconds);
            }
            registry.register(
                "remote_up",
                "Whether a remote source of the index (cache, shard-<n>) is reachable.",
                up,
            );
            registry.register(
                "remote_sync_lag_seconds",
                "How far the index is behind a remote source: from a probe of the source's revision until the index had seen it (or since the probe, while it has not).",
                lag,
            );
        }
        if !snapshot.index_objects.is_empty() {
            let objects = Family::<ResourceLabels, Gauge>::default();
            for (resource, n) in &snapshot.index_objects {
                objects
                    .get_or_create(&ResourceLabels {
                        resource: resource.clone(),
                    })
                    .set(*n as i64);
            }
            registry.register(
                "index_objects",
                "Objects the virtual workspace index serves, by resource.",
                objects,
            );
        }
        registry.register(
            "index_revision",
            "The cache revision the virtual workspace index has applied.",
            ConstGauge::new(snapshot.index_revision as i64),
        );
        if let Some(rev) = snapshot.store_revision {
            registry.register(
                "store_revision",
                "This role's store revision (its resourceVersion counter).",
                ConstGauge::new(rev as i64),
            );
        }
        if !snapshot.stores.is_empty() {
            let loaded = Family::<StoreLabels, Gauge>::default();
            let skipped = Family::<StoreLabels, Gauge>::default();
            let stale = Family::<StoreLabels, Gauge>::default();
            let commits = Family::<StoreLabels, Counter>::default();
            let writes = Family::<StoreLabels, Counter>::default();
            for (name, st) in &snapshot.stores {
                let l = StoreLabels {
                    store: name.clone(),
                };
                loaded.get_or_create(&l).set(st.loaded as i64);
                skipped.get_or_create(&l).set(st.skipped as i64);
                stale.get_or_create(&l).set(st.stale as i64);
                commits.get_or_create(&l).inc_by(st.commits);
                writes.get_or_create(&l).inc_by(st.writes);
            }
            registry.register(
                "store_loaded_records",
                "Records a durable store loaded into memory at start.",
                loaded,
            );
            registry.register(
                "store_skipped_records",
                "Records a durable store skipped at start because they could not be read (undecodable or undecryptable); each was logged once with its key.",
                skipped,
            );
            registry.register(
                "store_stale_records",
                "Records stored under an encryption provider or key other than the first, not yet written again (0 once a key rotation is complete).",
                stale,
            );
            registry.register(
                "store_commits",
                "Durable commits (one fsync each; concurrent writes share one).",
                commits,
            );
            registry.register("store_writes", "Writes made durable.", writes);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            tracing::warn!("Encoding the metrics failed.");
        }
        out
    }
}

/// Decrements a gauge when the response body it travels with is dropped.
struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The layer that records every request it wraps in [`Metrics`] (see [`Track`]).
#[derive(Clone)]
pub struct TrackLayer(Arc<Metrics>);

impl TrackLayer {
    /// Record into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        TrackLayer(Arc::new(metrics))
    }
}

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            metrics: self.0.clone(),
            inner,
        }
    }
}

/// Counts every request by role, verb, resource and code class, times it, and keeps the
/// in-flight and open-watch gauges (a watch's for as long as its stream lives). The request's
/// [`RequestInfo`] is parsed once here and left in its extensions for the layers and handlers
/// below. A tower service rather than a `from_fn` middleware: that clones the whole stack below
/// it and boxes it as `Next` on every request.
#[derive(Clone)]
pub struct Track<S> {
    metrics: Arc<Metrics>,
    inner: S,
}

impl<S> tower::Service<Request> for Track<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let metrics = self.metrics.clone();
        let info = RequestInfo::parse(req.method(), req.uri().path(), req.uri().query());
        let role = info.surface.role();
        // What the labels need, so the info itself moves into the extensions uncopied.
        let verb = info.verb.clone();
        let candidate = info
            .is_resource_request
            .then(|| resource_label_of(&info.group, &info.resource));
        req.extensions_mut().insert(info);
        let make = || {
            metrics
                .in_flight
                .get_or_create(&RoleLabels { role })
                .clone()
        };
        let in_flight = match ROLES.iter().position(|r| *r == role) {
            Some(i) => metrics.in_flight_by_role[i].get_or_init(make).clone(),
            None => make(),
        };
        in_flight.inc();
        let in_flight_guard = GaugeGuard(in_flight);
        let started = Instant::now();
        let response = self.inner.call(req);
        Box::pin(async move {
            let Ok(response) = response.await;
            let status = response.status().as_u16();
            let series = metrics.series(role, &verb, candidate, status);
            series.codes[code_index(status)]
                .get_or_init(|| {
                    metrics
                        .requests
                        .get_or_create(&RequestLabels {
                            role,
                            verb: series.verb.clone(),
                            resource: series.resource.clone(),
                            code: code_class(status),
                        })
                        .clone()
                })
                .inc();
            if verb == "watch" && status < 300 {
                let watches = metrics.watches.get_or_create(&RoleLabels { role }).clone();
                watches.inc();
                let guards = (in_flight_guard, GaugeGuard(watches));
                return Ok(crate::layers::Guarded::attach(response, guards));
            }
            series
                .latency
                .get_or_init(|| {
                    metrics
                        .latency
                        .get_or_create(&LatencyLabels {
                            role: series.role,
                            verb: series.verb.clone(),
                            resource: series.resource.clone(),
                        })
                        .clone()
                })
                .observe(started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn resource_labels_stay_bounded() {
        let m = Metrics::default();
        for i in 0..(MAX_RESOURCES + 50) {
            let info = RequestInfo::parse(
                &Method::GET,
                &format!("/clusters/c/apis/g.io/v1/r{i}"),
                None,
            );
            m.resource_label(&info, 200);
        }
        let extra = RequestInfo::parse(&Method::GET, "/clusters/c/apis/g.io/v1/late", None);
        assert_eq!(m.resource_label(&extra, 200), "other");
        let missing = RequestInfo::parse(&Method::GET, "/clusters/c/apis/g.io/v1/r1", None);
        assert_eq!(m.resource_label(&missing, 404), "other");
    }

    #[test]
    fn an_identity_based_resource_is_one_label_value_whatever_its_identity() {
        assert_eq!(
            resource_label_of("wildwest.dev", "sheriffs:aaaa1111"),
            "wildwest.dev/sheriffs"
        );
        assert_eq!(
            resource_label_of("wildwest.dev", "sheriffs:bbbb2222"),
            "wildwest.dev/sheriffs"
        );
        assert_eq!(resource_label_of("", "configmaps"), "core/configmaps");
    }

    #[test]
    fn the_exposition_names_requests_by_role_verb_resource_and_code_class() {
        let m = Metrics::default();
        m.requests
            .get_or_create(&RequestLabels {
                role: "virtual-workspace",
                verb: "list".into(),
                resource: "cloud.example.com/cpuflavors".into(),
                code: "2xx",
            })
            .inc();
        let text = m.render(&Snapshot::default());
        assert!(
            text.contains(
                "replication_vw_requests_total{role=\"virtual-workspace\",verb=\"list\",resource=\"cloud.example.com/cpuflavors\",code=\"2xx\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("replication_vw_invalid_objects_total 0"),
            "{text}"
        );
    }
}
