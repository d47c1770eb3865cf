//! End-to-end: the embedded default (`--storage local`) keeps its data across a real `kill -9`
//! and a restart on the same data directory, and does not seed over what the user changed.

mod common;

use common::{Server, TEAM_A};
use std::process::Command;

fn run(mut c: Command) -> String {
    let out = c.output().expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cpu_small(server: &Server, jsonpath: &str) -> String {
    let mut c = server.kubectl_admin(&format!("{}/clusters/root:cloudco", server.url));
    c.args([
        "get",
        "cpuflavor",
        "cpu-small",
        "-o",
        &format!("jsonpath={jsonpath}"),
    ]);
    run(c)
}

#[test]
fn the_embedded_server_keeps_a_change_across_kill_9_and_does_not_seed_over_it() {
    let mut server = Server::cloud_co();
    let mut patch = server.kubectl_admin(&format!("{}/clusters/root:cloudco", server.url));
    patch.args([
        "patch",
        "cpuflavor",
        "cpu-small",
        "--type=merge",
        "-p",
        r#"{"spec":{"cores":3}}"#,
    ]);
    run(patch);
    let rv = cpu_small(&server, "{.metadata.resourceVersion}");

    // Killed without warning, started again with the same command (and its --seed).
    server.crash_and_restart();
    server.wait_until_ready();

    assert_eq!(
        cpu_small(&server, "{.spec.cores}"),
        "3",
        "the change survived"
    );
    assert_eq!(
        cpu_small(&server, "{.metadata.resourceVersion}"),
        rv,
        "with the same resourceVersion"
    );
    let mut list = server.kubectl_token(&server.vw("cpuflavors-v1", TEAM_A), Some("alice-token"));
    list.args([
        "get",
        "cpuflavors",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.cores} {end}",
    ]);
    let served = run(list);
    assert_eq!(
        served.trim(),
        "cpu-large=8 cpu-medium=4 cpu-small=3",
        "the virtual workspace serves the kept objects"
    );
}
