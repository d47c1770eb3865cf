//! `--scenario soak` (run by name only; `all` and `--quick` leave it out): a `cache-server`
//! process under a steady mixed load for `--duration` (default 600 s). Through the cache server
//! API, on one collection of CachedObjects: 100 watchers from a resourceVersion, 2,000 GET/s
//! and 100 writes/s, both paced open loop by a tokio interval. Every watcher records the
//! resourceVersion and name of each event; at the end, every acknowledged write must appear in
//! every watcher, once, in increasing resourceVersion order. The server's RSS (`VmRSS` of the
//! child process) is read ten times; the warm-up ends at the first reading after the store's
//! history window (75 s of events) has filled, and the growth is from there to the end.

use super::*;

use std::collections::HashSet;
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

/// CachedObjects created through the cache API before the run; the GETs and writes go round
/// robin over them.
const SOAK_OBJECTS: usize = 1_000;
/// Watch streams, each on its own client (connection).
const SOAK_WATCHERS: usize = 100;
/// Target rate of the GET load.
const SOAK_GETS_PER_SECOND: f64 = 2_000.0;
/// Target rate of the writes.
const SOAK_WRITES_PER_SECOND: f64 = 100.0;
/// Length of the run without `--duration`.
const SOAK_DURATION: Duration = Duration::from_secs(600);
/// GETs in flight at most; a GET that falls due beyond them is not sent (counted as shed), so a
/// stalled server cannot pile up tasks in the harness.
const SOAK_GET_IN_FLIGHT: usize = 512;
/// Writes in flight at most (beyond them, a due write is shed).
const SOAK_WRITE_IN_FLIGHT: usize = 64;
/// Creates in flight while filling.
const SOAK_FILL_IN_FLIGHT: usize = 16;
/// How long the watchers may take, after the load stops, to deliver the last acknowledged write.
const SOAK_DRAIN: Duration = Duration::from_secs(30);
/// Goal: RSS at the end within 10% of RSS after the warm-up.
const SOAK_RSS_GOAL: f64 = 0.10;
/// RSS is read this many times over the run (the first one after the history window ends the
/// warm-up).
const SOAK_RSS_READINGS: u32 = 10;

/// The cache API collection of the provider's CachedObjects on `base`.
fn cached_objects_url(base: &str) -> String {
    format!(
        "{base}/services/cache/shards/{SHARD}/clusters/{PROVIDER}/apis/cache.kcp.io/v1alpha1/cachedobjects"
    )
}

/// `metadata.resourceVersion` of an object or list, as a number.
fn resource_version(v: &Value) -> Option<u64> {
    v.pointer("/metadata/resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

/// Call `start(k)` for k = 0, 1, … at `rate` per second until `until`: a tokio interval ticks
/// every 1/rate s (at most every millisecond) and each tick starts every call due by then, so a
/// slow call delays none of the others (open loop). Returns how many calls were started.
pub(crate) async fn paced(rate: f64, until: Instant, mut start: impl FnMut(u64)) -> u64 {
    let period = Duration::from_secs_f64((1.0 / rate).max(0.001));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let began = Instant::now();
    let mut started = 0u64;
    loop {
        ticks.tick().await;
        let now = Instant::now();
        if now >= until {
            return started;
        }
        let due = ((now - began).as_secs_f64() * rate) as u64 + 1;
        while started < due {
            start(started);
            started += 1;
        }
    }
}

/// Wait until every permit of `gate` is back (every task it admitted ended), at most `timeout`;
/// returns whether they all came back.
async fn drained(gate: &Semaphore, permits: usize, timeout: Duration) -> bool {
    let n = u32::try_from(permits).unwrap_or(u32::MAX);
    tokio::time::timeout(timeout, gate.acquire_many(n))
        .await
        .is_ok_and(|p| p.is_ok())
}

/// Counters and latencies of one open-loop load.
#[derive(Default)]
struct OpenLoop {
    ok: AtomicU64,
    errors: AtomicU64,
    conflicts: AtomicU64,
    shed: AtomicU64,
    latencies: std::sync::Mutex<Vec<Duration>>,
    first_error: std::sync::Mutex<Option<String>>,
}

impl OpenLoop {
    fn done(&self, took: Duration) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.latencies.lock() {
            l.push(took);
        }
    }

    fn failed(&self, why: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.first_error.lock() {
            e.get_or_insert(why);
        }
    }

    fn sorted_latencies(&self) -> Vec<Duration> {
        let mut l = self.latencies.lock().map(|l| l.clone()).unwrap_or_default();
        l.sort_unstable();
        l
    }

    fn count(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// The last version of one CachedObject the writes know; `stale` after a failed write (the
/// next write of it reads it again first).
struct Slot {
    object: Value,
    stale: bool,
}

/// State shared by the write tasks.
struct Writes {
    client: reqwest::Client,
    /// Object URL per slot.
    urls: Vec<String>,
    slots: Vec<tokio::sync::Mutex<Slot>>,
    /// `(resourceVersion, slot)` of every acknowledged write.
    acked: std::sync::Mutex<Vec<(u64, u32)>>,
    tally: OpenLoop,
}

impl Writes {
    /// Write slot `i`: bump `spec.raw.spec.cores` of its last version and PUT it (with that
    /// resourceVersion) through the cache API; a 200 is an acknowledged write.
    async fn write(&self, i: usize) {
        let (Some(url), Some(slot)) = (self.urls.get(i), self.slots.get(i)) else {
            return;
        };
        let mut slot = slot.lock().await;
        let started = Instant::now();
        if slot.stale {
            match self.get(url).await {
                Ok(v) => {
                    *slot = Slot {
                        object: v,
                        stale: false,
                    }
                }
                Err(e) => {
                    self.tally
                        .failed(format!("GET {url} before a write: {e:#}"));
                    return;
                }
            }
        }
        let mut body = slot.object.clone();
        if let Some(c) = body.pointer_mut("/spec/raw/spec/cores") {
            let cores = c.as_u64().unwrap_or(1);
            *c = json!(cores % 64 + 1);
        }
        slot.stale = true;
        let resp = match self.client.put(url).json(&body).send().await {
            Ok(r) => r,
            Err(e) => return self.tally.failed(format!("PUT {url}: {e}")),
        };
        match resp.status() {
            s if s.is_success() => match resp.json::<Value>().await {
                Ok(v) => {
                    let Some(rv) = resource_version(&v) else {
                        return self
                            .tally
                            .failed(format!("PUT {url} answered without a resourceVersion"));
                    };
                    if let Ok(mut acked) = self.acked.lock() {
                        acked.push((rv, i as u32));
                    }
                    self.tally.done(started.elapsed());
                    *slot = Slot {
                        object: v,
                        stale: false,
                    };
                }
                Err(e) => self
                    .tally
                    .failed(format!("PUT {url}: reading the answer: {e}")),
            },
            StatusCode::CONFLICT => {
                self.tally.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            s => {
                let text = resp.text().await.unwrap_or_default();
                self.tally.failed(format!("PUT {url}: {s}: {text}"));
            }
        }
    }

    async fn get(&self, url: &str) -> anyhow::Result<Value> {
        let resp = self.client.get(url).send().await?;
        if !resp.status().is_success() {
            bail!("{}", resp.status());
        }
        Ok(resp.json().await?)
    }
}

/// What one watcher saw: resourceVersion and slot (`u32::MAX`: a name no slot has) of every
/// event, in arrival order, and how its stream ended.
#[derive(Default)]
struct Seen {
    rvs: Vec<u64>,
    slots: Vec<u32>,
    /// An ERROR event or a failed read; `None` when the harness stopped it.
    ended: Option<String>,
}

/// Read one watch stream until `stop`; every event's resourceVersion goes to `last` as well, so
/// the harness sees when the watcher has caught up.
async fn soak_watcher(
    mut resp: reqwest::Response,
    names: Arc<HashMap<String, u32>>,
    last: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::default();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            _ = stop.wait_for(|s| *s) => return seen,
            c = resp.chunk() => c,
        };
        let chunk = match chunk {
            Ok(Some(c)) => c,
            Ok(None) => {
                seen.ended = Some("the server ended the watch".into());
                return seen;
            }
            Err(e) => {
                seen.ended = Some(format!("reading the watch: {e}"));
                return seen;
            }
        };
        buf.extend_from_slice(&chunk);
        let mut from = 0;
        while let Some(pos) = memchr::memchr(b'\n', &buf[from..]) {
            let line = &buf[from..from + pos];
            from += pos + 1;
            let event: Value = match serde_json::from_slice(line) {
                Ok(v) => v,
                Err(e) => {
                    seen.ended = Some(format!("a watch line is not JSON: {e}"));
                    return seen;
                }
            };
            match event["type"].as_str() {
                Some("ADDED" | "MODIFIED" | "DELETED") => {}
                Some("ERROR") => {
                    seen.ended = Some(format!("watch error: {}", event["object"]));
                    return seen;
                }
                _ => continue,
            }
            let Some(rv) = resource_version(&event["object"]) else {
                seen.ended = Some("an event without a resourceVersion".into());
                return seen;
            };
            let slot = event
                .pointer("/object/metadata/name")
                .and_then(Value::as_str)
                .and_then(|n| names.get(n).copied())
                .unwrap_or(u32::MAX);
            seen.rvs.push(rv);
            seen.slots.push(slot);
            last.store(rv, Ordering::Release);
        }
        buf.drain(..from);
    }
}

/// What one watcher's events show against the acknowledged writes.
#[derive(Debug, Default, Clone, Copy)]
struct Check {
    /// Acknowledged writes the watcher had, with the right name.
    delivered: usize,
    /// Acknowledged writes it never had.
    lost: usize,
    /// Acknowledged writes it had under another name.
    wrong_name: usize,
    /// Events repeated (a resourceVersion seen more than once).
    duplicates: usize,
    /// Events whose resourceVersion was not above the one before.
    out_of_order: usize,
    /// Events of no acknowledged write (writes whose answer was lost).
    unacknowledged: usize,
}

/// Check one watcher's events against the acknowledged writes (sorted by resourceVersion).
fn check_events(seen: &Seen, acked: &[(u64, u32)]) -> Check {
    let mut c = Check {
        out_of_order: seen.rvs.windows(2).filter(|w| w[1] <= w[0]).count(),
        ..Check::default()
    };
    let mut by_rv: Vec<(u64, u32)> = seen
        .rvs
        .iter()
        .copied()
        .zip(seen.slots.iter().copied())
        .collect();
    by_rv.sort_unstable();
    let before = by_rv.len();
    by_rv.dedup_by_key(|(rv, _)| *rv);
    c.duplicates = before - by_rv.len();
    for (rv, slot) in acked {
        match by_rv.binary_search_by_key(rv, |(r, _)| *r) {
            Ok(k) if by_rv[k].1 == *slot => c.delivered += 1,
            Ok(_) => c.wrong_name += 1,
            Err(_) => c.lost += 1,
        }
    }
    let acked_rvs: HashSet<u64> = acked.iter().map(|(rv, _)| *rv).collect();
    c.unacknowledged = by_rv
        .iter()
        .filter(|(rv, _)| !acked_rvs.contains(rv))
        .count();
    c
}

/// Create `n` generated CachedObjects through the cache API; returns the created objects.
async fn fill(client: &reqwest::Client, collection: &str, n: usize) -> anyhow::Result<Vec<Value>> {
    use futures_util::StreamExt as _;
    let created: Vec<anyhow::Result<Value>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let (client, url) = (client.clone(), collection.to_string());
            async move {
                let resp = client.post(&url).json(&wrapped(i)).send().await?;
                let status = resp.status();
                if status != StatusCode::CREATED {
                    let text = resp.text().await.unwrap_or_default();
                    bail!("POST {url} answered {status}: {text}");
                }
                Ok(resp.json::<Value>().await?)
            }
        })
        .buffered(SOAK_FILL_IN_FLIGHT)
        .collect()
        .await;
    created.into_iter().collect()
}

/// The soak: see the module documentation.
pub(crate) async fn scenario_soak(ctx: &mut Ctx) -> anyhow::Result<()> {
    let duration = ctx.args.duration_flag.unwrap_or(SOAK_DURATION);
    // The warm-up ends at the first reading after the store's history window has filled (the
    // ring grows until then by design: at a steady write rate it then stays the same size).
    let interval = duration / SOAK_RSS_READINGS;
    let warm_reading = (1..SOAK_RSS_READINGS)
        .find(|k| interval * *k >= replication_vw::store::memory::HISTORY_WINDOW)
        .unwrap_or(1);
    let warmup = interval * warm_reading;
    let warm_index = warm_reading as usize - 1;
    let started = Instant::now();
    progress("soak: starting a `cache-server` process");
    let mut server = RoleProcess::spawn("cache-server", "cache-server", &[])?;
    server.wait_ready().await?;
    let base = server.url.clone();
    let collection = cached_objects_url(&base);
    let client = server.client(Some(REQUEST_TIMEOUT))?;
    progress(&format!(
        "soak: creating {SOAK_OBJECTS} CachedObjects through the cache API"
    ));
    let objects = fill(&client, &collection, SOAK_OBJECTS).await?;
    let mut names = HashMap::new();
    let mut urls = Vec::with_capacity(objects.len());
    let mut object_bytes = 0usize;
    for (i, o) in objects.iter().enumerate() {
        let name = o
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("a created CachedObject has no name"))?;
        names.insert(name.to_string(), i as u32);
        urls.push(format!("{collection}/{name}"));
        object_bytes += serde_json::to_vec(o)?.len();
    }
    let object_bytes = object_bytes / objects.len().max(1);
    let names = Arc::new(names);
    let list: Value = client.get(&collection).send().await?.json().await?;
    let rv = resource_version(&list).ok_or_else(|| anyhow!("the list has no resourceVersion"))?;
    let listed = list["items"].as_array().map_or(0, Vec::len);
    if listed != SOAK_OBJECTS {
        bail!("the cache server lists {listed} CachedObjects, expected {SOAK_OBJECTS}");
    }

    // Watchers, from the list's resourceVersion; they outlive the run (timeoutSeconds).
    progress(&format!(
        "soak: opening {SOAK_WATCHERS} watches from resourceVersion {rv}"
    ));
    let watch_url = format!(
        "{collection}?watch=true&resourceVersion={rv}&timeoutSeconds={}",
        (duration + SOAK_DRAIN).as_secs() + 600
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut watchers = Vec::with_capacity(SOAK_WATCHERS);
    let mut lasts = Vec::with_capacity(SOAK_WATCHERS);
    let mut http2 = 0;
    for _ in 0..SOAK_WATCHERS {
        let resp =
            tokio::time::timeout(REQUEST_TIMEOUT, server.client(None)?.get(&watch_url).send())
                .await
                .map_err(|_| anyhow!("no watch response in {REQUEST_TIMEOUT:?}"))??;
        if !resp.status().is_success() {
            let status = resp.status();
            bail!("watch answered {status}: {}", resp.text().await?);
        }
        if resp.version() == reqwest::Version::HTTP_2 {
            http2 += 1;
        }
        let last = Arc::new(AtomicU64::new(rv));
        lasts.push(last.clone());
        watchers.push(tokio::spawn(soak_watcher(
            resp,
            names.clone(),
            last,
            stop_rx.clone(),
        )));
    }

    // The load: GETs and writes, both open loop, until `until`.
    let writes = Arc::new(Writes {
        client: server.client(Some(REQUEST_TIMEOUT))?,
        urls: urls.clone(),
        slots: objects
            .into_iter()
            .map(|o| {
                tokio::sync::Mutex::new(Slot {
                    object: o,
                    stale: false,
                })
            })
            .collect(),
        acked: std::sync::Mutex::new(Vec::new()),
        tally: OpenLoop::default(),
    });
    let gets = Arc::new(OpenLoop::default());
    let urls = Arc::new(urls);
    let get_gate = Arc::new(Semaphore::new(SOAK_GET_IN_FLIGHT));
    let write_gate = Arc::new(Semaphore::new(SOAK_WRITE_IN_FLIGHT));
    progress(&format!(
        "soak: {} GET/s and {} writes/s for {} s (RSS read every {} s, the warm-up ends at {} s)",
        SOAK_GETS_PER_SECOND,
        SOAK_WRITES_PER_SECOND,
        duration.as_secs(),
        interval.as_secs(),
        warmup.as_secs()
    ));
    let cpu_before = server.cpu_seconds();
    let load_start = Instant::now();
    let until = load_start + duration;
    let get_load = {
        let (gets, gate, urls) = (gets.clone(), get_gate.clone(), urls.clone());
        let client = client.clone();
        tokio::spawn(paced(SOAK_GETS_PER_SECOND, until, move |k| {
            let Ok(permit) = gate.clone().try_acquire_owned() else {
                gets.shed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let url = urls[k as usize % urls.len()].clone();
            let (client, gets) = (client.clone(), gets.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                match client.get(&url).send().await {
                    Ok(resp) if resp.status().is_success() => match resp.bytes().await {
                        Ok(_) => gets.done(t.elapsed()),
                        Err(e) => gets.failed(format!("GET {url}: {e}")),
                    },
                    Ok(resp) => gets.failed(format!("GET {url}: {}", resp.status())),
                    Err(e) => gets.failed(format!("GET {url}: {e}")),
                }
                drop(permit);
            });
        }))
    };
    let write_load = {
        let (writes, gate) = (writes.clone(), write_gate.clone());
        tokio::spawn(paced(SOAK_WRITES_PER_SECOND, until, move |k| {
            let Ok(permit) = gate.clone().try_acquire_owned() else {
                writes.tally.shed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let writes = writes.clone();
            tokio::spawn(async move {
                writes.write(k as usize % SOAK_OBJECTS).await;
                drop(permit);
            });
        }))
    };
    let mut readings = Vec::new();
    for step in 1..=SOAK_RSS_READINGS {
        tokio::time::sleep_until(load_start + duration * step / SOAK_RSS_READINGS).await;
        readings.push((server.rss(), OpenLoop::count(&writes.tally.ok)));
        progress(&format!(
            "soak: {} s: server RSS {}, {} GETs, {} writes acknowledged",
            (duration * step / SOAK_RSS_READINGS).as_secs(),
            opt_mib(server.rss()),
            OpenLoop::count(&gets.ok),
            OpenLoop::count(&writes.tally.ok)
        ));
        server.check_alive()?;
    }
    let get_started = get_load.await.unwrap_or(0);
    let write_started = write_load.await.unwrap_or(0);
    let elapsed = load_start.elapsed();
    let gets_drained = drained(&get_gate, SOAK_GET_IN_FLIGHT, REQUEST_TIMEOUT * 2).await;
    let writes_drained = drained(&write_gate, SOAK_WRITE_IN_FLIGHT, REQUEST_TIMEOUT * 2).await;
    let cpu_after = server.cpu_seconds();
    let peak = server.peak_rss();
    let end_rss = server.rss();

    // Let the watchers catch up with the last acknowledged write, then stop them.
    let mut acked = writes
        .acked
        .lock()
        .map(|a| a.clone())
        .map_err(|_| anyhow!("the acknowledged writes' lock is poisoned"))?;
    acked.sort_unstable();
    let max_acked = acked.last().map_or(rv, |(r, _)| *r);
    let drain_start = Instant::now();
    while lasts.iter().any(|l| l.load(Ordering::Acquire) < max_acked)
        && drain_start.elapsed() < SOAK_DRAIN
        && !watchers.iter().all(|w| w.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caught_up = drain_start.elapsed();
    let _ = stop_tx.send(true);
    let mut checks = Vec::with_capacity(watchers.len());
    let mut ended = Vec::new();
    for w in watchers {
        let seen = w.await.unwrap_or_default();
        if let Some(e) = &seen.ended {
            ended.push(e.clone());
        }
        checks.push(check_events(&seen, &acked));
    }
    server.check_alive()?;

    // Rows.
    let get_lat = gets.sorted_latencies();
    let write_lat = writes.tally.sorted_latencies();
    let secs = elapsed.as_secs_f64();
    let (warm, end) = (
        readings.get(warm_index).and_then(|r| r.0),
        readings.last().and_then(|r| r.0),
    );
    let growth = match (warm, end) {
        (Some(w), Some(e)) if w > 0 => Some((e as f64 - w as f64) / w as f64),
        _ => None,
    };
    // The store's history keeps the events of the last `HISTORY_WINDOW` (at least
    // `HISTORY_FLOOR` of them), at most `DEFAULT_HISTORY`: at a steady write rate it is full
    // once the window has passed.
    use replication_vw::store::memory::{DEFAULT_HISTORY, HISTORY_FLOOR, HISTORY_WINDOW};
    let window_events = ((SOAK_WRITES_PER_SECOND * HISTORY_WINDOW.as_secs_f64()) as u64)
        .max(HISTORY_FLOOR as u64)
        .min(DEFAULT_HISTORY as u64);
    let history = window_events;
    // Events the store's history ring held at the warm-up reading and at the end (the fill's
    // creates count too).
    let writes_at_warm = readings.get(warm_index).map_or(0, |r| r.1);
    let ring = |writes: u64| (SOAK_OBJECTS as u64 + writes).min(history);
    let ring_growth = ring(acked.len() as u64).saturating_sub(ring(writes_at_warm));
    let ring_bytes = ring_growth * object_bytes as u64;
    let sum = |f: fn(&Check) -> usize| checks.iter().map(f).sum::<usize>();
    let min = |f: fn(&Check) -> usize| checks.iter().map(f).min().unwrap_or(0);
    let max = |f: fn(&Check) -> usize| checks.iter().map(f).max().unwrap_or(0);
    let lost = sum(|c| c.lost) + sum(|c| c.wrong_name);
    let disorder = sum(|c| c.duplicates) + sum(|c| c.out_of_order);
    let get_errors = OpenLoop::count(&gets.errors);
    Row {
        scenario: "soak: GET",
        what: format!(
            "`cache-server` process: GET one of {SOAK_OBJECTS} CachedObjects (round robin) through the cache API, open loop at {} /s, one client (HTTP/2); {} s",
            thousands(SOAK_GETS_PER_SECOND),
            duration.as_secs()
        ),
        result: format!(
            "{} GETs done, {} /s ({} due, {} shed at {SOAK_GET_IN_FLIGHT} in flight, {get_errors} errors)",
            thousands(OpenLoop::count(&gets.ok) as f64),
            thousands(OpenLoop::count(&gets.ok) as f64 / secs),
            thousands(get_started as f64),
            OpenLoop::count(&gets.shed),
        ),
        p50: ms(percentile(&get_lat, 0.5)),
        p99: ms(percentile(&get_lat, 0.99)),
        rss: String::new(),
        ratio: String::new(),
        goal: "report".into(),
    }
    .print();
    Row {
        scenario: "soak: writes",
        what: format!(
            "PUT of a CachedObject (bump `spec.raw.spec.cores`, with its resourceVersion) through the cache API, open loop at {} /s",
            thousands(SOAK_WRITES_PER_SECOND)
        ),
        result: format!(
            "{} writes acknowledged, {:.1} /s ({} due, {} shed, {} conflicts, {} errors)",
            thousands(acked.len() as f64),
            acked.len() as f64 / secs,
            thousands(write_started as f64),
            OpenLoop::count(&writes.tally.shed),
            OpenLoop::count(&writes.tally.conflicts),
            OpenLoop::count(&writes.tally.errors),
        ),
        p50: ms(percentile(&write_lat, 0.5)),
        p99: ms(percentile(&write_lat, 0.99)),
        rss: String::new(),
        ratio: String::new(),
        goal: "report".into(),
    }
    .print();
    Row {
        scenario: "soak: watch",
        what: format!(
            "{SOAK_WATCHERS} watchers of the collection from resourceVersion {rv} ({http2} on HTTP/2), one connection each"
        ),
        result: format!(
            "events expected {} per watcher, delivered min {} / max {}; lost {lost}; duplicates {}, out of order {}; events of unacknowledged writes max {}; {} watches ended early",
            thousands(acked.len() as f64),
            thousands(min(|c| c.delivered) as f64),
            thousands(max(|c| c.delivered) as f64),
            sum(|c| c.duplicates),
            sum(|c| c.out_of_order),
            max(|c| c.unacknowledged),
            ended.len()
        ),
        p50: String::new(),
        p99: String::new(),
        rss: String::new(),
        ratio: String::new(),
        goal: format!(
            "0 lost {}; 0 duplicated or out of order {}",
            verdict(lost == 0 && ended.is_empty() && !checks.is_empty()),
            verdict(disorder == 0)
        ),
    }
    .print();
    Row {
        scenario: "soak: RSS",
        what: format!(
            "`cache-server` VmRSS after the warm-up ({} s) and at the end ({} s)",
            warmup.as_secs(),
            duration.as_secs()
        ),
        result: format!(
            "warm {}, end {}, growth {} ({}; the events the store's history ring took in meanwhile hold about {})",
            opt_mib(warm),
            opt_mib(end),
            growth.map_or_else(|| "n/a".into(), |g| format!("{:+.1}%", g * 100.0)),
            match (warm, end) {
                (Some(w), Some(e)) if e >= w => format!("+{}", mib1(e - w)),
                (Some(w), Some(e)) => format!("−{}", mib1(w - e)),
                _ => "n/a".into(),
            },
            mib1(ring_bytes)
        ),
        p50: String::new(),
        p99: String::new(),
        rss: opt_mib(peak),
        ratio: String::new(),
        goal: format!(
            "growth ≤ 10% {}",
            verdict(growth.is_some_and(|g| g <= SOAK_RSS_GOAL))
        ),
    }
    .print();

    // Notes.
    let trace: Vec<String> = readings
        .iter()
        .enumerate()
        .map(|(k, r)| {
            format!(
                "{} s {}",
                (duration * (k as u32 + 1) / SOAK_RSS_READINGS).as_secs(),
                opt_mib(r.0)
            )
        })
        .collect();
    ctx.notes.push(format!(
        "soak: server RSS over the run: {}; after the load stopped {}; peak (VmHWM) {}. The store \
         keeps the events of the last 75 s for watch resume (`store::memory::HISTORY_WINDOW`; \
         here about {} events), each holding the object's new value ({} B on average here): at \
         {} writes/s it is full after {:.0} s; between the warm-up reading and the end about {} \
         more events were held, about {} of values.",
        trace.join(", "),
        opt_mib(end_rss),
        opt_mib(peak),
        thousands(history as f64),
        object_bytes,
        SOAK_WRITES_PER_SECOND,
        history as f64 / SOAK_WRITES_PER_SECOND,
        thousands(ring_growth as f64),
        mib(ring_bytes)
    ));
    ctx.notes.push(format!(
        "soak: server CPU during the load {}; the watchers had the last acknowledged write \
         (resourceVersion {max_acked}) {:.2} s after the load stopped{}; in-flight requests \
         finished after the load: GETs {}, writes {}. GET latency is from the request's start \
         (open loop: a slow answer delays no later request). First GET error: {}; first write \
         error: {}; first watch that ended early: {}.",
        match (cpu_before, cpu_after) {
            (Some(b), Some(a)) => format!(
                "{:.1} s ({:.0}% of one core)",
                a - b,
                (a - b) / secs * 100.0
            ),
            _ => "n/a".into(),
        },
        caught_up.as_secs_f64(),
        if caught_up >= SOAK_DRAIN {
            format!(" (gave up waiting after {SOAK_DRAIN:?})")
        } else {
            String::new()
        },
        if gets_drained { "yes" } else { "no" },
        if writes_drained { "yes" } else { "no" },
        gets.first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "none".into()),
        writes
            .tally
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "none".into()),
        ended.first().cloned().unwrap_or_else(|| "none".into()),
    ));
    progress(&format!(
        "soak: done in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
