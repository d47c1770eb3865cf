//! A real etcd for the benches: the distribution's `etcd` binary (Debian's `etcd-server`) started
//! on free loopback ports with its data in a temp dir, plain HTTP, killed and waited for when
//! dropped. Shared by the load harness (`--storage etcd`, `--scenario etcd`) and
//! `benches/etcd.rs`; the tests have their own (`tests/common/etcd.rs`, with TLS and restarts).
//! Nothing here panics: a missing binary or an etcd that does not come up is an error.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

/// How long etcd may take to answer `/health` with `true`.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Backend quota: etcd's default (2 GiB) is too small for a large ingest.
const QUOTA_BYTES: u64 = 8 << 30;

/// A running etcd; dropping it kills it.
pub struct EtcdServer {
    child: Child,
    /// Data directory and `etcd.log`.
    dir: tempfile::TempDir,
    /// Client URL, `http://127.0.0.1:<port>`.
    pub url: String,
    /// First line of `etcd --version` (`etcd Version: 3.4.23`).
    pub version: String,
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first line of `etcd --version`, or `None` when no `etcd` is on PATH.
pub fn version() -> Option<String> {
    let out = Command::new("etcd")
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().next().unwrap_or("etcd").trim().to_string())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdServer {
    /// Start an etcd on free loopback ports and wait until it is healthy. A start that loses
    /// its ports to another process (they are picked before etcd binds them) is tried again.
    pub fn start() -> anyhow::Result<EtcdServer> {
        let version = version().ok_or_else(|| {
            anyhow!("no `etcd` on PATH (Debian: apt-get install etcd-server etcd-client)")
        })?;
        let mut last = None;
        for _ in 0..3 {
            match Self::launch(version.clone()) {
                Ok(e) => return Ok(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("etcd did not start")))
    }

    fn launch(version: String) -> anyhow::Result<EtcdServer> {
        let dir = tempfile::tempdir().context("creating etcd's data directory")?;
        let (client, peer) = (free_port()?, free_port()?);
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log"))?;
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .args(["--quota-backend-bytes", &QUOTA_BYTES.to_string()])
            .args(["--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting etcd")?;
        let mut etcd = EtcdServer {
            child,
            dir,
            url,
            version,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], client));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = etcd.child.try_wait()? {
                bail!("etcd exited ({status}): {}", etcd.log_tail());
            }
            if healthy(addr) {
                return Ok(etcd);
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd at {} was not healthy in {START_TIMEOUT:?}: {}",
                    etcd.url,
                    etcd.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines etcd logged.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// etcd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// etcd's current RSS (`VmRSS`), in bytes.
    pub fn rss(&self) -> Option<u64> {
        self.status_bytes("VmRSS:")
    }

    /// etcd's peak RSS (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        self.status_bytes("VmHWM:")
    }

    fn status_bytes(&self, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = text.lines().find(|l| l.starts_with(field))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Size of etcd's data directory on disk (its bbolt file and WAL), in bytes.
    pub fn disk_bytes(&self) -> u64 {
        fn walk(p: &std::path::Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(p) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    Ok(_) => e.metadata().map_or(0, |m| m.len()),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir.path().join("data"))
    }
}

/// `GET /health` on etcd's client port answers `{"health":"true"…}` (one plain HTTP/1.0
/// request, 1 s timeouts).
fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut body = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut body);
    let text = String::from_utf8_lossy(&body);
    text.starts_with("HTTP/1.") && text.contains("\"health\":\"true\"")
}
