//! End-to-end harness: starts the real `replication-vw` binary on a free loopback port with a
//! fresh data directory, waits for `/readyz`, and drives it with the real kubectl (v1.34) and an
//! admin HTTPS client for the cache server API.

#![allow(dead_code)]

pub mod etcd;
pub mod raw;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Team A, bound to the `compute` export.
pub const TEAM_A: &str = "3h9tqa6m2cxe1kbn";
/// Team B, not bound.
pub const TEAM_B: &str = "5k8rw2n7j4tz6cqa";
/// The Cloud Co provider.
pub const PROVIDER: &str = "1p5f2x8rkq0vd7wz";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of a kubectl v1.34: `$KUBECTL`, else installed with the shared script.
pub fn kubectl_path() -> PathBuf {
    if let Ok(k) = std::env::var("KUBECTL") {
        return PathBuf::from(k);
    }
    // Tests of one binary run in parallel: install once, not once per test at the same time.
    static INSTALLED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(install_kubectl).clone()
}

fn install_kubectl() -> PathBuf {
    let dest = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kubectl-bin");
    let script = repo().join("../shared/tools/install-kubectl.sh");
    // Once installed, use it: the script's own check (`kubectl version | grep -q` under
    // `pipefail`) fails now and then when grep stops reading early, and it then installs again
    // over a kubectl other tests are running.
    let kubectl = dest.join("kubectl");
    let installed = Command::new(&kubectl)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("v1.34"));
    if installed {
        return kubectl;
    }
    // Test processes of other binaries (nextest runs each test in a process of its own) may
    // install at the same time: one writing kubectl while another runs it fails with "Text file
    // busy". `flock` (util-linux) lets one install at a time.
    std::fs::create_dir_all(&dest).expect("kubectl-bin is created");
    let out = Command::new("flock")
        .arg(dest.join(".install.lock"))
        .arg("bash")
        .arg(&script)
        .arg(&dest)
        .output()
        .expect("install-kubectl.sh runs (set KUBECTL to skip it)");
    assert!(
        out.status.success(),
        "install-kubectl.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    kubectl
}

/// A running server.
pub struct Server {
    child: Child,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// Its data directory.
    pub data_dir: tempfile::TempDir,
    /// Its log lines so far (stderr), collected by a reader thread.
    logs: mpsc::Receiver<String>,
    kubectl: PathBuf,
    cache_dir: tempfile::TempDir,
    role: String,
    extra: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Start with the Cloud Co example and its token file.
    pub fn cloud_co() -> Server {
        let repo = repo();
        Server::start(&[
            "--seed",
            repo.join("examples/cloud-co").to_str().unwrap(),
            "--token-auth-file",
            repo.join("examples/cloud-co/tokens.csv").to_str().unwrap(),
        ])
    }

    /// Start the binary with extra arguments.
    pub fn start(extra: &[&str]) -> Server {
        Server::launch("serve", extra)
    }

    /// Start one role (`serve`, `cache-server`, `virtual-workspace`) on a free loopback port
    /// with a fresh data directory and extra arguments; returns once `/readyz` answers 200.
    pub fn launch(role: &str, extra: &[&str]) -> Server {
        let server = Server::spawn(
            role,
            "127.0.0.1:0",
            tempfile::tempdir().unwrap(),
            extra.iter().map(|s| s.to_string()).collect(),
        );
        server.wait_ready();
        server
    }

    /// Like [`Server::launch`], on a given data directory (a restored one, say).
    pub fn launch_in(role: &str, data_dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let server = Server::spawn(
            role,
            "127.0.0.1:0",
            data_dir,
            extra.iter().map(|s| s.to_string()).collect(),
        );
        server.wait_ready();
        server
    }

    /// Like [`Server::launch`], but returns once the kubeconfig is written, ready or not.
    pub fn launch_unready(role: &str, extra: &[&str]) -> Server {
        Server::spawn(
            role,
            "127.0.0.1:0",
            tempfile::tempdir().unwrap(),
            extra.iter().map(|s| s.to_string()).collect(),
        )
    }

    /// The HTTP code of `/readyz` right now.
    pub fn readyz_code(&self) -> String {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(self.ca())
            .arg(format!("{}/readyz", self.url))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9` the process (it stays dead until [`Server::restart`]).
    pub fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Send SIGTERM and wait (at most `limit`) for the process to exit; its exit status.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Drop a flag and its value from the arguments of the next [`Server::restart`].
    pub fn drop_arg(&mut self, flag: &str) {
        let mut kept = Vec::new();
        let mut args = self.extra.drain(..);
        while let Some(a) = args.next() {
            if a == flag {
                args.next();
            } else {
                kept.push(a);
            }
        }
        drop(args);
        self.extra = kept;
    }

    /// Start the process again on the same address, data directory and arguments.
    pub fn restart(&mut self) {
        let listen = self.url.trim_start_matches("https://").to_string();
        let (child, logs, url) =
            spawn_child(&self.role, &listen, self.data_dir.path(), &self.extra);
        assert_eq!(url, self.url, "the restart listens where the first run did");
        self.child = child;
        self.logs = logs;
    }

    fn spawn(role: &str, listen: &str, data_dir: tempfile::TempDir, extra: Vec<String>) -> Server {
        let kubectl = kubectl_path();
        let (child, logs, url) = spawn_child(role, listen, data_dir.path(), &extra);
        Server {
            child,
            url,
            data_dir,
            logs,
            kubectl,
            cache_dir: tempfile::tempdir().unwrap(),
            role: role.to_string(),
            extra,
        }
    }

    /// `kill -9` the process and start it again on the same address with the same data
    /// directory and arguments (a memory store comes back empty); waits for its kubeconfig,
    /// not for readiness.
    pub fn crash_and_restart(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let listen = self.url.trim_start_matches("https://").to_string();
        let (child, logs, url) =
            spawn_child(&self.role, &listen, self.data_dir.path(), &self.extra);
        assert_eq!(url, self.url, "the restart listens where the first run did");
        self.child = child;
        self.logs = logs;
    }

    /// Wait until `/readyz` answers 200 (30 s at most).
    pub fn wait_until_ready(&self) {
        self.wait_ready();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
                .arg(self.ca())
                .arg(format!("{}/readyz", self.url))
                .output()
                .unwrap();
            if out.stdout == b"200" {
                return;
            }
            assert!(Instant::now() < deadline, "the server never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The CA certificate file.
    pub fn ca(&self) -> PathBuf {
        self.data_dir.path().join("ca.crt")
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.path().join("admin.kubeconfig")
    }

    /// The Replication VW URL for a CachedResource and a consumer.
    pub fn vw(&self, cr: &str, consumer: &str) -> String {
        format!(
            "{}/services/replication/{PROVIDER}/{cr}/clusters/{consumer}",
            self.url
        )
    }

    /// A kubectl command as admin against `server`.
    pub fn kubectl_admin(&self, server: &str) -> Command {
        let mut c = self.kubectl_base();
        c.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--server")
            .arg(server);
        c
    }

    /// A kubectl command as admin in one workspace: a context of the admin kubeconfig.
    pub fn kubectl_context(&self, context: &str) -> Command {
        let mut c = self.kubectl_base();
        c.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--context")
            .arg(context);
        c
    }

    /// A kubectl command with a bearer token (or anonymous with `None`) against `server`.
    pub fn kubectl_token(&self, server: &str, token: Option<&str>) -> Command {
        let mut c = self.kubectl_base();
        c.arg("--kubeconfig")
            .arg("/dev/null")
            .arg("--server")
            .arg(server);
        c.arg(format!("--certificate-authority={}", self.ca().display()));
        if let Some(t) = token {
            c.arg(format!("--token={t}"));
        }
        c
    }

    fn kubectl_base(&self) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.env("KUBECACHEDIR", self.cache_dir.path())
            .env("HOME", self.cache_dir.path())
            .stdin(Stdio::null());
        c
    }

    /// Wait (up to 20 s) for a log line containing `needle`; returns all lines read so far.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    lines.push(line);
                    if hit {
                        return lines.join("\n");
                    }
                }
                Err(_) if Instant::now() >= deadline => return lines.join("\n"),
                Err(_) => {}
            }
        }
    }

    /// An HTTPS client with the admin client certificate.
    pub fn admin_client(&self) -> reqwest::Client {
        replication_vw::server::tls::install_crypto_provider();
        let dir = self.data_dir.path();
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.crt")).unwrap()).unwrap();
        let mut pem = std::fs::read(dir.join("admin.crt")).unwrap();
        pem.extend(std::fs::read(dir.join("admin.key")).unwrap());
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .identity(reqwest::Identity::from_pem(&pem).unwrap())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    /// An HTTPS client that presents a bearer token (or nothing).
    pub fn token_client(&self) -> reqwest::Client {
        replication_vw::server::tls::install_crypto_provider();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.ca()).unwrap()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .build()
            .unwrap()
    }

    /// The cache server URL of a collection in the provider cluster on shard `root`.
    pub fn cache(&self, cluster: &str, group_version_resource: &str) -> String {
        format!(
            "{}/services/cache/shards/root/clusters/{cluster}/apis/{group_version_resource}",
            self.url
        )
    }
}

/// Start `replication-vw <role>` and wait for the kubeconfig it writes; returns the child, its
/// log lines and its URL.
fn spawn_child(
    role: &str,
    listen: &str,
    data_dir: &Path,
    extra: &[String],
) -> (Child, mpsc::Receiver<String>, String) {
    let kubeconfig = data_dir.join("admin.kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let mut child = Command::new(env!("CARGO_BIN_EXE_replication-vw"))
        .args([role, "--listen", listen, "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let logs = line_reader(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&kubeconfig)
            && let Some(line) = text.lines().find(|l| l.trim_start().starts_with("server:"))
        {
            let u = line
                .trim_start()
                .trim_start_matches("server:")
                .trim()
                .trim_matches('"')
                .to_string();
            if !u.is_empty() {
                return (child, logs, u);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the server never wrote its kubeconfig"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the server exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines read from a child's pipe by a background thread.
pub fn line_reader(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Run a command, returning its output.
pub fn run(mut c: Command) -> Output {
    c.output().expect("command runs")
}

/// Run a command that must succeed (else the test fails with its stderr); its stdout.
pub fn run_ok(c: Command) -> String {
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

/// stdout as a string.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as a string.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Read a file next to the examples.
pub fn example(path: &str) -> PathBuf {
    repo().join("examples").join(path)
}

/// Whether a path exists (helper for readability in tests).
pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// A CachedObject as a shard would write it for a CPU flavor of the provider.
pub fn cpu_flavor_cached_object(
    name: &str,
    uid: &str,
    spec: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "cache.kcp.io/v1alpha1",
        "kind": "CachedObject",
        "metadata": {
            "name": replication_vw::model::naming::cached_object_name("cloud.example.com", "v1", "cpuflavors", "", name),
            "labels": {
                replication_vw::model::LABEL_OBJECT_SCHEMA: "v1.cpuflavors.cloud.example.com",
                replication_vw::model::LABEL_OBJECT_GROUP: "cloud.example.com",
                replication_vw::model::LABEL_OBJECT_VERSION: "v1",
                replication_vw::model::LABEL_OBJECT_RESOURCE: "cpuflavors",
                replication_vw::model::LABEL_OBJECT_NAME: name,
                replication_vw::model::LABEL_OBJECT_NAMESPACE: "",
                "cloud.example.com/visibility": "Public",
            },
            "annotations": {replication_vw::model::ANN_SHARD: "root"},
        },
        "spec": {"raw": {
            "apiVersion": "cloud.example.com/v1",
            "kind": "CPUFlavor",
            "metadata": {
                "name": name,
                "uid": uid,
                "labels": {"cloud.example.com/visibility": "Public"},
                "annotations": {
                    replication_vw::model::ANN_CLUSTER: PROVIDER,
                    replication_vw::model::ANN_SHARD: "root",
                    replication_vw::model::ANN_ORIGINAL_UID: uid,
                    replication_vw::model::ANN_ORIGINAL_RV: "42",
                },
            },
            "spec": spec,
        }},
    })
}

/// How long a test waits for one line of a running kubectl watch.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `kubectl get -w`, its stdout lines read by a thread.
pub struct KubectlWatch {
    child: Child,
    lines: mpsc::Receiver<String>,
    errors: mpsc::Receiver<String>,
}

impl KubectlWatch {
    pub fn start(mut c: Command) -> KubectlWatch {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("kubectl starts");
        let lines = line_reader(child.stdout.take().unwrap());
        let errors = line_reader(child.stderr.take().unwrap());
        KubectlWatch {
            child,
            lines,
            errors,
        }
    }

    /// The next line, within `WATCH_TIMEOUT`.
    pub fn next(&self, what: &str) -> String {
        self.lines.recv_timeout(WATCH_TIMEOUT).unwrap_or_else(|_| {
            let errors: Vec<String> = self.errors.try_iter().collect();
            panic!(
                "kubectl watch: no line for {what} within {WATCH_TIMEOUT:?}; stderr: {}",
                errors.join("\n")
            )
        })
    }
}

impl Drop for KubectlWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Retry `attempt` every 100 ms until it gives a value, for at most 30 s; the panic names `what`
/// and the last failure.
pub fn eventually<T>(what: &str, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match attempt() {
            Ok(v) => return v,
            Err(last) => assert!(Instant::now() < deadline, "{what}: {last}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The next line of a watch response body, as JSON, within 20 s (`buf` keeps what was read past
/// it).
pub async fn next_json_line<S>(body: &mut S, buf: &mut Vec<u8>) -> serde_json::Value
where
    S: futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    use futures_util::StreamExt;
    let line = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                return buf.drain(..=pos).collect::<Vec<u8>>();
            }
            let chunk = body.next().await.expect("stream open").expect("chunk");
            buf.extend_from_slice(&chunk);
        }
    })
    .await
    .expect("a watch event arrives within 20 s");
    serde_json::from_slice(&line).expect("a watch line is JSON")
}

/// The CPU flavors alice lists through virtual workspace URL `url` of `server` (`kubectl get -o
/// name`), once there are exactly three; otherwise what kubectl printed.
pub fn alice_lists_three(server: &Server, url: &str) -> Result<String, String> {
    let mut c = server.kubectl_token(url, Some("alice-token"));
    c.args(["get", "cpuflavors", "-o", "name"]);
    let out = c.output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (text.lines().count() == 3)
        .then_some(text.clone())
        .ok_or(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
}
