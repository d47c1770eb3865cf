//! Snapshots of a data directory's local stores: one file holding every store at one instant,
//! with a checksum, and its restore into a new data directory.
//!
//! **Format** (version 1, all integers big-endian): the magic `RVWSNAP1`; the number of stores
//! (u32); per store its file name (u16 length, UTF-8), revision (u64) and record count (u64),
//! then each record as the store file holds it (u32 length + encoded key, u32 length + value:
//! 8-byte revision and the stored bytes, encrypted where the store encrypts); then the trailer
//! `RVWSEND\n` and the SHA-256 of every byte before the digest. Values are copied as stored, so
//! a snapshot of an encrypted store stays encrypted and needs the same
//! `--encryption-provider-config` after restore.
//!
//! [`restore`] reads the file twice: once to check the checksum and the structure, and only then
//! to write the store files, so a damaged or truncated file changes nothing.

use crate::StoreError;
use crate::local::{LocalError, NewFile, StoreView};
use crate::progress::Progress;
use sha2::{Digest, Sha256};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The first eight bytes of every snapshot.
pub const MAGIC: &[u8; 8] = b"RVWSNAP1";
const TRAILER: &[u8; 8] = b"RVWSEND\n";
/// Sanity bounds that keep a damaged length from allocating gigabytes.
const MAX_STORES: u32 = 64;
const MAX_KEY: u32 = 1 << 20;
const MAX_VALUE: u32 = 1 << 30;

/// Errors of taking or restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The snapshot is not one, is damaged or truncated.
    #[error("{path}: not a usable snapshot: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The target data directory cannot take a restore.
    #[error("{path}: {reason}")]
    Target {
        /// The directory.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// A store could not be read or written.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// A store view failed while being read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a snapshot holds, per store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSummary {
    /// The store's file name in the data directory.
    pub file: String,
    /// Its revision.
    pub revision: u64,
    /// Its record count.
    pub records: u64,
}

/// Write a snapshot of `stores` (file name, view) to `out`; returns what it holds.
pub fn write(
    out: impl Write,
    stores: &[(String, StoreView)],
    progress: &Progress,
) -> Result<Vec<StoreSummary>, SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: PathBuf::from("<snapshot output>"),
        source,
    };
    let mut w = Hashing::new(BufWriter::with_capacity(1 << 20, out));
    let mut summary = Vec::with_capacity(stores.len());
    w.put(MAGIC).map_err(io)?;
    w.put(&(stores.len() as u32).to_be_bytes()).map_err(io)?;
    for (file, view) in stores {
        let count = view.len()?;
        progress.stage(format!("writing a snapshot of {file}"), Some(count));
        w.put(&(file.len() as u16).to_be_bytes()).map_err(io)?;
        w.put(file.as_bytes()).map_err(io)?;
        w.put(&view.revision().to_be_bytes()).map_err(io)?;
        w.put(&count.to_be_bytes()).map_err(io)?;
        let mut written = 0u64;
        view.for_each(|k, v| -> Result<(), SnapshotError> {
            w.put(&(k.len() as u32).to_be_bytes()).map_err(io)?;
            w.put(k).map_err(io)?;
            w.put(&(v.len() as u32).to_be_bytes()).map_err(io)?;
            w.put(v).map_err(io)?;
            written += 1;
            progress.add(1, (k.len() + v.len()) as u64);
            Ok(())
        })?;
        if written != count {
            return Err(SnapshotError::Store(StoreError::Internal(format!(
                "{file}: the view changed while it was read ({count} then {written} records)"
            ))));
        }
        summary.push(StoreSummary {
            file: file.clone(),
            revision: view.revision(),
            records: count,
        });
    }
    w.put(TRAILER).map_err(io)?;
    let digest = w.hasher.clone().finalize();
    w.inner.write_all(&digest).map_err(io)?;
    w.inner.flush().map_err(io)?;
    Ok(summary)
}

/// Save a snapshot of the store files `files` of `data_dir` (those that exist; none running)
/// into `target`, written to a temporary file first and renamed when complete and synced.
pub fn save_files(
    data_dir: &Path,
    files: &[&str],
    target: &Path,
    progress: &Progress,
) -> Result<Vec<StoreSummary>, SnapshotError> {
    let mut views = Vec::new();
    for f in files {
        let path = data_dir.join(f);
        if path.is_file() {
            views.push((f.to_string(), StoreView::open(&path)?));
        }
    }
    if views.is_empty() {
        return Err(SnapshotError::Target {
            path: data_dir.to_path_buf(),
            reason: format!("holds no store file ({})", files.join(", ")),
        });
    }
    write_atomically(target, |out| write(out, &views, progress))
}

/// Create `target` through a temporary file next to it, synced and renamed once `fill`
/// succeeded; on failure nothing is left behind.
pub fn write_atomically<T>(
    target: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> Result<T, SnapshotError>,
) -> Result<T, SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: target.to_path_buf(),
        source,
    };
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    let partial = target.with_file_name(name);
    let mut file = std::fs::File::create(&partial).map_err(io)?;
    let result = fill(&mut file).and_then(|t| {
        file.sync_all().map_err(io)?;
        std::fs::rename(&partial, target).map_err(io)?;
        Ok(t)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Check a snapshot file end to end (structure and checksum) without writing anything.
pub fn verify(path: &Path, progress: &Progress) -> Result<Vec<StoreSummary>, SnapshotError> {
    progress.stage(format!("verifying {}", path.display()), None);
    read(path, |item| {
        if let Item::Record(k, v) = item {
            progress.add(1, (k.len() + v.len()) as u64);
        }
        Ok(())
    })
}

/// Restore the snapshot `path` into `data_dir`, which must be absent or empty: the file is
/// verified first, then each store file is written. Returns what was restored.
pub fn restore(
    path: &Path,
    data_dir: &Path,
    progress: &Progress,
) -> Result<Vec<StoreSummary>, SnapshotError> {
    let target = |reason: &str| SnapshotError::Target {
        path: data_dir.to_path_buf(),
        reason: reason.to_string(),
    };
    if data_dir.exists() {
        let mut entries = std::fs::read_dir(data_dir).map_err(|source| SnapshotError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        if entries.next().is_some() {
            return Err(target(
                "the data directory is not empty (a server may be using it); restore into a new or empty directory",
            ));
        }
    }
    let summary = verify(path, progress)?;
    progress.stage(
        format!("restoring into {}", data_dir.display()),
        Some(summary.iter().map(|s| s.records).sum()),
    );
    let created = !data_dir.exists();
    std::fs::create_dir_all(data_dir).map_err(|source| SnapshotError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let result = write_stores(path, data_dir, progress);
    if result.is_err() {
        for s in &summary {
            let _ = std::fs::remove_file(data_dir.join(&s.file));
        }
        if created {
            let _ = std::fs::remove_dir(data_dir);
        }
    }
    result.map(|_| summary)
}

/// The second pass of [`restore`]: one store file per section, written as it is read.
fn write_stores(path: &Path, data_dir: &Path, progress: &Progress) -> Result<(), SnapshotError> {
    let mut current: Option<NewFile> = None;
    read(path, |item| match item {
        Item::Store(file, revision) => {
            if let Some(done) = current.take() {
                done.finish()?;
            }
            current = Some(NewFile::create(&data_dir.join(file), revision)?);
            Ok(())
        }
        Item::Record(k, v) => match current.as_mut() {
            Some(f) => {
                progress.add(1, (k.len() + v.len()) as u64);
                Ok(f.insert(k, v)?)
            }
            // invariant: `read` announces a store before its records.
            None => Err(SnapshotError::Store(StoreError::Internal(
                "a record before its store".into(),
            ))),
        },
    })?;
    if let Some(done) = current.take() {
        done.finish()?;
    }
    Ok(())
}

/// What [`read`] reports as it goes.
enum Item<'a> {
    /// A store begins: its file name and revision.
    Store(&'a str, u64),
    /// A record of the last store begun: raw key and value.
    Record(&'a [u8], &'a [u8]),
}

/// Parse a snapshot, calling `each` at every store and record, and check the trailer and
/// checksum at the end.
fn read(
    path: &Path,
    mut each: impl FnMut(Item<'_>) -> Result<(), SnapshotError>,
) -> Result<Vec<StoreSummary>, SnapshotError> {
    let invalid = |reason: String| SnapshotError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut r = HashingReader {
        inner: BufReader::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
    };
    let eof = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            invalid("truncated".into())
        } else {
            SnapshotError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    };
    let mut magic = [0u8; 8];
    r.exact(&mut magic).map_err(eof)?;
    if &magic != MAGIC {
        return Err(invalid(
            "it does not start with a replication-vw snapshot header".into(),
        ));
    }
    let stores = r.u32().map_err(eof)?;
    if stores > MAX_STORES {
        return Err(invalid(format!("{stores} stores")));
    }
    let mut summary = Vec::new();
    let mut key = Vec::new();
    let mut value = Vec::new();
    for _ in 0..stores {
        let len = r.u16().map_err(eof)?;
        let mut name = vec![0u8; len as usize];
        r.exact(&mut name).map_err(eof)?;
        let name =
            String::from_utf8(name).map_err(|_| invalid("a store name is not UTF-8".into()))?;
        if name.is_empty()
            || name.contains(['/', '\\'])
            || name.starts_with('.')
            || !name.ends_with(".db")
            || summary.iter().any(|s: &StoreSummary| s.file == name)
        {
            return Err(invalid(format!("store file name {name:?}")));
        }
        let revision = r.u64().map_err(eof)?;
        let records = r.u64().map_err(eof)?;
        each(Item::Store(&name, revision))?;
        for _ in 0..records {
            let klen = r.u32().map_err(eof)?;
            if klen > MAX_KEY {
                return Err(invalid(format!("a key of {klen} bytes in {name}")));
            }
            key.resize(klen as usize, 0);
            r.exact(&mut key).map_err(eof)?;
            let vlen = r.u32().map_err(eof)?;
            if !(8..=MAX_VALUE).contains(&vlen) {
                return Err(invalid(format!("a value of {vlen} bytes in {name}")));
            }
            value.resize(vlen as usize, 0);
            r.exact(&mut value).map_err(eof)?;
            each(Item::Record(&key, &value))?;
        }
        summary.push(StoreSummary {
            file: name,
            revision,
            records,
        });
    }
    let mut trailer = [0u8; 8];
    r.exact(&mut trailer).map_err(eof)?;
    if &trailer != TRAILER {
        return Err(invalid(
            "damaged: no end marker where the records end".into(),
        ));
    }
    let expected = r.hasher.clone().finalize();
    let mut digest = [0u8; 32];
    r.inner.read_exact(&mut digest).map_err(eof)?;
    if digest[..] != expected[..] {
        return Err(invalid("damaged: the checksum does not match".into()));
    }
    let mut rest = [0u8; 1];
    match r.inner.read(&mut rest) {
        Ok(0) => Ok(summary),
        Ok(_) => Err(invalid("damaged: bytes after the checksum".into())),
        Err(e) => Err(eof(e)),
    }
}

/// A writer that hashes what it writes.
struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hasher.update(bytes);
        self.inner.write_all(bytes)
    }
}

/// A reader that hashes what it reads.
struct HashingReader<R: Read> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    fn exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact(buf)?;
        self.hasher.update(&*buf);
        Ok(())
    }

    fn u16(&mut self) -> std::io::Result<u16> {
        let mut b = [0u8; 2];
        self.exact(&mut b)?;
        Ok(u16::from_be_bytes(b))
    }

    fn u32(&mut self) -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        self.exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalStore;
    use crate::{Key, Scope, Store};
    use bytes::Bytes;

    fn key(name: &str) -> Key {
        Key {
            group: "".into(),
            resource: "configmaps".into(),
            shard: "root".into(),
            cluster: "c1".into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    async fn filled(dir: &Path, file: &str, n: usize) -> LocalStore {
        let s = LocalStore::open(dir.join(file)).expect("open");
        for i in 0..n {
            s.create(
                key(&format!("{file}-{i}")),
                Bytes::from(format!("{{\"i\":{i}}}")),
            )
            .await
            .expect("create");
        }
        s
    }

    async fn frozen_views(stores: &[(&str, &LocalStore)]) -> Vec<(String, StoreView)> {
        let mut frozen = Vec::new();
        for (f, s) in stores {
            frozen.push((f.to_string(), s.freeze().await.expect("freeze")));
        }
        frozen.into_iter().map(|(f, z)| (f, z.resume())).collect()
    }

    #[tokio::test]
    async fn a_restored_data_dir_holds_every_store_with_the_same_records_and_revisions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = filled(dir.path(), "cache.db", 30).await;
        let b = filled(dir.path(), "workspaces.db", 7).await;
        let views = frozen_views(&[("cache.db", &a), ("workspaces.db", &b)]).await;
        let snap = dir.path().join("snap");
        let summary =
            write_atomically(&snap, |f| write(f, &views, &Progress::new("test"))).expect("save");
        assert_eq!(summary[0].records, 30);
        assert_eq!(summary[1].records, 7);
        drop(views);

        let target = dir.path().join("restored");
        let restored = restore(&snap, &target, &Progress::new("test")).expect("restore");
        assert_eq!(restored, summary);
        for (file, store) in [("cache.db", &a), ("workspaces.db", &b)] {
            let back = LocalStore::open(target.join(file)).expect("open restored");
            let want = store.list(&Scope::all()).await.expect("list");
            let got = back.list(&Scope::all()).await.expect("list");
            assert_eq!(got.records, want.records, "{file}");
            assert_eq!(got.revision, want.revision, "{file}");
        }
    }

    #[tokio::test]
    async fn writes_wait_while_a_store_is_frozen_and_go_on_after_it_resumes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = filled(dir.path(), "cache.db", 3).await;
        let frozen = a.freeze().await.expect("freeze");
        let at = frozen.revision();
        let writer = {
            let a = a.clone();
            tokio::spawn(async move { a.create(key("late"), Bytes::from_static(b"{}")).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(
            a.revision().await.expect("rev"),
            at,
            "no write while frozen"
        );
        let view = frozen.resume();
        let rec = writer.await.expect("join").expect("create");
        assert_eq!(rec.revision, at + 1);
        assert_eq!(
            view.len().expect("len"),
            3,
            "the view keeps the frozen state"
        );
    }

    async fn saved(dir: &Path) -> PathBuf {
        let a = filled(dir, "cache.db", 5).await;
        let views = frozen_views(&[("cache.db", &a)]).await;
        let snap = dir.join("snap");
        write_atomically(&snap, |f| write(f, &views, &Progress::new("test"))).expect("save");
        snap
    }

    #[tokio::test]
    async fn a_truncated_snapshot_is_refused_and_nothing_is_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = saved(dir.path()).await;
        let bytes = std::fs::read(&snap).expect("read");
        for cut in [4, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&snap, &bytes[..cut]).expect("write");
            let target = dir.path().join(format!("t{cut}"));
            let err = restore(&snap, &target, &Progress::new("test")).expect_err("truncated");
            assert!(err.to_string().contains("not a usable snapshot"), "{err}");
            assert!(!target.exists(), "nothing created for a cut at {cut}");
        }
    }

    #[tokio::test]
    async fn a_snapshot_with_one_flipped_byte_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = saved(dir.path()).await;
        let mut bytes = std::fs::read(&snap).expect("read");
        let at = bytes.len() - 60;
        bytes[at] ^= 0x01;
        std::fs::write(&snap, &bytes).expect("write");
        let err =
            restore(&snap, &dir.path().join("t"), &Progress::new("test")).expect_err("damaged");
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    #[tokio::test]
    async fn a_restore_into_a_data_dir_that_is_not_empty_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = saved(dir.path()).await;
        let target = dir.path().join("used");
        std::fs::create_dir(&target).expect("mkdir");
        std::fs::write(target.join("ca.crt"), b"x").expect("write");
        let err = restore(&snap, &target, &Progress::new("test")).expect_err("not empty");
        assert!(err.to_string().contains("not empty"), "{err}");
        assert_eq!(std::fs::read_dir(&target).expect("ls").count(), 1);
    }

    #[tokio::test]
    async fn saving_the_files_of_a_running_store_is_refused_as_locked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _a = filled(dir.path(), "cache.db", 1).await;
        let err = save_files(
            dir.path(),
            &["cache.db"],
            &dir.path().join("s"),
            &Progress::new("test"),
        )
        .expect_err("locked");
        assert!(
            matches!(err, SnapshotError::Local(LocalError::Locked { .. })),
            "{err}"
        );
        assert!(!dir.path().join("s").exists());
        assert!(!dir.path().join("s.partial").exists());
    }
}
