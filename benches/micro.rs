//! Micro benchmarks of the virtual workspace's read path: URL digest, label-selector parse and
//! match, unwrapping and validating one CachedObject, building a 10,000-object LIST body (and a
//! naive `serde_json::Value` baseline), encoding a watch event and fanning one shared frame out
//! to 1,000 subscribers, the memoized per-event frame of a `ServedEvent`, and one per-consumer
//! copy of a served object (again against a naive re-encode), the shard's decoding of
//! Kubernetes protobuf request bodies (a ~2 KB ConfigMap and Secret, a 5-rule ClusterRole) into
//! JSON, and applying a JSON merge patch and a 10-operation JSON patch to one object. Fixtures
//! are realistic Cloud Co
//! CPU flavors (a ~3 KB CachedObject that serves as ~1.7 KB of JSON), validated against a
//! ~20-property structural schema. Run with `cargo bench --bench micro` (add a filter such as
//! `cargo bench --bench micro -- list_body` for one group); each group keeps 20–50 samples over
//! 3 s, so the measurements take about a minute and a half on two cores.

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use replication_vw::api::patch::{self, PatchType};
use replication_vw::api::protobuf;
use replication_vw::api::selector::LabelSelector;
use replication_vw::api::watch::EventType;
use replication_vw::controllers::wrap;
use replication_vw::model::types::Names;
use replication_vw::replication::body::ListBody;
use replication_vw::replication::index::{
    Index, MemoUse, ResolvedApi, ServedEvent, ServedObject, cluster_literal, unwrap_object,
    unwrap_object_memo,
};
use replication_vw::replication::memo::Memo;
use replication_vw::replication::url::digest;
use replication_vw::schema::structural::Structural as Validator;
use replication_vw::store::memory::{DEFAULT_HISTORY, MemoryStore};
use replication_vw::store::{Key, Scope, Store};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast};

/// Cloud Co's logical cluster (where the CachedResource and the flavors live).
const PROVIDER: &str = "1p5f2x8rkq0vd7wz";
/// The bound consumer workspace `root:team-a`.
const CONSUMER: &str = "3h9tqa6m2cxe1kbn";
/// Objects in the LIST benchmark.
const LIST_OBJECTS: usize = 10_000;
/// Watch subscribers in the fan-out benchmark.
const SUBSCRIBERS: usize = 1_000;

/// A benchmark group with the sampling settings that keep the whole run short.
fn group<'a>(c: &'a mut Criterion, name: &str, samples: usize) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(samples)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g
}

/// The six labels of a realistic flavor (matched by the CachedResource's selector).
fn flavor_labels(i: usize, visibility: &str) -> BTreeMap<String, String> {
    let tier = ["small", "medium", "large"][i % 3];
    [
        ("cloud.example.com/visibility", visibility.to_string()),
        ("cloud.example.com/tier", tier.to_string()),
        ("cloud.example.com/architecture", "arm64".to_string()),
        ("cloud.example.com/region", "eu-west-1".to_string()),
        ("cloud.example.com/generation", format!("g{}", 2 + i % 3)),
        (
            "app.kubernetes.io/managed-by",
            "flavor-controller".to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A CPU flavor as it lives in Cloud Co's workspace: labels, annotations, a nested spec and a
/// status; number `i` varies name, uid and a few values.
fn flavor_source(i: usize) -> Value {
    let tier = ["small", "medium", "large"][i % 3];
    let cores = [2, 4, 8][i % 3];
    json!({
        "apiVersion": "cloud.example.com/v1",
        "kind": "CPUFlavor",
        "metadata": {
            "name": format!("cpu-{tier}-{i:05}"),
            "uid": format!("c0452787-2977-4f70-99f4-{:012x}", 0x7d6b36d74f44u64 + i as u64),
            "resourceVersion": (48_213 + i).to_string(),
            "generation": 3,
            "creationTimestamp": "2026-11-22T03:01:42Z",
            "labels": flavor_labels(i, "Public"),
            "annotations": {
                "kcp.io/cluster": PROVIDER,
                "cloud.example.com/owner": "compute-platform-team",
                "cloud.example.com/runbook": "https://runbooks.cloud.example.com/flavors/cpu",
                "cloud.example.com/last-reviewed": "2026-10-30",
            },
        },
        "spec": {
            "cores": cores,
            "architecture": "arm64",
            "description": format!(
                "{cores} Neoverse V2 cores for general purpose workloads: web services, \
                 build agents and small databases. Burstable up to the turbo clock for short \
                 periods; sustained all-core load runs at the base clock."
            ),
            "threadsPerCore": 1,
            "baseClockMHz": 2600,
            "turboClockMHz": 3400,
            "family": "neoverse-v2",
            "sku": format!("CPU-{}-{cores}C-ARM", &tier[..1].to_uppercase()),
            "regions": ["eu-west-1", "eu-central-1", "us-east-1", "ap-southeast-2"],
            "features": ["sve2", "neon", "crypto", "bf16", "i8mm", "rng"],
            "pricing": {"currency": "EUR", "hourly": "0.1840", "monthly": "134.32"},
            "limits": {"maxInstancesPerProject": 50, "maxBurstMinutes": 30},
            "deprecated": false,
        },
        "status": {
            "available": true,
            "capacity": 1200 + i % 100,
            "observedGeneration": 3,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "lastTransitionTime": "2026-11-22T03:02:10Z",
                    "reason": "CapacityAvailable",
                    "message": "Capacity is available in every listed region.",
                },
                {
                    "type": "Deprecated",
                    "status": "False",
                    "lastTransitionTime": "2026-11-22T03:02:10Z",
                    "reason": "Current",
                    "message": "This flavor is part of the current generation.",
                },
            ],
        },
    })
}

/// The structural schema of `CPUFlavor` v1: nested spec and status, enums, required fields,
/// patterns, bounds and a date-time format.
fn flavor_schema() -> Value {
    let condition = json!({
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string", "maxLength": 316},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "reason": {"type": "string", "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"},
            "message": {"type": "string", "maxLength": 32768},
        },
    });
    json!({
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["cores", "architecture"],
                "properties": {
                    "cores": {"type": "integer", "minimum": 1, "maximum": 256},
                    "architecture": {"type": "string", "enum": ["amd64", "arm64"]},
                    "description": {"type": "string", "maxLength": 1024},
                    "threadsPerCore": {"type": "integer", "enum": [1, 2]},
                    "baseClockMHz": {"type": "integer", "minimum": 800},
                    "turboClockMHz": {"type": "integer", "minimum": 800},
                    "family": {"type": "string", "pattern": "^[a-z0-9-]+$"},
                    "sku": {"type": "string", "pattern": "^CPU-[SML]-[0-9]+C-(X86|ARM)$"},
                    "regions": {
                        "type": "array",
                        "items": {"type": "string", "pattern": "^[a-z]+-[a-z]+-[0-9]+$"},
                    },
                    "features": {"type": "array", "items": {"type": "string"}},
                    "pricing": {
                        "type": "object",
                        "required": ["currency"],
                        "properties": {
                            "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
                            "hourly": {"type": "string", "pattern": "^[0-9]+\\.[0-9]{4}$"},
                            "monthly": {"type": "string", "pattern": "^[0-9]+\\.[0-9]{2}$"},
                        },
                    },
                    "limits": {
                        "type": "object",
                        "properties": {
                            "maxInstancesPerProject": {"type": "integer", "minimum": 0},
                            "maxBurstMinutes": {"type": "integer", "minimum": 0},
                        },
                    },
                    "deprecated": {"type": "boolean"},
                },
            },
            "status": {
                "type": "object",
                "properties": {
                    "available": {"type": "boolean"},
                    "capacity": {"type": "integer", "minimum": 0},
                    "observedGeneration": {"type": "integer", "format": "int64"},
                    "conditions": {"type": "array", "items": condition},
                },
            },
        },
    })
}

/// The API `cpuflavors-v1` is served as, with the compiled flavor schema.
fn flavor_api() -> ResolvedApi {
    // A bench fixture: a schema that does not compile is a bug in this file.
    let schema = flavor_schema();
    let validator = Validator::compile(&schema).expect("fixture: the schema compiles");
    ResolvedApi {
        group: "cloud.example.com".into(),
        version: "v1".into(),
        resource: "cpuflavors".into(),
        names: Names {
            plural: "cpuflavors".into(),
            singular: "cpuflavor".into(),
            kind: "CPUFlavor".into(),
            list_kind: "CPUFlavorList".into(),
            short_names: vec!["cpuf".into()],
            categories: Vec::new(),
        },
        namespaced: false,
        has_status: true,
        printer_columns: Vec::new(),
        selectable_fields: Vec::new(),
        identity_hash: "fc9f48c915adefcd3fe029bb4fc92a435f373eb8ef32ae64ad1d37d4bca736c8".into(),
        export: (PROVIDER.into(), "cloud.example.com".into()),
        validator: Arc::new(validator),
        fingerprint: "bench".into(),
        schema: Arc::new(schema),
        source: replication_vw::replication::resolved::Source::CachedObjects,
        memo_contexts: Default::default(),
    }
}

/// Flavor `i` wrapped into CachedObject bytes as the root shard writes them.
fn cached_object(i: usize) -> Bytes {
    let wrapped = wrap(
        &flavor_source(i),
        "cloud.example.com",
        "v1",
        "cpuflavors",
        "root",
    );
    // A bench fixture: a json! value always serializes.
    Bytes::from(serde_json::to_vec(&wrapped).expect("fixture: the CachedObject serializes"))
}

/// Flavor `i` unwrapped and validated as the index serves it.
fn served_object(i: usize, api: &ResolvedApi) -> ServedObject {
    let bytes = cached_object(i);
    // A bench fixture: every flavor is valid against its schema.
    unwrap_object(&bytes, 50_000 + i as u64, api).expect("fixture: the flavor is served")
}

/// The head of a LIST body: the list object without items and without its closing brace.
fn list_head(api: &ResolvedApi, revision: u64) -> Bytes {
    let head = json!({
        "apiVersion": api.api_version(),
        "kind": api.list_kind(),
        "metadata": {"resourceVersion": revision.to_string()},
    });
    // A bench fixture: a json! value always serializes.
    let mut head = serde_json::to_vec(&head).expect("fixture: the head serializes");
    head.pop();
    Bytes::from(head)
}

/// What a server without pre-encoded bytes does for one copy: decode the stored JSON, stamp
/// the consumer's cluster, encode again.
fn naive_copy(stored: &[u8], cluster: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(stored).unwrap_or(Value::Null);
    v["metadata"]["annotations"]["kcp.io/cluster"] = Value::String(cluster.to_string());
    serde_json::to_vec(&v).unwrap_or_default()
}

/// What a server without pre-encoded bytes does for a LIST: decode every object into a tree,
/// stamp the consumer's cluster, and encode one `{"items":[...]}` document.
fn naive_list(api: &ResolvedApi, revision: u64, stored: &[Bytes], cluster: &str) -> Vec<u8> {
    let items: Vec<Value> = stored
        .iter()
        .map(|b| {
            let mut v: Value = serde_json::from_slice(b).unwrap_or(Value::Null);
            v["metadata"]["annotations"]["kcp.io/cluster"] = Value::String(cluster.to_string());
            v
        })
        .collect();
    let list = json!({
        "apiVersion": api.api_version(),
        "kind": api.list_kind(),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    });
    serde_json::to_vec(&list).unwrap_or_default()
}

/// Bench 1: Digesting a Replication VW URL into CachedResource, target and kube path.
fn bench_url_digest(c: &mut Criterion) {
    let cluster = format!(
        "/services/replication/{PROVIDER}/cpuflavors-v1/clusters/{CONSUMER}/apis/cloud.example.com/v1/cpuflavors/cpu-large-00042"
    );
    let wildcard = format!(
        "/services/replication/{PROVIDER}/cpuflavors-v1/clusters/*/apis/cloud.example.com/v1/cpuflavors"
    );
    assert!(digest(&cluster).is_some() && digest(&wildcard).is_some());
    let mut g = group(c, "url_digest", 50);
    g.bench_function("one_cluster_get", |b| {
        b.iter(|| digest(black_box(&cluster)))
    });
    g.bench_function("wildcard_list", |b| b.iter(|| digest(black_box(&wildcard))));
    g.finish();
}

/// Bench 2: Parsing a set-based label selector and matching it against a 6-label map.
fn bench_label_selector(c: &mut Criterion) {
    let text = "cloud.example.com/tier in (small,large),cloud.example.com/visibility=Public";
    // A bench fixture: the selector is well formed.
    let selector = LabelSelector::parse(text).expect("fixture: the selector parses");
    let hit = flavor_labels(2, "Public");
    let miss = flavor_labels(2, "Internal");
    assert!(selector.matches(&hit) && !selector.matches(&miss));
    let mut g = group(c, "label_selector", 50);
    g.bench_function("parse", |b| {
        b.iter(|| LabelSelector::parse(black_box(text)))
    });
    g.bench_function("matches_6_labels_hit", |b| {
        b.iter(|| selector.matches(black_box(&hit)))
    });
    g.bench_function("matches_6_labels_miss", |b| {
        b.iter(|| selector.matches(black_box(&miss)))
    });
    g.finish();
}

/// Bench 3: Unwrapping one CachedObject and validating it against the schema (once per object at
/// ingest), with its decode and validate parts alone for scale.
fn bench_unwrap_object(c: &mut Criterion) {
    let api = flavor_api();
    let bytes = cached_object(42);
    let served = served_object(42, &api);
    let inner: Value = serde_json::from_slice(&served.json_for(CONSUMER)).unwrap_or(Value::Null);
    assert!(api.validator.prepare(&mut inner.clone()).is_ok());
    eprintln!(
        "unwrap_object fixture: CachedObject {} bytes, served object {} bytes",
        bytes.len(),
        served.len_for(cluster_literal(CONSUMER).len())
    );
    let mut g = group(c, "unwrap_object", 50);
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("unwrap_and_validate", |b| {
        b.iter(|| unwrap_object(black_box(&bytes), 50_042, &api))
    });
    // After a restart: the validation memo vouches for the object (digest, then only its
    // head members and selectable fields parsed; no validation).
    let record = MemoUse {
        record: true,
        ..MemoUse::default()
    };
    let digest = unwrap_object_memo(&bytes, 50_042, &api, record)
        .ok()
        .and_then(|o| o.digest())
        .expect("fixture: the flavor is served with its stored tail");
    let memo = Memo::of([digest]);
    let known = MemoUse {
        known: Some(&memo),
        ..MemoUse::default()
    };
    g.bench_function("memo_known", |b| {
        b.iter(|| unwrap_object_memo(black_box(&bytes), 50_042, &api, known))
    });
    g.bench_function("decode_only", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(&bytes)))
    });
    // Prune, default and validate an already decoded object (the clone is part of the cost).
    g.bench_function("prepare_only", |b| {
        b.iter(|| api.validator.prepare(&mut black_box(&inner).clone()))
    });
    g.finish();
}

/// Bench 4: A LIST body of 10,000 objects for one consumer: copied from served bytes, against a
/// naive decode-stamp-encode of every object.
fn bench_list_body(c: &mut Criterion) {
    let api = flavor_api();
    let objects: Vec<Arc<ServedObject>> = (0..LIST_OBJECTS)
        .map(|i| Arc::new(served_object(i, &api)))
        .collect();
    let stored: Vec<Bytes> = objects.iter().map(|o| o.json_for(PROVIDER)).collect();
    let revision = 60_000;
    let head = list_head(&api, revision);
    let clusters = vec![cluster_literal(CONSUMER)];
    let body = ListBody::new(head.clone(), objects.clone(), clusters.clone()).collect();
    let naive = naive_list(&api, revision, &stored, CONSUMER);
    assert_eq!(
        body.len(),
        naive.len(),
        "both LIST bodies carry the same JSON"
    );
    eprintln!(
        "list_body fixture: {} objects, body {} bytes",
        LIST_OBJECTS,
        body.len()
    );
    let mut g = group(c, "list_body_10k", 20);
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("served_bytes", |b| {
        b.iter(|| ListBody::new(head.clone(), objects.clone(), clusters.clone()).collect())
    });
    // The chunks as the server sends them, without `collect`'s copy into one buffer.
    g.bench_function("served_chunks", |b| {
        b.iter(|| {
            let mut body = ListBody::new(head.clone(), objects.clone(), clusters.clone());
            let mut n = 0;
            while let Some(c) = body.next_chunk() {
                n += c.len();
            }
            n
        })
    });
    g.throughput(Throughput::Bytes(naive.len() as u64));
    g.bench_function("naive_serde_value", |b| {
        b.iter(|| naive_list(&api, revision, black_box(&stored), CONSUMER))
    });
    g.finish();
}

/// Send `item` on a broadcast channel (capacity 16) to `SUBSCRIBERS` receiver tasks on the
/// multi-thread runtime `rt`, `iters` times; the time is from each send until every receiver
/// has run `consume` on it.
fn fan_out<T, F>(rt: &tokio::runtime::Runtime, item: T, consume: F, iters: u64) -> Duration
where
    T: Clone + Send + 'static,
    F: Fn(&T) -> usize + Clone + Send + 'static,
{
    let (tx, _) = broadcast::channel::<T>(16);
    let remaining = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let tasks: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| {
            let mut rx = tx.subscribe();
            let remaining = remaining.clone();
            let done = done.clone();
            let consume = consume.clone();
            rt.spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(item) => {
                            black_box(consume(&item));
                            if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                                done.notify_one();
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            })
        })
        .collect();
    rt.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            remaining.store(SUBSCRIBERS, Ordering::Release);
            let start = Instant::now();
            let _ = tx.send(item.clone());
            done.notified().await;
            total += start.elapsed();
        }
        drop(tx);
        for t in tasks {
            let _ = t.await;
        }
        total
    })
}

/// The first served event of the flavor `name` that a real index emits after the Cloud Co
/// example plus that flavor is loaded into a memory store (frames are memoized per event).
fn served_event(rt: &tokio::runtime::Runtime, i: usize) -> Option<Arc<ServedEvent>> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cloud-co"));
    let manifests = replication_vw::seed::read_dirs(&[dir]).ok()?;
    let store = Arc::new(MemoryStore::new(DEFAULT_HISTORY));
    let bytes = cached_object(i);
    let wrapped: Value = serde_json::from_slice(&bytes).ok()?;
    let name = wrapped.pointer("/metadata/name")?.as_str()?.to_string();
    let listing = rt.block_on(async {
        replication_vw::seed::load(store.clone(), manifests, "https://127.0.0.1:6443")
            .await
            .ok()?;
        let key = Key {
            group: "cache.kcp.io".into(),
            resource: "cachedobjects".into(),
            shard: "root".into(),
            cluster: PROVIDER.into(),
            namespace: Default::default(),
            name: name.into(),
        };
        store.create(key, bytes).await.ok()?;
        store.list(&Scope::all()).await.ok()
    })?;
    let index = Index::new();
    index.reset(&listing);
    let st = index.read();
    let served = st.served.get(&(PROVIDER.into(), "cpuflavors-v1".into()))?;
    let flavor = flavor_source(i);
    let want = flavor.pointer("/metadata/name")?.as_str()?;
    served
        .events_after_seq(0)
        .ok()?
        .into_iter()
        .find(|e| *e.object.name == *want)
}

/// Bench 5: One watch frame: encoding it, the memoized frame of a `ServedEvent`, and fanning one
/// shared frame out to 1,000 watchers (against each watcher encoding its own).
fn bench_watch(c: &mut Criterion) {
    let api = flavor_api();
    let object = Arc::new(served_object(42, &api));
    let literal = cluster_literal(CONSUMER);
    let frame = object.frame(EventType::Modified, &literal);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("fixture: a tokio runtime starts");

    let mut g = group(c, "watch_event", 50);
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("frame_encode", |b| {
        b.iter(|| black_box(&object).frame(EventType::Modified, black_box(&literal)))
    });
    match served_event(&rt, 42) {
        Some(event) => {
            let first = event.frame(EventType::Added, &literal);
            eprintln!(
                "watch_event fixture: memoized ADDED frame {} bytes",
                first.len()
            );
            g.bench_function("served_event_frame_memoized", |b| {
                b.iter(|| event.frame(EventType::Added, black_box(&literal)))
            });
        }
        None => eprintln!("watch_event/served_event_frame_memoized skipped: no event"),
    }
    g.finish();

    let mut g = group(c, "watch_fanout_1000", 30);
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("shared_frame", |b| {
        b.iter_custom(|iters| fan_out(&rt, frame.clone(), |f: &Bytes| f.len(), iters))
    });
    let lit = literal.clone();
    g.bench_function("naive_encode_per_subscriber", |b| {
        b.iter_custom(|iters| {
            let lit = lit.clone();
            fan_out(
                &rt,
                object.clone(),
                move |o: &Arc<ServedObject>| o.frame(EventType::Modified, &lit).len(),
                iters,
            )
        })
    });
    g.finish();
}

/// Bench 6: One object copied for one consumer: from its split bytes, against a naive
/// decode-stamp-encode.
fn bench_per_consumer_copy(c: &mut Criterion) {
    let api = flavor_api();
    let object = served_object(42, &api);
    let stored = object.json_for(PROVIDER);
    let copy = object.json_for(CONSUMER);
    assert_eq!(copy.len(), naive_copy(&stored, CONSUMER).len());
    let mut g = group(c, "per_consumer_copy", 50);
    g.throughput(Throughput::Bytes(copy.len() as u64));
    g.bench_function("json_for", |b| {
        b.iter(|| object.json_for(black_box(CONSUMER)))
    });
    g.bench_function("naive_serde_value", |b| {
        b.iter(|| naive_copy(black_box(&stored), CONSUMER))
    });
    g.finish();
}

/// A protobuf message under construction, for the `protobuf_body` fixtures: length-delimited and
/// varint fields are all those bodies need.
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(mut self, mut v: u64) -> Self {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
    fn bytes(self, field: u64, b: &[u8]) -> Self {
        let mut s = self.varint(field << 3 | 2).varint(b.len() as u64);
        s.0.extend_from_slice(b);
        s
    }
    fn str(self, field: u64, v: &str) -> Self {
        self.bytes(field, v.as_bytes())
    }
    fn msg(self, field: u64, m: Pb) -> Self {
        self.bytes(field, &m.0)
    }
    fn int(self, field: u64, v: u64) -> Self {
        self.varint(field << 3).varint(v)
    }
    fn entry(self, field: u64, k: &str, v: &[u8]) -> Self {
        self.msg(field, Pb::default().str(1, k).bytes(2, v))
    }
}

/// `k8s\0` followed by the `runtime.Unknown` envelope around `raw`, as a client sends it.
fn protobuf_body(api_version: &str, kind: &str, raw: Pb) -> Vec<u8> {
    let unknown = Pb::default()
        .msg(1, Pb::default().str(1, api_version).str(2, kind))
        .msg(2, raw)
        .str(3, "")
        .str(4, "");
    let mut out = b"k8s\0".to_vec();
    out.extend_from_slice(&unknown.0);
    out
}

/// ObjectMeta with a name, a namespace, four labels and two annotations.
fn protobuf_meta(name: &str) -> Pb {
    Pb::default()
        .str(1, name)
        .str(3, "tools")
        .msg(8, Pb::default().int(1, 1_709_210_096))
        .entry(11, "app.kubernetes.io/name", b"billing")
        .entry(11, "app.kubernetes.io/part-of", b"cloud-co")
        .entry(11, "app.kubernetes.io/managed-by", b"kubectl")
        .entry(11, "tier", b"backend")
        .entry(12, "cloud.example.com/owner", b"team-a@example.com")
        .entry(
            12,
            "cloud.example.com/description",
            b"settings of the billing service",
        )
}

/// Bench 7: Decoding a Kubernetes protobuf request body into the equivalent JSON (what the shard
/// does for kubectl's typed `create` commands): a ConfigMap and a Secret of about 2 KB, and a
/// ClusterRole with five rules.
fn bench_protobuf_body(c: &mut Criterion) {
    let value = |i: usize| format!("{i:02}-").repeat(40);
    let config_map = protobuf_body(
        "v1",
        "ConfigMap",
        (0..12).fold(Pb::default().msg(1, protobuf_meta("billing")), |m, i| {
            m.entry(
                2,
                &format!("setting-{i:02}.properties"),
                value(i).as_bytes(),
            )
        }),
    );
    let secret = protobuf_body(
        "v1",
        "Secret",
        (0..12)
            .fold(
                Pb::default().msg(1, protobuf_meta("billing-keys")),
                |m, i| {
                    let key: Vec<u8> = (0..120).map(|b| (b * 7 + i * 13) as u8).collect();
                    m.entry(2, &format!("key-{i:02}.pem"), &key)
                },
            )
            .str(3, "Opaque"),
    );
    let rule = |verbs: &[&str], groups: &[&str], resources: &[&str]| {
        let r = verbs.iter().fold(Pb::default(), |r, v| r.str(1, v));
        let r = groups.iter().fold(r, |r, g| r.str(2, g));
        resources.iter().fold(r, |r, res| r.str(3, res))
    };
    let cluster_role = protobuf_body(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        Pb::default()
            .msg(1, protobuf_meta("billing-operator"))
            .msg(
                2,
                rule(
                    &["get", "list", "watch"],
                    &[""],
                    &["pods", "services", "endpoints"],
                ),
            )
            .msg(
                2,
                rule(
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete",
                    ],
                    &[""],
                    &["configmaps", "secrets"],
                ),
            )
            .msg(
                2,
                rule(
                    &["get", "list", "watch", "update"],
                    &["apps"],
                    &["deployments", "statefulsets", "replicasets"],
                ),
            )
            .msg(
                2,
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            )
            .msg(
                2,
                rule(
                    &["get", "list", "watch"],
                    &["cloud.example.com"],
                    &["cpuflavors", "cpuflavors/status"],
                ),
            ),
    );
    for (name, body) in [
        ("configmap", &config_map),
        ("secret", &secret),
        ("clusterrole", &cluster_role),
    ] {
        assert!(
            protobuf::decode(body).is_ok(),
            "fixture: the {name} body decodes"
        );
    }
    eprintln!(
        "protobuf_body fixtures: ConfigMap {} bytes, Secret {} bytes, ClusterRole {} bytes",
        config_map.len(),
        secret.len(),
        cluster_role.len()
    );
    let mut g = group(c, "protobuf_body", 50);
    for (name, body) in [
        ("configmap_2kb", &config_map),
        ("secret_2kb", &secret),
        ("clusterrole_5_rules", &cluster_role),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| b.iter(|| protobuf::decode(black_box(body))));
    }
    g.finish();
}

/// Bench 7: PATCH bodies applied to one ~2 KB flavor as a PATCH request applies them (parse the
/// body, copy the stored object, patch the copy): a JSON merge patch such as `kubectl patch
/// --type merge` sends (labels, an annotation removed, spec fields) and a 10-operation JSON patch
/// (tests, adds, replaces, a remove, a move and a copy).
fn bench_patch(c: &mut Criterion) {
    let target = flavor_source(42);
    let merge = json!({
        "metadata": {
            "labels": {"cloud.example.com/tier": "medium", "team": "compute"},
            "annotations": {"cloud.example.com/last-reviewed": null}
        },
        "spec": {"cores": 4, "limits": {"maxBurstMinutes": 45}, "features": ["sve2", "neon"]}
    })
    .to_string();
    let operations = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": "48255"},
        {"op": "test", "path": "/spec/cores", "value": 2},
        {"op": "replace", "path": "/spec/cores", "value": 4},
        {"op": "add", "path": "/metadata/labels/cloud.example.com~1tier", "value": "medium"},
        {"op": "add", "path": "/metadata/annotations/cloud.example.com~1last-reviewed", "value": "2026-11-23"},
        {"op": "remove", "path": "/spec/deprecated"},
        {"op": "add", "path": "/spec/regions/-", "value": "sa-east-1"},
        {"op": "move", "from": "/spec/limits/maxBurstMinutes", "path": "/spec/limits/burstMinutes"},
        {"op": "copy", "from": "/spec/pricing", "path": "/status/pricing"},
        {"op": "replace", "path": "/status/conditions/0/message", "value": "Capacity is low."}
    ])
    .to_string();
    // Bench fixtures: both patches apply.
    let merged = patch::apply(PatchType::Merge, &target, merge.as_bytes())
        .expect("fixture: the merge patch applies");
    let patched = patch::apply(PatchType::Json, &target, operations.as_bytes())
        .expect("fixture: the JSON patch applies");
    assert_eq!(merged["spec"]["cores"], 4);
    assert_eq!(patched["status"]["pricing"]["currency"], "EUR");
    eprintln!(
        "patch fixture: object {} bytes, merge patch {} bytes, JSON patch {} bytes",
        target.to_string().len(),
        merge.len(),
        operations.len()
    );
    let mut g = group(c, "patch", 50);
    g.bench_function("merge", |b| {
        b.iter(|| {
            patch::apply(
                PatchType::Merge,
                black_box(&target),
                black_box(merge.as_bytes()),
            )
        })
    });
    g.bench_function("json_10_operations", |b| {
        b.iter(|| {
            patch::apply(
                PatchType::Json,
                black_box(&target),
                black_box(operations.as_bytes()),
            )
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_url_digest,
    bench_label_selector,
    bench_unwrap_object,
    bench_list_body,
    bench_watch,
    bench_per_consumer_copy,
    bench_protobuf_body,
    bench_patch
);
criterion_main!(benches);
