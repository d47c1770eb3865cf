//! The local store: a crash-safe redb file behind a [`MemoryStore`] watch cache.
//!
//! **Layout.** One redb file with two tables: `objects` (encoded [`Key`] → revision (8 bytes,
//! big-endian) followed by the value) and `meta` (`format` = [`FORMAT_VERSION`], `revision` =
//! the last revision handed out, deletes included). Keys are encoded so that redb's byte order
//! equals [`Key`]'s order (group, resource, shard, cluster, namespace, name): each field's bytes
//! with `0x00` escaped as `0x00 0xFF`, followed by the terminator `0x00 0x01`.
//!
//! **Reads** never touch the file: [`LocalStore::open`] loads every record into a
//! [`MemoryStore`] (with [`MemoryStore::restore`]) whose revision continues from the persisted
//! one, and get, list, `list_at` and watch are that store's. History before the open is gone, so
//! a watch or `list_at` from an older revision is [`StoreError::Expired`], never a different
//! history.
//!
//! **Writes** go through one writer thread, the only place that checks preconditions and assigns
//! revisions. It drains every pending write from its channel (group commit, up to
//! [`MAX_BATCH`]), checks each against the memory store plus the batch's earlier writes
//! (`AlreadyExists`, `NotFound`, `Conflict` exactly as `MemoryStore` does), gives the accepted
//! ones consecutive revisions, commits them to redb in **one** durable transaction (one fsync,
//! `Durability::Immediate`), and only then applies them to the memory store under one lock and
//! answers each caller — so an acknowledged write is on disk, and redb and memory hold the same
//! revisions in the same order. If a commit fails, the store refuses every later write (reads go
//! on): what the file holds is then unknown until a restart re-reads it.
//!
//! **Crash recovery.** Every commit is made with redb's quick-repair
//! (`WriteTransaction::set_quick_repair(true)`: the allocator state is saved with each commit and
//! commits are two-phase), so opening after a crash loads the saved allocator state instead of
//! walking the whole file. redb calls the [`Builder::set_repair_callback`] only for a full repair
//! (a file last written without quick-repair); [`LocalStats::full_repair`] says if one ran.
//!
//! **Encryption at rest.** Values pass through a [`Transformer`] (an `EncryptionConfiguration`)
//! on their way to the file and back: writes use the first provider of the value's resource,
//! the load accepts every listed one. A value read with another provider is *stale*
//! ([`Store::is_stale`]) until it is written again; a value no provider reads is skipped like
//! any other unreadable record.

use super::encryption::Transformer;
use super::memory::{Change, DEFAULT_HISTORY, MemoryStore};
use super::part::Interner;
use super::{Key, Listing, Part, Record, Scope, Store, StoreError, WatchStream};
use async_trait::async_trait;
use bytes::Bytes;
use redb::{
    Builder, Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, oneshot};

/// The on-disk format this build writes; a file with a newer one is refused.
pub const FORMAT_VERSION: u64 = 1;
/// redb's page cache. Reads are served from memory, so the file is read through once at open
/// and then only for the B-tree pages writes touch: a small cache keeps the open from holding
/// a second copy of the data (redb's default is 1 GiB). 2 MiB (64 MiB until issue 17, then
/// 16): redb also keeps every page a commit wrote in it while there is room, so the cache held
/// up to its size of recently written values (the large-objects scenario: 29 MiB of heap for
/// the two stores at 16 MiB each); the load harness wrote 100,000 CachedObjects as fast with 2
/// as with 16 MiB (12,258 and 9,826 against 11,933 and 10,455 objects/s, alternating).
pub const CACHE_BYTES: usize = 2 << 20;
/// The most writes one commit takes.
pub const MAX_BATCH: usize = 4096;

const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_FORMAT: &str = "format";
const META_REVISION: &str = "revision";

/// Why a local store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Another process (or another handle in this one) has the file open.
    #[error("{path}: the store is in use by another running process")]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a newer version of this program.
    #[error(
        "{path}: written with store format version {found}, this build reads up to {supported}; \
         use a newer build"
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
        /// The newest version this build reads.
        supported: u64,
    },
    /// The file does not hold what a store writes.
    #[error("{path}: corrupt store: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// redb or the file system failed.
    #[error("{path}: {message}")]
    Storage {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        message: String,
    },
}

impl From<LocalError> for StoreError {
    fn from(e: LocalError) -> Self {
        StoreError::Internal(e.to_string())
    }
}

/// Counters of a [`LocalStore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalStats {
    /// redb transactions committed for writes (each one fsync).
    pub commits: u64,
    /// Writes committed (acknowledged successes).
    pub writes: u64,
    /// Whether the open had to run redb's full repair (a walk of the whole file). With every
    /// commit made with quick-repair, a crash does not need one: the open loads the allocator
    /// state the last commit saved.
    pub full_repair: bool,
    /// Records loaded at open.
    pub loaded: u64,
    /// Records skipped at open because they could not be read.
    pub skipped: u64,
    /// Records read at open with a provider other than the first, not yet written again.
    pub stale: u64,
}

/// A durable [`Store`]: one redb file, reads from memory, group-committed writes.
/// Cheap to clone: clones share the same file and writer.
#[derive(Clone)]
pub struct LocalStore {
    shared: Arc<Shared>,
}

struct Shared {
    memory: MemoryStore,
    tx: mpsc::UnboundedSender<Request>,
    counters: Arc<Counters>,
    loaded: u64,
    skipped: u64,
    full_repair: bool,
    path: PathBuf,
    stale: Stale,
}

/// Keys whose stored value was read with a provider other than the first: shared by the
/// writer (which forgets a key once it is written or deleted) and [`Store::is_stale`].
type Stale = Arc<RwLock<HashSet<Key>>>;

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
}

enum Op {
    Create {
        key: Key,
        value: Bytes,
    },
    Update {
        key: Key,
        value: Bytes,
        expected: Option<u64>,
    },
    Delete {
        key: Key,
        expected: Option<u64>,
    },
}

enum Request {
    Write {
        op: Op,
        reply: oneshot::Sender<Result<Record, StoreError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
    Freeze {
        reply: oneshot::Sender<Result<StoreView, StoreError>>,
        resume: oneshot::Receiver<()>,
    },
}

/// How a [`LocalStore`] is opened.
#[derive(Clone)]
pub struct LocalOptions {
    /// Events kept in memory for watch resume.
    pub history_limit: usize,
    /// A name for progress log lines (the file name when empty).
    pub label: String,
    /// How values are encrypted on disk (identity: plaintext).
    pub transformer: Arc<Transformer>,
    /// Where the load counts its progress (one of its own when `None`).
    pub progress: Option<Arc<crate::progress::Progress>>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            history_limit: DEFAULT_HISTORY,
            label: String::new(),
            transformer: Arc::new(Transformer::identity()),
            progress: None,
        }
    }
}

impl LocalStore {
    /// Open (or create) the store file at `path`, keeping [`DEFAULT_HISTORY`] events for watch
    /// resume. Blocking: it reads the whole file (call it from `spawn_blocking` in async code).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LocalError> {
        Self::open_with(path, LocalOptions::default())
    }

    /// Open (or create) the store file at `path`, keeping `history_limit` events in memory.
    pub fn open_with_history(
        path: impl AsRef<Path>,
        history_limit: usize,
    ) -> Result<Self, LocalError> {
        Self::open_with(
            path,
            LocalOptions {
                history_limit,
                ..LocalOptions::default()
            },
        )
    }

    /// Open (or create) the store file at `path` with `options`. Records that cannot be read
    /// (an undecodable key or value) are skipped, counted in [`LocalStats::skipped`] and logged
    /// once each; their keys still exist for writes (a create is `AlreadyExists`).
    pub fn open_with(path: impl AsRef<Path>, options: LocalOptions) -> Result<Self, LocalError> {
        let path = path.as_ref().to_path_buf();
        let label = if options.label.is_empty() {
            path.display().to_string()
        } else {
            options.label.clone()
        };
        let storage = |e: &dyn std::fmt::Display| LocalError::Storage {
            path: path.clone(),
            message: e.to_string(),
        };
        let full_repair = Arc::new(AtomicBool::new(false));
        let flag = full_repair.clone();
        let db = Builder::new()
            .set_cache_size(CACHE_BYTES)
            .set_repair_callback(move |_session| flag.store(true, Ordering::Relaxed))
            .create(&path)
            .map_err(|e| locked_or(e, &path))?;

        // Read (or initialize) the meta table, then load every record.
        let transformer = options.transformer.clone();
        let plain = transformer.is_identity();
        let mut stale = HashSet::new();
        let mut skipped = HashSet::new();
        let mut skipped_unnamed = 0u64;
        let mut interner = Interner::default();
        let (revision, records, fresh) = {
            let rtx = db.begin_read().map_err(|e| storage(&e))?;
            let (format, revision) = read_meta(&rtx, &path)?;
            let mut records = Vec::new();
            match rtx.open_table(OBJECTS) {
                Ok(t) => {
                    let total = t.len().map_err(|e| storage(&e))?;
                    let progress = options.progress.clone().unwrap_or_else(|| {
                        Arc::new(crate::progress::Progress::new(format!("loading {label}")))
                    });
                    progress.stage(format!("loading {label}"), Some(total));
                    for entry in t.iter().map_err(|e| storage(&e))? {
                        let (k, v) = entry.map_err(|e| storage(&e))?;
                        progress.add(1, (k.value().len() + v.value().len()) as u64);
                        let Some(key) = decode_key_interned(k.value(), &mut interner) else {
                            skipped_unnamed += 1;
                            tracing::warn!(
                                store = %label,
                                raw_key = %hex::encode(k.value()),
                                "Skipping a stored record whose key cannot be decoded."
                            );
                            continue;
                        };
                        let Some((rev, value)) = decode_value(v.value()) else {
                            tracing::warn!(store = %label, key = %key, "Skipping a stored record whose value is truncated.");
                            skipped.insert(key);
                            continue;
                        };
                        let value = if plain && !value.starts_with(ENCRYPTED) {
                            super::exact_copy(value)
                        } else {
                            let storage_key = key.to_string();
                            match transformer.decode(
                                &key.group,
                                &key.resource,
                                storage_key.as_bytes(),
                                value,
                            ) {
                                Ok(decoded) => {
                                    if decoded.stale {
                                        stale.insert(key.clone());
                                    }
                                    super::exact_bytes(decoded.value)
                                }
                                Err(e) => {
                                    tracing::warn!(store = %label, key = %key, error = %e, "Skipping a stored record whose value cannot be decrypted.");
                                    skipped.insert(key);
                                    continue;
                                }
                            }
                        };
                        records.push(Record {
                            key: Arc::new(key),
                            revision: rev,
                            value,
                        });
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(storage(&e)),
            }
            if format.is_none() && !records.is_empty() {
                return Err(LocalError::Corrupt {
                    path,
                    reason: "objects without a format version".into(),
                });
            }
            (revision.unwrap_or(1).max(1), records, format.is_none())
        };
        if fresh {
            let wtx = db.begin_write().map_err(|e| storage(&e))?;
            {
                let mut meta = wtx.open_table(META).map_err(|e| storage(&e))?;
                meta.insert(META_FORMAT, FORMAT_VERSION)
                    .map_err(|e| storage(&e))?;
                meta.insert(META_REVISION, revision)
                    .map_err(|e| storage(&e))?;
                wtx.open_table(OBJECTS).map_err(|e| storage(&e))?;
            }
            commit(wtx).map_err(|e| storage(&e))?;
        }
        let history_limit = options.history_limit;
        let loaded = records.len() as u64;
        let skipped_count = skipped.len() as u64 + skipped_unnamed;
        let memory = MemoryStore::restore_interned(history_limit, records, revision, interner);
        let counters = Arc::new(Counters::default());
        if !stale.is_empty() {
            tracing::info!(store = %label, stale = stale.len(), "Values stored under an older encryption provider or key: they are written under the first one on their next update (or by `storage rewrite`).");
        }
        let stale: Stale = Arc::new(RwLock::new(stale));
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            db: Some(db),
            memory: memory.clone(),
            counters: counters.clone(),
            failed: None,
            skipped,
            transformer,
            stale: stale.clone(),
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| storage(&e))?;
        Ok(LocalStore {
            shared: Arc::new(Shared {
                memory,
                tx,
                counters,
                loaded,
                skipped: skipped_count,
                full_repair: full_repair.load(Ordering::Relaxed),
                path,
                stale,
            }),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Commit and write counters, and what the open found.
    pub fn stats(&self) -> LocalStats {
        LocalStats {
            commits: self.shared.counters.commits.load(Ordering::Relaxed),
            writes: self.shared.counters.writes.load(Ordering::Relaxed),
            full_repair: self.shared.full_repair,
            loaded: self.shared.loaded,
            skipped: self.shared.skipped,
            stale: stale_len(&self.shared.stale) as u64,
        }
    }

    /// Finish the writes already sent, close the file (releasing its lock) and refuse later
    /// writes, on this handle and every clone. Reads keep answering from memory.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.shared.tx.send(Request::Close { reply }).is_ok() {
            // An error means the writer is gone already, which is what we want.
            let _ = done.await;
        }
    }

    /// Stop this store's writes between two commits and return a consistent read view of
    /// everything committed (the revision of the view is the store's revision). Writes sent
    /// meanwhile wait (nothing is refused) until [`Frozen::resume`] is called or the
    /// [`Frozen`] is dropped. Freezing several stores one after the other and resuming them
    /// after the last freeze gives views of all of them at one instant.
    pub async fn freeze(&self) -> Result<Frozen, StoreError> {
        let (reply, answer) = oneshot::channel();
        let (resume, resumed) = oneshot::channel();
        self.shared
            .tx
            .send(Request::Freeze {
                reply,
                resume: resumed,
            })
            .map_err(|_| closed())?;
        let view = answer.await.map_err(|_| closed())??;
        Ok(Frozen { view, resume })
    }

    async fn write(&self, op: Op) -> Result<Record, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .tx
            .send(Request::Write { op, reply })
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

fn closed() -> StoreError {
    StoreError::Internal("the local store is closed".into())
}

/// A frozen store (see [`LocalStore::freeze`]): its writer waits until this is resumed or
/// dropped.
pub struct Frozen {
    view: StoreView,
    resume: oneshot::Sender<()>,
}

impl Frozen {
    /// The view's revision.
    pub fn revision(&self) -> u64 {
        self.view.revision
    }

    /// Let the writer go on; the view keeps reading the frozen state.
    pub fn resume(self) -> StoreView {
        let _ = self.resume.send(());
        self.view
    }
}

/// A consistent read-only view of a store file's committed records, as stored (encoded key,
/// 8-byte big-endian revision followed by the stored value).
pub struct StoreView {
    txn: redb::ReadTransaction,
    revision: u64,
    /// The database when the view opened the file itself (dropped after the transaction).
    _db: Option<Database>,
}

impl StoreView {
    /// Open a view of the store file at `path` when no process has it open
    /// ([`LocalError::Locked`] otherwise). The file must exist.
    pub fn open(path: &Path) -> Result<StoreView, LocalError> {
        if !path.is_file() {
            return Err(LocalError::Storage {
                path: path.to_path_buf(),
                message: "no such store file".into(),
            });
        }
        let db = Builder::new()
            .create(path)
            .map_err(|e| locked_or(e, path))?;
        let txn = db.begin_read().map_err(|e| LocalError::Storage {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let (_, revision) = read_meta(&txn, path)?;
        Ok(StoreView {
            txn,
            revision: revision.unwrap_or(1),
            _db: Some(db),
        })
    }

    /// The store's revision at this view.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Call `f` with every record's raw key and raw value, in key order; stops at `f`'s first
    /// error.
    pub fn for_each<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let internal = |e: &dyn std::fmt::Display| StoreError::Internal(e.to_string());
        let table = match self.txn.open_table(OBJECTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(internal(&e).into()),
        };
        for entry in table.iter().map_err(|e| internal(&e))? {
            let (k, v) = entry.map_err(|e| internal(&e))?;
            f(k.value(), v.value())?;
        }
        Ok(())
    }

    /// How many records the view holds.
    pub fn len(&self) -> Result<u64, StoreError> {
        match self.txn.open_table(OBJECTS) {
            Ok(t) => t.len().map_err(|e| StoreError::Internal(e.to_string())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(StoreError::Internal(e.to_string())),
        }
    }

    /// Whether the view holds no record.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

/// A new store file being written record by record (a restore): [`NewFile::insert`] the raw
/// key and value of each record as [`StoreView::for_each`] gives them, then
/// [`NewFile::finish`] commits everything in one durable transaction. Each record is checked to
/// decode, with a revision no newer than the file's.
pub struct NewFile {
    path: PathBuf,
    revision: u64,
    count: u64,
    // invariant: the transaction borrows nothing from the database handle; redb keeps the
    // database alive while a transaction exists.
    wtx: Option<redb::WriteTransaction>,
    _db: Database,
}

impl NewFile {
    /// Create the file at `path` (which must not exist) for a store at `revision`.
    pub fn create(path: &Path, revision: u64) -> Result<NewFile, LocalError> {
        if path.exists() {
            return Err(LocalError::Storage {
                path: path.to_path_buf(),
                message: "the file exists already".into(),
            });
        }
        let db = Builder::new()
            .create(path)
            .map_err(|e| locked_or(e, path))?;
        let wtx = db.begin_write().map_err(|e| LocalError::Storage {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(NewFile {
            path: path.to_path_buf(),
            revision,
            count: 0,
            wtx: Some(wtx),
            _db: db,
        })
    }

    fn storage(&self, e: &dyn std::fmt::Display) -> LocalError {
        LocalError::Storage {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Add one record.
    pub fn insert(&mut self, k: &[u8], v: &[u8]) -> Result<(), LocalError> {
        let corrupt = |reason: String| LocalError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let key = decode_key(k).ok_or_else(|| corrupt("an undecodable key".into()))?;
        let (rev, _) = decode_value(v).ok_or_else(|| corrupt(format!("a short value at {key}")))?;
        if rev > self.revision {
            return Err(corrupt(format!(
                "{key} has revision {rev}, newer than the store's {}",
                self.revision
            )));
        }
        let Some(wtx) = self.wtx.as_ref() else {
            return Err(self.storage(&"finished already"));
        };
        let mut objects = wtx.open_table(OBJECTS).map_err(|e| self.storage(&e))?;
        objects.insert(k, v).map_err(|e| self.storage(&e))?;
        self.count += 1;
        Ok(())
    }

    /// Write the meta table and commit durably; returns the record count.
    pub fn finish(mut self) -> Result<u64, LocalError> {
        let Some(wtx) = self.wtx.take() else {
            return Err(self.storage(&"finished already"));
        };
        {
            wtx.open_table(OBJECTS).map_err(|e| self.storage(&e))?;
            let mut meta = wtx.open_table(META).map_err(|e| self.storage(&e))?;
            meta.insert(META_FORMAT, FORMAT_VERSION)
                .map_err(|e| self.storage(&e))?;
            meta.insert(META_REVISION, self.revision)
                .map_err(|e| self.storage(&e))?;
        }
        commit(wtx).map_err(|e| self.storage(&e))?;
        Ok(self.count)
    }
}

/// Map redb's "already open" to [`LocalError::Locked`].
fn locked_or(e: redb::DatabaseError, path: &Path) -> LocalError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => LocalError::Locked {
            path: path.to_path_buf(),
        },
        e => LocalError::Storage {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    }
}

/// The format version and revision in the meta table (`None` when the file is new); a newer
/// format than [`FORMAT_VERSION`] is refused.
fn read_meta(
    rtx: &redb::ReadTransaction,
    path: &Path,
) -> Result<(Option<u64>, Option<u64>), LocalError> {
    let storage = |e: &dyn std::fmt::Display| LocalError::Storage {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let meta = match rtx.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((None, None)),
        Err(e) => return Err(storage(&e)),
    };
    let get = |k: &str| -> Result<Option<u64>, LocalError> {
        Ok(meta.get(k).map_err(|e| storage(&e))?.map(|g| g.value()))
    };
    let (format, revision) = (get(META_FORMAT)?, get(META_REVISION)?);
    if let Some(found) = format
        && found > FORMAT_VERSION
    {
        return Err(LocalError::NewerFormat {
            path: path.to_path_buf(),
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok((format, revision))
}

/// One progress line of a long load: objects so far, rate, time left.
/// Commit durably, with quick-repair, so that opening after a crash is fast.
fn commit(mut wtx: redb::WriteTransaction) -> Result<(), redb::Error> {
    wtx.set_quick_repair(true);
    wtx.commit()?;
    Ok(())
}

/// The writer thread: the single place that checks preconditions, assigns revisions, commits
/// and applies.
struct Writer {
    db: Option<Database>,
    memory: MemoryStore,
    counters: Arc<Counters>,
    /// Set after a failed commit: every later write is refused with this.
    failed: Option<String>,
    /// Keys on disk whose records could not be read at open: they exist for creates.
    skipped: HashSet<Key>,
    /// How values are encoded for the file.
    transformer: Arc<Transformer>,
    /// Keys whose stored value is under an older provider or key.
    stale: Stale,
}

type Reply = oneshot::Sender<Result<Record, StoreError>>;

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        let mut closing = None;
        while closing.is_none() {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            let mut batch = Vec::new();
            let mut freeze = None;
            let mut next = Some(first);
            while let Some(req) = next.take() {
                match req {
                    Request::Write { op, reply } => batch.push((op, reply)),
                    Request::Close { reply } => {
                        closing = Some(reply);
                        break;
                    }
                    Request::Freeze { reply, resume } => {
                        freeze = Some((reply, resume));
                        break;
                    }
                }
                if batch.len() >= MAX_BATCH {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if !batch.is_empty() {
                self.write_batch(batch);
            }
            if let Some((reply, resume)) = freeze {
                self.freeze(reply, resume);
            }
        }
        // Release the file before saying it is closed.
        self.db = None;
        rx.close();
        while let Ok(req) = rx.try_recv() {
            match req {
                Request::Write { reply, .. } => {
                    let _ = reply.send(Err(closed()));
                }
                Request::Close { reply } => {
                    let _ = reply.send(());
                }
                Request::Freeze { reply, .. } => {
                    let _ = reply.send(Err(closed()));
                }
            }
        }
        if let Some(reply) = closing {
            let _ = reply.send(());
        }
    }

    /// Hand out a read transaction on everything committed so far, then write nothing until
    /// `resume` fires or its sender is dropped.
    fn freeze(
        &mut self,
        reply: oneshot::Sender<Result<StoreView, StoreError>>,
        resume: oneshot::Receiver<()>,
    ) {
        let Some(db) = self.db.as_ref() else {
            let _ = reply.send(Err(closed()));
            return;
        };
        let view = db
            .begin_read()
            .map_err(|e| StoreError::Internal(format!("reading the local store: {e}")))
            .map(|txn| StoreView {
                txn,
                revision: self.memory.current_revision(),
                _db: None,
            });
        if reply.send(view).is_ok() {
            // Either a resume or the sender dropped: both end the freeze.
            let _ = resume.blocking_recv();
        }
    }

    fn write_batch(&mut self, batch: Vec<(Op, Reply)>) {
        let Some(db) = self.db.as_ref() else {
            for (_, reply) in batch {
                let _ = reply.send(Err(closed()));
            }
            return;
        };
        if let Some(why) = &self.failed {
            for (_, reply) in batch {
                let _ = reply.send(Err(StoreError::Internal(why.clone())));
            }
            return;
        }
        // Check every write against memory plus the batch's earlier writes, assigning
        // consecutive revisions to the accepted ones.
        let base = self.memory.current_revision();
        let mut revision = base;
        let mut overlay: HashMap<Key, Option<u64>> = HashMap::new();
        let mut accepted: Vec<(Change, u64, Reply)> = Vec::new();
        let mut stored: Vec<Option<Vec<u8>>> = Vec::new();
        for (op, reply) in batch {
            let current = |key: &Key, overlay: &HashMap<Key, Option<u64>>| match overlay.get(key) {
                Some(rev) => *rev,
                None => self.memory.lookup(key).map(|r| r.revision),
            };
            let checked = match op {
                Op::Create { key, value } => match current(&key, &overlay) {
                    Some(_) => Err(StoreError::AlreadyExists),
                    None if self.skipped.contains(&key) && !overlay.contains_key(&key) => {
                        Err(StoreError::AlreadyExists)
                    }
                    None => Ok(Change::Put { key, value }),
                },
                Op::Update {
                    key,
                    value,
                    expected,
                } => check(current(&key, &overlay), expected).map(|_| Change::Put { key, value }),
                Op::Delete { key, expected } => {
                    check(current(&key, &overlay), expected).map(|_| Change::Delete { key })
                }
            };
            // Encode (encrypt) an accepted value here, so that a value that cannot be encoded
            // fails alone instead of the whole batch.
            let checked = checked.and_then(|change| match &change {
                Change::Put { key, value } => {
                    let storage_key = key.to_string();
                    self.transformer
                        .encode(&key.group, &key.resource, storage_key.as_bytes(), value)
                        .map(|bytes| (change, Some(bytes)))
                        .map_err(|e| StoreError::Internal(e.to_string()))
                }
                Change::Delete { .. } => Ok((change, None)),
            });
            match checked {
                Ok((change, bytes)) => {
                    stored.push(bytes);
                    revision += 1;
                    let (key, now) = match &change {
                        Change::Put { key, .. } => (key.clone(), Some(revision)),
                        Change::Delete { key } => (key.clone(), None),
                    };
                    overlay.insert(key, now);
                    accepted.push((change, revision, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        if let Err(e) = persist(db, &accepted, &stored, revision) {
            let why = format!("local store write failed, restart to recover: {e}");
            self.failed = Some(why.clone());
            for (_, _, reply) in accepted {
                let _ = reply.send(Err(StoreError::Internal(why.clone())));
            }
            return;
        }
        if stale_len(&self.stale) > 0 {
            let mut stale = self.stale.write().unwrap_or_else(|p| p.into_inner());
            for (change, _, _) in &accepted {
                match change {
                    Change::Put { key, .. } | Change::Delete { key } => stale.remove(key),
                };
            }
        }
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        self.counters
            .writes
            .fetch_add(accepted.len() as u64, Ordering::Relaxed);
        let (changes, replies): (Vec<Change>, Vec<(u64, Reply)>) = accepted
            .into_iter()
            .map(|(c, rev, reply)| (c, (rev, reply)))
            .unzip();
        let records = self.memory.apply(changes);
        for (record, (rev, reply)) in records.into_iter().zip(replies) {
            let answer = match record {
                Some(r) if r.revision == rev => Ok(r),
                other => {
                    // Unreachable while this thread is the memory store's only writer.
                    let why = format!(
                        "local store diverged: memory applied {:?} where the file has {rev}",
                        other.map(|r| r.revision)
                    );
                    self.failed = Some(why.clone());
                    Err(StoreError::Internal(why))
                }
            };
            let _ = reply.send(answer);
        }
    }
}

/// A precondition of update and delete, as [`MemoryStore`] checks it.
fn check(current: Option<u64>, expected: Option<u64>) -> Result<(), StoreError> {
    let current = current.ok_or(StoreError::NotFound)?;
    match expected {
        Some(want) if want != current => Err(StoreError::Conflict { current }),
        _ => Ok(()),
    }
}

/// Commit the accepted writes of one batch in one durable redb transaction.
/// `stored[i]` is the encoded value of `accepted[i]` when it is a put.
fn persist(
    db: &Database,
    accepted: &[(Change, u64, Reply)],
    stored: &[Option<Vec<u8>>],
    revision: u64,
) -> Result<(), redb::Error> {
    let wtx = db.begin_write()?;
    {
        let mut objects = wtx.open_table(OBJECTS)?;
        let mut buf = Vec::new();
        for ((change, rev, _), value) in accepted.iter().zip(stored) {
            match change {
                Change::Put { key, .. } => {
                    buf.clear();
                    buf.extend_from_slice(&rev.to_be_bytes());
                    buf.extend_from_slice(value.as_deref().unwrap_or_default());
                    objects.insert(encode_key(key).as_slice(), buf.as_slice())?;
                }
                Change::Delete { key } => {
                    objects.remove(encode_key(key).as_slice())?;
                }
            }
        }
        let mut meta = wtx.open_table(META)?;
        meta.insert(META_REVISION, revision)?;
    }
    commit(wtx)
}

/// Encode a key so that byte order equals [`Key`]'s field-by-field order.
pub fn encode_key(key: &Key) -> Vec<u8> {
    let fields = [
        &key.group,
        &key.resource,
        &key.shard,
        &key.cluster,
        &key.namespace,
        &key.name,
    ];
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 2).sum());
    for f in fields {
        for &b in f.as_bytes() {
            out.push(b);
            if b == 0 {
                out.push(0xFF);
            }
        }
        out.extend_from_slice(&[0x00, 0x01]);
    }
    out
}

/// Decode [`encode_key`]'s output.
pub fn decode_key(bytes: &[u8]) -> Option<Key> {
    decode_key_with(bytes, &mut |_, s| Part::from(s))
}

/// Decode [`encode_key`]'s output with every part but the name from `interner`.
fn decode_key_interned(bytes: &[u8], interner: &mut Interner) -> Option<Key> {
    decode_key_with(bytes, &mut |i, s| {
        if i < 5 {
            interner.part(s)
        } else {
            Part::from(s)
        }
    })
}

/// Decode [`encode_key`]'s output, `part` making the `i`-th field's part from its text.
fn decode_key_with(bytes: &[u8], part: &mut dyn FnMut(usize, &str) -> Part) -> Option<Key> {
    let mut fields: Vec<Part> = Vec::with_capacity(6);
    let mut escaped = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != 0 {
            i += 1;
            continue;
        }
        match bytes.get(i + 1)? {
            0xFF => {
                escaped.extend_from_slice(&bytes[start..i]);
                escaped.push(0);
            }
            0x01 => {
                let text = if escaped.is_empty() {
                    std::str::from_utf8(&bytes[start..i]).ok()?
                } else {
                    escaped.extend_from_slice(&bytes[start..i]);
                    std::str::from_utf8(&escaped).ok()?
                };
                if fields.len() == 6 {
                    return None;
                }
                fields.push(part(fields.len(), text));
                escaped.clear();
            }
            _ => return None,
        }
        i += 2;
        start = i;
    }
    if start != bytes.len() || !escaped.is_empty() || fields.len() != 6 {
        return None;
    }
    let mut it = fields.into_iter();
    Some(Key {
        group: it.next()?,
        resource: it.next()?,
        shard: it.next()?,
        cluster: it.next()?,
        namespace: it.next()?,
        name: it.next()?,
    })
}

fn decode_value(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (rev, value) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*rev), value))
}

/// Decode one raw record of the `objects` table (as [`StoreView::for_each`] hands them out)
/// into its key, revision and stored value (still encoded by the [`Transformer`]).
pub fn decode_record<'a>(key: &[u8], value: &'a [u8]) -> Option<(Key, u64, &'a [u8])> {
    let key = decode_key(key)?;
    let (revision, value) = decode_value(value)?;
    Some((key, revision, value))
}

/// The prefix of every encrypted value (`k8s:enc:<provider>:v1:<key>:`).
const ENCRYPTED: &[u8] = b"k8s:enc:";

fn stale_len(stale: &Stale) -> usize {
    stale.read().unwrap_or_else(|p| p.into_inner()).len()
}

#[async_trait]
impl Store for LocalStore {
    async fn get(&self, key: &Key) -> Result<Option<Record>, StoreError> {
        self.shared.memory.get(key).await
    }

    async fn list(&self, scope: &Scope) -> Result<Listing, StoreError> {
        self.shared.memory.list(scope).await
    }

    async fn create(&self, key: Key, value: Bytes) -> Result<Record, StoreError> {
        self.write(Op::Create { key, value }).await
    }

    async fn update(
        &self,
        key: Key,
        value: Bytes,
        expected: Option<u64>,
    ) -> Result<Record, StoreError> {
        self.write(Op::Update {
            key,
            value,
            expected,
        })
        .await
    }

    async fn delete(&self, key: &Key, expected: Option<u64>) -> Result<Record, StoreError> {
        self.write(Op::Delete {
            key: key.clone(),
            expected,
        })
        .await
    }

    async fn list_at(&self, scope: &Scope, revision: u64) -> Result<Listing, StoreError> {
        self.shared.memory.list_at(scope, revision).await
    }

    async fn watch(&self, scope: Scope, after: u64) -> Result<WatchStream, StoreError> {
        self.shared.memory.watch(scope, after).await
    }

    fn is_stale(&self, key: &Key) -> bool {
        let stale = self.shared.stale.read().unwrap_or_else(|p| p.into_inner());
        !stale.is_empty() && stale.contains(key)
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        self.shared.memory.revision().await
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

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[tokio::test]
    async fn writes_survive_close_and_reopen_with_their_values_and_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let s = LocalStore::open(&path).unwrap();
        let a = s.create(key("a"), b("1")).await.unwrap();
        let bb = s.create(key("b"), b("2")).await.unwrap();
        let a2 = s.update(key("a"), b("3"), Some(a.revision)).await.unwrap();
        let c = s.create(key("c"), b("4")).await.unwrap();
        s.delete(&key("c"), None).await.unwrap();
        let before = s.list(&Scope::all()).await.unwrap();
        s.close().await;
        assert!(s.create(key("d"), b("5")).await.is_err(), "closed");

        let s = LocalStore::open(&path).unwrap();
        assert_eq!(s.stats().loaded, 2);
        let after = s.list(&Scope::all()).await.unwrap();
        assert_eq!(after.records, before.records);
        assert_eq!(after.revision, before.revision);
        assert_eq!(s.get(&key("a")).await.unwrap().unwrap(), a2);
        assert_eq!(s.get(&key("b")).await.unwrap().unwrap(), bb);
        assert_eq!(s.get(&key("c")).await.unwrap(), None);
        assert!(c.revision < after.revision, "the delete's revision is kept");
    }

    #[tokio::test]
    async fn the_revision_continues_after_reopen_and_never_goes_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let mut last = 0;
        for round in 0..3 {
            let s = LocalStore::open(&path).unwrap();
            let start = s.revision().await.unwrap();
            assert!(start >= last, "round {round}: {start} < {last}");
            let r = s.create(key(&format!("k{round}")), b("x")).await.unwrap();
            assert_eq!(r.revision, start + 1);
            // A delete consumes a revision too, and it must survive.
            s.delete(&key(&format!("k{round}")), None).await.unwrap();
            last = s.revision().await.unwrap();
            assert_eq!(last, start + 2);
            s.close().await;
        }
        let s = LocalStore::open(&path).unwrap();
        assert_eq!(s.revision().await.unwrap(), last);
    }

    #[tokio::test]
    async fn a_watch_from_a_revision_before_the_reopen_is_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let s = LocalStore::open(&path).unwrap();
        let a = s.create(key("a"), b("1")).await.unwrap();
        s.create(key("b"), b("2")).await.unwrap();
        s.close().await;

        let s = LocalStore::open(&path).unwrap();
        let now = s.revision().await.unwrap();
        assert!(matches!(
            s.watch(Scope::all(), a.revision).await,
            Err(StoreError::Expired { .. })
        ));
        assert!(matches!(
            s.list_at(&Scope::all(), a.revision).await,
            Err(StoreError::Expired { .. })
        ));
        let mut w = s.watch(Scope::all(), now).await.unwrap();
        let c = s.create(key("c"), b("3")).await.unwrap();
        let e = w.next().await.unwrap().unwrap();
        assert_eq!((e.revision, e.key.name.as_str()), (c.revision, "c"));
    }

    #[tokio::test]
    async fn preconditions_fail_exactly_as_in_the_memory_store() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalStore::open(dir.path().join("store.redb")).unwrap();
        let memory = MemoryStore::new(100);
        for s in [&local as &dyn Store, &memory as &dyn Store] {
            let a = s.create(key("a"), b("1")).await.unwrap();
            assert_eq!(
                s.create(key("a"), b("2")).await.unwrap_err(),
                StoreError::AlreadyExists
            );
            assert_eq!(
                s.update(key("x"), b("2"), None).await.unwrap_err(),
                StoreError::NotFound
            );
            assert_eq!(
                s.delete(&key("x"), None).await.unwrap_err(),
                StoreError::NotFound
            );
            let a2 = s.update(key("a"), b("2"), Some(a.revision)).await.unwrap();
            assert_eq!(
                s.update(key("a"), b("3"), Some(a.revision))
                    .await
                    .unwrap_err(),
                StoreError::Conflict {
                    current: a2.revision
                }
            );
            assert_eq!(
                s.delete(&key("a"), Some(a.revision)).await.unwrap_err(),
                StoreError::Conflict {
                    current: a2.revision
                }
            );
            let gone = s.delete(&key("a"), Some(a2.revision)).await.unwrap();
            assert_eq!(gone.value, b("2"));
            assert_eq!(gone.revision, a2.revision + 1);
        }
        // The same sequence gives the same revisions: failures consume none.
        assert_eq!(
            local.revision().await.unwrap(),
            memory.revision().await.unwrap()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_concurrent_writers_get_distinct_revisions_in_fewer_commits_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let s = LocalStore::open(&path).unwrap();
        let per_writer = 10;
        let mut tasks = Vec::new();
        for w in 0..50 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..per_writer {
                    let r = s
                        .create(
                            key(&format!("w{w:02}-{i}")),
                            Bytes::from(format!("{w}/{i}")),
                        )
                        .await
                        .unwrap();
                    out.push(r);
                }
                out
            }));
        }
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
        let mut revisions: Vec<u64> = acked.iter().map(|r| r.revision).collect();
        revisions.sort_unstable();
        revisions.dedup();
        assert_eq!(revisions.len(), 50 * per_writer, "distinct revisions");
        let stats = s.stats();
        println!("50 writers × {per_writer}: {stats:?}");
        assert_eq!(stats.writes, 500);
        assert!(
            stats.commits < stats.writes,
            "group commit batched: {stats:?}"
        );
        s.close().await;

        let s = LocalStore::open(&path).unwrap();
        for r in &acked {
            assert_eq!(s.get(&r.key).await.unwrap().as_ref(), Some(r));
        }
        assert_eq!(s.revision().await.unwrap(), *revisions.last().unwrap());
    }

    #[tokio::test]
    async fn writes_sent_together_to_one_key_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path().join("store.redb")).unwrap();
        let key_a = key("a");
        let (c, u, d, again) = tokio::join!(
            s.create(key("a"), b("1")),
            s.update(key("a"), b("2"), None),
            s.delete(&key_a, None),
            s.create(key("a"), b("3")),
        );
        let (c, u, d, again) = (c.unwrap(), u.unwrap(), d.unwrap(), again.unwrap());
        assert_eq!(u.revision, c.revision + 1);
        assert_eq!((d.revision, d.value.clone()), (u.revision + 1, b("2")));
        assert_eq!(again.revision, d.revision + 1);
        assert_eq!(s.get(&key("a")).await.unwrap(), Some(again));
    }

    #[tokio::test]
    async fn writes_of_one_batch_are_checked_against_the_earlier_ones_of_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let memory = MemoryStore::new(100);
        let mut writer = Writer {
            db: Some(Database::create(dir.path().join("store.redb")).unwrap()),
            memory: memory.clone(),
            counters: Arc::new(Counters::default()),
            failed: None,
            skipped: HashSet::new(),
            transformer: Arc::new(Transformer::identity()),
            stale: Stale::default(),
        };
        let ops = vec![
            Op::Create {
                key: key("a"),
                value: b("1"),
            },
            Op::Create {
                key: key("a"),
                value: b("x"),
            },
            Op::Update {
                key: key("a"),
                value: b("2"),
                expected: Some(2),
            },
            Op::Update {
                key: key("a"),
                value: b("x"),
                expected: Some(2),
            },
            Op::Delete {
                key: key("a"),
                expected: None,
            },
            Op::Delete {
                key: key("a"),
                expected: None,
            },
            Op::Create {
                key: key("a"),
                value: b("3"),
            },
        ];
        let (batch, answers): (Vec<_>, Vec<_>) = ops
            .into_iter()
            .map(|op| {
                let (reply, answer) = oneshot::channel();
                ((op, reply), answer)
            })
            .unzip();
        writer.write_batch(batch);
        let mut got = Vec::new();
        for a in answers {
            got.push(a.await.unwrap().map(|r| (r.revision, r.value)));
        }
        assert_eq!(
            got,
            vec![
                Ok((2, b("1"))),
                Err(StoreError::AlreadyExists),
                Ok((3, b("2"))),
                Err(StoreError::Conflict { current: 3 }),
                Ok((4, b("2"))),
                Err(StoreError::NotFound),
                Ok((5, b("3"))),
            ]
        );
        assert_eq!(writer.counters.commits.load(Ordering::Relaxed), 1);
        assert_eq!(memory.revision().await.unwrap(), 5);
    }

    #[test]
    fn a_file_with_a_newer_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let db = Database::create(&path).unwrap();
            let wtx = db.begin_write().unwrap();
            {
                let mut meta = wtx.open_table(META).unwrap();
                meta.insert(META_FORMAT, FORMAT_VERSION + 1).unwrap();
                meta.insert(META_REVISION, 5).unwrap();
            }
            wtx.commit().unwrap();
        }
        match LocalStore::open(&path) {
            Err(e @ LocalError::NewerFormat { .. }) => {
                assert!(e.to_string().contains("format version 2"), "{e}")
            }
            Err(e) => panic!("expected NewerFormat, got {e}"),
            Ok(_) => panic!("expected NewerFormat, got a store"),
        }
    }

    #[tokio::test]
    async fn an_unreadable_record_is_skipped_and_counted_and_its_key_cannot_be_created_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let s = LocalStore::open(&path).unwrap();
        s.create(key("good"), b("{}")).await.unwrap();
        s.close().await;
        {
            let db = Database::create(&path).unwrap();
            let wtx = db.begin_write().unwrap();
            {
                let mut t = wtx.open_table(OBJECTS).unwrap();
                t.insert(encode_key(&key("bad")).as_slice(), &b"\x01"[..])
                    .unwrap();
                t.insert(&b"\xFFnot a key"[..], &[0u8; 9][..]).unwrap();
            }
            wtx.commit().unwrap();
        }
        let s = LocalStore::open(&path).unwrap();
        assert_eq!((s.stats().loaded, s.stats().skipped), (1, 2));
        assert_eq!(s.get(&key("good")).await.unwrap().unwrap().value, b("{}"));
        assert_eq!(s.get(&key("bad")).await.unwrap(), None);
        assert_eq!(
            s.create(key("bad"), b("{}")).await,
            Err(StoreError::AlreadyExists)
        );
        s.create(key("other"), b("{}")).await.unwrap();
    }

    fn aescbc(keys: &[(&str, &str)]) -> Arc<Transformer> {
        let keys: String = keys
            .iter()
            .map(|(name, secret)| {
                format!("\n          - name: {name}\n            secret: {secret}")
            })
            .collect();
        let config = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [\"*.*\"]\n    providers:\n      - aescbc:\n          keys:{keys}\n"
        );
        Arc::new(Transformer::from_config(&config).unwrap())
    }

    const KEY1: (&str, &str) = ("key1", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
    const KEY2: (&str, &str) = ("key2", "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=");

    fn open_encrypted(path: &Path, transformer: Arc<Transformer>) -> LocalStore {
        LocalStore::open_with(
            path,
            LocalOptions {
                transformer,
                ..LocalOptions::default()
            },
        )
        .unwrap()
    }

    fn raw_values(path: &Path) -> Vec<Vec<u8>> {
        let view = StoreView::open(path).unwrap();
        let mut out = Vec::new();
        view.for_each(|k, v| -> Result<(), StoreError> {
            let (_, _, value) = decode_record(k, v).unwrap();
            out.push(value.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    #[tokio::test]
    async fn with_aescbc_configured_values_are_encrypted_in_the_file_and_read_back_in_plain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let s = open_encrypted(&path, aescbc(&[KEY1]));
        let written = s.create(key("a"), b("top-secret-value")).await.unwrap();
        s.close().await;
        let file = std::fs::read(&path).unwrap();
        assert!(
            !file.windows(16).any(|w| w == b"top-secret-value"),
            "plaintext on disk"
        );
        let raw = raw_values(&path);
        assert!(raw[0].starts_with(b"k8s:enc:aescbc:v1:key1:"), "{raw:?}");

        let s = open_encrypted(&path, aescbc(&[KEY1]));
        assert_eq!(s.get(&key("a")).await.unwrap().unwrap(), written);
        assert_eq!(s.stats().stale, 0);
    }

    #[tokio::test]
    async fn after_a_key_rotation_old_values_are_stale_until_an_update_rewrites_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let s = open_encrypted(&path, aescbc(&[KEY1]));
        s.create(key("a"), b("one")).await.unwrap();
        s.create(key("b"), b("two")).await.unwrap();
        s.close().await;

        // The new key goes first; the old one still reads.
        let s = open_encrypted(&path, aescbc(&[KEY2, KEY1]));
        assert_eq!(s.stats().stale, 2);
        assert!(s.is_stale(&key("a")) && s.is_stale(&key("b")));
        let a = s.get(&key("a")).await.unwrap().unwrap();
        // An update that changes nothing still writes the value under the new key.
        s.update(key("a"), a.value.clone(), Some(a.revision))
            .await
            .unwrap();
        assert!(!s.is_stale(&key("a")) && s.is_stale(&key("b")));
        s.delete(&key("b"), None).await.unwrap();
        assert_eq!(s.stats().stale, 0);
        s.close().await;

        let raw = raw_values(&path);
        assert_eq!(raw.len(), 1);
        assert!(raw[0].starts_with(b"k8s:enc:aescbc:v1:key2:"));
        // Without the old key, everything left still reads.
        let s = open_encrypted(&path, aescbc(&[KEY2]));
        assert_eq!(s.get(&key("a")).await.unwrap().unwrap().value, b("one"));
        assert_eq!((s.stats().skipped, s.stats().stale), (0, 0));
    }

    #[tokio::test]
    async fn a_value_no_provider_can_read_is_skipped_and_its_key_cannot_be_created_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let s = open_encrypted(&path, aescbc(&[KEY1]));
        s.create(key("a"), b("one")).await.unwrap();
        s.close().await;

        for transformer in [aescbc(&[KEY2]), Arc::new(Transformer::identity())] {
            let s = open_encrypted(&path, transformer);
            assert_eq!((s.stats().loaded, s.stats().skipped), (0, 1));
            assert_eq!(s.get(&key("a")).await.unwrap(), None);
            assert_eq!(
                s.create(key("a"), b("other")).await,
                Err(StoreError::AlreadyExists)
            );
            s.close().await;
        }
    }

    #[test]
    fn a_file_in_use_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let _first = LocalStore::open(&path).unwrap();
        assert!(matches!(
            LocalStore::open(&path),
            Err(LocalError::Locked { .. })
        ));
    }

    #[test]
    fn encoded_keys_sort_like_keys() {
        let mut keys = Vec::new();
        for g in ["", "a", "a\0", "ab", "b"] {
            for n in ["", "\0", "x", "x\0y", "xy"] {
                let mut k = key(n);
                k.group = g.into();
                keys.push(k.clone());
                k.namespace = n.into();
                k.name = g.into();
                keys.push(k);
            }
        }
        let mut interner = Interner::default();
        for k in &keys {
            let bytes = encode_key(k);
            assert_eq!(decode_key(&bytes).as_ref(), Some(k));
            assert_eq!(decode_key_interned(&bytes, &mut interner).as_ref(), Some(k));
            assert_eq!(
                decode_key(&bytes[..bytes.len() - 1]),
                None,
                "{k:?} truncated"
            );
            assert_eq!(
                decode_key(&[&bytes[..], b"x"].concat()),
                None,
                "{k:?} and more"
            );
            assert_eq!(
                decode_key(&[&bytes[..], &bytes[..]].concat()),
                None,
                "{k:?} twice"
            );
        }
        for x in &keys {
            for y in &keys {
                assert_eq!(x.cmp(y), encode_key(x).cmp(&encode_key(y)), "{x:?} {y:?}");
            }
        }
    }
}
