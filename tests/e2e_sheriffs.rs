//! Our version of kcp's `TestCachedResourceVirtualWorkspace` (`kcp-reference.md` §7.1): a shard
//! writes a Sheriff CachedResource, its export, a consumer binding and the cached sheriffs into
//! the cache server; a token user is refused until the export's workspace grants each verb on
//! `apiexports/content`, then gets, lists and watches through the Replication VW. The same
//! scenario for kcp v0.32 and main (`kcp-head.md` §4, HEAD's
//! `test/e2e/virtual/replication/virtualworkspace_test.go`): the objects stored as themselves,
//! the URL keyed by a slice named differently from its resource, kube's watch semantics.

mod common;

use common::*;
use replication_vw::controllers::wrap;
use replication_vw::model::naming::{cached_object_name, identity_hash};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const PROVIDER_WS: &str = "wildwestprovider";
const CONSUMER_WS: &str = "wildwestconsumer";
const SHARD: &str = "shard-1";
const CR: &str = "sheriffs.wildwest.dev";

struct Shard {
    client: reqwest::Client,
    base: String,
}

impl Shard {
    fn url(&self, cluster: &str, gvr: &str) -> String {
        format!(
            "{}/services/cache/shards/{SHARD}/clusters/{cluster}/apis/{gvr}",
            self.base
        )
    }

    async fn create(&self, cluster: &str, gvr: &str, mut obj: Value) {
        obj["metadata"]["annotations"]["kcp.io/shard"] = json!(SHARD);
        let r = self
            .client
            .post(self.url(cluster, gvr))
            .json(&obj)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "create {gvr}: {}", r.text().await.unwrap());
    }

    async fn grant(&self, verb: &str) {
        let name = format!("user-1-apiexport-content-{verb}");
        self.create(PROVIDER_WS, "rbac.authorization.k8s.io/v1/clusterroles", json!({
            "metadata": {"name": name},
            "rules": [{"apiGroups": ["apis.kcp.io"], "resources": ["apiexports/content"], "verbs": [verb]}],
        })).await;
        self.create(PROVIDER_WS, "rbac.authorization.k8s.io/v1/clusterrolebindings", json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "user-1"}],
        })).await;
    }
}

fn sheriff(name: &str, labels: Value, rv: &str) -> Value {
    json!({"apiVersion": "wildwest.dev/v1alpha1", "kind": "Sheriff",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": rv, "labels": labels,
            "annotations": {"kcp.io/cluster": PROVIDER_WS}},
        "spec": {"intent": format!("{name}-spec")}})
}

/// The export whose virtual resource `sheriffs` references slice `slice` of `slice_kind`, and
/// the consumer workspace binding it (its LogicalCluster's resource-bindings annotation and
/// APIBinding), as a shard replicates them.
async fn export_and_consumer(shard: &Shard, slice_kind: &str, slice: &str, hash: &str) {
    shard.create(PROVIDER_WS, "apis.kcp.io/v1alpha2/apiexports", json!({
        "metadata": {"name": "cached-wildwest-provider"},
        "spec": {"resources": [{"group": "wildwest.dev", "name": "sheriffs", "schema": "today.sheriffs.wildwest.dev",
            "storage": {"virtual": {"reference": {"apiGroup": "cache.kcp.io", "kind": slice_kind, "name": slice},
                "identityHash": hash}}}]},
        "status": {"identityHash": identity_hash(b"export-identity")},
    })).await;
    shard.create(CONSUMER_WS, "core.kcp.io/v1alpha1/logicalclusters", json!({
        "metadata": {"name": "cluster", "annotations": {
            "internal.apis.kcp.io/resource-bindings": "{\"sheriffs.wildwest.dev\":{\"n\":\"cached-wildwest\"}}"}},
    })).await;
    shard.create(CONSUMER_WS, "apis.kcp.io/v1alpha2/apibindings", json!({
        "metadata": {"name": "cached-wildwest"},
        "spec": {"reference": {"export": {"path": PROVIDER_WS, "name": "cached-wildwest-provider"}}},
    })).await;
}

async fn setup(shard: &Shard) {
    let hash = identity_hash(b"sheriffs-identity");
    shard.create(PROVIDER_WS, "apis.kcp.io/v1alpha1/apiresourceschemas", json!({
        "metadata": {"name": "today.sheriffs.wildwest.dev"},
        "spec": {"group": "wildwest.dev", "scope": "Cluster",
            "names": {"plural": "sheriffs", "singular": "sheriff", "kind": "Sheriff", "listKind": "SheriffList"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"intent": {"type": "string"}}},
                    "status": {"type": "object", "properties": {"result": {"type": "string"}}}}}}]},
    })).await;
    shard.create(PROVIDER_WS, "cache.kcp.io/v1alpha1/cachedresources", json!({
        "metadata": {"name": CR},
        "spec": {"group": "wildwest.dev", "version": "v1alpha1", "resource": "sheriffs"},
        "status": {"identityHash": hash, "phase": "Ready", "conditions": [
            {"type": "ResourceValid", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "ReplicationStarted", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    })).await;
    export_and_consumer(shard, "CachedResourceEndpointSlice", CR, &hash).await;
    for s in [
        sheriff("sheriff-1", json!({}), "100"),
        sheriff("sheriff-2", json!({"hello": "world"}), "101"),
    ] {
        shard
            .create(
                PROVIDER_WS,
                "cache.kcp.io/v1alpha1/cachedobjects",
                wrap(&s, "wildwest.dev", "v1alpha1", "sheriffs", SHARD),
            )
            .await;
    }
}

/// Grant `list`, then list the two sheriffs through `vw`; the list's resourceVersion.
async fn list_once_granted(shard: &Shard, user: &reqwest::Client, vw: &str) -> String {
    shard.grant("list").await;
    let r = until_allowed(user, vw).await;
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sheriff-1", "sheriff-2"]);
    list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Retry a request until its status is neither 403 nor 404 (RBAC reaches the index
/// asynchronously), as kcp's e2e test does.
async fn until_allowed(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client
            .get(url)
            .bearer_auth("user-1-token")
            .send()
            .await
            .unwrap();
        if !matches!(r.status().as_u16(), 403 | 404) || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_token_user_reads_sheriffs_once_each_verb_is_granted_on_the_export_content() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "user-1-token,user-1,u-1\n").unwrap();
    let server = Server::start(&["--token-auth-file", tokens.path().to_str().unwrap()]);
    let shard = Shard {
        client: server.admin_client(),
        base: server.url.clone(),
    };
    setup(&shard).await;
    let user = server.token_client();
    let vw = format!(
        "{}/services/replication/{PROVIDER_WS}/{CR}/clusters/{CONSUMER_WS}/apis/wildwest.dev/v1alpha1/sheriffs",
        server.url
    );

    // GET: refused, then allowed once `get` is granted.
    let r = user
        .get(format!("{vw}/sheriff-1"))
        .bearer_auth("user-1-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["reason"], "Forbidden");
    shard.grant("get").await;
    let r = until_allowed(&user, &format!("{vw}/sheriff-1")).await;
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["metadata"]["name"], "sheriff-1");
    assert_eq!(
        got["metadata"]["annotations"],
        json!({"kcp.io/cluster": CONSUMER_WS})
    );
    assert_eq!(got["metadata"]["uid"], "uid-sheriff-1");

    // LIST: refused, then exactly the two sheriffs.
    let r = user
        .get(&vw)
        .bearer_auth("user-1-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let rv = list_once_granted(&shard, &user, &vw).await;

    // WATCH: refused, then from the list's resourceVersion with a selector.
    let r = user
        .get(format!("{vw}?watch=true"))
        .bearer_auth("user-1-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    shard.grant("watch").await;
    let watch_url = format!("{vw}?watch=true&labelSelector=hello%3Dworld&resourceVersion={rv}");
    let r = until_allowed(&user, &watch_url).await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();

    // The shard relabels sheriff-1 into the selector (a full update of its CachedObject).
    let co = format!(
        "{}/{}",
        shard.url(PROVIDER_WS, "cache.kcp.io/v1alpha1/cachedobjects"),
        cached_object_name("wildwest.dev", "v1alpha1", "sheriffs", "", "sheriff-1")
    );
    let mut cached: Value = shard
        .client
        .get(&co)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    cached["spec"]["raw"] = wrap(
        &sheriff("sheriff-1", json!({"hello": "world"}), "102"),
        "wildwest.dev",
        "v1alpha1",
        "sheriffs",
        SHARD,
    )["spec"]["raw"]
        .clone();
    let r = shard.client.put(&co).json(&cached).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let event = next_json_line(&mut body, &mut Vec::new()).await;
    assert_eq!(event["type"], "MODIFIED", "{event}");
    assert_eq!(event["object"]["metadata"]["name"], "sheriff-1");
    assert_eq!(
        event["object"]["metadata"]["labels"],
        json!({"hello": "world"})
    );
    drop(body);
}

#[tokio::test]
async fn write_verbs_by_a_granted_user_are_forbidden_and_change_nothing() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "user-1-token,user-1,u-1\n").unwrap();
    let server = Server::start(&["--token-auth-file", tokens.path().to_str().unwrap()]);
    let shard = Shard {
        client: server.admin_client(),
        base: server.url.clone(),
    };
    setup(&shard).await;
    for verb in ["get", "list", "watch"] {
        shard.grant(verb).await;
    }
    let user = server.token_client();
    let vw = format!(
        "{}/services/replication/{PROVIDER_WS}/{CR}/clusters/{CONSUMER_WS}/apis/wildwest.dev/v1alpha1/sheriffs",
        server.url
    );
    assert_eq!(until_allowed(&user, &vw).await.status(), 200);
    let r = user
        .delete(format!("{vw}/sheriff-1"))
        .bearer_auth("user-1-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = user
        .post(&vw)
        .bearer_auth("user-1-token")
        .json(&sheriff("sheriff-3", json!({}), "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let list: Value = user
        .get(&vw)
        .bearer_auth("user-1-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
}

/// The generation of a slice-keyed scenario: (resource kind, its plural, slice kind, its plural,
/// the slice's reference field).
const V032: (&str, &str, &str, &str, &str) = (
    "CachedResource",
    "cachedresources",
    "CachedResourceEndpointSlice",
    "cachedresourceendpointslices",
    "cachedResource",
);
const MAIN: (&str, &str, &str, &str, &str) = (
    "ClusterCachedResource",
    "clustercachedresources",
    "ClusterCachedResourceEndpointSlice",
    "clustercachedresourceendpointslices",
    "clusterCachedResource",
);
/// The slice is named differently from its resource (`sheriffs`).
const SLICE: &str = "wildwest-sheriffs";
const UNBOUND_WS: &str = "wildwestunbound";

/// What a kcp v0.32 or main shard writes into the cache for kcp's replication e2e scenario: the
/// (Cluster)CachedResource with its identity and the two annotations, the slice with
/// `spec.export` and its conditions, the export whose virtual resource references the slice,
/// the consumer's LogicalCluster and APIBinding, and the sheriffs stored as themselves.
async fn setup_slice_keyed(shard: &Shard, generation: (&str, &str, &str, &str, &str)) -> String {
    let (kind, plural, slice_kind, slice_plural, reference) = generation;
    let hash = identity_hash(b"sheriffs-identity-head");
    let true_since = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"});
    shard.create(PROVIDER_WS, "apis.kcp.io/v1alpha1/apiresourceschemas", json!({
        "metadata": {"name": "today.sheriffs.wildwest.dev"},
        "spec": {"group": "wildwest.dev", "scope": "Cluster",
            "names": {"plural": "sheriffs", "singular": "sheriff", "kind": "Sheriff", "listKind": "SheriffList"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"intent": {"type": "string"}}}}}}]},
    })).await;
    shard.create(PROVIDER_WS, &format!("cache.kcp.io/v1alpha1/{plural}"), json!({
        "kind": kind,
        "metadata": {"name": "sheriffs", "annotations": {
            "cache.kcp.io/resource-kind": "Sheriff", "cache.kcp.io/resource-scope": "Cluster",
            "replication-vw.dev/generation": "v0.32"},
            "finalizers": ["cache.kcp.io/cachedresource"]},
        "spec": {"group": "wildwest.dev", "version": "v1alpha1", "resource": "sheriffs"},
        "status": {"identityHash": hash, "phase": "Ready",
            "conditions": [true_since("ResourceValid"), true_since("ReplicationStarted")]},
    })).await;
    shard.create(PROVIDER_WS, &format!("cache.kcp.io/v1alpha1/{slice_plural}"), json!({
        "kind": slice_kind,
        "metadata": {"name": SLICE},
        "spec": {reference: {"name": "sheriffs"}, "export": {"name": "cached-wildwest-provider"}},
        "status": {"conditions": [true_since("ResourceValid"), true_since("APIExportValid"), true_since("PartitionValid")]},
    })).await;
    export_and_consumer(shard, slice_kind, SLICE, &hash).await;
    shard
        .create(
            UNBOUND_WS,
            "core.kcp.io/v1alpha1/logicalclusters",
            json!({
                "metadata": {"name": "cluster"},
            }),
        )
        .await;
    // The writer of kcp-head.md §2.3: each object as itself, without kcp.io/shard (so the cache
    // server gives it its own uid and creationTimestamp), with the source's uid and version.
    for (name, labels) in [
        ("sheriff-1", json!({})),
        ("sheriff-2", json!({"hello": "world"})),
    ] {
        let object = json!({"apiVersion": "wildwest.dev/v1alpha1", "kind": "Sheriff",
            "metadata": {"name": name, "labels": labels, "annotations": {
                "cache.kcp.io/original-resource-UID": format!("source-uid-{name}"),
                "cache.kcp.io/original-resource-version": "7"}},
            "spec": {"intent": format!("{name}-spec")}});
        let r = shard
            .client
            .post(shard.url(
                PROVIDER_WS,
                &format!("wildwest.dev/v1alpha1/sheriffs:{hash}"),
            ))
            .json(&object)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    hash
}

async fn slice_keyed_scenario(generation: (&str, &str, &str, &str, &str)) {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "user-1-token,user-1,u-1\n").unwrap();
    let server = Server::start(&["--token-auth-file", tokens.path().to_str().unwrap()]);
    let shard = Shard {
        client: server.admin_client(),
        base: server.url.clone(),
    };
    let hash = setup_slice_keyed(&shard, generation).await;
    let user = server.token_client();
    let vw_of = |key: &str, consumer: &str| {
        format!(
            "{}/services/replication/{PROVIDER_WS}/{key}/clusters/{consumer}/apis/wildwest.dev/v1alpha1/sheriffs",
            server.url
        )
    };
    let vw = vw_of(SLICE, CONSUMER_WS);
    let get = |url: String| user.get(url).bearer_auth("user-1-token").send();

    // GET: refused, then allowed once `get` is granted in the export's workspace.
    let r = get(format!("{vw}/sheriff-1")).await.unwrap();
    assert_eq!(r.status(), 403);
    shard.grant("get").await;
    let r = until_allowed(&user, &format!("{vw}/sheriff-1")).await;
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    let cached: Value = shard
        .client
        .get(format!(
            "{}/sheriff-1",
            shard.url(
                PROVIDER_WS,
                &format!("wildwest.dev/v1alpha1/sheriffs:{hash}")
            )
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        got["metadata"]["annotations"],
        json!({"kcp.io/cluster": CONSUMER_WS}),
        "{got}"
    );
    assert_eq!(got["metadata"]["uid"], cached["metadata"]["uid"]);
    assert_ne!(got["metadata"]["uid"], "source-uid-sheriff-1");
    assert_eq!(
        got["metadata"]["resourceVersion"],
        cached["metadata"]["resourceVersion"]
    );

    // LIST, then WATCH, each refused until granted.
    assert_eq!(get(vw.clone()).await.unwrap().status(), 403);
    let rv = list_once_granted(&shard, &user, &vw).await;
    assert_eq!(get(format!("{vw}?watch=true")).await.unwrap().status(), 403);
    shard.grant("watch").await;
    let watch_url = format!(
        "{vw}?watch=true&resourceVersion={rv}&resourceVersionMatch=NotOlderThan&sendInitialEvents=false&labelSelector=hello%3Dworld"
    );
    let r = until_allowed(&user, &watch_url).await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();

    // The shard relabels sheriff-1 into the selector: kube semantics, so it arrives as ADDED.
    let object_url = format!(
        "{}/sheriff-1",
        shard.url(
            PROVIDER_WS,
            &format!("wildwest.dev/v1alpha1/sheriffs:{hash}")
        )
    );
    let mut relabelled = cached.clone();
    relabelled["metadata"]["labels"] = json!({"hello": "world"});
    let r = shard
        .client
        .put(&object_url)
        .json(&relabelled)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let event = next_json_line(&mut body, &mut Vec::new()).await;
    assert_eq!(event["type"], "ADDED", "{event}");
    assert_eq!(event["object"]["metadata"]["name"], "sheriff-1");
    assert_eq!(
        event["object"]["metadata"]["annotations"],
        json!({"kcp.io/cluster": CONSUMER_WS})
    );
    drop(body);

    // An unbound consumer: 403 for every verb; the URL keyed by the resource's name: 404.
    let unbound = vw_of(SLICE, UNBOUND_WS);
    for url in [
        format!("{unbound}/sheriff-1"),
        unbound.clone(),
        format!("{unbound}?watch=true"),
    ] {
        assert_eq!(get(url.clone()).await.unwrap().status(), 403, "{url}");
    }
    let by_resource = get(vw_of("sheriffs", CONSUMER_WS)).await.unwrap();
    assert_eq!(by_resource.status(), 404);

    // The export gone: 404, never a 500.
    let r = shard
        .client
        .delete(format!(
            "{}/cached-wildwest-provider",
            shard.url(PROVIDER_WS, "apis.kcp.io/v1alpha2/apiexports")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = get(vw.clone()).await.unwrap().status();
        if status == 404 || Instant::now() > deadline {
            assert_eq!(status, 404);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_token_user_reads_sheriffs_through_a_v032_slice_once_each_verb_is_granted() {
    slice_keyed_scenario(V032).await;
}

#[tokio::test]
async fn a_token_user_reads_sheriffs_through_a_main_slice_once_each_verb_is_granted() {
    slice_keyed_scenario(MAIN).await;
}
