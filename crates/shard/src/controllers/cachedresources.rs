//! The CachedResource controller (`kcp-reference.md` §2.3–§2.7) and its replication of source
//! objects into CachedObjects (§1.7).
//!
//! Per pass and CachedResource: finalizer; on deletion `Deleting`, purge of its CachedObjects,
//! `Deleted`, finalizer removed; schema check (the GVR must be served in the workspace and be
//! cluster-scoped); identity (secret generated or referenced, hash, mismatch condition); the
//! default endpoint slice unless skipped; replication (selected source objects are wrapped and
//! written, changed ones updated, unselected or deleted ones removed — a source that is being
//! deleted keeps its copy until it is gone, as kcp HEAD does); counts; `Ready`.

use super::*;
use cache_client::{CacheError, Collection};
use std::collections::BTreeMap;

/// The CachedResource finalizer.
pub const FINALIZER: &str = "cachedresource.cache.kcp.dev";

/// Which kcp generation a publisher follows (`kcp-head.md`, first table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generation {
    /// CachedObject wrappers, a default slice.
    V030,
    /// A CachedResource annotated `replication-vw.dev/generation: v0.32`: objects stored as
    /// themselves under `<plural>:<identity>`, no default slice.
    V032,
    /// A ClusterCachedResource: as v0.32, with main's names.
    Main,
}

impl Generation {
    fn of(resource: &str, cr: &Value) -> Generation {
        if resource == "clustercachedresources" {
            Generation::Main
        } else if kcp_model::types::annotation(cr, kcp_model::types::ANN_GENERATION) == "v0.32" {
            Generation::V032
        } else {
            Generation::V030
        }
    }

    fn finalizer(self) -> &'static str {
        match self {
            Generation::V030 => FINALIZER,
            Generation::V032 => kcp_model::types::FINALIZER_CACHED_RESOURCE_V032,
            Generation::Main => "cache.kcp.io/clustercachedresource",
        }
    }
}

/// Reconcile every CachedResource and ClusterCachedResource of every workspace.
pub async fn reconcile_all(c: &Controllers, pass: &mut Pass) -> Result<(), ControllerError> {
    for resource in ["cachedresources", "clustercachedresources"] {
        let kind = c.kind("cache.kcp.io", resource)?;
        for (cr, key, _) in c.ws.list_values(&kind, None).await? {
            let generation = Generation::of(resource, &cr);
            if let Err(e) = reconcile(c, &kind, generation, &key.cluster, &cr, pass).await {
                tracing::warn!(cluster = %key.cluster, name = %key.name, kind = %kind.kind, error = %e, "Reconcile failed.");
            }
        }
    }
    Ok(())
}

struct Gvr {
    group: String,
    version: String,
    resource: String,
}

impl Gvr {
    fn of(cr: &Value) -> Gvr {
        Gvr {
            group: str_at(cr, "/spec/group").to_string(),
            version: str_at(cr, "/spec/version").to_string(),
            resource: str_at(cr, "/spec/resource").to_string(),
        }
    }

    /// The `cache.kcp.io/object-schema` label value.
    fn schema_label(&self) -> String {
        object_schema(&self.group, &self.version, &self.resource)
    }
}

fn strings(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn set_finalizers(
    c: &Controllers,
    kind: &Kind,
    cluster: &str,
    cr: &Value,
    finalizers: Vec<String>,
    pass: &mut Pass,
) -> Result<(), ControllerError> {
    let mut new = cr.clone();
    if let Some(md) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        md.insert("finalizers".into(), json!(finalizers));
    }
    let name = str_at(cr, "/metadata/name");
    match c.ws.update(kind, cluster, "", name, new, Part::Main).await {
        Ok(_) | Err(WsError::Conflict { .. }) | Err(WsError::NotFound { .. }) => {
            pass.wrote();
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn reconcile(
    c: &Controllers,
    kind: &Kind,
    generation: Generation,
    cluster: &str,
    cr: &Value,
    pass: &mut Pass,
) -> Result<(), ControllerError> {
    let finalizer = generation.finalizer();
    let identity = str_at(cr, "/status/identityHash").to_string();
    let name = str_at(cr, "/metadata/name").to_string();
    let deleting = cr.pointer("/metadata/deletionTimestamp").is_some();
    let finalizers = strings(cr, "/metadata/finalizers");
    let gvr = Gvr::of(cr);
    let mut status = cr.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut conditions = conditions_of(cr);
    let phase = str_at(cr, "/status/phase").to_string();

    // 1. Finalizer and deletion (§2.7).
    if !deleting && !finalizers.iter().any(|f| f == finalizer) {
        let mut f = finalizers;
        f.push(finalizer.to_string());
        return set_finalizers(c, kind, cluster, cr, f, pass).await;
    }
    if deleting {
        if phase != "Deleting" && phase != "Deleted" {
            set_condition(
                &mut conditions,
                "ResourceValid",
                false,
                "Deleting",
                "Published resource deleting",
            );
            status["conditions"] = json!(conditions);
            status["phase"] = json!("Deleting");
            return c.write_status(kind, cluster, cr, status, pass).await;
        }
        let ml = match_labels(cr);
        let cached = if generation == Generation::V030 {
            purge(c, cluster, &gvr, &ml, pass).await?;
            count_cached(c, cluster, &gvr, &ml).await?
        } else {
            // kcp-head §2.3: no label selector, every copy under the identity goes.
            purge_identity(c, cluster, &gvr, &identity, pass).await?
        };
        if let Some(counts) = status.get_mut("resourceCounts") {
            counts["cache"] = json!(cached);
        }
        if phase == "Deleted" && cached == 0 {
            let f: Vec<String> = finalizers.into_iter().filter(|f| f != finalizer).collect();
            return set_finalizers(c, kind, cluster, cr, f, pass).await;
        }
        if cached == 0 {
            status["phase"] = json!("Deleted");
        }
        status["conditions"] = json!(conditions);
        return c.write_status(kind, cluster, cr, status, pass).await;
    }

    // 2. The resource must be served here and cluster-scoped.
    let Ok(target) =
        c.ws.find(cluster, &gvr.group, &gvr.version, &gvr.resource)
            .await
    else {
        tracing::debug!(cluster, name, "CachedResource resource not served (yet).");
        return Ok(());
    };
    if target.namespaced {
        set_condition(
            &mut conditions,
            "ResourceValid",
            false,
            "ResourceNotClusterScoped",
            &format!(
                "Resource {} is not cluster-scoped",
                kube_api::status::qualified(&gvr.group, &gvr.resource)
            ),
        );
        status["conditions"] = json!(conditions);
        return c.write_status(kind, cluster, cr, status, pass).await;
    }

    // 2b. The resource's kind and scope, which the cache server needs (kcp-head §1.1, §2.2).
    if generation != Generation::V030 {
        let annotations = cr.pointer("/metadata/annotations");
        let has = |k: &str, v: &str| {
            annotations.and_then(|a| a.get(k)).and_then(Value::as_str) == Some(v)
        };
        if !has(kcp_model::types::ANN_RESOURCE_KIND, &target.kind)
            || !has(kcp_model::types::ANN_RESOURCE_SCOPE, "Cluster")
        {
            let mut new = cr.clone();
            if let Some(obj) = new.as_object_mut() {
                let a = kube_api::metadata_mut(obj)
                    .entry("annotations")
                    .or_insert_with(|| json!({}));
                a[kcp_model::types::ANN_RESOURCE_KIND] = json!(target.kind);
                a[kcp_model::types::ANN_RESOURCE_SCOPE] = json!("Cluster");
            }
            return match c.ws.update(kind, cluster, "", &name, new, Part::Main).await {
                Ok(_) | Err(WsError::Conflict { .. }) => {
                    pass.wrote();
                    Ok(())
                }
                Err(e) => Err(e.into()),
            };
        }
    }

    // 3. Identity (§2.4).
    let secret_name = str_at(cr, "/spec/identity/secretRef/name").to_string();
    if secret_name.is_empty() {
        return match ensure_identity_secret(c, cluster, &name).await {
            Ok(()) => {
                let mut new = cr.clone();
                new["spec"]["identity"] =
                    json!({"secretRef": {"namespace": "kcp-system", "name": name}});
                match c.ws.update(kind, cluster, "", &name, new, Part::Main).await {
                    Ok(_) | Err(WsError::Conflict { .. }) => {
                        pass.wrote();
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => {
                set_condition(
                    &mut conditions,
                    "IdentityValid",
                    false,
                    "IdentityGenerationFailed",
                    &format!("Error creating identity secret: {e}"),
                );
                status["conditions"] = json!(conditions);
                c.write_status(kind, cluster, cr, status, pass).await
            }
        };
    }
    if !verify_identity(c, cluster, cr, &mut status, &mut conditions).await? {
        status["conditions"] = json!(conditions);
        return c.write_status(kind, cluster, cr, status, pass).await;
    }

    // 4. The default endpoint slice (§2.6): only created, never updated.
    let skip = cr
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(ANN_SKIP_ENDPOINTSLICE));
    if !skip && generation == Generation::V030 {
        ensure_default_slice(c, cluster, cr, pass).await?;
    }

    // 6./7. Replication and counts.
    let writes_before = pass.writes;
    let ml = match_labels(cr);
    let (local, cached) = if generation == Generation::V030 {
        let local = replicate_objects(c, cluster, &gvr, &target, &ml, pass).await?;
        // A pass that made no write saw the cache already in line: the copies it found are the
        // count; after writes the next pass (triggered by them) counts again.
        let cached = if pass.writes == writes_before {
            local
        } else {
            count_cached(c, cluster, &gvr, &ml).await?
        };
        (local, cached)
    } else {
        let hash = str_at(&status, "/identityHash").to_string();
        let (local, copies) =
            replicate_as_themselves(c, cluster, &gvr, &target, &ml, &hash, pass).await?;
        // After writes, count what the cache holds now (cache writes start no pass).
        let cached = if pass.writes == writes_before {
            copies
        } else {
            identity_copies(c, cluster, &gvr, &hash)
                .await?
                .map_or(0, |copies| copies.len())
        };
        (local, cached)
    };
    status["resourceCounts"] = json!({"cache": cached, "local": local});
    set_condition(&mut conditions, "ResourceValid", true, "", "");
    set_condition(&mut conditions, "ReplicationStarted", true, "", "");
    status["conditions"] = json!(conditions);
    status["phase"] = json!("Ready");
    c.write_status(kind, cluster, cr, status, pass).await
}

/// Ensure namespace `kcp-system` and Secret `kcp-system/<name>` with a random key.
pub async fn ensure_identity_secret(
    c: &Controllers,
    cluster: &str,
    name: &str,
) -> Result<(), ControllerError> {
    let ns = c.kind("", "namespaces")?;
    match c
        .ws
        .create(
            &ns,
            cluster,
            "",
            json!({"metadata": {"name": "kcp-system"}}),
        )
        .await
    {
        Ok(_) | Err(WsError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let secret = c.kind("", "secrets")?;
    match c
        .ws
        .create(
            &secret,
            cluster,
            "kcp-system",
            json!({"metadata": {"name": name}, "stringData": {"key": random_identity_key()}}),
        )
        .await
    {
        Ok(_) | Err(WsError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Check an object's identity (§2.4, the same for APIExports): the hash of the referenced
/// Secret's key becomes `status.identityHash` when that is empty and must equal it otherwise.
/// Sets `IdentityValid`; returns whether it holds.
pub async fn verify_identity(
    c: &Controllers,
    cluster: &str,
    obj: &Value,
    status: &mut Value,
    conditions: &mut Vec<Value>,
) -> Result<bool, ControllerError> {
    let ns = str_at(obj, "/spec/identity/secretRef/namespace");
    let name = str_at(obj, "/spec/identity/secretRef/name");
    let failed = |conditions: &mut Vec<Value>, message: &str| {
        set_condition(
            conditions,
            "IdentityValid",
            false,
            "IdentityVerificationFailed",
            message,
        );
        Ok(false)
    };
    let hash = match identity_hash_of(c, cluster, ns, name).await? {
        Err(message) => return failed(conditions, &message),
        Ok(hash) => hash,
    };
    let current = str_at(obj, "/status/identityHash");
    if !current.is_empty() && current != hash {
        return failed(
            conditions,
            &format!(
                "hash mismatch: identity secret hash \"{hash}\" must match status.identityHash \"{current}\""
            ),
        );
    }
    status["identityHash"] = json!(hash);
    set_condition(conditions, "IdentityValid", true, "", "");
    Ok(true)
}

/// The identity hash of a Secret's `data.key`, or the condition message explaining why not.
pub async fn identity_hash_of(
    c: &Controllers,
    cluster: &str,
    namespace: &str,
    name: &str,
) -> Result<Result<String, String>, ControllerError> {
    let secret = c.kind("", "secrets")?;
    let Some((s, _)) = c.ws.get_value(&secret, cluster, namespace, name).await? else {
        return Ok(Err(format!("secrets \"{name}\" not found")));
    };
    Ok(match secret_key(&s) {
        Some(k) if !k.is_empty() => Ok(kcp_model::naming::identity_hash(&k)),
        _ => Err("secret is missing data.key".to_string()),
    })
}

async fn ensure_default_slice(
    c: &Controllers,
    cluster: &str,
    cr: &Value,
    pass: &mut Pass,
) -> Result<(), ControllerError> {
    let kind = c.kind("cache.kcp.io", "cachedresourceendpointslices")?;
    let name = str_at(cr, "/metadata/name");
    if c.ws.get_value(&kind, cluster, "", name).await?.is_some() {
        return Ok(());
    }
    let path = str_at(cr, "/metadata/annotations/kcp.io~1path");
    let mut reference = json!({"name": name});
    if !path.is_empty() {
        reference["path"] = json!(path);
    }
    let slice = json!({
        "apiVersion": "cache.kcp.io/v1alpha1",
        "kind": "CachedResourceEndpointSlice",
        "metadata": {
            "name": name,
            "ownerReferences": [{"apiVersion": "cache.kcp.io/v1alpha1", "kind": "CachedResource",
                "name": name, "uid": str_at(cr, "/metadata/uid")}],
        },
        "spec": {"cachedResource": reference},
    });
    match c.ws.create(&kind, cluster, "", slice).await {
        Ok(_) => {
            pass.wrote();
            Ok(())
        }
        Err(WsError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// This shard's CachedObjects in one logical cluster.
fn cached_objects<'a>(shard: &'a str, cluster: &'a str) -> Collection<'a> {
    Collection {
        group: "cache.kcp.io",
        version: "v1alpha1",
        resource: "cachedobjects",
        shard: Some(shard),
        cluster: Some(cluster),
    }
}

/// What the controller reads of a CachedObject: its wrapper labels and the inner object's
/// resourceVersion (decoded without building the whole tree).
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct CachedView {
    metadata: LabelsView,
    spec: CachedSpecView,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct LabelsView {
    labels: BTreeMap<String, String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct CachedSpecView {
    raw: InnerView,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct InnerView {
    metadata: InnerMetaView,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct InnerMetaView {
    resource_version: String,
}

/// A source object's labels.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct SourceView {
    metadata: LabelsView,
}

/// One CachedObject of a GVR: its record, wrapper labels and inner resourceVersion.
struct Cached {
    record: store::Record,
    labels: Arc<BTreeMap<String, String>>,
    inner_rv: Arc<str>,
}

/// The labels (and, for a CachedObject, inner resourceVersion) of a record: from the memo when
/// the record has not changed since a pass read it, decoded otherwise.
fn read_light(c: &Controllers, record: &store::Record, cached_object: bool) -> Option<Seen> {
    let pass = c.passes();
    let mut seen = c.seen.lock();
    if let Some(s) = seen.get_mut(&record.key)
        && s.revision == record.revision
    {
        s.pass = pass;
        return Some(s.clone());
    }
    let (labels, inner_rv) = if cached_object {
        let v = serde_json::from_slice::<CachedView>(&record.value).ok()?;
        (v.metadata.labels, v.spec.raw.metadata.resource_version)
    } else {
        let v = serde_json::from_slice::<SourceView>(&record.value).ok()?;
        (v.metadata.labels, String::new())
    };
    let s = Seen {
        revision: record.revision,
        pass,
        labels: Arc::new(labels),
        inner_rv: Arc::from(inner_rv),
    };
    seen.insert(record.key.clone(), s.clone());
    Some(s)
}

/// The CachedObjects of this GVR in the cache, by name.
async fn cached_of(
    c: &Controllers,
    cluster: &str,
    gvr: &Gvr,
) -> Result<BTreeMap<String, Cached>, ControllerError> {
    let label = gvr.schema_label();
    let records = c.cache.list(cached_objects(&c.shard, cluster)).await?;
    let mut out = BTreeMap::new();
    for record in records {
        let Some(v) = read_light(c, &record, true) else {
            continue;
        };
        if v.labels.get(LABEL_OBJECT_SCHEMA) == Some(&label) {
            out.insert(
                record.key.name.to_string(),
                Cached {
                    record,
                    labels: v.labels,
                    inner_rv: v.inner_rv,
                },
            );
        }
    }
    Ok(out)
}

async fn count_cached(
    c: &Controllers,
    cluster: &str,
    gvr: &Gvr,
    ml: &BTreeMap<String, String>,
) -> Result<usize, ControllerError> {
    Ok(cached_of(c, cluster, gvr)
        .await?
        .values()
        .filter(|o| selects(ml, &o.labels))
        .count())
}

async fn purge(
    c: &Controllers,
    cluster: &str,
    gvr: &Gvr,
    ml: &BTreeMap<String, String>,
    pass: &mut Pass,
) -> Result<(), ControllerError> {
    for o in cached_of(c, cluster, gvr).await?.values() {
        if selects(ml, &o.labels) {
            delete_copy(
                c,
                cached_objects(&c.shard, cluster),
                &o.record.key.name,
                pass,
            )
            .await?;
        }
    }
    Ok(())
}

/// Bring the CachedObjects of one CachedResource in line with its source objects; returns the
/// number of selected source objects.
async fn replicate_objects(
    c: &Controllers,
    cluster: &str,
    gvr: &Gvr,
    target: &Kind,
    ml: &BTreeMap<String, String>,
    pass: &mut Pass,
) -> Result<usize, ControllerError> {
    let at = cached_objects(&c.shard, cluster);
    let mut cached = cached_of(c, cluster, gvr).await?;
    let mut selected = 0;
    let listing =
        c.ws.store
            .list(&Workspaces::scope(target, Some(cluster), None))
            .await?;
    for record in listing.records {
        let Some(view) = read_light(c, &record, false) else {
            continue;
        };
        if !selects(ml, &view.labels) {
            continue;
        }
        selected += 1;
        let cname = cached_object_name(
            &gvr.group,
            &gvr.version,
            &gvr.resource,
            &record.key.namespace,
            &record.key.name,
        );
        // Up to date when the copy holds this revision of the source (§1.7 step 5).
        let existing = cached.remove(&cname);
        if existing
            .as_ref()
            .is_some_and(|e| *e.inner_rv == *record.revision.to_string())
        {
            continue;
        }
        let Some(source) = crate::workspaces::objects::present(
            &record.value,
            &record.key,
            record.revision,
            &target.api_version(),
        ) else {
            continue;
        };
        let mut wrapped = wrap(&source, &gvr.group, &gvr.version, &gvr.resource, &c.shard);
        match existing {
            Some(e) => {
                if let Ok(old) = serde_json::from_slice::<Value>(&e.record.value)
                    && let Some(ts) = old.pointer("/metadata/creationTimestamp")
                {
                    wrapped["metadata"]["creationTimestamp"] = ts.clone();
                }
                match c.cache.update(at, &cname, wrapped).await {
                    Ok(_) | Err(CacheError::Conflict) | Err(CacheError::NotFound) => pass.wrote(),
                    Err(e) => return Err(e.into()),
                }
            }
            None => match c.cache.create(at, wrapped).await {
                Ok(_) | Err(CacheError::AlreadyExists) => pass.wrote(),
                Err(e) => return Err(e.into()),
            },
        }
    }
    // Copies whose source is gone or no longer selected.
    for o in cached.into_values() {
        delete_copy(c, at, &o.record.key.name, pass).await?;
    }
    Ok(selected)
}

/// This shard's collection `<plural>:<identity>` (`resource`) of `gvr` in `cluster`.
fn identity_collection<'a>(
    c: &'a Controllers,
    cluster: &'a str,
    gvr: &'a Gvr,
    resource: &'a str,
) -> Collection<'a> {
    Collection {
        group: &gvr.group,
        version: &gvr.version,
        resource,
        shard: Some(&c.shard),
        cluster: Some(cluster),
    }
}

/// This shard's copies of a GVR stored as themselves under `<plural>:<identity>` in `cluster`
/// (kcp-head §2.1); `None` while the cache server cannot resolve the identity yet (the
/// publisher, with its identity and annotations, has not been replicated there).
async fn identity_copies(
    c: &Controllers,
    cluster: &str,
    gvr: &Gvr,
    identity: &str,
) -> Result<Option<BTreeMap<String, Value>>, ControllerError> {
    if identity.is_empty() {
        return Ok(None);
    }
    let resource = format!("{}:{identity}", gvr.resource);
    let at = identity_collection(c, cluster, gvr, &resource);
    match c.cache.list(at).await {
        Ok(records) => Ok(Some(
            records
                .into_iter()
                .filter_map(|r| {
                    let v = serde_json::from_slice::<Value>(&r.value).ok()?;
                    Some((r.key.name.to_string(), v))
                })
                .collect(),
        )),
        Err(CacheError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Delete every copy under the identity (kcp-head §2.3's purge); returns how many were there.
async fn purge_identity(
    c: &Controllers,
    cluster: &str,
    gvr: &Gvr,
    identity: &str,
    pass: &mut Pass,
) -> Result<usize, ControllerError> {
    let Some(copies) = identity_copies(c, cluster, gvr, identity).await? else {
        return Ok(0);
    };
    let resource = format!("{}:{identity}", gvr.resource);
    let at = identity_collection(c, cluster, gvr, &resource);
    for name in copies.keys() {
        delete_copy(c, at, name, pass).await?;
    }
    Ok(copies.len())
}

/// kcp-head §2.3's writer: each selected source object stored as itself under
/// `<plural>:<identity>` with `cache.kcp.io/original-resource-UID` and `-version`; a copy whose
/// original version is the source's is up to date; an update carries the copy's
/// resourceVersion and uid; a source that is gone (or deleting with no finalizers left) loses
/// its copy; an unselected source keeps it (as kcp does). Returns (selected sources, copies).
async fn replicate_as_themselves(
    c: &Controllers,
    cluster: &str,
    gvr: &Gvr,
    target: &Kind,
    ml: &BTreeMap<String, String>,
    identity: &str,
    pass: &mut Pass,
) -> Result<(usize, usize), ControllerError> {
    let listing =
        c.ws.store
            .list(&Workspaces::scope(target, Some(cluster), None))
            .await?;
    let Some(mut copies) = identity_copies(c, cluster, gvr, identity).await? else {
        // Not resolvable in the cache yet: count the sources, write on a later pass.
        let selected = listing
            .records
            .iter()
            .filter(|r| read_light(c, r, false).is_some_and(|v| selects(ml, &v.labels)))
            .count();
        return Ok((selected, 0));
    };
    let count = copies.len();
    let resource = format!("{}:{identity}", gvr.resource);
    let at = identity_collection(c, cluster, gvr, &resource);
    let mut selected = 0;
    for record in &listing.records {
        let copy = copies.remove(record.key.name.as_str());
        let Some(view) = read_light(c, record, false) else {
            continue;
        };
        if !selects(ml, &view.labels) {
            continue;
        }
        selected += 1;
        let Some(mut source) = crate::workspaces::objects::present(
            &record.value,
            &record.key,
            record.revision,
            &target.api_version(),
        ) else {
            continue;
        };
        let source_rv = record.revision.to_string();
        if source.pointer("/metadata/deletionTimestamp").is_some() {
            let finalizers = source
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
            if copy.is_some() && !finalizers {
                delete_copy(c, at, &record.key.name, pass).await?;
            }
            continue;
        }
        if copy.as_ref().is_some_and(|v| {
            str_at(
                v,
                &format!(
                    "/metadata/annotations/{}",
                    ANN_ORIGINAL_RV.replace('/', "~1")
                ),
            ) == source_rv
        }) {
            continue;
        }
        let uid = str_at(&source, "/metadata/uid").to_string();
        let Some(obj) = source.as_object_mut() else {
            continue;
        };
        let md = kube_api::metadata_mut(obj);
        md.remove("resourceVersion");
        md.remove("managedFields");
        let annotations = md.entry("annotations").or_insert_with(|| json!({}));
        annotations[ANN_ORIGINAL_UID] = json!(uid);
        annotations[ANN_ORIGINAL_RV] = json!(source_rv);
        match copy {
            Some(copy) => {
                md.insert(
                    "resourceVersion".into(),
                    json!(str_at(&copy, "/metadata/resourceVersion")),
                );
                md.insert("uid".into(), json!(str_at(&copy, "/metadata/uid")));
                match c.cache.update(at, &record.key.name, source).await {
                    Ok(_) | Err(CacheError::Conflict) | Err(CacheError::NotFound) => pass.wrote(),
                    Err(e) => return Err(e.into()),
                }
            }
            None => {
                md.remove("uid");
                md.remove("creationTimestamp");
                match c.cache.create(at, source).await {
                    Ok(_) | Err(CacheError::AlreadyExists) => pass.wrote(),
                    // The cache cannot resolve the identity yet: a later pass writes it.
                    Err(CacheError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    // Copies whose source is gone.
    for name in copies.keys() {
        delete_copy(c, at, name, pass).await?;
    }
    Ok((selected, count))
}

/// Delete one copy from the cache; one already gone is fine.
async fn delete_copy(
    c: &Controllers,
    at: Collection<'_>,
    name: &str,
    pass: &mut Pass,
) -> Result<(), ControllerError> {
    match c.cache.delete(at, name).await {
        Ok(_) => pass.wrote(),
        Err(CacheError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
