//! `--scenario watch-idle` (issue 17, "idle watchers"): the embedded `serve --seed
//! examples/cloud-co` as a child process (so its RSS is its own) holding `--idle-watches` open
//! watches (default 100,000) of the Replication VW collection of consumer `3h9tqa6m2cxe1kbn`,
//! as HTTP/2 streams, 100 per connection. The server's VmRSS is read before any watcher
//! connects, after the TLS connections alone, and once every watch is open and the server is
//! idle; the growth per open watch is the row's figure. Then one merge PATCH of `cpu-small`
//! through the shard's workspaces API, timed until every watcher has the MODIFIED line (first,
//! p50, p99, last), with the server's CPU time to deliver it. The watchers are a lean client of
//! the harness's own (tokio-rustls + the `h2` crate, one task per connection polling its
//! streams), so 100,000 of them cost the harness little memory and CPU; connections open a few
//! at a time, and every connect, response head and wait has a timeout. This module also owns
//! [`settled_rss`] (shared with `large-objects`) and the open-files limit the run needs.

use super::*;

use std::net::SocketAddr;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use memchr::memmem;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Connections opening (TCP, TLS and HTTP/2 handshakes; later their streams) at once.
const IDLE_OPENING: usize = 16;
/// Timeout of one connection's TCP connect, TLS handshake and HTTP/2 handshake.
const IDLE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting, or opening every watch, may take in all.
const IDLE_OPEN_LIMIT: Duration = Duration::from_secs(600);
/// `timeoutSeconds` of every watch: longer than any run, so none ends on its own.
const IDLE_WATCH_SECONDS: u64 = 3_600;
/// Idle time before an RSS reading counts as settled (`--quick`: [`IDLE_SETTLE_QUICK`]).
const IDLE_SETTLE: Duration = Duration::from_secs(3);
const IDLE_SETTLE_QUICK: Duration = Duration::from_millis(500);
/// After the idle time, RSS is read every [`SETTLE_STEP`] until two readings in a row are
/// within 1%, at most this long.
const SETTLE_LIMIT: Duration = Duration::from_secs(20);
const SETTLE_STEP: Duration = Duration::from_millis(250);
/// The change writes `spec.cores` of `cpu-small` = this (the seed has 2), so its line is known.
const IDLE_CORES: u64 = 4_242;
/// Issue 17: memory per idle watch ≤ 8 KiB.
const IDLE_GOAL_BYTES: f64 = 8.0 * 1024.0;
/// Open files beyond one per connection (the harness's own, the server's store files, …).
const FD_MARGIN: u64 = 256;
/// Phases of the connection tasks (the value of the coordinator's watch channel).
const PHASE_CONNECT: u8 = 0;
const PHASE_OPEN: u8 = 1;
const PHASE_STOP: u8 = 2;

/// VmRSS of `server` once it has settled: after `idle`, read every 250 ms until two readings in
/// a row are within 1% of each other (at most 20 s more).
pub(super) async fn settled_rss(server: &RoleProcess, idle: Duration) -> Option<u64> {
    tokio::time::sleep(idle).await;
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut last = server.rss()?;
    loop {
        tokio::time::sleep(SETTLE_STEP).await;
        let now = server.rss()?;
        if now.abs_diff(last) <= last / 100 || Instant::now() > deadline {
            return Some(now);
        }
        last = now;
    }
}

/// Raise this process's soft open-files limit when it is below `needed` (to the hard limit;
/// processes started afterwards inherit it). Fails when the hard limit is below `needed`.
/// Returns the soft limit now in force.
fn raise_nofile(needed: u64) -> anyhow::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is RLIM_INFINITY.
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= needed {
        return Ok(soft);
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if hard < needed {
        bail!(
            "{needed} open files are needed, the hard limit is {hard}: raise it (`ulimit -Hn`) or pass a smaller --idle-watches"
        );
    }
    let new = if limit.maximum.is_some() {
        hard
    } else {
        needed
    };
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(new),
            maximum: limit.maximum,
        },
    )
    .with_context(|| format!("raising the open-files limit from {soft} to {new}"))?;
    progress(&format!(
        "watch-idle: raised the open-files limit from {soft} to {new}"
    ));
    Ok(new)
}

/// The soft open-files limit of process `pid` (`Max open files` of `/proc/<pid>/limits`).
fn nofile_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    match line.split_whitespace().nth(3)? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// Where the watchers connect, how, and what they ask for.
struct Target {
    addr: SocketAddr,
    name: ServerName<'static>,
    /// The role's CA and admin client certificate; ALPN `h2` only.
    config: Arc<rustls::ClientConfig>,
    /// The absolute watch URI (h2 takes `:scheme` and `:authority` from it).
    uri: axum::http::Uri,
}

impl Target {
    fn new(role: &RoleProcess, watch_url: &str) -> anyhow::Result<Self> {
        let host_port = role
            .url
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("unexpected server URL {}", role.url))?;
        let addr: SocketAddr = host_port.parse()?;
        let pem = |file: &str| -> anyhow::Result<Vec<u8>> {
            std::fs::read(role.file(file)).with_context(|| format!("reading {file}"))
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem("ca.crt")?) {
            roots.add(cert?)?;
        }
        let chain =
            CertificateDer::pem_slice_iter(&pem("admin.crt")?).collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(&pem("admin.key")?)?;
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Target {
            addr,
            name: ServerName::IpAddress(addr.ip().into()),
            config: Arc::new(config),
            uri: watch_url
                .parse()
                .with_context(|| format!("the watch URL {watch_url}"))?,
        })
    }

    /// One HTTP/2 connection (its driver runs as a task of its own until the connection ends).
    async fn connect(&self) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
        let handshakes = async {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let connector = tokio_rustls::TlsConnector::from(self.config.clone());
            let tls = connector.connect(self.name.clone(), tcp).await?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                bail!("the server did not negotiate HTTP/2");
            }
            let (send, connection) = h2::client::handshake(tls).await?;
            tokio::spawn(async move {
                // Its streams see the error too; the tally counts it there.
                let _ = connection.await;
            });
            anyhow::Ok(send)
        };
        tokio::time::timeout(IDLE_CONNECT_TIMEOUT, handshakes)
            .await
            .map_err(|_| anyhow!("connecting took longer than {IDLE_CONNECT_TIMEOUT:?}"))?
    }
}

/// Counters the connection tasks share with the coordinator.
#[derive(Default)]
struct Tally {
    connected: AtomicUsize,
    /// Connections that failed (their streams count in `open_failed` too).
    connect_failed: AtomicUsize,
    opened: AtomicUsize,
    open_failed: AtomicUsize,
    /// Watchers that had the change.
    arrived: AtomicUsize,
    /// Open watches that ended, failed or sent an ERROR before the change reached them.
    lost: AtomicUsize,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn fail(&self, counter: &AtomicUsize, n: usize, why: String) {
        counter.fetch_add(n, Ordering::AcqRel);
        if let Ok(mut e) = self.first_error.lock() {
            e.get_or_insert(why);
        }
    }

    fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::Acquire)
    }
}

/// Read one watch stream until a MODIFIED line containing `marker` (the change) ends; returns
/// when the chunk that completed it arrived, and the stream (kept open until the run stops).
async fn change_line(
    mut body: h2::RecvStream,
    marker: Arc<[u8]>,
) -> (anyhow::Result<Instant>, h2::RecvStream) {
    let mut line: Vec<u8> = Vec::new();
    loop {
        let chunk = match body.data().await {
            Some(Ok(c)) => c,
            Some(Err(e)) => return (Err(anyhow!("reading the watch: {e}")), body),
            None => return (Err(anyhow!("the server ended the watch")), body),
        };
        let at = Instant::now();
        let _ = body.flow_control().release_capacity(chunk.len());
        let mut rest = &chunk[..];
        while let Some(pos) = memchr::memchr(b'\n', rest) {
            line.extend_from_slice(&rest[..pos]);
            rest = &rest[pos + 1..];
            if memmem::find(&line, b"\"type\":\"ERROR\"").is_some() {
                let text = String::from_utf8_lossy(&line).into_owned();
                return (Err(anyhow!("watch error: {text}")), body);
            }
            if memmem::find(&line, b"\"type\":\"MODIFIED\"").is_some()
                && memmem::find(&line, &marker).is_some()
            {
                return (Ok(at), body);
            }
            line.clear();
        }
        line.extend_from_slice(rest);
    }
}

/// One connection's life: connect (a few at a time, by `gate`), wait for the open phase, open
/// `streams` watches (again a few connections at a time), then wait on all of them for the
/// change until the stop phase. Returns when each watcher had the change.
async fn idle_connection(
    target: Arc<Target>,
    streams: usize,
    gate: Arc<Semaphore>,
    tally: Arc<Tally>,
    marker: Arc<[u8]>,
    mut phase: tokio::sync::watch::Receiver<u8>,
) -> Vec<Instant> {
    let connected = {
        let Ok(_permit) = gate.acquire().await else {
            return Vec::new();
        };
        target.connect().await
    };
    let send = match connected {
        Ok(s) => s,
        Err(e) => {
            tally.connect_failed.fetch_add(1, Ordering::AcqRel);
            tally.fail(&tally.open_failed, streams, format!("connecting: {e:#}"));
            return Vec::new();
        }
    };
    tally.connected.fetch_add(1, Ordering::AcqRel);
    if phase.wait_for(|p| *p >= PHASE_OPEN).await.is_err() {
        return Vec::new();
    }
    let mut bodies = Vec::with_capacity(streams);
    // Taken while a stream is being opened; gone after an HTTP/2 error.
    let mut handle = Some(send);
    {
        let Ok(_permit) = gate.acquire().await else {
            return Vec::new();
        };
        let mut heads = FuturesUnordered::new();
        for k in 0..streams {
            let Some(ready) = handle.take() else {
                break;
            };
            let mut ready = match tokio::time::timeout(REQUEST_TIMEOUT, ready.ready()).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tally.fail(&tally.open_failed, streams - k, format!("HTTP/2: {e}"));
                    break;
                }
                Err(_) => {
                    tally.fail(
                        &tally.open_failed,
                        streams - k,
                        format!("no stream capacity in {REQUEST_TIMEOUT:?}"),
                    );
                    break;
                }
            };
            let request = axum::http::Request::get(target.uri.clone()).body(());
            let sent = match request {
                Ok(r) => ready.send_request(r, true).map_err(anyhow::Error::from),
                Err(e) => Err(e.into()),
            };
            handle = Some(ready);
            match sent {
                Ok((response, _)) => heads.push(tokio::time::timeout(REQUEST_TIMEOUT, response)),
                Err(e) => tally.fail(&tally.open_failed, 1, format!("sending a watch: {e}")),
            }
        }
        while let Some(head) = heads.next().await {
            match head {
                Ok(Ok(resp)) if resp.status() == StatusCode::OK => {
                    bodies.push(resp.into_body());
                    tally.opened.fetch_add(1, Ordering::AcqRel);
                }
                Ok(Ok(resp)) => tally.fail(
                    &tally.open_failed,
                    1,
                    format!("a watch answered {}", resp.status()),
                ),
                Ok(Err(e)) => tally.fail(&tally.open_failed, 1, format!("a watch: {e}")),
                Err(_) => tally.fail(
                    &tally.open_failed,
                    1,
                    format!("no watch response head in {REQUEST_TIMEOUT:?}"),
                ),
            }
        }
    }
    let mut waits: FuturesUnordered<_> = bodies
        .into_iter()
        .map(|b| change_line(b, marker.clone()))
        .collect();
    let mut arrivals = Vec::with_capacity(waits.len());
    // The streams stay open until the stop phase, also after their change arrived.
    let mut kept = Vec::with_capacity(waits.len());
    let mut stopped = false;
    while !stopped {
        tokio::select! {
            _ = phase.wait_for(|p| *p >= PHASE_STOP) => stopped = true,
            next = waits.next() => match next {
                Some((Ok(at), body)) => {
                    arrivals.push(at);
                    kept.push(body);
                    tally.arrived.fetch_add(1, Ordering::AcqRel);
                }
                Some((Err(e), _)) => tally.fail(&tally.lost, 1, format!("{e:#}")),
                None => break,
            },
        }
    }
    if !stopped {
        let _ = phase.wait_for(|p| *p >= PHASE_STOP).await;
    }
    drop(kept);
    drop(handle);
    arrivals
}

/// Wait until `done()` or `deadline`, reporting `what()` every 5 s.
async fn wait_until(
    deadline: Instant,
    mut done: impl FnMut() -> bool,
    what: impl Fn() -> String,
) -> bool {
    let mut next_report = Instant::now() + Duration::from_secs(5);
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now > deadline {
            return false;
        }
        if now > next_report {
            progress(&what());
            next_report = now + Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn opt_kib(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |b| format!("{:.1} KiB", b / 1024.0))
}

/// The scenario: see the module documentation.
pub(crate) async fn scenario_watch_idle(ctx: &mut Ctx) -> anyhow::Result<()> {
    let watches = ctx.args.idle_watches;
    let connections = watches.div_ceil(STREAMS_PER_CONNECTION);
    let settle = if ctx.args.quick {
        IDLE_SETTLE_QUICK
    } else {
        IDLE_SETTLE
    };
    let started = Instant::now();
    let needed = connections as u64 + FD_MARGIN;
    let own_nofile = raise_nofile(needed)?;
    progress("watch-idle: starting the embedded `serve --seed examples/cloud-co`");
    let mut setup = Setup::spawn_embedded()?;
    setup.wait_ready().await?;
    let rv = setup.wait_for_flavors().await?;
    let server_nofile = nofile_of(setup.roles[setup.vw].child.id());
    if server_nofile.is_some_and(|n| n < needed) {
        bail!(
            "the server may open {} files, {needed} are needed",
            server_nofile.unwrap_or(0)
        );
    }
    let watch_url = format!(
        "{}?watch=true&resourceVersion={rv}&timeoutSeconds={IDLE_WATCH_SECONDS}",
        setup.collection_url()
    );
    let target = Arc::new(Target::new(&setup.roles[setup.vw], &watch_url)?);
    let rss_before = settled_rss(&setup.roles[setup.vw], settle).await;
    progress(&format!(
        "watch-idle: server RSS {}; opening {connections} HTTP/2 connections ({IDLE_OPENING} at a time)",
        opt_mib(rss_before)
    ));

    // Connections first, then their streams: the RSS between the two is the connections'.
    let tally = Arc::new(Tally::default());
    let gate = Arc::new(Semaphore::new(IDLE_OPENING));
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(PHASE_CONNECT);
    let marker: Arc<[u8]> = Arc::from(format!("\"cores\":{IDLE_CORES}").into_bytes());
    let opening = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let streams = STREAMS_PER_CONNECTION.min(watches - c * STREAMS_PER_CONNECTION);
            tokio::spawn(idle_connection(
                target.clone(),
                streams,
                gate.clone(),
                tally.clone(),
                marker.clone(),
                phase_rx.clone(),
            ))
        })
        .collect();
    let all_connected = wait_until(
        opening + IDLE_OPEN_LIMIT,
        || {
            Tally::get(&tally.connected) + Tally::get(&tally.connect_failed) >= connections
                || tasks.iter().all(|t| t.is_finished())
        },
        || {
            format!(
                "watch-idle: {} of {connections} connections open",
                Tally::get(&tally.connected)
            )
        },
    )
    .await;
    let connect_time = opening.elapsed();
    let connected = Tally::get(&tally.connected);
    if connected == 0 {
        let why = tally.first_error.lock().ok().and_then(|e| e.clone());
        bail!(
            "no watcher connection opened: {}",
            why.unwrap_or_else(|| "no error recorded".into())
        );
    }
    let rss_connected = settled_rss(&setup.roles[setup.vw], settle).await;
    progress(&format!(
        "watch-idle: {connected} connections in {:.2} s{}, server RSS {}; opening {watches} watches",
        connect_time.as_secs_f64(),
        if all_connected {
            ""
        } else {
            " (gave up waiting)"
        },
        opt_mib(rss_connected)
    ));
    let opening = Instant::now();
    let _ = phase_tx.send(PHASE_OPEN);
    let all_open = wait_until(
        opening + IDLE_OPEN_LIMIT,
        || {
            Tally::get(&tally.opened) + Tally::get(&tally.open_failed) >= watches
                || tasks.iter().all(|t| t.is_finished())
        },
        || {
            format!(
                "watch-idle: {} of {watches} watches open ({} failed), server RSS {}",
                Tally::get(&tally.opened),
                Tally::get(&tally.open_failed),
                opt_mib(setup.roles[setup.vw].rss())
            )
        },
    )
    .await;
    let open_time = opening.elapsed();
    let opened = Tally::get(&tally.opened);
    setup.roles[setup.vw].check_alive()?;
    if opened == 0 {
        let why = tally.first_error.lock().ok().and_then(|e| e.clone());
        bail!(
            "no watch opened: {}",
            why.unwrap_or_else(|| "no error recorded".into())
        );
    }
    let rss_open = settled_rss(&setup.roles[setup.vw], settle).await;
    let lost_idle = Tally::get(&tally.lost);
    let harness_rss = rss();
    progress(&format!(
        "watch-idle: {opened} watches open in {:.2} s{}, server RSS {} (settled); one change",
        open_time.as_secs_f64(),
        if all_open { "" } else { " (gave up waiting)" },
        opt_mib(rss_open)
    ));

    // One change, to all of them.
    let writer = setup.roles[setup.writer].client(Some(REQUEST_TIMEOUT))?;
    let patch = json!({"spec": {"cores": IDLE_CORES}}).to_string();
    let delivery_limit = EVENT_TIMEOUT + Duration::from_micros(500 * opened as u64);
    let cpu_before = setup.roles[setup.vw].cpu_seconds();
    let threads_before = thread_cpu();
    let sent = Instant::now();
    let resp = writer
        .patch(setup.write_url())
        .header(CONTENT_TYPE, "application/merge-patch+json")
        .body(patch)
        .send()
        .await
        .with_context(|| format!("PATCH {}", setup.write_url()))?;
    let ack = Instant::now();
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "PATCH {} answered {status}: {}",
            setup.write_url(),
            String::from_utf8_lossy(&body)
        );
    }
    let all_arrived = wait_until(
        sent + delivery_limit,
        || Tally::get(&tally.arrived) + Tally::get(&tally.lost) >= opened,
        || {
            format!(
                "watch-idle: {} of {opened} watchers have the change",
                Tally::get(&tally.arrived)
            )
        },
    )
    .await;
    let delivered = sent.elapsed();
    let cpu_after = setup.roles[setup.vw].cpu_seconds();
    let harness_cpu = thread_cpu().since(threads_before);
    let peak = setup.roles[setup.vw].peak_rss();
    setup.roles[setup.vw].check_alive()?;
    let _ = phase_tx.send(PHASE_STOP);
    let mut delays = Vec::with_capacity(opened);
    let mut unfinished = 0usize;
    for t in tasks {
        let abort = t.abort_handle();
        match tokio::time::timeout(REQUEST_TIMEOUT, t).await {
            Ok(Ok(arrivals)) => {
                delays.extend(arrivals.iter().map(|at| at.saturating_duration_since(sent)))
            }
            Ok(Err(_)) => unfinished += 1,
            Err(_) => {
                abort.abort();
                unfinished += 1;
            }
        }
    }
    delays.sort_unstable();

    // Rows.
    let per_watch = match (rss_before, rss_open) {
        (Some(b), Some(a)) => Some((a as f64 - b as f64) / opened as f64),
        _ => None,
    };
    let per_connection = match (rss_before, rss_connected) {
        (Some(b), Some(c)) => Some((c as f64 - b as f64) / connected as f64),
        _ => None,
    };
    let per_stream = match (rss_connected, rss_open) {
        (Some(c), Some(a)) => Some((a as f64 - c as f64) / opened as f64),
        _ => None,
    };
    let failed_open = Tally::get(&tally.open_failed);
    Row {
        scenario: "idle watchers",
        what: format!(
            "`serve` process (mimalloc + mapped large allocations, default storage): {opened} of {watches} watches of the VW collection open and idle, HTTP/2, {connected} connections × {STREAMS_PER_CONNECTION} streams{}",
            if failed_open > 0 {
                format!(", {failed_open} failed to open")
            } else {
                String::new()
            }
        ),
        result: format!(
            "server VmRSS {} before, {} with the connections alone, {} with every watch open (settled): {} per idle watch ({} per connection, {} per stream); kernel socket memory is not in RSS",
            opt_mib(rss_before),
            opt_mib(rss_connected),
            opt_mib(rss_open),
            opt_kib(per_watch),
            opt_kib(per_connection),
            opt_kib(per_stream)
        ),
        p50: String::new(),
        p99: String::new(),
        rss: opt_mib(peak),
        ratio: String::new(),
        goal: format!(
            "≤ 8 KiB per idle watch {}",
            verdict(
                failed_open == 0 && per_watch.is_some_and(|b| b <= IDLE_GOAL_BYTES)
            )
        ),
    }
    .print();
    let arrived = delays.len();
    let server_cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => format!("{:.2} s", a - b),
        _ => "n/a".into(),
    };
    Row {
        scenario: "idle watchers: one change",
        what: format!(
            "one merge PATCH of `cpu-small` `spec.cores` in `root:cloudco` (workspaces API of the same process) to {opened} idle watches"
        ),
        result: format!(
            "{arrived} / {opened} watchers had it{}; from the PATCH sent: first {}, last {}; server CPU {server_cpu}",
            if all_arrived {
                String::new()
            } else {
                format!(" (gave up after {:.0} s)", delivery_limit.as_secs_f64())
            },
            ms(delays.first().copied().unwrap_or_default()),
            ms(delays.last().copied().unwrap_or_default())
        ),
        p50: ms(percentile(&delays, 0.5)),
        p99: ms(percentile(&delays, 0.99)),
        rss: String::new(),
        ratio: String::new(),
        goal: format!(
            "every watcher gets it {}; p99 reported",
            verdict(arrived == opened && failed_open == 0)
        ),
    }
    .print();

    // Notes.
    ctx.notes.push(format!(
        "watch-idle: {connected} connections ({} failed) in {:.2} s and {opened} watches from resourceVersion {rv} in {:.2} s, {IDLE_OPENING} connections opening at a time; each RSS reading after {:.1} s idle, then until two readings 250 ms apart were within 1%. The server is the binary cargo built for the bench (`#[global_allocator]` `allocator::Allocator`: mimalloc, allocations of 1 MiB or more mapped apart; `src/main.rs`); its RSS is the heap and stacks only: the kernel's socket buffers of its {connected} connections are not in it. Open-files limit: harness {}, server {}. Harness RSS with every watch open: {} (lean h2 client).",
        Tally::get(&tally.connect_failed),
        connect_time.as_secs_f64(),
        open_time.as_secs_f64(),
        settle.as_secs_f64(),
        own_nofile,
        server_nofile.map_or_else(|| "n/a".into(), |n| n.to_string()),
        opt_mib(harness_rss)
    ));
    ctx.notes.push(format!(
        "watch-idle: the change: PATCH round trip {}; all delivered {:.2} s after the PATCH was sent; server CPU from the PATCH until then {server_cpu}; harness CPU (its watchers read {arrived} lines) {:.2} s; watches that ended before the change: {lost_idle} while idle, {} in all; tasks not finished at the stop: {unfinished}. First error: {}.",
        ms(ack - sent),
        delivered.as_secs_f64(),
        harness_cpu.rest,
        Tally::get(&tally.lost),
        tally
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "none".into())
    ));
    progress(&format!(
        "watch-idle: done in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    drop(setup);
    Ok(())
}
