//! End-to-end: a renewed serving certificate (its files replaced on disk, as cert-manager renews
//! a Secret) is served to new connections without a restart. The certificates are made with the
//! openssl command line, as an operator would.

mod common;

use common::Server;
use std::path::Path;
use std::process::Command;

/// Run a shell script in `dir`, which must succeed.
fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A serving certificate for 127.0.0.1 with serial `serial`, signed by `dir/ca.*`, written to
/// `dir/tls.crt` and `dir/tls.key` (certificate first, then key, as a renewal replaces them).
fn issue(dir: &Path, serial: u32) {
    sh(
        dir,
        &format!(
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout new.key -out new.csr -subj /CN=serving 2>/dev/null && \
             printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ext && \
             openssl x509 -req -in new.csr -CA ca.crt -CAkey ca.key -set_serial {serial} -days 5 -extfile ext -out new.crt 2>/dev/null && \
             cp new.crt tls.crt && cp new.key tls.key"
        ),
    );
}

/// The serial of the certificate a new TLS connection to `url` is served, as openssl prints it.
fn served_serial(url: &str) -> String {
    let host = url.trim_start_matches("https://");
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("openssl s_client -connect {host} </dev/null 2>/dev/null | openssl x509 -noout -serial"),
        ])
        .output()
        .expect("openssl runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_replaced_serving_certificate_is_served_to_new_connections_without_a_restart() {
    // The data directory's CA (the harness trusts it) signs both serving certificates.
    let data = tempfile::tempdir().expect("a temp dir");
    let files = tempfile::tempdir().expect("a temp dir");
    sh(
        files.path(),
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 30 -subj /CN=test-ca \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,digitalSignature,cRLSign 2>/dev/null",
    );
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(files.path().join(f), data.path().join(f)).expect("copy the CA");
    }
    issue(files.path(), 10);
    let (cert, key) = (files.path().join("tls.crt"), files.path().join("tls.key"));
    let server = Server::launch_in(
        "cache-server",
        data,
        &[
            "--tls-cert-file",
            cert.to_str().unwrap_or_default(),
            "--tls-private-key-file",
            key.to_str().unwrap_or_default(),
        ],
    );
    assert_eq!(served_serial(&server.url), "serial=0A");

    issue(files.path(), 11);
    common::eventually("new connections get the renewed certificate", || {
        let serial = served_serial(&server.url);
        (serial == "serial=0B").then_some(()).ok_or(serial)
    });
    // Clients that trust the CA keep connecting.
    assert_eq!(server.readyz_code(), "200");
}
