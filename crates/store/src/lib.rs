//! The storage abstraction under the cache server: keys, records, one global revision, watch.
//!
//! A [`Store`] keeps encoded objects under kcp's key layout (group/resource, shard, cluster,
//! namespace, name; `kcp-reference.md` §8.3), stamps every write with one global, monotonically
//! increasing revision, and lets watchers resume from any revision still in its bounded history
//! (older ones get [`StoreError::Expired`]). Backends: [`memory::MemoryStore`], and
//! [`local::LocalStore`], a crash-safe file (redb) whose reads are served by a `MemoryStore`; an
//! etcd backend plugs in behind the same trait.

#![forbid(unsafe_code)]

pub mod encryption;
pub mod etcd;
pub mod local;
pub mod memory;
mod part;
pub mod progress;
pub mod snapshot;

pub use part::Part;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use std::sync::Arc;

/// A value to keep for long (a stored object) as [`Bytes`] holding no spare capacity, whatever
/// the allocator does with a shrink. An encoder's `Vec` has up to twice its length in capacity,
/// and `shrink_to_fit` does not always give it back: mimalloc keeps a block in place when the
/// shrink leaves it at least half used, so a 2.7 KB value kept a 4 KiB block (the load
/// harness's ingest: 1.2 KB per object, 116 MiB per 100,000). From [`EXACT_MALLOC_MIN`] to
/// [`EXACT_COPY_MAX`] the value is copied into an [`allocator::ExactBuf`] of its own length
/// (mimalloc's size classes would still round a 2.7 KB value up to 3 KiB); shorter values are
/// copied only when they have spare capacity; from [`EXACT_COPY_MAX`] on they are shrunk in
/// place (the process's allocator maps such blocks apart and shrinks them without a copy).
pub fn exact_bytes(mut v: Vec<u8>) -> Bytes {
    if (EXACT_MALLOC_MIN..EXACT_COPY_MAX).contains(&v.len()) {
        return exact_copy(&v);
    }
    if v.capacity() > v.len() {
        if v.len() < EXACT_COPY_MAX {
            return Bytes::copy_from_slice(&v);
        }
        v.shrink_to_fit();
    }
    Bytes::from(v)
}

/// A copy of `value` to keep for long, at its exact size as [`exact_bytes`] keeps one.
pub fn exact_copy(value: &[u8]) -> Bytes {
    if (EXACT_MALLOC_MIN..EXACT_COPY_MAX).contains(&value.len())
        && let Some(buf) = allocator::ExactBuf::copy_of(value)
    {
        return Bytes::from_owner(buf);
    }
    Bytes::copy_from_slice(value)
}

/// Values at least this long are shrunk in place by [`exact_bytes`] rather than copied.
pub const EXACT_COPY_MAX: usize = 1 << 20;

/// Values at least this long (and shorter than [`EXACT_COPY_MAX`]) are kept in an
/// [`allocator::ExactBuf`]: below it, a size class's rounding costs less than the buffer's
/// shared header.
pub const EXACT_MALLOC_MIN: usize = 1 << 10;

/// A group and plural resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupResource {
    /// API group ("" = core).
    pub group: String,
    /// Plural resource.
    pub resource: String,
}

impl GroupResource {
    /// Build from string slices.
    pub fn new(group: &str, resource: &str) -> Self {
        GroupResource {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

/// Where one object lives. Ordered group, resource, shard, cluster, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// API group.
    pub group: Part,
    /// Plural resource.
    pub resource: Part,
    /// Shard that wrote it.
    pub shard: Part,
    /// Logical cluster.
    pub cluster: Part,
    /// Namespace ("" when cluster-scoped).
    pub namespace: Part,
    /// Name.
    pub name: Part,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "/{}/{}/{}/{}/",
            if self.group.is_empty() {
                "core"
            } else {
                &self.group
            },
            self.resource,
            self.shard,
            self.cluster
        )?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        f.write_str(&self.name)
    }
}

/// A set of keys: every field `None` is a wildcard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Restrict to one group/resource.
    pub resource: Option<GroupResource>,
    /// Restrict to one shard.
    pub shard: Option<String>,
    /// Restrict to one logical cluster.
    pub cluster: Option<String>,
    /// Restrict to one namespace.
    pub namespace: Option<String>,
}

impl Scope {
    /// Everything in the store.
    pub fn all() -> Self {
        Scope::default()
    }

    /// Whether `key` is inside this scope.
    pub fn contains(&self, key: &Key) -> bool {
        self.resource
            .as_ref()
            .is_none_or(|gr| gr.group == key.group && gr.resource == key.resource)
            && self.shard.as_ref().is_none_or(|s| *s == key.shard)
            && self.cluster.as_ref().is_none_or(|c| *c == key.cluster)
            && self.namespace.as_ref().is_none_or(|n| *n == key.namespace)
    }
}

/// One stored object.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its key (shared with the store's map and its history).
    pub key: Arc<Key>,
    /// Revision of its last modification.
    pub revision: u64,
    /// The encoded object (JSON), without resourceVersion.
    pub value: Bytes,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created.
    Created,
    /// The key was overwritten.
    Updated,
    /// The key was deleted; `value` is the last state.
    Deleted,
}

/// One change, as seen by watchers.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Revision of the change.
    pub revision: u64,
    /// Kind.
    pub kind: EventKind,
    /// Key.
    pub key: Arc<Key>,
    /// New value (or the last value for deletes).
    pub value: Bytes,
    /// Previous value for updates and deletes.
    pub prev: Option<Bytes>,
    /// Revision of the previous value (0 when there is none).
    pub prev_revision: u64,
}

/// The result of a list: the records and the revision they were read at.
#[derive(Debug, Clone)]
pub struct Listing {
    /// Records in key order.
    pub records: Vec<Record>,
    /// The store revision of the snapshot.
    pub revision: u64,
}

/// Errors of the storage layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist.
    #[error("not found")]
    NotFound,
    /// The key exists already.
    #[error("already exists")]
    AlreadyExists,
    /// A revision precondition failed.
    #[error("revision conflict: current revision is {current}")]
    Conflict {
        /// The key's current revision.
        current: u64,
    },
    /// The requested revision is no longer in the history.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision still retained minus one.
        oldest: u64,
    },
    /// A backend failure.
    #[error("storage error: {0}")]
    Internal(String),
    /// The backend cannot be reached now (etcd down): retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The value is larger than the backend accepts (etcd's request limit).
    #[error("{0}")]
    TooLarge(String),
}

/// A stream of changes after some revision.
pub type WatchStream = BoxStream<'static, Result<Arc<Event>, StoreError>>;

/// Storage backends: memory now, durable and etcd later.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Read one key.
    async fn get(&self, key: &Key) -> Result<Option<Record>, StoreError>;
    /// Read every key in `scope`, in key order, at one revision.
    async fn list(&self, scope: &Scope) -> Result<Listing, StoreError>;
    /// Create a key; [`StoreError::AlreadyExists`] if present.
    async fn create(&self, key: Key, value: Bytes) -> Result<Record, StoreError>;
    /// Overwrite an existing key; with `expected` the key's revision must equal it.
    async fn update(
        &self,
        key: Key,
        value: Bytes,
        expected: Option<u64>,
    ) -> Result<Record, StoreError>;
    /// Delete a key; returns its last state stamped with the deletion's revision.
    async fn delete(&self, key: &Key, expected: Option<u64>) -> Result<Record, StoreError>;
    /// Read every key in `scope` as it was at `revision`; [`StoreError::Expired`] when that
    /// revision is older than the retained history.
    async fn list_at(&self, scope: &Scope, revision: u64) -> Result<Listing, StoreError>;
    /// Changes in `scope` with a revision greater than `after`.
    async fn watch(&self, scope: Scope, after: u64) -> Result<WatchStream, StoreError>;
    /// The current revision.
    async fn revision(&self) -> Result<u64, StoreError>;
    /// Whether the stored bytes of `key` are stale: written under an encryption provider (or
    /// key) other than the one writes use now. An update of a stale key must be written even
    /// when it changes nothing, so that it is rewritten under the current provider.
    fn is_stale(&self, _key: &Key) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_kept_exactly_holds_the_same_bytes_small_or_large_with_or_without_spare_room() {
        for len in [
            0,
            1,
            EXACT_MALLOC_MIN - 1,
            EXACT_MALLOC_MIN,
            2690,
            EXACT_COPY_MAX - 1,
            EXACT_COPY_MAX,
            3 * EXACT_COPY_MAX,
        ] {
            let text: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for spare in [0, 1, len] {
                let mut v = Vec::with_capacity(len + spare);
                v.extend_from_slice(&text);
                assert_eq!(exact_bytes(v), text, "{len} bytes, {spare} spare");
            }
            assert_eq!(exact_copy(&text), text, "{len} bytes copied");
        }
    }

    fn key(cluster: &str, name: &str) -> Key {
        Key {
            group: "cache.kcp.io".into(),
            resource: "cachedobjects".into(),
            shard: "root".into(),
            cluster: cluster.into(),
            namespace: Default::default(),
            name: name.into(),
        }
    }

    #[test]
    fn keys_print_like_kcp_etcd_keys() {
        assert_eq!(
            key("c1", "x").to_string(),
            "/cache.kcp.io/cachedobjects/root/c1/x"
        );
    }

    #[test]
    fn wildcard_fields_of_a_scope_match_anything() {
        let s = Scope {
            cluster: Some("c1".into()),
            ..Scope::all()
        };
        assert!(s.contains(&key("c1", "x")));
        assert!(!s.contains(&key("c2", "x")));
    }
}
