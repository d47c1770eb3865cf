//! `--storage memory|local|etcd|all`: which store the in-process servers run on. `memory` is a
//! `MemoryStore` (what every scenario used before the flag; its rows keep their names),
//! `local` a `LocalStore` (redb, fsync per commit) in a temp dir, `etcd` an `EtcdStore` (its
//! own key prefix per server) on one etcd this harness starts on loopback (`etcd_server.rs`).
//! Reads on every backend are served from the same in-memory watch cache; only writes and the
//! memory beside it differ. Rows measured on `local` or `etcd` get ` (local)` / ` (etcd)` after
//! their first cell. The scenarios of [`PER_BACKEND`] run once per backend given; the others
//! (process-based ones, and `storage`, which compares backends itself) run once, unsuffixed.

use super::*;

use futures_util::StreamExt as _;
use replication_vw::store::etcd::{EtcdOptions, EtcdStore};
use replication_vw::store::local::LocalStore;

/// Scenarios that build their server with [`Vw::start`] (or [`Ctx::vw`]) and so run on each
/// backend of `--storage`.
pub(crate) const PER_BACKEND: [&str; 6] = ["ingest", "get", "list", "watch", "churn", "wildcard"];

/// Creates in flight when a server on `local` or `etcd` is filled (each commit is an fsync; many
/// in flight share it).
pub(crate) const FILL_IN_FLIGHT: usize = 1024;

/// A storage backend of the in-process servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Memory,
    Local,
    Etcd,
}

impl Backend {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Local => "local",
            Backend::Etcd => "etcd",
        }
    }

    /// What follows a row's first cell: nothing on `memory` (the rows of old).
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Backend::Memory => "",
            Backend::Local => " (local)",
            Backend::Etcd => " (etcd)",
        }
    }

    /// The value of `--storage`: one backend, or `all` (memory, local, etcd, in that order).
    pub(crate) fn parse(value: &str) -> anyhow::Result<Vec<Backend>> {
        Ok(match value.trim().to_ascii_lowercase().as_str() {
            "memory" => vec![Backend::Memory],
            "local" => vec![Backend::Local],
            "etcd" => vec![Backend::Etcd],
            "all" => vec![Backend::Memory, Backend::Local, Backend::Etcd],
            other => bail!("--storage takes memory, local, etcd or all, not {other:?}\n{USAGE}"),
        })
    }

    /// Where the peak RSS column of a row on this backend stands, for the notes.
    pub(crate) fn rss_note(self) -> &'static str {
        match self {
            Backend::Memory => "",
            Backend::Local => {
                "peak RSS is the harness process (server with its watch cache, clients) and \
                 includes redb's page cache (at most 2 MiB, `store::local::CACHE_BYTES`)"
            }
            Backend::Etcd => {
                "peak RSS is the harness process (server with the etcd store's watch cache, \
                 clients); etcd's own memory is another process's and is not in it"
            }
        }
    }
}

/// The backend whose suffix [`Row::print`] appends now.
static ROW_SUFFIX: std::sync::Mutex<&str> = std::sync::Mutex::new("");

/// From now on, rows are printed with `backend`'s suffix.
pub(crate) fn set_row_suffix(backend: Backend) {
    if let Ok(mut s) = ROW_SUFFIX.lock() {
        *s = backend.suffix();
    }
}

/// The suffix of the rows printed now.
pub(crate) fn row_suffix() -> &'static str {
    ROW_SUFFIX.lock().map_or("", |s| *s)
}

/// Distinct etcd key prefixes, one per store this process opens.
static NEXT_PREFIX: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty store of the transport's backend, and the temp dir that holds a local
/// store's file (keep it as long as the store). An etcd store is opened on the server runtime,
/// so its watch task runs there, beside the index.
pub(crate) async fn open_store(
    transport: &Transport,
) -> anyhow::Result<(Arc<dyn Store>, Option<tempfile::TempDir>)> {
    match transport.backend {
        Backend::Memory => Ok((Arc::new(MemoryStore::default()), None)),
        Backend::Local => {
            let dir = tempfile::tempdir().context("creating a data directory")?;
            let path = dir.path().join("cache.db");
            let store = tokio::task::spawn_blocking(move || LocalStore::open(path)).await??;
            Ok((Arc::new(store), Some(dir)))
        }
        Backend::Etcd => {
            let etcd = transport
                .etcd
                .get_or_try_init(|| async {
                    progress("starting etcd for --storage etcd");
                    let started = tokio::task::spawn_blocking(etcd_server::EtcdServer::start);
                    anyhow::Ok(Arc::new(started.await??))
                })
                .await?;
            let options = EtcdOptions {
                endpoints: vec![etcd.url.clone()],
                prefix: format!("/bench-{}", NEXT_PREFIX.fetch_add(1, Ordering::Relaxed)),
                label: "cache".into(),
                ..EtcdOptions::default()
            };
            let open = transport.runtime.spawn(EtcdStore::open(options));
            let store = tokio::time::timeout(Duration::from_secs(30), open)
                .await
                .map_err(|_| anyhow!("the etcd store did not open in 30 s"))???;
            Ok((Arc::new(store), None))
        }
    }
}

/// Create every `(key, value)` of `items` in `store`, `in_flight` at a time (1: one after the
/// other, as the memory store's fills always were).
pub(crate) async fn create_all(
    store: &Arc<dyn Store>,
    in_flight: usize,
    items: impl Iterator<Item = anyhow::Result<(Key, Bytes)>>,
) -> anyhow::Result<()> {
    if in_flight <= 1 {
        for item in items {
            let (key, value) = item?;
            store.create(key, value).await?;
        }
        return Ok(());
    }
    let mut pending = futures_util::stream::FuturesUnordered::new();
    for item in items {
        let (key, value) = item?;
        let s = store.clone();
        pending.push(async move { s.create(key, value).await });
        if pending.len() >= in_flight
            && let Some(r) = pending.next().await
        {
            r?;
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(())
}

/// The row a scenario prints on `etcd` when no `etcd` is on PATH (with `--storage all`).
pub(crate) fn print_skipped(scenario: &'static str, why: &str) {
    Row {
        scenario,
        what: format!("skipped: {why}"),
        result: String::new(),
        p50: String::new(),
        p99: String::new(),
        rss: String::new(),
        ratio: String::new(),
        goal: String::new(),
    }
    .print();
}
