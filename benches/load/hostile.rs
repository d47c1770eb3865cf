//! `--scenario hostile` (run by name only; `all` and `--quick` leave it out): the embedded
//! `serve --seed examples/cloud-co` as a child process, attacked on its real socket while
//! well-behaved clients keep working. The well-behaved side, all along: a real `kubectl get
//! cpuflavors` in the consumer workspace `root:team-a`, one after the other; a LIST of the same
//! flavors through the virtual workspace (reqwest, one kept-alive connection, 10 per second); a
//! writer that PATCHes `cpu-small` 50 times a second with a 16 KiB description (so watch events
//! pile up); a watcher that reads every event. The attacks, one after the other, after a
//! baseline: 1,000 stalled connections, 100 watchers that never read, 1 MiB query strings,
//! 10 MiB request bodies, garbage instead of a TLS ClientHello, header floods. Each row gives
//! what the server answered, the well-behaved client's latency against the baseline, its
//! failures and the server's RSS. Everything is bounded: loopback only, a fixed number of
//! connections and attempts, about two minutes in all. The attacks speak TLS and HTTP/1.1 by
//! hand (tokio-rustls), since no HTTP client sends such requests.

use super::*;

use std::future::Future;
use std::net::SocketAddr;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;

/// How long each attack (and the baseline, and the run after the attacks) lasts without
/// `--duration`.
const PHASE: Duration = Duration::from_secs(10);
/// The stalled connections are held this much longer than a phase: past the server's TLS
/// handshake timeout (10 s).
const STALL_EXTRA: Duration = Duration::from_secs(5);
/// Pause after each attack before the next phase (not measured).
const COOL_DOWN: Duration = Duration::from_secs(2);
/// Stalled connections: a third send nothing, a third half a ClientHello, a third half a
/// request after the TLS handshake.
const STALLED_CONNECTIONS: usize = 1_000;
/// Watch requests on connections that are never read.
const DEAF_WATCHERS: usize = 100;
/// Size of the oversized query string.
const QUERY_BYTES: usize = 1 << 20;
/// Size of the oversized request body.
const BODY_BYTES: usize = 10 << 20;
/// Headers of the header flood.
const FLOOD_HEADERS: usize = 10_000;
/// Size of the single oversized header.
const HEADER_BYTES: usize = 1 << 20;
/// Random bytes sent instead of a ClientHello.
const GARBAGE_BYTES: usize = 16 << 10;
/// Concurrent attacker tasks of the oversize and garbage attacks.
const ATTACKERS: usize = 4;
/// Attempts at most per attack: 1 MiB queries, header floods.
const MAX_ATTEMPTS: usize = 200;
/// Attempts at most of the 10 MiB bodies (at most 500 MiB sent).
const MAX_BODY_ATTEMPTS: usize = 50;
/// Attempts at most of the garbage TLS attack.
const MAX_GARBAGE_ATTEMPTS: usize = 1_000;
/// How long an attacker waits for the server's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the deaf watchers' connections are read at the end (to see what piled up).
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// PATCHes of `cpu-small` per second, all along.
const HOSTILE_WRITES_PER_SECOND: f64 = 50.0;
/// Length of the description each PATCH writes.
const DESCRIPTION_BYTES: usize = 16 << 10;
/// Write `k` sets `spec.cores = HOSTILE_CORES_BASE + k`.
const HOSTILE_CORES_BASE: u64 = 1_000;
/// LISTs per second of the well-behaved reqwest client.
const LISTS_PER_SECOND: f64 = 10.0;
/// A kubectl call taking longer than this is a failure.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(30);
/// The consumer workspace the well-behaved clients read.
const TEAM_A: &str = "root:team-a";
/// LIST of the flavors in the consumer workspace (the workspaces API).
const TEAM_A_LIST: &str = "/clusters/root:team-a/apis/cloud.example.com/v1/cpuflavors";
/// Where the writer PATCHes and the oversized bodies are POSTed (the provider workspace).
const PROVIDER_FLAVORS: &str = "/clusters/root:cloudco/apis/cloud.example.com/v1/cpuflavors";

// ---------------------------------------------------------------------------------------------
// TLS and HTTP/1.1 by hand

/// TLS connections to the server: anonymous, or with its admin client certificate; HTTP/1.1
/// by ALPN.
struct Raw {
    addr: SocketAddr,
    name: ServerName<'static>,
    anonymous: Arc<rustls::ClientConfig>,
    admin: Arc<rustls::ClientConfig>,
}

/// A TLS connection the attacks opened.
type Tls = tokio_rustls::client::TlsStream<TcpStream>;

impl Raw {
    /// Client configurations from the role's `ca.crt`, `admin.crt` and `admin.key`.
    fn new(role: &RoleProcess) -> anyhow::Result<Self> {
        let host_port = role
            .url
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("unexpected server URL {}", role.url))?;
        let addr: SocketAddr = host_port.parse()?;
        let name = ServerName::IpAddress(addr.ip().into());
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
        let alpn = |mut c: rustls::ClientConfig| {
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(c)
        };
        let anonymous = alpn(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        );
        let admin = alpn(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)?,
        );
        Ok(Raw {
            addr,
            name,
            anonymous,
            admin,
        })
    }

    /// A TCP connection to the server (with `TCP_NODELAY`).
    async fn tcp(&self) -> anyhow::Result<TcpStream> {
        let tcp = tokio::time::timeout(ANSWER_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| anyhow!("connect timed out"))??;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    /// A TLS connection, with the admin certificate or anonymous.
    async fn tls(&self, admin: bool) -> anyhow::Result<Tls> {
        let config = if admin { &self.admin } else { &self.anonymous };
        let tcp = self.tcp().await?;
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        Ok(
            tokio::time::timeout(ANSWER_TIMEOUT, connector.connect(self.name.clone(), tcp))
                .await
                .map_err(|_| anyhow!("TLS handshake timed out"))??,
        )
    }

    /// The first flight of a TLS client: a ClientHello record, as rustls writes it.
    fn client_hello(&self) -> anyhow::Result<Vec<u8>> {
        let mut conn = rustls::ClientConnection::new(self.anonymous.clone(), self.name.clone())?;
        let mut out = Vec::new();
        conn.write_tls(&mut out)?;
        Ok(out)
    }

    /// `127.0.0.1:<port>`, for the `Host` header.
    fn host(&self) -> String {
        self.addr.to_string()
    }
}

/// The name of a TLS alert description (RFC 8446 §6).
fn alert_name(code: u8) -> String {
    let name = match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        47 => "illegal_parameter",
        50 => "decode_error",
        70 => "protocol_version",
        80 => "internal_error",
        109 => "missing_extension",
        _ => "",
    };
    if name.is_empty() {
        format!("TLS alert {code}")
    } else {
        format!("TLS alert {name}")
    }
}

/// What the server sent back on `s` within `timeout`, in words: an HTTP status (`431 Status`
/// when its body is a Kubernetes Status), a TLS alert (on a plain TCP stream) and what
/// followed it, or how the connection ended (`closed, no answer`, `reset, no answer`,
/// `no answer in 5 s`); and whether the connection was still open, silent, at the end.
async fn answer<S: AsyncRead + Unpin>(s: &mut S, timeout: Duration) -> (String, bool) {
    let mut deadline = Instant::now() + timeout;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut head_seen = false;
    let ended = loop {
        if !head_seen && memchr::memmem::find(&buf, b"\r\n\r\n").is_some() {
            // The head is in: give the start of the body a moment.
            head_seen = true;
            deadline = deadline.min(Instant::now() + Duration::from_millis(300));
        }
        if buf.len() >= 16 * 1024 {
            break None;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => break Some(format!("no answer in {} s", timeout.as_secs())),
            Ok(Ok(0)) => break Some("closed, no answer".to_string()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                break Some("reset, no answer".into());
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break Some("closed (no close_notify), no answer".into());
            }
            Ok(Err(e)) => break Some(format!("error: {e}")),
        }
    };
    let timed_out = ended.as_deref().is_some_and(|e| e.starts_with("no answer"));
    if buf.starts_with(b"HTTP/1.") {
        let code = buf
            .split(|b| *b == b' ')
            .nth(1)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_default();
        let body = memchr::memmem::find(&buf, b"\r\n\r\n").map_or(&buf[..0], |p| &buf[p + 4..]);
        let kind = if memchr::memmem::find(body, b"\"kind\":\"Status\"").is_some() {
            " Status"
        } else if body.is_empty() {
            " (empty body)"
        } else {
            " (not a Status)"
        };
        return (format!("{code}{kind}"), false);
    }
    if buf.first() == Some(&0x15) && buf.len() >= 7 {
        let then = ended
            .as_deref()
            .map_or("still open", |e| e.trim_end_matches(", no answer"));
        return (format!("{}, then {then}", alert_name(buf[6])), false);
    }
    if !buf.is_empty() {
        return (format!("{} bytes that are not HTTP", buf.len()), false);
    }
    (ended.unwrap_or_default(), timed_out)
}

/// One attempt of an attack: the attempt's number in, the outcome in words out.
type Attempt = fn(Arc<Raw>, usize) -> std::pin::Pin<Box<dyn Future<Output = String> + Send>>;

/// Outcomes by description, with how often each happened.
type Outcomes = BTreeMap<String, usize>;

/// `outcome ×count; …`, or `nothing`.
fn outcomes_text(o: &Outcomes) -> String {
    if o.is_empty() {
        return "nothing".into();
    }
    o.iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Run `attempt(k)` for k = 0, 1, … `max` − 1 from `ATTACKERS` tasks at once, attempt k not
/// before k/`max` of the way to `until` (so the attempts spread over the phase), and none
/// after `until`; returns the outcomes and the number of attempts.
async fn repeat<F, Fut>(until: Instant, max: usize, attempt: F) -> (Outcomes, usize)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = String> + Send,
{
    let attempt = Arc::new(attempt);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let span = until.saturating_duration_since(start);
    let tasks: Vec<_> = (0..ATTACKERS)
        .map(|_| {
            let (attempt, next) = (attempt.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Outcomes::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= max {
                        break;
                    }
                    tokio::time::sleep_until(start + span.mul_f64(k as f64 / max as f64)).await;
                    if Instant::now() >= until {
                        break;
                    }
                    *out.entry(attempt(k).await).or_default() += 1;
                }
                out
            })
        })
        .collect();
    let mut all = Outcomes::new();
    for t in tasks {
        for (k, n) in t.await.unwrap_or_default() {
            *all.entry(k).or_default() += n;
        }
    }
    let n = all.values().sum();
    (all, n)
}

// ---------------------------------------------------------------------------------------------
// The attacks

/// The kinds of stalled connection, in the order connections are assigned to them.
const STALL_KINDS: [&str; 3] = [
    "silent (TCP only)",
    "half a ClientHello",
    "half a request head (after the TLS handshake)",
];

/// Stalled connections with half a request head that are watched until the scenario ends, to
/// see how long the server keeps them.
const STALL_PROBES: usize = 10;

/// A stalled connection watched until the scenario ends: resolves to how the server ended it
/// and after how long since it stalled (`None`: still open when aborted).
type Probe = tokio::task::JoinHandle<(String, Duration)>;

/// Open `STALLED_CONNECTIONS` connections that stall, and hold them until `until`: per kind,
/// how the server ended them (and after how long) or that they were still open. The first
/// `STALL_PROBES` connections with half a request head that are still open then are not
/// closed but handed back as probes.
async fn stalled(
    raw: Arc<Raw>,
    until: Instant,
) -> anyhow::Result<(Vec<(&'static str, Outcomes)>, Vec<Probe>)> {
    enum Held {
        Tcp(TcpStream),
        Tls(Box<Tls>),
    }
    let hello = Arc::new(raw.client_hello()?);
    let mut tasks = Vec::with_capacity(STALLED_CONNECTIONS);
    for i in 0..STALLED_CONNECTIONS {
        let (raw, hello) = (raw.clone(), hello.clone());
        tasks.push(tokio::spawn(async move {
            let kind = i % STALL_KINDS.len();
            let opened: anyhow::Result<Held> = async {
                if kind < 2 {
                    let mut tcp = raw.tcp().await?;
                    if kind == 1 {
                        tcp.write_all(&hello[..hello.len() / 2]).await?;
                    }
                    Ok(Held::Tcp(tcp))
                } else {
                    let mut tls = raw.tls(false).await?;
                    let head = format!(
                        "GET {TEAM_A_LIST} HTTP/1.1\r\nHost: {}\r\nUser-Agent: slow",
                        raw.host()
                    );
                    tls.write_all(head.as_bytes()).await?;
                    tls.flush().await?;
                    Ok(Held::Tls(Box::new(tls)))
                }
            }
            .await;
            let mut held = match opened {
                Ok(h) => h,
                Err(e) => return (kind, format!("could not stall: {e:#}"), None),
            };
            let sent = Instant::now();
            let wait = until.saturating_duration_since(sent);
            let (a, open) = match &mut held {
                Held::Tcp(t) => answer(t, wait).await,
                Held::Tls(t) => answer(t.as_mut(), wait).await,
            };
            let age = sent.elapsed().as_secs_f64();
            if !open {
                return (kind, format!("{a} after {age:.0} s"), None);
            }
            let outcome = format!("still open when the attack ended, {age:.0} s after stalling");
            match held {
                Held::Tls(mut tls) if i / STALL_KINDS.len() < STALL_PROBES => {
                    let probe = tokio::spawn(async move {
                        let (a, _) = answer(tls.as_mut(), Duration::from_secs(3600)).await;
                        (a, sent.elapsed())
                    });
                    (kind, outcome, Some(probe))
                }
                _ => (kind, outcome, None),
            }
        }));
    }
    let mut out: Vec<(&'static str, Outcomes)> =
        STALL_KINDS.iter().map(|k| (*k, Outcomes::new())).collect();
    let mut probes = Vec::new();
    for t in tasks {
        if let Ok((kind, outcome, probe)) = t.await {
            *out[kind].1.entry(outcome).or_default() += 1;
            probes.extend(probe);
        }
    }
    Ok((out, probes))
}

/// How the stall probes ended, or that they are still open, now.
async fn probes_text(probes: Vec<Probe>, stalled_at: Instant) -> String {
    let n = probes.len();
    let mut out = Outcomes::new();
    for p in probes {
        if p.is_finished() {
            let (a, after) = p.await.unwrap_or_default();
            *out.entry(format!("{a} after {:.0} s", after.as_secs_f64()))
                .or_default() += 1;
        } else {
            p.abort();
            *out.entry(format!(
                "still open after {:.0} s",
                stalled_at.elapsed().as_secs_f64()
            ))
            .or_default() += 1;
        }
    }
    format!("{n} probes: {}", outcomes_text(&out))
}

/// What the deaf watchers' connections held when they were finally read.
struct Deaf {
    /// Response status of each connection that answered.
    heads: Outcomes,
    /// Connections that could not even send the request.
    failed: Outcomes,
    /// Bytes read per connection at the end, sorted.
    bytes: Vec<u64>,
    /// Connections whose stream had an ERROR event.
    errors: usize,
    /// Connections the server had closed (end of stream while draining).
    closed: usize,
}

/// Send `DEAF_WATCHERS` watch requests for `path`, none of which is read; returns the
/// connections and why the others could not be opened.
async fn open_deaf(raw: &Raw, path: &str) -> (Vec<Tls>, Outcomes) {
    let mut conns = Vec::with_capacity(DEAF_WATCHERS);
    let mut failed = Outcomes::new();
    for _ in 0..DEAF_WATCHERS {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", raw.host());
        match raw.tls(true).await {
            Ok(mut tls) => match tls.write_all(request.as_bytes()).await {
                Ok(()) => conns.push(tls),
                Err(e) => *failed.entry(format!("sending: {e}")).or_default() += 1,
            },
            Err(e) => *failed.entry(format!("connecting: {e:#}")).or_default() += 1,
        }
    }
    (conns, failed)
}

/// Read each deaf watcher's connection for what piled up: until it is idle for a second, at
/// most `DRAIN_LIMIT` in all.
async fn drain_deaf(conns: Vec<Tls>, failed: Outcomes) -> Deaf {
    let drain_until = Instant::now() + DRAIN_LIMIT;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut tls| {
            tokio::spawn(async move {
                let mut chunk = vec![0u8; 64 * 1024];
                let mut bytes = 0u64;
                let mut head = String::new();
                let mut tail: Vec<u8> = Vec::new();
                let mut error = false;
                let mut closed = false;
                loop {
                    let idle = (Instant::now() + Duration::from_secs(1)).min(drain_until);
                    match tokio::time::timeout_at(idle, tls.read(&mut chunk)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => {
                            closed = true;
                            break;
                        }
                        Ok(Ok(n)) => {
                            if bytes == 0 {
                                head = String::from_utf8_lossy(&chunk[..n.min(12)])
                                    .split(' ')
                                    .nth(1)
                                    .unwrap_or("?")
                                    .to_string();
                            }
                            bytes += n as u64;
                            // Keep a little of the previous read, for a match across reads.
                            tail.extend_from_slice(&chunk[..n]);
                            if memchr::memmem::find(&tail, b"\"type\":\"ERROR\"").is_some() {
                                error = true;
                            }
                            let seen = tail.len().saturating_sub(32);
                            tail.drain(..seen);
                        }
                        Err(_) => break,
                    }
                }
                (head, bytes, error, closed)
            })
        })
        .collect();
    let mut out = Deaf {
        heads: Outcomes::new(),
        failed,
        bytes: Vec::new(),
        errors: 0,
        closed: 0,
    };
    for t in tasks {
        if let Ok((head, bytes, error, closed)) = t.await {
            let head = if head.is_empty() {
                "nothing".into()
            } else {
                head
            };
            *out.heads.entry(head).or_default() += 1;
            out.bytes.push(bytes);
            out.errors += usize::from(error);
            out.closed += usize::from(closed);
        }
    }
    out.bytes.sort_unstable();
    out
}

/// One request with a 1 MiB query string (a label selector) on an admin TLS connection.
async fn huge_query(raw: Arc<Raw>) -> String {
    let mut tls = match raw.tls(true).await {
        Ok(t) => t,
        Err(e) => return format!("could not connect: {e:#}"),
    };
    let mut request = format!("GET {TEAM_A_LIST}?labelSelector=").into_bytes();
    request.resize(request.len() + QUERY_BYTES, b'a');
    request.extend_from_slice(format!(" HTTP/1.1\r\nHost: {}\r\n\r\n", raw.host()).as_bytes());
    let cut = tls.write_all(&request).await.is_err();
    let (a, _) = answer(&mut tls, ANSWER_TIMEOUT).await;
    if cut {
        format!("{a} (the server stopped reading the request)")
    } else {
        a
    }
}

/// One POST of a 10 MiB body (with Content-Length when `k` is even, chunked when odd) on an
/// admin TLS connection, the body written while the answer is awaited.
async fn huge_body(raw: Arc<Raw>, k: usize) -> String {
    let chunked = k % 2 == 1;
    let variant = if chunked { "chunked" } else { "Content-Length" };
    let tls = match raw.tls(true).await {
        Ok(t) => t,
        Err(e) => return format!("{variant}: could not connect: {e:#}"),
    };
    let (mut rd, mut wr) = tokio::io::split(tls);
    let sent = Arc::new(AtomicU64::new(0));
    let length = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {BODY_BYTES}")
    };
    let head = format!(
        "POST {PROVIDER_FLAVORS} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{length}\r\n\r\n",
        raw.host()
    );
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            wr.write_all(head.as_bytes()).await?;
            let piece = vec![b'a'; 64 * 1024];
            while (sent.load(Ordering::Relaxed) as usize) < BODY_BYTES {
                if chunked {
                    wr.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                        .await?;
                }
                wr.write_all(&piece).await?;
                if chunked {
                    wr.write_all(b"\r\n").await?;
                }
                sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
            }
            if chunked {
                wr.write_all(b"0\r\n\r\n").await?;
            }
            wr.flush().await?;
            anyhow::Ok(wr)
        })
    };
    let (a, _) = answer(&mut rd, ANSWER_TIMEOUT * 2).await;
    let at = sent.load(Ordering::Relaxed) as usize;
    writer.abort();
    let when = if at >= BODY_BYTES {
        "after the whole body"
    } else {
        "before the whole body was sent"
    };
    format!("{variant}: {a} {when}")
}

/// Random bytes instead of a ClientHello on a fresh TCP connection.
async fn garbage_tls(raw: Arc<Raw>, k: usize) -> String {
    let mut tcp = match raw.tcp().await {
        Ok(t) => t,
        Err(e) => return format!("could not connect: {e:#}"),
    };
    // xorshift64, seeded per attempt.
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (k as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let bytes: Vec<u8> = (0..GARBAGE_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let cut = tcp.write_all(&bytes).await.is_err();
    let (a, _) = answer(&mut tcp, ANSWER_TIMEOUT).await;
    if cut {
        format!("{a} (the server stopped reading)")
    } else {
        a
    }
}

/// A request head with `FLOOD_HEADERS` headers (`k` even) or one header of 1 MiB (`k` odd) on
/// an admin TLS connection.
async fn header_flood(raw: Arc<Raw>, k: usize) -> String {
    let many = k.is_multiple_of(2);
    let variant = if many {
        "10,000 headers"
    } else {
        "one 1 MiB header"
    };
    let mut tls = match raw.tls(true).await {
        Ok(t) => t,
        Err(e) => return format!("{variant}: could not connect: {e:#}"),
    };
    let mut request = format!("GET {TEAM_A_LIST} HTTP/1.1\r\nHost: {}\r\n", raw.host());
    if many {
        for i in 0..FLOOD_HEADERS {
            request.push_str(&format!("X-Flood-{i}: {i}\r\n"));
        }
    } else {
        request.push_str("X-Big: ");
        request.push_str(&"a".repeat(HEADER_BYTES));
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let cut = tls.write_all(request.as_bytes()).await.is_err();
    let (a, _) = answer(&mut tls, ANSWER_TIMEOUT).await;
    if cut {
        format!("{variant}: {a} (the server stopped reading the request)")
    } else {
        format!("{variant}: {a}")
    }
}

// ---------------------------------------------------------------------------------------------
// The well-behaved side

/// One request of a well-behaved client: when it started, how long it took, whether it worked.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    took: Duration,
    ok: bool,
}

/// The samples of a well-behaved loop, and its first failure.
#[derive(Default)]
struct Samples {
    all: Vec<Sample>,
    first_failure: Option<String>,
}

impl Samples {
    fn push(&mut self, at: Instant, result: Result<(), String>) {
        let ok = result.is_ok();
        if let Err(e) = result {
            self.first_failure.get_or_insert(e);
        }
        self.all.push(Sample {
            at,
            took: at.elapsed(),
            ok,
        });
    }

    /// Latencies (sorted) and failures of the samples that started in `[from, to)`.
    fn window(&self, from: Instant, to: Instant) -> (Vec<Duration>, usize) {
        let mut lat = Vec::new();
        let mut failed = 0;
        for s in self.all.iter().filter(|s| s.at >= from && s.at < to) {
            if s.ok {
                lat.push(s.took);
            } else {
                failed += 1;
            }
        }
        lat.sort_unstable();
        (lat, failed)
    }
}

/// How kubectl is run: binary, kubeconfig, discovery cache.
#[derive(Clone)]
struct Kubectl {
    path: PathBuf,
    kubeconfig: PathBuf,
    cache_dir: PathBuf,
}

impl Kubectl {
    /// `kubectl --context root:team-a get cpuflavors`; fails unless it exits 0 and lists
    /// `cpu-small`.
    async fn get(&self) -> Result<(), String> {
        let out = tokio::time::timeout(
            KUBECTL_TIMEOUT,
            tokio::process::Command::new(&self.path)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(["--context", TEAM_A, "--cache-dir"])
                .arg(&self.cache_dir)
                .args(["--request-timeout", "30s", "get", "cpuflavors"])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| format!("kubectl took more than {KUBECTL_TIMEOUT:?}"))?
        .map_err(|e| format!("running kubectl: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.contains("cpu-small") {
            Ok(())
        } else {
            Err(format!(
                "kubectl ({}): {}{}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// `$KUBECTL`, else `target/tools/kubectl`, installed there by the shared script on first use.
fn find_kubectl() -> Result<PathBuf, String> {
    if let Ok(k) = std::env::var("KUBECTL") {
        return Ok(PathBuf::from(k));
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dest = repo.join("target/tools");
    let path = dest.join("kubectl");
    if path.exists() {
        return Ok(path);
    }
    progress("hostile: installing kubectl with ../shared/tools/install-kubectl.sh");
    let out = std::process::Command::new("bash")
        .arg(repo.join("../shared/tools/install-kubectl.sh"))
        .arg(&dest)
        .output()
        .map_err(|e| format!("running install-kubectl.sh: {e}"))?;
    if out.status.success() && path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "install-kubectl.sh failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Run `kubectl get` back to back until `stop`.
async fn kubectl_loop(kubectl: Kubectl, mut stop: tokio::sync::watch::Receiver<bool>) -> Samples {
    let mut samples = Samples::default();
    while !*stop.borrow() {
        let at = Instant::now();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            r = kubectl.get() => samples.push(at, r),
        }
    }
    samples
}

/// LIST `url` `LISTS_PER_SECOND` times a second (one at a time, one kept-alive connection)
/// until `stop`.
async fn list_loop(
    client: reqwest::Client,
    url: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Samples {
    let mut samples = Samples::default();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / LISTS_PER_SECOND));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = ticks.tick() => {}
        }
        let at = Instant::now();
        let result = async {
            let resp = client.get(&url).send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp.bytes().await.map_err(|e| e.to_string())?;
            if status.is_success() && memchr::memmem::find(&body, b"cpu-small").is_some() {
                Ok(())
            } else {
                Err(format!("LIST answered {status}"))
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            r = result => samples.push(at, r),
        }
    }
    samples
}

/// What the writer did: PATCHes acknowledged, failed, and the last acknowledged `k`.
#[derive(Default)]
struct Written {
    ok: u64,
    failed: u64,
    last: Option<u64>,
    first_failure: Option<String>,
}

/// PATCH `cpu-small` (cores and a 16 KiB description) `HOSTILE_WRITES_PER_SECOND` times a
/// second, one at a time, until `stop`.
async fn write_loop(
    client: reqwest::Client,
    url: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Written {
    let mut out = Written::default();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / HOSTILE_WRITES_PER_SECOND));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut k = 0u64;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = ticks.tick() => {}
        }
        k += 1;
        let mut description = format!("write {k}: ");
        description.extend(std::iter::repeat_n(
            'x',
            DESCRIPTION_BYTES - description.len(),
        ));
        let patch = json!({"spec": {"cores": HOSTILE_CORES_BASE + k, "description": description}});
        let resp = client
            .patch(&url)
            .header(CONTENT_TYPE, "application/merge-patch+json")
            .body(patch.to_string())
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                out.ok += 1;
                out.last = Some(k);
            }
            Ok(r) => {
                out.failed += 1;
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                out.first_failure
                    .get_or_insert(format!("PATCH answered {status}: {text}"));
            }
            Err(e) => {
                out.failed += 1;
                out.first_failure.get_or_insert(format!("PATCH: {e}"));
            }
        }
    }
    out
}

/// What the reading watcher had: MODIFIED events of `cpu-small`, the longest event line, and
/// how its stream ended (`None`: still open when stopped).
#[derive(Default)]
struct Reader {
    events: u64,
    longest: usize,
    ended: Option<String>,
}

/// A watcher that reads every event of the virtual workspace; the highest write `k` among
/// the MODIFIED events of `cpu-small` goes to `last` (shared, so the harness can wait for it).
async fn reading_watcher(
    mut resp: reqwest::Response,
    last: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Reader {
    let mut out = Reader::default();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            _ = stop.wait_for(|s| *s) => return out,
            c = resp.chunk() => c,
        };
        match chunk {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            Ok(None) => {
                out.ended = Some("the server ended the watch".into());
                return out;
            }
            Err(e) => {
                out.ended = Some(format!("reading the watch: {e}"));
                return out;
            }
        }
        while let Some(pos) = memchr::memchr(b'\n', &buf) {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            out.longest = out.longest.max(line.len());
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                out.ended = Some("a watch line is not JSON".into());
                return out;
            };
            if event["type"] == "ERROR" {
                out.ended = Some(format!("watch error: {}", event["object"]));
                return out;
            }
            if event["type"] == "MODIFIED"
                && event.pointer("/object/metadata/name") == Some(&json!(CHANGED_FLAVOR))
            {
                out.events += 1;
                if let Some(k) = event
                    .pointer("/object/spec/cores")
                    .and_then(Value::as_u64)
                    .and_then(|c| c.checked_sub(HOSTILE_CORES_BASE))
                {
                    last.fetch_max(k, Ordering::AcqRel);
                }
            }
        }
    }
}

/// Read the server's RSS every 200 ms until `stop`.
async fn rss_sampler(
    pid: u32,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(Instant, u64)> {
    let mut out = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return out,
            _ = ticks.tick() => {}
        }
        match status_file_bytes(&format!("/proc/{pid}/status"), "VmRSS:") {
            Some(rss) => out.push((Instant::now(), rss)),
            None => return out,
        }
    }
}

/// Memory the kernel holds for TCP sockets, machine-wide (`mem` of `/proc/net/sockstat`, in
/// pages of 4 KiB): where the bytes of a socket nobody reads wait, outside any RSS.
fn tcp_kernel_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut fields = line.split_whitespace();
    fields.find(|f| *f == "mem")?;
    Some(fields.next()?.parse::<u64>().ok()? * 4096)
}

// ---------------------------------------------------------------------------------------------
// The scenario

/// One measured stretch: the baseline, an attack, or the run after the attacks.
struct Phase {
    scenario: &'static str,
    what: String,
    answered: String,
    start: Instant,
    end: Instant,
    /// Server CPU seconds at start and end.
    cpu: (Option<f64>, Option<f64>),
}

/// Time a phase: it runs from now until `work` returns; the caller fills in
/// [`Phase::answered`].
async fn timed<T, Fut>(
    server: &RoleProcess,
    scenario: &'static str,
    what: String,
    work: Fut,
) -> anyhow::Result<(Phase, T)>
where
    Fut: Future<Output = anyhow::Result<T>>,
{
    progress(scenario);
    let cpu = server.cpu_seconds();
    let start = Instant::now();
    let out = work.await?;
    let end = Instant::now();
    let phase = Phase {
        scenario,
        what,
        answered: String::new(),
        start,
        end,
        cpu: (cpu, server.cpu_seconds()),
    };
    Ok((phase, out))
}

/// Time an attack whose outcome is a text, then pause for `COOL_DOWN`.
async fn attack<Fut>(
    server: &RoleProcess,
    scenario: &'static str,
    what: String,
    work: Fut,
) -> anyhow::Result<Phase>
where
    Fut: Future<Output = anyhow::Result<String>>,
{
    let (mut phase, answered) = timed(server, scenario, what, work).await?;
    phase.answered = answered;
    tokio::time::sleep(COOL_DOWN).await;
    Ok(phase)
}

/// The hostile scenario: see the module documentation.
pub(crate) async fn scenario_hostile(ctx: &mut Ctx) -> anyhow::Result<()> {
    let phase_len = ctx.args.duration_flag.unwrap_or(PHASE);
    progress("hostile: starting `serve --seed examples/cloud-co`");
    let mut setup = Setup::spawn_embedded()?;
    setup.wait_ready().await?;
    let rv = setup.wait_for_flavors().await?;
    let server = &setup.roles[0];
    let raw = Arc::new(Raw::new(server)?);
    let base = server.url.clone();

    // The well-behaved clients.
    let kube_cache = tempfile::tempdir()?;
    let kubectl = match find_kubectl() {
        Ok(path) => {
            let k = Kubectl {
                path,
                kubeconfig: server.file("admin.kubeconfig"),
                cache_dir: kube_cache.path().to_path_buf(),
            };
            // Untimed: fills the discovery cache.
            k.get().await.map(|()| k)
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &kubectl {
        ctx.notes.push(format!(
            "hostile: kubectl is not available ({e}); the p50/p99 columns are the reqwest LIST's"
        ));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let kubectl_task = kubectl
        .as_ref()
        .ok()
        .map(|k| tokio::spawn(kubectl_loop(k.clone(), stop_rx.clone())));
    let list_task = tokio::spawn(list_loop(
        server.client(Some(REQUEST_TIMEOUT))?,
        setup.collection_url(),
        stop_rx.clone(),
    ));
    let watch_resp = tokio::time::timeout(
        REQUEST_TIMEOUT,
        server
            .client(None)?
            .get(format!(
                "{}?watch=true&resourceVersion={rv}",
                setup.collection_url()
            ))
            .send(),
    )
    .await
    .map_err(|_| anyhow!("no watch response in {REQUEST_TIMEOUT:?}"))??;
    if !watch_resp.status().is_success() {
        bail!(
            "the reading watcher's watch answered {}",
            watch_resp.status()
        );
    }
    let watched = Arc::new(AtomicU64::new(0));
    let watch_task = tokio::spawn(reading_watcher(
        watch_resp,
        watched.clone(),
        stop_rx.clone(),
    ));
    let rss_task = tokio::spawn(rss_sampler(server.child.id(), stop_rx.clone()));
    let rss_start = server.rss();
    // Only what the server logs from here on counts (not its start-up).
    let log_start = std::fs::metadata(server.file("role.log")).map_or(0, |m| m.len() as usize);
    // Let every client reach its pace.
    tokio::time::sleep(COOL_DOWN).await;

    let mut phases = Vec::new();
    let idle = |label: &'static str, what: String| {
        attack(server, label, what, async move {
            tokio::time::sleep(phase_len).await;
            Ok(String::new())
        })
    };
    phases.push(
        idle(
            "hostile: baseline",
            format!("no attack, {} s", phase_len.as_secs()),
        )
        .await?,
    );

    let stall_for = phase_len + STALL_EXTRA;
    let (mut phase, (per_kind, probes)) = timed(
        server,
        "hostile: stalled connections",
        format!(
            "{STALLED_CONNECTIONS} TCP connections that stall, held {} s: a third send nothing, a third half a ClientHello, a third half a request head after the TLS handshake (anonymous)",
            stall_for.as_secs()
        ),
        stalled(raw.clone(), Instant::now() + stall_for),
    )
    .await?;
    let stalled_at = phase.start;
    phase.answered = per_kind
        .iter()
        .map(|(k, o)| format!("{k}: {}", outcomes_text(o)))
        .collect::<Vec<_>>()
        .join(" / ");
    phases.push(phase);
    tokio::time::sleep(COOL_DOWN).await;

    // Watch events pile up only while something is written: the writer runs alone for a phase
    // (its own cost and memory), then with the deaf watchers.
    let (writer_stop, writer_stop_rx) = tokio::sync::watch::channel(false);
    let write_task = tokio::spawn(write_loop(
        server.client(Some(REQUEST_TIMEOUT))?,
        format!("{base}{PROVIDER_FLAVORS}/{CHANGED_FLAVOR}"),
        writer_stop_rx,
    ));
    let writing = format!(
        "{} PATCH/s of `{CHANGED_FLAVOR}` in `root:cloudco`, each with a new {} KiB description",
        HOSTILE_WRITES_PER_SECOND,
        DESCRIPTION_BYTES >> 10
    );
    phases.push(
        idle(
            "hostile: writes alone",
            format!(
                "no attack, {} s, but a writer: {writing} (the control of the next row)",
                phase_len.as_secs()
            ),
        )
        .await?,
    );
    let watch_path = format!(
        "/services/replication/{PROVIDER}/cpuflavors-v1/clusters/{CONSUMER}/apis/cloud.example.com/v1/cpuflavors?watch=true&resourceVersion={rv}"
    );
    let (mut phase, ((conns, failed), tcp_mem)) = timed(
        server,
        "hostile: watchers that never read",
        format!(
            "{DEAF_WATCHERS} watches of the VW from the first list's resourceVersion (admin, HTTP/1.1 over TLS by hand) whose responses are not read for {} s, while the writer goes on ({writing}); then the writer stops and each connection is read for what piled up",
            phase_len.as_secs(),
        ),
        async {
            let tcp_before = tcp_kernel_memory();
            let opened = open_deaf(&raw, &watch_path).await;
            tokio::time::sleep(phase_len).await;
            Ok((opened, (tcp_before, tcp_kernel_memory())))
        },
    )
    .await?;
    // Stop the writer, let the reading watcher catch up, then read what piled up.
    let _ = writer_stop.send(true);
    let written = write_task.await.unwrap_or_default();
    let target = written.last.unwrap_or(0);
    let waited = Instant::now();
    while watched.load(Ordering::Acquire) < target
        && waited.elapsed() < EVENT_TIMEOUT
        && !watch_task.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up = waited.elapsed();
    let rss_before_drain = server.rss();
    let d = drain_deaf(conns, failed).await;
    let median = d.bytes.get(d.bytes.len() / 2).copied().unwrap_or(0);
    phase.answered = format!(
        "response status {}; kernel TCP memory (all sockets) {} before, {} at the end of the phase; after the writer stopped, readable per connection: median {}, max {}, total {}; {} streams had an ERROR event, {} connections closed by the server{}",
        outcomes_text(&d.heads),
        opt_mib(tcp_mem.0),
        opt_mib(tcp_mem.1),
        mib1(median),
        mib1(d.bytes.last().copied().unwrap_or(0)),
        mib1(d.bytes.iter().sum()),
        d.errors,
        d.closed,
        if d.failed.is_empty() {
            String::new()
        } else {
            format!("; not sent: {}", outcomes_text(&d.failed))
        }
    );
    phases.push(phase);
    tokio::time::sleep(COOL_DOWN).await;

    let oversized = |scenario: &'static str, what: String, max: usize, f: Attempt| {
        let raw = raw.clone();
        attack(server, scenario, what, async move {
            let (o, n) = repeat(Instant::now() + phase_len, max, move |k| f(raw.clone(), k)).await;
            Ok(format!("{n} attempts: {}", outcomes_text(&o)))
        })
    };
    phases.push(
        oversized(
            "hostile: 1 MiB query strings",
            format!(
                "GET of the team-a flavors with a 1 MiB `labelSelector` (admin), {MAX_ATTEMPTS} requests spread over {} s, at most {ATTACKERS} at a time",
                phase_len.as_secs()
            ),
            MAX_ATTEMPTS,
            |raw, _| Box::pin(huge_query(raw)),
        )
        .await?,
    );
    phases.push(
        oversized(
            "hostile: 10 MiB request bodies",
            format!(
                "POST of 10 MiB to the provider's flavors (admin), alternately with Content-Length and chunked, {MAX_BODY_ATTEMPTS} requests spread over {} s, at most {ATTACKERS} at a time",
                phase_len.as_secs()
            ),
            MAX_BODY_ATTEMPTS,
            |raw, k| Box::pin(huge_body(raw, k)),
        )
        .await?,
    );
    phases.push(
        oversized(
            "hostile: garbage TLS",
            format!(
                "{} KiB of random bytes instead of a ClientHello, {MAX_GARBAGE_ATTEMPTS} connections spread over {} s, at most {ATTACKERS} at a time",
                GARBAGE_BYTES >> 10,
                phase_len.as_secs()
            ),
            MAX_GARBAGE_ATTEMPTS,
            |raw, k| Box::pin(garbage_tls(raw, k)),
        )
        .await?,
    );
    phases.push(
        oversized(
            "hostile: header floods",
            format!(
                "GET of the team-a flavors (admin) with {FLOOD_HEADERS} headers or one 1 MiB header, alternately, {MAX_ATTEMPTS} requests spread over {} s, at most {ATTACKERS} at a time",
                phase_len.as_secs()
            ),
            MAX_ATTEMPTS,
            |raw, k| Box::pin(header_flood(raw, k)),
        )
        .await?,
    );
    phases.push(
        idle(
            "hostile: after",
            format!("no attack, {} s", phase_len.as_secs()),
        )
        .await?,
    );
    let probes = probes_text(probes, stalled_at).await;

    let _ = stop_tx.send(true);
    let reader = watch_task.await.unwrap_or_default();
    let kube = match kubectl_task {
        Some(t) => Some(t.await.unwrap_or_default()),
        None => None,
    };
    let lists = list_task.await.unwrap_or_default();
    let rss = rss_task.await.unwrap_or_default();
    let alive = setup.roles[0].check_alive();
    let server = &setup.roles[0];

    // Rows: one per phase.
    let primary = kube.as_ref().unwrap_or(&lists);
    let primary_name = if kube.is_some() {
        "kubectl get"
    } else {
        "LIST"
    };
    let (base_lat, _) = primary.window(phases[0].start, phases[0].end);
    let ratio = |lat: &[Duration], q: f64| {
        let b = percentile(&base_lat, q).as_secs_f64();
        if b > 0.0 && !lat.is_empty() {
            format!("{:.2}×", percentile(lat, q).as_secs_f64() / b)
        } else {
            "n/a".into()
        }
    };
    let rss_max = |p: &Phase| {
        rss.iter()
            .filter(|(t, _)| *t >= p.start && *t <= p.end)
            .map(|(_, r)| *r)
            .max()
    };
    let mut total_failures = 0;
    for (i, p) in phases.iter().enumerate() {
        let (lat, failed) = primary.window(p.start, p.end);
        let (list_lat, list_failed) = lists.window(p.start, p.end);
        let kube_text = kube.as_ref().map_or(String::new(), |k| {
            let (l, f) = k.window(p.start, p.end);
            format!("kubectl: {} gets, {f} failed; ", l.len() + f)
        });
        total_failures += list_failed + kube.as_ref().map_or(0, |k| k.window(p.start, p.end).1);
        let server_text = if p.answered.is_empty() {
            String::new()
        } else {
            format!("server: {}; ", p.answered)
        };
        Row {
            scenario: p.scenario,
            what: format!(
                "{}; well-behaved: `kubectl --context {TEAM_A} get cpuflavors` back to back, a LIST of the VW {} /s",
                p.what, LISTS_PER_SECOND
            ),
            result: format!(
                "{server_text}{kube_text}LIST: {} done, {list_failed} failed, p50 {}, p99 {}",
                list_lat.len() + list_failed,
                ms(percentile(&list_lat, 0.5)),
                ms(percentile(&list_lat, 0.99)),
            ),
            p50: ms(percentile(&lat, 0.5)),
            p99: ms(percentile(&lat, 0.99)),
            rss: opt_mib(rss_max(p)),
            ratio: if i == 0 {
                "1×".into()
            } else {
                format!("p50 {}, p99 {}", ratio(&lat, 0.5), ratio(&lat, 0.99))
            },
            goal: format!(
                "0 failures {}",
                verdict(failed + list_failed == 0 && !lat.is_empty())
            ),
        }
        .print();
    }

    // Notes.
    let cpu_text: Vec<String> = phases
        .iter()
        .map(|p| {
            let cpu = match p.cpu {
                (Some(a), Some(b)) => format!("{:.1} s", b - a),
                _ => "n/a".into(),
            };
            format!(
                "{} {cpu} in {:.1} s",
                p.scenario.trim_start_matches("hostile: "),
                (p.end - p.start).as_secs_f64()
            )
        })
        .collect();
    let rss_text: Vec<String> = phases
        .iter()
        .map(|p| {
            let first = rss.iter().find(|(t, _)| *t >= p.start).map(|(_, r)| *r);
            let last = rss.iter().rev().find(|(t, _)| *t <= p.end).map(|(_, r)| *r);
            format!(
                "{} {} → {}",
                p.scenario.trim_start_matches("hostile: "),
                opt_mib(first),
                opt_mib(last)
            )
        })
        .collect();
    ctx.notes.push(format!(
        "hostile: the p50/p99 columns are the {primary_name}'s (per call, the kubectl process's \
         start included); the ratio is to the baseline phase of the same run. The attacks run in \
         the harness process on the same 2 cores, so part of a slowdown is the attacker's own \
         CPU. Server RSS (VmRSS, read every 200 ms; the table gives each phase's highest): at the \
         start {}, highest overall {}, right before the deaf watchers were read {}, at the end \
         {}; peak (VmHWM) {}; per phase, first → last reading: {}. Server CPU per phase: {}.",
        opt_mib(rss_start),
        opt_mib(rss.iter().map(|(_, r)| *r).max()),
        opt_mib(rss_before_drain),
        opt_mib(rss.last().map(|(_, r)| *r)),
        opt_mib(server.peak_rss()),
        rss_text.join(", "),
        cpu_text.join(", ")
    ));
    ctx.notes.push(format!(
        "hostile: stalled connections with half a request head, kept open until the end: {probes}."
    ));
    ctx.notes.push(format!(
        "hostile: the writer's PATCHes: {} acknowledged, {} failed{}; the reading watcher had {} \
         MODIFIED events of `{CHANGED_FLAVOR}` (longest line {}), the last acknowledged write {} \
         {:.2} s after the writer stopped; its watch: {}; well-behaved failures in all: \
         {total_failures}{}{}.",
        written.ok,
        written.failed,
        written
            .first_failure
            .as_ref()
            .map_or(String::new(), |f| format!(" (first: {f})")),
        reader.events,
        mib1(reader.longest as u64),
        if watched.load(Ordering::Acquire) >= target {
            "arrived"
        } else {
            "had NOT arrived"
        },
        caught_up.as_secs_f64(),
        reader
            .ended
            .unwrap_or_else(|| "still open at the end".into()),
        kube.as_ref()
            .and_then(|k| k.first_failure.as_ref())
            .map_or(String::new(), |f| format!("; first kubectl failure: {f}")),
        lists
            .first_failure
            .as_ref()
            .map_or(String::new(), |f| format!("; first LIST failure: {f}")),
    ));
    let log = std::fs::read(server.file("role.log")).unwrap_or_default();
    let log = String::from_utf8_lossy(log.get(log_start..).unwrap_or_default());
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("panicked"))
        .collect();
    ctx.notes.push(format!(
        "hostile: during the phases the server (RUST_LOG=warn) logged {} warnings or errors{}",
        bad.len(),
        if bad.is_empty() {
            String::new()
        } else {
            format!(
                "; the last: {}",
                bad[bad.len().saturating_sub(3)..]
                    .iter()
                    .map(|l| format!("`{}`", l.chars().take(300).collect::<String>()))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    ));
    alive?;
    Ok(())
}
