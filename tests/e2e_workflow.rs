//! End-to-end, from an empty server: the documented CachedResource workflow driven with the
//! real kubectl only (workspaces API at `/clusters/<workspace>`, the in-process shard
//! controllers, the default endpoint slice, the Replication virtual workspace and the cache
//! server), and our version of kcp's `TestCachedResources` (`kcp-reference.md` §7.2) with two
//! consumers and wildcard watches over the synthetic clusters (§5.8).

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Bound of every wait in this file.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Logical cluster names (16 lower-case alphanumerics, like kcp's) and paths of the workspaces.
const PROVIDER_LC: &str = "7wfprovider0001a";
const PROVIDER_PATH: &str = "root:provider";
const CONSUMER_LC: &str = "9wfconsumer0001b";
const CONSUMER_PATH: &str = "root:consumer";
const CONSUMER2_LC: &str = "4wfconsumer0002c";
const CONSUMER2_PATH: &str = "root:consumer2";

/// sha256("cpuflavors-v1-identity-key"), `kcp-reference.md` §2.4.
const CPU_IDENTITY_HASH: &str = "fc9f48c915adefcd3fe029bb4fc92a435f373eb8ef32ae64ad1d37d4bca736c8";

const SHERIFFS_CR: &str = "sheriffs.wildwest.dev";
const SHERIFFS: &str = "apis/wildwest.dev/v1alpha1/sheriffs";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A scratch directory holding the manifests a user would keep in files.
struct Manifests(tempfile::TempDir);

impl Manifests {
    fn new() -> Manifests {
        Manifests(tempfile::tempdir().unwrap())
    }

    fn write(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        path
    }
}

/// The workspaces API URL of a workspace (logical cluster name or path).
fn ws(s: &Server, cluster: &str) -> String {
    format!("{}/clusters/{cluster}", s.url)
}

/// Run kubectl as admin against `server`; panics with its output unless it succeeds.
fn kubectl_ok(s: &Server, server: &str, args: &[&str]) -> String {
    let mut c = s.kubectl_admin(server);
    c.args(args);
    let out = run(c);
    assert!(
        out.status.success(),
        "kubectl --server {server} {} failed:\nstdout: {}\nstderr: {}",
        args.join(" "),
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// `kubectl apply -f <file>` as admin in a workspace.
fn apply(s: &Server, server: &str, m: &Manifests, name: &str, yaml: &str) -> String {
    let path = m.write(name, yaml);
    kubectl_ok(s, server, &["apply", "-f", path.to_str().unwrap()])
}

/// `kubectl create -f <file>` as admin in a workspace.
fn create(s: &Server, server: &str, m: &Manifests, name: &str, yaml: &str) -> String {
    let path = m.write(name, yaml);
    kubectl_ok(s, server, &["create", "-f", path.to_str().unwrap()])
}

/// `kubectl get <what> -o jsonpath=<path>`: stdout, or the error text.
fn jsonpath(s: &Server, server: &str, what: &[&str], path: &str) -> Result<String, String> {
    let mut c = s.kubectl_admin(server);
    c.arg("get")
        .args(what)
        .arg("-o")
        .arg(format!("jsonpath={path}"));
    let out = run(c);
    if out.status.success() {
        Ok(stdout(&out))
    } else {
        Err(stderr(&out))
    }
}

/// `kubectl get <what> -o json`, parsed.
fn get_json(s: &Server, server: &str, what: &[&str]) -> Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&kubectl_ok(s, server, &args)).unwrap()
}

/// Poll `attempt` (every 100 ms, at most `TIMEOUT`) until it returns `Ok`; panics with the
/// last error otherwise.
fn eventually<T>(what: &str, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match attempt() {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "timed out after {TIMEOUT:?} waiting for {what}; last: {last}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Poll a jsonpath until it equals `want`.
fn eventually_jsonpath(s: &Server, server: &str, what: &[&str], path: &str, want: &str) {
    eventually(
        &format!("{} {path} = {want:?}", what.join(" ")),
        || match jsonpath(s, server, what, path) {
            Ok(got) if got == want => Ok(()),
            Ok(got) => Err(format!("got {got:?}")),
            Err(e) => Err(e),
        },
    )
}

/// A workspace: its LogicalCluster `cluster`, created in `/clusters/<lc>` with its path.
fn create_workspace(s: &Server, m: &Manifests, lc: &str, path: &str) {
    let out = create(
        s,
        &ws(s, lc),
        m,
        &format!("workspace-{lc}.yaml"),
        &format!(
            "apiVersion: core.kcp.io/v1alpha1\nkind: LogicalCluster\nmetadata:\n  name: cluster\n  annotations:\n    kcp.io/path: {path}\n"
        ),
    );
    assert_eq!(out.trim(), "logicalcluster.core.kcp.io/cluster created");
    // The path resolves to the new logical cluster.
    let got = eventually(&format!("workspace {path}"), || {
        jsonpath(
            s,
            &ws(s, path),
            &["logicalcluster", "cluster"],
            "{.metadata.annotations.kcp\\.io/cluster}",
        )
    });
    assert_eq!(got, lc);
}

/// An admin HTTPS client without a total request timeout, for watch streams.
fn stream_client(s: &Server) -> reqwest::Client {
    replication_vw::server::tls::install_crypto_provider();
    let dir = s.data_dir.path();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.crt")).unwrap()).unwrap();
    let mut pem = std::fs::read(dir.join("admin.crt")).unwrap();
    pem.extend(std::fs::read(dir.join("admin.key")).unwrap());
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .connect_timeout(TIMEOUT)
        .build()
        .unwrap()
}

/// A watch stream over HTTP, its JSON events parsed by a task.
struct HttpWatch {
    events: tokio::sync::mpsc::UnboundedReceiver<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpWatch {
    async fn start(client: &reqwest::Client, url: &str) -> HttpWatch {
        let r = tokio::time::timeout(TIMEOUT, client.get(url).send())
            .await
            .expect("the watch answers")
            .unwrap();
        let status = r.status();
        assert_eq!(status, 200, "watch {url}: {}", r.text().await.unwrap());
        let mut body = r.bytes_stream();
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let event: Value = serde_json::from_slice(&line).unwrap_or_else(|e| {
                        panic!("not a JSON event ({e}): {}", String::from_utf8_lossy(&line))
                    });
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            }
        });
        HttpWatch { events, task }
    }

    /// The next event, within `TIMEOUT`.
    async fn next(&mut self, what: &str) -> Value {
        tokio::time::timeout(TIMEOUT, self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no watch event for {what} within {TIMEOUT:?}"))
            .unwrap_or_else(|| panic!("the watch stream ended while waiting for {what}"))
    }

    /// Events arriving within `quiet` of each other (none once the stream is quiet).
    async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout(quiet, self.events.recv()).await {
            out.push(e);
        }
        out
    }
}

impl Drop for HttpWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `(type, kcp.io/cluster, name)` of a watch event.
fn event_key(e: &Value) -> (String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        s(&e["type"]),
        s(&e["object"]["metadata"]["annotations"]["kcp.io/cluster"]),
        s(&e["object"]["metadata"]["name"]),
    )
}

fn key(t: &str, cluster: &str, name: &str) -> (String, String, String) {
    (t.to_string(), cluster.to_string(), name.to_string())
}

/// An object with the server-set metadata removed (as kcp's e2e test does).
fn normalized(obj: &Value) -> Value {
    let mut obj = obj.clone();
    let meta = obj["metadata"].as_object_mut().unwrap();
    for f in [
        "creationTimestamp",
        "resourceVersion",
        "selfLink",
        "uid",
        "generation",
        "managedFields",
    ] {
        meta.remove(f);
    }
    obj
}

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

const CPU_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: cpuflavors.cloud.example.com
spec:
  group: cloud.example.com
  scope: Cluster
  names:
    plural: cpuflavors
    singular: cpuflavor
    kind: CPUFlavor
    listKind: CPUFlavorList
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [cores]
            properties:
              cores:
                type: integer
                minimum: 1
          status:
            type: object
"#;

const CPU_FLAVORS: &str = r#"apiVersion: cloud.example.com/v1
kind: CPUFlavor
metadata:
  name: cpu-small
  labels:
    cloud.example.com/visibility: Public
spec:
  cores: 2
---
apiVersion: cloud.example.com/v1
kind: CPUFlavor
metadata:
  name: cpu-medium
  labels:
    cloud.example.com/visibility: Public
spec:
  cores: 4
---
apiVersion: cloud.example.com/v1
kind: CPUFlavor
metadata:
  name: cpu-large
  labels:
    cloud.example.com/visibility: Public
spec:
  cores: 8
---
apiVersion: cloud.example.com/v1
kind: CPUFlavor
metadata:
  name: cpu-internal
  labels:
    cloud.example.com/visibility: Internal
spec:
  cores: 16
"#;

const CPU_IDENTITY: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: kcp-system
---
apiVersion: v1
kind: Secret
metadata:
  name: cpuflavors-v1
  namespace: kcp-system
type: Opaque
stringData:
  key: cpuflavors-v1-identity-key
"#;

const CPU_CACHED_RESOURCE: &str = r#"apiVersion: cache.kcp.io/v1alpha1
kind: CachedResource
metadata:
  name: cpuflavors-v1
spec:
  group: cloud.example.com
  version: v1
  resource: cpuflavors
  labelSelector:
    matchLabels:
      cloud.example.com/visibility: Public
  identity:
    secretRef:
      namespace: kcp-system
      name: cpuflavors-v1
"#;

const CPU_EXPORT: &str = r#"apiVersion: apis.kcp.io/v1alpha1
kind: APIResourceSchema
metadata:
  name: v1.cpuflavors.cloud.example.com
spec:
  group: cloud.example.com
  scope: Cluster
  names:
    plural: cpuflavors
    singular: cpuflavor
    kind: CPUFlavor
    listKind: CPUFlavorList
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
    schema:
      type: object
      properties:
        spec:
          type: object
          required: [cores]
          properties:
            cores:
              type: integer
              minimum: 1
        status:
          type: object
---
apiVersion: apis.kcp.io/v1alpha2
kind: APIExport
metadata:
  name: compute
spec:
  resources:
  - group: cloud.example.com
    name: cpuflavors
    schema: v1.cpuflavors.cloud.example.com
    storage:
      virtual:
        reference:
          apiGroup: cache.kcp.io
          kind: CachedResourceEndpointSlice
          name: cpuflavors-v1
        identityHash: fc9f48c915adefcd3fe029bb4fc92a435f373eb8ef32ae64ad1d37d4bca736c8
"#;

const CPU_RBAC: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: compute-content-reader
rules:
- apiGroups: [apis.kcp.io]
  resources: [apiexports/content]
  resourceNames: [compute]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: compute-content-reader
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: compute-content-reader
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: alice
"#;

const CPU_BINDING: &str = r#"apiVersion: apis.kcp.io/v1alpha2
kind: APIBinding
metadata:
  name: compute
spec:
  reference:
    export:
      path: root:provider
      name: compute
"#;

const SHERIFF_API: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: sheriffs.wildwest.dev
spec:
  group: wildwest.dev
  scope: Cluster
  names: {plural: sheriffs, singular: sheriff, kind: Sheriff, listKind: SheriffList}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {intent: {type: string}}}
          status: {type: object, properties: {result: {type: string}}}
---
apiVersion: apis.kcp.io/v1alpha1
kind: APIResourceSchema
metadata:
  name: today.sheriffs.wildwest.dev
spec:
  group: wildwest.dev
  scope: Cluster
  names: {plural: sheriffs, singular: sheriff, kind: Sheriff, listKind: SheriffList}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      type: object
      properties:
        spec: {type: object, properties: {intent: {type: string}}}
        status: {type: object, properties: {result: {type: string}}}
"#;

/// No identity given: the controller generates `kcp-system/sheriffs.wildwest.dev`.
const SHERIFF_CACHED_RESOURCE: &str = r#"apiVersion: cache.kcp.io/v1alpha1
kind: CachedResource
metadata:
  name: sheriffs.wildwest.dev
spec:
  group: wildwest.dev
  version: v1alpha1
  resource: sheriffs
"#;

const SHERIFF_BINDING: &str = r#"apiVersion: apis.kcp.io/v1alpha2
kind: APIBinding
metadata:
  name: cached-wildwest
spec:
  reference:
    export:
      path: root:provider
      name: cached-wildwest-provider
"#;

fn sheriff_export(identity_hash: &str) -> String {
    format!(
        r#"apiVersion: apis.kcp.io/v1alpha2
kind: APIExport
metadata:
  name: cached-wildwest-provider
spec:
  resources:
  - group: wildwest.dev
    name: sheriffs
    schema: today.sheriffs.wildwest.dev
    storage:
      virtual:
        reference:
          apiGroup: cache.kcp.io
          kind: CachedResourceEndpointSlice
          name: sheriffs.wildwest.dev
        identityHash: {identity_hash}
"#
    )
}

fn sheriff(name: &str) -> String {
    format!(
        "apiVersion: wildwest.dev/v1alpha1\nkind: Sheriff\nmetadata:\n  name: {name}\nspec:\n  intent: {name}-spec\n"
    )
}

/// The provider of §7.2 step 2: Sheriff CRD, schema, CachedResource (waited for with
/// `kubectl wait --for=condition=ReplicationStarted`), and the APIExport whose virtual resource
/// carries the CachedResource's identity hash as read back from its status. Returns the hash.
fn sheriff_provider(s: &Server, m: &Manifests) -> String {
    let provider = ws(s, PROVIDER_LC);
    create_workspace(s, m, PROVIDER_LC, PROVIDER_PATH);
    apply(s, &provider, m, "sheriff-api.yaml", SHERIFF_API);
    apply(
        s,
        &provider,
        m,
        "sheriff-cachedresource.yaml",
        SHERIFF_CACHED_RESOURCE,
    );
    let cr = format!("cachedresource/{SHERIFFS_CR}");
    kubectl_ok(
        s,
        &provider,
        &[
            "wait",
            "--for=condition=ReplicationStarted",
            &cr,
            "--timeout=20s",
        ],
    );
    eventually_jsonpath(
        s,
        &provider,
        &["cachedresource", SHERIFFS_CR],
        "{.status.phase}",
        "Ready",
    );
    let hash = jsonpath(
        s,
        &provider,
        &["cachedresource", SHERIFFS_CR],
        "{.status.identityHash}",
    )
    .unwrap();
    assert!(
        hash.len() == 64 && hash.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
        "identityHash {hash:?}"
    );
    // The generated identity: secretRef defaulted to kcp-system/<name>, whose key hashes to it.
    assert_eq!(
        jsonpath(
            s,
            &provider,
            &["cachedresource", SHERIFFS_CR],
            "{.spec.identity.secretRef.namespace}/{.spec.identity.secretRef.name}",
        )
        .unwrap(),
        format!("kcp-system/{SHERIFFS_CR}")
    );
    kubectl_ok(
        s,
        &provider,
        &["get", "secret", "-n", "kcp-system", SHERIFFS_CR],
    );
    apply(
        s,
        &provider,
        m,
        "sheriff-export.yaml",
        &sheriff_export(&hash),
    );
    hash
}

/// A consumer workspace binding `cached-wildwest-provider` (§7.2 step 3).
fn sheriff_consumer(s: &Server, m: &Manifests, lc: &str, path: &str) {
    create_workspace(s, m, lc, path);
    let out = apply(
        s,
        &ws(s, lc),
        m,
        &format!("binding-{lc}.yaml"),
        SHERIFF_BINDING,
    );
    assert_eq!(out.trim(), "apibinding.apis.kcp.io/cached-wildwest created");
    eventually_jsonpath(
        s,
        &ws(s, lc),
        &["apibinding", "cached-wildwest"],
        "{.status.phase}",
        "Bound",
    );
}

/// The endpoint URL of the sheriffs' default slice, once listed.
fn sheriff_endpoint(s: &Server) -> String {
    let want = format!("{}/services/replication/{PROVIDER_LC}/{SHERIFFS_CR}", s.url);
    eventually_jsonpath(
        s,
        &ws(s, PROVIDER_LC),
        &["cachedresourceendpointslice", SHERIFFS_CR],
        "{.status.endpoints[*].url}",
        &want,
    );
    want
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn the_documented_workflow_runs_with_kubectl_alone() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "alice-token,alice,u-alice\n").unwrap();
    let s = Server::start(&["--token-auth-file", tokens.path().to_str().unwrap()]);
    let m = Manifests::new();
    let provider = ws(&s, PROVIDER_LC);
    let consumer = ws(&s, CONSUMER_LC);

    // Workspaces: the provider and the (not yet bound) consumer.
    create_workspace(&s, &m, PROVIDER_LC, PROVIDER_PATH);
    create_workspace(&s, &m, CONSUMER_LC, CONSUMER_PATH);

    // The provider's API and its flavors: three Public, one Internal.
    let out = apply(&s, &provider, &m, "crd.yaml", CPU_CRD);
    assert_eq!(
        out.trim(),
        "customresourcedefinition.apiextensions.k8s.io/cpuflavors.cloud.example.com created"
    );
    let out = apply(&s, &provider, &m, "flavors.yaml", CPU_FLAVORS);
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(
        out.contains("cpuflavor.cloud.example.com/cpu-internal created"),
        "{out}"
    );

    // The identity Secret and the CachedResource.
    apply(&s, &provider, &m, "identity.yaml", CPU_IDENTITY);
    let out = apply(
        &s,
        &provider,
        &m,
        "cachedresource.yaml",
        CPU_CACHED_RESOURCE,
    );
    assert_eq!(
        out.trim(),
        "cachedresource.cache.kcp.io/cpuflavors-v1 created"
    );
    let cr = ["cachedresource", "cpuflavors-v1"];
    eventually_jsonpath(&s, &provider, &cr, "{.status.phase}", "Ready");
    assert_eq!(
        jsonpath(&s, &provider, &cr, "{.status.identityHash}").unwrap(),
        CPU_IDENTITY_HASH
    );
    let counts = eventually("resourceCounts {cache: 3, local: 3}", || {
        let text = jsonpath(&s, &provider, &cr, "{.status.resourceCounts}")?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text:?}"))?;
        if v == json!({"cache": 3, "local": 3}) {
            Ok(v)
        } else {
            Err(text)
        }
    });
    assert_eq!(counts, json!({"cache": 3, "local": 3}));
    assert_eq!(
        jsonpath(&s, &provider, &cr, "{.metadata.finalizers}").unwrap(),
        r#"["cachedresource.cache.kcp.dev"]"#
    );
    for condition in ["IdentityValid", "ResourceValid", "ReplicationStarted"] {
        assert_eq!(
            jsonpath(
                &s,
                &provider,
                &cr,
                &format!("{{.status.conditions[?(@.type==\"{condition}\")].status}}")
            )
            .unwrap(),
            "True",
            "{condition}"
        );
    }

    // The schema, the export of the slice `cpuflavors-v1`, and alice's grant on its content.
    apply(&s, &provider, &m, "export.yaml", CPU_EXPORT);
    apply(&s, &provider, &m, "rbac.yaml", CPU_RBAC);
    let export_hash = eventually("the APIExport's identity hash", || {
        match jsonpath(
            &s,
            &provider,
            &["apiexport", "compute"],
            "{.status.identityHash}",
        )? {
            h if h.len() == 64 => Ok(h),
            h => Err(format!("got {h:?}")),
        }
    });
    assert_ne!(export_hash, CPU_IDENTITY_HASH);

    // The default slice exists (named like the CachedResource) but lists no endpoint while
    // no consumer binds the export.
    let slice = ["cachedresourceendpointslice", "cpuflavors-v1"];
    let slice_spec = eventually("the default slice", || {
        jsonpath(
            &s,
            &provider,
            &slice,
            "{.spec.cachedResource.name} {.metadata.ownerReferences[0].kind}",
        )
    });
    assert_eq!(slice_spec, "cpuflavors-v1 CachedResource");
    assert_eq!(
        jsonpath(&s, &provider, &slice, "{.status.endpoints[*].url}").unwrap(),
        "",
        "an endpoint before any binding"
    );

    // The consumer binds; the slice then lists this server's Replication VW URL.
    let out = apply(&s, &consumer, &m, "binding.yaml", CPU_BINDING);
    assert_eq!(out.trim(), "apibinding.apis.kcp.io/compute created");
    eventually_jsonpath(
        &s,
        &consumer,
        &["apibinding", "compute"],
        "{.status.phase}",
        "Bound",
    );
    let endpoint = format!("{}/services/replication/{PROVIDER_LC}/cpuflavors-v1", s.url);
    eventually_jsonpath(
        &s,
        &provider,
        &slice,
        "{.status.endpoints[*].url}",
        &endpoint,
    );
    let vw = format!("{endpoint}/clusters/{CONSUMER_LC}");

    // The consumer sees exactly the Public flavors, as admin and as alice.
    let names = kubectl_ok(&s, &vw, &["get", "cpuflavors", "-o", "name"]);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        [
            "cpuflavor.cloud.example.com/cpu-large",
            "cpuflavor.cloud.example.com/cpu-medium",
            "cpuflavor.cloud.example.com/cpu-small"
        ]
    );
    let mut c = s.kubectl_token(&vw, Some("alice-token"));
    c.args(["get", "cpuflavors", "-o", "name"]);
    let out = run(c);
    assert!(out.status.success(), "alice: {}", stderr(&out));
    assert_eq!(stdout(&out), names);

    // A running watch through the VW sees the provider's label changes and deletes.
    let mut c = s.kubectl_admin(&vw);
    c.args([
        "get",
        "cpuflavors",
        "-w",
        "--output-watch-events",
        "-o",
        "jsonpath={.type} {.object.metadata.name}{\"\\n\"}",
    ]);
    let watch = KubectlWatch::start(c);
    let initial: BTreeSet<String> = (0..3).map(|_| watch.next("the initial list")).collect();
    assert_eq!(
        initial,
        BTreeSet::from(
            ["ADDED cpu-large", "ADDED cpu-medium", "ADDED cpu-small"].map(String::from)
        )
    );
    let out = kubectl_ok(
        &s,
        &provider,
        &[
            "label",
            "cpuflavor",
            "cpu-internal",
            "cloud.example.com/visibility=Public",
            "--overwrite",
        ],
    );
    assert_eq!(
        out.trim(),
        "cpuflavor.cloud.example.com/cpu-internal labeled"
    );
    assert_eq!(watch.next("cpu-internal entering"), "ADDED cpu-internal");
    kubectl_ok(
        &s,
        &provider,
        &[
            "label",
            "cpuflavor",
            "cpu-small",
            "cloud.example.com/visibility=Internal",
            "--overwrite",
        ],
    );
    assert_eq!(watch.next("cpu-small leaving"), "DELETED cpu-small");
    kubectl_ok(&s, &provider, &["delete", "cpuflavor", "cpu-medium"]);
    assert_eq!(watch.next("cpu-medium deleted"), "DELETED cpu-medium");
    drop(watch);

    // Counts follow: cpu-large and cpu-internal are selected and cached.
    eventually("resourceCounts {cache: 2, local: 2}", || {
        let text = jsonpath(&s, &provider, &cr, "{.status.resourceCounts}")?;
        match serde_json::from_str::<Value>(&text) {
            Ok(v) if v == json!({"cache": 2, "local": 2}) => Ok(()),
            _ => Err(text),
        }
    });
    let names = kubectl_ok(&s, &vw, &["get", "cpuflavors", "-o", "name"]);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        [
            "cpuflavor.cloud.example.com/cpu-internal",
            "cpuflavor.cloud.example.com/cpu-large"
        ]
    );

    // The cache server holds exactly those two CachedObjects.
    let cache = format!(
        "{}/services/cache/shards/root/clusters/{PROVIDER_LC}",
        s.url
    );
    let schema_label = "cache.kcp.io/object-schema=v1.cpuflavors.cloud.example.com";
    let cached = kubectl_ok(
        &s,
        &cache,
        &["get", "cachedobjects", "-o", "name", "-l", schema_label],
    );
    assert_eq!(cached.lines().count(), 2, "{cached}");

    // Deleting the CachedResource purges the cache and releases the finalizer.
    let out = kubectl_ok(
        &s,
        &provider,
        &["delete", "cachedresource", "cpuflavors-v1", "--timeout=20s"],
    );
    assert_eq!(
        out.trim(),
        "cachedresource.cache.kcp.io \"cpuflavors-v1\" deleted"
    );
    eventually("the CachedResource to be gone", || {
        match jsonpath(&s, &provider, &cr, "{.metadata.name}") {
            Err(e) if e.contains("NotFound") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    eventually("the cache to be empty", || {
        let all = kubectl_ok(&s, &cache, &["get", "cachedobjects", "-o", "name"]);
        let selected = kubectl_ok(
            &s,
            &cache,
            &["get", "cachedobjects", "-o", "name", "-l", schema_label],
        );
        if all.trim().is_empty() && selected.trim().is_empty() {
            Ok(())
        } else {
            Err(format!("left: {all}"))
        }
    });
    // The source flavors are untouched.
    let names = kubectl_ok(&s, &provider, &["get", "cpuflavors", "-o", "name"]);
    assert_eq!(names.lines().count(), 3, "{names}");
}

/// §7.2 steps 1–11. Step 4 (kcp's APIExportEndpointSlice, the APIExport virtual workspace)
/// has no counterpart here: the wildcard requests that virtual workspace would forward go to
/// the CachedResourceEndpointSlice's URL directly, and "the front-proxy" is the consumer
/// workspace of the workspaces API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcps_test_cached_resources_scenario_passes_through_the_workspaces_api_and_the_vw() {
    let s = Server::start(&[]);
    let m = Manifests::new();
    let provider = ws(&s, PROVIDER_LC);

    // Steps 1–3: workspaces, provider API, CachedResource, export, two bindings.
    sheriff_provider(&s, &m);
    sheriff_consumer(&s, &m, CONSUMER_LC, CONSUMER_PATH);
    sheriff_consumer(&s, &m, CONSUMER2_LC, CONSUMER2_PATH);
    let endpoint = sheriff_endpoint(&s);
    for lc in [CONSUMER_LC, CONSUMER2_LC] {
        let resources = kubectl_ok(
            &s,
            &format!("{endpoint}/clusters/{lc}"),
            &["api-resources", "-o", "name"],
        );
        assert_eq!(resources.trim(), "sheriffs.wildwest.dev", "{lc}");
    }

    // Step 5: each consumer workspace serves the bound resource (read through the virtual
    // workspace, as kcp's shard forwards it) and lists no sheriff yet.
    for lc in [CONSUMER_LC, CONSUMER2_LC] {
        let list = get_json(&s, &ws(&s, lc), &["sheriffs"]);
        assert_eq!(list["items"], json!([]), "{lc}: {list:#}");
    }

    // Step 6: a wildcard watch on the endpoint.
    let client = stream_client(&s);
    let mut watch = HttpWatch::start(
        &client,
        &format!("{endpoint}/clusters/*/{SHERIFFS}?watch=true"),
    )
    .await;
    assert!(
        watch.drain(Duration::from_millis(300)).await.is_empty(),
        "events before any sheriff exists"
    );

    // Step 7: sheriffs-1 with spec.intent, then status.result through the status subresource.
    let out = create(&s, &provider, &m, "sheriffs-1.yaml", &sheriff("sheriffs-1"));
    assert_eq!(out.trim(), "sheriff.wildwest.dev/sheriffs-1 created");
    let out = kubectl_ok(
        &s,
        &provider,
        &[
            "patch",
            "sheriff",
            "sheriffs-1",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"result":"sheriffs-1-status"}}"#,
        ],
    );
    assert_eq!(out.trim(), "sheriff.wildwest.dev/sheriffs-1 patched");

    // Step 8: events until each consumer's copy carries the status; exactly 2 ADDED.
    let mut events = Vec::new();
    let mut with_status = BTreeSet::new();
    while with_status.len() < 2 {
        let e = watch
            .next("sheriffs-1 with its status in both consumers")
            .await;
        if e["object"]["status"]["result"] == "sheriffs-1-status" {
            with_status.insert(event_key(&e).1);
        }
        events.push(e);
    }
    events.extend(watch.drain(Duration::from_millis(500)).await);
    let added: BTreeSet<_> = events
        .iter()
        .map(event_key)
        .filter(|k| k.0 == "ADDED")
        .collect();
    assert_eq!(
        added,
        BTreeSet::from([
            key("ADDED", CONSUMER_LC, "sheriffs-1"),
            key("ADDED", CONSUMER2_LC, "sheriffs-1")
        ])
    );
    assert_eq!(
        events.iter().filter(|e| e["type"] == "ADDED").count(),
        2,
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .all(|e| matches!(e["type"].as_str(), Some("ADDED" | "MODIFIED"))),
        "{events:#?}"
    );
    drop(watch);

    // Step 9: the wildcard LIST has one copy per consumer.
    let list: Value = client
        .get(format!("{endpoint}/clusters/*/{SHERIFFS}"))
        .timeout(TIMEOUT)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list:#}");
    let clusters: Vec<&str> = items
        .iter()
        .map(|i| {
            i["metadata"]["annotations"]["kcp.io/cluster"]
                .as_str()
                .unwrap()
        })
        .collect();
    let mut want = vec![CONSUMER_LC, CONSUMER2_LC];
    want.sort();
    assert_eq!(clusters, want);

    // Step 10: per consumer, LIST has one item and GET equals the source.
    let source = get_json(&s, &provider, &["sheriff", "sheriffs-1"]);
    assert_eq!(source["status"]["result"], "sheriffs-1-status");
    for lc in [CONSUMER_LC, CONSUMER2_LC] {
        let vw = format!("{endpoint}/clusters/{lc}");
        let list = get_json(&s, &vw, &["sheriffs"]);
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{lc}: {list:#}");
        let got = get_json(&s, &vw, &["sheriff", "sheriffs-1"]);
        assert_eq!(got["metadata"]["uid"], source["metadata"]["uid"], "{lc}");
        let mut want = normalized(&source);
        want["metadata"]["annotations"] = json!({"kcp.io/cluster": lc});
        assert_eq!(normalized(&got), want, "{lc}");
        assert_eq!(got["apiVersion"], "wildwest.dev/v1alpha1");
        assert_eq!(got["kind"], "Sheriff");
        assert_eq!(got["spec"], json!({"intent": "sheriffs-1-spec"}));
        assert_eq!(got["status"], json!({"result": "sheriffs-1-status"}));
        // The same through the consumer workspace (kcp's front-proxy path).
        let workspace = ws(&s, lc);
        let list = get_json(&s, &workspace, &["sheriffs"]);
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{lc}: {list:#}");
        let got = get_json(&s, &workspace, &["sheriff", "sheriffs-1"]);
        assert_eq!(normalized(&got), want, "{lc} through its workspace");
    }

    // Step 11: a CRD for the bound resource in consumer 1 is not accepted.
    let crd_only = SHERIFF_API
        .split("\n---\n")
        .next()
        .expect("the CRD document");
    create(&s, &ws(&s, CONSUMER_LC), &m, "consumer-crd.yaml", crd_only);
    let names_accepted = jsonpath(
        &s,
        &ws(&s, CONSUMER_LC),
        &["crd", SHERIFFS_CR],
        "{.status.conditions[?(@.type==\"NamesAccepted\")].status}",
    )
    .expect("the CRD's conditions");
    assert_eq!(names_accepted, "False");
    let list = get_json(&s, &ws(&s, CONSUMER_LC), &["sheriffs"]);
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "the binding still serves the resource: {list:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_binding_during_a_wildcard_watch_gets_every_object_added_and_unbinding_deletes_them()
 {
    let s = Server::start(&[]);
    let m = Manifests::new();
    let provider = ws(&s, PROVIDER_LC);
    sheriff_provider(&s, &m);
    sheriff_consumer(&s, &m, CONSUMER_LC, CONSUMER_PATH);
    let endpoint = sheriff_endpoint(&s);
    for name in ["sheriffs-1", "sheriffs-2"] {
        create(&s, &provider, &m, &format!("{name}.yaml"), &sheriff(name));
    }
    eventually_jsonpath(
        &s,
        &provider,
        &["cachedresource", SHERIFFS_CR],
        "{.status.resourceCounts.cache}",
        "2",
    );

    // The watch starts with consumer 1's copies.
    let client = stream_client(&s);
    let mut watch = HttpWatch::start(
        &client,
        &format!("{endpoint}/clusters/*/{SHERIFFS}?watch=true"),
    )
    .await;
    let mut initial = BTreeSet::new();
    for _ in 0..2 {
        initial.insert(event_key(&watch.next("the initial events").await));
    }
    assert_eq!(
        initial,
        BTreeSet::from([
            key("ADDED", CONSUMER_LC, "sheriffs-1"),
            key("ADDED", CONSUMER_LC, "sheriffs-2")
        ])
    );

    // Consumer 2 binds: one ADDED per existing object, in its cluster.
    sheriff_consumer(&s, &m, CONSUMER2_LC, CONSUMER2_PATH);
    let mut bound = BTreeSet::new();
    for _ in 0..2 {
        bound.insert(event_key(&watch.next("consumer 2's copies").await));
    }
    assert_eq!(
        bound,
        BTreeSet::from([
            key("ADDED", CONSUMER2_LC, "sheriffs-1"),
            key("ADDED", CONSUMER2_LC, "sheriffs-2")
        ])
    );
    let list = get_json(
        &s,
        &format!("{endpoint}/clusters/{CONSUMER2_LC}"),
        &["sheriffs"],
    );
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list:#}");

    // Consumer 2 unbinds: one DELETED per object, in its cluster.
    let out = kubectl_ok(
        &s,
        &ws(&s, CONSUMER2_LC),
        &["delete", "apibinding", "cached-wildwest"],
    );
    assert_eq!(
        out.trim(),
        "apibinding.apis.kcp.io \"cached-wildwest\" deleted"
    );
    let mut unbound = BTreeSet::new();
    for _ in 0..2 {
        unbound.insert(event_key(&watch.next("consumer 2's copies deleted").await));
    }
    assert_eq!(
        unbound,
        BTreeSet::from([
            key("DELETED", CONSUMER2_LC, "sheriffs-1"),
            key("DELETED", CONSUMER2_LC, "sheriffs-2")
        ])
    );

    // Consumer 1 is unaffected: a new sheriff reaches it, and only it.
    create(&s, &provider, &m, "sheriffs-3.yaml", &sheriff("sheriffs-3"));
    let e = watch.next("sheriffs-3").await;
    assert_eq!(event_key(&e), key("ADDED", CONSUMER_LC, "sheriffs-3"));
    assert!(
        watch.drain(Duration::from_millis(300)).await.is_empty(),
        "an event after sheriffs-3 for consumer 1"
    );
    let list = get_json(
        &s,
        &format!("{endpoint}/clusters/{CONSUMER_LC}"),
        &["sheriffs"],
    );
    assert_eq!(list["items"].as_array().unwrap().len(), 3, "{list:#}");
    // Consumer 1 still binds the export, so the endpoint stays listed.
    assert_eq!(
        jsonpath(
            &s,
            &provider,
            &["cachedresourceendpointslice", SHERIFFS_CR],
            "{.status.endpoints[*].url}"
        )
        .unwrap(),
        endpoint
    );
}

/// kubectl's other write paths in a workspace: typed `create` commands (protobuf bodies),
/// `apply` twice (strategic merge patches for built-ins, merge patches for custom resources),
/// `edit`, `label`, strict field validation, `explain` and server-side printer columns.
#[test]
fn kubectl_creates_applies_edits_and_explains_in_a_workspace() {
    let s = Server::start(&[]);
    let m = Manifests::new();
    create_workspace(&s, &m, PROVIDER_LC, PROVIDER_PATH);
    let w = ws(&s, PROVIDER_PATH);

    // Typed create commands send protobuf.
    assert_eq!(
        kubectl_ok(&s, &w, &["create", "namespace", "tools"]).trim(),
        "namespace/tools created"
    );
    kubectl_ok(
        &s,
        &w,
        &[
            "create",
            "secret",
            "generic",
            "s1",
            "-n",
            "tools",
            "--from-literal=key=abc",
        ],
    );
    assert_eq!(
        jsonpath(&s, &w, &["secret", "s1", "-n", "tools"], "{.data.key}").unwrap(),
        "YWJj"
    );
    kubectl_ok(
        &s,
        &w,
        &[
            "create",
            "clusterrole",
            "reader",
            "--verb=get",
            "--resource=secrets",
        ],
    );

    // apply, change, apply again: a strategic merge patch for a Secret and a ClusterRole.
    let builtins = |key: &str, verbs: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: s2, namespace: tools}}\nstringData: {{key: {key}}}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: applied}}\n\
             rules:\n- apiGroups: [\"\"]\n  resources: [secrets]\n  verbs: [{verbs}]\n"
        )
    };
    apply(&s, &w, &m, "builtins.yaml", &builtins("one", "get"));
    let out = apply(&s, &w, &m, "builtins.yaml", &builtins("two", "get, list"));
    assert!(out.contains("secret/s2 configured"), "{out}");
    let key = jsonpath(&s, &w, &["secret", "s2", "-n", "tools"], "{.data.key}").unwrap();
    assert_eq!(key, "dHdv", "base64 of \"two\"");
    assert_eq!(
        jsonpath(&s, &w, &["clusterrole", "applied"], "{.rules[0].verbs}").unwrap(),
        r#"["get","list"]"#
    );

    // A CRD and one of its objects: apply twice (merge patch), label, edit.
    apply(&s, &w, &m, "crd.yaml", CPU_CRD);
    let flavor = |cores: u32| {
        format!(
            "apiVersion: cloud.example.com/v1\nkind: CPUFlavor\nmetadata: {{name: cpu-x}}\nspec: {{cores: {cores}}}\n"
        )
    };
    eventually("the CRD to be served", || {
        let path = m.write("flavor.yaml", &flavor(2));
        let mut c = s.kubectl_admin(&w);
        c.args(["apply", "-f", path.to_str().unwrap()]);
        let out = run(c);
        if out.status.success() {
            Ok(())
        } else {
            Err(stderr(&out))
        }
    });
    let out = apply(&s, &w, &m, "flavor.yaml", &flavor(4));
    assert_eq!(out.trim(), "cpuflavor.cloud.example.com/cpu-x configured");
    kubectl_ok(&s, &w, &["label", "cpuflavor", "cpu-x", "tier=big"]);
    let mut edit = s.kubectl_admin(&w);
    edit.args(["edit", "cpuflavor", "cpu-x"])
        .env("EDITOR", "sed -i s/cores:\\ 4/cores:\\ 6/");
    let out = run(edit);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = get_json(&s, &w, &["cpuflavor", "cpu-x"]);
    assert_eq!(got["spec"]["cores"], 6);
    assert_eq!(got["metadata"]["labels"]["tier"], "big");
    assert_eq!(
        got["metadata"]["generation"], 3,
        "two spec changes after creation"
    );

    // Strict field validation (kubectl's default) refuses unknown fields.
    let path = m.write("bad.yaml", "apiVersion: cloud.example.com/v1\nkind: CPUFlavor\nmetadata: {name: cpu-bad}\nspec: {cores: 2, colour: red}\n");
    let mut c = s.kubectl_admin(&w);
    c.args(["apply", "-f", path.to_str().unwrap()]);
    let out = run(c);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"strict decoding error: unknown field "spec.colour""#),
        "{}",
        stderr(&out)
    );

    // A server-side dry run is refused, and nothing is written.
    let path = m.write("dry.yaml", &flavor(8));
    let mut c = s.kubectl_admin(&w);
    c.args(["apply", "--dry-run=server", "-f", path.to_str().unwrap()]);
    let out = run(c);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("dryRun=All is not supported"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        jsonpath(&s, &w, &["cpuflavor", "cpu-x"], "{.spec.cores}").unwrap(),
        "6"
    );

    // A watch in the workspace keeps printing rows of the same table.
    let mut c = s.kubectl_admin(&w);
    c.args(["get", "namespaces", "-w"]);
    let watch = KubectlWatch::start(c);
    assert_eq!(
        watch
            .next("the header")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "STATUS", "AGE"]
    );
    while !watch.next("the initial rows").starts_with("tools ") {}
    kubectl_ok(&s, &w, &["label", "namespace", "tools", "team=a"]);
    let row = watch.next("the labelled namespace");
    assert_eq!(
        row.split_whitespace().take(2).collect::<Vec<_>>(),
        ["tools", "Active"],
        "{row}"
    );
    drop(watch);

    // explain and printer columns.
    let explained = kubectl_ok(&s, &w, &["explain", "cachedresources.spec"]);
    assert!(
        explained.contains("KIND:       CachedResource"),
        "{explained}"
    );
    let table = kubectl_ok(&s, &w, &["get", "namespaces"]);
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "STATUS", "AGE"],
        "{table}"
    );
}

/// Callers outside `system:masters` get what the workspace's own RBAC grants them.
#[test]
fn workspace_rbac_decides_what_a_token_user_may_do() {
    let s = Server::cloud_co();
    let w = ws(&s, "root:cloudco");
    let as_user = |token: &str, args: &[&str]| {
        let mut c = s.kubectl_token(&w, Some(token));
        c.args(args);
        run(c)
    };
    let out = as_user("alice-token", &["get", "cpuflavors", "-o", "name"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            r#"cpuflavors.cloud.example.com is forbidden: User "alice" cannot list resource "cpuflavors" in API group "cloud.example.com" at the cluster scope"#
        ),
        "{}",
        stderr(&out)
    );
    kubectl_ok(
        &s,
        &w,
        &[
            "create",
            "clusterrole",
            "flavor-reader",
            "--verb=get,list,watch",
            "--resource=cpuflavors.cloud.example.com",
        ],
    );
    kubectl_ok(
        &s,
        &w,
        &[
            "create",
            "clusterrolebinding",
            "alice-flavors",
            "--clusterrole=flavor-reader",
            "--user=alice",
        ],
    );
    let out = as_user("alice-token", &["get", "cpuflavors", "-o", "name"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 4, "{}", stdout(&out));
    let out = as_user("alice-token", &["delete", "cpuflavor", "cpu-small"]);
    assert!(
        stderr(&out).contains(r#"User "alice" cannot delete resource "cpuflavors""#),
        "{}",
        stderr(&out)
    );
    let out = as_user("bob-token", &["get", "cpuflavors"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"User "bob" cannot"#),
        "{}",
        stderr(&out)
    );
    // Nothing was deleted.
    assert_eq!(
        kubectl_ok(&s, &w, &["get", "cpuflavors", "-o", "name"])
            .lines()
            .count(),
        4
    );
    // A Role and RoleBinding grant in their namespace only.
    kubectl_ok(
        &s,
        &w,
        &[
            "create",
            "role",
            "secret-reader",
            "-n",
            "kcp-system",
            "--verb=get,list",
            "--resource=secrets",
        ],
    );
    kubectl_ok(
        &s,
        &w,
        &[
            "create",
            "rolebinding",
            "bob-secrets",
            "-n",
            "kcp-system",
            "--role=secret-reader",
            "--user=bob",
        ],
    );
    let out = as_user(
        "bob-token",
        &["get", "secrets", "-n", "kcp-system", "-o", "name"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 3, "{}", stdout(&out));
    let out = as_user("bob-token", &["get", "secrets", "-n", "default"]);
    assert!(
        stderr(&out).contains(r#"User "bob" cannot list resource "secrets" in API group "" in the namespace "default""#),
        "{}",
        stderr(&out)
    );
}
