//! The local shard's controllers, in process: level-triggered and idempotent, each pass reads
//! the whole state of the workspaces and brings the world in line with it.
//!
//! - [`cachedresources`]: CachedResource finalizer, schema check, identity, default endpoint
//!   slice, counts, replication of the selected source objects into CachedObjects, deletion
//!   with purge (`kcp-reference.md` §1.7, §2.3–§2.7).
//! - [`apis`]: APIExport identities, APIBinding status and the consumers' resource-bindings
//!   annotation, CachedResourceEndpointSlice conditions and this server's endpoint URL (§3, §4).
//! - [`replicate`]: the generic replication of kcp API objects into the cache server (§8.6).
//! - [`global`]: what the shard reads of other shards through the cache (paths, exports,
//!   schemas, their bindings and virtual workspace URLs) and its own Shard object there.
//!
//! [`Controllers::run`] watches the local store and runs a pass after every batch of changes;
//! [`Controllers::settle`] runs passes until one changes nothing (used at start-up, after the
//! seed). Restart-safe: nothing is remembered between passes but what is stored.

pub mod apis;
pub mod cachedresources;
pub mod global;
pub mod replicate;
pub mod slices;

use crate::workspaces::objects::{Part, Workspaces, WsError};
use crate::workspaces::registry::Kind;
use base64::Engine;
use cache_client::CacheWrite;
use futures_util::StreamExt;
use kcp_model::naming::cached_object_name;
use kcp_model::types::*;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use store::StoreError;

/// A pass runs at least this often, changes or not (level-triggered resync).
pub const RESYNC: std::time::Duration = std::time::Duration::from_secs(30);

/// Errors of a controller pass.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A workspace write failed.
    #[error(transparent)]
    Workspace(#[from] WsError),
    /// A cache write failed.
    #[error("cache: {0}")]
    Cache(String),
    /// A store read failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<cache_client::CacheError> for ControllerError {
    fn from(e: cache_client::CacheError) -> Self {
        ControllerError::Cache(e.to_string())
    }
}

/// The controllers of the local shard.
pub struct Controllers {
    /// The workspaces (local shard).
    pub ws: Arc<Workspaces>,
    /// The cache server, as the shard writes to it (in process or over HTTPS).
    pub cache: Arc<dyn CacheWrite>,
    /// This shard's name (`kcp.io/shard`, cache URL shard).
    pub shard: String,
    /// This server's virtual workspace URL (endpoint URLs are built from it).
    pub vw_url: String,
    passes: AtomicU64,
    /// What passes read of each source object and CachedObject, by key and revision, so an
    /// unchanged record is not decoded again.
    pub(crate) seen: parking_lot::Mutex<std::collections::HashMap<Arc<store::Key>, Seen>>,
    writes: AtomicU64,
    last_pass_micros: AtomicU64,
    settled: AtomicBool,
    notify: tokio::sync::Notify,
    /// Wakes [`Controllers::run`] for a pass now (e.g. the cache restarted empty).
    wake: tokio::sync::Notify,
}

/// What a pass read of one record at one revision.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The record's revision.
    pub revision: u64,
    /// The pass that last looked at it.
    pub pass: u64,
    /// Its labels (a CachedObject's wrapper labels).
    pub labels: Arc<BTreeMap<String, String>>,
    /// A CachedObject's inner resourceVersion ("" for source objects).
    pub inner_rv: Arc<str>,
}

/// What one pass changed.
#[derive(Debug, Default)]
pub struct Pass {
    /// Writes made (local or cache).
    pub writes: usize,
}

impl Pass {
    /// Count a write.
    pub fn wrote(&mut self) {
        self.writes += 1;
    }
}

impl Controllers {
    /// Controllers over `ws`, replicating into `cache` as `shard`, publishing `vw_url`.
    pub fn new(ws: Arc<Workspaces>, cache: Arc<dyn CacheWrite>, shard: &str, vw_url: &str) -> Self {
        Controllers {
            ws,
            cache,
            shard: shard.to_string(),
            vw_url: vw_url.to_string(),
            passes: AtomicU64::new(0),
            seen: parking_lot::Mutex::new(std::collections::HashMap::new()),
            writes: AtomicU64::new(0),
            last_pass_micros: AtomicU64::new(0),
            settled: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Passes run so far.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Writes made by all passes so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Duration of the last pass.
    pub fn last_pass(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.last_pass_micros.load(Ordering::Relaxed))
    }

    /// Whether the last pass changed nothing.
    pub fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// One pass of every controller.
    pub async fn pass(&self) -> Result<Pass, ControllerError> {
        let started = std::time::Instant::now();
        let mut pass = Pass::default();
        apis::exports(self, &mut pass).await?;
        cachedresources::reconcile_all(self, &mut pass).await?;
        apis::bindings(self, &mut pass).await?;
        apis::endpoint_slices(self, &mut pass).await?;
        slices::reconcile_all(self, &mut pass).await?;
        apis::collect_garbage(self, &mut pass).await?;
        replicate::all(self, &mut pass).await?;
        global::publish_shard(self, &mut pass).await?;
        let number = self.passes.fetch_add(1, Ordering::Relaxed);
        // Forget records no pass has looked at for a while (deleted ones).
        self.seen.lock().retain(|_, s| s.pass + 2 >= number);
        self.writes.fetch_add(pass.writes as u64, Ordering::Relaxed);
        self.last_pass_micros
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        tracing::debug!(writes = pass.writes, elapsed = ?started.elapsed(), "Controller pass.");
        self.settled.store(pass.writes == 0, Ordering::Release);
        self.notify.notify_waiters();
        Ok(pass)
    }

    /// Run passes until one makes no write (at most `max` passes).
    pub async fn settle(&self, max: usize) -> Result<usize, ControllerError> {
        for i in 0..max {
            if self.pass().await?.writes == 0 {
                return Ok(i + 1);
            }
        }
        Ok(max)
    }

    /// Ask [`Controllers::run`] for a pass now, changes or not.
    pub fn trigger(&self) {
        self.wake.notify_one();
    }

    /// Watch the local store and run a pass after every batch of changes (or a
    /// [`Controllers::trigger`]), forever. A failed pass (a cache server that is down) is retried
    /// with capped exponential back-off and jitter until one succeeds.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = cache_client::Backoff::new(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(10),
        );
        let mut failing = false;
        loop {
            let from = match self.ws.store.revision().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "Controllers cannot read the store revision.");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "A controller pass failed; retrying.");
                failing = true;
            }
            let mut stream = match self.ws.store.watch(store::Scope::all(), from).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "Controllers cannot watch the store; relisting.");
                    continue;
                }
            };
            loop {
                // Wait for a change (or the periodic resync), then take every change already
                // queued as one batch.
                let wait = if failing {
                    backoff.next_delay()
                } else {
                    RESYNC
                };
                tokio::select! {
                    next = stream.next() => match next {
                        None | Some(Err(_)) => break,
                        Some(Ok(_)) => {}
                    },
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                while let Some(Some(next)) = futures_util::FutureExt::now_or_never(stream.next()) {
                    if next.is_err() {
                        break;
                    }
                }
                match self.pass().await {
                    Ok(_) => {
                        if failing {
                            tracing::info!("Controller passes succeed again.");
                        }
                        failing = false;
                        backoff.reset();
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "A controller pass failed; retrying with back-off.");
                        }
                        failing = true;
                    }
                }
            }
        }
    }

    /// Wait until a pass that started after this call changed nothing.
    pub async fn wait_settled(&self) {
        let start = self.passes();
        loop {
            let notified = self.notify.notified();
            if self.passes() > start && self.is_settled() {
                return;
            }
            notified.await;
        }
    }

    /// The built-in kind of a group/resource (every workspace serves them).
    pub fn kind(&self, group: &str, resource: &str) -> Result<Kind, ControllerError> {
        self.ws
            .builtin(group, resource)
            .cloned()
            .ok_or(ControllerError::Workspace(WsError::UnknownResource))
    }

    /// Write the status of an object when it differs from `old`'s.
    pub async fn write_status(
        &self,
        kind: &Kind,
        cluster: &str,
        old: &Value,
        status: Value,
        pass: &mut Pass,
    ) -> Result<(), ControllerError> {
        if old.get("status") == Some(&status) {
            return Ok(());
        }
        let mut new = old.clone();
        if let Some(o) = new.as_object_mut() {
            o.insert("status".into(), status);
        }
        let name = str_at(old, "/metadata/name").to_string();
        let ns = str_at(old, "/metadata/namespace").to_string();
        match self
            .ws
            .update(kind, cluster, &ns, &name, new, Part::Status)
            .await
        {
            Ok(_) => {
                pass.wrote();
                Ok(())
            }
            // Someone wrote in between: the next pass sees the newer state.
            Err(WsError::Conflict { .. }) | Err(WsError::NotFound { .. }) => {
                pass.wrote();
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A string at a JSON pointer ("" when absent).
pub fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// An object's labels.
pub fn labels(v: &Value) -> BTreeMap<String, String> {
    kube_api::labels_of(v)
}

/// `spec.labelSelector.matchLabels` (matchExpressions are ignored, as kcp does).
pub fn match_labels(cr: &Value) -> BTreeMap<String, String> {
    cr.pointer("/spec/labelSelector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Set one kcp condition, keeping `lastTransitionTime` when the status does not change.
pub fn set_condition(
    conditions: &mut Vec<Value>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
) {
    let status = if ok { "True" } else { "False" };
    let previous = conditions
        .iter()
        .find(|c| str_at(c, "/type") == type_)
        .cloned();
    let time = match &previous {
        Some(p) if str_at(p, "/status") == status => str_at(p, "/lastTransitionTime").to_string(),
        _ => kube_api::now_rfc3339(),
    };
    let mut c = json!({"type": type_, "status": status, "lastTransitionTime": time});
    if !ok {
        c["severity"] = json!("Error");
    }
    if !reason.is_empty() {
        c["reason"] = json!(reason);
    }
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    conditions.retain(|c| str_at(c, "/type") != type_);
    conditions.push(c);
    conditions.sort_by(|a, b| str_at(a, "/type").cmp(str_at(b, "/type")));
}

/// The conditions of an object's status.
pub fn conditions_of(v: &Value) -> Vec<Value> {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The bytes of a Secret's `data.key` (`stringData` wins, as the API server merges it).
pub fn secret_key(secret: &Value) -> Option<Vec<u8>> {
    if let Some(s) = secret.pointer("/stringData/key").and_then(Value::as_str) {
        return Some(s.as_bytes().to_vec());
    }
    let b64 = secret.pointer("/data/key").and_then(Value::as_str)?;
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
}

/// A random identity key as kcp generates one: 32 random bytes, URL-safe base64, no padding.
pub fn random_identity_key() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Whether `labels` contain every `match_labels` pair.
pub fn selects(match_labels: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn annotations_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let md = kube_api::metadata_mut(obj.as_object_mut()?);
    Some(kube_api::child_map(md, "annotations"))
}

/// A group as CachedObject labels name it: `core` for the core group.
fn core_or(group: &str) -> &str {
    if group.is_empty() { "core" } else { group }
}

/// The `cache.kcp.io/object-schema` label value of a group, version and resource (§1.4).
pub fn object_schema(group: &str, version: &str, resource: &str) -> String {
    format!("{version}.{resource}.{}", core_or(group))
}

/// Wrap a source object into a CachedObject (§1.3–§1.5). `source` must carry uid and
/// resourceVersion.
pub fn wrap(source: &Value, group: &str, version: &str, resource: &str, shard: &str) -> Value {
    let ns = str_at(source, "/metadata/namespace");
    let name = str_at(source, "/metadata/name");
    let mut inner = source.clone();
    let uid = str_at(source, "/metadata/uid").to_string();
    let rv = str_at(source, "/metadata/resourceVersion").to_string();
    if let Some(a) = annotations_mut(&mut inner) {
        a.insert(ANN_SHARD.into(), json!(shard));
        a.insert(ANN_ORIGINAL_UID.into(), json!(uid));
        a.insert(ANN_ORIGINAL_RV.into(), json!(rv));
    }
    let g = core_or(group);
    let mut labels: Map<String, Value> = source
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in [
        (LABEL_OBJECT_SCHEMA, object_schema(group, version, resource)),
        (LABEL_OBJECT_GROUP, g.to_string()),
        (LABEL_OBJECT_VERSION, version.to_string()),
        (LABEL_OBJECT_RESOURCE, resource.to_string()),
        (LABEL_OBJECT_NAME, name.to_string()),
        (LABEL_OBJECT_NAMESPACE, ns.to_string()),
    ] {
        labels.insert(k.into(), json!(v));
    }
    let annotations = inner
        .pointer("/metadata/annotations")
        .cloned()
        .unwrap_or(json!({}));
    json!({
        "apiVersion": "cache.kcp.io/v1alpha1",
        "kind": "CachedObject",
        "metadata": {
            "name": cached_object_name(group, version, resource, ns, name),
            "creationTimestamp": kube_api::now_rfc3339(),
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {"raw": inner},
    })
}

/// The endpoint URL a server publishes for a CachedResource (§3.3).
pub fn endpoint_url(vw_url: &str, cr_cluster: &str, cr_name: &str) -> String {
    format!(
        "{}/services/replication/{cr_cluster}/{cr_name}",
        vw_url.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::memory::MemoryStore;

    /// A local shard with workspace `p` (root:p) holding a cluster-scoped CRD `things.g.io`.
    async fn world() -> Controllers {
        let ws = Arc::new(Workspaces::new(Arc::new(MemoryStore::default())));
        let cache = cache_server::local::LocalWrite(Arc::new(MemoryStore::default()));
        let c = Controllers::new(ws, Arc::new(cache), "root", "https://vw:1");
        for (cluster, path) in [("p", "root:p"), ("q", "root:q")] {
            let lc = c.kind("core.kcp.io", "logicalclusters").unwrap();
            c.ws.create(
                &lc,
                cluster,
                "",
                json!({"metadata": {"name": "cluster", "annotations": {"kcp.io/path": path}}}),
            )
            .await
            .unwrap();
        }
        let crd = c
            .kind("apiextensions.k8s.io", "customresourcedefinitions")
            .unwrap();
        c.ws.create(&crd, "p", "", json!({"metadata": {"name": "things.g.io"}, "spec": {"group": "g.io", "scope": "Cluster",
            "names": {"plural": "things", "kind": "Thing"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}))
            .await
            .unwrap();
        c
    }

    async fn cached_resource(c: &Controllers, annotations: Value) {
        let cr = c.kind("cache.kcp.io", "cachedresources").unwrap();
        c.ws.create(
            &cr,
            "p",
            "",
            json!({"metadata": {"name": "things", "annotations": annotations},
            "spec": {"group": "g.io", "version": "v1", "resource": "things"}}),
        )
        .await
        .unwrap();
    }

    async fn get(
        c: &Controllers,
        group: &str,
        resource: &str,
        cluster: &str,
        name: &str,
    ) -> Option<Value> {
        let k = c.kind(group, resource).unwrap();
        c.ws.get_value(&k, cluster, "", name)
            .await
            .unwrap()
            .map(|(v, _)| v)
    }

    fn condition(v: &Value, type_: &str) -> Value {
        conditions_of(v)
            .into_iter()
            .find(|c| str_at(c, "/type") == type_)
            .unwrap_or(Value::Null)
    }

    #[tokio::test]
    async fn a_cached_resource_without_a_secret_gets_a_generated_identity_and_its_default_slice() {
        let c = world().await;
        cached_resource(&c, json!({})).await;
        c.settle(10).await.unwrap();
        let cr = get(&c, "cache.kcp.io", "cachedresources", "p", "things")
            .await
            .unwrap();
        assert_eq!(
            cr["spec"]["identity"]["secretRef"],
            json!({"namespace": "kcp-system", "name": "things"})
        );
        assert_eq!(str_at(&cr, "/status/identityHash").len(), 64);
        assert_eq!(cr["status"]["phase"], "Ready");
        let slice = get(
            &c,
            "cache.kcp.io",
            "cachedresourceendpointslices",
            "p",
            "things",
        )
        .await
        .unwrap();
        assert_eq!(
            slice["spec"]["cachedResource"],
            json!({"path": "root:p", "name": "things"})
        );
        assert_eq!(
            slice["metadata"]["ownerReferences"][0]["uid"],
            cr["metadata"]["uid"]
        );
        assert!(
            slice["status"].get("endpoints").is_none(),
            "no consumer binds the export yet"
        );
    }

    #[tokio::test]
    async fn the_skip_annotation_keeps_the_default_slice_away() {
        let c = world().await;
        cached_resource(&c, json!({ANN_SKIP_ENDPOINTSLICE: ""})).await;
        c.settle(10).await.unwrap();
        assert!(
            get(
                &c,
                "cache.kcp.io",
                "cachedresourceendpointslices",
                "p",
                "things"
            )
            .await
            .is_none()
        );
    }

    #[tokio::test]
    async fn a_changed_identity_secret_is_a_hash_mismatch() {
        let c = world().await;
        cached_resource(&c, json!({})).await;
        c.settle(10).await.unwrap();
        let secret = c.kind("", "secrets").unwrap();
        c.ws.patch(
            &secret,
            "p",
            "kcp-system",
            "things",
            kube_api::patch::PatchType::Merge,
            br#"{"data":{"key":"b3RoZXI="}}"#,
            Part::Main,
            false,
        )
        .await
        .unwrap();
        c.settle(10).await.unwrap();
        let cr = get(&c, "cache.kcp.io", "cachedresources", "p", "things")
            .await
            .unwrap();
        let idv = condition(&cr, "IdentityValid");
        assert_eq!(idv["status"], "False");
        assert_eq!(idv["reason"], "IdentityVerificationFailed");
        assert!(
            str_at(&idv, "/message").starts_with("hash mismatch: identity secret hash \""),
            "{idv}"
        );
    }

    #[tokio::test]
    async fn slices_resolve_their_cached_resource_by_path_and_report_a_missing_one() {
        let c = world().await;
        cached_resource(&c, json!({})).await;
        let kind = c
            .kind("cache.kcp.io", "cachedresourceendpointslices")
            .unwrap();
        for (name, reference) in [
            ("external", json!({"path": "root:p", "name": "things"})),
            (
                "invalid",
                json!({"path": "root:p", "name": "nonexistent-cachedresource"}),
            ),
        ] {
            c.ws.create(
                &kind,
                "q",
                "",
                json!({"metadata": {"name": name}, "spec": {"cachedResource": reference}}),
            )
            .await
            .unwrap();
        }
        c.settle(10).await.unwrap();
        let ok = get(
            &c,
            "cache.kcp.io",
            "cachedresourceendpointslices",
            "q",
            "external",
        )
        .await
        .unwrap();
        assert_eq!(condition(&ok, "ResourceValid")["status"], "True");
        let bad = get(
            &c,
            "cache.kcp.io",
            "cachedresourceendpointslices",
            "q",
            "invalid",
        )
        .await
        .unwrap();
        let rv = condition(&bad, "ResourceValid");
        assert_eq!(rv["reason"], "CachedResourceNotFound");
        assert_eq!(
            rv["message"],
            "Error getting CachedResource root:p|nonexistent-cachedresource"
        );
    }

    #[tokio::test]
    async fn a_resource_that_turns_out_namespaced_is_reported_not_cluster_scoped() {
        let c = world().await;
        let cr = c.kind("cache.kcp.io", "cachedresources").unwrap();
        // The CRD does not exist at admission time, so only the controller can tell.
        c.ws.create(
            &cr,
            "p",
            "",
            json!({"metadata": {"name": "widgets"},
            "spec": {"group": "g.io", "version": "v1", "resource": "widgets"}}),
        )
        .await
        .unwrap();
        let crd = c
            .kind("apiextensions.k8s.io", "customresourcedefinitions")
            .unwrap();
        c.ws.create(&crd, "p", "", json!({"metadata": {"name": "widgets.g.io"}, "spec": {"group": "g.io", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true}]}}))
            .await
            .unwrap();
        c.settle(10).await.unwrap();
        let v = get(&c, "cache.kcp.io", "cachedresources", "p", "widgets")
            .await
            .unwrap();
        let rv = condition(&v, "ResourceValid");
        assert_eq!(rv["reason"], "ResourceNotClusterScoped");
        assert_eq!(rv["message"], "Resource widgets.g.io is not cluster-scoped");
    }

    #[tokio::test]
    async fn deleting_a_cached_resource_purges_its_copies_and_releases_the_finalizer() {
        let c = world().await;
        cached_resource(&c, json!({})).await;
        let thing = c.ws.find("p", "g.io", "v1", "things").await.unwrap();
        c.ws.create(&thing, "p", "", json!({"metadata": {"name": "t1"}}))
            .await
            .unwrap();
        c.settle(10).await.unwrap();
        let copies = |c: &Controllers| {
            let cache = c.cache.clone();
            async move {
                cache
                    .list(cache_client::Collection {
                        group: "cache.kcp.io",
                        version: "v1alpha1",
                        resource: "cachedobjects",
                        shard: None,
                        cluster: None,
                    })
                    .await
                    .unwrap()
                    .len()
            }
        };
        assert_eq!(copies(&c).await, 1);
        let cr = c.kind("cache.kcp.io", "cachedresources").unwrap();
        let d =
            c.ws.delete(&cr, "p", "", "things", (None, None))
                .await
                .unwrap();
        assert!(!d.gone, "the finalizer holds it");
        c.settle(10).await.unwrap();
        assert_eq!(copies(&c).await, 0);
        assert!(
            get(&c, "cache.kcp.io", "cachedresources", "p", "things")
                .await
                .is_none()
        );
        assert!(
            get(
                &c,
                "cache.kcp.io",
                "cachedresourceendpointslices",
                "p",
                "things"
            )
            .await
            .is_none(),
            "owner-reference GC"
        );
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut cs = vec![
            json!({"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}),
        ];
        set_condition(&mut cs, "Ready", true, "", "");
        assert_eq!(cs[0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        set_condition(&mut cs, "Ready", false, "Broken", "it broke");
        assert_ne!(cs[0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_eq!(cs[0]["severity"], "Error");
        set_condition(&mut cs, "Alpha", true, "", "");
        assert_eq!(cs[0]["type"], "Alpha", "conditions are kept sorted by type");
    }

    #[test]
    fn endpoint_urls_join_without_double_slashes() {
        assert_eq!(
            endpoint_url("https://h:1/", "c1", "cr"),
            "https://h:1/services/replication/c1/cr"
        );
    }

    #[test]
    fn identity_keys_are_43_url_safe_characters() {
        let k = random_identity_key();
        assert_eq!(k.len(), 43);
        assert!(
            k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
}
