//! Crash test of the local store: a child process (this test binary, re-run with
//! `STORE_CRASH_CHILD=<file>`) writes from concurrent tasks and prints every acknowledged write;
//! the parent `kill -9`s it at a random moment (20 cycles on one file), reopens the file and checks that every
//! acknowledged write is there with its value and revision, and that the revision never goes
//! backwards. The random seed is printed (set `STORE_CRASH_SEED` to replay one).

use bytes::Bytes;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::local::LocalStore;
use store::{Key, Store};

const CHILD_ENV: &str = "STORE_CRASH_CHILD";
const CYCLE_ENV: &str = "STORE_CRASH_CYCLE";
const CYCLES: u64 = 20;
const WRITERS: usize = 8;

fn key(name: &str) -> Key {
    Key {
        group: "cache.kcp.io".into(),
        resource: "cachedobjects".into(),
        shard: "root".into(),
        cluster: "c1".into(),
        namespace: Default::default(),
        name: name.into(),
    }
}

/// splitmix64: enough randomness for kill moments, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The child's side: does nothing unless started by [`acknowledged_writes_survive_kill_9`].
#[test]
fn crash_child_process() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let cycle = std::env::var(CYCLE_ENV).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = LocalStore::open(&path).expect("open");
        let out = Arc::new(Mutex::new(()));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            let out = out.clone();
            let cycle = cycle.clone();
            tasks.push(tokio::spawn(async move {
                let ack = |line: String| {
                    let _guard = out.lock();
                    let mut stdout = std::io::stdout().lock();
                    // Written directly (not print!), so libtest's capture cannot hold it back.
                    let _ = stdout.write_all(line.as_bytes());
                    let _ = stdout.flush();
                };
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let name = format!("c{cycle}-w{w}-{i}");
                    let v1 = format!("{name}/1");
                    let r = store
                        .create(key(&name), Bytes::from(v1.clone()))
                        .await
                        .expect("create");
                    ack(format!("ack {name} {} {v1}\n", r.revision));
                    let v2 = format!("{name}/2");
                    let r = store
                        .update(key(&name), Bytes::from(v2.clone()), Some(r.revision))
                        .await
                        .expect("update");
                    ack(format!("ack {name} {} {v2}\n", r.revision));
                    i += 1;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let seed = std::env::var("STORE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(42)
        });
    println!("crash test seed: {seed} (replay with STORE_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let exe = std::env::current_exe().expect("current exe");
    // name → (revision, value) of its last acknowledged write.
    let mut acked: HashMap<String, (u64, String)> = HashMap::new();
    let mut last_revision = 0;

    for cycle in 0..CYCLES {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_process", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_ENV, &path)
            .env(CYCLE_ENV, cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stdout);
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        // A line cut short by the kill is not a complete acknowledgement.
                        Ok(_) if line.ends_with('\n') => lines
                            .lock()
                            .expect("lines")
                            .push(line.trim_end().to_string()),
                        Ok(_) => {}
                    }
                }
            })
        };
        // Wait for the first acknowledgement, then kill at a random moment after it.
        let started = Instant::now();
        while lines
            .lock()
            .expect("lines")
            .iter()
            .all(|l| !l.starts_with("ack "))
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "cycle {cycle}: the child acknowledged nothing"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let delay = rng.next() % 400;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        child.kill().expect("kill -9"); // SIGKILL on Unix
        let _ = child.wait();
        reader.join().expect("reader");

        let mut this_cycle = 0;
        for l in lines.lock().expect("lines").iter() {
            let mut parts = l.splitn(4, ' ');
            if parts.next() != Some("ack") {
                continue;
            }
            let (Some(name), Some(rev), Some(value)) = (parts.next(), parts.next(), parts.next())
            else {
                panic!("bad line {l:?}");
            };
            let rev: u64 = rev.parse().expect("revision");
            let e = acked.entry(name.to_string()).or_insert((0, String::new()));
            if rev > e.0 {
                *e = (rev, value.to_string());
            }
            last_revision = last_revision.max(rev);
            this_cycle += 1;
        }

        let store = LocalStore::open(&path).expect("reopen after kill -9");
        let revision = store.revision().await.expect("revision");
        println!(
            "cycle {cycle}: killed after {delay} ms, {this_cycle} acknowledged writes, \
             revision {revision}, {:?}",
            store.stats()
        );
        assert!(
            revision >= last_revision,
            "cycle {cycle}: revision went backwards: {revision} < {last_revision} (seed {seed})"
        );
        assert!(
            !store.stats().full_repair,
            "cycle {cycle}: quick-repair should spare the full repair"
        );
        last_revision = revision;
        for (name, (rev, value)) in &acked {
            let got = store
                .get(&key(name))
                .await
                .expect("get")
                .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged {name} lost (seed {seed})"));
            let got_value = String::from_utf8_lossy(&got.value).to_string();
            if got.revision == *rev {
                assert_eq!(&got_value, value, "cycle {cycle}: {name} (seed {seed})");
            } else {
                // Only an update sent but not yet acknowledged when the kill came may be newer.
                assert!(
                    got.revision > *rev && value.ends_with("/1") && got_value.ends_with("/2"),
                    "cycle {cycle}: {name} at {} {got_value:?}, acknowledged {rev} {value:?} \
                     (seed {seed})",
                    got.revision
                );
            }
        }
        store.close().await;
    }
}
