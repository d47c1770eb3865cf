//! End-to-end: size limits and misbehaving clients (issue 16, "Limits"). The release binary
//! serves the Cloud Co example on a real socket; the hostile requests are written by hand on a
//! TLS connection (no HTTP library sends a 1 MiB request line or a thousand headers), and after
//! each one kubectl, a well-behaved client, still gets its answer.

mod common;

use anyhow::Result;
use common::raw::{Conn, Who};
use common::{PROVIDER, Server, cpu_flavor_cached_object, next_json_line, run_ok};
use std::collections::HashSet;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// kubectl, as a consumer of the example, still lists its three flavors.
fn kubectl_still_works(server: &Server) {
    let mut c = server.kubectl_context("root:team-a");
    c.args(["get", "cpuflavors", "-o", "name"]);
    let out = run_ok(c);
    assert_eq!(out.lines().count(), 3, "kubectl printed {out}");
}

fn get_head(conn: &Conn, target: &str, extra_headers: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n{extra_headers}\r\n",
        conn.host()
    )
}

#[tokio::test]
async fn a_one_mib_query_string_is_refused_with_414_and_kubectl_keeps_working() -> Result<()> {
    let server = Server::cloud_co();
    let mut conn = Conn::open(&server, Who::Admin).await?;
    let target = format!("/api/v1/namespaces?labelSelector={}", "a".repeat(1 << 20));
    conn.write_raw(get_head(&conn, &target, "").as_bytes())
        .await?;
    let reply = conn.reply().await?;
    assert_eq!(reply.code, 414, "a 1 MiB request line");
    kubectl_still_works(&server);
    Ok(())
}

#[tokio::test]
async fn a_query_string_over_64_kib_is_a_414_and_one_under_it_is_served() -> Result<()> {
    let server = Server::cloud_co();
    let mut conn = Conn::open(&server, Who::Admin).await?;
    let long = format!("/api/v1/namespaces?labelSelector={}", "a".repeat(100 << 10));
    conn.write_raw(get_head(&conn, &long, "").as_bytes())
        .await?;
    assert_eq!(conn.reply().await?.code, 414);
    // A long selector that fits is an ordinary request (kube answers a selector it cannot
    // parse with 400, never a size error).
    let mut conn = Conn::open(&server, Who::Admin).await?;
    let fits = format!(
        "/services/cache/shards/root/clusters/{PROVIDER}/apis/cache.kcp.io/v1alpha1/cachedobjects?labelSelector=a+in+({})",
        vec!["x"; 20_000].join(",")
    );
    conn.write_raw(get_head(&conn, &fits, "").as_bytes())
        .await?;
    let reply = conn.reply().await?;
    assert_eq!(reply.code, 200, "{}", String::from_utf8_lossy(&reply.body));
    kubectl_still_works(&server);
    Ok(())
}

#[tokio::test]
async fn a_flood_of_headers_is_refused_with_431_and_kubectl_keeps_working() -> Result<()> {
    let server = Server::cloud_co();
    // 200 headers in one small write: the server reads them all before it answers.
    let mut conn = Conn::open(&server, Who::Admin).await?;
    let flood: String = (0..200).map(|i| format!("X-Flood-{i}: {i}\r\n")).collect();
    conn.write_raw(get_head(&conn, "/api", &flood).as_bytes())
        .await?;
    assert_eq!(conn.reply().await?.code, 431, "200 headers");
    // One 2 MiB header: the server answers 431 once it has read past its 1 MiB limit and
    // closes; the rest may then be refused by the kernel before the client reads the answer.
    let mut conn = Conn::open(&server, Who::Admin).await?;
    let huge = format!("X-Huge: {}\r\n", "h".repeat(2 << 20));
    let head = get_head(&conn, "/api", &huge);
    match conn.write_raw(head.as_bytes()).await {
        Ok(()) => match conn.reply().await {
            Ok(reply) => assert_eq!(reply.code, 431, "one 2 MiB header"),
            Err(e) => assert!(
                format!("{e:#}").contains("closed") || format!("{e:#}").contains("reset"),
                "neither an answer nor a closed connection: {e:#}"
            ),
        },
        Err(e) => assert!(
            format!("{e:#}").to_lowercase().contains("broken pipe")
                || format!("{e:#}").to_lowercase().contains("reset"),
            "{e:#}"
        ),
    }
    kubectl_still_works(&server);
    Ok(())
}

#[tokio::test]
async fn a_10_mib_body_is_a_413_status_and_nothing_is_stored() -> Result<()> {
    let server = Server::cloud_co();
    let url = server.cache(PROVIDER, "cache.kcp.io/v1alpha1/cachedobjects");
    let path = url
        .strip_prefix(&server.url)
        .expect("the cache URL is on the server");
    let mut conn = Conn::open(&server, Who::Admin).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        conn.host(),
        10 << 20
    );
    conn.write_raw(head.as_bytes()).await?;
    // Nothing of the body yet: the server answers by the announced length (a client that sent
    // the body would then see the connection closed).
    let reply = conn.reply().await?;
    let message = reply.status(413, "RequestEntityTooLarge")?;
    assert!(message.contains("limit is 3145728"), "{message}");
    let client = server.admin_client();
    let got = client.get(format!("{url}/huge")).send().await?;
    assert_eq!(got.status(), 404, "nothing was stored");
    kubectl_still_works(&server);
    Ok(())
}

#[tokio::test]
async fn garbage_instead_of_a_tls_handshake_is_dropped_and_kubectl_keeps_working() -> Result<()> {
    let server = Server::cloud_co();
    let host = server.url.strip_prefix("https://").expect("https");
    let mut tcp = tokio::net::TcpStream::connect(host).await?;
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    // The server may close while this is still being written.
    let _ = tcp.write_all(&garbage).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut rest),
    )
    .await;
    assert!(closed.is_ok(), "the server kept a garbage connection open");
    kubectl_still_works(&server);
    Ok(())
}

/// Events of the cache's CachedObjects a watcher saw, by object name, until `want` were seen.
async fn watch_until<S>(body: &mut S, want: &HashSet<String>) -> HashSet<String>
where
    S: futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    let mut seen = HashSet::new();
    let mut buf = Vec::new();
    while !want.is_subset(&seen) {
        let event = next_json_line(body, &mut buf).await;
        if let Some(name) = event["object"]["spec"]["raw"]["metadata"]["name"].as_str() {
            seen.insert(name.to_string());
        }
    }
    seen
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_closed_while_a_fast_watcher_gets_every_event() -> Result<()>
{
    const OBJECTS: usize = 96;
    let repo = common::repo();
    let server = Server::start(&[
        "--seed",
        repo.join("examples/cloud-co").to_str().expect("utf-8"),
        "--write-stall-timeout",
        "2s",
    ]);
    let url = server.cache(PROVIDER, "cache.kcp.io/v1alpha1/cachedobjects");
    let client = server.admin_client();
    // The slow watcher: a watch request on a socket with a small receive buffer, never read.
    let mut slow = Conn::open_with(&server, Who::Admin, Some(4096)).await?;
    let path = format!(
        "{}?watch=true",
        url.strip_prefix(&server.url).expect("on the server")
    );
    slow.write_raw(get_head(&slow, &path, "").as_bytes())
        .await?;
    // The fast watcher of the same collection.
    let fast = client.get(format!("{url}?watch=true")).send().await?;
    assert_eq!(fast.status(), 200);
    let mut fast = fast.bytes_stream();
    // 96 flavors of 64 KiB each: 6 MiB of events, far more than the slow socket takes.
    let description = "d".repeat(64 << 10);
    let mut names = HashSet::new();
    for i in 0..OBJECTS {
        let name = format!("cpu-stall-{i}");
        let object = cpu_flavor_cached_object(
            &name,
            &format!("uid-stall-{i}"),
            serde_json::json!({"cores": 1, "description": description}),
        );
        let created = client.post(&url).json(&object).send().await?;
        assert_eq!(created.status(), 201, "{}", created.text().await?);
        names.insert(name);
    }
    let seen = tokio::time::timeout(Duration::from_secs(20), watch_until(&mut fast, &names))
        .await
        .expect("the fast watcher gets every event while the slow one is stuck");
    assert!(names.is_subset(&seen));
    // The server gives up the slow connection (a metric says so) …
    let metrics = format!("{}/metrics", server.url);
    let mut closed = 0;
    for _ in 0..200 {
        let text = client.get(&metrics).send().await?.text().await?;
        closed = text
            .lines()
            .find(|l| l.starts_with("replication_vw_connections_closed_write_stall_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if closed >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(closed, 1, "the stalled watch connection was not closed");
    // … so its client finds the stream ended before it got all the events, and relists.
    let read = slow.read_until_closed().await?;
    assert!(
        read < OBJECTS * (64 << 10),
        "the slow watcher got all {read} bytes"
    );
    Ok(())
}
