//! Our version of kcp's `TestCachedResourceVirtualWorkspace` (`kcp-reference.md` §7.1): a shard
//! writes a Sheriff CachedResource, its export, a consumer binding and the cached sheriffs into
//! the cache server; a token user is refused until the export's workspace grants each verb on
//! `apiexports/content`, then gets, lists and watches through the Replication VW.

mod common;

use common::*;
use futures_util::StreamExt;
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
    shard.create(PROVIDER_WS, "apis.kcp.io/v1alpha2/apiexports", json!({
        "metadata": {"name": "cached-wildwest-provider"},
        "spec": {"resources": [{"group": "wildwest.dev", "name": "sheriffs", "schema": "today.sheriffs.wildwest.dev",
            "storage": {"virtual": {"reference": {"apiGroup": "cache.kcp.io", "kind": "CachedResourceEndpointSlice", "name": CR},
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
    shard.grant("list").await;
    let r = until_allowed(&user, &vw).await;
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sheriff-1", "sheriff-2"]);
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

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

    let mut buf = Vec::new();
    let line = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                return buf[..pos].to_vec();
            }
            let chunk = body.next().await.expect("stream open").expect("chunk");
            buf.extend_from_slice(&chunk);
        }
    })
    .await
    .expect("an event arrives");
    let event: Value = serde_json::from_slice(&line).unwrap();
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
