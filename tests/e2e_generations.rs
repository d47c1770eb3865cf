//! End-to-end: the kcp v0.32 and main generations of the cached-resource types next to v0.30's,
//! driven with the real kubectl against `serve --seed examples/cloud-co` (issue 14; grows with it).

mod common;

use common::{KubectlWatch, PROVIDER, Server, eventually, run_ok as run};
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

/// `kubectl <args>` in `root:cloudco`, which must fail; its stderr.
fn kubectl_refused(server: &Server, args: &[&str]) -> String {
    let mut c = kubectl(server, args);
    c.stderr(Stdio::piped()).stdout(Stdio::piped());
    let out = c.output().expect("kubectl runs");
    assert!(!out.status.success(), "kubectl {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
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
    let err = kubectl_refused(
        &server,
        &[
            "annotate",
            "cachedresource",
            "cpuflavors-v1",
            "replication-vw.dev/generation=v0.32",
        ],
    );
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

    // The slice's references are required and fixed (kcp's CEL `self == oldSelf`).
    let refused = with_manifest(
        &server,
        "create",
        "apiVersion: cache.kcp.io/v1alpha1\nkind: ClusterCachedResourceEndpointSlice\nmetadata:\n  name: no-export\nspec:\n  clusterCachedResource:\n    name: cpuflavors-main\n",
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("spec.export.name: Required value"), "{err}");
    let err = kubectl_refused(
        &server,
        &[
            "patch",
            "clustercachedresourceendpointslice",
            "cpuflavors",
            "--type=merge",
            "-p",
            r#"{"spec":{"export":{"name":"another"}}}"#,
        ],
    );
    assert!(
        err.contains("APIExport reference must not be changed"),
        "{err}"
    );
    // Endpoints select shards with matchAll or a selector, never both (kcp-head §3.1).
    let err = kubectl_refused(
        &server,
        &[
            "patch",
            "clustercachedresourceendpointslice",
            "cpuflavors",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"endpoints":[{"url":"https://vw.example","shards":{"matchAll":true,"selector":{"matchLabels":{"region":"eu"}}}}]}}"#,
        ],
    );
    assert!(
        err.contains("status.endpoints[0].shards: Invalid value: \"object\": matchAll and selector are mutually exclusive"),
        "{err}"
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

/// One generation's example: (directory, provider path, provider cluster, consumer path,
/// consumer cluster, the URL key of the CPU flavors).
const GENERATIONS: [(&str, &str, &str, &str, &str, &str); 3] = [
    (
        "cloud-co",
        "root:cloudco",
        PROVIDER,
        "root:team-a",
        common::TEAM_A,
        "cpuflavors-v1",
    ),
    (
        "cloud-co-v032",
        "root:cloudco-v032",
        "8v032provcloudco",
        "root:team-a-v032",
        "8v032teamaconsmr",
        "cpuflavors",
    ),
    (
        "cloud-co-main",
        "root:cloudco-main",
        "9mainprovcloudco",
        "root:team-a-main",
        "9mainteamaconsmr",
        "cpuflavors",
    ),
];

/// `serve --seed` of the three examples at once.
fn three_generations() -> Server {
    let repo = common::repo();
    let mut args: Vec<String> = Vec::new();
    for (dir, ..) in GENERATIONS {
        args.push("--seed".into());
        args.push(repo.join("examples").join(dir).display().to_string());
    }
    args.push("--token-auth-file".into());
    args.push(
        repo.join("examples/cloud-co/tokens.csv")
            .display()
            .to_string(),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&args)
}

#[test]
fn a_v030_a_v032_and_a_main_provider_are_read_side_by_side_with_kubectl() {
    let server = three_generations();
    let in_context = |context: &str, args: &[&str]| {
        let mut c = server.kubectl_context(context);
        c.args(args);
        c
    };
    for (dir, provider_path, provider, consumer_path, consumer, key) in GENERATIONS {
        // The provider's slice publishes the URL of its generation.
        let slice_url = format!("{}/services/replication/{provider}/{key}", server.url);
        let slice_name = if dir == "cloud-co" {
            "cpuflavors-v1"
        } else {
            "cpuflavors"
        };
        let slice_kind = if dir == "cloud-co-main" {
            "clustercachedresourceendpointslice"
        } else {
            "cachedresourceendpointslice"
        };
        eventually(&format!("{dir}: the slice's URL"), || {
            let out = run(in_context(
                provider_path,
                &[
                    "get",
                    slice_kind,
                    slice_name,
                    "-o",
                    "jsonpath={.status.endpoints[*].url}",
                ],
            ));
            (out.trim() == slice_url).then_some(()).ok_or(out)
        });

        // The consumer reads the flavors through its own workspace, wide.
        let table = eventually(&format!("{dir}: three flavors"), || {
            let out = run(in_context(
                consumer_path,
                &["get", "cpuflavors", "-o", "wide"],
            ));
            (out.lines().count() == 4).then_some(out.clone()).ok_or(out)
        });
        let header: Vec<&str> = table
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(header, ["NAME", "CORES", "ARCH", "AGE"], "{dir}: {table}");
        for (name, cores, arch) in [
            ("cpu-large", "8", "arm64"),
            ("cpu-medium", "4", "amd64"),
            ("cpu-small", "2", "amd64"),
        ] {
            assert!(
                table
                    .lines()
                    .any(|l| l.split_whitespace().take(3).eq([name, cores, arch])),
                "{dir}: {name} in {table}"
            );
        }

        // Directly through the virtual workspace URL: the object carries only the consumer.
        let mut get = server.kubectl_admin(&format!("{slice_url}/clusters/{consumer}"));
        get.args(["get", "cpuflavor", "cpu-small", "-o", "json"]);
        let object: serde_json::Value = serde_json::from_str(&run(get)).expect("JSON");
        assert_eq!(
            object["metadata"]["annotations"],
            serde_json::json!({"kcp.io/cluster": consumer}),
            "{dir}: {object}"
        );

        // A running watch sees a provider's change.
        let watch = in_context(
            consumer_path,
            &[
                "get",
                "memflavors",
                "-w",
                "--output-watch-events",
                "-o",
                "jsonpath={.type} {.object.metadata.name} {.object.spec.bandwidthGbps}{\"\\n\"}",
            ],
        );
        let watch = KubectlWatch::start(watch);
        for _ in 0..3 {
            assert!(watch.next("the initial list").starts_with("ADDED mem-"));
        }
        run(in_context(
            provider_path,
            &[
                "patch",
                "memflavor",
                "mem-large",
                "--type=merge",
                "-p",
                r#"{"spec":{"bandwidthGbps":40}}"#,
            ],
        ));
        assert_eq!(
            watch.next("mem-large modified"),
            "MODIFIED mem-large 40",
            "{dir}"
        );
    }
}

#[test]
fn the_main_example_applied_with_kubectl_alone_is_served_to_its_consumer() {
    let repo = common::repo();
    let tokens = repo.join("examples/cloud-co/tokens.csv");
    let server = Server::start(&["--token-auth-file", tokens.to_str().unwrap_or_default()]);
    let example = |f: &str| {
        repo.join("examples/cloud-co-main")
            .join(f)
            .display()
            .to_string()
    };
    let apply_in = |cluster: &str, files: &[&str]| {
        let mut c = server.kubectl_admin(&format!("{}/clusters/{cluster}", server.url));
        c.arg("apply");
        for f in files {
            c.args(["-f", &example(f)]);
        }
        run(c)
    };
    let out = apply_in(
        "9mainprovcloudco",
        &["provider.yaml", "export.yaml", "rbac.yaml", "slices.yaml"],
    );
    assert!(
        out.contains("clustercachedresource.cache.kcp.io/cpuflavors-v1 created"),
        "{out}"
    );
    assert!(
        out.contains("clustercachedresourceendpointslice.cache.kcp.io/cpuflavors created"),
        "{out}"
    );
    apply_in("9mainprovcloudco", &["flavors.yaml"]);
    apply_in("9mainteamaconsmr", &["team-a.yaml"]);
    let vw = format!(
        "{}/services/replication/9mainprovcloudco/cpuflavors/clusters/9mainteamaconsmr",
        server.url
    );
    let names = eventually("alice lists the public CPU flavors", || {
        common::alice_lists_three(&server, &vw)
    });
    assert!(
        names.contains("cpuflavor.cloud.example.com/cpu-small"),
        "{names}"
    );
    assert!(!names.contains("cpu-internal"), "{names}");
}
