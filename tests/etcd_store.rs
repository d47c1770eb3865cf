//! The etcd store against a real etcd on loopback: optimistic concurrency, two stores (two
//! replicas) on one prefix seeing each other's writes and events, etcd's compaction as 410,
//! encryption at rest as etcd shows it, and mutual TLS.

mod common;

use bytes::Bytes;
use common::etcd::Etcd;
use futures_util::StreamExt;
use replication_vw::store::etcd::{EtcdOptions, EtcdStore, EtcdTls};
use replication_vw::store::{EventKind, Key, Scope, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

fn key(name: &str) -> Key {
    Key {
        group: "wildwest.dev".into(),
        resource: "sheriffs".into(),
        shard: "shard-1".into(),
        cluster: "root".into(),
        namespace: Default::default(),
        name: name.into(),
    }
}

async fn open(etcd: &Etcd, prefix: &str) -> EtcdStore {
    let tls = etcd.tls.as_ref().map(|(ca, cert, key)| EtcdTls {
        ca: Some(std::fs::read(ca).expect("ca")),
        cert: Some(std::fs::read(cert).expect("cert")),
        key: Some(std::fs::read(key).expect("key")),
    });
    let opened = EtcdStore::open(EtcdOptions {
        endpoints: vec![etcd.url.clone()],
        prefix: prefix.into(),
        tls,
        ..EtcdOptions::default()
    });
    tokio::time::timeout(Duration::from_secs(20), opened)
        .await
        .expect("opens within 20 s")
        .expect("opens")
}

fn value(v: &str) -> Bytes {
    Bytes::from(format!("{{\"spec\":\"{v}\"}}"))
}

#[tokio::test]
async fn writes_are_transactions_on_etcds_revisions() {
    let etcd = Etcd::start();
    let store = open(&etcd, "/cache").await;
    let created = store
        .create(key("wyatt"), value("a"))
        .await
        .expect("create");
    assert!(matches!(
        store.create(key("wyatt"), value("b")).await,
        Err(StoreError::AlreadyExists)
    ));
    // The record's revision is the key's mod_revision in etcd.
    let json = etcd.ctl(&[
        "get",
        "/cache/wildwest.dev/sheriffs/shard-1/root/wyatt",
        "-w",
        "json",
    ]);
    assert!(
        json.contains(&format!("\"mod_revision\":{}", created.revision)),
        "{json}"
    );
    let updated = store
        .update(key("wyatt"), value("b"), Some(created.revision))
        .await
        .expect("update at the current revision");
    assert!(updated.revision > created.revision);
    assert!(matches!(
        store.update(key("wyatt"), value("c"), Some(created.revision)).await,
        Err(StoreError::Conflict { current }) if current == updated.revision
    ));
    assert!(matches!(
        store.update(key("doc"), value("c"), None).await,
        Err(StoreError::NotFound)
    ));
    let got = store
        .get(&key("wyatt"))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.value, value("b"));
    let deleted = store
        .delete(&key("wyatt"), Some(updated.revision))
        .await
        .expect("delete");
    assert_eq!(deleted.value, value("b"));
    assert!(deleted.revision > updated.revision);
    assert!(store.get(&key("wyatt")).await.expect("get").is_none());
}

#[tokio::test]
async fn a_second_store_on_the_same_prefix_reads_and_watches_the_first_ones_writes() {
    let etcd = Etcd::start();
    let one = open(&etcd, "/cache").await;
    let two = open(&etcd, "/cache").await;
    let start = two.list(&Scope::all()).await.expect("list").revision;
    let mut events = two.watch(Scope::all(), start).await.expect("watch");
    let created = one.create(key("wyatt"), value("a")).await.expect("create");
    let event = tokio::time::timeout(Duration::from_secs(1), events.next())
        .await
        .expect("the event reaches the other store within a second")
        .expect("open")
        .expect("an event");
    assert_eq!(event.kind, EventKind::Created);
    assert_eq!(event.revision, created.revision);
    // A list without a resourceVersion through the other store is never stale.
    let listed = two.list(&Scope::all()).await.expect("list");
    assert_eq!(listed.records.len(), 1);
    assert!(listed.revision >= created.revision);
    // A stale write through the other store conflicts.
    one.update(key("wyatt"), value("b"), Some(created.revision))
        .await
        .expect("update");
    assert!(matches!(
        two.update(key("wyatt"), value("c"), Some(created.revision))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    // Writes under another prefix move etcd's revision; lists stay consistent and quick.
    let other = open(&etcd, "/registry").await;
    for i in 0..3 {
        other
            .create(key(&format!("o{i}")), value("x"))
            .await
            .expect("create");
    }
    let listed = two.list(&Scope::all()).await.expect("list");
    assert_eq!(listed.records.len(), 1);
}

#[tokio::test]
async fn a_watch_from_before_etcds_compaction_is_expired() {
    let etcd = Etcd::start();
    let store = open(&etcd, "/cache").await;
    let first = store.create(key("a"), value("1")).await.expect("create");
    let mut last = first.revision;
    for i in 0..3 {
        last = store
            .update(key("a"), value(&i.to_string()), Some(last))
            .await
            .expect("update")
            .revision;
    }
    // Still in the history: a watch from the first revision replays the updates.
    let replay = store
        .watch(Scope::all(), first.revision)
        .await
        .expect("watch");
    drop(replay);
    etcd.ctl(&["compact", &last.to_string()]);
    match store.watch(Scope::all(), first.revision).await {
        Err(StoreError::Expired { .. }) => {}
        Ok(_) => panic!("a watch from a compacted revision was accepted"),
        Err(e) => panic!("unexpected error {e}"),
    }
    assert!(store.watch(Scope::all(), last).await.is_ok());
}

#[tokio::test]
async fn with_aescbc_etcd_holds_only_encrypted_values() {
    let etcd = Etcd::start();
    let config = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: ['*.*']\n  providers:\n  - aescbc:\n      keys:\n      - name: key1\n        secret: MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=\n";
    let transformer =
        replication_vw::store::encryption::Transformer::from_config(config).expect("config");
    let store = EtcdStore::open(EtcdOptions {
        endpoints: vec![etcd.url.clone()],
        prefix: "/cache".into(),
        transformer: Arc::new(transformer),
        ..EtcdOptions::default()
    })
    .await
    .expect("opens");
    store
        .create(key("wyatt"), value("secret-plans"))
        .await
        .expect("create");
    let raw = etcd.ctl(&["get", "--prefix", "/cache/", "--print-value-only"]);
    assert!(raw.starts_with("k8s:enc:aescbc:v1:key1:"), "{raw}");
    assert!(!raw.contains("secret-plans"));
    let got = store
        .get(&key("wyatt"))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.value, value("secret-plans"));
}

#[tokio::test]
async fn mutual_tls_to_etcd_works_with_the_three_files() {
    let etcd = Etcd::start_tls();
    let store = open(&etcd, "/cache").await;
    store
        .create(key("wyatt"), value("a"))
        .await
        .expect("create over mTLS");
    let keys = etcd.ctl(&["get", "--prefix", "/cache/", "--keys-only"]);
    assert_eq!(
        keys.trim(),
        "/cache/wildwest.dev/sheriffs/shard-1/root/wyatt"
    );
}

#[tokio::test]
async fn keys_that_do_not_decode_are_skipped_and_counted_and_the_rest_is_served() {
    let etcd = Etcd::start();
    // One key of another shape, one value encrypted with a provider nobody configured.
    etcd.ctl(&["put", "/cache/not-a-kcp-key", "x"]);
    etcd.ctl(&[
        "put",
        "/cache/wildwest.dev/sheriffs/shard-1/root/sealed",
        "k8s:enc:aescbc:v1:key1:garbage",
    ]);
    etcd.ctl(&[
        "put",
        "/cache/wildwest.dev/sheriffs/shard-1/root/wyatt",
        "{\"spec\":\"a\"}",
    ]);
    let store = open(&etcd, "/cache").await;
    assert_eq!(store.skipped(), 2);
    let listed = store.list(&Scope::all()).await.expect("list");
    let names: Vec<&str> = listed.records.iter().map(|r| r.key.name.as_str()).collect();
    assert_eq!(names, ["wyatt"]);
}

#[tokio::test]
async fn the_compactor_compacts_etcds_history_one_interval_behind() {
    let etcd = Etcd::start();
    let store = open(&etcd, "/cache").await;
    let first = store.create(key("a"), value("1")).await.expect("create");
    store
        .update(key("a"), value("2"), Some(first.revision))
        .await
        .expect("update");
    store.spawn_compactor(Duration::from_millis(200));
    // Within a few rounds etcd no longer has the first revision's history.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = etcd
            .etcdctl()
            .args([
                "get",
                "/cache/",
                "--prefix",
                "--rev",
                &first.revision.to_string(),
            ])
            .output()
            .expect("etcdctl runs");
        if String::from_utf8_lossy(&out.stderr).contains("compacted") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "etcd was never compacted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Current data is untouched.
    let got = store.get(&key("a")).await.expect("get").expect("present");
    assert_eq!(got.value, value("2"));
}
