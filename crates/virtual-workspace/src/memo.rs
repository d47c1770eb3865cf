//! The validation memo: which stored objects the index has already validated against which
//! schema and found unchanged by pruning and defaulting, kept as a file in the data directory so
//! that a restarted virtual workspace serves them without validating them again.
//!
//! An entry is a digest of the object's stored text together with its validation context (the
//! schema's JSON, the served apiVersion and kind, whether the object is wrapped in a
//! CachedObject, and this program's version), so the memo can never vouch for other bytes or
//! another schema: an object whose text or schema changed simply misses and is validated as at
//! first ingest. A missing, stale or damaged file therefore costs time, never correctness. The
//! file is replaced atomically (written aside, synced, renamed) and carries its own checksum.

use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;

/// One entry: the first 128 bits of a SHA-256 over the context and the object's text.
pub type Digest = [u8; 16];

/// The validation context of one served API, the first half of every digest made for it.
pub type Context = [u8; 32];

/// The file's first bytes; a new layout or digest recipe gets a new magic.
const MAGIC: &[u8; 8] = b"RVWMEMO1";

/// Why the memo file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MemoError {
    #[error("validation memo {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("validation memo {path}: {reason}")]
    Damaged { path: String, reason: &'static str },
}

/// The context digest of an API: what, besides an object's own text, decides whether it
/// validates and how pruning and defaulting change it.
pub fn context(
    schema: &serde_json::Value,
    api_version: &str,
    kind: &str,
    wrapped: bool,
) -> Context {
    let mut h = Sha256::new();
    h.update(MAGIC);
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update([0, u8::from(wrapped)]);
    for part in [api_version, kind] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    // `Value`'s maps are ordered, so equal schemas give equal bytes.
    h.update(schema.to_string().as_bytes());
    h.finalize().into()
}

/// The digest of an object's stored `text` validated in `context`.
pub fn digest(context: &Context, text: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(context);
    h.update(text);
    let full: [u8; 32] = h.finalize().into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The digests read from a memo file.
#[derive(Debug, Default)]
pub struct Memo {
    digests: HashSet<u128>,
}

impl Memo {
    /// A memo holding `digests`.
    pub fn of(digests: impl IntoIterator<Item = Digest>) -> Memo {
        Memo {
            digests: digests.into_iter().map(u128::from_le_bytes).collect(),
        }
    }

    /// Whether `digest` was recorded.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.digests.contains(&u128::from_le_bytes(*digest))
    }

    /// How many digests it holds.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Read the memo at `path`; `Ok(None)` when there is no file.
    pub fn load(path: &Path) -> Result<Option<Memo>, MemoError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io_error(path, source)),
        };
        let damaged = |reason| MemoError::Damaged {
            path: path.display().to_string(),
            reason,
        };
        if bytes.len() < MAGIC.len() + 8 + 32 || !bytes.starts_with(MAGIC) {
            return Err(damaged("not a memo of this version"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != sum {
            return Err(damaged("checksum mismatch"));
        }
        let mut count = [0u8; 8];
        count.copy_from_slice(&body[MAGIC.len()..MAGIC.len() + 8]);
        let entries = &body[MAGIC.len() + 8..];
        if entries.len() % 16 != 0 || (entries.len() / 16) as u64 != u64::from_le_bytes(count) {
            return Err(damaged("length does not match its count"));
        }
        Ok(Some(Memo {
            digests: entries
                .chunks_exact(16)
                .map(|c| {
                    let mut d = [0u8; 16];
                    d.copy_from_slice(c);
                    u128::from_le_bytes(d)
                })
                .collect(),
        }))
    }

    /// Replace the memo at `path` with `digests`: written to a file beside it, synced, then
    /// renamed over it (and the directory synced), so a crash leaves the old or the new memo.
    pub fn save(path: &Path, digests: &[Digest]) -> Result<(), MemoError> {
        let mut body = Vec::with_capacity(MAGIC.len() + 8 + digests.len() * 16 + 32);
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&(digests.len() as u64).to_le_bytes());
        for d in digests {
            body.extend_from_slice(d);
        }
        let sum = Sha256::digest(&body);
        body.extend_from_slice(&sum);
        let aside = path.with_extension("memo.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&aside)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&aside, path)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|source| io_error(path, source))
    }
}

fn io_error(path: &Path, source: std::io::Error) -> MemoError {
    MemoError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_saved_memo_reads_back_with_the_same_digests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("validated.memo");
        let ctx = context(&json!({"type": "object"}), "g.io/v1", "Thing", true);
        let a = digest(&ctx, b"{\"a\":1}");
        let b = digest(&ctx, b"{\"a\":2}");
        Memo::save(&path, &[a, b]).unwrap();
        let memo = Memo::load(&path).unwrap().unwrap();
        assert_eq!(memo.len(), 2);
        assert!(memo.contains(&a) && memo.contains(&b));
        assert!(!memo.contains(&digest(&ctx, b"{\"a\":3}")));
    }

    #[test]
    fn a_digest_changes_with_the_schema_the_kind_and_the_wrapping() {
        let text = b"{\"spec\":{}}";
        let base = digest(
            &context(&json!({"type": "object"}), "g/v1", "T", true),
            text,
        );
        for other in [
            context(&json!({"type": "object", "x": 1}), "g/v1", "T", true),
            context(&json!({"type": "object"}), "g/v2", "T", true),
            context(&json!({"type": "object"}), "g/v1", "U", true),
            context(&json!({"type": "object"}), "g/v1", "T", false),
        ] {
            assert_ne!(digest(&other, text), base);
        }
    }

    #[test]
    fn a_missing_memo_is_none_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("validated.memo");
        assert!(Memo::load(&path).unwrap().is_none());
        Memo::save(&path, &[[7u8; 16]]).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[MAGIC.len() + 8] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Memo::load(&path),
            Err(MemoError::Damaged {
                reason: "checksum mismatch",
                ..
            })
        ));
        std::fs::write(&path, b"short").unwrap();
        assert!(Memo::load(&path).is_err());
    }
}
