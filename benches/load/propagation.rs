//! `--scenario propagation` (issue 17): how long a write on a shard takes to reach watchers on
//! `virtual-workspace` replicas while the shard takes an open-loop write load (default 1,000
//! writes/s for `--duration`, `--write-rate N` to change it). It owns its set-up beside the
//! distributed scenario's roles (`super::Setup`, `super::RoleProcess`): the embedded `serve` as
//! the baseline, and `cache-server` + provider shard A + consumer shard B + two standalone
//! `virtual-workspace` replicas on the one cache server. On each, 100 CPU flavors (20 with
//! `--quick`, whose load is 200 writes/s for 1 s) are created in `root:cloudco` through the
//! shard's workspaces API; then a tokio interval starts every merge PATCH of `spec.cores` that is
//! due as a task of its own (round robin over the flavors, the value naming the write; at most
//! 200 in flight, the rest shed), while 20 watchers (10 per replica; all 20 on the baseline's
//! own VW) record when each value arrived. Each write is timed until every watcher has that
//! flavor at that write's state or a later one (the shard's controller replicates the latest
//! state of a flavor per pass, so values written in between may never be sent on their own); a
//! write some watcher never has within 10 s after the load ends is lost.

use super::soak::paced;
use super::*;

use std::collections::HashSet;
use tokio::sync::Semaphore;

/// CPU flavors created in `root:cloudco` before the load; the writes go round robin over them.
const PROP_FLAVORS: usize = 100;
/// The same with `--quick` (each controller pass has fewer flavors to replicate, so the set-up,
/// warm-up and catch-up take a fraction of the time).
const PROP_QUICK_FLAVORS: usize = 20;
/// Length of the load with `--quick` and no `--duration`.
const PROP_QUICK_DURATION: Duration = Duration::from_secs(1);
/// Name prefix of those flavors (`prop-cpu-000` …).
const PROP_PREFIX: &str = "prop-cpu-";
/// Labels of the `virtual-workspace` replicas started beside the distributed set-up's own (all
/// read the one cache server).
const EXTRA_REPLICAS: [&str; 1] = ["virtual-workspace-2"];
/// Standalone `virtual-workspace` replicas of the distributed set-up.
const PROP_REPLICAS: usize = 1 + EXTRA_REPLICAS.len();
/// Watch streams per replica, each on its own client (connection); the baseline's single VW
/// gets as many as all replicas together.
const PROP_WATCHERS_PER_VW: usize = 10;
/// Target write rate without `--write-rate` (the figure).
const PROP_WRITE_RATE: u64 = 1_000;
/// The same with `--quick`: each flavor is written every 100 ms, as in the default run (a PATCH
/// that overlaps another of the same flavor can fail with 409: the shard does not retry it).
const PROP_QUICK_WRITE_RATE: u64 = 200;
/// Writes in flight at most (hyper's streams per HTTP/2 connection, so no write waits inside the
/// client); a write due beyond them is not sent and counts as shed.
const PROP_IN_FLIGHT: usize = 200;
/// Creates and warm-up writes in flight.
const PROP_SETUP_IN_FLIGHT: usize = 16;
/// The goal checked: issue 12's second, now under load (issue 17 asks for p50/p99 only).
const PROP_GOAL: Duration = DISTRIBUTED_GOAL;
/// Share of the target rate the shard must acknowledge for the rate to count as sustained.
const PROP_RATE_SHARE: f64 = 0.95;

fn prop_flavor_name(i: usize) -> String {
    format!("{PROP_PREFIX}{i:03}")
}

/// A CPU flavor as a client creates it in `root:cloudco` (Public, so `cpuflavors-v1` selects it).
fn prop_flavor(i: usize) -> Value {
    json!({
        "apiVersion": "cloud.example.com/v1",
        "kind": "CPUFlavor",
        "metadata": {
            "name": prop_flavor_name(i),
            "labels": {
                "cloud.example.com/visibility": "Public",
                "cloud.example.com/tier": "small",
            },
        },
        "spec": {
            "cores": 1 + i % 64,
            "architecture": if i.is_multiple_of(2) { "amd64" } else { "arm64" },
            "description": description(i),
        },
    })
}

/// The flavors collection of `root:cloudco` on a shard's workspaces API.
fn flavors_url(base: &str) -> String {
    format!("{base}/clusters/root:cloudco/apis/cloud.example.com/v1/cpuflavors")
}

/// The consumer's view of the flavors on a virtual workspace.
fn vw_collection(base: &str) -> String {
    format!(
        "{base}/services/replication/{PROVIDER}/cpuflavors-v1/clusters/{CONSUMER}/apis/cloud.example.com/v1/cpuflavors"
    )
}

/// Create the scenario's flavors on the writer's workspaces API.
async fn create_flavors(
    client: &reqwest::Client,
    base: &str,
    flavors: usize,
) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    let url = flavors_url(base);
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..flavors)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let resp = client.post(&url).json(&prop_flavor(i)).send().await?;
                let status = resp.status();
                if status != StatusCode::CREATED {
                    let text = resp.text().await.unwrap_or_default();
                    bail!("POST {url} answered {status}: {text}");
                }
                Ok(())
            }
        })
        .buffer_unordered(PROP_SETUP_IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Poll a virtual workspace until it lists every scenario flavor; returns the list's
/// resourceVersion.
async fn wait_listed(vw: &RoleProcess, flavors: usize) -> anyhow::Result<String> {
    let client = vw.client(Some(REQUEST_TIMEOUT))?;
    let url = vw_collection(&vw.url);
    let deadline = Instant::now() + FLAVORS_TIMEOUT;
    loop {
        let last = match client.get(&url).send().await {
            Ok(resp) => {
                let status = resp.status();
                match resp.bytes().await {
                    Ok(body) if status.is_success() => {
                        let list: Value = serde_json::from_slice(&body)
                            .with_context(|| format!("LIST {url} is not JSON"))?;
                        let listed = list["items"].as_array().map_or(0, |items| {
                            items
                                .iter()
                                .filter_map(|i| i.pointer("/metadata/name"))
                                .filter_map(Value::as_str)
                                .filter(|n| n.starts_with(PROP_PREFIX))
                                .count()
                        });
                        if listed == flavors {
                            return list
                                .pointer("/metadata/resourceVersion")
                                .and_then(Value::as_str)
                                .map(str::to_string)
                                .ok_or_else(|| anyhow!("LIST {url} has no resourceVersion"));
                        }
                        format!("{listed} of {flavors} flavors")
                    }
                    Ok(body) => format!("{status}: {}", String::from_utf8_lossy(&body)),
                    Err(e) => format!("{status}: {e}"),
                }
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!(
                "{}: did not list the {flavors} flavors in {FLAVORS_TIMEOUT:?} (last: {last})",
                vw.label
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Watchers

/// What one watch line is, read by byte search (a whole `serde_json::Value` per line for 20
/// watchers at 1,000 events/s would take a good part of a core from the processes measured).
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// MODIFIED of flavor `flavor` carrying write `seq` (`spec.cores = CORES_BASE + seq`).
    Change { flavor: u32, seq: u64 },
    /// An ERROR event.
    Error,
    /// Anything else (bookmarks, other objects, values no write of this scenario set).
    Other,
}

/// The bytes after the first `key` (a quoted JSON key with its colon) whose value starts with
/// `value_prefix`, white space skipped.
fn after<'a>(line: &'a [u8], key: &[u8], value_prefix: &[u8]) -> Option<&'a [u8]> {
    let mut rest = line;
    while let Some(at) = memchr::memmem::find(rest, key) {
        let value = rest[at + key.len()..].trim_ascii_start();
        if let Some(v) = value.strip_prefix(value_prefix) {
            return Some(v);
        }
        rest = &rest[at + key.len()..];
    }
    None
}

/// The decimal number at the start of `bytes`.
fn leading_number(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(bytes.get(..digits)?).ok()?.parse().ok()
}

fn scan_line(line: &[u8]) -> Line {
    if after(line, b"\"type\":", b"\"ERROR\"").is_some() {
        return Line::Error;
    }
    if after(line, b"\"type\":", b"\"MODIFIED\"").is_none() {
        return Line::Other;
    }
    let flavor = after(line, b"\"name\":", format!("\"{PROP_PREFIX}").as_bytes())
        .and_then(leading_number)
        .and_then(|f| u32::try_from(f).ok());
    let seq = after(line, b"\"cores\":", b"")
        .and_then(leading_number)
        .and_then(|c| c.checked_sub(CORES_BASE));
    match (flavor, seq) {
        (Some(flavor), Some(seq)) => Line::Change { flavor, seq },
        _ => Line::Other,
    }
}

/// What one watcher saw.
#[derive(Default)]
struct Seen {
    /// `(flavor, write, when the chunk arrived)` of every MODIFIED line of a scenario flavor.
    changes: Vec<(u32, u64, Instant)>,
    /// An ERROR event or a failed read; `None` when the harness stopped it.
    ended: Option<String>,
}

/// One open watch: which replica it reads, the last write it saw per flavor (`seq + 1`, 0 for
/// none), so the harness sees when it has caught up, and its task.
struct Watch {
    replica: usize,
    last: Arc<Vec<AtomicU64>>,
    task: tokio::task::JoinHandle<Seen>,
}

/// Read one watch stream until `stop`.
async fn prop_watcher(
    mut resp: reqwest::Response,
    last: Arc<Vec<AtomicU64>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::default();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            _ = stop.wait_for(|s| *s) => return seen,
            c = resp.chunk() => c,
        };
        let now = Instant::now();
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
            match scan_line(line) {
                Line::Change { flavor, seq } => {
                    if let Some(slot) = last.get(flavor as usize) {
                        slot.store(seq + 1, Ordering::Release);
                        seen.changes.push((flavor, seq, now));
                    }
                }
                Line::Error => {
                    seen.ended = Some(format!(
                        "watch error: {}",
                        String::from_utf8_lossy(&line[..line.len().min(300)])
                    ));
                    return seen;
                }
                Line::Other => {}
            }
        }
        buf.drain(..from);
    }
}

/// Open `n` watches of `vw` from `rv`; returns them and how many are on HTTP/2.
async fn open_watches(
    vw: &RoleProcess,
    replica: usize,
    rv: &str,
    n: usize,
    flavors: usize,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(Vec<Watch>, usize)> {
    let url = format!("{}?watch=true&resourceVersion={rv}", vw_collection(&vw.url));
    let mut out = Vec::with_capacity(n);
    let mut http2 = 0;
    for _ in 0..n {
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, vw.client(None)?.get(&url).send())
            .await
            .map_err(|_| anyhow!("{}: no watch response in {REQUEST_TIMEOUT:?}", vw.label))?
            .with_context(|| format!("{}: opening a watch", vw.label))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            bail!("{}: watch answered {status}: {body}", vw.label);
        }
        if resp.version() == reqwest::Version::HTTP_2 {
            http2 += 1;
        }
        let last = Arc::new((0..flavors).map(|_| AtomicU64::new(0)).collect());
        out.push(Watch {
            replica,
            last: Arc::clone(&last),
            task: tokio::spawn(prop_watcher(resp, last, stop.clone())),
        });
    }
    Ok((out, http2))
}

/// Wait (until `deadline`) for every watcher's last write of each flavor to be `want[flavor]`;
/// returns whether they all got there.
async fn caught_up(watches: &[Watch], want: &[Option<u64>], deadline: Instant) -> bool {
    loop {
        let done = watches.iter().all(|w| {
            want.iter()
                .zip(w.last.iter())
                .all(|(want, last)| want.is_none_or(|s| last.load(Ordering::Acquire) == s + 1))
        });
        if done {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Writes

/// One acknowledged write.
#[derive(Debug, Clone, Copy)]
struct Acked {
    seq: u64,
    /// `metadata.resourceVersion` of the shard's answer: the order the writes were applied in.
    rv: u64,
    sent: Instant,
    ack: Instant,
}

/// The writes of one set-up: write `seq` sets `spec.cores = CORES_BASE + seq` of flavor
/// `seq % flavors`.
struct Writer {
    client: reqwest::Client,
    urls: Vec<String>,
    acked: std::sync::Mutex<Vec<Acked>>,
    errors: AtomicU64,
    /// Errors that were `409 Conflict`.
    conflicts: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Writer {
    fn new(client: reqwest::Client, base: &str, flavors: usize) -> Self {
        let collection = flavors_url(base);
        Writer {
            client,
            urls: (0..flavors)
                .map(|i| format!("{collection}/{}", prop_flavor_name(i)))
                .collect(),
            acked: std::sync::Mutex::new(Vec::new()),
            errors: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            first_error: std::sync::Mutex::new(None),
        }
    }

    fn failed(&self, why: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.first_error.lock() {
            e.get_or_insert(why);
        }
    }

    async fn write(&self, seq: u64) {
        let Some(url) = self
            .urls
            .get((seq % self.urls.len().max(1) as u64) as usize)
        else {
            return;
        };
        let patch = json!({"spec": {"cores": CORES_BASE + seq}}).to_string();
        let sent = Instant::now();
        let resp = match self
            .client
            .patch(url)
            .header(CONTENT_TYPE, "application/merge-patch+json")
            .body(patch)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return self.failed(format!("PATCH {url}: {e}")),
        };
        let ack = Instant::now();
        let status = resp.status();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return self.failed(format!("PATCH {url}: reading the answer: {e}")),
        };
        if !status.is_success() {
            if status == StatusCode::CONFLICT {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            return self.failed(format!(
                "PATCH {url} answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let rv = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
            v.pointer("/metadata/resourceVersion")?
                .as_str()?
                .parse::<u64>()
                .ok()
        });
        let Some(rv) = rv else {
            return self.failed(format!("PATCH {url} answered without a resourceVersion"));
        };
        if let Ok(mut a) = self.acked.lock() {
            a.push(Acked { seq, rv, sent, ack });
        }
    }

    fn take_acked(&self) -> Vec<Acked> {
        self.acked
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default()
    }

    fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|e| e.clone())
    }
}

/// The write each flavor ended with (the acknowledged write the shard applied last).
fn final_writes(acked: &[Acked], flavors: usize) -> Vec<Option<u64>> {
    let mut last: Vec<Option<(u64, u64)>> = vec![None; flavors];
    for a in acked {
        let Some(slot) = last.get_mut((a.seq % flavors.max(1) as u64) as usize) else {
            continue;
        };
        if slot.is_none_or(|(rv, _)| a.rv > rv) {
            *slot = Some((a.rv, a.seq));
        }
    }
    last.into_iter().map(|l| l.map(|(_, seq)| seq)).collect()
}

// ---------------------------------------------------------------------------------------------
// One set-up's run

/// How big a run is.
#[derive(Debug, Clone, Copy)]
struct Plan {
    flavors: usize,
    /// Target writes per second.
    rate: u64,
    /// Length of the load.
    duration: Duration,
}

/// A set-up of the scenario: its processes, and which of them the watchers read.
struct Target {
    setup: Setup,
    /// Indexes in `setup.roles` of the virtual workspaces watched.
    vws: Vec<usize>,
    watchers_per_vw: usize,
}

/// What one set-up measured.
#[derive(Default)]
struct Outcome {
    started: u64,
    shed: u64,
    errors: u64,
    conflicts: u64,
    first_error: Option<String>,
    acked: usize,
    /// PATCH sent → the last watcher has the write (or a later one), per write every watcher had.
    from_sent: Vec<Duration>,
    /// PATCH answered → the same (0 when the last watcher had it before the answer).
    from_ack: Vec<Duration>,
    /// PATCH sent → the first watcher has it.
    first: Vec<Duration>,
    /// PATCH sent → the last watcher of each replica has it.
    per_replica: Vec<Vec<Duration>>,
    /// PATCH sent → answer.
    rtt: Vec<Duration>,
    /// Writes some watcher never had, nor a later write of that flavor.
    lost: usize,
    /// Writes whose own value reached every watcher (the others were replicated only as part
    /// of a later state of their flavor).
    exact: usize,
    /// Load end (last answer) → every watcher has every flavor's final write.
    catch_up: Option<Duration>,
    watchers: usize,
    http2: usize,
    watch_failed: usize,
    watch_error: Option<String>,
    /// CPU seconds per process from the start of the load until the watchers caught up.
    cpu: Vec<Option<f64>>,
    /// How long that was.
    cpu_window: Duration,
    /// Controller passes and writes on the writer during the same time (from `/metrics`).
    controller: Option<(f64, f64)>,
}

/// A counter of a process's `/metrics` whose name ends with `name` (`_total` allowed).
async fn metric(client: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        let key = key.strip_suffix("_total").unwrap_or(key);
        key.ends_with(name)
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// Warm up, drive the load, wait for the watchers, and measure one set-up.
async fn run_target(t: &Target, plan: Plan, rvs: &[String]) -> anyhow::Result<Outcome> {
    let Plan {
        flavors,
        rate,
        duration,
    } = plan;
    let label = t.setup.label;
    let writer_role = &t.setup.roles[t.setup.writer];
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut watches = Vec::new();
    let mut http2 = 0;
    for (replica, (&vw, rv)) in t.vws.iter().zip(rvs).enumerate() {
        let (w, h) = open_watches(
            &t.setup.roles[vw],
            replica,
            rv,
            t.watchers_per_vw,
            flavors,
            &stop_rx,
        )
        .await?;
        watches.extend(w);
        http2 += h;
    }
    let writer = Arc::new(Writer::new(
        writer_role.client(Some(REQUEST_TIMEOUT))?,
        &writer_role.url,
        flavors,
    ));
    let metrics_client = writer_role.client(Some(REQUEST_TIMEOUT))?;

    // Warm-up, untimed: one write per flavor (writes 0 … flavors - 1), every watcher has them
    // all before the load starts.
    {
        use futures_util::StreamExt as _;
        futures_util::stream::iter(0..flavors as u64)
            .for_each_concurrent(PROP_SETUP_IN_FLIGHT, |seq| {
                let writer = Arc::clone(&writer);
                async move { writer.write(seq).await }
            })
            .await;
    }
    if let Some(e) = writer.first_error() {
        bail!("{label}: a warm-up write failed: {e}");
    }
    let warm = final_writes(&writer.take_acked(), flavors);
    if !caught_up(&watches, &warm, Instant::now() + EVENT_TIMEOUT).await {
        bail!("{label}: the warm-up writes did not reach every watcher in {EVENT_TIMEOUT:?}");
    }

    progress(&format!(
        "propagation: {label}: {rate} writes/s for {} s over {flavors} flavors, {} watchers",
        duration.as_secs(),
        watches.len()
    ));
    let cpu_before = t.setup.cpu();
    let cpu_from = Instant::now();
    let passes_before = metric(&metrics_client, &writer_role.url, "controller_passes").await;
    let writes_before = metric(&metrics_client, &writer_role.url, "controller_writes").await;
    let gate = Arc::new(Semaphore::new(PROP_IN_FLIGHT));
    let shed = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + duration;
    let started = {
        let (gate, shed, writer) = (Arc::clone(&gate), Arc::clone(&shed), Arc::clone(&writer));
        paced(rate as f64, until, move |k| {
            let Ok(permit) = Arc::clone(&gate).try_acquire_owned() else {
                shed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let writer = Arc::clone(&writer);
            tokio::spawn(async move {
                writer.write(flavors as u64 + k).await;
                drop(permit);
            });
        })
        .await
    };
    // Every write admitted ends within its request timeout.
    let all = u32::try_from(PROP_IN_FLIGHT).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(REQUEST_TIMEOUT * 2, gate.acquire_many(all))
        .await
        .is_ok_and(|p| p.is_ok());
    if !drained {
        bail!(
            "{label}: writes still in flight {:?} after the load",
            REQUEST_TIMEOUT * 2
        );
    }
    let load_end = Instant::now();
    let acked = writer.take_acked();
    let finals = final_writes(&acked, flavors);
    let caught = caught_up(&watches, &finals, load_end + EVENT_TIMEOUT).await;
    let catch_up = caught.then(|| load_end.elapsed());
    let cpu_after = t.setup.cpu();
    let cpu_window = cpu_from.elapsed();
    let passes_after = metric(&metrics_client, &writer_role.url, "controller_passes").await;
    let writes_after = metric(&metrics_client, &writer_role.url, "controller_writes").await;
    let _ = stop_tx.send(true);

    let mut seen = Vec::with_capacity(watches.len());
    let mut watch_failed = 0;
    let mut watch_error = None;
    for w in watches {
        let s = tokio::time::timeout(REQUEST_TIMEOUT, w.task)
            .await
            .map_err(|_| anyhow!("{label}: a watcher did not stop"))?
            .map_err(|e| anyhow!("{label}: a watcher panicked: {e}"))?;
        if let Some(e) = &s.ended {
            watch_failed += 1;
            watch_error.get_or_insert_with(|| e.clone());
        }
        seen.push((w.replica, s));
    }
    let mut out = measure(&acked, &seen, t.vws.len(), flavors);
    out.started = started;
    out.shed = shed.load(Ordering::Relaxed);
    out.errors = writer.errors.load(Ordering::Relaxed);
    out.conflicts = writer.conflicts.load(Ordering::Relaxed);
    out.first_error = writer.first_error();
    out.catch_up = catch_up;
    out.watchers = seen.len();
    out.http2 = http2;
    out.watch_failed = watch_failed;
    out.watch_error = watch_error;
    out.cpu_window = cpu_window;
    out.cpu = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(b, a)| Some(a.as_ref()? - b.as_ref()?))
        .collect();
    out.controller = match (passes_before, passes_after, writes_before, writes_after) {
        (Some(pb), Some(pa), Some(wb), Some(wa)) => Some((pa - pb, wa - wb)),
        _ => None,
    };
    Ok(out)
}

/// For each acknowledged write: when every watcher had its flavor at that write's state or a
/// later one (the first line whose write the shard applied at or after it).
fn measure(acked: &[Acked], seen: &[(usize, Seen)], replicas: usize, flavors: usize) -> Outcome {
    let rv_of: HashMap<u64, u64> = acked.iter().map(|a| (a.seq, a.rv)).collect();
    // Per watcher and flavor: (rv, earliest arrival of any line at rv or later), by rv.
    struct Watched {
        replica: usize,
        by_flavor: Vec<Vec<(u64, Instant)>>,
        exact: HashSet<u64>,
    }
    let watched: Vec<Watched> = seen
        .iter()
        .map(|(replica, s)| {
            let mut by_flavor: Vec<Vec<(u64, Instant)>> = vec![Vec::new(); flavors];
            let mut exact = HashSet::with_capacity(s.changes.len());
            for &(flavor, seq, at) in &s.changes {
                exact.insert(seq);
                if let (Some(rv), Some(list)) =
                    (rv_of.get(&seq), by_flavor.get_mut(flavor as usize))
                {
                    list.push((*rv, at));
                }
            }
            for list in &mut by_flavor {
                list.sort_unstable_by_key(|(rv, _)| *rv);
                for i in (0..list.len().saturating_sub(1)).rev() {
                    list[i].1 = list[i].1.min(list[i + 1].1);
                }
            }
            Watched {
                replica: *replica,
                by_flavor,
                exact,
            }
        })
        .collect();
    let mut out = Outcome {
        acked: acked.len(),
        per_replica: vec![Vec::new(); replicas],
        ..Outcome::default()
    };
    for a in acked {
        out.rtt.push(a.ack - a.sent);
        let flavor = (a.seq % flavors.max(1) as u64) as usize;
        let mut first: Option<Instant> = None;
        let mut last: Option<Instant> = None;
        let mut replica_last: Vec<Option<Instant>> = vec![None; replicas];
        let mut lost = false;
        let mut exact = true;
        for w in &watched {
            let list = w.by_flavor.get(flavor).map_or(&[][..], Vec::as_slice);
            let at = list.partition_point(|(rv, _)| *rv < a.rv);
            let Some(&(_, when)) = list.get(at) else {
                lost = true;
                break;
            };
            exact &= w.exact.contains(&a.seq);
            first = Some(first.map_or(when, |f| f.min(when)));
            last = Some(last.map_or(when, |l| l.max(when)));
            if let Some(r) = replica_last.get_mut(w.replica) {
                *r = Some(r.map_or(when, |l| l.max(when)));
            }
        }
        if lost {
            out.lost += 1;
            continue;
        }
        let (Some(first), Some(last)) = (first, last) else {
            continue;
        };
        if exact {
            out.exact += 1;
        }
        out.from_sent.push(last.saturating_duration_since(a.sent));
        out.from_ack.push(last.saturating_duration_since(a.ack));
        out.first.push(first.saturating_duration_since(a.sent));
        for (r, l) in out.per_replica.iter_mut().zip(&replica_last) {
            if let Some(l) = l {
                r.push(l.saturating_duration_since(a.sent));
            }
        }
    }
    out.from_sent.sort_unstable();
    out.from_ack.sort_unstable();
    out.first.sort_unstable();
    out.rtt.sort_unstable();
    for r in &mut out.per_replica {
        r.sort_unstable();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The scenario

/// The propagation scenario: see the module documentation.
pub(crate) async fn scenario_propagation(ctx: &mut Ctx) -> anyhow::Result<()> {
    let quick = ctx.args.quick;
    let plan = Plan {
        flavors: if quick {
            PROP_QUICK_FLAVORS
        } else {
            PROP_FLAVORS
        },
        rate: ctx
            .args
            .write_rate
            .unwrap_or(if quick {
                PROP_QUICK_WRITE_RATE
            } else {
                PROP_WRITE_RATE
            })
            .max(1),
        duration: match ctx.args.duration_flag {
            Some(d) => d,
            None if quick => PROP_QUICK_DURATION,
            None => ctx.args.duration,
        },
    };
    let flavors = plan.flavors;
    let started = Instant::now();
    progress("propagation: starting the embedded `serve` and a `cache-server`");
    let mut embedded = Setup::spawn_embedded()?;
    let mut cache = RoleProcess::spawn("cache-server", "cache-server", &[])?;
    cache.wait_ready().await?;
    let ck = cache
        .file("admin.kubeconfig")
        .to_string_lossy()
        .into_owned();
    progress(&format!(
        "propagation: starting shard A, shard B and {PROP_REPLICAS} `virtual-workspace` replicas"
    ));
    let mut distributed = Setup::spawn_distributed(cache)?;
    let mut vws = vec![distributed.vw];
    for label in EXTRA_REPLICAS {
        distributed.roles.push(RoleProcess::spawn(
            label,
            "virtual-workspace",
            &["--cache-kubeconfig".to_string(), ck.clone()],
        )?);
        vws.push(distributed.roles.len() - 1);
    }
    embedded.wait_ready().await?;
    distributed.wait_ready().await?;
    let ready = started.elapsed();
    let targets = [
        Target {
            vws: vec![embedded.vw],
            setup: embedded,
            watchers_per_vw: PROP_WATCHERS_PER_VW * PROP_REPLICAS,
        },
        Target {
            setup: distributed,
            vws,
            watchers_per_vw: PROP_WATCHERS_PER_VW,
        },
    ];
    let mut creates = Vec::new();
    for t in &targets {
        let writer = &t.setup.roles[t.setup.writer];
        let client = writer.client(Some(REQUEST_TIMEOUT))?;
        creates.push(async move {
            create_flavors(&client, &writer.url, flavors)
                .await
                .with_context(|| format!("{}: creating the flavors", t.setup.label))
        });
    }
    futures_util::future::try_join_all(creates).await?;
    let mut lists = Vec::new();
    for t in &targets {
        let mut rvs = Vec::new();
        for &vw in &t.vws {
            rvs.push(wait_listed(&t.setup.roles[vw], flavors).await?);
        }
        lists.push(rvs);
    }
    let serving = started.elapsed();
    progress(&format!(
        "propagation: every role ready in {:.2} s, {flavors} flavors created and listed by every VW after {:.2} s",
        ready.as_secs_f64(),
        serving.as_secs_f64()
    ));
    let mut outcomes = Vec::new();
    for (t, rvs) in targets.iter().zip(&lists) {
        outcomes.push(run_target(t, plan, rvs).await?);
    }
    let peaks: Vec<Vec<Option<u64>>> = targets
        .iter()
        .map(|t| t.setup.roles.iter().map(RoleProcess::peak_rss).collect())
        .collect();
    report(ctx, &targets, &outcomes, &peaks, plan);
    ctx.notes.push(format!(
        "propagation: set-up: every role ready after {:.2} s; {flavors} flavors created on \
         both writers (POST, {PROP_SETUP_IN_FLIGHT} in flight) and listed by every VW after {:.2} s.",
        ready.as_secs_f64(),
        serving.as_secs_f64()
    ));
    let mut targets = targets;
    for t in &mut targets {
        for r in &mut t.setup.roles {
            r.check_alive()?;
        }
    }
    Ok(())
}

fn report(
    ctx: &mut Ctx,
    targets: &[Target],
    outcomes: &[Outcome],
    peaks: &[Vec<Option<u64>>],
    plan: Plan,
) {
    let Plan {
        flavors,
        rate,
        duration,
    } = plan;
    let secs = duration.as_secs_f64();
    let ratio = |b: &[Duration], d: &[Duration], q: f64| {
        let (b, d) = (percentile(b, q), percentile(d, q));
        if b > Duration::ZERO && !d.is_zero() {
            format!("{:.2}×", d.as_secs_f64() / b.as_secs_f64())
        } else {
            "n/a".into()
        }
    };
    let whats = [
        format!(
            "baseline: embedded `serve` (shard, cache and VW in one process); {} PATCH/s target over {flavors} flavors on its workspaces API, {} watchers on its own VW",
            thousands(rate as f64),
            PROP_WATCHERS_PER_VW * PROP_REPLICAS
        ),
        format!(
            "`cache-server` + shard A + shard B + {PROP_REPLICAS} `virtual-workspace` replicas, {} processes; {} PATCH/s target over {flavors} flavors on shard A, {PROP_WATCHERS_PER_VW} watchers on each replica",
            targets.get(1).map_or(0, |t| t.setup.roles.len()),
            thousands(rate as f64)
        ),
    ];
    for (i, (what, o)) in whats.iter().zip(outcomes).enumerate() {
        let achieved = o.acked as f64 / secs;
        let p99 = percentile(&o.from_sent, 0.99);
        let (vs, goal) = if i == 0 {
            ("1×".to_string(), String::new())
        } else {
            let base = &outcomes[0];
            (
                format!(
                    "p50 {}, p99 {}",
                    ratio(&base.from_sent, &o.from_sent, 0.5),
                    ratio(&base.from_sent, &o.from_sent, 0.99)
                ),
                format!(
                    "p99 ≤ 1 s {}; 0 lost {}; ≥ {:.0}% of the target rate {}",
                    verdict(!o.from_sent.is_empty() && p99 <= PROP_GOAL),
                    verdict(o.lost == 0 && o.acked > 0),
                    PROP_RATE_SHARE * 100.0,
                    verdict(achieved >= PROP_RATE_SHARE * rate as f64)
                ),
            )
        };
        let peak: Option<u64> = peaks[i].iter().copied().sum();
        Row {
            scenario: "propagation",
            what: what.clone(),
            result: format!(
                "{} writes/s acknowledged ({} of {} started, {} shed, {} errors{}), {} lost; {} of {} watchers had each; max {} (from PATCH sent); from PATCH response: p50 {}, p99 {}",
                thousands(achieved),
                thousands(o.acked as f64),
                thousands(o.started as f64),
                thousands(o.shed as f64),
                o.errors,
                if o.conflicts > 0 {
                    format!(" ({} of them 409 Conflict)", o.conflicts)
                } else {
                    String::new()
                },
                o.lost,
                o.watchers - o.watch_failed,
                o.watchers,
                ms(o.from_sent.last().copied().unwrap_or_default()),
                ms(percentile(&o.from_ack, 0.5)),
                ms(percentile(&o.from_ack, 0.99))
            ),
            p50: ms(percentile(&o.from_sent, 0.5)),
            p99: ms(p99),
            rss: opt_mib(peak),
            ratio: vs,
            goal,
        }
        .print();
    }
    ctx.notes.push(format!(
        "propagation: each set-up gets {flavors} Public CPU flavors (`prop-cpu-000` …) \
         created through its writer's workspaces API, then one untimed warm-up write per flavor; \
         the load is an open loop of merge PATCHes of `spec.cores` ({} per second for {:.0} s, \
         write k to flavor k mod {flavors} with cores = {CORES_BASE} + k; at most \
         {PROP_IN_FLIGHT} in flight, the rest shed) on one HTTP/2 client. Measured (p50/p99 \
         columns): PATCH sent → the last watcher has that flavor at this write's state or a later \
         one (by the shard's resourceVersion of the answers); the shard replicates a flavor's \
         latest state on each controller pass, so values written between two passes reach the \
         watchers only as part of a later one. A write counts as lost when some watcher never \
         has it within {EVENT_TIMEOUT:?} after the last answer. The embedded baseline ran first, \
         then the distributed set-up; the other set-up's processes idled meanwhile.",
        thousands(rate as f64),
        secs
    ));
    for (t, o) in targets.iter().zip(outcomes) {
        let replicas = if o.per_replica.len() > 1 {
            format!(
                "; last watcher per replica (from PATCH sent): {}",
                o.per_replica
                    .iter()
                    .enumerate()
                    .map(|(i, r)| format!(
                        "replica {}: p50 {}, p99 {}",
                        i + 1,
                        ms(percentile(r, 0.5)),
                        ms(percentile(r, 0.99))
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        } else {
            String::new()
        };
        let controller = o.controller.map_or_else(String::new, |(passes, writes)| {
            format!(
                "; the writer's controllers ran {passes:.0} passes and made {writes:.0} writes \
                 meanwhile (`controller_writes` of `/metrics`: here the CachedObject updates, one \
                 per flavor changed since the pass before)"
            )
        });
        ctx.notes.push(format!(
            "propagation: {}: PATCH round trip p50 {} / p99 {} / max {}; first watcher (from PATCH \
             sent) p50 {} / p99 {}{replicas}; {} of {} delivered writes reached every watcher with \
             their own value, the others as a later state{controller}; every watcher had every \
             flavor's last write {} after the last answer; watches on HTTP/2: {} of {}{}{}",
            t.setup.label,
            ms(percentile(&o.rtt, 0.5)),
            ms(percentile(&o.rtt, 0.99)),
            ms(o.rtt.last().copied().unwrap_or_default()),
            ms(percentile(&o.first, 0.5)),
            ms(percentile(&o.first, 0.99)),
            thousands(o.exact as f64),
            thousands(o.from_sent.len() as f64),
            o.catch_up
                .map_or_else(|| format!("not within {EVENT_TIMEOUT:?}"), ms),
            o.http2,
            o.watchers,
            o.first_error
                .as_ref()
                .map_or_else(String::new, |e| format!("; first write error: {e}")),
            o.watch_error
                .as_ref()
                .map_or_else(String::new, |e| format!("; first watcher error: {e}")),
        ));
    }
    let cpu_and_rss = |i: usize| {
        let t = &targets[i];
        let window = outcomes[i].cpu_window.as_secs_f64().max(f64::MIN_POSITIVE);
        t.setup
            .roles
            .iter()
            .zip(outcomes[i].cpu.iter().zip(&peaks[i]))
            .map(|(role, (cpu, peak))| {
                format!(
                    "{} {} CPU ({}), peak RSS {}",
                    role.label,
                    cpu.map_or_else(|| "n/a".into(), |c| format!("{c:.2} s")),
                    cpu.map_or_else(
                        || "n/a".into(),
                        |c| format!("{:.0}% of a core", 100.0 * c / window)
                    ),
                    opt_mib(*peak)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    ctx.notes.push(format!(
        "propagation: CPU per process from the load's start until every watcher had the last \
         writes ({:.1} s and {:.1} s; share of one core over that time), peak RSS (VmHWM, summed \
         in the table): {}: {}; {}: {}.",
        outcomes[0].cpu_window.as_secs_f64(),
        outcomes[1].cpu_window.as_secs_f64(),
        targets[0].setup.label,
        cpu_and_rss(0),
        targets[1].setup.label,
        cpu_and_rss(1)
    ));
}
