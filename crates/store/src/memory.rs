//! The in-memory store: an ordered map of records, a bounded ring of recent events, and one
//! broadcast channel that wakes every watcher.
//!
//! Writers take a short write lock, stamp the next revision, append to the history ring and
//! broadcast the event (never waiting for readers). A watcher that falls behind the broadcast
//! buffer catches up from the history ring; if the ring no longer reaches back far enough, its
//! stream ends with [`StoreError::Expired`] and the client relists — memory stays bounded.

use super::part::Interner;
use super::{Event, EventKind, Key, Listing, Part, Record, Scope, Store, StoreError, WatchStream};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::RwLock;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Default number of events kept for watch resume (kube-apiserver's upper bound of a watch
/// cache's capacity is about the same, 100 × 1024).
pub const DEFAULT_HISTORY: usize = 100_000;
/// Events younger than this are kept (up to the count and byte bounds); older ones only while
/// there are fewer than [`HISTORY_FLOOR`]. kube-apiserver sizes its watch cache to hold the same
/// 75 s (`eventFreshDuration`): a watcher that reconnects within it resumes, a later one relists.
pub const HISTORY_WINDOW: std::time::Duration = std::time::Duration::from_secs(75);
/// Events kept whatever their age, so a quiet store still resumes watches from long ago.
pub const HISTORY_FLOOR: usize = 1_000;
/// Bytes of values (new and previous) the history holds at most.
pub const HISTORY_BYTES: usize = 256 << 20;
const BROADCAST_CAPACITY: usize = 4096;

struct Inner {
    objects: BTreeMap<Arc<Key>, Record>,
    history: VecDeque<Arc<Event>>,
    /// When each event of `history` was appended.
    history_times: VecDeque<std::time::Instant>,
    /// Bytes of the values `history` holds.
    history_bytes: usize,
    revision: u64,
    /// Events with a revision up to and including this one are gone from `history`.
    compacted: u64,
    /// The group, resource, shard, cluster and namespace of the keys, each held once.
    interner: Interner,
}

/// An in-memory [`Store`]. Cheap to clone: clones share the same data.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    inner: RwLock<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
    history_limit: usize,
    bounds: HistoryBounds,
}

/// How much history a store keeps besides its count limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryBounds {
    /// Events younger than this are kept (see [`HISTORY_WINDOW`]).
    pub window: std::time::Duration,
    /// Events kept whatever their age.
    pub floor: usize,
    /// Bytes of values kept at most.
    pub bytes: usize,
}

impl Default for HistoryBounds {
    fn default() -> Self {
        HistoryBounds {
            window: HISTORY_WINDOW,
            floor: HISTORY_FLOOR,
            bytes: HISTORY_BYTES,
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(DEFAULT_HISTORY)
    }
}

impl MemoryStore {
    /// A store that keeps the last `history_limit` events for watch resume.
    pub fn new(history_limit: usize) -> Self {
        Self::with_bounds(history_limit, HistoryBounds::default())
    }

    /// A store with other history bounds (tests).
    pub fn with_bounds(history_limit: usize, bounds: HistoryBounds) -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        MemoryStore {
            shared: Arc::new(Shared {
                inner: RwLock::new(Inner {
                    objects: BTreeMap::new(),
                    history: VecDeque::new(),
                    history_times: VecDeque::new(),
                    history_bytes: 0,
                    // Revision 1 is the empty store, so no list ever reports "0".
                    revision: 1,
                    compacted: 1,
                    interner: Interner::default(),
                }),
                tx,
                history_limit: history_limit.max(1),
                bounds,
            }),
        }
    }
}

/// Bytes an event's values hold (the new one and the previous one).
fn event_bytes(event: &Event) -> usize {
    event.value.len() + event.prev.as_ref().map_or(0, Bytes::len)
}

/// A change committed elsewhere first (by a durable backend), applied to a [`MemoryStore`] at
/// the revision the backend assigned.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Create or overwrite `key`.
    Put {
        /// The key.
        key: Key,
        /// The new value.
        value: Bytes,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Key,
    },
}

impl MemoryStore {
    /// A store filled with `records` (each at its own revision) whose revision counter continues
    /// from `revision` (raised to the newest record's revision if that is higher).
    ///
    /// The history starts empty: a watch or `list_at` from a revision before `revision` gets
    /// [`StoreError::Expired`], never a different history.
    pub fn restore(
        history_limit: usize,
        records: impl IntoIterator<Item = Record>,
        revision: u64,
    ) -> Self {
        let mut interner = Interner::default();
        let records: Vec<Record> = records
            .into_iter()
            .map(|mut r| {
                r.key = Arc::new(interner.key(Key::clone(&r.key)));
                r
            })
            .collect();
        Self::restore_interned(history_limit, records, revision, interner)
    }

    /// [`MemoryStore::restore`] of records whose keys' parts come from `interner` already.
    pub(crate) fn restore_interned(
        history_limit: usize,
        records: Vec<Record>,
        revision: u64,
        interner: Interner,
    ) -> Self {
        let store = Self::new(history_limit);
        {
            let mut inner = store.shared.inner.write();
            let mut newest = revision.max(1);
            // Built in bulk: `collect` sorts (one pass over input that is already in key
            // order, as a local store's file hands it out) and then fills the tree without a
            // search per record, which at a million keys was most of a restart's load time.
            let objects: BTreeMap<Arc<Key>, Record> = records
                .into_iter()
                .map(|r| {
                    newest = newest.max(r.revision);
                    (r.key.clone(), r)
                })
                .collect();
            inner.interner = interner;
            inner.objects = objects;
            inner.revision = newest;
            inner.compacted = newest;
        }
        store
    }

    /// The record at `key` right now (synchronous).
    pub(crate) fn lookup(&self, key: &Key) -> Option<Record> {
        self.shared.inner.read().objects.get(key).cloned()
    }

    /// The current revision (synchronous).
    pub(crate) fn current_revision(&self) -> u64 {
        self.shared.inner.read().revision
    }

    /// Apply `changes`, in order, under one write lock, so a reader sees all of them or none.
    /// The `n`-th change gets revision `current_revision() + 1 + n`; the caller (the one writer
    /// of this store) has validated them and assigned those same revisions elsewhere. Returns
    /// the record of each change: the new state for puts, the last state stamped with the
    /// deletion's revision for deletes (`None` for a delete of an absent key, which the caller
    /// never sends).
    pub(crate) fn apply(&self, changes: Vec<Change>) -> Vec<Option<Record>> {
        let mut inner = self.shared.inner.write();
        changes
            .into_iter()
            .map(|change| self.shared.apply_one(&mut inner, change))
            .collect()
    }
}

impl MemoryStore {
    /// Apply one change that a backend with its own revisions (etcd) committed at `revision`,
    /// which is not below the current one (several changes may share a revision). Returns the
    /// record, as [`MemoryStore::apply`] does; `None` for a delete of an absent key.
    pub(crate) fn apply_at(&self, revision: u64, change: Change) -> Option<Record> {
        let mut inner = self.shared.inner.write();
        // Committed at `revision` (never backwards): the counter stands just below it, and the
        // commit below bumps it to exactly that revision.
        let before = inner.revision;
        let target = revision.max(before).max(1);
        inner.revision = target - 1;
        let applied = self.shared.apply_one(&mut inner, change);
        // A delete of an absent key commits nothing: never leave the counter below where it was.
        inner.revision = inner.revision.max(before);
        applied
    }

    /// Nothing in this store changed up to `revision` (a progress notification): lists answer
    /// at it from now on.
    pub(crate) fn advance(&self, revision: u64) {
        let mut inner = self.shared.inner.write();
        inner.revision = inner.revision.max(revision);
    }
}

impl Shared {
    /// Apply one change at the next revision: the new record of a put, the last state of a
    /// deleted key stamped with the deletion's revision (`None` if the key is absent).
    fn apply_one(&self, inner: &mut Inner, change: Change) -> Option<Record> {
        match change {
            Change::Put { key, value } => {
                let prev = inner.objects.get(&key).cloned();
                let (kind, key) = match &prev {
                    Some(p) => (EventKind::Updated, p.key.clone()),
                    None => (EventKind::Created, Arc::new(inner.interner.key(key))),
                };
                Some(self.put(inner, kind, key, value, prev))
            }
            Change::Delete { key } => {
                let removed = inner.objects.remove(&key)?;
                let value = removed.value.clone();
                let key = removed.key.clone();
                let revision = self.commit(
                    inner,
                    EventKind::Deleted,
                    key.clone(),
                    value.clone(),
                    Some(removed),
                );
                Some(Record {
                    key,
                    revision,
                    value,
                })
            }
        }
    }

    /// Commit a create or update and store the record under its shared key.
    fn put(
        &self,
        inner: &mut Inner,
        kind: EventKind,
        key: Arc<Key>,
        value: Bytes,
        prev: Option<Record>,
    ) -> Record {
        let revision = self.commit(inner, kind, key.clone(), value.clone(), prev);
        let record = Record {
            key: key.clone(),
            revision,
            value,
        };
        inner.objects.insert(key, record.clone());
        record
    }

    fn commit(
        &self,
        inner: &mut Inner,
        kind: EventKind,
        key: Arc<Key>,
        value: Bytes,
        prev: Option<Record>,
    ) -> u64 {
        inner.revision += 1;
        let revision = inner.revision;
        let event = Arc::new(Event {
            revision,
            kind,
            key,
            value,
            prev_revision: prev.as_ref().map_or(0, |r| r.revision),
            prev: prev.map(|r| r.value),
        });
        let now = std::time::Instant::now();
        inner.history_bytes += event_bytes(&event);
        inner.history.push_back(event.clone());
        inner.history_times.push_back(now);
        // Bounded by count and bytes, and by age once past the floor.
        while inner.history.len() > self.history_limit
            || (inner.history_bytes > self.bounds.bytes && inner.history.len() > 1)
            || (inner.history.len() > self.bounds.floor
                && inner
                    .history_times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > self.bounds.window))
        {
            let Some(old) = inner.history.pop_front() else {
                break;
            };
            inner.history_times.pop_front();
            inner.history_bytes -= event_bytes(&old);
            inner.compacted = old.revision;
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(event);
        revision
    }

    /// The record at `key`, checked against an expected revision.
    fn current(inner: &Inner, key: &Key, expected: Option<u64>) -> Result<Record, StoreError> {
        let r = inner.objects.get(key).ok_or(StoreError::NotFound)?;
        match expected {
            Some(want) if want != r.revision => Err(StoreError::Conflict {
                current: r.revision,
            }),
            _ => Ok(r.clone()),
        }
    }

    /// Events in `scope` after `after`, from the history ring, or Expired.
    fn replay(inner: &Inner, scope: &Scope, after: u64) -> Result<Vec<Arc<Event>>, StoreError> {
        if after < inner.compacted {
            return Err(StoreError::Expired {
                requested: after,
                oldest: inner.compacted,
            });
        }
        let start = inner.history.partition_point(|e| e.revision <= after);
        Ok(inner
            .history
            .range(start..)
            .filter(|e| scope.contains(&e.key))
            .cloned()
            .collect())
    }
}

struct WatchState {
    store: Arc<Shared>,
    scope: Scope,
    backlog: VecDeque<Arc<Event>>,
    rx: broadcast::Receiver<Arc<Event>>,
    last: u64,
    done: bool,
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &Key) -> Result<Option<Record>, StoreError> {
        Ok(self.shared.inner.read().objects.get(key).cloned())
    }

    async fn list(&self, scope: &Scope) -> Result<Listing, StoreError> {
        let inner = self.shared.inner.read();
        let records = match &scope.resource {
            Some(gr) => {
                let lo = Key {
                    group: gr.group.as_str().into(),
                    resource: gr.resource.as_str().into(),
                    shard: scope.shard.as_deref().unwrap_or_default().into(),
                    cluster: Part::default(),
                    namespace: Part::default(),
                    name: Part::default(),
                };
                inner
                    .objects
                    .range(lo..)
                    .take_while(|(k, _)| {
                        k.group == gr.group
                            && k.resource == gr.resource
                            && scope.shard.as_ref().is_none_or(|s| *s == k.shard)
                    })
                    .filter(|(k, _)| scope.contains(k))
                    .map(|(_, r)| r.clone())
                    .collect()
            }
            None => inner
                .objects
                .iter()
                .filter(|(k, _)| scope.contains(k))
                .map(|(_, r)| r.clone())
                .collect(),
        };
        Ok(Listing {
            records,
            revision: inner.revision,
        })
    }

    async fn create(&self, key: Key, value: Bytes) -> Result<Record, StoreError> {
        let mut inner = self.shared.inner.write();
        if inner.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        let key = Arc::new(inner.interner.key(key));
        Ok(self
            .shared
            .put(&mut inner, EventKind::Created, key, value, None))
    }

    async fn update(
        &self,
        key: Key,
        value: Bytes,
        expected: Option<u64>,
    ) -> Result<Record, StoreError> {
        let mut inner = self.shared.inner.write();
        let prev = Shared::current(&inner, &key, expected)?;
        // Reuse the map's shared key.
        let key = prev.key.clone();
        Ok(self
            .shared
            .put(&mut inner, EventKind::Updated, key, value, Some(prev)))
    }

    async fn delete(&self, key: &Key, expected: Option<u64>) -> Result<Record, StoreError> {
        let mut inner = self.shared.inner.write();
        Shared::current(&inner, key, expected)?;
        let Some(removed) = inner.objects.remove(key) else {
            return Err(StoreError::NotFound);
        };
        let value = removed.value.clone();
        let key = removed.key.clone();
        let revision = self.shared.commit(
            &mut inner,
            EventKind::Deleted,
            key.clone(),
            value.clone(),
            Some(removed),
        );
        Ok(Record {
            key,
            revision,
            value,
        })
    }

    async fn list_at(&self, scope: &Scope, revision: u64) -> Result<Listing, StoreError> {
        let current = self.list(scope).await?;
        if revision >= current.revision {
            return Ok(current);
        }
        let inner = self.shared.inner.read();
        if revision < inner.compacted {
            return Err(StoreError::Expired {
                requested: revision,
                oldest: inner.compacted,
            });
        }
        // Undo, newest first, every change after `revision`.
        let mut objects: BTreeMap<Arc<Key>, Record> = current
            .records
            .into_iter()
            .map(|r| (r.key.clone(), r))
            .collect();
        for e in inner
            .history
            .iter()
            .rev()
            .take_while(|e| e.revision > revision)
        {
            if !scope.contains(&e.key) {
                continue;
            }
            match (&e.kind, &e.prev) {
                (EventKind::Created, _) | (_, None) => {
                    objects.remove(&e.key);
                }
                (EventKind::Updated | EventKind::Deleted, Some(prev)) => {
                    objects.insert(
                        e.key.clone(),
                        Record {
                            key: e.key.clone(),
                            revision: e.prev_revision,
                            value: prev.clone(),
                        },
                    );
                }
            }
        }
        Ok(Listing {
            records: objects.into_values().collect(),
            revision,
        })
    }

    async fn watch(&self, scope: Scope, after: u64) -> Result<WatchStream, StoreError> {
        let (backlog, rx) = {
            let inner = self.shared.inner.read();
            // Subscribing under the lock means no event falls between backlog and live stream.
            let rx = self.shared.tx.subscribe();
            (Shared::replay(&inner, &scope, after)?, rx)
        };
        let last = backlog.last().map_or(after, |e| e.revision).max(after);
        let state = WatchState {
            store: self.shared.clone(),
            scope,
            backlog: backlog.into(),
            rx,
            last,
            done: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(state, next_event)))
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.shared.inner.read().revision)
    }
}

async fn next_event(mut st: WatchState) -> Option<(Result<Arc<Event>, StoreError>, WatchState)> {
    if st.done {
        return None;
    }
    loop {
        if let Some(e) = st.backlog.pop_front() {
            if e.revision > st.last || st.backlog.is_empty() {
                st.last = st.last.max(e.revision);
            }
            return Some((Ok(e), st));
        }
        match st.rx.recv().await {
            Ok(e) => {
                if e.revision <= st.last || !st.scope.contains(&e.key) {
                    continue;
                }
                st.last = e.revision;
                return Some((Ok(e), st));
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Fell behind the broadcast buffer: catch up from the history ring.
                let replay = {
                    let inner = st.store.inner.read();
                    st.rx = st.store.tx.subscribe();
                    Shared::replay(&inner, &st.scope, st.last)
                };
                match replay {
                    Ok(events) => st.backlog = events.into(),
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn key(name: &str) -> Key {
        Key {
            group: "cache.kcp.io".into(),
            resource: "cachedobjects".into(),
            shard: "root".into(),
            cluster: "c1".into(),
            namespace: Default::default(),
            name: name.into(),
        }
    }

    fn store(history: usize) -> MemoryStore {
        MemoryStore::new(history)
    }

    #[tokio::test]
    async fn every_write_gets_the_next_global_revision() {
        let s = store(10);
        let a = s.create(key("a"), Bytes::from_static(b"{}")).await.unwrap();
        let b = s.create(key("b"), Bytes::from_static(b"{}")).await.unwrap();
        let a2 = s
            .update(key("a"), Bytes::from_static(b"{\"x\":1}"), Some(a.revision))
            .await
            .unwrap();
        assert!(a.revision < b.revision && b.revision < a2.revision);
        assert_eq!(s.revision().await.unwrap(), a2.revision);
    }

    #[tokio::test]
    async fn a_stale_revision_precondition_is_a_conflict() {
        let s = store(10);
        let a = s.create(key("a"), Bytes::from_static(b"{}")).await.unwrap();
        s.update(key("a"), Bytes::from_static(b"{}"), Some(a.revision))
            .await
            .unwrap();
        let err = s
            .update(key("a"), Bytes::from_static(b"{}"), Some(a.revision))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }));
        assert_eq!(
            s.create(key("a"), Bytes::new()).await.unwrap_err(),
            StoreError::AlreadyExists
        );
    }

    #[tokio::test]
    async fn a_watch_resumes_after_the_given_revision() {
        let s = store(10);
        let a = s.create(key("a"), Bytes::from_static(b"1")).await.unwrap();
        s.create(key("b"), Bytes::from_static(b"2")).await.unwrap();
        let mut w = s.watch(Scope::all(), a.revision).await.unwrap();
        let first = w.next().await.unwrap().unwrap();
        assert_eq!(first.key.name, "b");
        s.delete(&key("a"), None).await.unwrap();
        let second = w.next().await.unwrap().unwrap();
        assert_eq!(second.kind, EventKind::Deleted);
        assert_eq!(second.value, Bytes::from_static(b"1"));
    }

    #[tokio::test]
    async fn a_list_at_an_older_revision_undoes_later_changes() {
        let s = store(100);
        let a = s.create(key("a"), Bytes::from_static(b"1")).await.unwrap();
        let at = s.revision().await.unwrap();
        s.update(key("a"), Bytes::from_static(b"2"), None)
            .await
            .unwrap();
        s.create(key("b"), Bytes::new()).await.unwrap();
        let old = s.list_at(&Scope::all(), at).await.unwrap();
        assert_eq!(old.records.len(), 1);
        assert_eq!(old.records[0].value, Bytes::from_static(b"1"));
        assert_eq!(old.records[0].revision, a.revision);
        s.delete(&key("a"), None).await.unwrap();
        let old = s.list_at(&Scope::all(), at).await.unwrap();
        assert_eq!(old.records[0].value, Bytes::from_static(b"1"));
    }

    #[tokio::test]
    async fn a_watch_from_a_compacted_revision_is_expired() {
        let s = store(2);
        let first = s.create(key("a"), Bytes::new()).await.unwrap();
        for n in ["b", "c", "d"] {
            s.create(key(n), Bytes::new()).await.unwrap();
        }
        match s.watch(Scope::all(), first.revision).await {
            Err(StoreError::Expired { .. }) => {}
            Err(other) => panic!("expected Expired, got {other:?}"),
            Ok(_) => panic!("expected Expired, got a stream"),
        }
    }

    #[tokio::test]
    async fn history_is_bounded_by_bytes_and_by_age_past_its_floor() {
        let k = |n: u32| key(&format!("o{n}"));
        // Bytes: three 10-byte values fit in 25 bytes only two at a time.
        let by_bytes = MemoryStore::with_bounds(
            100,
            HistoryBounds {
                bytes: 25,
                ..HistoryBounds::default()
            },
        );
        for n in 0..3 {
            by_bytes
                .create(k(n), Bytes::from(vec![b'x'; 10]))
                .await
                .expect("create");
        }
        let latest = by_bytes.revision().await.expect("revision");
        assert!(by_bytes.watch(Scope::all(), latest - 2).await.is_ok());
        assert!(matches!(
            by_bytes.watch(Scope::all(), latest - 3).await,
            Err(StoreError::Expired { .. })
        ));
        // Age: with a zero window only the floor's two events stay.
        let by_age = MemoryStore::with_bounds(
            100,
            HistoryBounds {
                window: std::time::Duration::ZERO,
                floor: 2,
                ..HistoryBounds::default()
            },
        );
        for n in 0..5 {
            by_age
                .create(k(n), Bytes::from_static(b"v"))
                .await
                .expect("create");
        }
        let latest = by_age.revision().await.expect("revision");
        assert!(by_age.watch(Scope::all(), latest - 2).await.is_ok());
        assert!(matches!(
            by_age.watch(Scope::all(), latest - 3).await,
            Err(StoreError::Expired { .. })
        ));
    }

    #[tokio::test]
    async fn a_lagging_watcher_catches_up_from_history() {
        let s = store(100_000);
        let mut w = s
            .watch(Scope::all(), s.revision().await.unwrap())
            .await
            .unwrap();
        let n = BROADCAST_CAPACITY + 10;
        for i in 0..n {
            s.create(key(&format!("k{i:05}")), Bytes::new())
                .await
                .unwrap();
        }
        let mut seen = 0;
        let mut last = 0;
        while seen < n {
            let e = w.next().await.unwrap().unwrap();
            assert!(e.revision > last, "revisions strictly increase");
            last = e.revision;
            seen += 1;
        }
    }

    #[tokio::test]
    async fn a_restored_store_continues_its_revision_and_has_no_older_history() {
        let rec = Record {
            key: Arc::new(key("a")),
            revision: 7,
            value: Bytes::from_static(b"1"),
        };
        let s = MemoryStore::restore(10, [rec.clone()], 9);
        assert_eq!(s.revision().await.unwrap(), 9);
        assert_eq!(s.get(&key("a")).await.unwrap(), Some(rec));
        let b = s.create(key("b"), Bytes::new()).await.unwrap();
        assert_eq!(b.revision, 10);
        assert!(matches!(
            s.watch(Scope::all(), 8).await,
            Err(StoreError::Expired { .. })
        ));
        assert!(matches!(
            s.list_at(&Scope::all(), 8).await,
            Err(StoreError::Expired { .. })
        ));
        let mut w = s.watch(Scope::all(), 9).await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap().revision, 10);
    }

    #[tokio::test]
    async fn lists_filter_by_shard_and_cluster() {
        let s = store(10);
        s.create(key("a"), Bytes::new()).await.unwrap();
        let mut other = key("b");
        other.cluster = "c2".into();
        s.create(other, Bytes::new()).await.unwrap();
        let scope = Scope {
            resource: Some(super::super::GroupResource::new(
                "cache.kcp.io",
                "cachedobjects",
            )),
            shard: None,
            cluster: Some("c2".into()),
            namespace: None,
        };
        let l = s.list(&scope).await.unwrap();
        assert_eq!(l.records.len(), 1);
        assert_eq!(l.records[0].key.name, "b");
    }
}
