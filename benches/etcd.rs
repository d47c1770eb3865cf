//! etcd bench: what the watch cache in front of etcd buys, side by side in one run against one
//! etcd on loopback (the distribution's etcd 3.4, started by this harness on free ports).
//!
//! - LIST of N objects (default 10,000, ~1.2 KB each) served from our watch cache (a consistent
//!   list: one revision request to etcd, then memory) against the same list read straight from
//!   etcd (one range request of the prefix and a list body built from the values, which is how
//!   kcp's cache server reads with its watch cache off); the ratio is the goal (≥ 10×).
//! - Acknowledged writes/s with 50 concurrent writers on `etcd`, `local` and `memory`.
//! - A write through replica 1 until the event reaches a watcher on replica 2 (two stores over
//!   one etcd), at a paced 1,000 writes/s: p50 / p99.
//!
//! In-process, through the `Store` trait (no HTTP or TLS in either side of a ratio).
//! Usage: `cargo bench --bench etcd -- [--objects N] [--duration SECS]`.

#[allow(dead_code)]
#[path = "load/etcd_server.rs"]
mod etcd_server;

use bytes::Bytes;
use etcd_server::EtcdServer;
use futures_util::StreamExt;
use replication_vw::store::etcd::{EtcdOptions, EtcdStore};
use replication_vw::store::local::LocalStore;
use replication_vw::store::memory::MemoryStore;
use replication_vw::store::{Key, Scope, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WRITERS: usize = 50;

fn key(i: usize) -> Key {
    Key {
        group: "cloud.example.com".into(),
        resource: "cpuflavors".into(),
        shard: "root".into(),
        cluster: "1p5f2x8rkq0vd7wz".into(),
        namespace: Default::default(),
        name: format!("flavor-{i:06}").into(),
    }
}

/// An object of about 1.2 KB, like the load harness's flavors.
fn object(i: usize) -> Bytes {
    let description = "d".repeat(1000);
    Bytes::from(format!(
        "{{\"apiVersion\":\"cloud.example.com/v1\",\"kind\":\"CPUFlavor\",\"metadata\":{{\"name\":\"flavor-{i:06}\",\"labels\":{{\"cloud.example.com/visibility\":\"Public\"}}}},\"spec\":{{\"cores\":{},\"description\":\"{description}\"}}}}",
        i % 64 + 1
    ))
}

/// Create `count` objects (from `offset`) with [`WRITERS`] concurrent writers; writes/s.
async fn fill(store: Arc<dyn Store>, offset: usize, count: usize) -> f64 {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let (store, next) = (store.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return;
                }
                store
                    .create(key(offset + i), object(offset + i))
                    .await
                    .expect("a bench write");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    count as f64 / started.elapsed().as_secs_f64()
}

/// A list response body built from stored values, as a server would send it.
fn body(values: impl Iterator<Item = Bytes>, revision: u64) -> usize {
    let mut out = Vec::with_capacity(16 * 1024 * 1024);
    out.extend_from_slice(
        format!("{{\"kind\":\"CPUFlavorList\",\"metadata\":{{\"resourceVersion\":\"{revision}\"}},\"items\":[").as_bytes(),
    );
    for (n, v) in values.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&v);
    }
    out.extend_from_slice(b"]}");
    out.len()
}

/// Lists per second of `list` over `duration` (at least 3 lists).
async fn rate<F, Fut>(duration: Duration, mut list: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < duration || n < 3 {
        std::hint::black_box(list().await);
        n += 1;
    }
    f64::from(n) / started.elapsed().as_secs_f64()
}

/// Deliver one change (`write`) to every stream: the time until the last one has it.
async fn fan_out<W, Fut>(
    streams: Vec<futures_util::stream::BoxStream<'static, ()>>,
    write: W,
) -> Duration
where
    W: FnOnce() -> Fut,
    Fut: std::future::Future,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let count = streams.len();
    for mut s in streams {
        let tx = tx.clone();
        tokio::spawn(async move {
            if s.next().await.is_some() {
                let _ = tx.send(Instant::now());
            }
        });
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    write().await;
    let mut last = Duration::ZERO;
    for _ in 0..count {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(at)) => last = at - sent,
            _ => break,
        }
    }
    last
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut objects = 10_000usize;
    let mut duration = Duration::from_secs(3);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--objects" => objects = args.next().and_then(|v| v.parse().ok()).unwrap_or(objects),
            "--duration" => {
                duration =
                    Duration::from_secs(args.next().and_then(|v| v.parse().ok()).unwrap_or(3))
            }
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let etcd = EtcdServer::start()?;
    let version = etcd.version.clone();
    let open = |prefix: &str| {
        EtcdStore::open(EtcdOptions {
            endpoints: vec![etcd.url.clone()],
            prefix: prefix.into(),
            ..EtcdOptions::default()
        })
    };

    // Writes: 50 concurrent writers per backend.
    let replica1 = Arc::new(open("/cache").await?);
    let etcd_writes = fill(replica1.clone(), 0, objects).await;
    let dir = tempfile::tempdir()?;
    let local: Arc<dyn Store> = Arc::new(LocalStore::open(dir.path().join("bench.db"))?);
    let local_writes = fill(local, 0, objects).await;
    let memory_writes = fill(Arc::new(MemoryStore::default()), 0, objects).await;

    // LIST: the watch cache against etcd read directly.
    let scope = Scope {
        resource: Some(replication_vw::store::GroupResource::new(
            "cloud.example.com",
            "cpuflavors",
        )),
        ..Scope::default()
    };
    let from_cache = rate(duration, || {
        let (store, scope) = (replica1.clone(), scope.clone());
        async move {
            let l = store.list(&scope).await.expect("list");
            body(l.records.into_iter().map(|r| r.value), l.revision)
        }
    })
    .await;
    let client = replica1.client();
    let from_etcd = rate(duration, || {
        // Large enough for the whole list in one response, as kube's etcd client allows.
        let mut kv = client
            .kv_client()
            .max_decoding_message_size(256 * 1024 * 1024);
        async move {
            let mut resp = kv
                .get(
                    "/cache/cloud.example.com/cpuflavors/",
                    Some(etcd_client::GetOptions::new().with_prefix()),
                )
                .await
                .expect("range");
            let revision = resp.header().map_or(0, |h| h.revision()) as u64;
            let kvs = resp.take_kvs();
            body(
                kvs.iter().map(|kv| Bytes::copy_from_slice(kv.value())),
                revision,
            )
        }
    })
    .await;

    // Propagation: replica 1 writes at 1,000/s, a watcher on replica 2 receives.
    let replica2 = open("/cache").await?;
    let start = replica2.list(&scope).await?.revision;
    let mut events = replica2.watch(Scope::all(), start).await?;
    let sent: Arc<sent_at::Map> = Arc::default();
    let total = (duration.as_secs_f64() * 1000.0) as usize;
    let writer = {
        let (store, sent) = (replica1.clone(), sent.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut pending = tokio::task::JoinSet::new();
            for i in 0..total {
                tick.tick().await;
                let (store, sent) = (store.clone(), sent.clone());
                pending.spawn(async move {
                    let k = key(1_000_000 + i);
                    sent.insert(k.name.to_string(), Instant::now());
                    store.create(k, object(i)).await.expect("a paced write");
                });
            }
            while pending.join_next().await.is_some() {}
        })
    };
    let mut latencies = Vec::with_capacity(total);
    while latencies.len() < total {
        let Ok(Some(Ok(ev))) = tokio::time::timeout(Duration::from_secs(10), events.next()).await
        else {
            break;
        };
        if let Some(at) = sent.take(&ev.key.name) {
            latencies.push(at.elapsed());
        }
    }
    writer.await?;
    latencies.sort();

    // WATCH fan-out: one change to 1,000 watchers of our cache against 1,000 etcd watches.
    const WATCHERS: usize = 1000;
    let now = replica2.list(&scope).await?.revision;
    let mut ours = Vec::with_capacity(WATCHERS);
    for _ in 0..WATCHERS {
        let w = replica2.watch(Scope::all(), now).await?;
        ours.push(w.map(|_| ()).boxed());
    }
    let last_ours = fan_out(ours, || replica1.create(key(2_000_000), object(0))).await;
    let mut direct = Vec::with_capacity(WATCHERS);
    for _ in 0..WATCHERS {
        let stream = client
            .watch_client()
            .watch(
                "/cache/",
                Some(etcd_client::WatchOptions::new().with_prefix()),
            )
            .await?;
        // An etcd watch first answers "created", then events.
        let s = futures_util::stream::unfold(stream, |mut st| async move {
            loop {
                match st.message().await {
                    Ok(Some(m)) if !m.events().is_empty() => return Some(((), st)),
                    Ok(Some(_)) => continue,
                    _ => return None,
                }
            }
        });
        direct.push(s.boxed());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let last_direct = fan_out(direct, || replica1.create(key(2_000_001), object(0))).await;

    println!(
        "etcd: {version}, on loopback; {objects} objects of ~1.2 KB; in-process through the Store trait\n"
    );
    println!("| scenario | ours | baseline | ratio | goal |");
    println!("|---|---|---|---|---|");
    let ratio = from_cache / from_etcd;
    println!(
        "| LIST {objects} from the watch cache (etcd) vs read from etcd directly | {from_cache:.1} lists/s | {from_etcd:.1} lists/s | {ratio:.1}× | ≥ 10×{} |",
        if ratio >= 10.0 { "" } else { " MISSED" }
    );
    println!(
        "| writes/s, {WRITERS} writers: etcd vs local | {etcd_writes:.0} /s | {local_writes:.0} /s | {:.2}× | – |",
        etcd_writes / local_writes
    );
    println!(
        "| writes/s, {WRITERS} writers: etcd vs memory | {etcd_writes:.0} /s | {memory_writes:.0} /s | {:.2}× | – |",
        etcd_writes / memory_writes
    );
    println!(
        "| WATCH: one change → {WATCHERS} watchers of the watch cache vs {WATCHERS} etcd watches | last watcher {:.1} ms | last watcher {:.1} ms | {:.1}× | – |",
        last_ours.as_secs_f64() * 1000.0,
        last_direct.as_secs_f64() * 1000.0,
        last_direct.as_secs_f64() / last_ours.as_secs_f64().max(1e-9)
    );
    println!(
        "| write on replica 1 → event on replica 2, 1,000 writes/s | p50 {:.2} ms, p99 {:.2} ms ({} of {total} events) | – | – | within a second |",
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.len()
    );
    drop(etcd);
    Ok(())
}

/// A small concurrent map of send instants (std only).
mod sent_at {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;

    /// Name → when its write was sent.
    #[derive(Default)]
    pub struct Map(Mutex<HashMap<String, Instant>>);

    impl Map {
        pub fn insert(&self, k: String, v: Instant) {
            if let Ok(mut m) = self.0.lock() {
                m.insert(k, v);
            }
        }

        pub fn take(&self, k: &str) -> Option<Instant> {
            self.0.lock().ok()?.remove(k)
        }
    }
}
