//! An informer written with the official Python `kubernetes` client (installed into a venv under
//! the target directory on first use) syncs through the Replication VW: watch-list with the
//! initial-events-end bookmark, list + watch receiving a change written through the cache
//! server API, and recovery from a `410 Gone` by relisting.

mod common;

use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A Python with the `kubernetes` client: `$PYTHON_KUBERNETES`, else a venv made once.
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("PYTHON_KUBERNETES") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pyenv");
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let st = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(st.success(), "python3 -m venv failed");
        let st = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "kubernetes==37.0.2"])
            .status()
            .expect("pip runs");
        assert!(st.success(), "pip install kubernetes failed");
    }
    py
}

#[tokio::test]
async fn a_python_informer_syncs_watches_and_recovers_from_gone() {
    let s = Server::cloud_co();
    let mut child = Command::new(python())
        .arg(repo().join("tests/python/informer.py"))
        .arg(s.vw("cpuflavors-v1", TEAM_A))
        .arg(s.ca())
        .arg("alice-token")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the informer starts");
    let stdout = child.stdout.take().unwrap();
    let rx = line_reader(stdout);
    let stderr = child.stderr.take().unwrap();
    let errors = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = errors.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut e = sink.lock().unwrap();
            e.push_str(&line);
            e.push('\n');
        }
    });
    let next = || match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(e) => panic!(
            "the informer stopped reporting ({e}); its stderr:\n{}",
            errors.lock().unwrap()
        ),
    };
    let synced = next();
    assert!(synced.starts_with("WATCHLIST-SYNCED 3 "), "{synced}");
    let ready = next();
    assert!(ready.starts_with("READY "), "{ready}");

    // Change cpu-small as the shard would.
    let client = s.admin_client();
    let url = format!(
        "{}/{}",
        s.cache(PROVIDER, "cache.kcp.io/v1alpha1/cachedobjects"),
        replication_vw::model::naming::cached_object_name(
            "cloud.example.com",
            "v1",
            "cpuflavors",
            "",
            "cpu-small"
        )
    );
    let mut obj: serde_json::Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    obj["spec"]["raw"]["spec"]["cores"] = json!(6);
    assert_eq!(
        client.put(&url).json(&obj).send().await.unwrap().status(),
        200
    );

    assert_eq!(next(), "EVENT MODIFIED cpu-small 6");
    assert_eq!(next(), "RELISTED 3");
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", errors.lock().unwrap());
}
