//! End-to-end on a real etcd (loopback, the distribution's etcd 3.4): a shard whose workspaces
//! and cache live in etcd survives `kill -9`; two `cache-server` replicas over one etcd (mutual
//! TLS) read, watch and conflict on each other's writes, and one keeps serving while the other
//! is down; keys are kcp's layout as `etcdctl` shows them; a role follows renewed etcd client
//! certificates and CA without a restart.

mod common;

use common::etcd::Etcd;
use common::{Server, TEAM_A, eventually, next_json_line, repo, run_ok};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn alice_lists(server: &Server) -> Result<String, String> {
    common::alice_lists_three(server, &server.vw("cpuflavors-v1", TEAM_A))
}

#[test]
fn a_shard_on_etcd_comes_back_from_kill_9_without_its_seed() {
    let etcd = Etcd::start();
    let repo = repo();
    let seed = repo.join("examples/cloud-co").display().to_string();
    let tokens = repo
        .join("examples/cloud-co/tokens.csv")
        .display()
        .to_string();
    let mut args = vec![
        "--seed".to_string(),
        seed,
        "--token-auth-file".into(),
        tokens,
    ];
    args.extend(etcd.flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::start(&args);
    let before = eventually("alice lists the flavors", || alice_lists(&server));

    server.kill();
    server.drop_arg("--seed");
    server.restart();
    server.wait_until_ready();
    let after = eventually("alice lists the flavors after the restart", || {
        alice_lists(&server)
    });
    assert_eq!(before, after);
    let mut crs = server.kubectl_admin(&format!("{}/clusters/root:cloudco", server.url));
    crs.args(["get", "cachedresources", "-o", "name"]);
    assert_eq!(
        run_ok(crs).trim(),
        "cachedresource.cache.kcp.io/cpuflavors-v1\ncachedresource.cache.kcp.io/memflavors-v1"
    );
    // kcp's layout: the shard's workspaces under /registry without a shard segment, the
    // cache under /cache with one.
    let keys = etcd.ctl(&["get", "--prefix", "/", "--keys-only"]);
    assert!(
        keys.contains("/registry/core.kcp.io/logicalclusters/1p5f2x8rkq0vd7wz/cluster"),
        "{keys}"
    );
    assert!(
        keys.contains("/cache/cache.kcp.io/cachedresources/root/1p5f2x8rkq0vd7wz/cpuflavors-v1"),
        "{keys}"
    );
}

/// POST the export `name` to the cache-server replica `server`.
async fn create(client: &reqwest::Client, server: &Server, name: &str) -> reqwest::Response {
    client
        .post(collection(server))
        .json(&export(name))
        .send()
        .await
        .unwrap()
}

/// A watch of `url` from the revision of a list of it (the response, still streaming).
async fn watch_from_now(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let listed: Value = client.get(url).send().await.unwrap().json().await.unwrap();
    let rv = listed["metadata"]["resourceVersion"].as_str().unwrap();
    client
        .get(format!("{url}?watch=true&resourceVersion={rv}"))
        .send()
        .await
        .unwrap()
}

/// A cache-server URL of a collection in cluster `c1` on shard `shard-1`.
fn collection(server: &Server) -> String {
    format!(
        "{}/services/cache/shards/shard-1/clusters/c1/apis/apis.kcp.io/v1alpha2/apiexports",
        server.url
    )
}

fn export(name: &str) -> Value {
    json!({"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIExport",
        "metadata": {"name": name, "annotations": {"kcp.io/shard": "shard-1"}}, "spec": {}})
}

#[tokio::test]
async fn two_cache_server_replicas_on_one_etcd_serve_each_others_writes() {
    let etcd = Etcd::start_tls();
    let flags = etcd.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let one = Server::launch("cache-server", &flags);
    let mut two = Server::launch("cache-server", &flags);
    let (c1, c2) = (one.admin_client(), two.admin_client());

    // A watch on replica two sees a create through replica one.
    let watch = watch_from_now(&c2, &collection(&two)).await;
    assert_eq!(watch.status(), 200);
    let mut events = watch.bytes_stream();
    let created = create(&c1, &one, "wyatt").await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let event = next_json_line(&mut events, &mut Vec::new()).await;
    assert_eq!(event["type"], "ADDED");
    assert_eq!(
        event["object"]["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    drop(events);

    // A read through replica two is never stale; a stale write through it conflicts.
    let got = c2
        .get(format!("{}/wyatt", collection(&two)))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let mut first: Value = got.json().await.unwrap();
    let mut second = first.clone();
    first["spec"] = json!({"note": "one"});
    let r = c1
        .put(format!("{}/wyatt", collection(&one)))
        .json(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    second["spec"] = json!({"note": "two"});
    let r = c2
        .put(format!("{}/wyatt", collection(&two)))
        .json(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let again = create(&c2, &two, "wyatt").await;
    assert_eq!(again.status(), 409);

    // Replica two down: replica one keeps serving and writing; two catches up when back.
    two.kill();
    let r = create(&c1, &one, "doc").await;
    assert_eq!(r.status(), 201);
    two.restart();
    two.wait_until_ready();
    let c2 = two.admin_client();
    let got = c2
        .get(format!("{}/doc", collection(&two)))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let keys = etcd.ctl(&["get", "--prefix", "/cache/", "--keys-only"]);
    assert!(
        keys.contains("/cache/apis.kcp.io/apiexports/shard-1/c1/doc"),
        "{keys}"
    );
}

#[tokio::test]
async fn while_etcd_is_down_reads_go_on_writes_are_503_and_both_recover() {
    let mut etcd = Etcd::start();
    let flags = etcd.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::launch("cache-server", &flags);
    let client = server.admin_client();
    let r = create(&client, &server, "wyatt").await;
    assert_eq!(r.status(), 201);
    let watch = watch_from_now(&client, &collection(&server)).await;
    let mut events = watch.bytes_stream();

    etcd.kill();
    // Writes: a 503 with Retry-After, at once (once the store noticed, which its watch does
    // when the connection drops).
    let refused = loop {
        let r = create(&client, &server, "doc").await;
        if r.status() == 503 {
            break r;
        }
        assert_eq!(
            r.status(),
            201,
            "before the outage is noticed the write may still land"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    let status: Value = refused.json().await.unwrap();
    assert_eq!(status["reason"], "ServiceUnavailable");
    // Reads: from the watch cache.
    let got = client
        .get(format!("{}/wyatt", collection(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let ready = client
        .get(format!("{}/readyz?verbose", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let text = ready.text().await.unwrap();
    assert!(text.contains("etcd unreachable"), "{text}");

    // etcd back: writes work again and the open watch continues.
    etcd.restart();
    let created = loop {
        let r = create(&client, &server, "holliday").await;
        if r.status() == 201 {
            break r;
        }
        assert_eq!(r.status(), 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(created.status(), 201);
    // The watch that was open during the outage delivers the new object.
    let mut buf = Vec::new();
    let seen = loop {
        let event = next_json_line(&mut events, &mut buf).await;
        if event["object"]["metadata"]["name"] == "holliday" {
            break event;
        }
    };
    assert_eq!(seen["type"], "ADDED");
}

#[tokio::test]
async fn every_acknowledged_write_survives_kill_9_of_a_replica_under_load() {
    let etcd = Etcd::start();
    let flags = etcd.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut victim = Server::launch("cache-server", &flags);
    let survivor = Server::launch("cache-server", &flags);
    let client = victim.admin_client();
    let url = collection(&victim);
    // Eight writers create objects until the replica dies under them.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (client, url, acked) = (client.clone(), url.clone(), acknowledged.clone());
        writers.spawn(async move {
            for i in 0..10_000 {
                let name = format!("w{w}-{i}");
                match client.post(&url).json(&export(&name)).send().await {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push(name),
                    _ => return,
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while acknowledged.lock().unwrap().len() < 200 {
        assert!(Instant::now() < deadline, "the writers made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.kill();
    while writers.join_next().await.is_some() {}
    let acked = acknowledged.lock().unwrap().clone();
    // Every acknowledged object is in etcd and served by the other replica.
    let list: Value = survivor
        .admin_client()
        .get(collection(&survivor))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let served: std::collections::BTreeSet<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|n| !served.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost: {missing:?}",
        missing.len()
    );
    let keys = etcd.ctl(&[
        "get",
        "--prefix",
        "/cache/apis.kcp.io/apiexports/",
        "--keys-only",
    ]);
    let stored = keys.lines().filter(|l| !l.is_empty()).count();
    assert!(
        stored >= acked.len(),
        "{stored} keys in etcd, {} acknowledged",
        acked.len()
    );
}

#[tokio::test]
async fn a_value_over_etcds_request_limit_is_413_and_nothing_is_stored() {
    let etcd = Etcd::start();
    let flags = etcd.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::launch("cache-server", &flags);
    let client = server.admin_client();
    let mut big = export("huge");
    big["spec"] = json!({"blob": "x".repeat(2 * 1024 * 1024)});
    let r = client
        .post(collection(&server))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["reason"], "RequestEntityTooLarge");
    let got = client
        .get(format!("{}/huge", collection(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 404);
}

#[test]
fn a_shard_refuses_an_etcd_prefix_another_shard_holds() {
    let etcd = Etcd::start();
    let mut flags = etcd.flags();
    flags.extend(["--shard-name".to_string(), "shard-a".to_string()]);
    let flags_a: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _a = Server::start(&flags_a);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_replication-vw"));
    let dir = tempfile::tempdir().unwrap();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--etcd-servers", &etcd.url, "--shard-name", "shard-b"]);
    let out = cmd.output().expect("the second shard runs and exits");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the etcd prefix /registry holds the workspaces of shard \"shard-a\""),
        "{err}"
    );
}

#[test]
fn virtual_workspaces_on_either_cache_server_replica_serve_a_shards_flavors() {
    let etcd = Etcd::start_tls();
    let flags = etcd.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let one = Server::launch("cache-server", &flags);
    let two = Server::launch("cache-server", &flags);
    let repo = repo();
    let tokens = repo
        .join("examples/cloud-co/tokens.csv")
        .display()
        .to_string();
    let seed = repo.join("examples/cloud-co").display().to_string();
    let k1 = one.kubeconfig().display().to_string();
    let k2 = two.kubeconfig().display().to_string();
    // The shard writes through replica one only.
    let _shard = Server::launch(
        "serve",
        &[
            "--cache-kubeconfig",
            &k1,
            "--seed",
            &seed,
            "--token-auth-file",
            &tokens,
        ],
    );
    for kubeconfig in [&k1, &k2] {
        let vw = Server::launch(
            "virtual-workspace",
            &[
                "--cache-kubeconfig",
                kubeconfig,
                "--token-auth-file",
                &tokens,
            ],
        );
        let names = eventually("alice lists the flavors through this replica", || {
            alice_lists(&vw)
        });
        assert!(
            names.contains("cpuflavor.cloud.example.com/cpu-small"),
            "{names}"
        );
    }
}

#[test]
fn a_role_started_before_etcd_says_why_it_is_not_ready_and_serves_once_etcd_is_up() {
    let mut etcd = Etcd::start();
    etcd.kill();
    let flags = etcd.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::launch_unready("cache-server", &flags);
    let readyz = || {
        let out = std::process::Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(server.ca())
            .arg(format!("{}/readyz", server.url))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let why = eventually("readyz names the unreachable etcd", || {
        let text = readyz();
        text.contains("etcd unreachable")
            .then_some(text.clone())
            .ok_or(text)
    });
    assert!(why.contains("readyz check failed"), "{why}");
    assert_eq!(server.readyz_code(), "500");
    etcd.restart();
    server.wait_until_ready();
    assert_eq!(readyz(), "ok");
}

#[tokio::test]
async fn a_watch_from_before_etcdctl_compact_is_410_gone() {
    let etcd = Etcd::start();
    let flags = etcd.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::launch("cache-server", &flags);
    let client = server.admin_client();
    let r = create(&client, &server, "wyatt").await;
    let mut current: Value = r.json().await.unwrap();
    let first = current["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for note in ["a", "b", "c"] {
        current["spec"] = json!({"note": note});
        let r = client
            .put(format!("{}/wyatt", collection(&server)))
            .json(&current)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        current = r.json().await.unwrap();
    }
    let last = current["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    etcd.ctl(&["compact", &last]);
    let r = client
        .get(format!(
            "{}?watch=true&resourceVersion={first}",
            collection(&server)
        ))
        .send()
        .await
        .unwrap();
    let (code, body) = (r.status().as_u16(), r.text().await.unwrap_or_default());
    // kube answers a watch from a compacted revision with 410 (as a Status, or as the ERROR
    // event of a 200 stream).
    assert!(
        code == 410 || (body.contains("\"ERROR\"") && body.contains("\"code\":410")),
        "{code}: {body}"
    );
}

#[tokio::test]
async fn a_cache_server_follows_a_rotated_etcd_ca_and_client_certificate_without_a_restart() {
    let mut etcd = Etcd::start_tls();
    let flags = etcd.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::launch("cache-server", &flags);
    let client = server.admin_client();
    assert_eq!(create(&client, &server, "before").await.status(), 201);

    // A new CA: etcd's serving pair, its trusted CA and our client pair all change on disk, in
    // place (the file names the flags give stay). The role notices and moves to a new client.
    etcd.rotate_certificates();
    let log = server.wait_for_log("etcd client certificates reloaded");
    assert!(log.contains("etcd client certificates reloaded"), "{log}");

    // etcd restarted on the new CA only: the old client certificate would be refused and the
    // old CA would not verify etcd, so a write succeeds only with the renewed files.
    etcd.kill();
    etcd.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = create(&client, &server, "after").await.status();
        if status == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the write after the rotation never succeeded (last {status})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The watch cache follows etcd again: both objects list, the new one read back.
    let listed: Value = client
        .get(collection(&server))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["after", "before"]);
    let keys = etcd.ctl(&["get", "--prefix", "/cache/", "--keys-only"]);
    assert!(
        keys.contains("/cache/apis.kcp.io/apiexports/shard-1/c1/after"),
        "{keys}"
    );
}
