//! The virtual workspace's in-memory index: an informer over the whole cache store that keeps
//! the catalog (CachedResources, APIExports, APIResourceSchemas, APIBindings, LogicalClusters,
//! RBAC) and, per CachedResource, the served objects as validated, unwrapped JSON bytes.
//!
//! Every CachedObject is decoded, unwrapped (`kcp-reference.md` §5.5) and validated against the
//! APIResourceSchema version it is served with exactly once, when it enters the index. The
//! served JSON is kept as pieces (`pieces`) around the value of its `kcp.io/cluster` annotation,
//! mostly slices of the stored value, so a copy for consumer X is written with no re-encoding.
//! Each CachedResource keeps a bounded history of served events so watches resume from recent
//! revisions; older ones are answered `410 Gone`. Objects that fail to unwrap or validate are not served, counted, and
//! logged once with their key.

use bytes::{BufMut, Bytes, BytesMut};
use cache_client::CacheRead;
use futures_util::StreamExt;
use kcp_model::types::*;
use kube_api::rbac::{ClusterRole, ClusterRoleBinding};
use kube_api::watch::EventType;
use parking_lot::RwLock;
use rest::printing::{self as table, TableParts};
use schema::structural::Structural as Validator;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use store::{Event, EventKind, Key, Listing, Record, StoreError};
use tokio::sync::broadcast;

use super::memo::{self, Memo};
use super::pieces::{self, Pieces};
pub use super::resolved::{ObjKey, ResolvedApi, Source};
use super::slices::{Domain, IdentityObjectKey, IdentityResource, IdentityResourceKey};

/// Served events kept per CachedResource for watch resume.
const HISTORY_PER_RESOURCE: usize = 10_000;
/// Broadcast buffer per CachedResource; a watcher further behind catches up from history.
const BROADCAST_CAPACITY: usize = 1024;

/// How often the validation memo is written again while changes arrive.
pub const MEMO_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// A served object's namespace and name, as the served maps key it (the strings are the
/// object's own).
pub type NameKey = (Arc<str>, Arc<str>);

/// `namespace` as a shared string; every cluster-scoped object shares one empty one.
fn shared_namespace(namespace: String) -> Arc<str> {
    static EMPTY: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    if namespace.is_empty() {
        EMPTY.clone()
    } else {
        Arc::from(namespace)
    }
}

/// One served object: unwrapped, validated JSON as [`Pieces`] around its `kcp.io/cluster` value.
///
/// When the schema changed nothing (no field pruned, no default applied) and the stored object
/// lists `apiVersion`, `kind` and `metadata` before its other members (as Kubernetes and kcp
/// encode objects), the served text is pieces of the stored value itself, which the store holds
/// anyway, with the few members the virtual workspace rewrites (the cluster annotation, `uid`,
/// `resourceVersion`) put in between: the served object and its stored value do not each keep a
/// copy of the same bytes. Otherwise the object is encoded anew.
#[derive(Debug)]
pub struct ServedObject {
    /// Namespace ("" when cluster-scoped); shared with the key the served maps file it under.
    pub namespace: Arc<str>,
    /// Name; shared likewise.
    pub name: Arc<str>,
    /// Cache store revision (the served `resourceVersion`).
    pub revision: u64,
    /// Labels of the inner object.
    pub labels: kube_api::selector::Labels,
    /// Values of the schema's selectable fields, as field selectors compare them (each name
    /// one allocation shared by the objects of the resource).
    pub fields: Box<[(Arc<str>, Box<str>)]>,
    /// The served text, without the cluster literal (and the revision, when served from the
    /// stored text).
    text: Pieces,
    /// Table cells and metadata view, computed on first use (boxed: most objects never need
    /// them, and the slot stays one pointer wide).
    table: std::sync::OnceLock<Box<TableParts>>,
    /// The validation memo's digest of the stored text this object was served from, when it was
    /// validated (or vouched for by the memo), served from its stored text, and the index keeps
    /// a memo.
    digest: Option<memo::Digest>,
}

impl ServedObject {
    /// Write the object for consumer `cluster_json` (a JSON string literal, quotes included).
    pub fn write(&self, cluster_json: &[u8], out: &mut impl BufMut) {
        self.text.write(cluster_json, self.revision, out);
    }

    /// A watch event line of `kind` with the object for consumer `cluster_json`.
    pub fn frame(&self, kind: EventType, cluster_json: &[u8]) -> Bytes {
        kube_api::watch::frame_with(kind, self.len_for(cluster_json.len()), |buf| {
            self.write(cluster_json, buf)
        })
    }

    /// The object as served to `cluster`.
    pub fn json_for(&self, cluster: &str) -> Bytes {
        let c = cluster_literal(cluster);
        let mut b = BytesMut::with_capacity(self.len_for(c.len()));
        self.write(&c, &mut b);
        b.freeze()
    }

    /// The same object stamped with another revision (a deletion's): its
    /// `metadata.resourceVersion` written from the new revision, or, for an object encoded
    /// anew, set in the re-read object; unchanged if that fails.
    pub fn with_revision(&self, revision: u64) -> ServedObject {
        let text = if self.text.has_revision() {
            self.text.clone()
        } else {
            self.restamped(revision)
                .unwrap_or_else(|| self.text.clone())
        };
        ServedObject {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            revision,
            labels: self.labels.clone(),
            fields: self.fields.clone(),
            text,
            table: std::sync::OnceLock::new(),
            digest: None,
        }
    }

    /// The object re-read with `metadata.resourceVersion` set to `revision`, encoded anew.
    fn restamped(&self, revision: u64) -> Option<Pieces> {
        let mut obj: Value = serde_json::from_slice(&self.json_for(&self.placeholder())).ok()?;
        *obj.pointer_mut("/metadata/resourceVersion")? = Value::String(revision.to_string());
        *obj.pointer_mut(&cluster_pointer())? = Value::String(PLACEHOLDER.into());
        split_at_cluster(&mut obj, self.len_for(0)).ok()
    }

    /// A consumer cluster name found nowhere in the object's own bytes: [`PLACEHOLDER`], or a
    /// run of `_` longer than those bytes when they hold the placeholder.
    fn placeholder(&self) -> Cow<'static, str> {
        let mut whole = BytesMut::with_capacity(self.len_for(0));
        self.write(b"", &mut whole);
        if find(&whole, PLACEHOLDER.as_bytes()).is_some() {
            Cow::Owned("_".repeat(whole.len() + 1))
        } else {
            Cow::Borrowed(PLACEHOLDER)
        }
    }

    /// The object's Table cells (for `columns`) and PartialObjectMetadata view, computed once.
    pub fn table_parts(&self, columns: &[PrinterColumn]) -> &TableParts {
        self.table.get_or_init(|| {
            let placeholder = self.placeholder();
            let whole = self.json_for(&placeholder);
            let obj: Value = serde_json::from_slice(&whole).unwrap_or(Value::Null);
            Box::new(table::parts_for(&obj, columns, &placeholder))
        })
    }

    /// The PartialObjectMetadata of the object for one consumer literal, in pieces.
    pub fn metadata_parts<'a>(
        &'a self,
        columns: &[PrinterColumn],
        cluster_json: &'a [u8],
    ) -> [&'a [u8]; 3] {
        let t = self.table_parts(columns);
        [&t.meta_prefix, cluster_json, &t.meta_suffix]
    }

    /// The validation memo's digest of the text it was served from, when noted.
    pub fn digest(&self) -> Option<memo::Digest> {
        self.digest
    }

    /// The key the served maps file this object under: its namespace and name, shared.
    pub fn name_key(&self) -> NameKey {
        (self.namespace.clone(), self.name.clone())
    }

    /// Size of one copy in bytes.
    pub fn len_for(&self, cluster_json_len: usize) -> usize {
        self.text.len(cluster_json_len, self.revision)
    }

    /// Whether both serve the same bytes at the same revision.
    fn same_as(&self, other: &ServedObject) -> bool {
        self.revision == other.revision && self.text.chunks().eq(other.text.chunks())
    }

    /// The buffer the served text slices (the stored value, when served from it).
    #[cfg(test)]
    fn buffer(&self) -> &Bytes {
        self.text.buffer()
    }

    /// Whether the served text is pieces of its stored value.
    #[cfg(test)]
    fn served_from_stored(&self) -> bool {
        self.text.has_revision()
    }
}

/// A cluster name as a JSON string literal.
pub fn cluster_literal(cluster: &str) -> Vec<u8> {
    // invariant: serializing a &str cannot fail.
    serde_json::to_vec(cluster).expect("invariant: a string serializes")
}

/// What happened to a served object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It appeared.
    Added,
    /// It changed.
    Modified,
    /// It is gone; `object` is its last state.
    Deleted,
}

/// One served event.
#[derive(Debug)]
pub struct ServedEvent {
    /// Position in this resource's event sequence (several events may share a revision, e.g.
    /// after a relist or a schema change; watchers order and deduplicate by this).
    pub seq: u64,
    /// Revision.
    pub revision: u64,
    /// Change.
    pub change: Change,
    /// New (or last) state.
    pub object: Arc<ServedObject>,
    /// Previous state for modifications and deletions.
    pub prev: Option<Arc<ServedObject>>,
    /// Consumer clusters at the time of the event (for a membership event: the clusters that
    /// bound or unbound).
    pub consumers: Arc<BTreeSet<String>>,
    /// The object did not change; consumers bound (ADDED) or unbound (DELETED) it.
    pub membership: bool,
    /// Encoded frames by (event type, consumer literal): each is built once for all watchers.
    frames: parking_lot::Mutex<HashMap<FrameKey, Bytes>>,
}

/// (event type, consumer literal, view) of a memoized frame.
type FrameKey = (EventType, Vec<u8>, u8);

impl ServedEvent {
    /// An event of an object change (sequence number assigned when pushed).
    pub fn new(
        revision: u64,
        change: Change,
        object: Arc<ServedObject>,
        prev: Option<Arc<ServedObject>>,
        consumers: Arc<BTreeSet<String>>,
    ) -> Self {
        ServedEvent {
            seq: 0,
            revision,
            change,
            object,
            prev,
            consumers,
            membership: false,
            frames: Default::default(),
        }
    }

    /// The watch frame of this event for one consumer (a JSON string literal), encoded once
    /// and shared by every watcher that sends it.
    pub fn frame(&self, kind: EventType, cluster: &[u8]) -> Bytes {
        self.memo(kind, cluster, 0, || self.object.frame(kind, cluster))
    }

    /// A frame of this event in some view (`view` distinguishes representations), built once
    /// by `build` and shared by every watcher asking for the same one.
    pub fn memo(
        &self,
        kind: EventType,
        cluster: &[u8],
        view: u8,
        build: impl FnOnce() -> Bytes,
    ) -> Bytes {
        let key = (kind, cluster.to_vec(), view);
        if let Some(b) = self.frames.lock().get(&key) {
            return b.clone();
        }
        let b = build();
        self.frames.lock().insert(key, b.clone());
        b
    }
}

/// The served state of one URL domain (a CachedResource's or a slice's).
pub struct Served {
    /// What the domain is keyed by.
    pub domain: Domain,
    /// The resolved API or the resolution error message (§5.4).
    pub api: Result<Arc<ResolvedApi>, String>,
    /// Served objects by (namespace, name).
    pub objects: BTreeMap<NameKey, Arc<ServedObject>>,
    /// Consumer clusters (§5.8).
    pub consumers: Arc<BTreeSet<String>>,
    /// CachedObject (or identity object) name -> the object it serves.
    by_origin: OriginIndex,
    /// The same objects as `objects`, found by the hash of (namespace, name).
    by_name: NameIndex,
    history: VecDeque<Arc<ServedEvent>>,
    /// Events at or before this revision are no longer in `history`.
    compacted: u64,
    /// Events with a sequence number up to this one are no longer in `history`.
    compacted_seq: u64,
    next_seq: u64,
    tx: broadcast::Sender<Arc<ServedEvent>>,
}

/// Served objects found by the hash of their (namespace, name): a GET's lookup without the
/// B-tree's walk, whose dozens of name comparisons each follow pointers into the heap (the
/// largest part of the GET handler's time in the profile). Holds one pointer per object; the
/// names are the objects' own.
#[derive(Default)]
struct NameIndex {
    table: hashbrown::HashTable<Arc<ServedObject>>,
    hasher: std::hash::RandomState,
}

/// Served objects by the name of the object each came from (a CachedObject's, or an identity
/// object's), filed under a 128-bit keyed hash of that name instead of a copy of it: at a
/// million objects the copies were about 100 B an object. Two names with the same 128-bit hash
/// under the index's random keys (SipHash) are not a case to handle: about one chance in 10^26
/// at a million names.
#[derive(Default)]
struct OriginIndex {
    table: hashbrown::HashTable<(u128, Arc<ServedObject>)>,
    keys: (std::hash::RandomState, std::hash::RandomState),
}

impl OriginIndex {
    /// The 128-bit hash an origin is filed under.
    fn id(&self, origin: &str) -> u128 {
        (u128::from(self.keys.0.hash_one(origin)) << 64) | u128::from(self.keys.1.hash_one(origin))
    }

    /// Room for `n` more objects.
    fn reserve(&mut self, n: usize) {
        self.table.reserve(n, |(i, _)| *i as u64);
    }

    /// File `object` under `origin`, replacing what was there.
    fn insert(&mut self, origin: &str, object: Arc<ServedObject>) {
        self.insert_id(self.id(origin), object);
    }

    /// File `object` under the origin whose [`OriginIndex::id`] is `id`, replacing what was
    /// there.
    fn insert_id(&mut self, id: u128, object: Arc<ServedObject>) {
        match self.table.find_mut(id as u64, |(i, _)| *i == id) {
            Some(slot) => slot.1 = object,
            None => {
                self.table
                    .insert_unique(id as u64, (id, object), |(i, _)| *i as u64);
            }
        }
    }

    /// Take out the object filed under `origin`.
    fn remove(&mut self, origin: &str) -> Option<Arc<ServedObject>> {
        let id = self.id(origin);
        self.table
            .find_entry(id as u64, |(i, _)| *i == id)
            .ok()
            .map(|e| e.remove().0.1)
    }
}

/// The hash [`NameIndex`] files an object under.
fn name_hash(hasher: &std::hash::RandomState, o: &ServedObject) -> u64 {
    hasher.hash_one((&*o.namespace, &*o.name))
}

impl NameIndex {
    /// An empty index with room for `n` objects.
    fn with_capacity(n: usize) -> NameIndex {
        NameIndex {
            table: hashbrown::HashTable::with_capacity(n),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn hash(&self, namespace: &str, name: &str) -> u64 {
        self.hasher.hash_one((namespace, name))
    }

    fn get(&self, namespace: &str, name: &str) -> Option<&Arc<ServedObject>> {
        self.table.find(self.hash(namespace, name), |o| {
            *o.namespace == *namespace && *o.name == *name
        })
    }

    fn insert(&mut self, object: Arc<ServedObject>) {
        let hasher = &self.hasher;
        match self.table.entry(
            name_hash(hasher, &object),
            |o| o.namespace == object.namespace && o.name == object.name,
            |o| name_hash(hasher, o),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = object,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(object);
            }
        }
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        let hash = self.hash(namespace, name);
        if let Ok(e) = self
            .table
            .find_entry(hash, |o| *o.namespace == *namespace && *o.name == *name)
        {
            e.remove();
        }
    }
}

impl Served {
    /// The served object `name` in `namespace` ("" when cluster-scoped).
    pub fn object(&self, namespace: &str, name: &str) -> Option<&Arc<ServedObject>> {
        self.by_name.get(namespace, name)
    }

    /// The served objects as they were at `revision`, rebuilt by undoing later events, or
    /// `Err(oldest)` when history no longer reaches back that far.
    pub fn snapshot_at(&self, revision: u64) -> Result<BTreeMap<NameKey, Arc<ServedObject>>, u64> {
        if revision < self.compacted {
            return Err(self.compacted);
        }
        let mut objects = self.objects.clone();
        for ev in self
            .history
            .iter()
            .rev()
            .take_while(|e| e.revision > revision)
            .filter(|e| !e.membership)
        {
            let key = ev.object.name_key();
            match (ev.change, &ev.prev) {
                (Change::Added, _) => {
                    objects.remove(&key);
                }
                (Change::Modified | Change::Deleted, Some(prev)) => {
                    objects.insert(key, prev.clone());
                }
                (Change::Modified | Change::Deleted, None) => {
                    objects.remove(&key);
                }
            }
        }
        Ok(objects)
    }

    /// Events after `after`, or `Err(oldest)` when history no longer reaches back that far.
    pub fn events_after(&self, after: u64) -> Result<Vec<Arc<ServedEvent>>, u64> {
        if after < self.compacted {
            return Err(self.compacted);
        }
        let start = self.history.partition_point(|e| e.revision <= after);
        Ok(self.history.range(start..).cloned().collect())
    }

    /// Events after sequence number `seq`, or `Err(oldest revision)` when compacted away.
    pub fn events_after_seq(&self, seq: u64) -> Result<Vec<Arc<ServedEvent>>, u64> {
        if seq < self.compacted_seq {
            return Err(self.compacted);
        }
        let start = self.history.partition_point(|e| e.seq <= seq);
        Ok(self.history.range(start..).cloned().collect())
    }

    /// The sequence number of the latest event (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// A receiver of future events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ServedEvent>> {
        self.tx.subscribe()
    }

    /// Consumers that bind see every object appear (ADDED), those that unbind see them go
    /// (DELETED); the objects themselves did not change.
    fn push_membership(
        &mut self,
        revision: u64,
        before: &BTreeSet<String>,
        consumers: &BTreeSet<String>,
    ) {
        let added: BTreeSet<String> = consumers.difference(before).cloned().collect();
        let removed: BTreeSet<String> = before.difference(consumers).cloned().collect();
        if added.is_empty() && removed.is_empty() {
            return;
        }
        let (added, removed) = (Arc::new(added), Arc::new(removed));
        let objects: Vec<Arc<ServedObject>> = self.objects.values().cloned().collect();
        for o in objects {
            if !added.is_empty() {
                let mut ev =
                    ServedEvent::new(revision, Change::Added, o.clone(), None, added.clone());
                ev.membership = true;
                self.push(ev);
            }
            if !removed.is_empty() {
                let gone = Arc::new(o.with_revision(revision));
                let mut ev =
                    ServedEvent::new(revision, Change::Deleted, gone, Some(o), removed.clone());
                ev.membership = true;
                self.push(ev);
            }
        }
    }

    /// Replace the object that came from `origin` with `new` (none: it is gone) and emit the
    /// event watchers see.
    fn replace_origin(&mut self, origin: &str, new: Option<Arc<ServedObject>>, revision: u64) {
        let consumers = self.consumers.clone();
        let prev = self.by_origin.remove(origin).and_then(|o| {
            self.by_name.remove(&o.namespace, &o.name);
            self.objects.remove(&o.name_key())
        });
        match (prev, new) {
            (None, None) => {}
            (Some(p), None) => self.push(ServedEvent::new(
                revision,
                Change::Deleted,
                Arc::new(p.with_revision(revision)),
                Some(p),
                consumers,
            )),
            (prev, Some(n)) => {
                let k = n.name_key();
                self.by_origin.insert(origin, n.clone());
                self.objects.insert(k, n.clone());
                self.by_name.insert(n.clone());
                let change = if prev.is_some() {
                    Change::Modified
                } else {
                    Change::Added
                };
                self.push(ServedEvent::new(revision, change, n, prev, consumers));
            }
        }
    }

    fn push(&mut self, mut event: ServedEvent) {
        event.seq = self.next_seq;
        self.next_seq += 1;
        let event = Arc::new(event);
        self.history.push_back(event.clone());
        while self.history.len() > HISTORY_PER_RESOURCE {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.revision;
                self.compacted_seq = old.seq;
            }
        }
        let _ = self.tx.send(event);
    }
}

struct RawCached {
    revision: u64,
    value: Bytes,
    /// Shared by the CachedObjects of one resource (see [`shared_gvr`]).
    gvr: Arc<Gvr>,
}

/// The group, version and resource a CachedObject's labels name.
#[derive(Debug, Default, PartialEq, Eq)]
struct Gvr {
    group: String,
    version: String,
    resource: String,
}

thread_local! {
    static LAST_GVR: std::cell::RefCell<Arc<Gvr>> = std::cell::RefCell::default();
}

/// `gvr`, as the same allocation as the previous call's on this thread when equal: a listing
/// holds the CachedObjects of one resource next to each other, so a million of them share a
/// handful of these instead of holding three strings each.
fn shared_gvr(gvr: Gvr) -> Arc<Gvr> {
    LAST_GVR.with(|last| {
        let mut last = last.borrow_mut();
        if **last != gvr {
            *last = Arc::new(gvr);
        }
        last.clone()
    })
}

thread_local! {
    static NAMES: std::cell::RefCell<Vec<Arc<str>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `name` as the same allocation as earlier calls' on this thread (selectable field names are
/// few and repeat for every object of a resource); at most 64 are remembered.
fn shared_name(name: &str) -> Arc<str> {
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(found) = names.iter().find(|n| &***n == name) {
            return found.clone();
        }
        if names.len() >= 64 {
            names.clear();
        }
        let new: Arc<str> = Arc::from(name);
        names.push(new.clone());
        new
    })
}

/// The catalog and the served objects.
#[derive(Default)]
pub struct State {
    /// Last store revision applied.
    pub revision: u64,
    /// CachedResources.
    pub cached_resources: BTreeMap<ObjKey, (u64, Arc<CachedResource>)>,
    /// APIExports.
    pub exports: BTreeMap<ObjKey, (u64, Arc<ApiExport>)>,
    /// APIResourceSchemas.
    pub schemas: BTreeMap<ObjKey, (u64, Arc<ApiResourceSchema>)>,
    /// APIBindings.
    pub bindings: BTreeMap<ObjKey, Arc<ApiBinding>>,
    /// LogicalClusters by cluster (objects named `cluster`).
    pub logical_clusters: BTreeMap<String, Arc<LogicalCluster>>,
    /// LogicalClusters read from kcp shards: (shard source, object) by cluster.
    pub shard_logical_clusters: BTreeMap<String, (usize, Arc<LogicalCluster>)>,
    /// APIBindings read from kcp shards: (shard source, object).
    pub shard_bindings: BTreeMap<ObjKey, (usize, Arc<ApiBinding>)>,
    /// ClusterRoles.
    pub roles: BTreeMap<ObjKey, ClusterRole>,
    /// ClusterRoleBindings.
    pub role_bindings: BTreeMap<ObjKey, ClusterRoleBinding>,
    /// CachedResourceEndpointSlices.
    pub slices: BTreeMap<ObjKey, Arc<EndpointSlice>>,
    /// ClusterCachedResourceEndpointSlices (kcp main).
    pub cc_slices: BTreeMap<ObjKey, Arc<EndpointSlice>>,
    /// v0.32 CachedResources and ClusterCachedResources (never on CachedResource-keyed URLs).
    pub identity_resources: BTreeMap<IdentityResourceKey, IdentityResource>,
    cached_objects: BTreeMap<ObjKey, RawCached>,
    /// Objects stored as themselves: revision and value.
    identity_objects: BTreeMap<IdentityObjectKey, (u64, Bytes)>,
    /// Served state per URL domain.
    pub served: BTreeMap<ObjKey, Served>,
    /// Objects refused at ingest: their resource's label and why.
    invalid: HashMap<ObjKey, (String, String)>,
    pub(crate) validators: HashMap<String, Arc<Validator>>,
    /// The validation memo read at start, used by the first full rebuild only.
    memo_known: Option<Arc<Memo>>,
    /// Whether served objects note their memo digests (the index keeps a memo file).
    memo_record: bool,
}

/// Counters an operator can read.
#[derive(Default)]
pub struct Counters {
    /// Objects refused at ingest (failed to unwrap or validate), in total.
    pub invalid_total: AtomicU64,
    /// Store events applied.
    pub events_total: AtomicU64,
    /// Objects served without validating them again because the validation memo knew them.
    pub memo_served_total: AtomicU64,
}

/// The index, shared by the ingest task and the request handlers.
pub struct Index {
    state: RwLock<State>,
    synced: AtomicBool,
    /// Counters.
    pub counters: Counters,
    /// Rendered OpenAPI documents and their hashes, by API fingerprint.
    openapi: parking_lot::Mutex<HashMap<String, (Bytes, String)>>,
    /// The last applied store revision, for readers that wait for a resourceVersion.
    revision_tx: tokio::sync::watch::Sender<u64>,
    /// How many full lists were applied (a relist after an expired watch or a cache restart).
    relists_tx: tokio::sync::watch::Sender<u64>,
    /// How many events changed what shards resolve through the cache (bindings, exports,
    /// schemas, logical clusters, Shard objects).
    catalog_tx: tokio::sync::watch::Sender<u64>,
    /// Where the index reads from and how that is going (`/readyz?verbose`).
    source: parking_lot::Mutex<Option<Arc<dyn CacheRead>>>,
    /// The kcp shards consumers are read from (`--shard-kubeconfig`), by source number.
    pub(crate) shard_sources: parking_lot::Mutex<BTreeMap<usize, Arc<dyn CacheRead>>>,
    /// Where the validation memo is kept ([`Index::with_memo_file`]).
    memo_path: Option<std::path::PathBuf>,
    /// Held while the memo file is written (one writer at a time).
    memo_writing: parking_lot::Mutex<()>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            state: RwLock::default(),
            synced: AtomicBool::new(false),
            counters: Counters::default(),
            openapi: parking_lot::Mutex::default(),
            revision_tx: tokio::sync::watch::Sender::new(0),
            relists_tx: tokio::sync::watch::Sender::new(0),
            catalog_tx: tokio::sync::watch::Sender::new(0),
            source: parking_lot::Mutex::new(None),
            shard_sources: parking_lot::Mutex::default(),
            memo_path: None,
            memo_writing: parking_lot::Mutex::new(()),
        }
    }
}

/// A placeholder for the `kcp.io/cluster` value while encoding; never seen by clients.
const PLACEHOLDER: &str = "__replication_vw_consumer_cluster_placeholder__";

fn decode<T: DeserializeOwned>(value: &[u8]) -> Option<T> {
    serde_json::from_slice(value).ok()
}

/// Unwrap a CachedObject into the served object (§5.5) and validate it against the served
/// version's schema; the error says why it is not served.
pub fn unwrap_object(
    value: &Bytes,
    revision: u64,
    api: &ResolvedApi,
) -> Result<ServedObject, String> {
    unwrap_object_memo(value, revision, api, MemoUse::default())
}

/// How deriving a served object uses the validation memo ([`crate::memo`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoUse<'a> {
    /// Objects validated before: one whose digest is here is served without validating it.
    pub known: Option<&'a Memo>,
    /// Note the digest of each object validated and served with its stored tail.
    pub record: bool,
    /// Counts the objects served on the memo's word.
    pub hits: Option<&'a AtomicU64>,
}

/// [`unwrap_object`], using the validation memo as `memo` says.
pub fn unwrap_object_memo(
    value: &Bytes,
    revision: u64,
    api: &ResolvedApi,
    memo: MemoUse<'_>,
) -> Result<ServedObject, String> {
    let one_pass = memo.known.is_none() && api.validator.text_check().may_vouch();
    if one_pass && let Some(served) = unwrap_checked(value, revision, api, memo.record) {
        return Ok(served);
    }
    let wrapper: WrapperInner<'_> =
        serde_json::from_slice(value).map_err(|e| format!("failed to decode CachedObject: {e}"))?;
    let raw = wrapper
        .spec
        .raw
        .ok_or("failed to decode inner object: spec.raw is missing")?;
    derive_text(
        value,
        raw.get(),
        ("inner object", "spec.raw"),
        revision,
        api,
        true,
        memo,
        // The check already said it is not sure (or the CachedObject is unusual): not again.
        !one_pass,
    )
}

/// The served object of `text`, an object stored in `stored` (the inner object of a
/// CachedObject when `wrapped`), using the memo as `memo` says: an object the memo knows is
/// parsed only as far as serving it needs (its `apiVersion`, `kind` and `metadata`, and its
/// selectable fields), not validated again, and served with its stored tail; anything else (or
/// a known object that cannot be served that way after all) is parsed, validated and served in
/// full. `(what, place)` name it in errors. `check`: try the schema's text check first (not
/// when the caller just did).
#[allow(clippy::too_many_arguments)]
pub(crate) fn derive_text(
    stored: &Bytes,
    text: &str,
    (what, place): (&str, &str),
    revision: u64,
    api: &ResolvedApi,
    wrapped: bool,
    memo: MemoUse<'_>,
    check: bool,
) -> Result<ServedObject, String> {
    let digest = (memo.known.is_some() || memo.record)
        .then(|| memo::digest(api.memo_context(wrapped), text.as_bytes()));
    if let (Some(known), Some(digest)) = (memo.known, digest)
        && known.contains(&digest)
        && let Ok(inner) = Inner::parse(stored, text, what, place, Mode::Trusted)
        && let Ok(served) = serve_inner(inner, revision, api, wrapped, Some(digest))
    {
        if let Some(hits) = memo.hits {
            hits.fetch_add(1, Ordering::Relaxed);
        }
        return Ok(served);
    }
    // Most objects are valid and left as they are by pruning and defaulting: the schema's text
    // check vouches for those in one pass over their text, without a value tree.
    let text_check = api.validator.text_check();
    if check
        && text_check.may_vouch()
        && let Ok(inner) = Inner::parse(stored, text, what, place, Mode::Checked(text_check))
        && let Ok(served) = serve_inner(
            inner,
            revision,
            api,
            wrapped,
            digest.filter(|_| memo.record),
        )
    {
        return Ok(served);
    }
    let inner = Inner::parse(stored, text, what, place, Mode::Full)?;
    serve_inner(
        inner,
        revision,
        api,
        wrapped,
        digest.filter(|_| memo.record),
    )
}

/// [`unwrap_object_memo`] in one pass over the CachedObject's text when the schema's text
/// check vouches for its inner object (and the memo is not consulted): `spec.raw` is checked
/// where it stands instead of being delimited first and parsed again. `None` when anything is
/// unusual (a key with escapes, a repeated `metadata`, `spec` or `raw`, no `spec.raw`, text
/// that is not JSON, an object the check is unsure about): the usual way then decides.
fn unwrap_checked(
    value: &Bytes,
    revision: u64,
    api: &ResolvedApi,
    record: bool,
) -> Option<ServedObject> {
    // SIMD: a whole stored value is checked here, a million times on a relist.
    let text = simdutf8::basic::from_utf8(value).ok()?;
    let mut found = FoundInner::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let check = api.validator.text_check();
    serde::Deserializer::deserialize_map(
        &mut de,
        WrapperTop {
            check,
            found: &mut found,
        },
    )
    .ok()?;
    de.end().ok()?;
    let members = found.members?;
    let bytes = text.as_bytes();
    let base = text.as_ptr() as usize;
    // Back from `at` over blanks, then over `expect` when given.
    let back = |mut at: usize, expect: Option<u8>| -> Option<usize> {
        while at > 0 && matches!(bytes[at - 1], b' ' | b'\t' | b'\n' | b'\r') {
            at -= 1;
        }
        match expect {
            Some(c) => (at > 0 && bytes[at - 1] == c).then(|| at - 1),
            None => Some(at),
        }
    };
    // The inner object starts at the brace before its first key's opening quote ...
    let start = back(
        members.first_key.checked_sub(base)?.checked_sub(1)?,
        Some(b'{'),
    )?;
    // ... and ends at the brace before whatever follows it: the next key in `spec` or after
    // it (then `spec` closed first), or the end of the CachedObject (both closed).
    let end = match found.next_key {
        Some((address, spec_closed)) => {
            let at = back(address.checked_sub(base)?.checked_sub(1)?, Some(b','))?;
            if spec_closed {
                back(at, Some(b'}'))?
            } else {
                at
            }
        }
        None => back(back(text.len(), Some(b'}'))?, Some(b'}'))?,
    };
    let end = back(end, None)?;
    if end <= start || bytes[end - 1] != b'}' {
        return None;
    }
    let inner_text = text.get(start..end)?;
    let inner = Inner::from_members(value, inner_text, members, true).ok()?;
    let digest = record.then(|| memo::digest(api.memo_context(true), inner_text.as_bytes()));
    serve_inner(inner, revision, api, true, digest).ok()
}

/// What [`WrapperTop`] found: the inner object's members, and the first key after them with
/// whether `spec` had closed before it.
#[derive(Default)]
struct FoundInner<'de> {
    members: Option<Members<'de>>,
    next_key: Option<(usize, bool)>,
}

impl FoundInner<'_> {
    fn note_key(&mut self, key: &str, spec_closed: bool) {
        if self.members.is_some() && self.next_key.is_none() {
            self.next_key = Some((key.as_ptr() as usize, spec_closed));
        }
    }
}

/// A CachedObject's members, as [`WrapperInner`] reads them, checking `spec.raw` in place.
struct WrapperTop<'c, 'f, 'de> {
    check: &'c schema::fast::TextCheck,
    found: &'f mut FoundInner<'de>,
}

impl<'de> serde::de::Visitor<'de> for WrapperTop<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a CachedObject")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error as _;
        let unusual = || A::Error::custom("unusual");
        let (mut metadata, mut spec) = (false, false);
        while let Some(key) = map.next_key_seed(BorrowedKey)? {
            let key = key.ok_or_else(unusual)?;
            self.found.note_key(key, true);
            match key {
                "metadata" if !metadata => {
                    metadata = true;
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                "spec" if !spec => {
                    spec = true;
                    map.next_value_seed(WrapperSpecSeed {
                        check: self.check,
                        found: &mut *self.found,
                    })?;
                }
                "metadata" | "spec" => return Err(unusual()),
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The `spec` of a CachedObject: `raw` checked in place, the rest skipped.
struct WrapperSpecSeed<'c, 'f, 'de> {
    check: &'c schema::fast::TextCheck,
    found: &'f mut FoundInner<'de>,
}

impl<'de> serde::de::DeserializeSeed<'de> for WrapperSpecSeed<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for WrapperSpecSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a CachedObject's spec")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error as _;
        while let Some(key) = map.next_key_seed(BorrowedKey)? {
            let key = key.ok_or_else(|| A::Error::custom("unusual"))?;
            self.found.note_key(key, false);
            if key == "raw" {
                if self.found.members.is_some() {
                    return Err(A::Error::custom("unusual"));
                }
                let members = map.next_value_seed(MembersSeed {
                    mode: Mode::Checked(self.check),
                })?;
                if members.first_key == 0 {
                    return Err(A::Error::custom("unusual"));
                }
                self.found.members = Some(members);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Only where a CachedObject's inner object is (its labels are skipped without building values).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct WrapperInner<'a> {
    /// Skipped, but named so that a CachedObject with two is refused.
    #[allow(dead_code)]
    metadata: Option<serde::de::IgnoredAny>,
    #[serde(borrow)]
    spec: WrapperSpec<'a>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct WrapperMeta {
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct WrapperSpec<'a> {
    #[serde(borrow)]
    raw: Option<&'a serde_json::value::RawValue>,
}

/// An object to serve, parsed from its stored text, with what is needed to serve its members
/// after `metadata` as that text (see [`ServedObject`]).
#[derive(Debug, Clone)]
pub(crate) struct Inner {
    object: Value,
    /// The stored value the object's text is part of.
    stored: Bytes,
    /// Where the object's text starts and ends in `stored`.
    span: std::ops::Range<usize>,
    /// Per top-level member, in order: for a member of [`HEAD_MEMBERS`], which one (its index
    /// there) and where its value's text is in `stored`; `None` for the others.
    members: Vec<Option<(usize, std::ops::Range<usize>)>>,
    /// A key occurs twice (the parsed object kept the last; the text would hold both).
    duplicate: bool,
    /// Parsed for an object the memo or the schema's text check vouches for: `object` holds
    /// only the head members, the others are in `others`, unparsed.
    trusted: bool,
    /// When `trusted`: every other member's key and where its value's text is in `stored`.
    others: Vec<(String, std::ops::Range<usize>)>,
    /// When `trusted`: what serving reads of the head members (`object` is empty).
    view: HeadView,
}

/// The root members the virtual workspace reads (and rewrites, in `metadata`) before the rest,
/// which is served as stored.
const HEAD_MEMBERS: [&str; 3] = pieces::HEAD_NAMES;

/// How [`Inner::parse`] reads the members other than the head members.
#[derive(Clone, Copy)]
pub(crate) enum Mode<'a> {
    /// Into values, to be pruned, defaulted and validated.
    Full,
    /// Only delimited: the validation memo vouches for the object.
    Trusted,
    /// Checked against the schema while delimiting them; the parse fails when the check is not
    /// sure that the object is valid and left unchanged by preparing it.
    Checked(&'a schema::fast::TextCheck),
}

impl Inner {
    /// Parse `text`, a slice of `stored`, as a JSON object; errors name it `what` (and
    /// `place`, where it is when it is not an object). Unless `mode` is [`Mode::Full`], only
    /// the head members are parsed into values.
    pub(crate) fn parse(
        stored: &Bytes,
        text: &str,
        what: &str,
        place: &str,
        mode: Mode<'_>,
    ) -> Result<Inner, String> {
        if !text.trim_start().starts_with('{') {
            return Err(format!(
                "failed to decode {what}: {place} is not a JSON object"
            ));
        }
        let trusted = !matches!(mode, Mode::Full);
        let decode = || {
            let mut de = serde_json::Deserializer::from_str(text);
            let members = serde::de::DeserializeSeed::deserialize(MembersSeed { mode }, &mut de)?;
            de.end().map(|()| members)
        };
        let members = decode().map_err(|e| format!("failed to decode {what}: {e}"))?;
        Inner::from_members(stored, text, members, trusted)
    }

    /// The object whose text is `text` (in `stored`), from its parsed members.
    fn from_members(
        stored: &Bytes,
        text: &str,
        members: Members<'_>,
        trusted: bool,
    ) -> Result<Inner, String> {
        let Members {
            object,
            view,
            heads,
            others,
            duplicate,
            first_key: _,
        } = members;
        let start = offset_in(stored, text).ok_or("internal: inner object outside its value")?;
        let others = others
            .into_iter()
            .map(|(key, value)| {
                let range = match value {
                    Other::Raw(raw) => {
                        offset_in(stored, raw.get()).map(|at| at..at + raw.get().len())
                    }
                    Other::Checked(addresses) => {
                        value_between(text, &addresses).map(|r| start + r.start..start + r.end)
                    }
                };
                range
                    .map(|range| (key, range))
                    .ok_or("internal: member outside its value")
            })
            .collect::<Result<_, _>>()?;
        let members = heads
            .into_iter()
            .map(|h| {
                h.map(|(which, raw)| {
                    offset_in(stored, raw.get())
                        .map(|at| (which, at..at + raw.get().len()))
                        .ok_or("internal: member outside its value")
                })
                .transpose()
            })
            .collect::<Result<_, _>>()?;
        Ok(Inner {
            object: Value::Object(object),
            stored: stored.clone(),
            span: start..start + text.len(),
            members,
            duplicate,
            trusted,
            others,
            view,
        })
    }

    /// The value of selectable field `path` (`spec.a.b`, not in the head members) of a trusted
    /// object, as [`selectable_value`] gives it for the whole object: by walking the stored
    /// text of the member it names and parsing only the value found there.
    fn trusted_field(&self, path: &str) -> String {
        let segments: Vec<&str> = path.split('.').collect();
        let simple = segments.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !simple || HEAD_MEMBERS.contains(&segments[0]) {
            return self.field_from_parsed(path);
        }
        let Some(range) = self
            .others
            .iter()
            .rev()
            .find(|(k, _)| k == segments[0])
            .map(|(_, r)| r.clone())
        else {
            return String::new();
        };
        let Some(mut text) = self.stored_str(range) else {
            return self.field_from_parsed(path);
        };
        for segment in &segments[1..] {
            match pick(text, segment) {
                Picked::Found(raw) => text = raw.get(),
                Picked::Missing => return String::new(),
                Picked::NotObject => return self.field_from_parsed(path),
            }
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::String(s)) => s,
            Ok(v @ (Value::Null | Value::Bool(_) | Value::Number(_))) => v.to_string(),
            _ => self.field_from_parsed(path),
        }
    }

    /// A selectable field of a trusted object evaluated on a value of the whole object (the
    /// head members as given, the others parsed now): the way for uncommon shapes.
    fn field_from_parsed(&self, path: &str) -> String {
        let mut whole = serde_json::Map::new();
        for (key, range) in &self.others {
            let value = self
                .stored_str(range.clone())
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(Value::Null);
            whole.insert(key.clone(), value);
        }
        selectable_value(&Value::Object(whole), path)
    }

    /// The stored text in `range` (a JSON value's text, so valid UTF-8).
    fn stored_str(&self, range: std::ops::Range<usize>) -> Option<&str> {
        simdutf8::basic::from_utf8(self.stored.get(range)?).ok()
    }

    /// The object's served text as pieces of its stored text, when it can be served that way:
    /// the head members (those of [`HEAD_MEMBERS`] present, `metadata` among them) come first,
    /// no key repeats, at least one other member follows, and the text has no line break
    /// (watch events are one line each); see [`pieces::from_stored`] for `metadata`.
    fn stored_pieces(&self, wrapped: bool) -> Option<Pieces> {
        let heads: Vec<(usize, std::ops::Range<usize>)> =
            self.members.iter().map_while(Option::clone).collect();
        if self.duplicate
            || heads.len() == self.members.len()
            || self.members[heads.len()..].iter().any(Option::is_some)
        {
            return None;
        }
        pieces::from_stored(&pieces::Head {
            stored: &self.stored,
            span: self.span.clone(),
            heads,
            wrapped,
        })
    }
}

/// Where `part` (borrowed from `whole`) starts in `whole`.
fn offset_in(whole: &[u8], part: &str) -> Option<usize> {
    let at = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (at + part.len() <= whole.len()).then_some(at)
}

/// An object parsed in one pass, noting its members' order: the values of [`HEAD_MEMBERS`]
/// are also kept as text (to find where they end), every other member is parsed straight
/// into its value or, when trusted, only delimited.
struct Members<'a> {
    object: serde_json::Map<String, Value>,
    /// Unless parsed in full: what serving reads of the head members (`object` stays empty).
    view: HeadView,
    /// Per member, in order: which head member it is and its text, if it is one.
    heads: Vec<Option<(usize, &'a serde_json::value::RawValue)>>,
    /// Unless parsed in full: the members other than the head members, as text.
    others: Vec<(String, Other<'a>)>,
    /// A key occurs twice.
    duplicate: bool,
    /// When checked: the address of the first key's first character (0: no member).
    first_key: usize,
}

/// Where a member's value is in the object's text.
enum Other<'a> {
    /// Delimited by the parser.
    Raw(&'a serde_json::value::RawValue),
    /// Checked while parsing; where it is in the object's text.
    Checked(std::ops::Range<usize>),
}

/// What serving an object reads of its head members when the rest is served as stored
/// (the memo or the text check vouched for it): no value tree is built for them.
#[derive(Debug, Default, Clone)]
struct HeadView {
    /// `apiVersion`, when it is a string.
    api_version: Option<String>,
    /// Whether there is a `kind`.
    has_kind: bool,
    /// `metadata` is there and not an object.
    metadata_not_object: bool,
    /// `metadata.name` and `metadata.namespace`, when strings (the last of repeated ones).
    name: Option<String>,
    namespace: Option<String>,
    /// `metadata.labels`' members in order, their values when strings (as a parsed object
    /// keeps them, the last of a repeated key wins; non-strings are no labels).
    labels: Vec<(String, Option<String>)>,
}

impl<'de> Members<'de> {
    /// Notes head member `which` (an index into [`HEAD_MEMBERS`]) in the view; a repeated one
    /// marks the object [`Members::duplicate`] (it is then not served from its text).
    fn read_head(
        &mut self,
        which: usize,
        raw: &'de serde_json::value::RawValue,
    ) -> Result<(), String> {
        self.duplicate |= self.heads.iter().flatten().any(|(w, _)| *w == which);
        let text = raw.get();
        match HEAD_MEMBERS[which] {
            "apiVersion" => {
                self.view.api_version = text
                    .starts_with('"')
                    .then(|| serde_json::from_str::<String>(text))
                    .transpose()
                    .map_err(|e| e.to_string())?;
            }
            "kind" => self.view.has_kind = true,
            _ => {
                self.view.metadata_not_object = !text.starts_with('{');
                if !self.view.metadata_not_object {
                    let mut de = serde_json::Deserializer::from_str(text);
                    serde::Deserializer::deserialize_map(&mut de, MetaView(&mut self.view))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(())
    }
}

/// Reads `metadata` into a [`HeadView`].
struct MetaView<'a>(&'a mut HeadView);

impl<'de> serde::de::Visitor<'de> for MetaView<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object's metadata")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        const READ: [&str; 3] = ["name", "namespace", "labels"];
        while let Some(which) = map.next_key_seed(KeyAmong(&READ))? {
            match which {
                Some(0) => self.0.name = map.next_value::<StringOrNot>()?.0,
                Some(1) => self.0.namespace = map.next_value::<StringOrNot>()?.0,
                Some(_) => self.0.labels = map.next_value::<LabelsOrNot>()?.0,
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// `metadata.labels` read as [`HeadView::labels`]; anything but an object is no labels.
struct LabelsOrNot(Vec<(String, Option<String>)>);

impl<'de> serde::Deserialize<'de> for LabelsOrNot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = LabelsOrNot;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("labels")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<LabelsOrNot, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, StringOrNot>()? {
                    out.push((k, v.0));
                }
                Ok(LabelsOrNot(out))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<LabelsOrNot, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(LabelsOrNot(Vec::new()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<LabelsOrNot, E> {
                Ok(LabelsOrNot(Vec::new()))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<LabelsOrNot, E> {
                Ok(LabelsOrNot(Vec::new()))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<LabelsOrNot, E> {
                Ok(LabelsOrNot(Vec::new()))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<LabelsOrNot, E> {
                Ok(LabelsOrNot(Vec::new()))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<LabelsOrNot, E> {
                Ok(LabelsOrNot(Vec::new()))
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<LabelsOrNot, E> {
                Ok(LabelsOrNot(Vec::new()))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// A JSON value read as a string when it is one (anything else is `None`).
struct StringOrNot(Option<String>);

impl<'de> serde::Deserialize<'de> for StringOrNot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(StringOrNot(match Value::deserialize(d)? {
            Value::String(s) => Some(s),
            _ => None,
        }))
    }
}

/// Parses [`Members`] as `mode` says.
struct MembersSeed<'a> {
    mode: Mode<'a>,
}

impl<'de> serde::de::DeserializeSeed<'de> for MembersSeed<'_> {
    type Value = Members<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Members<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for MembersSeed<'_> {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
        use serde::de::Error as _;
        let mut out = Members {
            object: serde_json::Map::new(),
            view: HeadView::default(),
            heads: Vec::with_capacity(8),
            others: Vec::new(),
            duplicate: false,
            first_key: 0,
        };
        if let Mode::Checked(check) = self.mode {
            return checked_members(map, out, check.root());
        }
        let trusted = matches!(self.mode, Mode::Trusted);
        while let Some(key) = map.next_key::<String>()? {
            if let Some(which) = HEAD_MEMBERS.iter().position(|m| *m == key) {
                let raw: &'de serde_json::value::RawValue = map.next_value()?;
                if trusted {
                    out.read_head(which, raw).map_err(A::Error::custom)?;
                } else {
                    let value = serde_json::from_str(raw.get()).map_err(A::Error::custom)?;
                    out.duplicate |= out.object.insert(key, value).is_some();
                }
                out.heads.push(Some((which, raw)));
            } else if trusted {
                let raw: &'de serde_json::value::RawValue = map.next_value()?;
                out.heads.push(None);
                out.duplicate |= out.others.iter().any(|(k, _)| *k == key);
                out.others.push((key, Other::Raw(raw)));
            } else {
                let value = map.next_value::<Value>()?;
                out.heads.push(None);
                out.duplicate |= out.object.insert(key, value).is_some();
            }
        }
        Ok(out)
    }
}

/// [`Members`] of an object whose members other than the head members are checked against the
/// schema as they are read ([`Mode::Checked`]); fails as soon as the check is unsure. Every key
/// is borrowed from the text (a key with escapes fails too), and each checked member's value
/// is found between its key and the next one.
fn checked_members<'de, A: serde::de::MapAccess<'de>>(
    mut map: A,
    mut out: Members<'de>,
    mut root: schema::fast::RootCheck<'_>,
) -> Result<Members<'de>, A::Error> {
    use serde::de::Error as _;
    let unsure = || A::Error::custom("not vouched for");
    // Per member: its key, borrowed from the object's text.
    let mut keys: Vec<&'de str> = Vec::with_capacity(8);
    while let Some(key) = map.next_key_seed(BorrowedKey)? {
        let Some(key) = key else {
            return Err(unsure());
        };
        keys.push(key);
        if let Some(which) = HEAD_MEMBERS.iter().position(|m| *m == key) {
            let raw: &'de serde_json::value::RawValue = map.next_value()?;
            root.head(key, raw.get());
            out.read_head(which, raw).map_err(A::Error::custom)?;
            out.heads.push(Some((which, raw)));
        } else {
            let seed = root.member(key).ok_or_else(unsure)?;
            map.next_value_seed(seed)?;
            out.heads.push(None);
            out.duplicate |= out.others.iter().any(|(k, _)| k == key);
            // The range is filled in below, once the next key is known.
            out.others.push((key.to_owned(), Other::Checked(0..0)));
        }
    }
    if !root.finish() {
        return Err(unsure());
    }
    out.first_key = keys.first().map_or(0, |k| k.as_ptr() as usize);
    // Each checked member's value lies between its key's closing quote and the next key's
    // opening quote (or the object's end): [`Inner::parse`] finds it there.
    let mut next_key = usize::MAX;
    let mut slot = out.others.len();
    for (key, head) in keys.iter().zip(&out.heads).rev() {
        if head.is_none() {
            slot = slot
                .checked_sub(1)
                .ok_or_else(|| A::Error::custom("internal: member ranges"))?;
            out.others[slot].1 = Other::Checked(key.as_ptr() as usize + key.len()..next_key);
        }
        next_key = key.as_ptr() as usize - 1;
    }
    Ok(out)
}

/// Where the value of a member checked by [`checked_members`] is in `text`, from the address
/// of its key's closing quote to that of the next key's opening quote (`usize::MAX`: none).
fn value_between(text: &str, addresses: &std::ops::Range<usize>) -> Option<std::ops::Range<usize>> {
    let base = text.as_ptr() as usize;
    let bytes = text.as_bytes();
    let blank = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let mut from = addresses.start.checked_sub(base)? + 1;
    while bytes.get(from).copied().is_some_and(blank) {
        from += 1;
    }
    (bytes.get(from) == Some(&b':')).then_some(())?;
    from += 1;
    while bytes.get(from).copied().is_some_and(blank) {
        from += 1;
    }
    let (mut to, separator) = if addresses.end == usize::MAX {
        (text.trim_end().len(), b'}')
    } else {
        (addresses.end.checked_sub(base)?, b',')
    };
    while to > from && blank(bytes[to - 1]) {
        to -= 1;
    }
    (to > from && bytes[to - 1] == separator).then_some(())?;
    to -= 1;
    while to > from && blank(bytes[to - 1]) {
        to -= 1;
    }
    (to > from).then_some(from..to)
}

/// Reads a map key borrowed from the text; `None` when it has escapes (and so is not).
struct BorrowedKey;

impl<'de> serde::de::DeserializeSeed<'de> for BorrowedKey {
    type Value = Option<&'de str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for BorrowedKey {
    type Value = Option<&'de str>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Reads a map key, telling which of the given ones it is (without allocating it).
struct KeyAmong<'k>(&'k [&'k str]);

impl<'de> serde::de::DeserializeSeed<'de> for KeyAmong<'_> {
    type Value = Option<usize>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for KeyAmong<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|k| *k == v))
    }
}

/// What [`pick`] found.
enum Picked<'de> {
    /// The member's value, as text.
    Found(&'de serde_json::value::RawValue),
    /// An object without that member.
    Missing,
    /// Not an object (or not JSON).
    NotObject,
}

/// The last member `key` of the JSON object `text`, without parsing the other members' values.
fn pick<'de>(text: &'de str, key: &str) -> Picked<'de> {
    struct Pick<'k>(&'k str);
    impl<'de> serde::de::Visitor<'de> for Pick<'_> {
        type Value = Picked<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Picked<'de>, A::Error> {
            let mut found = None;
            while let Some(hit) = map.next_key_seed(KeyAmong(&[self.0]))? {
                if hit.is_some() {
                    found = Some(map.next_value()?);
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(found.map_or(Picked::Missing, Picked::Found))
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde::Deserializer::deserialize_map(&mut de, Pick(key)).unwrap_or(Picked::NotObject)
}

/// A CachedObject's labels (none when they cannot be read), read without scanning past its
/// `metadata` (kcp writes it before `spec`, so the inner object is not even skipped through).
/// A value that is not JSON after `metadata` still has labels here: unwrapping it then fails,
/// and it is refused and counted against the resource its labels name.
fn wrapper_labels(value: &[u8]) -> BTreeMap<String, String> {
    struct Visit<'a>(&'a mut Option<BTreeMap<String, String>>);
    impl<'de> serde::de::Visitor<'de> for Visit<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a CachedObject")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            use serde::de::Error as _;
            while let Some(hit) = map.next_key_seed(KeyAmong(&["metadata"]))? {
                if hit.is_some() {
                    let meta: WrapperMeta = map.next_value()?;
                    *self.0 = Some(meta.labels);
                    // Stop here: the rest is not read (the error only ends the parse).
                    return Err(A::Error::custom("labels read"));
                }
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            Ok(())
        }
    }
    let mut labels = None;
    let mut de = serde_json::Deserializer::from_slice(value);
    let _ = serde::Deserializer::deserialize_map(&mut de, Visit(&mut labels));
    labels.unwrap_or_default()
}

/// [`RawCached::new`] with the labels [`wrapper_labels`] reads, most often without copying
/// any: the three labels the index routes by are read borrowed from the value, and the
/// previous object's [`Gvr`] is reused when they name the same resource. Anything unusual
/// (escapes, a non-string label, a repeated or missing `labels` or `metadata`) takes the way
/// of [`wrapper_labels`], which then decides.
fn raw_cached(revision: u64, value: &Bytes) -> RawCached {
    use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, Visitor};
    type Found<'de> = [Option<&'de str>; 3];
    const NAMES: [&str; 3] = [
        LABEL_OBJECT_GROUP,
        LABEL_OBJECT_VERSION,
        LABEL_OBJECT_RESOURCE,
    ];
    struct Labels<'a, 'de>(&'a mut Found<'de>);
    impl<'de> DeserializeSeed<'de> for Labels<'_, 'de> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Labels<'_, 'de> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("labels")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key_seed(BorrowedKey)? {
                let key = key.ok_or_else(|| A::Error::custom("unusual"))?;
                let value = map
                    .next_value_seed(BorrowedKey)?
                    .ok_or_else(|| A::Error::custom("unusual"))?;
                if let Some(i) = NAMES.iter().position(|n| *n == key) {
                    self.0[i] = Some(value);
                }
            }
            Ok(())
        }
    }
    struct Meta<'a, 'de>(&'a mut Found<'de>);
    impl<'de> DeserializeSeed<'de> for Meta<'_, 'de> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Meta<'_, 'de> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("metadata")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = false;
            while let Some(key) = map.next_key_seed(BorrowedKey)? {
                match key {
                    Some("labels") if !seen => {
                        seen = true;
                        map.next_value_seed(Labels(&mut *self.0))?;
                    }
                    Some(k) if k != "labels" => {
                        map.next_value::<IgnoredAny>()?;
                    }
                    _ => return Err(A::Error::custom("unusual")),
                }
            }
            if seen {
                Ok(())
            } else {
                Err(A::Error::custom("unusual"))
            }
        }
    }
    struct Top<'a, 'de>(&'a mut Found<'de>, &'a mut bool);
    impl<'de> Visitor<'de> for Top<'_, 'de> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a CachedObject")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key_seed(BorrowedKey)? {
                match key {
                    Some("metadata") => {
                        map.next_value_seed(Meta(&mut *self.0))?;
                        *self.1 = true;
                        // As `wrapper_labels`: nothing after `metadata` is read.
                        return Err(A::Error::custom("labels read"));
                    }
                    Some(_) => {
                        map.next_value::<IgnoredAny>()?;
                    }
                    None => return Err(A::Error::custom("unusual")),
                }
            }
            Ok(())
        }
    }
    let mut found: Found<'_> = [None; 3];
    let mut done = false;
    let mut de = serde_json::Deserializer::from_slice(value);
    let _ = serde::Deserializer::deserialize_map(&mut de, Top(&mut found, &mut done));
    if !done {
        return RawCached::new(revision, value, &wrapper_labels(value));
    }
    let [group, version, resource] = found.map(Option::unwrap_or_default);
    let gvr = LAST_GVR.with(|last| {
        let mut last = last.borrow_mut();
        if (
            last.group.as_str(),
            last.version.as_str(),
            last.resource.as_str(),
        ) != (group, version, resource)
        {
            *last = Arc::new(Gvr {
                group: group.to_owned(),
                version: version.to_owned(),
                resource: resource.to_owned(),
            });
        }
        last.clone()
    });
    RawCached {
        revision,
        value: value.clone(),
        gvr,
    }
}

impl RawCached {
    fn new(revision: u64, value: &Bytes, labels: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        RawCached {
            revision,
            value: value.clone(),
            gvr: shared_gvr(Gvr {
                group: get(LABEL_OBJECT_GROUP),
                version: get(LABEL_OBJECT_VERSION),
                resource: get(LABEL_OBJECT_RESOURCE),
            }),
        }
    }
}

/// The served object of an already parsed object, validated: the inner object of a CachedObject
/// (`wrapped`: its uid is the original's, from the annotation; §5.5) or an object stored as
/// itself (its uid is the cache's and its apiVersion the served one; `kcp-head.md` §4.5).
///
/// A trusted object (parsed for the memo) is not validated and must be servable with its stored
/// tail, or this fails. `digest`: the memo digest of the object's text, kept by the served
/// object when it is served with its stored tail (validated or trusted).
pub(crate) fn serve_inner(
    mut parsed: Inner,
    revision: u64,
    api: &ResolvedApi,
    wrapped: bool,
    digest: Option<memo::Digest>,
) -> Result<ServedObject, String> {
    if parsed.trusted {
        return serve_trusted(parsed, revision, api, wrapped, digest);
    }
    let mut inner = std::mem::take(&mut parsed.object);
    let Some(obj) = inner.as_object_mut() else {
        return Err("failed to decode inner object".into());
    };
    // An object stored as itself is served from its stored text only when that already names
    // the served apiVersion and a kind.
    let as_stored = wrapped
        || (obj.get("apiVersion").and_then(Value::as_str) == Some(api.api_version().as_str())
            && obj.contains_key("kind"));
    if !wrapped {
        obj.insert("apiVersion".into(), Value::String(api.api_version()));
        obj.entry("kind")
            .or_insert_with(|| Value::String(api.names.kind.clone()));
    }
    let md = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(md) = md.as_object_mut() else {
        return Err("failed to decode inner object: metadata is not an object".into());
    };
    let mut annotations = match md.remove("annotations") {
        Some(Value::Object(a)) => a,
        _ => Default::default(),
    };
    let original_uid = annotations
        .remove(ANN_ORIGINAL_UID)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    annotations.remove(ANN_ORIGINAL_RV);
    annotations.remove(ANN_SHARD);
    annotations.insert(ANN_CLUSTER.into(), Value::String(PLACEHOLDER.into()));
    md.insert("annotations".into(), Value::Object(annotations));
    if wrapped {
        md.insert("uid".into(), Value::String(original_uid));
    }
    md.insert(
        "resourceVersion".into(),
        Value::String(revision.to_string()),
    );
    let name = md
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let namespace = md
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        return Err("inner object has no metadata.name".into());
    }
    let from_stored = {
        let (result, changed) = api.validator.prepare_noting_changes(&mut inner);
        if let Err(errors) = result {
            let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Err(format!("invalid against its schema: {}", msgs.join("; ")));
        }
        (as_stored && !changed)
            .then(|| parsed.stored_pieces(wrapped))
            .flatten()
    };
    // Labels and selectable fields as served: after pruning and defaulting.
    let labels = kube_api::selector::Labels::of(&inner);
    let fields = api
        .selectable_fields
        .iter()
        .map(|f| (shared_name(f), selectable_value(&inner, f).into_boxed_str()))
        .collect();
    let digest = digest.filter(|_| from_stored.is_some());
    let text = match from_stored {
        Some(text) => text,
        None => split_at_cluster(&mut inner, parsed.span.len())?,
    };
    Ok(ServedObject {
        table: std::sync::OnceLock::new(),
        namespace: shared_namespace(namespace),
        name: Arc::from(name),
        revision,
        labels,
        fields,
        text,
        digest,
    })
}

/// [`serve_inner`] for an object the memo or the text check vouched for: served with its
/// stored tail, read through its [`HeadView`] only. Fails (and the object is then served the
/// full way) where that is not enough: a stored-as-itself object naming another apiVersion or
/// no kind, `metadata` that is not an object, no name, a selectable field in the head members,
/// or a text that cannot be served as pieces.
fn serve_trusted(
    parsed: Inner,
    revision: u64,
    api: &ResolvedApi,
    wrapped: bool,
    digest: Option<memo::Digest>,
) -> Result<ServedObject, String> {
    let view = &parsed.view;
    let as_stored = wrapped
        || (view.api_version.as_deref() == Some(api.api_version().as_str()) && view.has_kind);
    if !as_stored || view.metadata_not_object {
        return Err("not served from its stored text".into());
    }
    let name = view.name.as_deref().unwrap_or("");
    if name.is_empty() {
        return Err("inner object has no metadata.name".into());
    }
    let text = parsed
        .stored_pieces(wrapped)
        .ok_or("not served from its stored text")?;
    let fields = api
        .selectable_fields
        .iter()
        .map(|f| {
            // (Those are read from the head members' values, which are not parsed here.)
            if HEAD_MEMBERS.iter().any(|h| f.starts_with(h)) {
                return Err("a selectable field in the head members");
            }
            Ok((shared_name(f), parsed.trusted_field(f).into_boxed_str()))
        })
        .collect::<Result<_, _>>()?;
    let labels = kube_api::selector::Labels::from_members(
        view.labels.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
    );
    Ok(ServedObject {
        table: std::sync::OnceLock::new(),
        namespace: shared_namespace(view.namespace.clone().unwrap_or_default()),
        name: Arc::from(name),
        revision,
        labels,
        fields,
        text,
        digest,
    })
}

/// The value of selectable field `path` (`spec.a.b`) of `object`: a string as it is, any
/// other value as JSON, nothing as "".
fn selectable_value(object: &Value, path: &str) -> String {
    table::evaluate(object, &format!(".{path}"))
        .first()
        .map_or(String::new(), |v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
}

/// The JSON pointer of an object's `kcp.io/cluster` annotation.
fn cluster_pointer() -> String {
    format!("/metadata/annotations/{}", ANN_CLUSTER.replace('/', "~1"))
}

/// Serialize an object whose `kcp.io/cluster` annotation is [`PLACEHOLDER`] and split it around
/// that annotation's JSON string literal. When the object's own content holds the placeholder
/// too, the annotation is first set to a run of `_` longer than the whole serialized object,
/// which nothing else in it can hold, so the split is always at the annotation. `size_hint`:
/// about how long the encoding will be.
fn split_at_cluster(object: &mut Value, size_hint: usize) -> Result<Pieces, String> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(PLACEHOLDER.as_bytes()));
    let encode = |object: &Value| {
        let mut bytes = Vec::with_capacity(size_hint.saturating_add(64));
        serde_json::to_writer(&mut bytes, object).map(|()| bytes)
    };
    let mut bytes = encode(object).map_err(|e| e.to_string())?;
    let (at, len) = {
        let mut hits = FINDER.find_iter(&bytes);
        match (hits.next(), hits.next()) {
            // The annotation's value is the only place: the literal is the quoted placeholder.
            (Some(at), None) if at > 0 => (at - 1, PLACEHOLDER.len() + 2),
            _ => {
                let placeholder = "_".repeat(bytes.len() + 1);
                let cluster = object
                    .pointer_mut(&cluster_pointer())
                    .ok_or("internal: no cluster annotation")?;
                *cluster = Value::String(placeholder.clone());
                bytes = encode(object).map_err(|e| e.to_string())?;
                let literal = format!("\"{placeholder}\"");
                let at = find(&bytes, literal.as_bytes())
                    .ok_or("internal: cluster placeholder not found")?;
                (at, literal.len())
            }
        }
    };
    if bytes.get(at) != Some(&b'"') || bytes.get(at + len - 1) != Some(&b'"') {
        return Err("internal: cluster placeholder not found".into());
    }
    Pieces::encoded(store::exact_bytes(bytes), at, len)
        .ok_or_else(|| "internal: an encoded object beyond 4 GiB".into())
}

/// A map from pairs of strings (namespace, name) built from `items` in any order; a key given
/// twice keeps its last value, as inserting one by one would.
///
/// Sorting a million such keys by comparing the strings costs seconds (each comparison follows
/// two pointers per side into memory all over the heap, and names often share long prefixes).
/// Instead each key gets a fixed-size sort key: the 16 bytes of each string after the prefix
/// every key shares (zero-padded; names hold no NUL). Those sort in one flat array; only keys
/// whose sort keys tie are compared as strings.
pub(crate) fn map_by_name<S: AsRef<str> + Ord, T>(items: Vec<((S, S), T)>) -> BTreeMap<(S, S), T> {
    fn common_prefix<'a>(mut all: impl Iterator<Item = &'a str>) -> usize {
        let Some(first) = all.next() else { return 0 };
        let mut len = first.len();
        for s in all {
            len = first.as_bytes()[..len]
                .iter()
                .zip(s.as_bytes())
                .take_while(|(a, b)| a == b)
                .count();
        }
        len
    }
    let after = |s: &str, skip: usize| {
        let mut b = [0u8; 16];
        let rest = s.as_bytes().get(skip..).unwrap_or_default();
        let n = rest.len().min(16);
        b[..n].copy_from_slice(&rest[..n]);
        u128::from_be_bytes(b)
    };
    let ns_skip = common_prefix(items.iter().map(|((ns, _), _)| ns.as_ref()));
    let name_skip = common_prefix(items.iter().map(|((_, name), _)| name.as_ref()));
    let mut order: Vec<(u128, u128, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, ((ns, name), _))| {
            (
                after(ns.as_ref(), ns_skip),
                after(name.as_ref(), name_skip),
                i,
            )
        })
        .collect();
    order.sort_unstable_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| items[a.2].0.cmp(&items[b.2].0))
            .then(a.2.cmp(&b.2))
    });
    let mut slots: Vec<Option<((S, S), T)>> = items.into_iter().map(Some).collect();
    // Sorted, so `collect` finds one run and builds the tree without sorting again.
    order
        .into_iter()
        .filter_map(|(_, _, i)| slots[i].take())
        .collect()
}

/// Derive many served objects (each with its origin's id), spread over the machine's cores when
/// there are enough of them (a full rebuild after a relist or a schema change).
fn derive_all<T: Sync>(
    items: &[T],
    one: impl Fn(&T) -> (u128, Result<Arc<ServedObject>, String>) + Sync,
) -> Vec<(u128, Result<Arc<ServedObject>, String>)> {
    par_map(items, one, || {
        (0, Err("internal: unwrapping panicked".to_string()))
    })
}

/// `items` mapped by `one`, on every core (at most 8) for large inputs, in order. A worker that
/// panicked gives `lost()` for each of its items.
fn par_map<T: Sync, R: Send>(
    items: &[T],
    one: impl Fn(&T) -> R + Sync,
    lost: impl Fn() -> R,
) -> Vec<R> {
    let one = &one;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads == 1 || items.len() < 2048 {
        return items.iter().map(one).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| {
                (
                    c.len(),
                    s.spawn(move || c.iter().map(one).collect::<Vec<_>>()),
                )
            })
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for (len, h) in handles {
            match h.join() {
                Ok(part) => out.extend(part),
                Err(_) => out.extend((0..len).map(|_| lost())),
            }
        }
        out
    })
}

/// The key a refused identity-stored object is remembered by (logged once per message).
fn identity_invalid_key(k: &IdentityObjectKey) -> ObjKey {
    (
        k.cluster.clone(),
        format!("{}/{}/{}", k.resource, k.namespace, k.name),
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

fn obj_key(key: &Key) -> ObjKey {
    (key.cluster.to_string(), key.name.to_string())
}

impl State {
    /// The CachedResource `(cluster, name)`.
    pub fn cached_resource(&self, key: &ObjKey) -> Option<&Arc<CachedResource>> {
        self.cached_resources.get(key).map(|(_, cr)| cr)
    }

    /// APIExports having a virtual resource with identity `hash` and group-resource (g, r).
    pub fn exports_for(
        &self,
        hash: &str,
        group: &str,
        resource: &str,
    ) -> Vec<(&ObjKey, &Arc<ApiExport>)> {
        let mut v: Vec<_> = self
            .exports
            .iter()
            .filter(|(_, (_, e))| e.virtual_resources(hash, group, resource).next().is_some())
            .map(|(k, (_, e))| (k, e))
            .collect();
        v.sort_by(|a, b| (&a.0.1, &a.0.0).cmp(&(&b.0.1, &b.0.0)));
        v
    }

    /// Find an export by path-or-cluster and name (§4.3).
    pub fn export_by_path(&self, path: &str, name: &str) -> Option<(&ObjKey, &Arc<ApiExport>)> {
        if let Some((k, (_, e))) = self
            .exports
            .get_key_value(&(path.to_string(), name.to_string()))
        {
            return Some((k, e));
        }
        self.exports
            .iter()
            .find(|((_, n), (_, e))| n == name && e.metadata.annotation(ANN_PATH) == path)
            .map(|(k, (_, e))| (k, e))
    }

    /// The export a binding references, if it exists.
    pub fn binding_export(
        &self,
        binding_cluster: &str,
        binding: &ApiBinding,
    ) -> Option<(&ObjKey, &Arc<ApiExport>)> {
        let r = binding.spec.reference.export.as_ref()?;
        let path = if r.path.is_empty() {
            binding_cluster
        } else {
            &r.path
        };
        self.export_by_path(path, &r.name)
    }

    /// Consumer clusters of a CachedResource (§5.8): clusters whose LogicalCluster binds the
    /// group-resource to an existing APIBinding that references an export with the virtual
    /// resource.
    pub fn consumers(&self, hash: &str, group: &str, resource: &str) -> BTreeSet<String> {
        let exports: BTreeSet<&ObjKey> = self
            .exports_for(hash, group, resource)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if exports.is_empty() {
            return BTreeSet::new();
        }
        let gr = kube_api::status::qualified(group, resource);
        let mut out = BTreeSet::new();
        for ((cluster, name), binding) in self.all_bindings() {
            let Some((ek, _)) = self.binding_export(cluster, binding) else {
                continue;
            };
            if !exports.contains(ek) {
                continue;
            }
            let bound = self
                .logical_cluster(cluster)
                .and_then(|lc| lc.resource_bindings().ok())
                .and_then(|b| b.get(&gr).cloned())
                .is_some_and(|lock| lock.n == *name);
            if bound {
                out.insert(cluster.clone());
            }
        }
        out
    }

    /// Resolve the API definition of a CachedResource (§5.4).
    fn resolve(&mut self, key: &ObjKey) -> Result<Arc<ResolvedApi>, String> {
        let (cr_rev, cr) = self
            .cached_resources
            .get(key)
            .cloned()
            .ok_or_else(|| format!("cachedresources.cache.kcp.io \"{}\" not found", key.1))?;
        let id = format!("{}|{}", key.0, key.1);
        if !cr.condition_true("ResourceValid") {
            return Err(format!("CachedResource {id} not ready"));
        }
        let (g, v, r) = (&cr.spec.group, &cr.spec.version, &cr.spec.resource);
        let hash = &cr.status.identity_hash;
        let exports = self.exports_for(hash, g, r);
        let Some((ek, export)) = exports.first().map(|(k, e)| ((*k).clone(), (*e).clone())) else {
            return Err(format!("CachedResource {id} doesn't have an APIExport"));
        };
        let export_rev = self.exports.get(&ek).map_or(0, |(rev, _)| *rev);
        for (res, _) in export.virtual_resources(hash, g, r) {
            let skey = (ek.0.clone(), res.schema.clone());
            let Some((schema_rev, schema)) = self.schemas.get(&skey).cloned() else {
                return Err(format!(
                    "failed to get APIResourceSchema: apiresourceschemas.apis.kcp.io \"{}\" not found",
                    res.schema
                ));
            };
            if schema.spec.group != *g || schema.spec.names.plural != *r {
                continue;
            }
            let Some(version) = schema
                .spec
                .versions
                .iter()
                .find(|sv| sv.name == *v && sv.served)
            else {
                continue;
            };
            return self.build_api(
                (g, v, r),
                (&schema, version),
                (&skey, schema_rev),
                (hash, &ek),
                Source::CachedObjects,
                &format!("cr@{cr_rev}|export {}/{}@{export_rev}", ek.0, ek.1),
            );
        }
        Err(format!(
            "failed to get schema for wrapped object in CachedResource {id}: missing schema"
        ))
    }

    /// The API served for group/version/resource `gvr` from one version of a schema (its
    /// validator compiled once per schema revision), with the identity and export it was
    /// resolved through; `fingerprint` names what else it was resolved from.
    pub(crate) fn build_api(
        &mut self,
        (g, v, r): (&String, &String, &String),
        (schema, version): (&ApiResourceSchema, &SchemaVersion),
        (skey, schema_rev): (&ObjKey, u64),
        (hash, export): (&String, &ObjKey),
        source: Source,
        fingerprint: &str,
    ) -> Result<Arc<ResolvedApi>, String> {
        let schema_fingerprint = format!("{}/{}@{schema_rev}:{v}", skey.0, skey.1);
        let validator = match self.validators.get(&schema_fingerprint) {
            Some(v) => v.clone(),
            None => {
                let compiled = Validator::compile(&version.schema)
                    .map_err(|e| format!("schema {} version {v}: {e}", skey.1))?;
                let compiled = Arc::new(compiled);
                self.validators
                    .insert(schema_fingerprint.clone(), compiled.clone());
                compiled
            }
        };
        Ok(Arc::new(ResolvedApi {
            group: g.clone(),
            version: v.clone(),
            resource: r.clone(),
            names: schema.spec.names.clone(),
            namespaced: schema.spec.scope == "Namespaced",
            has_status: schema
                .spec
                .versions
                .iter()
                .any(|sv| sv.subresources.status.is_some()),
            printer_columns: version.additional_printer_columns.clone(),
            selectable_fields: version
                .selectable_fields
                .iter()
                .map(|f| f.json_path.trim_start_matches('.').to_string())
                .collect(),
            identity_hash: hash.clone(),
            export: export.clone(),
            validator,
            schema: Arc::new(version.schema.clone()),
            source,
            fingerprint: format!("{schema_fingerprint}|{fingerprint}"),
            memo_contexts: Default::default(),
        }))
    }

    /// Re-derive one CachedObject for a served resource; log a refusal once.
    fn derive_logged(
        invalid: &mut HashMap<ObjKey, (String, String)>,
        counters: &Counters,
        okey: &ObjKey,
        api: &ResolvedApi,
        result: Result<Arc<ServedObject>, String>,
    ) -> Option<Arc<ServedObject>> {
        match result {
            Ok(o) => {
                if !invalid.is_empty() {
                    invalid.remove(okey);
                }
                Some(o)
            }
            Err(msg) => {
                counters.invalid_total.fetch_add(1, Ordering::Relaxed);
                if invalid.get(okey).map(|(_, m)| m) != Some(&msg) {
                    tracing::warn!(cluster = %okey.0, cachedobject = %okey.1, error = %msg, "Not serving a cached object.");
                    let resource = kube_api::request::resource_label(&api.group, &api.resource);
                    invalid.insert(okey.clone(), (resource, msg));
                }
                None
            }
        }
    }

    /// The memo digests of the objects served now (one per served copy).
    fn served_digests(&self) -> Vec<memo::Digest> {
        self.served
            .values()
            .flat_map(|s| s.objects.values())
            .filter_map(|o| o.digest)
            .collect()
    }

    /// Objects refused at ingest and not served now, by resource label.
    pub fn invalid_by_resource(&self) -> BTreeMap<String, u64> {
        let mut by = BTreeMap::new();
        for (resource, _) in self.invalid.values() {
            *by.entry(resource.clone()).or_default() += 1;
        }
        by
    }

    fn matches_gvr(raw: &RawCached, cr: &CachedResource) -> bool {
        let g = if cr.spec.group.is_empty() {
            "core"
        } else {
            cr.spec.group.as_str()
        };
        let gvr = &raw.gvr;
        gvr.group == g && gvr.version == cr.spec.version && gvr.resource == cr.spec.resource
    }

    /// Re-derive every object a domain serves: `(served key, object)` pairs and, for the origin
    /// index, `(origin id, object)` pairs under `origins`' keys (both in the same order). The
    /// origin ids are hashed on the workers, with the objects.
    #[allow(clippy::type_complexity)]
    fn derive_domain(
        &mut self,
        key: &ObjKey,
        api: &ResolvedApi,
        counters: &Counters,
        origins: &OriginIndex,
    ) -> (
        Vec<(NameKey, Arc<ServedObject>)>,
        Vec<(u128, Arc<ServedObject>)>,
    ) {
        let mut served = Vec::new();
        let mut by_origin = Vec::new();
        // Keys are borrowed from the CachedObjects, not copied: at a million objects the
        // copies were a good part of the rebuild's serial time.
        fn keep(
            (served, by_origin): (
                &mut Vec<(NameKey, Arc<ServedObject>)>,
                &mut Vec<(u128, Arc<ServedObject>)>,
            ),
            origin: u128,
            o: Arc<ServedObject>,
        ) {
            by_origin.push((origin, o.clone()));
            served.push((o.name_key(), o));
        }
        match &api.source {
            Source::CachedObjects => {
                if let Some((_, cr)) = self.cached_resources.get(key) {
                    let candidates: Vec<(&ObjKey, &RawCached)> = self
                        .cached_objects
                        .range((key.0.clone(), String::new())..)
                        .take_while(|(okey, _)| okey.0 == key.0)
                        .filter(|(_, raw)| Self::matches_gvr(raw, cr))
                        .collect();
                    let memo = MemoUse {
                        known: self.memo_known.as_deref(),
                        record: self.memo_record,
                        hits: Some(&counters.memo_served_total),
                    };
                    let derived = derive_all(&candidates, |(okey, raw)| {
                        let o = unwrap_object_memo(&raw.value, raw.revision, api, memo);
                        (origins.id(&okey.1), o.map(Arc::new))
                    });
                    served.reserve(candidates.len());
                    by_origin.reserve(candidates.len());
                    for ((okey, _), (id, r)) in candidates.into_iter().zip(derived) {
                        if let Some(o) =
                            Self::derive_logged(&mut self.invalid, counters, okey, api, r)
                        {
                            keep((&mut served, &mut by_origin), id, o);
                        }
                    }
                }
            }
            Source::Identity(source) => {
                let candidates: Vec<(&IdentityObjectKey, &(u64, Bytes))> = self
                    .identity_objects
                    .range(IdentityObjectKey::start(source)..)
                    .take_while(|(k, _)| k.in_source(source))
                    .collect();
                let memo = MemoUse {
                    known: self.memo_known.as_deref(),
                    record: self.memo_record,
                    hits: Some(&counters.memo_served_total),
                };
                let derived = derive_all(&candidates, |(ik, (rev, value))| {
                    let o = super::slices::serve_identity_object_memo(value, *rev, api, memo);
                    (origins.id(&ik.origin()), o.map(Arc::new))
                });
                served.reserve(candidates.len());
                by_origin.reserve(candidates.len());
                for ((ik, _), (id, r)) in candidates.into_iter().zip(derived) {
                    let invalid_key = identity_invalid_key(ik);
                    if let Some(o) =
                        Self::derive_logged(&mut self.invalid, counters, &invalid_key, api, r)
                    {
                        keep((&mut served, &mut by_origin), id, o);
                    }
                }
            }
        }
        (served, by_origin)
    }

    /// Bring every served domain in line with the catalog; `rebuild` re-derives all objects.
    pub(crate) fn reconcile(&mut self, revision: u64, counters: &Counters, rebuild: bool) {
        let domains = self.domains();
        self.served
            .retain(|k, s| domains.get(k).is_some_and(|d| *d == s.domain));
        for (key, domain) in domains {
            let api = match domain {
                Domain::CachedResource => self.resolve(&key),
                Domain::Slice(kind) => self.resolve_slice(&key, kind),
            };
            let consumers = match (&api, domain) {
                (Ok(a), Domain::CachedResource) => {
                    Arc::new(self.consumers(&a.identity_hash, &a.group, &a.resource))
                }
                (Ok(_), Domain::Slice(kind)) => Arc::new(self.consumers_of_slice(&key, kind)),
                _ => Arc::new(BTreeSet::new()),
            };
            let old_fp = self
                .served
                .get(&key)
                .and_then(|s| s.api.as_ref().ok().map(|a| a.fingerprint.clone()));
            let new_fp = api.as_ref().ok().map(|a| a.fingerprint.clone());
            let served = self.served.entry(key.clone()).or_insert_with(|| Served {
                domain,
                api: Err(String::new()),
                objects: BTreeMap::new(),
                consumers: consumers.clone(),
                by_origin: OriginIndex::default(),
                by_name: NameIndex::default(),
                history: VecDeque::new(),
                compacted: revision,
                compacted_seq: 0,
                next_seq: 1,
                tx: broadcast::channel(BROADCAST_CAPACITY).0,
            });
            let before = std::mem::replace(&mut served.consumers, consumers.clone());
            let changed = rebuild || old_fp != new_fp;
            served.api = api.clone();
            if !changed {
                served.push_membership(revision, &before, &consumers);
                continue;
            }
            // Re-derive every object of this domain and emit the differences.
            let mut by_origin = OriginIndex::default();
            let (derived, origins) = match &api {
                Ok(a) => self.derive_domain(&key, a, counters, &by_origin),
                Err(_) => (Vec::new(), Vec::new()),
            };
            // The three maps of the objects, built on two cores: the name map (a sort) here,
            // the hash tables by origin and by name beside it. Both keep the last of objects
            // with the same key, as inserting one by one would.
            let (fresh, by_name) = std::thread::scope(|s| {
                let tables = s.spawn(|| {
                    let mut by_name = NameIndex::with_capacity(origins.len());
                    by_origin.reserve(origins.len());
                    for (id, o) in origins {
                        by_name.insert(o.clone());
                        by_origin.insert_id(id, o);
                    }
                    by_name
                });
                let fresh = map_by_name(derived);
                // invariant: building two hash tables does not panic but for lack of memory,
                // which aborts the process anyway.
                let by_name = tables
                    .join()
                    .expect("invariant: the table builder did not panic");
                (fresh, by_name)
            });
            let Some(served) = self.served.get_mut(&key) else {
                continue;
            };
            let old = std::mem::take(&mut served.objects);
            for (k, o) in &old {
                if !fresh.contains_key(k) {
                    served.push(ServedEvent::new(
                        revision,
                        Change::Deleted,
                        Arc::new(o.with_revision(revision)),
                        Some(o.clone()),
                        consumers.clone(),
                    ));
                }
            }
            // A domain nobody could have seen yet (new at this revision, no history, no
            // watcher) gets no Added events: no watch could ask for them (a resume needs a
            // revision after this one), and at a million objects making them cost seconds.
            let unseen = old.is_empty()
                && served.history.is_empty()
                && served.compacted == revision
                && served.tx.receiver_count() == 0;
            for (k, o) in fresh.iter().filter(|_| !unseen) {
                let prev = old.get(k).cloned();
                let change = if prev.is_some() {
                    Change::Modified
                } else {
                    Change::Added
                };
                if prev.as_ref().is_some_and(|p| p.same_as(o)) {
                    continue;
                }
                served.push(ServedEvent::new(
                    revision,
                    change,
                    o.clone(),
                    prev,
                    consumers.clone(),
                ));
            }
            served.by_name = by_name;
            served.objects = fresh;
            served.by_origin = by_origin;
        }
    }

    /// Apply a CachedObject change to the served resources it belongs to.
    fn apply_cached_object(
        &mut self,
        event_kind: EventKind,
        key: &Key,
        revision: u64,
        value: &Bytes,
        counters: &Counters,
    ) {
        let okey = obj_key(key);
        if event_kind == EventKind::Deleted {
            self.cached_objects.remove(&okey);
            self.invalid.remove(&okey);
        } else {
            // Only its labels now (a broken object is still counted against the resource they
            // name); each matching resource unwraps it as a rebuild does, with the schema's
            // one-pass check first instead of a full parse.
            self.cached_objects
                .insert(okey.clone(), raw_cached(revision, value));
        }
        let crs: Vec<ObjKey> = self
            .cached_resources
            .range((key.cluster.to_string(), String::new())..)
            .take_while(|(k, _)| k.0 == key.cluster)
            .map(|(k, _)| k.clone())
            .collect();
        for crk in crs {
            let Some((_, cr)) = self.cached_resources.get(&crk).cloned() else {
                continue;
            };
            let Some(served) = self.served.get(&crk) else {
                continue;
            };
            let Ok(api) = served.api.clone() else {
                continue;
            };
            if api.source != Source::CachedObjects {
                continue;
            }
            let new = match (event_kind, self.cached_objects.get(&okey)) {
                (EventKind::Deleted, _) | (_, None) => None,
                (_, Some(raw)) if Self::matches_gvr(raw, &cr) => {
                    let result = unwrap_object_memo(
                        &raw.value,
                        raw.revision,
                        &api,
                        MemoUse {
                            record: self.memo_record,
                            ..MemoUse::default()
                        },
                    )
                    .map(Arc::new);
                    Self::derive_logged(&mut self.invalid, counters, &okey, &api, result)
                }
                _ => None,
            };
            if let Some(served) = self.served.get_mut(&crk) {
                served.replace_origin(&key.name, new, revision);
            }
        }
    }

    /// Apply a change of an object stored as itself to the slice-keyed domains serving it.
    fn apply_identity_object(
        &mut self,
        event_kind: EventKind,
        key: &Key,
        revision: u64,
        value: &Bytes,
        counters: &Counters,
    ) {
        let ik = IdentityObjectKey::of(key);
        let invalid_key = identity_invalid_key(&ik);
        if event_kind == EventKind::Deleted {
            self.identity_objects.remove(&ik);
            self.invalid.remove(&invalid_key);
        } else {
            self.identity_objects
                .insert(ik.clone(), (revision, value.clone()));
        }
        let domains: Vec<(ObjKey, Arc<ResolvedApi>)> = self
            .served
            .iter()
            .filter_map(|(k, s)| match &s.api {
                Ok(a) if matches!(&a.source, Source::Identity(src) if ik.in_source(src)) => {
                    Some((k.clone(), a.clone()))
                }
                _ => None,
            })
            .collect();
        for (dk, api) in domains {
            let new = if event_kind == EventKind::Deleted {
                None
            } else {
                let memo = MemoUse {
                    record: self.memo_record,
                    ..MemoUse::default()
                };
                let result = super::slices::serve_identity_object_memo(value, revision, &api, memo)
                    .map(Arc::new);
                Self::derive_logged(&mut self.invalid, counters, &invalid_key, &api, result)
            };
            if let Some(served) = self.served.get_mut(&dk) {
                served.replace_origin(&ik.origin(), new, revision);
            }
        }
    }

    /// Apply one record (from a list) or event to the catalog. Returns whether the catalog
    /// (anything but CachedObjects) changed.
    fn apply_record(
        &mut self,
        kind: EventKind,
        key: &Key,
        revision: u64,
        value: &Bytes,
        counters: &Counters,
    ) -> bool {
        let k = obj_key(key);
        let deleted = kind == EventKind::Deleted;
        fn put<T: DeserializeOwned>(
            map: &mut BTreeMap<ObjKey, (u64, Arc<T>)>,
            k: ObjKey,
            rev: u64,
            value: &Bytes,
            deleted: bool,
        ) {
            if deleted {
                map.remove(&k);
            } else if let Some(v) = decode::<T>(value) {
                map.insert(k, (rev, Arc::new(v)));
            } else {
                tracing::warn!(cluster = %k.0, name = %k.1, "Ignoring a cached API object that does not decode.");
            }
        }
        fn put_plain<T: DeserializeOwned>(
            map: &mut BTreeMap<ObjKey, T>,
            k: ObjKey,
            value: &Bytes,
            deleted: bool,
        ) {
            if deleted {
                map.remove(&k);
            } else if let Some(v) = decode::<T>(value) {
                map.insert(k, v);
            }
        }
        if super::slices::is_identity_resource(&key.resource) {
            self.apply_identity_object(kind, key, revision, value, counters);
            return false;
        }
        match (key.group.as_str(), key.resource.as_str()) {
            ("cache.kcp.io", "cachedobjects") => {
                self.apply_cached_object(kind, key, revision, value, counters);
                return false;
            }
            ("cache.kcp.io", plural @ ("cachedresources" | "clustercachedresources")) => {
                // A v0.32 CachedResource is served on slice-keyed URLs only: for the
                // CachedResource-keyed URL it does not exist.
                let plural = if plural == "cachedresources" {
                    "cachedresources"
                } else {
                    "clustercachedresources"
                };
                let ikey = (plural, k.0.clone(), k.1.clone());
                self.identity_resources.remove(&ikey);
                if plural == "cachedresources" {
                    self.cached_resources.remove(&k);
                }
                if !deleted {
                    match decode::<CachedResource>(value) {
                        Some(cr)
                            if plural == "clustercachedresources"
                                || cr.is_identity_generation() =>
                        {
                            self.identity_resources.insert(
                                ikey,
                                IdentityResource {
                                    revision,
                                    shard: key.shard.to_string(),
                                    resource: Arc::new(cr),
                                },
                            );
                        }
                        Some(cr) => {
                            self.cached_resources.insert(k, (revision, Arc::new(cr)));
                        }
                        None => {
                            tracing::warn!(cluster = %k.0, name = %k.1, "Ignoring a cached API object that does not decode.");
                        }
                    }
                }
            }
            ("cache.kcp.io", "clustercachedresourceendpointslices") => {
                if deleted {
                    self.cc_slices.remove(&k);
                } else if let Some(s) = decode::<EndpointSlice>(value) {
                    self.cc_slices.insert(k, Arc::new(s));
                }
            }
            ("apis.kcp.io", "apiexports") => put(&mut self.exports, k, revision, value, deleted),
            ("apis.kcp.io", "apiresourceschemas") => {
                put(&mut self.schemas, k, revision, value, deleted)
            }
            ("apis.kcp.io", "apibindings") => {
                if deleted {
                    self.bindings.remove(&k);
                } else if let Some(b) = decode::<ApiBinding>(value) {
                    self.bindings.insert(k, Arc::new(b));
                }
            }
            ("core.kcp.io", "logicalclusters") => {
                if key.name != "cluster" {
                    return false;
                }
                if deleted {
                    self.logical_clusters.remove(key.cluster.as_str());
                } else if let Some(lc) = decode::<LogicalCluster>(value) {
                    self.logical_clusters
                        .insert(key.cluster.to_string(), Arc::new(lc));
                }
            }
            ("rbac.authorization.k8s.io", "clusterroles") => {
                put_plain(&mut self.roles, k, value, deleted)
            }
            ("rbac.authorization.k8s.io", "clusterrolebindings") => {
                put_plain(&mut self.role_bindings, k, value, deleted)
            }
            ("cache.kcp.io", "cachedresourceendpointslices") => {
                if deleted {
                    self.slices.remove(&k);
                } else if let Some(s) = decode::<EndpointSlice>(value) {
                    self.slices.insert(k, Arc::new(s));
                }
            }
            _ => return false,
        }
        true
    }
}

impl Index {
    /// A new, unsynced index.
    pub fn new() -> Self {
        Self::default()
    }

    /// The OpenAPI v3 document of a resolved API and its hash, rendered once per fingerprint.
    pub fn openapi(&self, api: &ResolvedApi) -> (Bytes, String) {
        let mut cache = self.openapi.lock();
        if let Some(doc) = cache.get(&api.fingerprint) {
            return doc.clone();
        }
        let doc = super::openapi::render(api);
        cache.insert(api.fingerprint.clone(), doc.clone());
        doc
    }

    /// Keep a validation memo ([`crate::memo`]) at `path`: [`Index::run`] reads it before its
    /// first list, so objects validated before a restart are served without validating them
    /// again, and writes it after each full list and every [`MEMO_INTERVAL`] while changes
    /// arrive.
    pub fn with_memo_file(mut self, path: std::path::PathBuf) -> Self {
        self.state.get_mut().memo_record = true;
        self.memo_path = Some(path);
        self
    }

    /// Write the validation memo now: the digest of every served object that was validated
    /// and is served with its stored tail. Returns how many it holds; `Ok(0)` without a memo
    /// file.
    pub fn save_memo(&self) -> Result<usize, memo::MemoError> {
        let Some(path) = &self.memo_path else {
            return Ok(0);
        };
        let _writing = self.memo_writing.lock();
        let mut digests = self.state.read().served_digests();
        digests.sort_unstable();
        digests.dedup();
        Memo::save(path, &digests)?;
        Ok(digests.len())
    }

    /// Unless a memo read from the file is waiting for the next rebuild, make one of the digests
    /// of the objects served now.
    fn memo_from_served(&self) {
        let mut st = self.state.write();
        if st.memo_record && st.memo_known.is_none() {
            let digests = st.served_digests();
            if !digests.is_empty() {
                st.memo_known = Some(Arc::new(Memo::of(digests)));
            }
        }
    }

    /// Read the memo file, if any, for the next full rebuild (on a blocking thread).
    async fn load_memo(self: &Arc<Self>) {
        let me = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || me.read_memo_file()).await {
            tracing::warn!(error = %e, "Reading the validation memo failed.");
        }
    }

    /// Read the memo file, if any, for the next full rebuild; a damaged one is ignored.
    fn read_memo_file(&self) {
        let Some(path) = &self.memo_path else {
            return;
        };
        match Memo::load(path) {
            Ok(Some(memo)) => {
                tracing::info!(
                    objects = memo.len(),
                    "Read the validation memo: those objects are served without validating them again."
                );
                self.state.write().memo_known = Some(Arc::new(memo));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Ignoring the validation memo: every object is validated.");
            }
        }
    }

    /// Write the memo after each full list and then every [`MEMO_INTERVAL`] while the index
    /// changes, forever.
    /// `relists` must be subscribed before the first list, or its change is missed.
    async fn keep_memo(self: Arc<Self>, mut relists: tokio::sync::watch::Receiver<u64>) {
        let mut written = None;
        loop {
            tokio::select! {
                changed = relists.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(MEMO_INTERVAL) => {}
            }
            let now = (
                *relists.borrow_and_update(),
                self.counters.events_total.load(Ordering::Relaxed),
            );
            if !self.is_synced() || written == Some(now) {
                continue;
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.save_memo()).await {
                Ok(Ok(n)) => {
                    written = Some(now);
                    tracing::debug!(objects = n, "Wrote the validation memo.");
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "Writing the validation memo failed."),
                Err(e) => tracing::warn!(error = %e, "Writing the validation memo failed."),
            }
        }
    }

    /// Whether the initial list has been applied.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Read access to the state (never held across an await).
    pub fn read(&self) -> parking_lot::RwLockReadGuard<'_, State> {
        self.state.read()
    }

    /// Write access to the state (never held across an await).
    pub(crate) fn write(&self) -> parking_lot::RwLockWriteGuard<'_, State> {
        self.state.write()
    }

    /// Replace the whole state with a fresh listing, emitting the differences to watchers.
    pub fn reset(&self, listing: &Listing) {
        let mut st = self.state.write();
        st.cached_resources.clear();
        st.exports.clear();
        st.schemas.clear();
        st.bindings.clear();
        st.logical_clusters.clear();
        st.roles.clear();
        st.role_bindings.clear();
        st.slices.clear();
        st.cc_slices.clear();
        st.identity_resources.clear();
        st.cached_objects.clear();
        st.identity_objects.clear();
        // Catalog first, then CachedObjects (raw only), then one rebuild of every resource.
        for Record {
            key,
            revision,
            value,
        } in &listing.records
        {
            if (key.group.as_str(), key.resource.as_str()) == ("cache.kcp.io", "cachedobjects") {
                continue;
            }
            if super::slices::is_identity_resource(&key.resource) {
                st.identity_objects
                    .insert(IdentityObjectKey::of(key), (*revision, value.clone()));
                continue;
            }
            st.apply_record(EventKind::Created, key, *revision, value, &self.counters);
        }
        // Built in bulk (one sort of input that is mostly in order, then no search per
        // object): at a million objects, inserting one by one cost seconds of key compares.
        // Reading each CachedObject's labels parses its whole value: on every core.
        let cached: Vec<&Record> = listing
            .records
            .iter()
            .filter(|r| {
                (r.key.group.as_str(), r.key.resource.as_str()) == ("cache.kcp.io", "cachedobjects")
            })
            .collect();
        // The keys are made on the workers too (two strings each, a million times over).
        let raws = par_map(
            &cached,
            |r| Some((obj_key(&r.key), raw_cached(r.revision, &r.value))),
            || None,
        );
        st.cached_objects = cached
            .iter()
            .zip(raws)
            .map(|(r, raw)| {
                // Unreadable labels serve the object as no resource, as a decode failure does.
                raw.unwrap_or_else(|| {
                    (
                        obj_key(&r.key),
                        RawCached::new(0, &Bytes::new(), &BTreeMap::new()),
                    )
                })
            })
            .collect();
        st.revision = listing.revision;
        st.reconcile(listing.revision, &self.counters, true);
        drop(st);
        self.revision_tx.send_replace(listing.revision);
    }

    /// Wait until the index has applied `revision` (at most `limit`); `Err(current)` when it
    /// did not get there in time.
    pub async fn wait_for_revision(
        &self,
        revision: u64,
        limit: std::time::Duration,
    ) -> Result<(), u64> {
        let mut rx = self.revision_tx.subscribe();
        let reached = tokio::time::timeout(limit, rx.wait_for(|r| *r >= revision)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(*self.revision_tx.borrow()),
        }
    }

    /// Apply one store event.
    pub fn apply(&self, event: &Event) {
        self.counters.events_total.fetch_add(1, Ordering::Relaxed);
        if matches!(
            (event.key.group.as_str(), event.key.resource.as_str()),
            (
                "apis.kcp.io",
                "apibindings" | "apiexports" | "apiresourceschemas"
            ) | ("core.kcp.io", "logicalclusters" | "shards")
        ) {
            self.catalog_tx.send_modify(|n| *n += 1);
        }
        let mut st = self.state.write();
        // Remote readers merge one watch per resource: revisions may arrive slightly out of
        // order across resources, never backwards within one.
        st.revision = st.revision.max(event.revision);
        if st.apply_record(
            event.kind,
            &event.key,
            event.revision,
            &event.value,
            &self.counters,
        ) {
            st.reconcile(event.revision, &self.counters, false);
        }
        let revision = st.revision;
        drop(st);
        self.revision_tx.send_replace(revision);
    }

    /// Full lists applied so far; changes each time the index relisted (after an expired
    /// watch or a cache that restarted empty), so writers can put their state back at once.
    pub fn relists(&self) -> tokio::sync::watch::Receiver<u64> {
        self.relists_tx.subscribe()
    }

    /// Changes each time an event arrives that the shards' controllers resolve through the
    /// cache (APIBindings, APIExports, APIResourceSchemas, LogicalClusters, Shards), so a shard
    /// reacts to what another shard did without waiting for its resync.
    pub fn catalog_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.catalog_tx.subscribe()
    }

    /// Where the index reads from and whether that is reachable (`None` before [`Index::run`]).
    pub fn source_health(&self) -> Option<cache_client::reader::ReadHealth> {
        self.source.lock().as_ref().map(|s| s.health())
    }

    /// Every remote source with a bounded label: `cache` (when the cache is remote) and
    /// `shard-<n>` per `--shard-kubeconfig`, in the order given.
    pub fn remote_sources_health(&self) -> Vec<(String, cache_client::reader::ReadHealth)> {
        let mut out = Vec::new();
        if let Some(h) = self.source_health()
            && h.lag.is_some()
        {
            out.push(("cache".to_string(), h));
        }
        for (n, shard) in self.shard_sources.lock().iter() {
            out.push((format!("shard-{n}"), shard.health()));
        }
        out
    }

    /// Keep the index in sync with the cache forever: list, then watch; relist when the watch
    /// expires; retry failures with capped exponential back-off and jitter, serving the state
    /// already synced meanwhile.
    pub async fn run(self: Arc<Self>, cache: Arc<dyn CacheRead>) {
        *self.source.lock() = Some(cache.clone());
        if self.memo_path.is_some() {
            self.load_memo().await;
            // Subscribed here, before the first list: the task may start after it.
            tokio::spawn(self.clone().keep_memo(self.relists()));
        }
        let mut backoff = cache_client::Backoff::new(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(10),
        );
        loop {
            let listing = match cache.list().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "Listing the cache failed; retrying.");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            let count = listing.records.len();
            // A full rebuild is CPU work for seconds on a large cache: keep it off the async workers.
            let me = self.clone();
            let listing = match tokio::task::spawn_blocking(move || {
                // The memo read at start, or on a relist the digests of what is served now:
                // objects whose text and schema did not change are not validated again.
                me.memo_from_served();
                me.reset(&listing);
                me.state.write().memo_known = None;
                listing
            })
            .await
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "Rebuilding the index failed; relisting.");
                    continue;
                }
            };
            if !self.synced.swap(true, Ordering::AcqRel) {
                tracing::info!(
                    objects = count,
                    revision = listing.revision,
                    "Virtual workspace index synced."
                );
            }
            self.relists_tx.send_modify(|n| *n += 1);
            let mut stream = match cache.watch(listing.revision).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "Watching the cache failed; relisting.");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            backoff.reset();
            while let Some(next) = stream.next().await {
                match next {
                    Ok(event) => self.apply(&event),
                    Err(StoreError::Expired { .. }) => {
                        tracing::info!("The cache watch expired; relisting.");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "The cache watch failed; relisting.");
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use store::Record;

    fn api() -> ResolvedApi {
        ResolvedApi {
            group: "g.io".into(),
            version: "v1".into(),
            resource: "things".into(),
            names: Names { plural: "things".into(), kind: "Thing".into(), ..Default::default() },
            namespaced: false,
            has_status: false,
            printer_columns: Vec::new(),
            selectable_fields: Vec::new(),
            identity_hash: "h".into(),
            export: ("p".into(), "e".into()),
            validator: Arc::new(
                Validator::compile(&json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}))
                    .unwrap(),
            ),
            fingerprint: "f".into(),
            schema: Arc::new(json!({"type": "object"})),
            source: Source::CachedObjects,
            memo_contexts: Default::default(),
        }
    }

    fn wrapped(name: &str, size: Value) -> Bytes {
        let inner = json!({"apiVersion": "g.io/v1", "kind": "Thing",
            "metadata": {"name": name, "resourceVersion": "77", "uid": "wrong",
                "annotations": {"kcp.io/cluster": "p", "kcp.io/shard": "s1", "keep": "me",
                    ANN_ORIGINAL_UID: "uid-1", ANN_ORIGINAL_RV: "77"}},
            "spec": {"size": size}});
        Bytes::from(
            serde_json::to_vec(&json!({"metadata": {"name": "x"}, "spec": {"raw": inner}}))
                .unwrap(),
        )
    }

    #[test]
    fn unwrapping_keeps_the_original_uid_and_rewrites_the_cluster_per_consumer() {
        let o = unwrap_object(&wrapped("a", json!(1)), 42, &api()).unwrap();
        let v: Value = serde_json::from_slice(&o.json_for("consumer-1")).unwrap();
        assert_eq!(v["metadata"]["uid"], "uid-1");
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert_eq!(
            v["metadata"]["annotations"],
            json!({"kcp.io/cluster": "consumer-1", "keep": "me"})
        );
        let other: Value = serde_json::from_slice(&o.json_for("consumer-2")).unwrap();
        assert_eq!(
            other["metadata"]["annotations"]["kcp.io/cluster"],
            "consumer-2"
        );
    }

    #[test]
    fn served_objects_by_origin_are_replaced_and_taken_out_by_their_origin_s_name() {
        let a = Arc::new(unwrap_object(&wrapped("a", json!(1)), 1, &api()).unwrap());
        let b = Arc::new(unwrap_object(&wrapped("b", json!(2)), 2, &api()).unwrap());
        let mut index = OriginIndex::default();
        index.insert("origin-a", a.clone());
        index.insert("origin-b", a.clone());
        index.insert("origin-a", b.clone());
        assert!(index.remove("origin-c").is_none());
        let got = index.remove("origin-a").expect("origin-a is filed");
        assert!(Arc::ptr_eq(&got, &b), "the later insert replaced the first");
        assert!(index.remove("origin-a").is_none(), "taken out once");
        let got = index.remove("origin-b").expect("origin-b is filed");
        assert!(Arc::ptr_eq(&got, &a), "another origin keeps its own object");
    }

    #[test]
    fn objects_failing_their_schema_or_without_an_inner_object_are_refused() {
        assert!(
            unwrap_object(&wrapped("a", json!("big")), 1, &api())
                .unwrap_err()
                .contains("invalid against its schema")
        );
        let no_raw = Bytes::from(serde_json::to_vec(&json!({"spec": {"raw": "text"}})).unwrap());
        assert!(
            unwrap_object(&no_raw, 1, &api())
                .unwrap_err()
                .contains("failed to decode inner object")
        );
        assert!(unwrap_object(&Bytes::from_static(b"not json"), 1, &api()).is_err());
    }

    /// A CachedObject around `inner`, given as text.
    fn wrapped_text(inner: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"metadata":{{"name":"x"}},"spec":{{"raw":{inner}}}}}"#
        ))
    }

    /// Whether `part` lies inside `whole`'s memory.
    fn inside(part: &[u8], whole: &Bytes) -> bool {
        let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
        !part.is_empty() && p >= w && p + part.len() <= w + whole.len()
    }

    const STORED_THING: &str = r#"{"apiVersion":"g.io/v1","kind":"Thing","metadata":{"name":"a","annotations":{"kcp.io/cluster":"p"}},"spec":{"size":3, "note" :"kept as stored"},"status":{"phase":"Ready"}}"#;

    #[test]
    fn an_object_the_schema_leaves_alone_shares_its_members_after_metadata_with_the_stored_value() {
        let mut a = api();
        a.validator = Arc::new(
            Validator::compile(&json!({"type": "object", "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}))
            .unwrap(),
        );
        let stored = wrapped_text(STORED_THING);
        let o = unwrap_object(&stored, 42, &a).unwrap();
        let served = o.json_for("consumer-1");
        let text = std::str::from_utf8(&served).unwrap();
        assert!(
            text.ends_with(
                r#","spec":{"size":3, "note" :"kept as stored"},"status":{"phase":"Ready"}}"#
            ),
            "{text}"
        );
        assert!(
            o.served_from_stored() && inside(o.buffer(), &stored),
            "the served text is pieces of the stored value"
        );
        let v: Value = serde_json::from_slice(&served).unwrap();
        assert_eq!(v["metadata"]["annotations"]["kcp.io/cluster"], "consumer-1");
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert_eq!(v["spec"], json!({"size": 3, "note": "kept as stored"}));
        let gone = o.with_revision(50);
        assert!(
            gone.served_from_stored() && inside(gone.buffer(), &stored),
            "a deletion shares it too"
        );
        let v: Value = serde_json::from_slice(&gone.json_for("c")).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "50");
        assert_eq!(v["status"], json!({"phase": "Ready"}));
    }

    #[test]
    fn an_object_the_schema_prunes_or_that_is_stored_unusually_is_served_encoded_anew() {
        let mut a = api();
        a.validator = Arc::new(
            Validator::compile(&json!({"type": "object", "properties": {
                "spec": {"type": "object", "properties": {
                    "size": {"type": "integer"}, "note": {"type": "string"}}},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}))
            .unwrap(),
        );
        let pruned = STORED_THING.replace(r#""size":3"#, r#""size":3,"unknown":true"#);
        let metadata_last =
            r#"{"spec":{"size":3},"apiVersion":"g.io/v1","kind":"Thing","metadata":{"name":"a"}}"#;
        let twice = r#"{"apiVersion":"g.io/v1","kind":"Thing","metadata":{"name":"a"},"spec":{"size":3},"spec":{"size":4}}"#;
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<Value>(STORED_THING).unwrap())
                .unwrap();
        for (inner, spec) in [
            (
                pruned.as_str(),
                json!({"size": 3, "note": "kept as stored"}),
            ),
            (metadata_last, json!({"size": 3})),
            (twice, json!({"size": 4})),
            (
                pretty.as_str(),
                json!({"size": 3, "note": "kept as stored"}),
            ),
        ] {
            let o = unwrap_object(&wrapped_text(inner), 42, &a).unwrap();
            assert!(!o.served_from_stored(), "{inner}");
            let served = o.json_for("c");
            assert!(!served.contains(&b'\n'), "{inner}");
            let v: Value = serde_json::from_slice(&served).unwrap();
            assert_eq!(v["spec"], spec, "{inner}");
            assert_eq!(
                v["metadata"]["annotations"]["kcp.io/cluster"], "c",
                "{inner}"
            );
        }
    }

    #[test]
    fn a_stored_tail_holding_the_placeholder_or_the_resource_version_text_is_served_right() {
        let mut a = api();
        a.validator = Arc::new(
            Validator::compile(&json!({"type": "object", "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}))
            .unwrap(),
        );
        let inner = format!(
            r#"{{"apiVersion":"g.io/v1","kind":"Thing","metadata":{{"name":"a"}},"spec":{{"p":"{PLACEHOLDER}","resourceVersion":"42"}}}}"#
        );
        let o = unwrap_object(&wrapped_text(&inner), 42, &a).unwrap();
        assert!(o.served_from_stored());
        let meta: Vec<u8> = o.metadata_parts(&[], b"\"c\"").concat();
        let meta: Value = serde_json::from_slice(&meta).unwrap();
        assert_eq!(meta["metadata"]["annotations"]["kcp.io/cluster"], "c");
        let d = o.with_revision(50);
        let v: Value = serde_json::from_slice(&d.json_for("c")).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "50");
        assert_eq!(v["metadata"]["annotations"]["kcp.io/cluster"], "c");
        assert_eq!(
            v["spec"],
            json!({"p": PLACEHOLDER, "resourceVersion": "42"})
        );
    }

    #[test]
    fn a_deleted_object_is_stamped_with_the_deletion_revision() {
        let o = unwrap_object(&wrapped("a", json!(1)), 42, &api()).unwrap();
        let d = o.with_revision(50);
        let v: Value = serde_json::from_slice(&d.json_for("c")).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "50");
        assert_eq!(d.revision, 50);
    }

    /// A CachedObject whose inner metadata is `metadata` plus a name.
    fn wrapped_with_metadata(mut metadata: Value) -> Bytes {
        metadata["name"] = json!("a");
        let inner = json!({"apiVersion": "g.io/v1", "kind": "Thing", "metadata": metadata});
        Bytes::from(serde_json::to_vec(&json!({"spec": {"raw": inner}})).unwrap())
    }

    #[test]
    fn an_object_holding_the_cluster_placeholder_is_served_with_its_consumer_as_cluster() {
        // Found by the `cached_object` fuzz target: the consumer went where the object's own
        // content first held the placeholder.
        let raw = wrapped_with_metadata(json!({
            "aNnotations": {"kcp.io/cluster": PLACEHOLDER},
            "annotations": {"a.io/x": PLACEHOLDER, "z.io/y": format!("x\"{PLACEHOLDER}")},
            "labels": {"kcp.io/cluster": PLACEHOLDER},
        }));
        let o = unwrap_object(&raw, 42, &api()).unwrap();
        let v: Value = serde_json::from_slice(&o.json_for("consumer-1")).unwrap();
        let want = json!({
            "aNnotations": {"kcp.io/cluster": PLACEHOLDER},
            "annotations": {"a.io/x": PLACEHOLDER, "kcp.io/cluster": "consumer-1",
                            "z.io/y": format!("x\"{PLACEHOLDER}")},
            "labels": {"kcp.io/cluster": PLACEHOLDER},
            "name": "a", "resourceVersion": "42", "uid": "",
        });
        assert_eq!(v["metadata"], want);
        let meta: Vec<u8> = o.metadata_parts(&[], b"\"consumer-1\"").concat();
        let meta: Value = serde_json::from_slice(&meta).unwrap();
        assert_eq!(meta["metadata"], want);
        let d = o.with_revision(50);
        let v: Value = serde_json::from_slice(&d.json_for("consumer-2")).unwrap();
        assert_eq!(v["metadata"]["annotations"]["kcp.io/cluster"], "consumer-2");
        assert_eq!(v["metadata"]["annotations"]["a.io/x"], PLACEHOLDER);
        assert_eq!(v["metadata"]["resourceVersion"], "50");
    }

    #[test]
    fn a_deletion_restamps_the_resource_version_not_a_label_with_the_same_text() {
        let raw = wrapped_with_metadata(json!({
            "annotations": {"resourceVersion": "42"},
            "labels": {"resourceVersion": "42"},
        }));
        let o = unwrap_object(&raw, 42, &api()).unwrap();
        let d = o.with_revision(50);
        let v: Value = serde_json::from_slice(&d.json_for("c")).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "50");
        assert_eq!(v["metadata"]["labels"]["resourceVersion"], "42");
        assert_eq!(v["metadata"]["annotations"]["resourceVersion"], "42");
        assert_eq!(v["metadata"]["annotations"]["kcp.io/cluster"], "c");
    }

    fn record(
        group: &str,
        resource: &str,
        cluster: &str,
        name: &str,
        revision: u64,
        value: Value,
    ) -> Record {
        Record {
            key: Arc::new(Key {
                group: group.into(),
                resource: resource.into(),
                shard: "root".into(),
                cluster: cluster.into(),
                namespace: Default::default(),
                name: name.into(),
            }),
            revision,
            value: Bytes::from(serde_json::to_vec(&value).unwrap()),
        }
    }

    fn catalog() -> Vec<Record> {
        let hash = "h";
        vec![
            record(
                "cache.kcp.io",
                "cachedresources",
                "p",
                "things-v1",
                2,
                json!({"metadata": {"name": "things-v1"},
                "spec": {"group": "g.io", "version": "v1", "resource": "things"},
                "status": {"identityHash": hash, "conditions": [{"type": "ResourceValid", "status": "True"}]}}),
            ),
            record(
                "apis.kcp.io",
                "apiresourceschemas",
                "p",
                "v1.things.g.io",
                3,
                json!({"metadata": {"name": "v1.things.g.io"},
                "spec": {"group": "g.io", "scope": "Cluster", "names": {"plural": "things", "kind": "Thing"},
                    "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"type": "object"}}]}}),
            ),
            record(
                "apis.kcp.io",
                "apiexports",
                "p",
                "e",
                4,
                json!({"metadata": {"name": "e"},
                "spec": {"resources": [{"group": "g.io", "name": "things", "schema": "v1.things.g.io",
                    "storage": {"virtual": {"reference": {"apiGroup": "cache.kcp.io", "kind": "CachedResourceEndpointSlice", "name": "things-v1"}, "identityHash": hash}}}]}}),
            ),
            record(
                "apis.kcp.io",
                "apibindings",
                "c1",
                "b",
                5,
                json!({"metadata": {"name": "b"}, "spec": {"reference": {"export": {"path": "p", "name": "e"}}}}),
            ),
            record(
                "core.kcp.io",
                "logicalclusters",
                "c1",
                "cluster",
                6,
                json!({"metadata": {"name": "cluster",
                "annotations": {ANN_RESOURCE_BINDINGS: "{\"things.g.io\":{\"n\":\"b\"}}"}}}),
            ),
            record(
                "apis.kcp.io",
                "apibindings",
                "c2",
                "b",
                7,
                json!({"metadata": {"name": "b"}, "spec": {"reference": {"export": {"path": "p", "name": "e"}}}}),
            ),
        ]
    }

    fn thing(name: &str, revision: u64) -> Record {
        thing_sized(name, json!(1), revision)
    }

    #[test]
    fn consumers_need_both_a_binding_and_the_logical_cluster_annotation() {
        let index = Index::new();
        let mut records = catalog();
        records.push(thing("a", 8));
        index.reset(&Listing {
            records,
            revision: 8,
        });
        let st = index.read();
        let served = &st.served[&("p".to_string(), "things-v1".to_string())];
        assert!(served.api.is_ok(), "{:?}", served.api.as_ref().err());
        assert_eq!(served.consumers.iter().cloned().collect::<Vec<_>>(), ["c1"]);
        assert_eq!(served.objects.len(), 1);
    }

    #[test]
    fn a_cached_resource_without_an_export_reports_the_resolution_error() {
        let index = Index::new();
        let records: Vec<Record> = catalog()
            .into_iter()
            .filter(|r| r.key.resource != "apiexports")
            .collect();
        index.reset(&Listing {
            records,
            revision: 8,
        });
        let st = index.read();
        let err = st.served[&("p".to_string(), "things-v1".to_string())]
            .api
            .clone()
            .unwrap_err();
        assert_eq!(err, "CachedResource p|things-v1 doesn't have an APIExport");
    }

    #[test]
    fn deleting_a_cached_object_emits_a_deleted_event_at_the_deletion_revision() {
        let index = Index::new();
        let mut records = catalog();
        records.push(thing("a", 8));
        index.reset(&Listing {
            records,
            revision: 8,
        });
        let co = thing("a", 8);
        index.apply(&Event {
            revision: 9,
            kind: EventKind::Deleted,
            key: co.key.clone(),
            value: co.value.clone(),
            prev: Some(co.value),
            prev_revision: 8,
        });
        let st = index.read();
        let served = &st.served[&("p".to_string(), "things-v1".to_string())];
        assert!(served.objects.is_empty());
        let events = served.events_after(8).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].change, Change::Deleted);
        assert_eq!(events[0].object.revision, 9);
        assert!(
            served.events_after(7).is_err(),
            "history starts at the sync revision"
        );
    }
    fn thing_sized(name: &str, size: Value, revision: u64) -> Record {
        let mut w: Value = serde_json::from_slice(&wrapped(name, size)).unwrap();
        w["metadata"]["labels"] = json!({LABEL_OBJECT_GROUP: "g.io", LABEL_OBJECT_VERSION: "v1", LABEL_OBJECT_RESOURCE: "things"});
        record(
            "cache.kcp.io",
            "cachedobjects",
            "p",
            &format!("co-{name}"),
            revision,
            w,
        )
    }

    /// The catalog with a schema that keeps the things' `spec.size` (an integer).
    fn catalog_keeping_size() -> Vec<Record> {
        let mut records = catalog();
        for r in &mut records {
            if r.key.resource == "apiresourceschemas" {
                let mut v: Value = serde_json::from_slice(&r.value).unwrap();
                v["spec"]["versions"][0]["schema"] = json!({"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}});
                r.value = Bytes::from(serde_json::to_vec(&v).unwrap());
            }
        }
        records
    }

    /// The inner object's text as `wrapped` embeds it.
    fn inner_text(stored: &Bytes) -> String {
        let v: Value = serde_json::from_slice(stored).unwrap();
        serde_json::to_string(&v["spec"]["raw"]).unwrap()
    }

    #[test]
    fn an_object_the_memo_vouches_for_is_served_as_validated_without_validating_it_again() {
        let a = api();
        let stored = wrapped("a", json!(1));
        let record = MemoUse {
            record: true,
            ..MemoUse::default()
        };
        let validated = unwrap_object_memo(&stored, 42, &a, record).unwrap();
        let digest = validated
            .digest()
            .expect("validated and served with its tail");
        let memo = Memo::of([digest]);
        let hits = AtomicU64::new(0);
        let known = MemoUse {
            known: Some(&memo),
            record: true,
            hits: Some(&hits),
        };
        let vouched = unwrap_object_memo(&stored, 42, &a, known).unwrap();
        assert_eq!(hits.load(Ordering::Relaxed), 1);
        assert_eq!(vouched.json_for("c1"), validated.json_for("c1"));
        assert_eq!(vouched.fields, validated.fields);
        assert_eq!(vouched.digest(), Some(digest));

        // The memo's word is taken: an invalid object it names is served unvalidated ...
        let bad = wrapped("b", json!("big"));
        assert!(unwrap_object(&bad, 1, &a).is_err());
        let text = inner_text(&bad);
        let memo = Memo::of([memo::digest(a.memo_context(true), text.as_bytes())]);
        let known = MemoUse {
            known: Some(&memo),
            ..MemoUse::default()
        };
        assert!(unwrap_object_memo(&bad, 1, &a, known).is_ok());
        // ... but only for the schema it was made under.
        let mut other = api();
        other.schema = Arc::new(json!({"type": "object", "description": "changed"}));
        assert!(unwrap_object_memo(&bad, 1, &other, known).is_err());
    }

    #[test]
    fn a_restarted_index_serves_from_its_memo_only_the_objects_whose_text_did_not_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("validated.memo");
        let listing = |size_b: Value| {
            let mut records = catalog_keeping_size();
            records.push(thing_sized("a", json!(1), 8));
            records.push(thing_sized("b", size_b, 9));
            Listing {
                records,
                revision: 9,
            }
        };
        let first = Index::new().with_memo_file(path.clone());
        first.reset(&listing(json!(2)));
        assert_eq!(first.save_memo().unwrap(), 2);
        assert_eq!(first.counters.memo_served_total.load(Ordering::Relaxed), 0);

        let again = Index::new().with_memo_file(path.clone());
        again.read_memo_file();
        again.reset(&listing(json!(2)));
        assert_eq!(again.counters.memo_served_total.load(Ordering::Relaxed), 2);
        let key = ("p".to_string(), "things-v1".to_string());
        let json = |index: &Index| -> Vec<Bytes> {
            index.read().served[&key]
                .objects
                .values()
                .map(|o| o.json_for("c1"))
                .collect()
        };
        assert_eq!(json(&again), json(&first));

        // Object b changed while the index was down: it is validated (and refused) again.
        let changed = Index::new().with_memo_file(path);
        changed.read_memo_file();
        changed.reset(&listing(json!("big")));
        assert_eq!(
            changed.counters.memo_served_total.load(Ordering::Relaxed),
            1
        );
        assert_eq!(changed.read().served[&key].objects.len(), 1);
        assert_eq!(changed.counters.invalid_total.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn served_objects_are_ordered_by_namespace_and_name_whatever_order_they_come_in() {
        let names = [
            ("", "bench-cpu-0000010"),
            ("b", "x"),
            ("", "bench-cpu-0000002"),
            ("a", "bench-cpu-00000000000000000000001"),
            ("a", "bench-cpu-00000000000000000000000"),
            ("", "bench-cpu-0000002"),
            ("", "bench"),
        ];
        let items: Vec<((String, String), usize)> = names
            .iter()
            .enumerate()
            .map(|(i, (ns, n))| ((ns.to_string(), n.to_string()), i))
            .collect();
        let expected: BTreeMap<(String, String), usize> = items.iter().cloned().collect();
        let got = map_by_name(items);
        assert_eq!(got, expected);
        assert_eq!(
            got[&(String::new(), "bench-cpu-0000002".to_string())],
            5,
            "the last one wins"
        );
    }

    proptest::proptest! {
        #[test]
        fn ordering_by_sort_keys_gives_the_map_inserting_one_by_one_gives(
            keys in proptest::collection::vec(("[ab]{0,2}", "(bench-cpu-0{0,20})?[0-9ab-]{0,20}"), 0..80)
        ) {
            let items: Vec<((String, String), usize)> =
                keys.into_iter().enumerate().map(|(i, k)| (k, i)).collect();
            let mut expected = BTreeMap::new();
            for (k, v) in items.clone() {
                expected.insert(k, v);
            }
            proptest::prop_assert_eq!(map_by_name(items), expected);
        }
    }

    /// An API whose schema the text check understands, with a selectable field.
    fn checked_api() -> ResolvedApi {
        let mut a = api();
        a.selectable_fields = vec!["spec.size".into(), "status.phase".into()];
        a.validator = Arc::new(
            Validator::compile(&json!({"type": "object", "properties": {
                "spec": {"type": "object", "required": ["size"], "properties": {
                    "size": {"type": "integer", "minimum": 0},
                    "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}}}},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"phase": {"type": "string", "default": "New"}}}}}))
            .unwrap(),
        );
        a
    }

    /// Served the full way: parsed into values, pruned, defaulted and validated.
    fn served_in_full(stored: &Bytes, api: &ResolvedApi) -> Result<ServedObject, String> {
        let wrapper: WrapperInner<'_> =
            serde_json::from_slice(stored).map_err(|e| e.to_string())?;
        let raw = wrapper.spec.raw.ok_or("no raw")?;
        let inner = Inner::parse(stored, raw.get(), "inner object", "spec.raw", Mode::Full)?;
        serve_inner(inner, 9, api, true, None)
    }

    proptest::proptest! {
        #[test]
        fn an_object_the_text_check_vouches_for_is_served_as_the_full_way_serves_it(
            order in proptest::strategy::Strategy::prop_shuffle(proptest::sample::subsequence(vec![0usize, 1, 2, 3, 4, 5], 3..=6)),
            size in proptest::prop_oneof![
                proptest::strategy::Just("3".to_string()),
                proptest::strategy::Just("-1".to_string()),
                proptest::strategy::Just("2.0".to_string()),
                proptest::strategy::Just("\"7\"".to_string()),
                proptest::strategy::Just("null".to_string()),
                proptest::strategy::Just("12345678901".to_string()),
            ],
            tags in proptest::collection::vec("[a-z\u{e9}]{0,7}", 0..3),
            phase in proptest::option::of("[A-Za-z\"\\\\]{0,6}"),
            spaced in proptest::bool::ANY,
            extra_spec in proptest::bool::ANY,
            wrapper in 0..4usize,
            metadata in proptest::sample::select(vec![
                r#"{"name":"n","labels":{"a":"b"}}"#,
                r#"{"labels":{"b":"1","a":"2","b":"3"},"namespace":"ns","name":"n"}"#,
                r#"{"name":"n","labels":{"a":"x","a":7,"c":true,"d":"e"}}"#,
                r#"{"name":"n","labels":null,"namespace":3}"#,
                r#"{"name":"n","labels":["a"],"name":"m"}"#,
                r#"{"name":"","labels":{}}"#,
                r#"{"name":7}"#,
                r#"{"name":"n\u0041","labels":{"k\"q":"v\n"},"annotations":{"x":"y"}}"#,
                r#"[1]"#,
            ]),
        ) {
            use proptest::prop_assert_eq;
            let (colon, comma) = if spaced { (" : ", " ,\n  ") } else { (":", ",") };
            let status = match &phase {
                Some(p) => format!("{{\"phase\"{colon}{},\"other\":[1,{{}}]}}", serde_json::to_string(p).unwrap()),
                None => "{\"other\":true}".to_string(),
            };
            let spec = format!(
                "{{\"size\"{colon}{size}{comma}\"tags\"{colon}{}{}}}",
                serde_json::to_string(&tags).unwrap(),
                if extra_spec { ",\"x\":1" } else { "" }
            );
            let members = [
                format!("\"apiVersion\"{colon}\"g.io/v1\""),
                format!("\"kind\"{colon}\"Thing\""),
                format!("\"metadata\"{colon}{metadata}"),
                format!("\"spec\"{colon}{spec}"),
                format!("\"status\"{colon}{status}"),
                format!("\"zeta\"{colon}0"),
            ];
            let body: Vec<&str> = order.iter().map(|&i| members[i].as_str()).collect();
            let inner = format!("{{ {} }}", body.join(comma));
            let stored = Bytes::from(match wrapper {
                0 => format!("{{\"spec\":{{\"raw\": {inner} }}}}"),
                1 => format!("{{\"metadata\":{{\"name\":\"x\"}},\"spec\":{{\"raw\":{inner},\"other\":[1]}} , \"status\":{{}}}}"),
                2 => format!("{{\"kind\":\"CachedObject\",\"spec\" : {{ \"raw\" :\n{inner}\n}}\n,\"status\":{{}} }}\n"),
                _ => format!("{{\"spec\":{{\"a\":{{\"raw\":1}},\"raw\":{inner}}},\"metadata\":{{\"labels\":{{}}}}}}"),
            });
            let a = checked_api();
            let full = served_in_full(&stored, &a);
            let parsed_wrapper: WrapperInner<'_> = serde_json::from_slice(&stored).unwrap();
            let text = parsed_wrapper.spec.raw.unwrap().get();
            let checked = Inner::parse(&stored, text, "inner object", "spec.raw", Mode::Checked(a.validator.text_check()))
                .and_then(|inner| serve_inner(inner, 9, &a, true, None));
            // In one pass over the CachedObject, the same.
            let fused = unwrap_checked(&stored, 9, &a, false);
            prop_assert_eq!(fused.is_some(), checked.is_ok());
            if let (Some(fused), Ok(checked)) = (&fused, &checked) {
                prop_assert_eq!(fused.json_for("c1"), checked.json_for("c1"));
                prop_assert_eq!(&fused.fields, &checked.fields);
                prop_assert_eq!(&fused.labels, &checked.labels);
            }
            // The memo's way (it vouches for objects served from their stored text before).
            let trusted = Inner::parse(&stored, text, "inner object", "spec.raw", Mode::Trusted)
                .and_then(|inner| serve_inner(inner, 9, &a, true, None));
            if let Ok(checked) = checked {
                let trusted = trusted.expect("the memo's way serves what the check vouched for");
                prop_assert_eq!(trusted.json_for("c1"), checked.json_for("c1"));
                prop_assert_eq!(&trusted.labels, &checked.labels);
                prop_assert_eq!(&trusted.fields, &checked.fields);
                prop_assert_eq!((&trusted.namespace, &trusted.name), (&checked.namespace, &checked.name));
                let full = full.expect("the full way serves what the check vouched for");
                prop_assert_eq!(checked.json_for("c1"), full.json_for("c1"));
                prop_assert_eq!(&checked.fields, &full.fields);
                prop_assert_eq!(&checked.labels, &full.labels);
                prop_assert_eq!((&checked.namespace, &checked.name), (&full.namespace, &full.name));
            }
        }
    }

    #[test]
    fn a_cached_object_with_a_repeated_member_is_left_to_the_usual_way_which_refuses_it() {
        let a = checked_api();
        let inner =
            r#"{"apiVersion":"g.io/v1","kind":"Thing","metadata":{"name":"n"},"spec":{"size":3}}"#;
        for text in [
            format!(r#"{{"spec":{{"raw":{inner},"raw":{inner}}}}}"#),
            format!(r#"{{"spec":{{"raw":{inner}}},"spec":{{"raw":{inner}}}}}"#),
            format!(r#"{{"metadata":{{}},"spec":{{"raw":{inner}}},"metadata":{{}}}}"#),
            format!(r#"{{"spec":{{"raw":{inner}}}}} trailing"#),
        ] {
            let stored = Bytes::from(text.clone());
            assert!(unwrap_checked(&stored, 1, &a, false).is_none(), "{text}");
            assert!(unwrap_object(&stored, 1, &a).is_err(), "{text}");
        }
        let fine = Bytes::from(format!(r#"{{"spec":{{"raw":{inner}}}}}"#));
        assert!(unwrap_checked(&fine, 1, &a, false).is_some());
    }

    #[test]
    fn the_text_check_serves_a_typical_object_without_the_full_way() {
        let a = checked_api();
        let stored = Bytes::from(format!(
            r#"{{"spec":{{"raw":{{"apiVersion":"g.io/v1","kind":"Thing","metadata":{{"name":"n","annotations":{{"{ANN_ORIGINAL_UID}":"u"}}}},"spec":{{"size":3,"tags":["a"]}},"status":{{"phase":"Up","more":1}}}}}}}}"#
        ));
        let text = {
            let wrapper: WrapperInner<'_> = serde_json::from_slice(&stored).unwrap();
            wrapper.spec.raw.unwrap().get().to_string()
        };
        let at = stored
            .windows(text.len())
            .position(|w| w == text.as_bytes())
            .unwrap();
        let text = std::str::from_utf8(&stored[at..at + text.len()]).unwrap();
        let inner = Inner::parse(
            &stored,
            text,
            "inner object",
            "spec.raw",
            Mode::Checked(a.validator.text_check()),
        )
        .expect("vouched for");
        let served = serve_inner(inner, 9, &a, true, None).unwrap();
        assert_eq!(
            served.fields.iter().map(|(_, v)| &**v).collect::<Vec<_>>(),
            ["3", "Up"]
        );
        // Without the defaulted member the check leaves it to the full way, which fills it in
        // (and selects by the value filled in).
        let no_phase = Bytes::from(
            String::from_utf8(stored.to_vec())
                .unwrap()
                .replace(r#""phase":"Up","#, ""),
        );
        let full = served_in_full(&no_phase, &a).unwrap();
        assert_eq!(
            full.fields.iter().map(|(_, v)| &**v).collect::<Vec<_>>(),
            ["3", "New"]
        );
        let wrapper: WrapperInner<'_> = serde_json::from_slice(&no_phase).unwrap();
        let text = wrapper.spec.raw.unwrap().get();
        assert!(
            Inner::parse(
                &no_phase,
                text,
                "inner object",
                "spec.raw",
                Mode::Checked(a.validator.text_check())
            )
            .is_err()
        );
    }

    #[test]
    fn the_resource_a_cached_object_names_is_read_as_its_labels_name_it() {
        let g = LABEL_OBJECT_GROUP;
        let v = LABEL_OBJECT_VERSION;
        let r = LABEL_OBJECT_RESOURCE;
        for text in [
            format!(
                r#"{{"metadata":{{"labels":{{"{g}":"g.io","{v}":"v1","{r}":"things"}}}},"spec":{{}}}}"#
            ),
            format!(
                r#"{{"kind":"CachedObject","metadata":{{"name":"x","labels":{{"{r}":"things","{g}":"g.io","{v}":"v1","{g}":"h.io"}}}}}}"#
            ),
            format!(
                r#"{{"metadata":{{"labels":{{"{g}":"g\u002eio","{v}":"v1","{r}":"things"}}}}}}"#
            ),
            format!(r#"{{"metadata":{{"labels":{{"{g}":"g.io","{v}":1,"{r}":"things"}}}}}}"#),
            format!(r#"{{"metadata":{{"labels":{{"{g}":"g.io"}},"labels":{{"{v}":"v1"}}}}}}"#),
            r#"{"metadata":{"labels":null}}"#.to_string(),
            r#"{"metadata":{"name":"x"},"spec":{"raw":{}}}"#.to_string(),
            format!(
                r#"{{"spec":{{"raw":{{"x":[1,2]}}}},"metadata":{{"labels":{{"{r}":"things"}}}}}}"#
            ),
            r#"{"spec":{}}"#.to_string(),
            format!(r#"{{"metadata":{{"labels":{{"{r}":"things"}}}},"spec":[broken"#),
            "not json".to_string(),
        ] {
            let value = Bytes::from(text.clone());
            let fast = raw_cached(7, &value);
            let slow = RawCached::new(7, &value, &wrapper_labels(&value));
            assert_eq!(fast.gvr, slow.gvr, "{text}");
            assert_eq!(fast.revision, 7);
        }
    }

    #[test]
    fn a_cached_objects_labels_are_read_wherever_metadata_is_and_even_when_the_rest_is_broken() {
        let labels = |text: &str| wrapper_labels(text.as_bytes());
        let want: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
        assert_eq!(
            labels(r#"{"kind":"CachedObject","metadata":{"labels":{"a":"1"}},"spec":{}}"#),
            want
        );
        assert_eq!(
            labels(r#"{"spec":{"raw":{"x":[1,2]}},"metadata":{"labels":{"a":"1"}}}"#),
            want
        );
        assert_eq!(
            labels(r#"{"metadata":{"labels":{"a":"1"}},"spec":{"raw": nope"#),
            want
        );
        assert!(labels("not json").is_empty());
        assert!(labels(r#"{"metadata":{"labels":{"a":1}}}"#).is_empty());
        assert!(labels(r#"{"spec":{}}"#).is_empty());
    }

    #[test]
    fn a_broken_cached_object_with_readable_labels_is_refused_and_counted_on_list_and_on_watch() {
        let mut broken = thing("a", 8);
        let text = String::from_utf8(broken.value.to_vec()).unwrap();
        let cut = text.find("\"spec\"").unwrap();
        broken.value = Bytes::from(format!("{}\"spec\":{{\"raw\": nope}}}}", &text[..cut]));
        let index = Index::new();
        let mut records = catalog();
        records.push(broken.clone());
        index.reset(&Listing {
            records,
            revision: 8,
        });
        assert_eq!(index.counters.invalid_total.load(Ordering::Relaxed), 1);
        index.apply(&Event {
            revision: 9,
            kind: EventKind::Updated,
            key: broken.key.clone(),
            value: broken.value.clone(),
            prev: Some(broken.value.clone()),
            prev_revision: 8,
        });
        assert_eq!(index.counters.invalid_total.load(Ordering::Relaxed), 2);
        let st = index.read();
        assert!(
            st.served[&("p".to_string(), "things-v1".to_string())]
                .objects
                .is_empty()
        );
    }

    #[test]
    fn a_served_object_is_found_by_name_after_every_change_as_in_the_ordered_map() {
        let index = Index::new();
        let mut records = catalog_keeping_size();
        records.push(thing_sized("a", json!(1), 8));
        records.push(thing_sized("b", json!(2), 8));
        index.reset(&Listing {
            records,
            revision: 8,
        });
        let key = ("p".to_string(), "things-v1".to_string());
        let agree = |index: &Index| {
            let st = index.read();
            let served = &st.served[&key];
            for name in ["a", "b", "c"] {
                let by_name = served.object("", name).map(|o| o.revision);
                let ordered = served
                    .objects
                    .get(&(Arc::from(""), Arc::from(name)))
                    .map(|o| o.revision);
                assert_eq!(by_name, ordered, "{name}");
            }
        };
        agree(&index);
        let event = |kind, r: Record, revision| Event {
            revision,
            kind,
            key: r.key.clone(),
            value: r.value.clone(),
            prev: None,
            prev_revision: 0,
        };
        index.apply(&event(EventKind::Created, thing_sized("c", json!(3), 9), 9));
        index.apply(&event(
            EventKind::Updated,
            thing_sized("a", json!(4), 10),
            10,
        ));
        index.apply(&event(
            EventKind::Deleted,
            thing_sized("b", json!(2), 11),
            11,
        ));
        agree(&index);
        let st = index.read();
        assert_eq!(
            st.served[&key].object("", "a").map(|o| o.revision),
            Some(10)
        );
        assert!(st.served[&key].object("", "b").is_none());
    }
}
