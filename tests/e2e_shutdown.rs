//! End-to-end: graceful shutdown. SIGTERM during a running watch ends the watch with a clean
//! end of stream, `/readyz` turns unready first, and the process exits 0 within the timeout.

mod common;

use common::{Server, TEAM_A};
use futures_util::StreamExt;
use std::time::Duration;

#[tokio::test]
async fn sigterm_ends_a_running_watch_cleanly_and_exits_zero() {
    let mut server = Server::cloud_co();
    let client = server.admin_client();
    let url = format!(
        "{}/apis/cloud.example.com/v1/cpuflavors?watch=true",
        server.vw("cpuflavors-v1", TEAM_A)
    );
    let watch = client.get(&url).send().await.expect("the watch answers");
    assert_eq!(watch.status(), 200);
    let mut body = watch.bytes_stream();
    // The three initial ADDED events arrive first.
    let mut seen = Vec::new();
    while seen.iter().filter(|b| **b == b'\n').count() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("initial events")
            .expect("open")
            .expect("bytes");
        seen.extend_from_slice(&chunk);
    }
    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(20)))
        .await
        .expect("terminate");
    assert!(status.success(), "exit status {status:?}");
    // The stream ended cleanly: no error, and what was sent ends with a whole frame.
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut rest = Vec::new();
        while let Some(chunk) = body.next().await {
            rest.extend_from_slice(&chunk.expect("a clean end of stream, not an error"));
        }
        rest
    })
    .await
    .expect("the stream ends");
    seen.extend_from_slice(&rest);
    assert!(seen.ends_with(b"\n"), "{}", String::from_utf8_lossy(&seen));
}

#[test]
fn readyz_fails_during_the_shutdown_delay_before_the_process_exits() {
    let repo = common::repo();
    let seed = repo.join("examples/cloud-co").display().to_string();
    let mut server = Server::start(&["--seed", &seed, "--shutdown-delay-duration", "3s"]);
    assert_eq!(server.readyz_code(), "200");
    std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("kill runs");
    // Still listening, but unready.
    common::eventually("readyz turns unready", || {
        let code = server.readyz_code();
        (code == "500").then_some(()).ok_or(code)
    });
    let status = server.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn a_user_over_the_watch_limit_gets_429_while_others_still_watch() {
    let tokens = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(
        tokens.path(),
        "alice-token,alice,a-1,\"system:masters\"\nbob-token,bob,b-1,\"system:masters\"\n",
    )
    .expect("tokens");
    let server = Server::start(&[
        "--token-auth-file",
        tokens.path().to_str().unwrap_or_default(),
        "--max-watches-per-user",
        "2",
    ]);
    let client = server.token_client();
    let url = format!("{}/clusters/root/api/v1/namespaces?watch=true", server.url);
    let watch = |token: &'static str| client.get(&url).bearer_auth(token).send();
    // The first watch ends by itself after a second (timeoutSeconds).
    let first = client
        .get(format!("{url}&timeoutSeconds=1"))
        .bearer_auth("alice-token")
        .send()
        .await
        .expect("answers");
    let second = watch("alice-token").await.expect("answers");
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 200);
    let third = watch("alice-token").await.expect("answers");
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["retry-after"], "1");
    // Another user is not limited by alice's watches.
    let bobs = watch("bob-token").await.expect("answers");
    assert_eq!(bobs.status(), 200);
    // A watch that ends gives its slot back.
    let _ = first.bytes().await;
    common::eventually("alice may watch again", || {
        let r = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                "1",
                "--cacert",
            ])
            .arg(server.ca())
            .args(["-H", "Authorization: Bearer alice-token"])
            .arg(&url)
            .output()
            .expect("curl runs");
        let code = String::from_utf8_lossy(&r.stdout).to_string();
        (code != "429").then_some(()).ok_or(code)
    });
}
