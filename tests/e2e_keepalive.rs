//! End-to-end: errors answered before a request body was read keep the HTTP/1.1 connection
//! (issue 12, "Keep-alive"). The release binary serves the Cloud Co example; requests are
//! written by hand on one TLS socket (headers first, then the body in pieces, as a client on a
//! real network sends them) and every response is read completely, so the test sees exactly
//! what a client's connection sees: each refused write gets its Status and the next request
//! goes over the same connection.

mod common;

use anyhow::{Context, Result, ensure};
use common::raw::{Conn, Reply, Who};
use common::{PROVIDER, Server, TEAM_A};
use serde_json::Value;

/// How many refused writes go over one connection.
const WRITES: usize = 200;
/// The size of every request body: bigger than one TLS record, far below the 256 KiB drained.
const BODY_BYTES: usize = 20 * 1024;

/// A 20 KiB CPUFlavor body.
fn flavor_body() -> Vec<u8> {
    let head = r#"{"apiVersion":"cloud.example.com/v1","kind":"CPUFlavor","metadata":{"name":"cpu-small"},"spec":{"cores":64,"description":""#;
    let tail = r#""}}"#;
    let mut body = head.as_bytes().to_vec();
    body.resize(BODY_BYTES - tail.len(), b'a');
    body.extend_from_slice(tail.as_bytes());
    body
}

fn flavors() -> String {
    format!(
        "/services/replication/{PROVIDER}/cpuflavors-v1/clusters/{TEAM_A}/apis/cloud.example.com/v1/cpuflavors"
    )
}

/// A client that keeps its connection open does not expect to be told to close it.
fn assert_kept(reply: &Reply, what: &str) -> Result<()> {
    ensure!(
        !reply
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close")),
        "{what}: the server closed the connection after answering {}",
        reply.code
    );
    Ok(())
}

/// The connection still serves: a GET of the flavors as this connection's caller.
async fn assert_still_usable(conn: &mut Conn, token: Option<&str>) -> Result<()> {
    let reply = conn
        .send("GET", &flavors(), token, "", &[])
        .await
        .context("a read after the refused writes")?;
    ensure!(
        reply.code == 200,
        "the final read got {}: {}",
        reply.code,
        String::from_utf8_lossy(&reply.body)
    );
    let list: Value = serde_json::from_slice(&reply.body)?;
    ensure!(
        list["kind"] == "CPUFlavorList",
        "not a CPUFlavorList: {list}"
    );
    Ok(())
}

#[tokio::test]
async fn two_hundred_refused_writes_by_alice_all_get_their_status_on_one_connection() -> Result<()>
{
    let server = Server::cloud_co();
    let mut conn = Conn::open(&server, Who::Tokens).await?;
    let body = flavor_body();
    let small = format!("{}/cpu-small", flavors());
    let alice = Some("alice-token");
    for i in 0..WRITES {
        let (method, path, verb, ct) = match i % 4 {
            0 => ("POST", flavors(), "create", "application/json"),
            1 => ("PUT", small.clone(), "update", "application/json"),
            2 => (
                "PATCH",
                small.clone(),
                "patch",
                "application/merge-patch+json",
            ),
            _ => ("DELETE", small.clone(), "delete", "application/json"),
        };
        let reply = conn
            .send(method, &path, alice, ct, &body)
            .await
            .with_context(|| format!("refused write {i} ({method})"))?;
        let message = reply.status(403, "Forbidden")?;
        ensure!(
            message.contains(&format!(
                "User \"alice\" cannot {verb} resource \"cpuflavors\""
            )),
            "write {i}: {message}"
        );
        assert_kept(&reply, &format!("write {i} ({method})"))?;
    }
    assert_still_usable(&mut conn, alice).await
}

#[tokio::test]
async fn two_hundred_refused_writes_by_an_admin_and_not_found_posts_keep_one_connection()
-> Result<()> {
    let server = Server::cloud_co();
    let mut conn = Conn::open(&server, Who::Admin).await?;
    let body = flavor_body();
    let small = format!("{}/cpu-small", flavors());
    for i in 0..WRITES {
        let (method, path, code, reason) = match i % 4 {
            0 => ("PUT", small.clone(), 405, "MethodNotAllowed"),
            1 => ("DELETE", small.clone(), 405, "MethodNotAllowed"),
            2 => ("POST", flavors(), 405, "MethodNotAllowed"),
            _ => ("POST", "/no/such/path".to_string(), 404, "NotFound"),
        };
        let reply = conn
            .send(method, &path, None, "application/json", &body)
            .await
            .with_context(|| format!("request {i} ({method} {path})"))?;
        reply.status(code, reason)?;
        assert_kept(&reply, &format!("request {i} ({method} {path})"))?;
    }
    assert_still_usable(&mut conn, None).await
}

#[tokio::test]
async fn a_not_found_post_with_a_20_kib_body_gets_its_status_and_keeps_the_connection() -> Result<()>
{
    let server = Server::cloud_co();
    let mut conn = Conn::open(&server, Who::Tokens).await?;
    let body = flavor_body();
    // A known user gets the 404; an unknown token is refused (401) before any routing.
    for (token, code, reason) in [
        ("alice-token", 404, "NotFound"),
        ("no-such-token", 401, "Unauthorized"),
    ] {
        let reply = conn
            .send(
                "POST",
                "/no/such/path",
                Some(token),
                "application/json",
                &body,
            )
            .await?;
        let message = reply.status(code, reason)?;
        ensure!(!message.is_empty(), "a Status without a message");
        assert_kept(&reply, "POST /no/such/path")?;
    }
    assert_still_usable(&mut conn, Some("alice-token")).await
}
