//! End-to-end: the release-built binary on a loopback port, driven by the real kubectl v1.34
//! through the Replication virtual workspace, with changes written through the cache server API
//! the way a kcp shard writes them.

mod common;

use common::*;
use replication_vw::model::naming::cached_object_name;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};

const CPU: &str = "cloud.example.com/v1";

fn co_url(s: &Server, name: &str) -> String {
    format!(
        "{}/{}",
        s.cache(PROVIDER, "cache.kcp.io/v1alpha1/cachedobjects"),
        cached_object_name("cloud.example.com", "v1", "cpuflavors", "", name)
    )
}

/// Change a cached flavor's inner object through the cache server API, as the shard's
/// replication controller would after a source update.
async fn update_flavor(s: &Server, name: &str, change: impl FnOnce(&mut Value)) {
    let client = s.admin_client();
    let url = co_url(s, name);
    let mut obj: Value = client
        .get(&url)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    change(&mut obj["spec"]["raw"]);
    let rv =
        obj["spec"]["raw"]["metadata"]["annotations"]["cache.kcp.io/original-resource-version"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
    obj["spec"]["raw"]["metadata"]["annotations"]["cache.kcp.io/original-resource-version"] =
        json!((rv + 1).to_string());
    let resp = client.put(&url).json(&obj).send().await.unwrap();
    assert!(
        resp.status().is_success(),
        "PUT {url}: {}",
        resp.text().await.unwrap()
    );
}

/// Poll kubectl until `check` accepts its output.
fn eventually(
    mut attempt: impl FnMut() -> std::process::Output,
    check: impl Fn(&std::process::Output) -> bool,
) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = attempt();
        if check(&out) || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kubectl_lists_the_three_public_cpu_flavors_of_a_bound_consumer() {
    let s = Server::cloud_co();
    let mut c = s.kubectl_admin(&s.vw("cpuflavors-v1", TEAM_A));
    c.args([
        "get",
        "cpuflavors",
        "--no-headers",
        "-o",
        "custom-columns=NAME:.metadata.name",
    ]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(names, ["cpu-large", "cpu-medium", "cpu-small"]);
    // Human output has three rows and a header.
    let mut c = s.kubectl_admin(&s.vw("cpuflavors-v1", TEAM_A));
    c.args(["get", "cpuflavors"]);
    let out = run(c);
    assert_eq!(stdout(&out).lines().count(), 4, "{}", stdout(&out));
    assert!(stdout(&out).starts_with("NAME"));
}

#[tokio::test]
async fn a_served_flavor_carries_only_the_consumer_cluster_annotation_and_its_original_uid() {
    let s = Server::cloud_co();
    let mut c = s.kubectl_admin(&s.vw("cpuflavors-v1", TEAM_A));
    c.args(["get", "cpuflavor", "cpu-small", "-o", "json"]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    let obj: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        obj["metadata"]["annotations"],
        json!({"kcp.io/cluster": TEAM_A})
    );
    assert_eq!(obj["kind"], "CPUFlavor");
    assert_eq!(obj["apiVersion"], CPU);
    let cached: Value = s
        .admin_client()
        .get(co_url(&s, "cpu-small"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let original_uid =
        &cached["spec"]["raw"]["metadata"]["annotations"]["cache.kcp.io/original-resource-UID"];
    assert!(original_uid.as_str().is_some_and(|u| !u.is_empty()));
    assert_eq!(&obj["metadata"]["uid"], original_uid);
}

#[test]
fn a_flavor_outside_the_selector_is_not_found() {
    let s = Server::cloud_co();
    let mut c = s.kubectl_admin(&s.vw("cpuflavors-v1", TEAM_A));
    c.args(["get", "cpuflavor", "cpu-internal"]);
    let out = run(c);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "Error from server (NotFound): cpuflavors.cloud.example.com \"cpu-internal\" not found"
        ),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_running_watch_sees_a_change_written_through_the_cache_server() {
    let s = Server::cloud_co();
    let mut c = s.kubectl_admin(&s.vw("cpuflavors-v1", TEAM_A));
    c.args([
        "get",
        "cpuflavors",
        "-w",
        "-o",
        "jsonpath={.metadata.name}={.spec.cores}{\"\\n\"}",
    ]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let rx = line_reader(stdout);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(
            rx.recv_timeout(Duration::from_secs(20))
                .expect("initial rows"),
        );
    }
    assert!(seen.contains(&"cpu-small=2".to_string()), "{seen:?}");
    update_flavor(&s, "cpu-small", |raw| raw["spec"]["cores"] = json!(3)).await;
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the change arrives");
    assert_eq!(line, "cpu-small=3");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn delete_is_refused_and_the_flavor_is_still_served() {
    let s = Server::cloud_co();
    let vw = s.vw("cpuflavors-v1", TEAM_A);
    let mut c = s.kubectl_admin(&vw);
    c.args(["delete", "cpuflavor", "cpu-small"]);
    let out = run(c);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Error from server (MethodNotAllowed): delete is not supported on resources of kind \"cpuflavors.cloud.example.com\""),
        "{}",
        stderr(&out)
    );
    let mut c = s.kubectl_token(&vw, Some("alice-token"));
    c.args(["delete", "cpuflavor", "cpu-small"]);
    let out = run(c);
    assert!(
        stderr(&out).contains("Error from server (Forbidden)"),
        "{}",
        stderr(&out)
    );
    let mut c = s.kubectl_admin(&vw);
    c.args(["get", "cpuflavor", "cpu-small", "-o", "name"]);
    let out = run(c);
    assert_eq!(stdout(&out).trim(), "cpuflavor.cloud.example.com/cpu-small");
}

#[test]
fn alice_reads_team_a_but_team_b_bob_and_anonymous_callers_are_refused() {
    let s = Server::cloud_co();
    let mut c = s.kubectl_token(&s.vw("cpuflavors-v1", TEAM_A), Some("alice-token"));
    c.args(["get", "cpuflavors", "-o", "name"]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 3);

    let mut c = s.kubectl_token(&s.vw("cpuflavors-v1", TEAM_B), Some("alice-token"));
    c.args(["get", "cpuflavors"]);
    let out = run(c);
    assert!(
        stderr(&out).contains("Error from server (Forbidden)"),
        "team-b: {}",
        stderr(&out)
    );

    let mut c = s.kubectl_token(&s.vw("cpuflavors-v1", TEAM_A), Some("bob-token"));
    c.args(["get", "cpuflavors"]);
    let out = run(c);
    assert!(
        stderr(&out).contains("Error from server (Forbidden)"),
        "bob: {}",
        stderr(&out)
    );

    let mut c = s.kubectl_token(&s.vw("cpuflavors-v1", TEAM_A), None);
    c.args(["get", "cpuflavors"]);
    let out = run(c);
    assert!(!out.status.success());
    assert!(!stdout(&out).contains("cpu-small"));
}

#[tokio::test]
async fn an_object_that_fails_its_schema_is_not_served_while_the_others_are() {
    let s = Server::cloud_co();
    let client = s.admin_client();
    let base = s.cache(PROVIDER, "cache.kcp.io/v1alpha1/cachedobjects");
    let flavor = |name: &str, cores: Value| {
        let src = json!({"apiVersion": CPU, "kind": "CPUFlavor",
            "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "5000",
                "labels": {"cloud.example.com/visibility": "Public"}, "annotations": {"kcp.io/cluster": PROVIDER}},
            "spec": {"cores": cores}});
        replication_vw::controllers::wrap(&src, "cloud.example.com", "v1", "cpuflavors", "root")
    };
    for (name, cores) in [("cpu-broken", json!("many")), ("cpu-new", json!(32))] {
        let r = client
            .post(&base)
            .json(&flavor(name, cores))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let vw = s.vw("cpuflavors-v1", TEAM_A);
    let out = eventually(
        || {
            let mut c = s.kubectl_admin(&vw);
            c.args(["get", "cpuflavors", "-o", "name"]);
            run(c)
        },
        |o| stdout(o).contains("cpu-new"),
    );
    let names = stdout(&out);
    assert!(
        names.contains("cpuflavor.cloud.example.com/cpu-new"),
        "{names}"
    );
    assert!(!names.contains("cpu-broken"), "{names}");
    assert_eq!(names.lines().count(), 4, "{names}");
    let mut c = s.kubectl_admin(&vw);
    c.args(["get", "cpuflavor", "cpu-broken"]);
    assert!(stderr(&run(c)).contains("NotFound"));
    let logs = s.wait_for_log("Not serving a cached object");
    assert!(logs.contains("Not serving a cached object"), "{logs}");
}

#[test]
fn the_server_logs_a_ready_to_paste_kubectl_command_per_endpoint_and_consumer() {
    let s = Server::cloud_co();
    let logs = s.wait_for_log("get cpuflavors");
    let want = format!(
        "kubectl --kubeconfig {} --server {}/services/replication/{PROVIDER}/cpuflavors-v1/clusters/{TEAM_A} get cpuflavors",
        s.kubeconfig().display(),
        s.url
    );
    assert!(logs.contains(&want), "missing {want:?} in\n{logs}");
}
