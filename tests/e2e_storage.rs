//! End-to-end: the embedded default (`--storage local`) keeps its data across a real `kill -9`
//! and a restart on the same data directory, and does not seed over what the user changed.

mod common;

use common::{Server, TEAM_A, run_ok as run};
use std::process::Command;

fn cpu_small(server: &Server, jsonpath: &str) -> String {
    let mut c = server.kubectl_admin(&format!("{}/clusters/root:cloudco", server.url));
    c.args([
        "get",
        "cpuflavor",
        "cpu-small",
        "-o",
        &format!("jsonpath={jsonpath}"),
    ]);
    run(c)
}

/// `kubectl patch` cpu-small's `spec.cores` in the provider's workspace.
fn set_small_cores(server: &Server, cores: u32) {
    let mut patch = server.kubectl_admin(&format!("{}/clusters/root:cloudco", server.url));
    let body = format!(r#"{{"spec":{{"cores":{cores}}}}}"#);
    patch.args([
        "patch",
        "cpuflavor",
        "cpu-small",
        "--type=merge",
        "-p",
        &body,
    ]);
    run(patch);
}

/// The flavors team A's alice sees through the virtual workspace: `name=cores …`.
fn flavors(server: &Server) -> String {
    let mut list = server.kubectl_token(&server.vw("cpuflavors-v1", TEAM_A), Some("alice-token"));
    list.args([
        "get",
        "cpuflavors",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.cores} {end}",
    ]);
    run(list).trim().to_string()
}

#[test]
fn the_embedded_server_keeps_a_change_across_kill_9_and_does_not_seed_over_it() {
    let mut server = Server::cloud_co();
    set_small_cores(&server, 3);
    let rv = cpu_small(&server, "{.metadata.resourceVersion}");

    // Killed without warning, started again with the same command (and its --seed).
    server.crash_and_restart();
    server.wait_until_ready();

    assert_eq!(
        cpu_small(&server, "{.spec.cores}"),
        "3",
        "the change survived"
    );
    assert_eq!(
        cpu_small(&server, "{.metadata.resourceVersion}"),
        rv,
        "with the same resourceVersion"
    );
    assert_eq!(
        flavors(&server),
        "cpu-large=8 cpu-medium=4 cpu-small=3",
        "the virtual workspace serves the kept objects"
    );
}

/// The sum of the samples of metric `name` (every label set) in the server's `/metrics`.
fn metric_sum(server: &Server, name: &str) -> f64 {
    let admin = server.admin_client();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let text = rt.block_on(async {
        admin
            .get(format!("{}/metrics", server.url))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics text")
    });
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn after_kill_9_the_virtual_workspace_serves_what_it_validated_before_without_validating_it_again()
{
    let mut server = Server::cloud_co();
    let memo = server.data_dir.path().join("validated.memo");
    common::eventually(
        "the validation memo is written after the first sync",
        || memo.exists().then_some(()).ok_or("no memo yet".to_string()),
    );
    assert_eq!(
        metric_sum(&server, "replication_vw_memo_served_objects_total"),
        0.0
    );
    // Changed after the memo was written (it is written again only a minute later).
    set_small_cores(&server, 5);
    let changed = "cpu-large=8 cpu-medium=4 cpu-small=5";
    common::eventually("the change is replicated and served", || {
        let now = flavors(&server);
        (now == changed).then_some(()).ok_or(now)
    });

    server.crash_and_restart();
    server.wait_until_ready();

    let served = metric_sum(&server, "replication_vw_index_objects");
    let vouched = metric_sum(&server, "replication_vw_memo_served_objects_total");
    assert!(served >= 3.0, "the index serves the flavors ({served})");
    assert_eq!(
        vouched,
        served - 1.0,
        "every served object but the changed one was served on the memo's word"
    );
    assert_eq!(flavors(&server), changed);
}

/// `replication-vw snapshot …` with `args`; returns (success, stdout, stderr).
fn snapshot_cli(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_replication-vw"))
        .arg("snapshot")
        .args(args)
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `name=resourceVersion` of every ConfigMap in `root:cloudco`'s default namespace.
fn config_maps(server: &Server) -> std::collections::BTreeMap<String, String> {
    let mut c = server.kubectl_admin(&format!("{}/clusters/root:cloudco", server.url));
    c.args([
        "get",
        "configmaps",
        "-n",
        "default",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion} {end}",
    ]);
    run(c)
        .split_whitespace()
        .filter_map(|p| p.split_once('='))
        .filter(|(n, _)| n.starts_with("load-"))
        .map(|(n, rv)| (n.to_string(), rv.to_string()))
        .collect()
}

#[test]
fn a_snapshot_saved_under_write_load_restores_the_same_objects_and_resource_versions() {
    let server = Server::cloud_co();
    let client = server.admin_client();
    let url = format!(
        "{}/clusters/root:cloudco/api/v1/namespaces/default/configmaps",
        server.url
    );
    // One writer creating ConfigMaps one after the other until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut acked = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || acked < 20 {
                    let body = serde_json::json!({
                        "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": format!("load-{acked:05}")},
                        "data": {"n": acked.to_string()},
                    });
                    let r = client.post(&url).json(&body).send().await.unwrap();
                    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
                    acked += 1;
                }
                acked
            })
        })
    };
    // Let some writes land, then save while the writer goes on.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while config_maps(&server).len() < 5 {
        assert!(std::time::Instant::now() < deadline, "no write landed");
    }
    let scratch = tempfile::tempdir().unwrap();
    let snap = scratch.path().join("backup.snap");
    let (ok, out, err) = snapshot_cli(&[
        "save".as_ref(),
        snap.as_os_str(),
        "--data-dir".as_ref(),
        server.data_dir.path().as_os_str(),
    ]);
    assert!(ok, "save failed: {err}");
    assert!(
        out.contains("cache.db") && out.contains("workspaces.db"),
        "{out}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().unwrap();
    let original = config_maps(&server);
    assert_eq!(original.len(), acked);

    let restored_dir = tempfile::tempdir().unwrap();
    let target = restored_dir.path().join("data");
    let (ok, out, err) = snapshot_cli(&[
        "restore".as_ref(),
        snap.as_os_str(),
        "--data-dir".as_ref(),
        target.as_os_str(),
    ]);
    assert!(ok, "restore failed: {err}");
    assert!(out.contains("workspaces.db"), "{out}");
    // The restored directory becomes the new server's data directory (certificates are new).
    let data = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&target).unwrap() {
        let entry = entry.unwrap();
        std::fs::rename(entry.path(), data.path().join(entry.file_name())).unwrap();
    }
    let tokens = common::repo().join("examples/cloud-co/tokens.csv");
    let restored = Server::launch_in(
        "serve",
        data,
        &["--token-auth-file", tokens.to_str().unwrap()],
    );
    let back = config_maps(&restored);
    // A point in time of a sequential writer: the first k of its writes, each with the
    // resourceVersion the original server gave it.
    assert!(
        back.len() >= 5 && back.len() <= acked,
        "{} of {acked}",
        back.len()
    );
    let first_k: Vec<_> = original.iter().take(back.len()).collect();
    assert_eq!(back.iter().collect::<Vec<_>>(), first_k);
    assert_eq!(
        cpu_small(&restored, "{.metadata.resourceVersion}"),
        cpu_small(&server, "{.metadata.resourceVersion}")
    );
    let mut list =
        restored.kubectl_token(&restored.vw("cpuflavors-v1", TEAM_A), Some("alice-token"));
    list.args([
        "get",
        "cpuflavors",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert_eq!(run(list).trim(), "cpu-large cpu-medium cpu-small");
}

#[test]
fn a_restore_refuses_a_data_dir_in_use_and_a_damaged_or_truncated_file_and_changes_nothing() {
    let server = Server::cloud_co();
    let scratch = tempfile::tempdir().unwrap();
    let snap = scratch.path().join("backup.snap");
    let data_dir = server.data_dir.path().as_os_str();
    let (ok, _, err) = snapshot_cli(&[
        "save".as_ref(),
        snap.as_os_str(),
        "--data-dir".as_ref(),
        data_dir,
    ]);
    assert!(ok, "{err}");

    let before: Vec<_> = std::fs::read_dir(server.data_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let (ok, _, err) = snapshot_cli(&[
        "restore".as_ref(),
        snap.as_os_str(),
        "--data-dir".as_ref(),
        data_dir,
    ]);
    assert!(!ok);
    assert!(err.contains("not empty"), "{err}");
    let after: Vec<_> = std::fs::read_dir(server.data_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "the data dir in use is unchanged");

    let bytes = std::fs::read(&snap).unwrap();
    let truncated = scratch.path().join("truncated.snap");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let mut flipped = bytes.clone();
    let i = flipped.len() / 2;
    flipped[i] ^= 0x20;
    let damaged = scratch.path().join("damaged.snap");
    std::fs::write(&damaged, &flipped).unwrap();
    for file in [&truncated, &damaged] {
        let target = scratch.path().join("new");
        let (ok, _, err) = snapshot_cli(&[
            "restore".as_ref(),
            file.as_os_str(),
            "--data-dir".as_ref(),
            target.as_os_str(),
        ]);
        assert!(!ok, "{} was accepted", file.display());
        assert!(err.contains("not a usable snapshot"), "{err}");
        assert!(
            !target.exists(),
            "nothing was created for {}",
            file.display()
        );
    }
}
