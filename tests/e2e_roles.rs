//! End-to-end: the three roles as separate processes on loopback — one `cache-server`, two
//! shards (`serve --cache-kubeconfig`, the provider on one, the consumer on the other) and two
//! standalone `virtual-workspace` replicas — driven with the real kubectl, including a
//! `kill -9` of the cache server and its restart on the same port.

mod common;

use common::{PROVIDER, Server, TEAM_A, eventually, repo};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn example(file: &str) -> String {
    repo()
        .join("examples/cloud-co")
        .join(file)
        .to_string_lossy()
        .into_owned()
}

fn tokens() -> String {
    example("tokens.csv")
}

/// Run a kubectl command; stdout on success, the failure otherwise.
fn run(mut c: Command) -> Result<String, String> {
    let out = c.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The flavor names alice lists through the virtual workspace of `server` (trusting its CA).
fn alice_lists(server: &Server) -> Result<Vec<String>, String> {
    let base = &server.url;
    let url = format!("{base}/services/replication/{PROVIDER}/cpuflavors-v1/clusters/{TEAM_A}");
    let mut c = server.kubectl_token(&url, Some("alice-token"));
    c.args([
        "get",
        "cpuflavors",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.annotations.kcp\\.io/cluster}{\"\\n\"}{end}",
    ]);
    let out = run(c)?;
    let mut names = Vec::new();
    for line in out.lines().filter(|l| !l.is_empty()) {
        let (name, cluster) = line.split_once(' ').unwrap_or((line, ""));
        if cluster != TEAM_A {
            return Err(format!("{name} has kcp.io/cluster {cluster:?}"));
        }
        names.push(name.to_string());
    }
    names.sort();
    Ok(names)
}

struct Topology {
    cache: Server,
    provider: Server,
    consumer: Server,
    vws: Vec<Server>,
}

fn topology() -> Topology {
    topology_with_cache(&[])
}

fn topology_with_cache(cache_args: &[&str]) -> Topology {
    let cache = Server::launch("cache-server", cache_args);
    let ck = cache.kubeconfig().to_string_lossy().into_owned();
    let tokens = tokens();
    let (provider_yaml, export_yaml, rbac_yaml, flavors_yaml, team_a_yaml) = (
        example("provider.yaml"),
        example("export.yaml"),
        example("rbac.yaml"),
        example("flavors.yaml"),
        example("team-a.yaml"),
    );
    let provider = Server::launch(
        "serve",
        &[
            "--cache-kubeconfig",
            &ck,
            "--shard-name",
            "shard-a",
            "--token-auth-file",
            &tokens,
            "--seed",
            &provider_yaml,
            "--seed",
            &export_yaml,
            "--seed",
            &rbac_yaml,
            "--seed",
            &flavors_yaml,
        ],
    );
    let consumer = Server::launch(
        "serve",
        &[
            "--cache-kubeconfig",
            &ck,
            "--cache-server",
            &cache.url,
            "--shard-name",
            "shard-b",
            "--token-auth-file",
            &tokens,
            "--seed",
            &team_a_yaml,
        ],
    );
    let vws = (0..2)
        .map(|_| {
            Server::launch(
                "virtual-workspace",
                &["--cache-kubeconfig", &ck, "--token-auth-file", &tokens],
            )
        })
        .collect();
    Topology {
        cache,
        provider,
        consumer,
        vws,
    }
}

/// A running `kubectl get -w` whose output lines arrive on a channel.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watch {
    fn start(server: &Server) -> Watch {
        let base = &server.url;
        let url = format!("{base}/services/replication/{PROVIDER}/cpuflavors-v1/clusters/{TEAM_A}");
        let mut c = server.kubectl_token(&url, Some("alice-token"));
        c.args([
            "get",
            "cpuflavors",
            "-w",
            "--output-watch-events",
            "-o",
            "custom-columns=EVENT:.type,NAME:.object.metadata.name,CORES:.object.spec.cores",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().expect("kubectl starts");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
            let _ = tx.send("<stdout closed>".into());
        });
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {l}"));
            }
        });
        Watch { child, lines }
    }

    /// Wait (up to `limit`) for a line containing every needle; returns it.
    fn expect(&self, needles: &[&str], limit: Duration) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if needles.iter().all(|n| l.contains(n)) => return Ok(l),
                Ok(l) => seen.push(l),
                Err(_) => return Err(format!("no line with {needles:?}; saw {seen:?}")),
            }
        }
    }
}

fn patch_cores(provider: &Server, cores: u32) {
    let mut c = provider.kubectl_admin(&format!("{}/clusters/root:cloudco", provider.url));
    c.args([
        "patch",
        "cpuflavor",
        "cpu-small",
        "--type=merge",
        "-p",
        &format!("{{\"spec\":{{\"cores\":{cores}}}}}"),
    ]);
    run(c).expect("the provider shard takes the patch");
}

#[test]
fn cloud_co_reads_work_through_every_virtual_workspace_of_a_three_role_topology() {
    let t = topology();
    // The consumer's binding on shard B resolves the export on shard A through the cache.
    let phase = eventually("the binding on shard B binds", || {
        let mut c = t
            .consumer
            .kubectl_admin(&format!("{}/clusters/root:team-a", t.consumer.url));
        c.args([
            "get",
            "apibinding",
            "compute",
            "-o",
            "jsonpath={.status.phase}",
        ]);
        let phase = run(c)?;
        (phase == "Bound").then_some(phase.clone()).ok_or(phase)
    });
    assert_eq!(phase, "Bound");
    let expected = vec!["cpu-large", "cpu-medium", "cpu-small"];
    for vw in t.vws.iter().chain([&t.consumer]) {
        let names = eventually(
            &format!("alice lists the flavors through {}", vw.url),
            || {
                let names = alice_lists(vw)?;
                (names == expected)
                    .then_some(names.clone())
                    .ok_or(format!("{names:?}"))
            },
        );
        assert_eq!(names, expected);
    }
    // The consumer workspace on shard B serves the virtual resource its binding provides,
    // although export, slice and schema live on shard A.
    let in_workspace = eventually(
        "the consumer workspace on shard B lists the flavors",
        || {
            let mut c = t
                .consumer
                .kubectl_admin(&format!("{}/clusters/root:team-a", t.consumer.url));
            c.args(["get", "cpuflavors", "-o", "name"]);
            let out = run(c)?;
            (out.lines().count() == 3).then_some(out.clone()).ok_or(out)
        },
    );
    assert!(in_workspace.contains("cpuflavor.cloud.example.com/cpu-small"));
    // The provider's slice lists the URL of the shard that hosts the binding (shard B).
    let want = format!(
        "{}/services/replication/{PROVIDER}/cpuflavors-v1",
        t.consumer.url
    );
    eventually("the slice lists shard B's URL", || {
        let mut c = t
            .provider
            .kubectl_admin(&format!("{}/clusters/root:cloudco", t.provider.url));
        c.args([
            "get",
            "cachedresourceendpointslice",
            "cpuflavors-v1",
            "-o",
            "jsonpath={.status.endpoints[*].url}",
        ]);
        let urls = run(c)?;
        urls.split(' ').any(|u| u == want).then_some(()).ok_or(urls)
    });
    // A change on shard A reaches a watcher on a standalone virtual workspace.
    let watch = Watch::start(&t.vws[0]);
    watch
        .expect(&["ADDED", "cpu-small"], Duration::from_secs(10))
        .expect("the watch starts with the flavors");
    patch_cores(&t.provider, 5);
    watch
        .expect(&["MODIFIED", "cpu-small", "5"], Duration::from_secs(5))
        .expect("the change reaches the watcher within 5 s");
    drop(t.cache);
}

#[test]
fn virtual_workspaces_recover_from_a_cache_server_that_crashed_and_restarted_empty() {
    let mut t = topology_with_cache(&["--storage", "memory"]);
    let expected = vec!["cpu-large", "cpu-medium", "cpu-small"];
    for vw in &t.vws {
        eventually("the flavors are served", || {
            let names = alice_lists(vw)?;
            (names == expected)
                .then_some(())
                .ok_or(format!("{names:?}"))
        });
    }
    let watch = Watch::start(&t.vws[1]);
    watch
        .expect(&["ADDED", "cpu-small"], Duration::from_secs(10))
        .expect("the watch starts");

    t.cache.crash_and_restart();
    // While the cache is empty and being refilled, the replicas stay ready (they serve what
    // they had), and they converge to the refilled cache without a restart of their own.
    for vw in &t.vws {
        vw.wait_until_ready();
    }
    for vw in &t.vws {
        eventually("the flavors are served again after the refill", || {
            let names = alice_lists(vw)?;
            (names == expected)
                .then_some(())
                .ok_or(format!("{names:?}"))
        });
    }
    // The open watch either continues (it sees the next change) or ends (kubectl exits, so a
    // client relists); it never hangs.
    patch_cores(&t.provider, 7);
    let outcome = watch.expect(&["cpu-small", "7"], Duration::from_secs(15));
    match outcome {
        Ok(_) => {}
        Err(seen) => assert!(
            seen.contains("<stdout closed>"),
            "the watch neither continued nor ended: {seen}"
        ),
    }
}

#[test]
fn a_virtual_workspace_without_a_cache_kubeconfig_exits_with_a_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_replication-vw"))
        .args(["virtual-workspace", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the binary runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--cache-kubeconfig"), "{stderr}");
}

#[test]
fn roles_start_without_their_cache_server_and_become_ready_once_it_is_up() {
    // The cache server's address and credentials exist, but nothing answers there yet.
    let mut cache = Server::launch("cache-server", &[]);
    cache.kill();
    let ck = cache.kubeconfig().to_string_lossy().into_owned();
    let tokens = tokens();
    let mut vw = Server::launch_unready(
        "virtual-workspace",
        &["--cache-kubeconfig", &ck, "--token-auth-file", &tokens],
    );
    let provider_yaml = example("provider.yaml");
    let mut shard = Server::launch_unready(
        "serve",
        &[
            "--cache-kubeconfig",
            &ck,
            "--shard-name",
            "shard-a",
            "--seed",
            &provider_yaml,
        ],
    );
    // Both keep running and answer, not ready, while the cache is away.
    eventually("the roles answer /readyz", || {
        let codes = (vw.readyz_code(), shard.readyz_code());
        (codes.0 != "000" && codes.1 != "000")
            .then_some(())
            .ok_or(format!("{codes:?}"))
    });
    assert_ne!(
        vw.readyz_code(),
        "200",
        "not ready before the cache answers"
    );
    assert!(vw.is_running() && shard.is_running());
    cache.restart();
    vw.wait_until_ready();
    shard.wait_until_ready();
}

#[test]
fn one_cache_server_and_one_virtual_workspace_serve_a_shard_of_each_kcp_generation() {
    let cache = Server::launch("cache-server", &[]);
    let ck = cache.kubeconfig().to_string_lossy().into_owned();
    let tokens = tokens();
    // One shard per generation, each with its provider and consumer (examples/cloud-co*).
    let shards: Vec<Server> = ["cloud-co", "cloud-co-v032", "cloud-co-main"]
        .iter()
        .map(|dir| {
            let seed = repo().join("examples").join(dir);
            Server::launch(
                "serve",
                &[
                    "--cache-kubeconfig",
                    &ck,
                    "--shard-name",
                    &format!("shard-{dir}"),
                    "--token-auth-file",
                    &tokens,
                    "--seed",
                    seed.to_str().unwrap_or_default(),
                ],
            )
        })
        .collect();
    let vw = Server::launch(
        "virtual-workspace",
        &["--cache-kubeconfig", &ck, "--token-auth-file", &tokens],
    );
    let expected = "cpu-large\ncpu-medium\ncpu-small";
    for (key, consumer) in [
        (format!("{PROVIDER}/cpuflavors-v1"), TEAM_A),
        (
            "8v032provcloudco/cpuflavors".to_string(),
            "8v032teamaconsmr",
        ),
        (
            "9mainprovcloudco/cpuflavors".to_string(),
            "9mainteamaconsmr",
        ),
    ] {
        let url = format!("{}/services/replication/{key}/clusters/{consumer}", vw.url);
        let names = eventually(&format!("alice lists the flavors of {key}"), || {
            let mut c = vw.kubectl_token(&url, Some("alice-token"));
            c.args([
                "get",
                "cpuflavors",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
            ]);
            let out = run(c)?;
            (out.trim() == expected).then_some(out.clone()).ok_or(out)
        });
        assert_eq!(names.trim(), expected);
    }
    drop(shards);
}

#[test]
fn a_virtual_workspace_finds_consumers_the_cache_lacks_on_the_kcp_shards_it_is_given() {
    let cache = Server::launch("cache-server", &[]);
    let ck = cache.kubeconfig().to_string_lossy().into_owned();
    let tokens = tokens();
    let main = repo().join("examples/cloud-co-main");
    let file = |f: &str| main.join(f).to_string_lossy().into_owned();
    // The provider's shard writes into the shared cache; the consumer's workspaces are on
    // another shard whose LogicalClusters and APIBindings never reach it (as kcp's).
    let mut provider_args = vec![
        "--cache-kubeconfig".to_string(),
        ck.clone(),
        "--shard-name".into(),
        "provider-shard".into(),
    ];
    for f in [
        "provider.yaml",
        "export.yaml",
        "rbac.yaml",
        "flavors.yaml",
        "slices.yaml",
    ] {
        provider_args.push("--seed".into());
        provider_args.push(file(f));
    }
    let provider_args: Vec<&str> = provider_args.iter().map(String::as_str).collect();
    let _provider = Server::launch("serve", &provider_args);
    let consumer_shard = Server::launch(
        "serve",
        &["--seed", &file(""), "--token-auth-file", &tokens],
    );
    let consumer_kubeconfig = consumer_shard.kubeconfig().to_string_lossy().into_owned();
    let list = |vw: &Server| {
        let url = format!(
            "{}/services/replication/9mainprovcloudco/cpuflavors/clusters/9mainteamaconsmr",
            vw.url
        );
        common::alice_lists_three(vw, &url)
    };

    // Without the consumer's shard, the consumer is unknown: refused.
    let blind = Server::launch(
        "virtual-workspace",
        &["--cache-kubeconfig", &ck, "--token-auth-file", &tokens],
    );
    let refused = eventually(
        "a refusal once the provider's slice is served",
        || match list(&blind) {
            Err(e) if e.contains("Forbidden") => Ok(e),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(refused.contains("forbidden"), "{refused}");

    // With it, alice reads the three flavors.
    let seeing = Server::launch(
        "virtual-workspace",
        &[
            "--cache-kubeconfig",
            &ck,
            "--token-auth-file",
            &tokens,
            "--shard-kubeconfig",
            &consumer_kubeconfig,
        ],
    );
    let names = eventually("alice lists through the VW", || list(&seeing));
    assert!(
        names.contains("cpuflavor.cloud.example.com/cpu-small"),
        "{names}"
    );
    // The same cache, RBAC and slice: only the consumer's shard made the difference.
    let still = list(&blind).expect_err("the blind virtual workspace still refuses");
    assert!(still.contains("Forbidden"), "{still}");
}
