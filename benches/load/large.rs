//! `--scenario large-objects` (issue 17, "memory for large objects"): the embedded `serve --seed
//! examples/cloud-co` as a child process (default storage), given about 30 MB of CPU flavors of
//! 1–2.75 MiB each (a long `spec.description`; `--quick`: about 6 MB). Half are written through
//! the shard's workspaces API into `root:cloudco` (the shard replicates them as CachedObjects
//! into its embedded cache), half as CachedObjects through the cache API. Every object is then
//! updated once the same way (same size, new text), read back through the API it was written
//! through, and through the Replication VW (a GET of each, then a LIST), so the served copies
//! exist. The server's VmRSS is read (settled) before the first write and after the reads; the
//! row compares the growth with the bytes stored (each object once, as the server returned its
//! last write). No object can be larger: the server refuses request bodies over 3 MiB
//! (kube-apiserver's `--max-request-bytes` default), which the scenario checks last with one
//! 4 MiB write.

use super::*;

use super::idle::settled_rss;

/// Sizes of `spec.description`, taken in turn: 1–2.75 MiB (a 2.75 MiB description and its
/// object's envelope stay under the 3 MiB request limit).
const LARGE_SIZES: [usize; 6] = [1 << 20, 2 << 20, 11 << 18, 5 << 18, 10 << 18, 6 << 18];
/// Objects written through each API: 8 (about 30 MB in all), `--quick` 2 (about 6 MB).
const LARGE_PER_API: usize = 8;
const LARGE_PER_API_QUICK: usize = 2;
/// The shard path the cache-API objects are written under (not the embedded shard's own
/// `root`, whose replication owns the CachedObjects it writes).
const LARGE_SHARD: &str = "bench-large";
/// Label on every large flavor (the VW LIST selects them with it).
const LARGE_LABEL: &str = "bench.example.com/large";
/// Idle time before an RSS reading counts as settled (`--quick`: 0.5 s).
const LARGE_SETTLE: Duration = Duration::from_secs(3);
const LARGE_SETTLE_QUICK: Duration = Duration::from_millis(500);
/// How long the VW may take to serve an object's last version.
const LARGE_SERVED_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one request carrying or returning a large object.
const LARGE_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Issue 17: RSS growth ≤ 2× the stored bytes.
const LARGE_GOAL: f64 = 2.0;
/// `spec.cores` of an object's first version; the update writes `LARGE_CORES + 1`.
const LARGE_CORES: u64 = 8;
/// The body of the refused write at the end.
const OVERSIZE_BYTES: usize = 4 << 20;

/// `len` characters of text that differ per object and version.
fn text(name: &str, version: u64, len: usize) -> String {
    let mut s = format!("{name} version {version}: ");
    let mut k = name.len() + version as usize * 7;
    while s.len() < len {
        s.push_str(DESCRIPTION_WORDS[k % DESCRIPTION_WORDS.len()]);
        s.push(' ');
        k = k.wrapping_mul(31).wrapping_add(7);
    }
    s.truncate(len);
    s
}

/// A large CPU flavor as its provider writes it.
fn large_flavor(name: &str, size: usize) -> Value {
    json!({
        "apiVersion": "cloud.example.com/v1",
        "kind": "CPUFlavor",
        "metadata": {
            "name": name,
            "annotations": {"kcp.io/cluster": PROVIDER},
            "labels": {
                "cloud.example.com/visibility": "Public",
                "cloud.example.com/tier": "large",
                LARGE_LABEL: "true",
            },
        },
        "spec": {
            "cores": LARGE_CORES,
            "architecture": "amd64",
            "description": text(name, 1, size),
        },
    })
}

/// One large object: where it lives and what the server returned for its last write.
struct Large {
    /// The flavor's name (as the VW serves it).
    name: String,
    /// The object's URL on the API it is written through.
    url: String,
    size: usize,
    /// Length of the server's answer to the last write (the object as stored).
    stored: usize,
    /// The last write's answer (the cache API's PUT sends it back with one change).
    last: Value,
}

/// Send `request` and return the body of a 2xx answer (`want` names what was sent).
async fn expect_ok(request: reqwest::RequestBuilder, want: &str) -> anyhow::Result<Bytes> {
    let resp = request
        .timeout(LARGE_REQUEST_TIMEOUT)
        .send()
        .await
        .with_context(|| want.to_string())?;
    let status = resp.status();
    let body = resp.bytes().await.with_context(|| want.to_string())?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
        bail!("{want} answered {status}: {text}");
    }
    Ok(body)
}

/// GET `url` until the body's `spec.cores` (at `pointer`) is `cores`; returns the body length.
async fn until_cores(
    client: &reqwest::Client,
    url: &str,
    pointer: &str,
    cores: u64,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + LARGE_SERVED_TIMEOUT;
    loop {
        let last = match client.get(url).timeout(LARGE_REQUEST_TIMEOUT).send().await {
            Ok(resp) if resp.status().is_success() => {
                let body = resp.bytes().await?;
                let v: Value = serde_json::from_slice(&body)
                    .with_context(|| format!("GET {url} is not JSON"))?;
                if v.pointer(pointer).and_then(Value::as_u64) == Some(cores) {
                    return Ok(body.len());
                }
                format!(
                    "{pointer} is {}",
                    v.pointer(pointer).unwrap_or(&Value::Null)
                )
            }
            Ok(resp) => resp.status().to_string(),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!(
                "GET {url} did not have {pointer} = {cores} in {LARGE_SERVED_TIMEOUT:?} (last: {last})"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The scenario: see the module documentation.
pub(crate) async fn scenario_large_objects(ctx: &mut Ctx) -> anyhow::Result<()> {
    let (per_api, settle) = if ctx.args.quick {
        (LARGE_PER_API_QUICK, LARGE_SETTLE_QUICK)
    } else {
        (LARGE_PER_API, LARGE_SETTLE)
    };
    let started = Instant::now();
    progress("large-objects: starting the embedded `serve --seed examples/cloud-co`");
    let mut setup = Setup::spawn_embedded()?;
    setup.wait_ready().await?;
    setup.wait_for_flavors().await?;
    let server = setup.vw;
    let base = setup.roles[server].url.clone();
    let client = setup.roles[server].client(Some(LARGE_REQUEST_TIMEOUT))?;
    let rss_before = settled_rss(&setup.roles[server], settle).await;
    let cpu_before = setup.roles[server].cpu_seconds();

    // Creates: workspaces API, then cache API.
    let flavors_url = format!("{base}/clusters/root:cloudco/apis/cloud.example.com/v1/cpuflavors");
    let cached_url = format!(
        "{base}/services/cache/shards/{LARGE_SHARD}/clusters/{PROVIDER}/apis/cache.kcp.io/v1alpha1/cachedobjects"
    );
    progress(&format!(
        "large-objects: server RSS {}; creating {per_api} flavors through the workspaces API and {per_api} CachedObjects through the cache API",
        opt_mib(rss_before)
    ));
    let mut written = 0usize;
    let mut workspaces = Vec::with_capacity(per_api);
    for i in 0..per_api {
        let name = format!("large-ws-{i}");
        let size = LARGE_SIZES[i % LARGE_SIZES.len()];
        let body = serde_json::to_vec(&large_flavor(&name, size))?;
        written += body.len();
        let answer = expect_ok(
            client
                .post(&flavors_url)
                .header(CONTENT_TYPE, "application/json")
                .body(body),
            &format!("POST {name} ({size} B description) to {flavors_url}"),
        )
        .await?;
        workspaces.push(Large {
            url: format!("{flavors_url}/{name}"),
            name,
            size,
            stored: answer.len(),
            last: Value::Null,
        });
    }
    let mut cached = Vec::with_capacity(per_api);
    for i in 0..per_api {
        let name = format!("large-cache-{i}");
        // The cache API takes the sizes in turn from the other end, so both halves differ.
        let size = LARGE_SIZES[(LARGE_SIZES.len() - 1 - i % LARGE_SIZES.len()) % LARGE_SIZES.len()];
        let mut source = large_flavor(&name, size);
        source["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
        source["metadata"]["resourceVersion"] = json!("1");
        source["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        let wrapper = wrap(
            &source,
            "cloud.example.com",
            "v1",
            "cpuflavors",
            LARGE_SHARD,
        );
        let body = serde_json::to_vec(&wrapper)?;
        written += body.len();
        let answer = expect_ok(
            client
                .post(&cached_url)
                .header(CONTENT_TYPE, "application/json")
                .body(body),
            &format!("POST CachedObject of {name} ({size} B description) to {cached_url}"),
        )
        .await?;
        let last: Value = serde_json::from_slice(&answer)?;
        let cached_name = last
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("the created CachedObject of {name} has no name"))?;
        cached.push(Large {
            url: format!("{cached_url}/{cached_name}"),
            name,
            size,
            stored: answer.len(),
            last,
        });
    }
    let rss_created = setup.roles[server].rss();
    let stored_created: usize = workspaces.iter().chain(&cached).map(|o| o.stored).sum();

    // One update of each: new text of the same length, cores + 1.
    progress("large-objects: updating each object once");
    for o in &mut workspaces {
        let patch =
            json!({"spec": {"cores": LARGE_CORES + 1, "description": text(&o.name, 2, o.size)}});
        let body = serde_json::to_vec(&patch)?;
        written += body.len();
        let answer = expect_ok(
            client
                .patch(&o.url)
                .header(CONTENT_TYPE, "application/merge-patch+json")
                .body(body),
            &format!("PATCH {}", o.url),
        )
        .await?;
        o.stored = answer.len();
    }
    for o in &mut cached {
        let mut next = std::mem::take(&mut o.last);
        next["spec"]["raw"]["spec"]["cores"] = json!(LARGE_CORES + 1);
        next["spec"]["raw"]["spec"]["description"] = json!(text(&o.name, 2, o.size));
        let body = serde_json::to_vec(&next)?;
        written += body.len();
        let answer = expect_ok(
            client
                .put(&o.url)
                .header(CONTENT_TYPE, "application/json")
                .body(body),
            &format!("PUT {}", o.url),
        )
        .await?;
        o.stored = answer.len();
    }

    // Reads: each object through its own API, then through the VW (until it serves the update),
    // then one LIST of the VW.
    progress("large-objects: reading every object back (its API, the VW, a VW LIST)");
    let mut read = 0usize;
    for o in &workspaces {
        read += until_cores(&client, &o.url, "/spec/cores", LARGE_CORES + 1).await?;
    }
    for o in &cached {
        read += until_cores(&client, &o.url, "/spec/raw/spec/cores", LARGE_CORES + 1).await?;
    }
    let mut served = 0usize;
    for o in workspaces.iter().chain(&cached) {
        let url = format!("{}/{}", setup.collection_url(), o.name);
        served += until_cores(&client, &url, "/spec/cores", LARGE_CORES + 1).await?;
    }
    let list_url = format!(
        "{}?labelSelector={}%3Dtrue",
        setup.collection_url(),
        LARGE_LABEL.replace('/', "%2F")
    );
    let list = expect_ok(client.get(&list_url), &format!("LIST {list_url}")).await?;
    let items = serde_json::from_slice::<Value>(&list)?["items"]
        .as_array()
        .map_or(0, Vec::len);
    if items != 2 * per_api {
        bail!(
            "the VW lists {items} large flavors, expected {}",
            2 * per_api
        );
    }
    let list_bytes = list.len();
    drop(list);
    let cpu_after = setup.roles[server].cpu_seconds();
    let rss_read = setup.roles[server].rss();
    let rss_after = settled_rss(&setup.roles[server], settle).await;
    let peak = setup.roles[server].peak_rss();
    setup.roles[server].check_alive()?;

    // Last: the server refuses a larger write (why the objects stop at 2.75 MiB).
    let oversize = large_flavor("large-oversize", OVERSIZE_BYTES);
    let refused = match client
        .post(&flavors_url)
        .header(CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&oversize)?)
        .timeout(LARGE_REQUEST_TIMEOUT)
        .send()
        .await
    {
        Ok(resp) => resp.status().to_string(),
        Err(e) => format!("no answer ({e})"),
    };
    setup.roles[server].check_alive()?;

    // Row and notes.
    let stored: usize = workspaces.iter().chain(&cached).map(|o| o.stored).sum();
    let stored_ws: usize = workspaces.iter().map(|o| o.stored).sum();
    let growth = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let ratio = growth.map(|g| g as f64 / stored as f64);
    let created_growth = match (rss_before, rss_created) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let (smallest, largest) = workspaces
        .iter()
        .chain(&cached)
        .fold((usize::MAX, 0), |(lo, hi), o| {
            (lo.min(o.size), hi.max(o.size))
        });
    Row {
        scenario: "memory for large objects",
        what: format!(
            "`serve` process (mimalloc, allocations of 1 MiB or more mapped apart; default storage `local`): {} flavors with 1–2.75 MiB descriptions ({}–{} B), {per_api} through the workspaces API and {per_api} as CachedObjects through the cache API, each updated once, then read back (its API, VW GET, VW LIST)",
            2 * per_api,
            thousands(smallest as f64),
            thousands(largest as f64)
        ),
        result: format!(
            "stored {} ({} workspaces API, {} cache API; {} written with the updates); server VmRSS {} before, {} after (settled), growth {}; after the creates alone growth {} ({} the {} stored then)",
            mib1(stored as u64),
            mib1(stored_ws as u64),
            mib1((stored - stored_ws) as u64),
            mib1(written as u64),
            opt_mib(rss_before),
            opt_mib(rss_after),
            growth.map_or_else(|| "n/a".into(), mib1),
            created_growth.map_or_else(|| "n/a".into(), mib1),
            created_growth.map_or_else(
                || "n/a".into(),
                |g| format!("{:.2}×", g as f64 / stored_created.max(1) as f64)
            ),
            mib1(stored_created as u64),
        ),
        p50: String::new(),
        p99: String::new(),
        rss: opt_mib(peak),
        ratio: ratio.map_or_else(
            || "n/a".into(),
            |r| format!("RSS growth {r:.2}× stored bytes"),
        ),
        goal: format!(
            "growth ≤ 2× stored {}",
            verdict(ratio.is_some_and(|r| r <= LARGE_GOAL))
        ),
    }
    .print();
    ctx.notes.push(format!(
        "large-objects: server VmRSS after the creates {}, after the updates and reads {}, settled {} (VmHWM {}); read back {} through the APIs, {} through VW GETs, one VW LIST of {items} items {}; server CPU for the writes and reads {}. The stored bytes count each object once, as the server answered its last write; the server holds more copies by design: a workspaces-API flavor is in the shard's store, in the embedded cache's store as a CachedObject, and in the index (which serves the members after `metadata` as a slice of the cache store's value when the schema changed nothing); a cache-API CachedObject in the cache's store and the index. RSS also holds both stores' history rings (every create's and update's value: a watch may resume from any revision of the last 75 s, kube's watch-cache window, so until then each update leaves the previous version in memory too) and redb's page cache of the two `local` store files (at most {} MiB each, `store::local::CACHE_BYTES`); the kernel's page cache of those files is not in RSS. A {} MiB write at the end answered {refused} (request bodies are limited to 3 MiB, kube-apiserver's default), so no object can exceed that.",
        opt_mib(rss_created),
        opt_mib(rss_read),
        opt_mib(rss_after),
        opt_mib(peak),
        mib1(read as u64),
        mib1(served as u64),
        mib1(list_bytes as u64),
        match (cpu_before, cpu_after) {
            (Some(b), Some(a)) => format!("{:.2} s", a - b),
            _ => "n/a".into(),
        },
        store::local::CACHE_BYTES >> 20,
        OVERSIZE_BYTES >> 20
    ));
    progress(&format!(
        "large-objects: done in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    drop(setup);
    Ok(())
}
