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

/// The HTTP code `curl` gets for `/metrics` with the client certificate `dir/<name>.crt`
/// (`000` when the TLS handshake refuses it).
fn metrics_code_with_certificate(url: &str, ca: &Path, dir: &Path, name: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .arg("--cert")
        .arg(dir.join(format!("{name}.crt")))
        .arg("--key")
        .arg(dir.join(format!("{name}.key")))
        .arg(format!("{url}/metrics"))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_client_ca_bundle_replaced_on_disk_admits_the_new_cas_certificates_without_a_restart() {
    let files = tempfile::tempdir().expect("a temp dir");
    // A second CA, as a rotation brings, and a scraper's certificate it signed.
    sh(
        files.path(),
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout new-ca.key -out new-ca.crt -days 30 -subj /CN=rotated-ca \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,digitalSignature,cRLSign 2>/dev/null && \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout scraper.key -out scraper.csr -subj /O=system:monitoring/CN=scraper 2>/dev/null && \
         printf 'extendedKeyUsage=clientAuth\\n' > ext && \
         openssl x509 -req -in scraper.csr -CA new-ca.crt -CAkey new-ca.key -set_serial 7 -days 5 -extfile ext -out scraper.crt 2>/dev/null",
    );
    // The data directory's CA (it signs the admin certificate) is the bundle's first.
    sh(
        files.path(),
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 30 -subj /CN=test-ca \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,digitalSignature,cRLSign 2>/dev/null && \
         cp ca.crt client-ca.crt",
    );
    let data = tempfile::tempdir().expect("a temp dir");
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(files.path().join(f), data.path().join(f)).expect("copy the CA");
    }
    let bundle = files.path().join("client-ca.crt");
    let server = Server::launch_in(
        "cache-server",
        data,
        &["--client-ca-file", bundle.to_str().unwrap_or_default()],
    );
    let ca = server.ca();
    assert_eq!(
        metrics_code_with_certificate(&server.url, &ca, files.path(), "scraper"),
        "000",
        "a certificate of a CA the bundle lacks is refused"
    );
    // cert-manager adds the new CA to the bundle.
    let mut both = std::fs::read(&bundle).expect("bundle");
    both.extend(std::fs::read(files.path().join("new-ca.crt")).expect("new CA"));
    std::fs::write(files.path().join("bundle.tmp"), both).expect("write");
    std::fs::rename(files.path().join("bundle.tmp"), &bundle).expect("rename");
    common::eventually("the new CA's certificate is admitted", || {
        let code = metrics_code_with_certificate(&server.url, &ca, files.path(), "scraper");
        (code == "200").then_some(()).ok_or(code)
    });
    // The admin certificate (the first CA's) still authenticates.
    assert_eq!(server.readyz_code(), "200");
    let admin = server.admin_client();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let code = rt.block_on(async { admin.get(format!("{}/metrics", server.url)).send().await });
    assert_eq!(code.expect("admin scrape").status(), 200);
}

#[test]
fn a_virtual_workspace_presents_its_renewed_client_certificate_without_a_restart() {
    let files = tempfile::tempdir().expect("a temp dir");
    let dir = files.path();
    // Two CAs the cache server trusts, and a certificate of each for the virtual workspace.
    sh(
        dir,
        "for n in 1 2; do \
           openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca$n.key -out ca$n.crt -days 30 -subj /CN=client-ca-$n \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,digitalSignature,cRLSign 2>/dev/null && \
           openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout vw$n.key -out vw$n.csr -subj /O=system:masters/CN=vw-$n 2>/dev/null && \
           printf 'extendedKeyUsage=clientAuth\\n' > ext && \
           openssl x509 -req -in vw$n.csr -CA ca$n.crt -CAkey ca$n.key -set_serial $n -days 5 -extfile ext -out vw$n.crt 2>/dev/null || exit 1; \
         done && cat ca1.crt ca2.crt > bundle.crt && cp vw1.crt client.crt && cp vw1.key client.key",
    );
    let bundle = dir.join("bundle.crt");
    let cache = Server::launch(
        "cache-server",
        &[
            "--client-ca-file",
            bundle.to_str().unwrap_or_default(),
            "--log-requests",
            "--log-format",
            "json",
        ],
    );
    let kubeconfig = dir.join("cache.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: cache\nclusters:\n- name: cache\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: vw\n  user:\n    client-certificate: client.crt\n    client-key: client.key\ncontexts:\n- name: cache\n  context:\n    cluster: cache\n    user: vw\n",
            cache.url,
            cache.ca().display()
        ),
    )
    .expect("kubeconfig");
    let _vw = Server::launch(
        "virtual-workspace",
        &[
            "--cache-kubeconfig",
            kubeconfig.to_str().unwrap_or_default(),
        ],
    );
    let seen = cache.wait_for_log("\"user\":\"vw-1\"");
    assert!(seen.contains("\"user\":\"vw-1\""), "{seen}");
    // The renewal: key and certificate replaced one after the other.
    sh(
        dir,
        "cp vw2.key client.key.new && mv client.key.new client.key && cp vw2.crt client.crt.new && mv client.crt.new client.crt",
    );
    let seen = cache.wait_for_log("\"user\":\"vw-2\"");
    assert!(
        seen.contains("\"user\":\"vw-2\""),
        "the virtual workspace never presented the renewed certificate:\n{seen}"
    );
}
