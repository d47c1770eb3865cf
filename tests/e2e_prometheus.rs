//! End-to-end: a real Prometheus (the distribution's `prometheus` package) scrapes every role —
//! a `cache-server`, a shard writing into it and a standalone `virtual-workspace` — over TLS with
//! a bearer token of the `system:monitoring` group, as `deploy/README.md` documents; every
//! target is `up`, and a `histogram_quantile` over the request latency has an answer.

mod common;

use common::{Server, TEAM_A, eventually, repo};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn query(base: &str, promql: &str) -> Result<serde_json::Value, String> {
    let out = Command::new("curl")
        .args(["-s", "--get", "--data-urlencode"])
        .arg(format!("query={promql}"))
        .arg(format!("{base}/api/v1/query"))
        .output()
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn a_real_prometheus_scrapes_every_role_and_answers_a_latency_quantile() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "alice-token,alice,alice-uid,\"cloudco-customers\"\nprom-token,prometheus,prom-uid,\"system:monitoring\"\n",
    )
    .expect("tokens");
    let tokens = tokens.display().to_string();
    let cache = Server::launch("cache-server", &["--token-auth-file", &tokens]);
    let ck = cache.kubeconfig().display().to_string();
    let seed = repo().join("examples/cloud-co").display().to_string();
    let shard = Server::launch(
        "serve",
        &[
            "--cache-kubeconfig",
            &ck,
            "--seed",
            &seed,
            "--token-auth-file",
            &tokens,
        ],
    );
    let vw = Server::launch(
        "virtual-workspace",
        &["--cache-kubeconfig", &ck, "--token-auth-file", &tokens],
    );
    // Some reads, so the latency histogram has observations.
    eventually("alice lists through the virtual workspace", || {
        let mut c = vw.kubectl_token(&vw.vw("cpuflavors-v1", TEAM_A), Some("alice-token"));
        c.args(["get", "cpuflavors", "-o", "name"]);
        let out = c.output().map_err(|e| e.to_string())?;
        (String::from_utf8_lossy(&out.stdout).lines().count() == 3)
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
    });

    // The scrape config of deploy/README.md: TLS with each server's CA, a bearer token.
    let mut config = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n");
    for (job, server) in [
        ("cache-server", &cache),
        ("shard", &shard),
        ("virtual-workspace", &vw),
    ] {
        config.push_str(&format!(
            "- job_name: {job}\n  scheme: https\n  metrics_path: /metrics\n  authorization:\n    credentials: prom-token\n  tls_config:\n    ca_file: {}\n  static_configs:\n  - targets: ['{}']\n",
            server.ca().display(),
            server.url.trim_start_matches("https://")
        ));
    }
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(&config_file, config).expect("config");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts (apt-get install -y prometheus)"),
    );
    let base = format!("http://127.0.0.1:{port}");
    eventually("every role is up", || {
        let v = query(&base, "up")?;
        let up: Vec<(String, String)> = v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["metric"]["job"].as_str().unwrap_or_default().to_string(),
                    r["value"][1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        (up.len() == 3 && up.iter().all(|(_, v)| v == "1"))
            .then_some(())
            .ok_or(format!("{up:?}"))
    });
    eventually("a latency quantile has an answer", || {
        let v = query(
            &base,
            "histogram_quantile(0.99, sum by (le) (rate(replication_vw_request_duration_seconds_bucket[1m])))",
        )?;
        let results = v["data"]["result"].as_array().cloned().unwrap_or_default();
        results
            .iter()
            .any(|r| r["value"][1].as_str().is_some_and(|x| x != "NaN"))
            .then_some(())
            .ok_or(format!("{v}"))
    });
    // Each family an operator reads has series, from the role that owns it.
    for (job, family) in [
        ("virtual-workspace", "replication_vw_requests_total"),
        ("virtual-workspace", "replication_vw_requests_in_flight"),
        ("virtual-workspace", "replication_vw_index_objects"),
        ("virtual-workspace", "replication_vw_index_revision"),
        (
            "virtual-workspace",
            "replication_vw_watch_frames_sent_total",
        ),
        ("virtual-workspace", "replication_vw_remote_up"),
        (
            "virtual-workspace",
            "replication_vw_remote_sync_lag_seconds",
        ),
        (
            "virtual-workspace",
            "replication_vw_connections_closed_write_stall_total",
        ),
        ("cache-server", "replication_vw_store_revision"),
        (
            "cache-server",
            "replication_vw_store_request_duration_seconds_count",
        ),
        ("shard", "replication_vw_controller_passes_total"),
        (
            "shard",
            "replication_vw_store_request_duration_seconds_count",
        ),
    ] {
        eventually(&format!("{family} of the {job}"), || {
            let v = query(&base, &format!("{family}{{job=\"{job}\"}}"))?;
            let n = v["data"]["result"].as_array().map_or(0, Vec::len);
            (n > 0).then_some(()).ok_or(format!("{v}"))
        });
    }
    let v = query(&base, "replication_vw_remote_up{job=\"virtual-workspace\"}").expect("query");
    assert_eq!(v["data"]["result"][0]["metric"]["source"], "cache", "{v}");
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{v}");
}
