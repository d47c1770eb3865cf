//! [`Part`]: one string of a [`crate::Key`], shared instead of copied. A million keys of one
//! resource name the same group, resource, shard, cluster and namespace; the memory store
//! interns those (`Interner`), so each is held once and two keys' parts usually compare by
//! pointer.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::sync::Arc;

/// A shared, immutable string (16 bytes; a clone is a reference count).
#[derive(Clone)]
pub struct Part(Arc<str>);

impl Part {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Part {
    fn default() -> Self {
        Part::from("")
    }
}

impl std::ops::Deref for Part {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Part {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Part {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Part {
    fn from(s: &str) -> Self {
        Part(Arc::from(s))
    }
}

impl From<String> for Part {
    fn from(s: String) -> Self {
        Part(Arc::from(s))
    }
}

impl From<&String> for Part {
    fn from(s: &String) -> Self {
        Part::from(s.as_str())
    }
}

impl From<Part> for String {
    fn from(p: Part) -> Self {
        p.0.to_string()
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq for Part {
    fn eq(&self, other: &Part) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for Part {}

impl PartialOrd for Part {
    fn partial_cmp(&self, other: &Part) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Part {
    fn cmp(&self, other: &Part) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.0.cmp(&other.0)
    }
}

impl std::hash::Hash for Part {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl PartialEq<str> for Part {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Part {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Part {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Part> for str {
    fn eq(&self, other: &Part) -> bool {
        self == &*other.0
    }
}

impl PartialEq<Part> for &str {
    fn eq(&self, other: &Part) -> bool {
        *self == &*other.0
    }
}

impl PartialEq<Part> for String {
    fn eq(&self, other: &Part) -> bool {
        **self == *other.0
    }
}

/// The parts many keys share, each held once.
#[derive(Default)]
pub(crate) struct Interner {
    parts: HashSet<Part>,
}

/// Distinct parts an interner keeps at most; past it, parts are kept as given (a bound against
/// a store of many distinct clusters growing the set without end).
const INTERNED_MAX: usize = 1 << 16;

impl Interner {
    /// The interned copy of `part`.
    pub(crate) fn intern(&mut self, part: &mut Part) {
        if let Some(p) = self.parts.get(part.as_str()) {
            *part = p.clone();
        } else if self.parts.len() < INTERNED_MAX {
            self.parts.insert(part.clone());
        }
    }

    /// The interned part equal to `s` (made and kept when new).
    pub(crate) fn part(&mut self, s: &str) -> Part {
        match self.parts.get(s) {
            Some(p) => p.clone(),
            None => {
                let p = Part::from(s);
                if self.parts.len() < INTERNED_MAX {
                    self.parts.insert(p.clone());
                }
                p
            }
        }
    }

    /// `key` with its group, resource, shard, cluster and namespace interned.
    pub(crate) fn key(&mut self, mut key: crate::Key) -> crate::Key {
        self.intern(&mut key.group);
        self.intern(&mut key.resource);
        self.intern(&mut key.shard);
        self.intern(&mut key.cluster);
        self.intern(&mut key.namespace);
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_compare_and_hash_as_their_strings() {
        let (a, b) = (
            Part::from("cachedobjects"),
            Part::from(String::from("cachedobjects")),
        );
        assert_eq!(a, b);
        assert_eq!(a, "cachedobjects");
        let (x, y) = (Part::from("a"), Part::from("b"));
        assert!(x < y);
        let set: HashSet<Part> = [a.clone()].into_iter().collect();
        assert!(set.contains("cachedobjects"));
        assert_eq!(format!("{a}/{a:?}"), "cachedobjects/\"cachedobjects\"");
    }

    #[test]
    fn an_interner_hands_out_one_copy_of_equal_parts() {
        let mut i = Interner::default();
        let (mut a, mut b) = (Part::from("shard-1"), Part::from("shard-1"));
        i.intern(&mut a);
        i.intern(&mut b);
        assert!(Arc::ptr_eq(&a.0, &b.0));
    }
}
