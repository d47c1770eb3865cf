//! Presented objects kept for the reads that come after: a stored object's presentation (its
//! text as readers get it: `apiVersion`, `resourceVersion` and the cluster and shard
//! annotations stamped in, [`crate::objects::present_json`]) depends only on its key, its
//! revision and the apiVersion asked for, so it is made once and copied for every later GET,
//! LIST item and watch event of that revision. Making it reads the stored text's top level as
//! raw members, which scans the whole object: callgrind put it at about 45,000 instructions a
//! 2.7 KB CachedObject, the largest part of a cache-server LIST (the etcd scenario's cache server
//! spent most of its CPU there) and of a GET. Bounded: [`BUDGET`] bytes in all, objects above
//! [`LARGEST`] never kept, the oldest kept dropped first.

use bytes::Bytes;
use std::collections::VecDeque;
use std::hash::BuildHasher as _;
use std::sync::Arc;
use store::Key;

/// Bytes of presented objects kept at most.
pub const BUDGET: usize = 32 << 20;
/// Largest presented object kept.
pub const LARGEST: usize = 64 << 10;

/// Presented objects by (key, revision, stored length, apiVersion); see the module's notes.
pub struct PresentMemo {
    inner: parking_lot::RwLock<Inner>,
    hasher: foldhash::fast::RandomState,
    budget: usize,
    largest: usize,
}

impl Default for PresentMemo {
    fn default() -> Self {
        PresentMemo::with_bounds(BUDGET, LARGEST)
    }
}

#[derive(Default)]
struct Inner {
    table: hashbrown::HashTable<Arc<Entry>>,
    /// The entries in the order they were kept, the oldest first.
    order: VecDeque<Arc<Entry>>,
    bytes: usize,
}

struct Entry {
    hash: u64,
    key: Key,
    revision: u64,
    /// The stored value's length: one more check that the revision names the same value.
    stored: usize,
    api_version: Box<str>,
    text: Bytes,
}

impl Entry {
    fn is(&self, key: &Key, revision: u64, stored: usize, api_version: &str) -> bool {
        self.revision == revision
            && self.stored == stored
            && *self.api_version == *api_version
            && self.key == *key
    }
}

impl PresentMemo {
    /// A memo keeping at most `budget` bytes, none of an object above `largest` bytes.
    pub fn with_bounds(budget: usize, largest: usize) -> PresentMemo {
        PresentMemo {
            inner: parking_lot::RwLock::default(),
            hasher: foldhash::fast::RandomState::default(),
            budget,
            largest: largest.min(budget),
        }
    }

    /// Append the presentation of the record (`key`, `revision`, a stored value of `stored`
    /// bytes) for `api_version` to `out`: a kept copy, or what `make` appends (then kept when
    /// small enough). `false` when `make` fails (`out` is then as `make` left it).
    pub fn present(
        &self,
        key: &Key,
        revision: u64,
        stored: usize,
        api_version: &str,
        out: &mut Vec<u8>,
        make: impl FnOnce(&mut Vec<u8>) -> bool,
    ) -> bool {
        let hash = self.hasher.hash_one((key, revision, stored, api_version));
        if let Some(e) = self
            .inner
            .read()
            .table
            .find(hash, |e| e.is(key, revision, stored, api_version))
        {
            out.extend_from_slice(&e.text);
            return true;
        }
        let start = out.len();
        if !make(out) {
            return false;
        }
        let Some(made) = out.get(start..).filter(|m| m.len() <= self.largest) else {
            return true;
        };
        let entry = Arc::new(Entry {
            hash,
            key: key.clone(),
            revision,
            stored,
            api_version: api_version.into(),
            text: Bytes::copy_from_slice(made),
        });
        self.keep(entry);
        true
    }

    fn keep(&self, entry: Arc<Entry>) {
        let mut inner = self.inner.write();
        let Inner {
            table,
            order,
            bytes,
        } = &mut *inner;
        if table
            .find(entry.hash, |e| {
                e.is(&entry.key, entry.revision, entry.stored, &entry.api_version)
            })
            .is_some()
        {
            // Made twice at once by two readers: the first one kept stays.
            return;
        }
        while *bytes + entry.text.len() > self.budget {
            let Some(old) = order.pop_front() else {
                break;
            };
            if let Ok(slot) = table.find_entry(old.hash, |e| Arc::ptr_eq(e, &old)) {
                slot.remove();
            }
            *bytes -= old.text.len();
        }
        *bytes += entry.text.len();
        order.push_back(entry.clone());
        table.insert_unique(entry.hash, entry, |e| e.hash);
    }

    /// Bytes of presented objects kept now.
    pub fn bytes(&self) -> usize {
        self.inner.read().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

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

    /// Presents `name` at `revision` through `memo`, counting the presentations made.
    fn read(
        memo: &PresentMemo,
        made: &Cell<u32>,
        name: &str,
        revision: u64,
        size: usize,
    ) -> Vec<u8> {
        let mut out = b"[".to_vec();
        let ok = memo.present(&key(name), revision, size, "v1alpha1", &mut out, |o| {
            made.set(made.get() + 1);
            o.extend(std::iter::repeat_n(b'x', size));
            o.extend_from_slice(format!("{name}@{revision}").as_bytes());
            true
        });
        assert!(ok);
        out
    }

    #[test]
    fn a_revision_is_presented_once_and_copied_for_every_later_read() {
        let memo = PresentMemo::default();
        let made = Cell::new(0);
        let first = read(&memo, &made, "a", 5, 10);
        assert_eq!(read(&memo, &made, "a", 5, 10), first);
        assert_eq!(made.get(), 1);
        assert!(first.ends_with(b"a@5") && first.starts_with(b"[x"));
        // Another revision, another object, another apiVersion: each made anew.
        assert!(read(&memo, &made, "a", 6, 10).ends_with(b"a@6"));
        assert!(read(&memo, &made, "b", 5, 10).ends_with(b"b@5"));
        let mut out = Vec::new();
        assert!(memo.present(&key("a"), 5, 10, "v1", &mut out, |o| {
            made.set(made.get() + 1);
            o.extend_from_slice(b"other");
            true
        }));
        assert_eq!((out.as_slice(), made.get()), (b"other".as_slice(), 4));
    }

    #[test]
    fn the_memo_keeps_within_its_budget_and_never_keeps_a_large_object() {
        let memo = PresentMemo::with_bounds(1000, 300);
        let made = Cell::new(0);
        for i in 0..20 {
            read(&memo, &made, &format!("o{i}"), 1, 100);
            assert!(memo.bytes() <= 1000, "{}", memo.bytes());
        }
        // The newest are kept, the oldest were dropped.
        let before = made.get();
        read(&memo, &made, "o19", 1, 100);
        assert_eq!(made.get(), before);
        read(&memo, &made, "o0", 1, 100);
        assert_eq!(made.get(), before + 1);
        read(&memo, &made, "big", 1, 400);
        read(&memo, &made, "big", 1, 400);
        assert_eq!(made.get(), before + 3);
    }

    #[test]
    fn a_presentation_that_fails_is_not_kept() {
        let memo = PresentMemo::default();
        let mut out = Vec::new();
        assert!(!memo.present(&key("a"), 1, 3, "v1", &mut out, |_| false));
        assert_eq!(memo.bytes(), 0);
    }
}
