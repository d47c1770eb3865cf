//! End-to-end: what the server writes for an operator. With `--log-format json` every line on
//! stderr is one JSON object, start-up hints included; in text, each hint is a line of its own
//! that pastes into a shell as it is.

mod common;

use common::Server;
use serde_json::Value;

fn seed() -> String {
    common::repo()
        .join("examples/cloud-co")
        .display()
        .to_string()
}

#[test]
fn with_json_logs_every_line_is_a_json_object_and_hints_carry_the_command() {
    let server = Server::start(&["--log-format", "json", "--seed", &seed()]);
    let lines = server.wait_for_log("Try this command.");
    let mut commands = Vec::new();
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let record: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        if let Some(c) = record["fields"]["command"].as_str() {
            commands.push(c.to_string());
        }
    }
    assert!(
        commands
            .iter()
            .any(|c| c.starts_with("kubectl --kubeconfig ")),
        "{commands:?}"
    );
}

#[test]
fn a_text_hint_is_a_command_that_runs_as_pasted() {
    let server = Server::start(&["--seed", &seed()]);
    let lines = server.wait_for_log("--context root:team-a get cpuflavors");
    let hint = lines
        .lines()
        .find(|l| {
            l.trim_start().starts_with("kubectl ")
                && l.contains("--context root:team-a get cpuflavors")
        })
        .expect("a hint line");
    // Run it as a shell would, with our kubectl.
    let command = hint
        .trim()
        .replacen("kubectl", &common::kubectl_path().display().to_string(), 1);
    let out = std::process::Command::new("sh")
        .args(["-c", &command])
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cpu-small"));
}

#[test]
fn with_log_requests_each_request_is_a_line_and_refusals_are_audited() {
    let server = Server::start(&[
        "--log-format",
        "json",
        "--log-requests",
        "--seed",
        &seed(),
        "--token-auth-file",
        &common::repo()
            .join("examples/cloud-co/tokens.csv")
            .display()
            .to_string(),
    ]);
    let mut get = server.kubectl_admin(&format!("{}/clusters/root:cloudco", server.url));
    get.args(["get", "cachedresources", "-o", "name"]);
    common::run_ok(get);
    // bob may not create anything in root:cloudco.
    let mut create = server.kubectl_token(
        &format!("{}/clusters/root:cloudco", server.url),
        Some("bob-token"),
    );
    create.args(["create", "configmap", "sneaky", "--from-literal=a=b"]);
    let _ = create.output();
    let lines = server.wait_for_log("Request refused.");
    let records: Vec<Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let request = records
        .iter()
        .find(|r| {
            r["target"] == "request" && r["fields"]["resource"] == "cache.kcp.io/cachedresources"
        })
        .expect("a request line for the list");
    assert_eq!(request["fields"]["verb"], "list");
    assert_eq!(request["fields"]["code"], 200);
    assert_eq!(request["fields"]["user"], "admin");
    let audit = records
        .iter()
        .find(|r| r["target"] == "audit")
        .expect("an audit record");
    assert_eq!(audit["fields"]["user"], "bob");
    assert_eq!(audit["fields"]["verb"], "create");
    assert_eq!(audit["fields"]["code"], 403);
}
