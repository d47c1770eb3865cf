//! A real etcd on loopback for tests: `etcd` from the distribution's `etcd-server` package, on
//! free ports, with its data under a temp dir; stopped (killed) when dropped. With `tls`, client
//! URLs are HTTPS and client certificates are required (a CA, a server and a client
//! certificate generated with rcgen), which [`Etcd::rotate_certificates`] replaces with a new
//! CA's.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd.
pub struct Etcd {
    child: Child,
    /// The command that started it (to start it again on the same ports and data).
    command: Vec<std::ffi::OsString>,
    /// Client URL.
    pub url: String,
    /// Data and certificate directory.
    pub dir: tempfile::TempDir,
    /// PEM files when started with TLS: (ca, client cert, client key).
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Etcd {
    /// Start a plain-HTTP etcd.
    pub fn start() -> Etcd {
        Etcd::launch(false)
    }

    /// Start an etcd that serves HTTPS and requires client certificates.
    pub fn start_tls() -> Etcd {
        Etcd::launch(true)
    }

    fn launch(tls: bool) -> Etcd {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (client, peer) = (free_port(), free_port());
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut files = None;
        if tls {
            let f = write_certificates(dir.path());
            cmd.arg("--cert-file")
                .arg(dir.path().join("server.crt"))
                .arg("--key-file")
                .arg(dir.path().join("server.key"))
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&f.0);
            files = Some(f);
        }
        let command: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_owned()).collect();
        let child = cmd
            .spawn()
            .expect("etcd starts (apt-get install -y etcd-server etcd-client)");
        let etcd = Etcd {
            child,
            command,
            url,
            dir,
            tls: files,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !etcd.healthy() {
            assert!(Instant::now() < deadline, "etcd never became healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }

    /// `kill -9` etcd (it stays down until [`Etcd::restart`]).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start etcd again on the same ports and data; returns once it is healthy.
    pub fn restart(&mut self) {
        self.child = Command::new("etcd")
            .args(&self.command)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts again");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.healthy() {
            assert!(Instant::now() < deadline, "etcd never became healthy again");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Replace every TLS file (CA, etcd's serving pair, the client pair) with ones of a new CA,
    /// in place, as a CA rotation does; etcd uses them once restarted.
    pub fn rotate_certificates(&self) {
        assert!(self.tls.is_some(), "etcd was started without TLS");
        write_certificates(self.dir.path());
    }

    /// `etcdctl` against this etcd.
    pub fn etcdctl(&self) -> Command {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3").args(["--endpoints", &self.url]);
        if let Some((ca, cert, key)) = &self.tls {
            c.arg("--cacert")
                .arg(ca)
                .arg("--cert")
                .arg(cert)
                .arg("--key")
                .arg(key);
        }
        c.stdin(Stdio::null());
        c
    }

    fn healthy(&self) -> bool {
        let mut c = self.etcdctl();
        c.args(["endpoint", "health"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.status().is_ok_and(|s| s.success())
    }

    /// `etcdctl <args>`, which must succeed; its stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.etcdctl().args(args).output().expect("etcdctl runs");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The flags that point a role at this etcd (TLS files included).
    pub fn flags(&self) -> Vec<String> {
        let mut f = vec!["--etcd-servers".to_string(), self.url.clone()];
        if let Some((ca, cert, key)) = &self.tls {
            for (flag, path) in [
                ("--etcd-cafile", ca),
                ("--etcd-certfile", cert),
                ("--etcd-keyfile", key),
            ] {
                f.push(flag.into());
                f.push(path.display().to_string());
            }
        }
        f
    }
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files
/// in `dir`: (ca, client cert, client key).
fn write_certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("a CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, file: &str| {
        let key = KeyPair::generate().expect("a key");
        let params = CertificateParams::new(names).expect("params");
        let cert = params.signed_by(&key, &issuer).expect("a certificate");
        std::fs::write(dir.join(format!("{file}.crt")), cert.pem()).expect("write cert");
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).expect("write key");
    };
    leaf(vec!["127.0.0.1".into(), "localhost".into()], "server");
    leaf(vec!["replication-vw".into()], "client");
    std::fs::write(dir.join("ca.crt"), ca.pem()).expect("write CA");
    (
        dir.join("ca.crt"),
        dir.join("client.crt"),
        dir.join("client.key"),
    )
}
