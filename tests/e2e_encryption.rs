//! End-to-end: encryption at rest with `--encryption-provider-config` on the embedded default
//! store — nothing readable under the data directory, kubectl reads everything back, a key
//! rotation (new key first, restart, `storage rewrite`, old key dropped) leaves only the new key,
//! and a bad configuration stops the start with a message naming the entry.

mod common;

use common::{Server, TEAM_A, run_ok as run};
use std::path::Path;
use std::process::Command;

const KEY1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const KEY2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
/// The Secret's value, and the annotation put on a replicated object.
const SECRET_VALUE: &str = "s3cret-Marker-7f3a9c";
const REPLICATED_VALUE: &str = "replicated-Marker-5b1e44";

/// An EncryptionConfiguration with aescbc for Secrets and for every other resource, with the
/// given keys in order.
fn write_config(path: &Path, keys: &[(&str, &str)]) {
    let keys: String = keys
        .iter()
        .map(|(name, secret)| {
            format!("\n              - name: {name}\n                secret: {secret}")
        })
        .collect();
    let provider = format!("      - aescbc:\n          keys:{keys}\n")
        .replace("\n              ", "\n            ");
    let text = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{provider}  - resources: [\"*.*\"]\n    providers:\n{provider}"
    );
    std::fs::write(path, text).unwrap();
}

/// Every file under `dir` (recursively) that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

fn base64(s: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("base64")
        .args(["-w", "0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

fn secret_field(server: &Server, jsonpath: &str) -> String {
    let mut c = server.kubectl_admin(&format!("{}/clusters/root:cloudco", server.url));
    c.args([
        "get",
        "secret",
        "db-password",
        "-n",
        "default",
        "-o",
        &format!("jsonpath={jsonpath}"),
    ]);
    run(c)
}

/// The marker annotation of `cpu-small` as the virtual workspace serves it to team A.
fn replicated_marker(server: &Server) -> String {
    let mut c = server.kubectl_token(&server.vw("cpuflavors-v1", TEAM_A), Some("alice-token"));
    c.args([
        "get",
        "cpuflavor",
        "cpu-small",
        "-o",
        "jsonpath={.metadata.annotations.e2e/marker}",
    ]);
    run(c)
}

/// `replication_vw_store_stale_records` of each store, from `/metrics`.
fn stale_records(server: &Server) -> Vec<(String, u64)> {
    let mut c = server.kubectl_admin(&server.url);
    c.args(["get", "--raw", "/metrics"]);
    run(c)
        .lines()
        .filter_map(|l| l.strip_prefix("replication_vw_store_stale_records{store=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(store, n)| (store.to_string(), n.trim().parse().unwrap()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect()
}

fn assert_nothing_readable(dir: &Path) {
    for needle in [
        SECRET_VALUE.to_string(),
        base64(SECRET_VALUE),
        REPLICATED_VALUE.to_string(),
    ] {
        assert_eq!(
            files_containing(dir, needle.as_bytes()),
            Vec::<String>::new(),
            "{needle:?} is readable on disk"
        );
    }
}

#[test]
fn with_aescbc_nothing_is_readable_on_disk_and_a_key_rotation_leaves_only_the_new_key() {
    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("encryption.yaml");
    write_config(&config, &[("key1", KEY1)]);
    let repo = common::repo();
    let mut server = Server::launch(
        "serve",
        &[
            "--seed",
            repo.join("examples/cloud-co").to_str().unwrap(),
            "--token-auth-file",
            repo.join("examples/cloud-co/tokens.csv").to_str().unwrap(),
            "--encryption-provider-config",
            config.to_str().unwrap(),
        ],
    );
    let cloudco = format!("{}/clusters/root:cloudco", server.url);
    let mut create = server.kubectl_admin(&cloudco);
    create.args([
        "create",
        "secret",
        "generic",
        "db-password",
        "-n",
        "default",
        &format!("--from-literal=password={SECRET_VALUE}"),
    ]);
    run(create);
    let mut annotate = server.kubectl_admin(&cloudco);
    annotate.args([
        "annotate",
        "cpuflavor",
        "cpu-small",
        &format!("e2e/marker={REPLICATED_VALUE}"),
    ]);
    run(annotate);
    // Replication is asynchronous: wait until the virtual workspace serves the annotation.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while replicated_marker(&server) != REPLICATED_VALUE {
        assert!(
            std::time::Instant::now() < deadline,
            "the annotation never reached the virtual workspace"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    assert_eq!(
        secret_field(&server, "{.data.password}"),
        base64(SECRET_VALUE)
    );
    let data = server.data_dir.path().to_path_buf();
    assert_nothing_readable(&data);
    assert!(!files_containing(&data, b"k8s:enc:aescbc:v1:key1:").is_empty());

    // Rotation, step 1: the new key first, the old one still listed; restart.
    write_config(&config, &[("key2", KEY2), ("key1", KEY1)]);
    server.kill();
    server.restart();
    server.wait_until_ready();
    assert_eq!(
        secret_field(&server, "{.data.password}"),
        base64(SECRET_VALUE)
    );
    let stale = stale_records(&server);
    assert!(
        stale.len() == 2 && stale.iter().all(|(_, n)| *n > 0),
        "every store has values under the old key: {stale:?}"
    );
    // An update that changes nothing still rewrites a stale value (a new resourceVersion).
    let before = secret_field(&server, "{.metadata.resourceVersion}");
    let mut get = server.kubectl_admin(&cloudco);
    get.args([
        "get",
        "secret",
        "db-password",
        "-n",
        "default",
        "-o",
        "json",
    ]);
    let current = scratch.path().join("secret.json");
    std::fs::write(&current, run(get)).unwrap();
    let mut replace = server.kubectl_admin(&cloudco);
    replace.args(["replace", "-f", current.to_str().unwrap()]);
    run(replace);
    assert_ne!(
        secret_field(&server, "{.metadata.resourceVersion}"),
        before,
        "kubectl replace of an unchanged stale Secret wrote it again"
    );

    // Step 2: with the server stopped, write everything again under the new key.
    server.kill();
    let out = Command::new(env!("CARGO_BIN_EXE_replication-vw"))
        .args(["storage", "rewrite", "--data-dir"])
        .arg(&data)
        .arg("--encryption-provider-config")
        .arg(&config)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("cache.db") && printed.contains("workspaces.db"),
        "{printed}"
    );

    // Step 3: the old key is dropped; everything is still served.
    write_config(&config, &[("key2", KEY2)]);
    server.restart();
    server.wait_until_ready();
    assert_eq!(
        secret_field(&server, "{.data.password}"),
        base64(SECRET_VALUE)
    );
    assert_eq!(replicated_marker(&server), REPLICATED_VALUE);
    let mut list = server.kubectl_token(&server.vw("cpuflavors-v1", TEAM_A), Some("alice-token"));
    list.args([
        "get",
        "cpuflavors",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert_eq!(run(list).trim(), "cpu-large cpu-medium cpu-small");
    assert_eq!(
        files_containing(&data, b"k8s:enc:aescbc:v1:key1:"),
        Vec::<String>::new(),
        "a value is still under the old key"
    );
    assert!(!files_containing(&data, b"k8s:enc:aescbc:v1:key2:").is_empty());
    assert_nothing_readable(&data);
    assert_eq!(
        stale_records(&server),
        vec![("cache".to_string(), 0), ("workspaces".to_string(), 0)]
    );
}

#[test]
fn a_configuration_with_a_key_of_the_wrong_size_stops_the_start_naming_the_entry() {
    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("encryption.yaml");
    // 16 bytes is a valid AES key; 5 is not.
    std::fs::write(
        &config,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: short\n              secret: c2hvcnQ=\n",
    )
    .unwrap();
    for role in ["serve", "cache-server"] {
        let data = scratch.path().join(role);
        let out = Command::new(env!("CARGO_BIN_EXE_replication-vw"))
            .args([role, "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--encryption-provider-config")
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{role} started");
        assert!(
            err.contains("resources[0].providers[0].aescbc.keys[0]") && err.contains("short"),
            "{role}: {err}"
        );
        assert!(!data.join("cache.db").exists(), "{role} created a store");
    }
}
