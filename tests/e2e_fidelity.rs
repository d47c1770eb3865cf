//! End-to-end API fidelity with the real kubectl: printer columns, wide output, label and field
//! selectors, chunked lists, `explain` and `api-resources` through the Replication VW.

mod common;

use common::*;
use serde_json::json;

fn kubectl_get(s: &Server, args: &[&str]) -> std::process::Output {
    let mut c = s.kubectl_token(&s.vw("cpuflavors-v1", TEAM_A), Some("alice-token"));
    c.args(args);
    run(c)
}

#[test]
fn kubectl_get_prints_the_schemas_printer_columns_and_wide_output() {
    let s = Server::cloud_co();
    let out = kubectl_get(&s, &["get", "cpuflavors"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CORES", "ARCH", "AGE"], "{text}");
    let small: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("cpu-small"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(&small[..3], ["cpu-small", "2", "amd64"]);
    let out = kubectl_get(&s, &["get", "cpuflavors", "-o", "wide", "--show-labels"]);
    assert!(
        stdout(&out).contains("cloud.example.com/tier=small"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn label_and_field_selectors_narrow_the_list() {
    let s = Server::cloud_co();
    let out = kubectl_get(
        &s,
        &[
            "get",
            "cpuflavors",
            "-l",
            "cloud.example.com/tier in (small,large)",
            "-o",
            "name",
        ],
    );
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        [
            "cpuflavor.cloud.example.com/cpu-large",
            "cpuflavor.cloud.example.com/cpu-small"
        ]
    );
    let out = kubectl_get(
        &s,
        &[
            "get",
            "cpuflavors",
            "--field-selector",
            "metadata.name=cpu-medium",
            "-o",
            "name",
        ],
    );
    assert_eq!(
        stdout(&out).trim(),
        "cpuflavor.cloud.example.com/cpu-medium"
    );
    let out = kubectl_get(&s, &["get", "cpuflavors", "-l", "a b"]);
    assert!(
        stderr(&out).contains("unable to parse requirement"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_chunked_list_returns_every_flavor_exactly_once() {
    let s = Server::cloud_co();
    let client = s.admin_client();
    let base = s.cache(PROVIDER, "cache.kcp.io/v1alpha1/cachedobjects");
    for i in 0..9 {
        let src = json!({"apiVersion": "cloud.example.com/v1", "kind": "CPUFlavor",
            "metadata": {"name": format!("cpu-extra-{i}"), "uid": format!("u-{i}"), "resourceVersion": "9000",
                "labels": {"cloud.example.com/visibility": "Public"}, "annotations": {"kcp.io/cluster": PROVIDER}},
            "spec": {"cores": i + 1}});
        let w = replication_vw::controllers::wrap(
            &src,
            "cloud.example.com",
            "v1",
            "cpuflavors",
            "root",
        );
        assert_eq!(
            client.post(&base).json(&w).send().await.unwrap().status(),
            201
        );
    }
    let mut names = Vec::new();
    for _ in 0..100 {
        let out = kubectl_get(&s, &["get", "cpuflavors", "--chunk-size=2", "-o", "name"]);
        names = stdout(&out).lines().map(str::to_string).collect();
        if names.len() >= 12 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(names.len(), 12, "{names:?}");
    assert_eq!(unique.len(), 12);
    let out = kubectl_get(&s, &["get", "cpuflavors", "--chunk-size=2", "-v=6"]);
    assert!(
        stderr(&out).matches("continue=").count() >= 5,
        "kubectl paged through continue tokens"
    );
}

#[test]
fn kubectl_explain_prints_the_schema_of_the_served_kind() {
    let s = Server::cloud_co();
    let out = kubectl_get(&s, &["explain", "cpuflavors.spec"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("KIND:       CPUFlavor"), "{text}");
    assert!(text.contains("cores"), "{text}");
}

#[test]
fn api_resources_lists_the_served_resource_with_read_verbs_and_short_name() {
    let s = Server::cloud_co();
    let out = kubectl_get(&s, &["api-resources", "-o", "wide"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("cpuflavors"))
        .unwrap_or_default()
        .to_string();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &cols[..5],
        [
            "cpuflavors",
            "cpuf",
            "cloud.example.com/v1",
            "false",
            "CPUFlavor"
        ],
        "{line}"
    );
    assert!(
        line.contains("get,list,watch") || line.contains("[get list watch]"),
        "{line}"
    );
}
