//! The read seam: what readers take from the cache — every resource they need, listed at one
//! revision, then watched from it.
//!
//! [`StoreRead`] is the in-process implementation over a [`Store`]. [`HttpsRead`] lists each
//! resource of [`READ_RESOURCES`] from a remote cache server (the first at its current revision,
//! the others exactly at that revision, in pages), then watches each from it with bookmarks and
//! merges the streams. A watch that ends is reopened from the last revision it saw; a failure is
//! retried with capped exponential back-off and jitter while readers keep their state. Before
//! reopening after a failure it asks the cache for its revision: a revision that went backwards,
//! or a new cache-server instance, means the cache restarted empty, and the stream reports
//! [`StoreError::Expired`] so the reader relists (as it does on a `410 Gone`).
//!
//! Objects stored as themselves (kcp v0.32 and main, `kcp-head.md` §2) live in collections named
//! `<plural>:<identity>`, one per publisher: the reader derives them from the listed v0.32
//! CachedResources and ClusterCachedResources, lists and watches them too, and reports
//! `Expired` when a publisher of a collection it does not watch yet appears, so that the
//! next list includes it (a new publisher is rare; a relist is the simple way to start
//! reading it at a consistent revision).

use super::{Backoff, CacheError, Collection, Connection, ListError, list_collection, record_of};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use store::{Event, EventKind, Listing, Scope, Store, StoreError, WatchStream};

/// The header a cache server of ours answers with: an id of the running instance, new at every
/// start (a restarted memory cache is empty).
pub const INSTANCE_HEADER: &str = "x-cache-server-instance";

/// (group, version, resource) the virtual workspace's index and the shards read from the cache.
pub const READ_RESOURCES: &[(&str, &str, &str)] = &[
    ("core.kcp.io", "v1alpha1", "logicalclusters"),
    ("core.kcp.io", "v1alpha1", "shards"),
    ("apis.kcp.io", "v1alpha1", "apiresourceschemas"),
    ("apis.kcp.io", "v1alpha2", "apiexports"),
    ("apis.kcp.io", "v1alpha2", "apibindings"),
    ("rbac.authorization.k8s.io", "v1", "clusterroles"),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
    ("cache.kcp.io", "v1alpha1", "cachedresources"),
    ("cache.kcp.io", "v1alpha1", "cachedresourceendpointslices"),
    ("cache.kcp.io", "v1alpha1", "clustercachedresources"),
    (
        "cache.kcp.io",
        "v1alpha1",
        "clustercachedresourceendpointslices",
    ),
    ("cache.kcp.io", "v1alpha1", "cachedobjects"),
];

/// What the virtual workspace reads from a kcp shard (`--shard-kubeconfig`): kcp does not
/// replicate APIBindings to the cache, and LogicalClusters only when marked.
pub const SHARD_READ_RESOURCES: &[(&str, &str, &str)] = &[
    ("core.kcp.io", "v1alpha1", "logicalclusters"),
    ("apis.kcp.io", "v1alpha2", "apibindings"),
];

/// A collection of a fixed or an identity-based resource: (group, version, resource).
type Gvr = (&'static str, &'static str, &'static str);

/// One `'static` copy of each distinct string (identity collections are few and long-lived).
fn intern(s: &str) -> &'static str {
    static INTERNED: std::sync::OnceLock<Mutex<std::collections::HashSet<&'static str>>> =
        std::sync::OnceLock::new();
    let mut set = INTERNED.get_or_init(Default::default).lock();
    if let Some(found) = set.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// The identity collection a publisher's record names: a ClusterCachedResource, or a
/// CachedResource of the v0.32 generation, with an identity and both annotations the cache
/// server resolves it by.
fn identity_collection(record: &store::Record) -> Option<Gvr> {
    if record.key.group != "cache.kcp.io"
        || !matches!(
            record.key.resource.as_str(),
            "cachedresources" | "clustercachedresources"
        )
    {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&record.value).ok()?;
    let text = |p: &str| {
        v.pointer(p)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
    };
    let annotated = !text("/metadata/annotations/cache.kcp.io~1resource-kind").is_empty()
        && !text("/metadata/annotations/cache.kcp.io~1resource-scope").is_empty();
    let (hash, version) = (text("/status/identityHash"), text("/spec/version"));
    if !annotated || hash.is_empty() || version.is_empty() {
        return None;
    }
    Some((
        intern(text("/spec/group")),
        intern(version),
        intern(&format!("{}:{hash}", text("/spec/resource"))),
    ))
}

/// How the reader's connection to the cache is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadHealth {
    /// Where it reads from ("in-process" or the cache server's URL).
    pub source: String,
    /// `None` while reachable; otherwise since when and why not.
    pub outage: Option<String>,
    /// How far behind the source the reader is (`None` in-process, where it cannot be): the
    /// time from a probe of the source's revision until the reader had seen that revision, or,
    /// while it has not yet, the time since that probe.
    pub lag: Option<Duration>,
    /// While a list (the first sync, or a relist) runs: how far it is.
    pub syncing: Option<String>,
}

/// How often a remote reader probes its source's revision for [`ReadHealth::lag`].
pub const LAG_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// The reader's lag measurement: one probe outstanding at a time.
#[derive(Debug, Default)]
struct Lag {
    /// The revision of the outstanding probe (0: none): checked on every revision seen.
    waiting_for: AtomicU64,
    /// When the outstanding probe was sent, and the last lag measured.
    state: Mutex<(Option<Instant>, Duration)>,
}

impl Lag {
    /// The reader has seen `rev`: settle the outstanding probe if this reaches it.
    fn saw(&self, rev: u64) {
        self.saw_at(rev, Instant::now());
    }

    fn saw_at(&self, rev: u64, now: Instant) {
        let want = self.waiting_for.load(Ordering::Acquire);
        if want == 0 || rev < want {
            return;
        }
        let mut st = self.state.lock();
        if self.waiting_for.swap(0, Ordering::AcqRel) != 0
            && let Some(sent) = st.0.take()
        {
            st.1 = now.saturating_duration_since(sent);
        }
    }

    /// The source's revision was `rev` at `sent`; `seen` is what the reader had at `now`.
    fn probed(&self, sent: Instant, rev: u64, seen: u64, now: Instant) {
        let mut st = self.state.lock();
        if rev <= seen {
            st.0 = None;
            st.1 = now.saturating_duration_since(sent);
            self.waiting_for.store(0, Ordering::Release);
        } else if st.0.is_none() {
            st.0 = Some(sent);
            self.waiting_for.store(rev, Ordering::Release);
        }
    }

    fn current(&self) -> Duration {
        self.current_at(Instant::now())
    }

    fn current_at(&self, now: Instant) -> Duration {
        let st = self.state.lock();
        match st.0 {
            Some(sent) => st.1.max(now.saturating_duration_since(sent)),
            None => st.1,
        }
    }
}

/// What readers take from the cache.
#[async_trait]
pub trait CacheRead: Send + Sync + 'static {
    /// Everything readers need, at one revision.
    async fn list(&self) -> Result<Listing, StoreError>;
    /// Changes after `after`; [`StoreError::Expired`] in the stream means: relist.
    async fn watch(&self, after: u64) -> Result<WatchStream, StoreError>;
    /// The connection's state, for `/readyz?verbose`.
    fn health(&self) -> ReadHealth;
}

/// The in-process reader over the cache's own store.
#[derive(Clone)]
pub struct StoreRead(pub Arc<dyn Store>);

#[async_trait]
impl CacheRead for StoreRead {
    async fn list(&self) -> Result<Listing, StoreError> {
        self.0.list(&Scope::all()).await
    }

    async fn watch(&self, after: u64) -> Result<WatchStream, StoreError> {
        self.0.watch(Scope::all(), after).await
    }

    fn health(&self) -> ReadHealth {
        ReadHealth {
            source: "in-process".into(),
            outage: None,
            lag: None,
            syncing: None,
        }
    }
}

#[derive(Debug, Default)]
struct Health {
    /// Since when and why the cache is unreachable.
    outage: Mutex<Option<(Instant, String)>>,
    /// The cache-server instance first seen.
    instance: Mutex<Option<String>>,
}

impl Health {
    fn down(&self, why: &str) {
        let mut o = self.outage.lock();
        match &mut *o {
            Some((_, msg)) => *msg = why.to_string(),
            None => {
                tracing::warn!(
                    error = why,
                    "The cache server is unreachable; serving the last synced state."
                );
                *o = Some((Instant::now(), why.to_string()));
            }
        }
    }

    fn up(&self) {
        if let Some((since, _)) = self.outage.lock().take() {
            tracing::info!(after = ?since.elapsed(), "The cache server is reachable again.");
        }
    }

    /// Whether `instance` (from a response) is another cache-server instance than before.
    fn restarted(&self, instance: Option<&str>) -> bool {
        let Some(instance) = instance else {
            return false;
        };
        let mut known = self.instance.lock();
        match &*known {
            Some(k) if k == instance => false,
            Some(_) => {
                *known = Some(instance.to_string());
                true
            }
            None => {
                *known = Some(instance.to_string());
                false
            }
        }
    }
}

/// A remote cache server read over HTTPS.
#[derive(Clone)]
pub struct HttpsRead {
    conn: Connection,
    health: Arc<Health>,
    /// The highest revision seen in any list or event.
    seen: Arc<AtomicU64>,
    /// How far behind the source the reader is.
    lag: Arc<Lag>,
    /// The progress of the list running now (objects and bytes read).
    progress: Arc<store::progress::Progress>,
    /// Whether a list runs now.
    listing: Arc<std::sync::atomic::AtomicBool>,
    /// The identity collections of the last list (watched with the fixed ones).
    identity: Arc<Mutex<std::collections::BTreeSet<Gvr>>>,
    /// The fixed collections read.
    resources: &'static [Gvr],
}

impl HttpsRead {
    /// A reader of the cache server behind `conn`.
    pub fn new(conn: Connection) -> Self {
        HttpsRead {
            conn,
            health: Arc::new(Health::default()),
            seen: Arc::new(AtomicU64::new(0)),
            lag: Arc::default(),
            progress: Arc::new(store::progress::Progress::new("syncing")),
            listing: Arc::default(),
            identity: Arc::default(),
            resources: READ_RESOURCES,
        }
    }

    /// Every collection read, at one revision (see [`CacheRead::list`]), counted into the
    /// reader's progress.
    async fn list_all(&self) -> Result<Listing, StoreError> {
        self.progress
            .stage(format!("syncing from {}", self.conn.base), None);
        let fail = |e: CacheError| {
            self.health.down(&e.to_string());
            StoreError::Internal(e.to_string())
        };
        'attempt: for _ in 0..LIST_ATTEMPTS {
            // The instance first: a list is a fresh start on whatever instance answers.
            if let Ok(resp) = self
                .conn
                .client()
                .get(self.conn.url("/readyz"))
                .send()
                .await
            {
                let instance = resp
                    .headers()
                    .get(INSTANCE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                self.health.restarted(instance.as_deref());
            }
            let mut records = Vec::new();
            let mut revision = None;
            for r in self.resources {
                match list_collection(&self.conn, collection(r), revision).await {
                    Ok((mut rs, rev)) => {
                        revision.get_or_insert(rev);
                        self.count(&rs);
                        records.append(&mut rs);
                    }
                    Err(ListError::Expired) => continue 'attempt,
                    Err(ListError::Cache(e)) => return Err(fail(e)),
                }
            }
            let identity: std::collections::BTreeSet<Gvr> =
                records.iter().filter_map(identity_collection).collect();
            for r in &identity {
                match list_collection(&self.conn, collection(r), revision).await {
                    Ok((mut rs, _)) => {
                        self.count(&rs);
                        records.append(&mut rs)
                    }
                    Err(ListError::Expired) => continue 'attempt,
                    // A publisher the cache does not resolve (yet): nothing to read there.
                    Err(ListError::Cache(CacheError::NotFound)) => {}
                    Err(ListError::Cache(e)) => return Err(fail(e)),
                }
            }
            *self.identity.lock() = identity;
            let revision = revision.unwrap_or(0);
            self.health.up();
            // A new listing is the new baseline, also when the cache restarted lower.
            self.seen.store(revision, Ordering::Release);
            self.lag.saw(revision);
            records.sort_by(|a, b| a.key.cmp(&b.key));
            return Ok(Listing { records, revision });
        }
        Err(StoreError::Internal(
            "the cache's history moved on during every list attempt".into(),
        ))
    }

    fn count(&self, records: &[store::Record]) {
        let bytes: usize = records.iter().map(|r| r.value.len()).sum();
        self.progress.add(records.len() as u64, bytes as u64);
    }

    /// A reader of a kcp shard's LogicalClusters and APIBindings ([`SHARD_READ_RESOURCES`]),
    /// through its wildcard endpoints.
    pub fn shard(conn: Connection) -> Self {
        HttpsRead {
            resources: SHARD_READ_RESOURCES,
            ..HttpsRead::new(conn.into_shard())
        }
    }
}

fn collection(&(group, version, resource): &Gvr) -> Collection<'static> {
    Collection {
        group,
        version,
        resource,
        shard: None,
        cluster: None,
    }
}

/// Lists tried before a list at one revision gives up (each retry starts at a newer one).
const LIST_ATTEMPTS: usize = 5;

#[async_trait]
impl CacheRead for HttpsRead {
    async fn list(&self) -> Result<Listing, StoreError> {
        self.listing.store(true, Ordering::Release);
        let started = Instant::now();
        let result = self.list_all().await;
        self.listing.store(false, Ordering::Release);
        if let Ok(l) = &result {
            let f = self.progress.snapshot();
            tracing::info!(
                source = %self.conn.base,
                objects = l.records.len(),
                bytes = f.bytes,
                elapsed = ?started.elapsed(),
                "Listed the source."
            );
        }
        result
    }

    async fn watch(&self, after: u64) -> Result<WatchStream, StoreError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Arc<Event>, StoreError>>(4096);
        let mut tasks = tokio::task::JoinSet::new();
        let identity = self.identity.lock().clone();
        for r in self.resources.iter().chain(&identity) {
            tasks.spawn(watch_resource(
                self.clone(),
                collection(r),
                after,
                tx.clone(),
            ));
        }
        drop(tx);
        tasks.spawn(probe_lag(self.clone()));
        // The tasks live as long as the stream: dropping it aborts them.
        let stream = futures_util::stream::unfold(
            (rx, tasks, identity),
            |(mut rx, tasks, identity)| async move {
                let item = rx.recv().await?;
                // A publisher of a collection not watched yet: relist to start reading it.
                let item = match item {
                    Ok(ev) if ev.kind != EventKind::Deleted => {
                        let record = store::Record {
                            key: ev.key.clone(),
                            revision: ev.revision,
                            value: ev.value.clone(),
                        };
                        match identity_collection(&record) {
                            Some(c) if !identity.contains(&c) => Err(StoreError::Expired {
                                requested: ev.revision,
                                oldest: 0,
                            }),
                            _ => Ok(ev),
                        }
                    }
                    other => other,
                };
                Some((item, (rx, tasks, identity)))
            },
        );
        Ok(stream.boxed())
    }

    fn health(&self) -> ReadHealth {
        ReadHealth {
            source: self.conn.base.clone(),
            outage: self.health.outage.lock().as_ref().map(|(since, why)| {
                format!("unreachable for {}s: {why}", since.elapsed().as_secs())
            }),
            lag: Some(self.lag.current()),
            syncing: self
                .listing
                .load(Ordering::Acquire)
                .then(|| self.progress.describe()),
        }
    }
}

/// One line of a watch response.
#[derive(serde::Deserialize)]
struct WatchLine<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow)]
    object: &'a serde_json::value::RawValue,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct StatusView {
    code: u16,
    message: String,
    metadata: RvView,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct RvView {
    #[serde(rename = "resourceVersion")]
    resource_version: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct BookmarkView {
    metadata: RvView,
}

/// How one watch request ended.
enum Ended {
    /// The server closed it (timeout): reopen at once.
    Closed,
    /// It failed: reopen after a back-off and a restart check.
    Failed(String),
    /// The history is gone or the cache restarted: the reader must relist.
    Expired(u64),
    /// The reader is gone.
    Dropped,
}

async fn watch_resource(
    reader: HttpsRead,
    at: Collection<'static>,
    after: u64,
    tx: tokio::sync::mpsc::Sender<Result<Arc<Event>, StoreError>>,
) {
    let mut last = after;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut failed = false;
    loop {
        if failed {
            tokio::time::sleep(backoff.next_delay()).await;
            match probe(&reader, at).await {
                Ok(true) => {
                    let _ = tx
                        .send(Err(StoreError::Expired {
                            requested: last,
                            oldest: 0,
                        }))
                        .await;
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    reader.health.down(&e.to_string());
                    continue;
                }
            }
        }
        match watch_once(&reader, at, &mut last, &tx).await {
            Ended::Closed => {
                failed = false;
                backoff.reset();
            }
            Ended::Failed(why) => {
                reader.health.down(&why);
                failed = true;
            }
            Ended::Expired(rev) => {
                let _ = tx
                    .send(Err(StoreError::Expired {
                        requested: rev,
                        oldest: 0,
                    }))
                    .await;
                return;
            }
            Ended::Dropped => return,
        }
    }
}

/// Whether the cache restarted since we last saw it (its revision went backwards or another
/// instance answers); an error when it cannot be reached.
/// Every [`LAG_PROBE_INTERVAL`] while the reader watches: ask the source for its revision (a
/// one-item list of the first collection) and let the reader's events settle the measurement.
async fn probe_lag(reader: HttpsRead) {
    let Some(first) = reader.resources.first() else {
        return;
    };
    loop {
        tokio::time::sleep(LAG_PROBE_INTERVAL).await;
        let sent = Instant::now();
        let resp = reader
            .conn
            .client()
            .get(reader.conn.collection_url(&collection(first)))
            .query(&[("limit", "1")])
            .send()
            .await;
        let Ok(resp) = resp else { continue };
        if !resp.status().is_success() {
            continue;
        }
        let Ok(body) = resp.bytes().await else {
            continue;
        };
        if let Some(rev) = serde_json::from_slice::<BookmarkView>(&body)
            .ok()
            .and_then(|v| v.metadata.resource_version.parse::<u64>().ok())
        {
            reader.lag.probed(
                sent,
                rev,
                reader.seen.load(Ordering::Acquire),
                Instant::now(),
            );
        }
    }
}

async fn probe(reader: &HttpsRead, at: Collection<'_>) -> Result<bool, CacheError> {
    let resp = reader
        .conn
        .client()
        .get(reader.conn.collection_url(&at))
        .query(&[("limit", "1")])
        .send()
        .await
        .map_err(|e| CacheError::Unavailable(e.to_string()))?;
    let instance = resp
        .headers()
        .get(INSTANCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if !resp.status().is_success() {
        return Err(super::error_of(resp).await);
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| CacheError::Unavailable(e.to_string()))?;
    let rev: u64 = serde_json::from_slice::<BookmarkView>(&body)
        .ok()
        .and_then(|v| v.metadata.resource_version.parse().ok())
        .unwrap_or(0);
    let restarted =
        reader.health.restarted(instance.as_deref()) || rev < reader.seen.load(Ordering::Acquire);
    if restarted {
        tracing::warn!(
            revision = rev,
            seen = reader.seen.load(Ordering::Acquire),
            "The cache server restarted without its data; relisting."
        );
    }
    Ok(restarted)
}

async fn watch_once(
    reader: &HttpsRead,
    at: Collection<'static>,
    last: &mut u64,
    tx: &tokio::sync::mpsc::Sender<Result<Arc<Event>, StoreError>>,
) -> Ended {
    // The server ends a watch after this long; it is reopened from the last revision.
    let timeout = 300 + rand::random::<u64>() % 300;
    let resp = reader
        .conn
        .stream_client()
        .get(reader.conn.collection_url(&at))
        .query(&[
            ("watch", "true".to_string()),
            ("allowWatchBookmarks", "true".to_string()),
            ("resourceVersion", last.to_string()),
            ("timeoutSeconds", timeout.to_string()),
        ])
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Ended::Failed(e.to_string()),
    };
    if resp.status().as_u16() == 410 {
        return Ended::Expired(*last);
    }
    if !resp.status().is_success() {
        return Ended::Failed(super::error_of(resp).await.to_string());
    }
    reader.health.up();
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk: Bytes = match body.next().await {
            None => return Ended::Closed,
            Some(Err(e)) => return Ended::Failed(e.to_string()),
            Some(Ok(c)) => c,
        };
        buf.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(nl) = memchr::memchr(b'\n', &buf[start..]) {
            let line = &buf[start..start + nl];
            start += nl + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match handle_line(reader, at, line, last) {
                Line::Event(ev) => {
                    if tx.send(Ok(Arc::new(ev))).await.is_err() {
                        return Ended::Dropped;
                    }
                }
                Line::Nothing => {}
                Line::End(e) => return e,
            }
        }
        buf.drain(..start);
    }
}

enum Line {
    Event(Event),
    Nothing,
    End(Ended),
}

fn handle_line(reader: &HttpsRead, at: Collection<'_>, line: &[u8], last: &mut u64) -> Line {
    let Ok(parsed) = serde_json::from_slice::<WatchLine<'_>>(line) else {
        return Line::End(Ended::Failed(
            "the cache sent an undecodable watch event".into(),
        ));
    };
    let raw = parsed.object.get().as_bytes();
    let kind = match parsed.kind.as_str() {
        "ADDED" => EventKind::Created,
        "MODIFIED" => EventKind::Updated,
        "DELETED" => EventKind::Deleted,
        "BOOKMARK" => {
            if let Ok(b) = serde_json::from_slice::<BookmarkView>(raw)
                && let Ok(rev) = b.metadata.resource_version.parse::<u64>()
            {
                *last = (*last).max(rev);
                reader.seen.fetch_max(rev, Ordering::AcqRel);
                reader.lag.saw(rev);
            }
            return Line::Nothing;
        }
        "ERROR" => {
            let status: StatusView = serde_json::from_slice(raw).unwrap_or_default();
            if status.code == 410 {
                return Line::End(Ended::Expired(*last));
            }
            let _ = status.metadata.resource_version;
            return Line::End(Ended::Failed(format!(
                "watch error {}: {}",
                status.code, status.message
            )));
        }
        other => {
            return Line::End(Ended::Failed(format!("unknown watch event type {other:?}")));
        }
    };
    let Some(record) = record_of(at.group, at.resource, raw) else {
        tracing::warn!(
            resource = at.resource,
            "The cache sent an object without name or kcp.io/cluster; skipped."
        );
        return Line::Nothing;
    };
    *last = (*last).max(record.revision);
    reader.seen.fetch_max(record.revision, Ordering::AcqRel);
    reader.lag.saw(record.revision);
    Line::Event(Event {
        revision: record.revision,
        kind,
        key: record.key,
        value: record.value,
        prev: None::<Bytes>,
        prev_revision: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_grows_while_the_reader_is_behind_a_probe_and_settles_when_it_catches_up() {
        let lag = Lag::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        lag.probed(t0, 10, 7, at(0));
        assert_eq!(
            lag.current_at(at(3)),
            Duration::from_secs(3),
            "behind for 3 s"
        );
        lag.saw_at(9, at(3));
        assert_eq!(
            lag.current_at(at(4)),
            Duration::from_secs(4),
            "still behind"
        );
        lag.saw_at(10, at(4));
        assert_eq!(
            lag.current_at(at(9)),
            Duration::from_secs(4),
            "caught up after 4 s"
        );
        // A probe the reader had already seen costs only its own round trip.
        lag.probed(at(10), 10, 12, at(10));
        assert_eq!(lag.current_at(at(20)), Duration::ZERO);
    }
}
