//! `--scenario etcd`: what the watch cache in front of etcd buys, end to end, in one run. The
//! harness starts an etcd on loopback (`etcd_server.rs`) and a `cache-server --storage etcd`
//! process on it, creates `--objects` CachedObjects through the cache API, then compares, the
//! two sides taking turns:
//!
//! - LIST of the collection through the cache server's HTTPS API (served from its watch cache;
//!   a consistent list asks etcd for its revision first) against one range request of the same
//!   prefix straight from etcd with etcd-client, with a list body built from the values (how
//!   kcp's cache server reads with its watch cache off); lists/s, p50/p99; goal ≥ 10×.
//! - WATCH: 1,000 watches on the cache server (HTTP/2, 100 per connection) against 1,000
//!   watches opened on etcd itself; the cost of opening them (time, RSS of the process that
//!   holds them) and, for each change (a PUT through the cache API), the time from the PUT
//!   until the last watcher has it. Ratio reported.

use super::*;

use etcd_client::{GetOptions, WatchOptions};
use futures_util::StreamExt as _;

/// Watches of each kind.
const ETCD_WATCHERS: usize = 1_000;
/// Creates in flight while filling through the cache API.
const ETCD_FILL_IN_FLIGHT: usize = 64;
/// How long opening every watch of one kind may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest etcd response the direct LIST accepts (etcd-client's default is 4 MiB).
const MAX_RESPONSE: usize = 1 << 30;
/// Goal of the LIST ratio.
const LIST_GOAL: f64 = 10.0;

/// The cache API collection of the provider's CachedObjects on `base`.
fn collection_url(base: &str) -> String {
    format!(
        "{base}/services/cache/shards/{SHARD}/clusters/{PROVIDER}/apis/cache.kcp.io/v1alpha1/cachedobjects"
    )
}

/// The etcd prefix the cache server keeps that collection under (`--etcd-prefix` default
/// `/cache`, then group, resource, shard, cluster).
fn etcd_prefix() -> String {
    format!("/cache/cache.kcp.io/cachedobjects/{SHARD}/{PROVIDER}/")
}

/// Reset the peak RSS (`VmHWM`) of process `pid` to its current RSS.
fn reset_peak_of(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn rss_of(pid: u32, field: &str) -> Option<u64> {
    status_file_bytes(&format!("/proc/{pid}/status"), field)
}

/// CPU seconds process `pid` used so far (`utime + stime`, USER_HZ = 100).
fn cpu_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU seconds of the cache server and of etcd.
fn cpu_pair(server: u32, etcd: u32) -> (Option<f64>, Option<f64>) {
    (cpu_of(server), cpu_of(etcd))
}

/// `cache-server X s, etcd Y s` between two [`cpu_pair`]s.
fn cpu_used(before: (Option<f64>, Option<f64>), after: (Option<f64>, Option<f64>)) -> String {
    let d = |b: Option<f64>, a: Option<f64>| {
        a.zip(b)
            .map_or_else(|| "n/a".to_string(), |(a, b)| format!("{:.1} s", a - b))
    };
    format!(
        "cache-server {}, etcd {}",
        d(before.0, after.0),
        d(before.1, after.1)
    )
}

/// A list body as a server would send it: the stored values as `items`, at `revision`.
fn list_body(kvs: &[etcd_client::KeyValue], revision: i64) -> Vec<u8> {
    let size: usize = kvs.iter().map(|kv| kv.value().len() + 1).sum();
    let mut out = Vec::with_capacity(size + 200);
    out.extend_from_slice(
        format!(
            "{{\"apiVersion\":\"cache.kcp.io/v1alpha1\",\"kind\":\"CachedObjectList\",\"metadata\":{{\"resourceVersion\":\"{revision}\"}},\"items\":["
        )
        .as_bytes(),
    );
    for (n, kv) in kvs.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(kv.value());
    }
    out.extend_from_slice(b"]}");
    out
}

/// One LIST straight from etcd: a range request of the prefix, the body built; its length and
/// item count.
async fn list_direct(client: &etcd_client::Client) -> anyhow::Result<(u64, usize)> {
    let mut kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE);
    let mut resp = tokio::time::timeout(
        REQUEST_TIMEOUT,
        kv.get(etcd_prefix(), Some(GetOptions::new().with_prefix())),
    )
    .await
    .map_err(|_| anyhow!("etcd range: no answer in {REQUEST_TIMEOUT:?}"))??;
    let revision = resp.header().map_or(0, |h| h.revision());
    let kvs = resp.take_kvs();
    let body = list_body(&kvs, revision);
    Ok((std::hint::black_box(body).len() as u64, kvs.len()))
}

/// [`run_workers`] for the direct LIST: `workers` concurrent range requests on one client.
async fn run_direct(
    client: &etcd_client::Client,
    workers: usize,
    duration: Duration,
    record: bool,
) -> Load {
    super::closed_loop(
        vec![client.clone(); workers],
        duration,
        record,
        |client| async move { list_direct(&client).await.map(|(n, _)| n) },
    )
    .await
}

/// One etcd watch: every message with events counts once per event, in order, until
/// `received.len()` changes arrived; returns their times.
async fn etcd_watcher(
    mut stream: etcd_client::WatchStream,
    received: Arc<Vec<AtomicUsize>>,
) -> anyhow::Result<Vec<Instant>> {
    let mut got = Vec::with_capacity(received.len());
    while got.len() < received.len() {
        let Some(msg) = stream.message().await? else {
            bail!("etcd ended the watch");
        };
        if msg.canceled() {
            bail!("etcd canceled the watch: {}", msg.cancel_reason());
        }
        let now = Instant::now();
        for _ in msg.events() {
            if let Some(c) = received.get(got.len()) {
                c.fetch_add(1, Ordering::AcqRel);
                got.push(now);
            }
        }
    }
    Ok(got)
}

/// Open one etcd watch of the prefix and wait for etcd's `created` answer.
async fn open_etcd_watch(
    client: etcd_client::Client,
    ready: Arc<AtomicUsize>,
    received: Arc<Vec<AtomicUsize>>,
) -> anyhow::Result<Vec<Instant>> {
    let mut stream = client
        .watch_client()
        .watch(etcd_prefix(), Some(WatchOptions::new().with_prefix()))
        .await?;
    match tokio::time::timeout(REQUEST_TIMEOUT, stream.message()).await {
        Ok(Ok(Some(m))) if m.created() => {}
        Ok(Ok(Some(_))) => bail!("etcd's first watch answer was not `created`"),
        Ok(Ok(None)) => bail!("etcd ended the watch before creating it"),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => bail!("etcd did not create the watch in {REQUEST_TIMEOUT:?}"),
    }
    ready.fetch_add(1, Ordering::AcqRel);
    etcd_watcher(stream, received).await
}

/// What one kind of watcher measured.
#[derive(Default)]
struct Fanout {
    open: usize,
    open_time: Duration,
    /// Growth of the RSS of the process that holds the watches while they were opened.
    open_rss: Option<u64>,
    /// PUT sent → each watcher has the change, every delivery.
    delays: Vec<Duration>,
    /// PUT sent → the last watcher has the change, per change that reached every watcher.
    last: Vec<Duration>,
    /// PUT sent → PUT answered.
    write: Vec<Duration>,
    /// Changes that did not reach every watcher within `EVENT_TIMEOUT`.
    incomplete: usize,
    failed: usize,
    first_error: Option<String>,
    http2: usize,
}

/// Wait until `ready` reaches `n`, the tasks all ended, or `OPEN_TIMEOUT` passed.
async fn wait_open<T>(
    ready: &AtomicUsize,
    n: usize,
    tasks: &[tokio::task::JoinHandle<T>],
) -> usize {
    let deadline = Instant::now() + OPEN_TIMEOUT;
    while ready.load(Ordering::Acquire) < n
        && Instant::now() < deadline
        && !tasks.iter().all(|t| t.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ready.load(Ordering::Acquire)
}

/// One change of `url` through the cache API (GET, bump `spec.raw.spec.cores`, PUT after a
/// 100 ms pause); returns when the PUT was sent and its answer's delay.
async fn change(client: &reqwest::Client, url: &str) -> anyhow::Result<(Instant, Duration)> {
    let resp = client.get(url).send().await?;
    if !resp.status().is_success() {
        bail!("GET {url}: {}", resp.status());
    }
    let mut v: Value = resp.json().await?;
    let cores = v
        .pointer("/spec/raw/spec/cores")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    if let Some(c) = v.pointer_mut("/spec/raw/spec/cores") {
        *c = json!(cores % 64 + 1);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = Instant::now();
    let resp = client.put(url).json(&v).send().await?;
    let took = sent.elapsed();
    if !resp.status().is_success() {
        let status = resp.status();
        bail!(
            "PUT {url}: {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    Ok((sent, took))
}

/// `events` changes of `url`, one at a time, each awaited until every one of `open` watchers
/// counted it in `received` (at most `EVENT_TIMEOUT`); then collect the watchers' times.
async fn deliver(
    writer: &reqwest::Client,
    url: &str,
    open: usize,
    received: &[AtomicUsize],
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<Instant>>>>,
    out: &mut Fanout,
) -> anyhow::Result<()> {
    let mut sent = Vec::with_capacity(received.len());
    for counter in received {
        let (t0, took) = change(writer, url).await?;
        sent.push(t0);
        out.write.push(took);
        let until = t0 + EVENT_TIMEOUT;
        while counter.load(Ordering::Acquire) < open && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if counter.load(Ordering::Acquire) < open {
            out.incomplete += 1;
        }
    }
    let mut per_change: Vec<Vec<Duration>> = sent.iter().map(|_| Vec::new()).collect();
    // A watcher that counted the last change may not have returned yet: give them a moment.
    let deadline = Instant::now() + Duration::from_secs(1);
    for mut t in tasks {
        let Ok(joined) = tokio::time::timeout_at(deadline, &mut t).await else {
            t.abort();
            out.failed += 1;
            continue;
        };
        match joined {
            Ok(Ok(times)) => {
                for (k, at) in times.iter().enumerate() {
                    if let (Some(t0), Some(d)) = (sent.get(k), per_change.get_mut(k)) {
                        d.push(at.saturating_duration_since(*t0));
                    }
                }
            }
            Ok(Err(e)) => {
                out.failed += 1;
                out.first_error.get_or_insert(format!("{e:#}"));
            }
            Err(_) => out.failed += 1,
        }
    }
    for d in per_change {
        if d.len() == open
            && let Some(last) = d.iter().max()
        {
            out.last.push(*last);
        }
        out.delays.extend(d);
    }
    out.delays.sort_unstable();
    out.last.sort_unstable();
    out.write.sort_unstable();
    Ok(())
}

/// `--scenario etcd`: see the module documentation.
pub(crate) async fn scenario_etcd(ctx: &mut Ctx) -> anyhow::Result<()> {
    if etcd_server::version().is_none() {
        if ctx.args.scenarios.len() > 1 {
            backends::print_skipped("etcd", "no `etcd` on PATH");
            return Ok(());
        }
        bail!(
            "--scenario etcd needs `etcd` on PATH (Debian: apt-get install etcd-server etcd-client)"
        );
    }
    let objects = ctx.args.objects;
    let events = ctx.args.watch_events.max(1);
    let (warmup, duration) = (ctx.args.warmup, ctx.args.duration);
    let started = Instant::now();
    progress("etcd: starting etcd and a `cache-server --storage etcd`");
    let etcd = tokio::task::spawn_blocking(etcd_server::EtcdServer::start).await??;
    let mut server = RoleProcess::spawn(
        "cache-server",
        "cache-server",
        &[
            "--storage".into(),
            "etcd".into(),
            "--etcd-servers".into(),
            etcd.url.clone(),
        ],
    )?;
    server.wait_ready().await?;
    let ready = started.elapsed();
    let server_pid = server.child.id();
    let collection = collection_url(&server.url);
    let writer = server.client(Some(REQUEST_TIMEOUT))?;

    // Fill through the cache API.
    progress(&format!(
        "etcd: creating {objects} CachedObjects through the cache API ({ETCD_FILL_IN_FLIGHT} in flight)"
    ));
    let fill_started = Instant::now();
    let created: Vec<anyhow::Result<String>> = futures_util::stream::iter(0..objects)
        .map(|i| {
            let (client, url) = (writer.clone(), collection.clone());
            async move {
                let resp = client.post(&url).json(&wrapped(i)).send().await?;
                let status = resp.status();
                if status != StatusCode::CREATED {
                    let text = resp.text().await.unwrap_or_default();
                    bail!("POST {url} answered {status}: {text}");
                }
                let v: Value = resp.json().await?;
                v.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("a created CachedObject has no name"))
            }
        })
        .buffered(ETCD_FILL_IN_FLIGHT)
        .collect()
        .await;
    let names = created
        .into_iter()
        .collect::<anyhow::Result<Vec<String>>>()?;
    let fill_time = fill_started.elapsed();

    // Both sides list every object before anything is timed.
    let list: Value = writer.get(&collection).send().await?.json().await?;
    let listed = list["items"].as_array().map_or(0, Vec::len);
    if listed != objects {
        bail!("the cache server lists {listed} CachedObjects, expected {objects}");
    }
    let direct = etcd_client::Client::connect([etcd.url.as_str()], None).await?;
    let (direct_body, direct_items) = list_direct(&direct).await?;
    if direct_items != objects {
        bail!(
            "etcd holds {direct_items} CachedObjects under {}, expected {objects}",
            etcd_prefix()
        );
    }

    // LIST, the two sides taking turns.
    let clients = (0..LIST_CONNECTIONS)
        .map(|_| server.client(Some(REQUEST_TIMEOUT)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rounds = rounds(duration);
    // The smoke run keeps this scenario to a few seconds: 0.5 s per side after 0.25 s warm-ups.
    let short = ctx.args.quick && ctx.args.duration_flag.is_none();
    let (warmup, slice) = if short {
        (Duration::from_millis(250), Duration::from_millis(500))
    } else {
        (warmup, duration / rounds)
    };
    progress(&format!(
        "etcd: LIST of {objects} from the cache server and from etcd, {rounds} rounds of {:.1} s each",
        slice.as_secs_f64()
    ));
    let (mut ours, mut theirs) = (Load::default(), Load::default());
    let (mut ours_peaks, mut theirs_peak) = ((None, None), None);
    let (mut ours_cpu, mut theirs_cpu) = ((0.0, 0.0), (0.0, 0.0));
    let add =
        |acc: &mut (f64, f64), b: (Option<f64>, Option<f64>), a: (Option<f64>, Option<f64>)| {
            acc.0 += a.0.zip(b.0).map_or(0.0, |(a, b)| a - b);
            acc.1 += a.1.zip(b.1).map_or(0.0, |(a, b)| a - b);
        };
    for round in 0..rounds {
        if round == 0 {
            run_workers(&clients, &collection, warmup, false).await;
            run_direct(&direct, LIST_CONNECTIONS, warmup, false).await;
        }
        reset_peak_of(server_pid);
        reset_peak_of(etcd.pid());
        let before = cpu_pair(server_pid, etcd.pid());
        let load = run_workers(&clients, &collection, slice, true).await;
        add(&mut ours_cpu, before, cpu_pair(server_pid, etcd.pid()));
        let peaks = (rss_of(server_pid, "VmHWM:"), etcd.peak_rss());
        ours_peaks = (ours_peaks.0.max(peaks.0), ours_peaks.1.max(peaks.1));
        ours.merge(load, None);
        reset_peak_of(etcd.pid());
        let before = cpu_pair(server_pid, etcd.pid());
        let load = run_direct(&direct, LIST_CONNECTIONS, slice, true).await;
        add(&mut theirs_cpu, before, cpu_pair(server_pid, etcd.pid()));
        theirs_peak = theirs_peak.max(etcd.peak_rss());
        theirs.merge(load, None);
    }
    ours.latencies.sort_unstable();
    theirs.latencies.sort_unstable();
    let ours_body = ours.bytes / ours.requests.max(1);
    let list_ratio = ours.rps() / theirs.rps();
    let lists = |l: &Load| {
        format!(
            "{:.1} lists/s ({:.0} MB/s)",
            l.rps(),
            l.bytes_per_second() / 1e6
        )
    };
    Row {
        scenario: "etcd: LIST",
        what: format!(
            "baseline: straight from etcd: one range request of the prefix (etcd-client, {LIST_CONNECTIONS} \
             concurrent on one HTTP/2 conn, no TLS), list JSON built from the {direct_items} values \
             ({:.1} MB){}",
            direct_body as f64 / 1e6,
            errors_note(&theirs)
        ),
        result: lists(&theirs),
        p50: ms(theirs.p(0.5)),
        p99: ms(theirs.p(0.99)),
        rss: format!("etcd {}", opt_mib(theirs_peak)),
        ratio: "1×".into(),
        goal: String::new(),
    }
    .print();
    Row {
        scenario: "etcd: LIST",
        what: format!(
            "`cache-server --storage etcd`: LIST of the {objects} CachedObjects through its HTTPS API, \
             served from its watch cache (one revision request to etcd each), {LIST_CONNECTIONS} conns \
             ({:.1} MB){}",
            ours_body as f64 / 1e6,
            errors_note(&ours)
        ),
        result: lists(&ours),
        p50: ms(ours.p(0.5)),
        p99: ms(ours.p(0.99)),
        rss: format!(
            "cache-server {}, etcd {}",
            opt_mib(ours_peaks.0),
            opt_mib(ours_peaks.1)
        ),
        ratio: format!("{list_ratio:.1}×"),
        goal: format!("≥ 10× {}", verdict(list_ratio >= LIST_GOAL)),
    }
    .print();

    // WATCH: first the cache server's watchers, then etcd's own.
    let target = names
        .get(names.len() / 2)
        .ok_or_else(|| anyhow!("no CachedObjects"))?;
    let target_url = format!("{collection}/{target}");
    let connections = ETCD_WATCHERS.div_ceil(STREAMS_PER_CONNECTION);
    let watch_clients = (0..connections)
        .map(|_| server.client(None))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // One request per client first, so each opens exactly one HTTP/2 connection.
    let readyz = format!("{}/readyz", server.url);
    for c in &watch_clients {
        tokio::time::timeout(REQUEST_TIMEOUT, c.get(&readyz).send())
            .await
            .map_err(|_| anyhow!("no /readyz answer in {REQUEST_TIMEOUT:?}"))??;
    }
    let list: Value = writer.get(&collection).send().await?.json().await?;
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the list has no resourceVersion"))?
        .to_string();
    drop(list);
    let watch_url = format!("{collection}?watch=true&resourceVersion={rv}");
    progress(&format!(
        "etcd: {ETCD_WATCHERS} watches on the cache server over {connections} HTTP/2 connections, {events} changes"
    ));
    let mut cached = Fanout::default();
    let mut cached_cpu = ((None, None), (None, None));
    {
        let ready = Arc::new(AtomicUsize::new(0));
        let h2 = Arc::new(AtomicUsize::new(0));
        let received: Arc<Vec<AtomicUsize>> =
            Arc::new((0..events).map(|_| AtomicUsize::new(0)).collect());
        let rss_before = rss_of(server_pid, "VmRSS:");
        cached_cpu.0 = cpu_pair(server_pid, etcd.pid());
        let opening = Instant::now();
        let tasks: Vec<_> = (0..ETCD_WATCHERS)
            .map(|i| {
                tokio::spawn(watcher(
                    watch_clients[i % connections].clone(),
                    watch_url.clone(),
                    ready.clone(),
                    h2.clone(),
                    received.clone(),
                ))
            })
            .collect();
        cached.open = wait_open(&ready, ETCD_WATCHERS, &tasks).await;
        cached.open_time = opening.elapsed();
        cached.open_rss = rss_of(server_pid, "VmRSS:")
            .zip(rss_before)
            .map(|(a, b)| a.saturating_sub(b));
        cached.http2 = h2.load(Ordering::Relaxed);
        deliver(
            &writer,
            &target_url,
            cached.open,
            &received,
            tasks,
            &mut cached,
        )
        .await?;
        cached_cpu.1 = cpu_pair(server_pid, etcd.pid());
    }
    drop(watch_clients);
    progress(&format!(
        "etcd: {ETCD_WATCHERS} watches opened on etcd directly, {events} changes"
    ));
    let mut direct_fanout = Fanout::default();
    let mut direct_cpu = ((None, None), (None, None));
    {
        let watch_client = etcd_client::Client::connect([etcd.url.as_str()], None).await?;
        let ready = Arc::new(AtomicUsize::new(0));
        let received: Arc<Vec<AtomicUsize>> =
            Arc::new((0..events).map(|_| AtomicUsize::new(0)).collect());
        let rss_before = etcd.rss();
        direct_cpu.0 = cpu_pair(server_pid, etcd.pid());
        let opening = Instant::now();
        let tasks: Vec<_> = (0..ETCD_WATCHERS)
            .map(|_| {
                tokio::spawn(open_etcd_watch(
                    watch_client.clone(),
                    ready.clone(),
                    received.clone(),
                ))
            })
            .collect();
        direct_fanout.open = wait_open(&ready, ETCD_WATCHERS, &tasks).await;
        direct_fanout.open_time = opening.elapsed();
        direct_fanout.open_rss = etcd.rss().zip(rss_before).map(|(a, b)| a.saturating_sub(b));
        deliver(
            &writer,
            &target_url,
            direct_fanout.open,
            &received,
            tasks,
            &mut direct_fanout,
        )
        .await?;
        direct_cpu.1 = cpu_pair(server_pid, etcd.pid());
    }
    let last_p50 = |f: &Fanout| percentile(&f.last, 0.5);
    let watch_ratio = if last_p50(&cached) > Duration::ZERO {
        format!(
            "{:.1}× (last watcher, p50)",
            last_p50(&direct_fanout).as_secs_f64() / last_p50(&cached).as_secs_f64()
        )
    } else {
        "n/a".into()
    };
    let watch_result = |f: &Fanout, holder: &str| {
        format!(
            "{} / {events} changes reached all {}; last watcher p50 {}, max {}; opening the {} took {:.2} s, {holder} VmRSS +{}",
            f.last.len(),
            f.open,
            ms(percentile(&f.last, 0.5)),
            ms(f.last.last().copied().unwrap_or_default()),
            f.open,
            f.open_time.as_secs_f64(),
            f.open_rss.map_or_else(|| "n/a".into(), mib1)
        )
    };
    let failures = |f: &Fanout| {
        let mut s = String::new();
        if f.open < ETCD_WATCHERS {
            s.push_str(&format!(", only {} of {ETCD_WATCHERS} opened", f.open));
        }
        if f.failed > 0 {
            s.push_str(&format!(", {} watchers failed", f.failed));
        }
        if f.incomplete > 0 {
            s.push_str(&format!(", {} changes incomplete", f.incomplete));
        }
        s
    };
    Row {
        scenario: "etcd: WATCH",
        what: format!(
            "baseline: {ETCD_WATCHERS} watches of the prefix opened on etcd directly (one gRPC stream each, \
             one HTTP/2 conn, no TLS); {events} changes, each a PUT through the cache API{}",
            failures(&direct_fanout)
        ),
        result: watch_result(&direct_fanout, "etcd"),
        p50: ms(percentile(&direct_fanout.delays, 0.5)),
        p99: ms(percentile(&direct_fanout.delays, 0.99)),
        rss: format!("etcd {}", opt_mib(etcd.rss())),
        ratio: "1×".into(),
        goal: String::new(),
    }
    .print();
    Row {
        scenario: "etcd: WATCH",
        what: format!(
            "{ETCD_WATCHERS} watches on the `cache-server` ({} on HTTP/2, {STREAMS_PER_CONNECTION} per conn, TLS), \
             from its watch cache; the same changes{}",
            cached.http2,
            failures(&cached)
        ),
        result: watch_result(&cached, "cache-server"),
        p50: ms(percentile(&cached.delays, 0.5)),
        p99: ms(percentile(&cached.delays, 0.99)),
        rss: format!("cache-server {}", opt_mib(rss_of(server_pid, "VmRSS:"))),
        ratio: watch_ratio,
        goal: "report".into(),
    }
    .print();
    ctx.notes.push(format!(
        "etcd: {} and a `cache-server --storage etcd --etcd-servers <it>` (ready after {:.2} s); \
         {objects} CachedObjects created through the cache API ({ETCD_FILL_IN_FLIGHT} in flight) \
         in {:.2} s. LIST: {rounds} rounds of {:.1} s per side ({} ms warm-up), {LIST_CONNECTIONS} \
         concurrent lists each; p50/p99 are per list. WATCH: p50/p99 over every delivery and the \
         `last watcher` figures are from the PUT sent (through the cache server to etcd, the same \
         path for both) until a watcher had the whole event; PUT answered after p50 {} (cache \
         server's watches) and {} (etcd's). Peak RSS (VmHWM) of the cache-server and of etcd \
         during the timed LIST rounds; the WATCH rows give VmRSS at the end and its growth while \
         the watches opened.{}{}",
        etcd.version,
        ready.as_secs_f64(),
        fill_time.as_secs_f64(),
        slice.as_secs_f64(),
        warmup.as_millis(),
        ms(percentile(&cached.write, 0.5)),
        ms(percentile(&direct_fanout.write, 0.5)),
        cached
            .first_error
            .as_ref()
            .map(|e| format!(" First cache-server watcher error: {e}"))
            .unwrap_or_default(),
        direct_fanout
            .first_error
            .as_ref()
            .map(|e| format!(" First etcd watcher error: {e}"))
            .unwrap_or_default(),
    ));
    let fmt = |(cs, e): (f64, f64)| format!("cache-server {cs:.1} s, etcd {e:.1} s");
    ctx.notes.push(format!(
        "etcd: CPU during the timed LISTs from the cache server: {}; during those straight from \
         etcd: {} (the harness, which also builds the direct lists' bodies, is not counted). \
         While the cache server's watches were opened and fed: {}; etcd's own watches: {}.",
        fmt(ours_cpu),
        fmt(theirs_cpu),
        cpu_used(cached_cpu.0, cached_cpu.1),
        cpu_used(direct_cpu.0, direct_cpu.1)
    ));
    server.check_alive()?;
    Ok(())
}
