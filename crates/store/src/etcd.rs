//! The etcd backend: etcd holds the data, a [`MemoryStore`] in front of it is the watch cache
//! every get, list, watch and page is served from.
//!
//! **Keys** follow kcp's layout: `<prefix>/<group>/<resource>/<shard>/<cluster>/[<namespace>/]<name>`
//! (`core` for the empty group; `<plural>:<identityHash>` as the resource of identity-based
//! objects; without the shard segment on a shard, whose keys have none). **Revisions** are
//! etcd's: a record's revision is its key's `mod_revision`, and the watch cache's revision
//! follows the events and progress notifications of one prefix watch.
//!
//! **Sync.** [`EtcdStore::open`] connects (retrying with capped back-off and a log line per
//! failure), lists the prefix in pages at one revision, then a task watches from the next
//! revision with progress notifications. A watch that breaks is reopened from the last applied
//! revision; if etcd compacted that history meanwhile, the prefix is listed again and the
//! differences are applied as events (puts at their `mod_revision`, deletions at the list's
//! revision), so watchers of the cache never see a gap or an event twice.
//!
//! **Consistent lists.** A list asks etcd for its current revision (a one-key count request),
//! asks the watch for progress, and waits up to a second for the cache to reach that revision;
//! otherwise it reads the list from etcd at that revision. While etcd cannot be reached lists
//! are served from the cache ([`EtcdStore::outage`] says since when).
//!
//! **Writes** are transactions: create compares `create_revision == 0`, an update or delete with
//! an expected revision compares `mod_revision`; a refused transaction reads the key to answer
//! NotFound or Conflict. A write is acknowledged once etcd committed it, after the cache applied
//! it (or a second passed). Unreachable etcd is [`StoreError::Unavailable`], a value over etcd's
//! request limit [`StoreError::TooLarge`].
//!
//! **Values** pass through the [`Transformer`] (encryption at rest); a key or value that does not
//! decode is skipped, counted and logged once.

use super::encryption::Transformer;
use super::memory::{Change, MemoryStore};
use super::{Key, Listing, Record, Scope, Store, StoreError, WatchStream};
use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, Txn, TxnOp,
    WatchOptions,
};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a consistent list waits for the cache before reading etcd.
const CONSISTENT_WAIT: Duration = Duration::from_secs(1);
/// How long a write waits for the cache to apply it before answering anyway.
const WRITE_WAIT: Duration = Duration::from_secs(1);
/// Keys per page of a list read from etcd.
const PAGE: i64 = 1000;

/// Client certificate and CA for etcd (`--etcd-certfile`, `--etcd-keyfile`, `--etcd-cafile`).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// PEM CA bundle that signed etcd's serving certificate.
    pub ca: Option<Vec<u8>>,
    /// PEM client certificate.
    pub cert: Option<Vec<u8>>,
    /// PEM client key.
    pub key: Option<Vec<u8>>,
}

/// Told why each connection attempt of [`EtcdStore::open`] failed (for `/readyz` at start).
pub type RetryHook = Arc<dyn Fn(&str) + Send + Sync>;

/// How to open an [`EtcdStore`].
#[derive(Clone)]
pub struct EtcdOptions {
    /// Client URLs (`http://` or `https://`).
    pub endpoints: Vec<String>,
    /// Key prefix, e.g. `/cache` or `/registry` (no trailing slash needed).
    pub prefix: String,
    /// TLS material, when etcd wants it.
    pub tls: Option<EtcdTls>,
    /// Values at rest.
    pub transformer: Arc<Transformer>,
    /// `None`: keys carry the shard segment (the cache server's do). `Some(shard)`: they do not
    /// (a shard's own keys), and every key read back belongs to that shard.
    pub fixed_shard: Option<String>,
    /// For log lines (`cache`, `workspaces`).
    pub label: String,
    /// Events the watch cache keeps for watch resume.
    pub history: usize,
    /// Called with the reason of each failed connection attempt at open.
    pub on_retry: Option<RetryHook>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/registry".into(),
            tls: None,
            transformer: Arc::new(Transformer::identity()),
            fixed_shard: None,
            label: "etcd".into(),
            history: super::memory::DEFAULT_HISTORY,
            on_retry: None,
        }
    }
}

/// A [`Store`] on etcd, read through an in-memory watch cache. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    shared: Arc<Shared>,
}

struct Shared {
    /// The current client; replaced whole when the TLS material changes
    /// ([`EtcdStore::replace_tls`]).
    client: parking_lot::RwLock<Client>,
    /// Client URLs, to connect a replacement client.
    endpoints: Vec<String>,
    /// Bumped when the client is replaced: the watch task reopens its watch on the new one.
    generation: tokio::sync::watch::Sender<u64>,
    prefix: String,
    fixed_shard: Option<String>,
    transformer: Arc<Transformer>,
    label: String,
    cache: MemoryStore,
    /// The cache's applied revision, for waiters.
    applied: tokio::sync::watch::Sender<u64>,
    /// Asks the watch task to request a progress notification.
    progress: tokio::sync::mpsc::Sender<()>,
    /// Since when and why etcd is unreachable.
    outage: Mutex<Option<(Instant, String)>>,
    /// Keys skipped because they did not decode (logged once each).
    skipped: Mutex<HashSet<Vec<u8>>>,
    skipped_total: AtomicU64,
    /// Keys loaded by the first list.
    loaded: AtomicU64,
    /// Writes etcd committed through this store.
    writes: AtomicU64,
    /// Keys whose values are stale under the encryption configuration.
    stale: Mutex<HashSet<Key>>,
}

/// Why a prefix could not be read at one revision.
enum ReadError {
    /// etcd compacted that revision away.
    Compacted(u64),
    /// Anything else.
    Failed(etcd_client::Error),
}

impl EtcdStore {
    /// Connect (retrying until etcd answers), list the prefix and start watching it.
    pub async fn open(options: EtcdOptions) -> Result<Self, StoreError> {
        let connect = connect_options(options.tls.as_ref());
        let prefix = options.prefix.trim_end_matches('/').to_string();
        let mut delay = Duration::from_millis(200);
        let (client, records, revision) = loop {
            let attempt = async {
                let client =
                    Client::connect(options.endpoints.clone(), Some(connect.clone())).await?;
                let (records, revision) = match read_prefix(&client, &prefix, None).await {
                    Ok(r) => r,
                    Err(ReadError::Failed(e)) => return Err(e),
                    Err(ReadError::Compacted(_)) => {
                        return Err(etcd_client::Error::InvalidArgs(
                            "compacted during the first list".into(),
                        ));
                    }
                };
                Ok((client, records, revision))
            };
            match attempt.await {
                Ok(ok) => break ok,
                Err(e) => {
                    tracing::warn!(store = %options.label, endpoints = ?options.endpoints, error = %e, retry_in = ?delay, "etcd is unreachable; retrying.");
                    if let Some(hook) = &options.on_retry {
                        hook(&e.to_string());
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        };
        let (progress, progress_rx) = tokio::sync::mpsc::channel(16);
        let mut shared = Shared {
            client: parking_lot::RwLock::new(client),
            endpoints: options.endpoints.clone(),
            generation: tokio::sync::watch::Sender::new(0),
            prefix,
            fixed_shard: options.fixed_shard.clone(),
            transformer: options.transformer.clone(),
            label: options.label.clone(),
            cache: MemoryStore::new(options.history),
            applied: tokio::sync::watch::Sender::new(0),
            progress,
            outage: Mutex::new(None),
            skipped: Mutex::new(HashSet::new()),
            skipped_total: AtomicU64::new(0),
            loaded: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            stale: Mutex::new(HashSet::new()),
        };
        let decoded: Vec<Record> = records
            .iter()
            .filter_map(|kv| shared.record_of(kv))
            .collect();
        let loaded = decoded.len();
        shared.loaded.store(loaded as u64, Ordering::Relaxed);
        shared.cache = MemoryStore::restore(options.history, decoded, revision);
        let shared = Arc::new(shared);
        shared.applied.send_replace(revision);
        tracing::info!(store = %shared.label, prefix = %shared.prefix, objects = loaded, revision, skipped = shared.skipped_total.load(Ordering::Relaxed), "etcd store synced.");
        tokio::spawn(watch_loop(Arc::downgrade(&shared), revision, progress_rx));
        Ok(EtcdStore { shared })
    }

    /// Since when and why etcd is unreachable (`None` while it answers).
    pub fn outage(&self) -> Option<String> {
        self.shared.outage.lock().as_ref().map(|(since, why)| {
            format!("etcd unreachable for {}s: {why}", since.elapsed().as_secs())
        })
    }

    /// Keys skipped because their key or value did not decode.
    pub fn skipped(&self) -> u64 {
        self.shared.skipped_total.load(Ordering::Relaxed)
    }

    /// Figures in the shape of the local store's, for `/metrics`: keys loaded at open,
    /// skipped keys, stale values, transactions committed (each one write).
    pub fn stats(&self) -> super::local::LocalStats {
        let s = &self.shared;
        let writes = s.writes.load(Ordering::Relaxed);
        super::local::LocalStats {
            commits: writes,
            writes,
            full_repair: false,
            loaded: s.loaded.load(Ordering::Relaxed),
            skipped: self.skipped(),
            stale: s.stale.lock().len() as u64,
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The etcd client (for administrative reads such as a prefix marker).
    pub fn client(&self) -> Client {
        self.shared.client()
    }

    /// Connect a new client with `tls` (renewed client certificate, key or CA) and move every
    /// later request and the watch to it; requests already running finish on the old one. The
    /// watch reopens from the last applied revision, so its watchers see no gap. Connecting is
    /// lazy: a client whose certificates etcd refuses fails its requests as any outage does.
    pub async fn replace_tls(&self, tls: EtcdTls) -> Result<(), StoreError> {
        let s = &self.shared;
        let client = Client::connect(s.endpoints.clone(), Some(connect_options(Some(&tls))))
            .await
            .map_err(backend_error)?;
        *s.client.write() = client;
        s.generation.send_modify(|g| *g += 1);
        tracing::info!(store = %s.label, "etcd client certificates reloaded; new requests and the watch use them.");
        Ok(())
    }

    /// Claim this store's prefix for `shard`: a shard's keys have no shard segment, so two
    /// shards on one prefix would overwrite each other. The claim is the key
    /// `<prefix>.replication-vw-shard` (outside the prefix's keys), created on first use.
    pub async fn claim_prefix(&self, shard: &str) -> Result<(), StoreError> {
        let s = &self.shared;
        let marker = format!("{}.replication-vw-shard", s.prefix).into_bytes();
        let txn = Txn::new()
            .when([Compare::create_revision(
                marker.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(marker.clone(), shard.as_bytes().to_vec(), None)])
            .or_else([TxnOp::get(marker.clone(), None)]);
        let resp = s.txn(txn).await?;
        if resp.succeeded() {
            return Ok(());
        }
        let owner = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                etcd_client::TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            })
            .unwrap_or_default();
        if owner == shard {
            Ok(())
        } else {
            Err(StoreError::Internal(format!(
                "the etcd prefix {} holds the workspaces of shard \"{owner}\"; give shard \"{shard}\" its own --etcd-prefix",
                s.prefix
            )))
        }
    }

    /// Compact etcd's history every `interval` (as kube-apiserver's
    /// `--etcd-compaction-interval`): each round compacts at the revision seen one round
    /// earlier, so the last interval's history stays. Several replicas doing it is harmless.
    pub fn spawn_compactor(&self, interval: Duration) {
        if interval.is_zero() {
            return;
        }
        let shared = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut previous: Option<u64> = None;
            loop {
                tokio::time::sleep(interval).await;
                let Some(s) = shared.upgrade() else {
                    return;
                };
                let Ok(now) = s.current_revision().await else {
                    continue;
                };
                if let Some(at) = previous {
                    match s.client().kv_client().compact(at as i64, None).await {
                        Ok(_) => {
                            tracing::info!(store = %s.label, revision = at, "Compacted etcd's history.")
                        }
                        Err(e) if e.to_string().contains("compacted") => {}
                        Err(e) => {
                            tracing::warn!(store = %s.label, error = %e, "Compacting etcd failed.")
                        }
                    }
                }
                previous = Some(now);
            }
        });
    }
}

/// How every client of this store connects: time limits, keep-alive and, when given, TLS.
fn connect_options(tls: Option<&EtcdTls>) -> ConnectOptions {
    let mut connect = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    if let Some(tls) = tls {
        let mut t = etcd_client::TlsOptions::new();
        if let Some(ca) = &tls.ca {
            t = t.ca_certificate(etcd_client::Certificate::from_pem(ca));
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            t = t.identity(etcd_client::Identity::from_pem(cert, key));
        }
        connect = connect.with_tls(t);
    }
    connect
}

/// Every key under `prefix/` at one revision (the current one when `None`), in pages.
async fn read_prefix(
    client: &Client,
    prefix: &str,
    at: Option<u64>,
) -> Result<(Vec<KeyValue>, u64), ReadError> {
    read_range(client, format!("{prefix}/").into_bytes(), at).await
}

/// Every key starting with `start` at one revision, in pages.
async fn read_range(
    client: &Client,
    start: Vec<u8>,
    at: Option<u64>,
) -> Result<(Vec<KeyValue>, u64), ReadError> {
    let end = prefix_end(&start);
    let mut kv = client.kv_client();
    let mut from = start;
    let mut revision = at.unwrap_or(0) as i64;
    let mut out = Vec::new();
    loop {
        let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let mut resp = match kv.get(from.clone(), Some(opts)).await {
            Ok(r) => r,
            Err(e) if is_compacted(&e) => return Err(ReadError::Compacted(revision as u64)),
            Err(e) => return Err(ReadError::Failed(e)),
        };
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        let more = resp.more();
        let kvs = resp.take_kvs();
        let Some(last) = kvs.last() else {
            break;
        };
        let mut next = last.key().to_vec();
        next.push(0);
        out.extend(kvs);
        if !more {
            break;
        }
        from = next;
    }
    Ok((out, revision as u64))
}

/// The end of the range of keys starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    e.to_string()
        .contains("required revision has been compacted")
}

/// gRPC status codes (as numbers: the code type is tonic's, which this crate does not name).
const CANCELLED: i32 = 1;
const DEADLINE_EXCEEDED: i32 = 4;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;

/// The store error of an etcd failure.
fn backend_error(e: etcd_client::Error) -> StoreError {
    let text = e.to_string();
    match &e {
        etcd_client::Error::GRpcStatus(s) => {
            let code = s.code() as i32;
            if text.contains("too large") || code == RESOURCE_EXHAUSTED {
                StoreError::TooLarge(format!(
                    "the object is larger than the storage backend accepts: {}",
                    s.message()
                ))
            } else if matches!(code, UNAVAILABLE | DEADLINE_EXCEEDED | CANCELLED) {
                StoreError::Unavailable(s.message().to_string())
            } else {
                StoreError::Internal(text)
            }
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            StoreError::Unavailable(text)
        }
        _ => StoreError::Internal(text),
    }
}

/// The etcd key of a store key: `<prefix>/<group|core>/<resource>/[<shard>/]<cluster>/[<ns>/]<name>`
/// (no shard segment with a `fixed_shard`).
pub fn encode_key(prefix: &str, fixed_shard: Option<&str>, key: &Key) -> Vec<u8> {
    let group = if key.group.is_empty() {
        "core"
    } else {
        &key.group
    };
    let mut k = format!("{prefix}/{group}/{}/", key.resource);
    if fixed_shard.is_none() {
        k.push_str(&key.shard);
        k.push('/');
    }
    k.push_str(&key.cluster);
    k.push('/');
    if !key.namespace.is_empty() {
        k.push_str(&key.namespace);
        k.push('/');
    }
    k.push_str(&key.name);
    k.into_bytes()
}

/// The store key of an etcd key of [`encode_key`]'s shape, or `None`.
pub fn decode_key(prefix: &str, fixed_shard: Option<&str>, raw: &[u8]) -> Option<Key> {
    let text = std::str::from_utf8(raw).ok()?;
    let rest = text.strip_prefix(prefix)?.strip_prefix('/')?;
    let segs: Vec<&str> = rest.split('/').collect();
    let shard_segment = fixed_shard.is_none();
    let (group, resource, shard, tail) = match (fixed_shard, segs.as_slice()) {
        (None, [g, r, s, tail @ ..]) => (*g, *r, *s, tail),
        (Some(fixed), [g, r, tail @ ..]) => (*g, *r, fixed, tail),
        _ => return None,
    };
    let (cluster, namespace, name) = match tail {
        [c, n] => (*c, "", *n),
        [c, ns, n] => (*c, *ns, *n),
        _ => return None,
    };
    if [group, resource, cluster, name]
        .iter()
        .any(|s| s.is_empty())
        || (shard_segment && shard.is_empty())
        || (tail.len() == 3 && namespace.is_empty())
    {
        return None;
    }
    Some(Key {
        group: if group == "core" { "" } else { group }.into(),
        resource: resource.into(),
        shard: shard.into(),
        cluster: cluster.into(),
        namespace: namespace.into(),
        name: name.into(),
    })
}

impl Shared {
    /// The etcd key of a store key.
    /// The current client (cheap: a handle on shared channels).
    fn client(&self) -> Client {
        self.client.read().clone()
    }

    /// Run a transaction on the current client.
    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, StoreError> {
        self.client()
            .kv_client()
            .txn(txn)
            .await
            .map_err(backend_error)
    }

    fn etcd_key(&self, key: &Key) -> Vec<u8> {
        encode_key(&self.prefix, self.fixed_shard.as_deref(), key)
    }

    /// The store key of an etcd key, if it has this store's shape.
    fn store_key(&self, raw: &[u8]) -> Option<Key> {
        decode_key(&self.prefix, self.fixed_shard.as_deref(), raw)
    }

    /// Skip a key that does not decode: counted, logged once.
    fn skip(&self, raw: &[u8], why: &str) {
        self.skipped_total.fetch_add(1, Ordering::Relaxed);
        if self.skipped.lock().insert(raw.to_vec()) {
            tracing::warn!(store = %self.label, key = %String::from_utf8_lossy(raw), reason = why, "Skipping an etcd key that does not decode.");
        }
    }

    /// The record of an etcd key-value, or `None` (skipped) when it does not decode.
    fn record_of(&self, kv: &KeyValue) -> Option<Record> {
        let Some(key) = self.store_key(kv.key()) else {
            self.skip(kv.key(), "the key does not have this store's layout");
            return None;
        };
        let value = self.decode_value(&key, kv.key(), kv.value())?;
        Some(Record {
            key: Arc::new(key),
            revision: kv.mod_revision() as u64,
            value,
        })
    }

    fn decode_value(&self, key: &Key, raw_key: &[u8], stored: &[u8]) -> Option<Bytes> {
        match self
            .transformer
            .decode(&key.group, &key.resource, raw_key, stored)
        {
            Ok(d) => {
                let mut stale = self.stale.lock();
                if d.stale {
                    stale.insert(key.clone());
                } else {
                    stale.remove(key);
                }
                Some(super::exact_bytes(d.value))
            }
            Err(e) => {
                self.skip(raw_key, &e.to_string());
                None
            }
        }
    }

    fn encode_value(&self, key: &Key, raw_key: &[u8], value: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.transformer
            .encode(&key.group, &key.resource, raw_key, value)
            .map_err(|e| StoreError::Internal(e.to_string()))
    }

    fn down(&self, why: &str) {
        let mut o = self.outage.lock();
        if o.is_none() {
            tracing::warn!(store = %self.label, error = why, "etcd is unreachable; serving reads from the cache, refusing writes.");
            *o = Some((Instant::now(), why.to_string()));
        } else if let Some((_, w)) = o.as_mut() {
            *w = why.to_string();
        }
    }

    fn up(&self) {
        if let Some((since, _)) = self.outage.lock().take() {
            tracing::info!(store = %self.label, after = ?since.elapsed(), "etcd is reachable again.");
        }
    }

    /// Apply one change at `revision` to the cache and tell waiters.
    fn apply(&self, revision: u64, change: Change) {
        self.cache.apply_at(revision, change);
        self.applied.send_replace(self.cache.current_revision());
    }

    /// Refuse a write at once while the watch knows etcd is down (it retries every 2 s at
    /// most, so a recovered etcd takes writes again within that).
    fn writable(&self) -> Result<(), StoreError> {
        match self.outage.lock().as_ref() {
            Some((since, _)) => Err(StoreError::Unavailable(format!(
                "etcd has been unreachable for {}s",
                since.elapsed().as_secs()
            ))),
            None => Ok(()),
        }
    }

    /// Wait until the cache applied `revision` (at most `limit`); whether it did.
    async fn wait_applied(&self, revision: u64, limit: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Whether etcd compacted the history after `after` away (false when etcd cannot tell now).
    async fn history_compacted(&self, after: u64) -> bool {
        let mut kv = self.client().kv_client();
        let opts = GetOptions::new()
            .with_count_only()
            .with_limit(1)
            .with_revision(after as i64 + 1);
        match kv.get(format!("{}/", self.prefix), Some(opts)).await {
            Err(e) => is_compacted(&e),
            Ok(_) => false,
        }
    }

    /// etcd's current revision.
    async fn current_revision(&self) -> Result<u64, StoreError> {
        let mut kv = self.client().kv_client();
        let resp = kv
            .get(
                format!("{}/", self.prefix),
                Some(GetOptions::new().with_count_only().with_limit(1)),
            )
            .await
            .map_err(backend_error)?;
        Ok(resp.header().map_or(0, |h| h.revision()) as u64)
    }

    /// The key's current state in etcd: (mod_revision) or None.
    async fn etcd_revision_of(&self, raw_key: &[u8]) -> Result<Option<u64>, StoreError> {
        let mut kv = self.client().kv_client();
        let resp = kv
            .get(raw_key.to_vec(), None)
            .await
            .map_err(backend_error)?;
        Ok(resp.kvs().first().map(|kv| kv.mod_revision() as u64))
    }

    /// Why a transaction was refused: the key is gone, or it changed.
    async fn refusal(&self, raw_key: &[u8], expected: Option<u64>) -> StoreError {
        match self.etcd_revision_of(raw_key).await {
            Ok(None) => StoreError::NotFound,
            Ok(Some(current)) if expected.is_some() => StoreError::Conflict { current },
            Ok(Some(_)) => StoreError::Internal("the transaction was refused".into()),
            Err(e) => e,
        }
    }

    /// Read `scope` from etcd at `revision` (the consistent-read fallback and old lists).
    async fn list_from_etcd(&self, scope: &Scope, revision: u64) -> Result<Listing, StoreError> {
        let start = match &scope.resource {
            Some(gr) => {
                let group = if gr.group.is_empty() {
                    "core"
                } else {
                    &gr.group
                };
                format!("{}/{group}/{}/", self.prefix, gr.resource)
            }
            None => format!("{}/", self.prefix),
        };
        let (kvs, revision) =
            match read_range(&self.client(), start.into_bytes(), Some(revision)).await {
                Ok(r) => r,
                Err(ReadError::Compacted(r)) => {
                    return Err(StoreError::Expired {
                        requested: r,
                        oldest: r,
                    });
                }
                Err(ReadError::Failed(e)) => return Err(backend_error(e)),
            };
        let mut records: Vec<Record> = kvs
            .iter()
            .filter_map(|kv| self.record_of(kv))
            .filter(|r| scope.contains(&r.key))
            .collect();
        records.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Listing { records, revision })
    }

    /// After a compaction outran the watch: list again and apply the differences as events.
    async fn resync(&self) -> Result<u64, ReadError> {
        let (kvs, revision) = read_prefix(&self.client(), &self.prefix, None).await?;
        let fresh: BTreeMap<Key, (u64, Bytes)> = kvs
            .iter()
            .filter_map(|kv| self.record_of(kv))
            .map(|r| ((*r.key).clone(), (r.revision, r.value)))
            .collect();
        let current = self
            .cache
            .list(&Scope::all())
            .await
            .map(|l| l.records)
            .unwrap_or_default();
        let mut puts: Vec<(u64, Key, Bytes)> = fresh
            .iter()
            .filter(|(k, (rev, _))| {
                current
                    .binary_search_by(|r| (*r.key).cmp(k))
                    .map_or(true, |i| current[i].revision != *rev)
            })
            .map(|(k, (rev, v))| (*rev, k.clone(), v.clone()))
            .collect();
        puts.sort_by_key(|(rev, _, _)| *rev);
        for (rev, key, value) in puts {
            self.apply(rev, Change::Put { key, value });
        }
        for r in current.iter().filter(|r| !fresh.contains_key(&r.key)) {
            self.apply(
                revision,
                Change::Delete {
                    key: (*r.key).clone(),
                },
            );
        }
        self.cache.advance(revision);
        self.applied.send_replace(self.cache.current_revision());
        tracing::info!(store = %self.label, revision, "The etcd watch history was compacted; resynced from a fresh list.");
        Ok(revision)
    }
}

/// Follow etcd from `after` for as long as the store lives: events and progress into the
/// cache, reconnects with back-off, a resync when the history was compacted.
async fn watch_loop(
    shared: std::sync::Weak<Shared>,
    mut after: u64,
    mut progress_rx: tokio::sync::mpsc::Receiver<()>,
) {
    let mut delay = Duration::from_millis(200);
    let mut reopen_now = false;
    loop {
        let Some(s) = shared.upgrade() else {
            return;
        };
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(after as i64 + 1)
            .with_progress_notify();
        let mut generation = s.generation.subscribe();
        let mut wc = s.client().watch_client();
        let stream = wc.watch(format!("{}/", s.prefix), Some(opts)).await;
        drop(s);
        let mut stream = match stream {
            Ok(st) => st,
            Err(e) => {
                if let Some(s) = shared.upgrade() {
                    s.down(&e.to_string());
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                m = stream.message() => m,
                changed = generation.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // A new client (new certificates): reopen the watch on it from `after`.
                    reopen_now = true;
                    break;
                }
                asked = progress_rx.recv() => {
                    if asked.is_none() {
                        return;
                    }
                    let _ = stream.request_progress().await;
                    continue;
                }
            };
            let Some(s) = shared.upgrade() else {
                return;
            };
            match next {
                Ok(Some(resp)) => {
                    s.up();
                    delay = Duration::from_millis(200);
                    if resp.canceled() {
                        if resp.compact_revision() > 0 {
                            match s.resync().await {
                                Ok(rev) => after = rev,
                                Err(_) => tokio::time::sleep(delay).await,
                            }
                        }
                        break;
                    }
                    if resp.created() {
                        continue;
                    }
                    if resp.events().is_empty() {
                        // A progress notification: every event up to it was delivered.
                        let rev = resp.header().map_or(0, |h| h.revision()) as u64;
                        if rev > after {
                            after = rev;
                            s.cache.advance(rev);
                            s.applied.send_replace(s.cache.current_revision());
                        }
                        continue;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else {
                            continue;
                        };
                        let rev = kv.mod_revision() as u64;
                        let Some(key) = s.store_key(kv.key()) else {
                            s.skip(kv.key(), "the key does not have this store's layout");
                            continue;
                        };
                        match ev.event_type() {
                            EventType::Put => {
                                let Some(value) = s.decode_value(&key, kv.key(), kv.value()) else {
                                    continue;
                                };
                                s.apply(rev, Change::Put { key, value });
                            }
                            EventType::Delete => {
                                s.stale.lock().remove(&key);
                                s.apply(rev, Change::Delete { key });
                            }
                        }
                        after = after.max(rev);
                    }
                }
                Ok(None) => {
                    s.down("the watch stream ended");
                    break;
                }
                Err(e) => {
                    s.down(&e.to_string());
                    break;
                }
            }
        }
        if std::mem::take(&mut reopen_now) {
            continue;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &Key) -> Result<Option<Record>, StoreError> {
        self.shared.cache.get(key).await
    }

    async fn list(&self, scope: &Scope) -> Result<Listing, StoreError> {
        let s = &self.shared;
        // etcd known to be down: the cache is the best answer there is, at once.
        if s.outage.lock().is_some() {
            return s.cache.list(scope).await;
        }
        let current = match s.current_revision().await {
            Ok(r) => r,
            // etcd unreachable: the cache is the best answer there is.
            Err(StoreError::Unavailable(why)) => {
                s.down(&why);
                return s.cache.list(scope).await;
            }
            Err(e) => return Err(e),
        };
        if s.cache.current_revision() < current {
            let _ = s.progress.try_send(());
            if !s.wait_applied(current, CONSISTENT_WAIT).await {
                return s.list_from_etcd(scope, current).await;
            }
        }
        s.cache.list(scope).await
    }

    async fn create(&self, key: Key, value: Bytes) -> Result<Record, StoreError> {
        let s = &self.shared;
        s.writable()?;
        let raw = s.etcd_key(&key);
        let stored = s.encode_value(&key, &raw, &value)?;
        let txn = Txn::new()
            .when([Compare::create_revision(raw.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(raw.clone(), stored, None)]);
        let resp = s.txn(txn).await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists);
        }
        let revision = resp.header().map_or(0, |h| h.revision()) as u64;
        s.writes.fetch_add(1, Ordering::Relaxed);
        s.wait_applied(revision, WRITE_WAIT).await;
        Ok(Record {
            key: Arc::new(key),
            revision,
            value,
        })
    }

    async fn update(
        &self,
        key: Key,
        value: Bytes,
        expected: Option<u64>,
    ) -> Result<Record, StoreError> {
        let s = &self.shared;
        s.writable()?;
        let raw = s.etcd_key(&key);
        let stored = s.encode_value(&key, &raw, &value)?;
        let guard = match expected {
            Some(rev) => Compare::mod_revision(raw.clone(), CompareOp::Equal, rev as i64),
            None => Compare::create_revision(raw.clone(), CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([guard])
            .and_then([TxnOp::put(raw.clone(), stored, None)]);
        let resp = s.txn(txn).await?;
        if !resp.succeeded() {
            return Err(s.refusal(&raw, expected).await);
        }
        let revision = resp.header().map_or(0, |h| h.revision()) as u64;
        s.writes.fetch_add(1, Ordering::Relaxed);
        s.stale.lock().remove(&key);
        s.wait_applied(revision, WRITE_WAIT).await;
        Ok(Record {
            key: Arc::new(key),
            revision,
            value,
        })
    }

    async fn delete(&self, key: &Key, expected: Option<u64>) -> Result<Record, StoreError> {
        let s = &self.shared;
        s.writable()?;
        let raw = s.etcd_key(key);
        let guard = match expected {
            Some(rev) => Compare::mod_revision(raw.clone(), CompareOp::Equal, rev as i64),
            None => Compare::create_revision(raw.clone(), CompareOp::Greater, 0),
        };
        let txn = Txn::new().when([guard]).and_then([TxnOp::delete(
            raw.clone(),
            Some(etcd_client::DeleteOptions::new().with_prev_key()),
        )]);
        let resp = s.txn(txn).await?;
        if !resp.succeeded() {
            return Err(s.refusal(&raw, expected).await);
        }
        let revision = resp.header().map_or(0, |h| h.revision()) as u64;
        s.writes.fetch_add(1, Ordering::Relaxed);
        let prev = resp.op_responses().into_iter().find_map(|r| match r {
            etcd_client::TxnOpResponse::Delete(d) => d.prev_kvs().first().cloned(),
            _ => None,
        });
        let value = prev
            .and_then(|kv| s.decode_value(key, kv.key(), kv.value()))
            .unwrap_or_default();
        s.wait_applied(revision, WRITE_WAIT).await;
        Ok(Record {
            key: Arc::new(key.clone()),
            revision,
            value,
        })
    }

    async fn list_at(&self, scope: &Scope, revision: u64) -> Result<Listing, StoreError> {
        match self.shared.cache.list_at(scope, revision).await {
            Err(StoreError::Expired { .. }) => self.shared.list_from_etcd(scope, revision).await,
            other => other,
        }
    }

    async fn watch(&self, scope: Scope, after: u64) -> Result<WatchStream, StoreError> {
        let s = &self.shared;
        // A watch from the past: etcd's compaction decides whether that history still exists
        // (one count request; the cache may remember more than etcd does).
        if after < s.cache.current_revision() && s.history_compacted(after).await {
            return Err(StoreError::Expired {
                requested: after,
                oldest: after,
            });
        }
        s.cache.watch(scope, after).await
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.shared.cache.current_revision())
    }

    fn is_stale(&self, key: &Key) -> bool {
        self.shared.stale.lock().contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(group: &str, namespace: &str) -> Key {
        Key {
            group: group.into(),
            resource: "sheriffs:abc123".into(),
            shard: "shard-1".into(),
            cluster: "root".into(),
            namespace: namespace.into(),
            name: "wyatt".into(),
        }
    }

    #[test]
    fn keys_follow_kcps_etcd_layout_and_read_back() {
        let cluster_scoped = key("wildwest.dev", "");
        let raw = encode_key("/cache", None, &cluster_scoped);
        assert_eq!(
            raw,
            b"/cache/wildwest.dev/sheriffs:abc123/shard-1/root/wyatt"
        );
        assert_eq!(decode_key("/cache", None, &raw), Some(cluster_scoped));
        let core = key("", "default");
        let raw = encode_key("/registry", Some("root"), &core);
        assert_eq!(raw, b"/registry/core/sheriffs:abc123/root/default/wyatt");
        let back = decode_key("/registry", Some("root"), &raw).expect("decodes");
        assert_eq!((back.group.as_str(), back.shard.as_str()), ("", "root"));
        assert_eq!(back.namespace, "default");
    }

    #[test]
    fn keys_of_another_shape_or_prefix_are_not_ours() {
        for raw in [
            &b"/cache/g/r/shard/cluster"[..],
            b"/cache/g/r/shard/cluster/a/b/c",
            b"/cached/g/r/shard/cluster/name",
            b"/cache/g/r//cluster/name",
            b"/cache/g/r/shard/cluster//name",
            b"\xff\xfe",
        ] {
            assert_eq!(decode_key("/cache", None, raw), None, "{raw:?}");
        }
    }

    #[test]
    fn prefix_ends_cover_exactly_the_keys_that_start_with_the_prefix() {
        assert_eq!(prefix_end(b"/cache/"), b"/cache0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }
}
