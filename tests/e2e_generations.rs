//! End-to-end: the kcp v0.32 and main generations of the cached-resource types next to v0.30's,
//! driven with the real kubectl against `serve --seed examples/cloud-co` (issue 14; grows with it).

mod common;

use common::{PROVIDER, Server, run_ok as run};
use std::io::Write;
use std::process::{Command, Stdio};

/// `kubectl <verb> -f -` of `manifest` in `root:cloudco`.
fn with_manifest(server: &Server, verb: &str, manifest: &str) -> std::process::Output {
    let mut c = kubectl(server, &[verb, "-f", "-"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("kubectl starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(manifest.as_bytes())
        .expect("kubectl reads the manifest");
    child.wait_with_output().expect("kubectl runs")
}

/// `kubectl apply -f -` of `manifest` in `root:cloudco`, which must succeed.
fn apply(server: &Server, manifest: &str) -> String {
    let out = with_manifest(server, "apply", manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kubectl(server: &Server, args: &[&str]) -> Command {
    let mut c = server.kubectl_admin(&format!("{}/clusters/root:cloudco", server.url));
    c.args(args);
    c
}

#[test]
fn kcp_mains_cluster_cached_resource_and_its_slice_are_served_with_kubectl() {
    let server = Server::cloud_co();
    let out = apply(
        &server,
        r#"apiVersion: cache.kcp.io/v1alpha1
kind: ClusterCachedResource
metadata:
  name: cpuflavors-main
spec:
  group: cloud.example.com
  version: v1
  resource: cpuflavors
---
apiVersion: cache.kcp.io/v1alpha1
kind: ClusterCachedResourceEndpointSlice
metadata:
  name: cpuflavors
spec:
  clusterCachedResource:
    name: cpuflavors-main
  export:
    name: compute
"#,
    );
    assert!(
        out.contains("clustercachedresource.cache.kcp.io/cpuflavors-main created"),
        "{out}"
    );
    let table = run(kubectl(&server, &["get", "clustercachedresources"]));
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "RESOURCE", "AGE"], "{table}");
    assert!(table.contains("cpuflavors-main   cpuflavors"), "{table}");
    let slices = run(kubectl(
        &server,
        &["get", "clustercachedresourceendpointslices", "-o", "wide"],
    ));
    assert!(slices.contains("CLUSTERCACHEDRESOURCE"), "{slices}");
    assert!(slices.contains("cpuflavors-main"), "{slices}");
    let explained = run(kubectl(
        &server,
        &["explain", "clustercachedresourceendpointslices.spec.export"],
    ));
    assert!(explained.contains("APIExport"), "{explained}");
    // The controller takes it through kcp main's pipeline: finalizer, kind and scope
    // annotations, identity, then the flavors written into the cache as themselves.
    let jsonpath = "{.metadata.finalizers[0]} {.metadata.annotations.cache\\.kcp\\.io/resource-kind} \
                    {.metadata.annotations.cache\\.kcp\\.io/resource-scope} {.status.phase} \
                    {.status.resourceCounts.cache} {.status.identityHash}";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let hash = loop {
        let got = run(kubectl(
            &server,
            &[
                "get",
                "clustercachedresource",
                "cpuflavors-main",
                "-o",
                &format!("jsonpath={jsonpath}"),
            ],
        ));
        let fields: Vec<&str> = got.split_whitespace().collect();
        if let [
            "cache.kcp.io/clustercachedresource",
            "CPUFlavor",
            "Cluster",
            "Ready",
            "4",
            hash,
        ] = fields.as_slice()
        {
            break hash.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ClusterCachedResource never got ready: {got}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut raw = server.kubectl_admin(&server.url);
    raw.args([
        "get",
        "--raw",
        &format!("/services/cache/shards/*/clusters/*/apis/cloud.example.com/v1/cpuflavors:{hash}"),
    ]);
    let stored: serde_json::Value = serde_json::from_str(&run(raw)).expect("a list");
    let items = stored["items"].as_array().expect("items");
    // No label selector: every flavor, the private one included (the v0.30 CachedResource of
    // the example selects the three Public ones).
    assert_eq!(items.len(), 4, "{stored}");
    for item in items {
        assert_eq!(item["kind"], "CPUFlavor");
        let annotations = &item["metadata"]["annotations"];
        assert_eq!(annotations["kcp.io/cluster"], PROVIDER);
        assert!(
            annotations["cache.kcp.io/original-resource-version"].is_string(),
            "{item}"
        );
        assert!(
            item.get("spec").is_some(),
            "stored as itself, not wrapped: {item}"
        );
    }

    // Admission as kcp main's: one ClusterCachedResource per GVR once the first is reconciled;
    // creating the same name again is the usual 409.
    let create = |name: &str| {
        let out = with_manifest(
            &server,
            "create",
            &format!(
                "apiVersion: cache.kcp.io/v1alpha1\nkind: ClusterCachedResource\nmetadata:\n  name: {name}\nspec:\n  group: cloud.example.com\n  version: v1\n  resource: cpuflavors\n"
            ),
        );
        assert!(!out.status.success(), "{name} was created");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let second = create("cpuflavors-again");
    assert!(
        second.contains("ClusterCachedResource with this GVR already exists in the \"1p5f2x8rkq0vd7wz\" workspace"),
        "{second}"
    );
    let again = create("cpuflavors-main");
    assert!(again.contains("AlreadyExists"), "{again}");
    // The generation a CachedResource follows is fixed at creation.
    let mut annotate = kubectl(
        &server,
        &[
            "annotate",
            "cachedresource",
            "cpuflavors-v1",
            "replication-vw.dev/generation=v0.32",
        ],
    );
    annotate.stderr(Stdio::piped()).stdout(Stdio::piped());
    let refused = annotate.output().expect("kubectl runs");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("cannot be changed"), "{err}");

    // The slice's conditions (kcp-head §3.3): its resource exists, but the example's compute
    // export references the v0.30 slice, not this one.
    let condition = |slice: &str, type_: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let got = run(kubectl(
                &server,
                &[
                    "get",
                    "clustercachedresourceendpointslice",
                    slice,
                    "-o",
                    &format!(
                        "jsonpath={{.status.conditions[?(@.type==\"{type_}\")].status}}|{{.status.conditions[?(@.type==\"{type_}\")].message}}"
                    ),
                ],
            ));
            if !got.starts_with('|') {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{slice} never got {type_}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    assert_eq!(condition("cpuflavors", "ResourceValid"), "True|");
    assert_eq!(
        condition("cpuflavors", "APIExportValid"),
        "False|APIExport 1p5f2x8rkq0vd7wz|compute does not reference this ClusterCachedResourceEndpointSlice"
    );
    apply(
        &server,
        "apiVersion: cache.kcp.io/v1alpha1\nkind: ClusterCachedResourceEndpointSlice\nmetadata:\n  name: dangling\nspec:\n  clusterCachedResource:\n    name: nothing-here\n  export:\n    name: compute\n",
    );
    assert_eq!(
        condition("dangling", "ResourceValid"),
        "False|Error getting ClusterCachedResource 1p5f2x8rkq0vd7wz|nothing-here"
    );

    // The generic replication copies both into the cache server, as kcp main's shards do.
    for resource in [
        "clustercachedresources",
        "clustercachedresourceendpointslices",
    ] {
        let raw = format!(
            "/services/cache/shards/root/clusters/{PROVIDER}/apis/cache.kcp.io/v1alpha1/{resource}"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut get = server.kubectl_admin(&server.url);
            get.args(["get", "--raw", &raw]);
            let list = run(get);
            if list.contains("cpuflavors") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{resource} not replicated: {list}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
