//! APIExport identities, APIBinding status and the consumers' resource-bindings annotation,
//! CachedResourceEndpointSlice conditions and endpoint URLs, and owner-reference garbage
//! collection of endpoint slices (`kcp-reference.md` §3.2, §3.4, §4.1, §4.3, §4.4).

use super::global::Global;
use super::*;
use kcp_model::types::BindingLock;
use std::collections::{BTreeMap, BTreeSet};

/// APIExport identity (§4.1): the secret `kcp-system/<export>` unless one is referenced, its
/// hash in `status.identityHash`, `IdentityValid`.
pub async fn exports(c: &Controllers, pass: &mut Pass) -> Result<(), ControllerError> {
    let kind = c.kind("apis.kcp.io", "apiexports")?;
    for (exp, key, _) in c.ws.list_values(&kind, None).await? {
        if exp.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let cluster = key.cluster.as_str();
        let name = key.name.as_str();
        let secret = str_at(&exp, "/spec/identity/secretRef/name").to_string();
        if secret.is_empty() {
            super::cachedresources::ensure_identity_secret(c, cluster, name).await?;
            let mut new = exp.clone();
            new["spec"]["identity"] =
                json!({"secretRef": {"namespace": "kcp-system", "name": name}});
            match c.ws.update(&kind, cluster, "", name, new, Part::Main).await {
                Ok(_) | Err(WsError::Conflict { .. }) => pass.wrote(),
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        let mut status = exp.get("status").cloned().unwrap_or_else(|| json!({}));
        let mut conditions = conditions_of(&exp);
        super::cachedresources::verify_identity(c, cluster, &exp, &mut status, &mut conditions)
            .await?;
        status["conditions"] = json!(conditions);
        c.write_status(&kind, cluster, &exp, status, pass).await?;
    }
    Ok(())
}

/// An APIExport reference resolved to (export cluster, export name): a path is resolved on
/// this shard first, then through the cache (a provider on another shard).
async fn resolve_ref(
    c: &Controllers,
    global: &mut Global<'_>,
    own_cluster: &str,
    path: &str,
    name: &str,
) -> Result<Option<(String, String)>, ControllerError> {
    let cluster = if path.is_empty() {
        own_cluster.to_string()
    } else if let Ok(local) = c.ws.resolve(path).await {
        local
    } else {
        match global.cluster_of_path(path).await? {
            Some(remote) => remote,
            None => return Ok(None),
        }
    };
    Ok(Some((cluster, name.to_string())))
}

/// APIBinding status (§4.3) and the resource-bindings annotation of every LogicalCluster (§4.4).
pub async fn bindings(c: &Controllers, pass: &mut Pass) -> Result<(), ControllerError> {
    let export_kind = c.kind("apis.kcp.io", "apiexports")?;
    let schema_kind = c.kind("apis.kcp.io", "apiresourceschemas")?;
    let binding_kind = c.kind("apis.kcp.io", "apibindings")?;
    let lc_kind = c.kind("core.kcp.io", "logicalclusters")?;
    let exports: BTreeMap<(String, String), Value> =
        c.ws.list_values(&export_kind, None)
            .await?
            .into_iter()
            .map(|(v, k, _)| ((k.cluster.to_string(), k.name.to_string()), v))
            .collect();
    let schemas: BTreeMap<(String, String), Value> =
        c.ws.list_values(&schema_kind, None)
            .await?
            .into_iter()
            .map(|(v, k, _)| ((k.cluster.to_string(), k.name.to_string()), v))
            .collect();
    let mut global = Global::new(c);
    // cluster → group-resource → binding name
    let mut bound: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (b, key, _) in c.ws.list_values(&binding_kind, None).await? {
        let cluster = key.cluster.as_str();
        let name = key.name.as_str();
        let mut status = b.get("status").cloned().unwrap_or_else(|| json!({}));
        let mut conditions = conditions_of(&b);
        let path = str_at(&b, "/spec/reference/export/path");
        let ename = str_at(&b, "/spec/reference/export/name");
        // The export on this shard, else (a provider on another shard) from the cache.
        let export: Option<(String, std::borrow::Cow<'_, Value>)> =
            match resolve_ref(c, &mut global, cluster, path, ename).await? {
                Some(k) => match exports.get(&k) {
                    Some(e) => Some((k.0, std::borrow::Cow::Borrowed(e))),
                    None => global
                        .object("apiexports", &k.0, &k.1)
                        .await?
                        .map(|e| (k.0, std::borrow::Cow::Owned(e))),
                },
                None => None,
            };
        let hash = export
            .as_ref()
            .map(|(_, e)| str_at(e, "/status/identityHash").to_string())
            .unwrap_or_default();
        let hash = hash.as_str();
        match export {
            Some((ecluster, exp)) if !hash.is_empty() => {
                let mut resources = Vec::new();
                for r in exp
                    .pointer("/spec/resources")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let group = str_at(r, "/group");
                    let resource = str_at(r, "/name");
                    let schema_name = str_at(r, "/schema");
                    let remote_schema;
                    let schema = match schemas.get(&(ecluster.clone(), schema_name.to_string())) {
                        Some(s) => Some(s),
                        None => {
                            remote_schema = global
                                .object("apiresourceschemas", &ecluster, schema_name)
                                .await?;
                            remote_schema.as_ref()
                        }
                    };
                    let uid = schema.map(|s| str_at(s, "/metadata/uid")).unwrap_or("");
                    let storage_versions: Vec<Value> = if r.pointer("/storage/virtual").is_some() {
                        Vec::new()
                    } else {
                        schema
                            .and_then(|s| s.pointer("/spec/versions"))
                            .and_then(Value::as_array)
                            .map(|vs| {
                                vs.iter()
                                    .filter(|v| {
                                        v.get("storage").and_then(Value::as_bool) == Some(true)
                                    })
                                    .filter_map(|v| v.get("name").cloned())
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    resources.push(json!({
                        "group": group, "resource": resource,
                        "schema": {"name": schema_name, "UID": uid, "identityHash": hash},
                        "storageVersions": storage_versions,
                    }));
                    let gr = kube_api::status::qualified(group, resource);
                    bound
                        .entry(cluster.to_string())
                        .or_default()
                        .entry(gr)
                        .or_insert_with(|| name.to_string());
                }
                status["apiExportClusterName"] = json!(ecluster);
                status["boundResources"] = json!(resources);
                status["phase"] = json!("Bound");
                for t in [
                    "APIExportValid",
                    "BindingUpToDate",
                    "InitialBindingCompleted",
                    "PermissionClaimsApplied",
                    "PermissionClaimsValid",
                    "Ready",
                ] {
                    set_condition(&mut conditions, t, true, "", "");
                }
            }
            _ => {
                let message = format!(
                    "APIExport {}:{ename} not found",
                    if path.is_empty() { cluster } else { path }
                );
                set_condition(
                    &mut conditions,
                    "APIExportValid",
                    false,
                    "APIExportNotFound",
                    &message,
                );
                set_condition(
                    &mut conditions,
                    "Ready",
                    false,
                    "APIExportNotFound",
                    &message,
                );
                if str_at(&b, "/status/phase") != "Bound" {
                    status["phase"] = json!("Binding");
                }
            }
        }
        status["conditions"] = json!(conditions);
        c.write_status(&binding_kind, cluster, &b, status, pass)
            .await?;
    }
    // The resource-bindings annotation: entries owned by bindings follow them; CRD locks stay.
    for (lc, key, _) in c.ws.list_values(&lc_kind, None).await? {
        let cluster = key.cluster.as_str();
        let current = kcp_model::types::LogicalCluster::bindings_of(&lc);
        let mut desired: BTreeMap<String, BindingLock> = current
            .iter()
            .filter(|(_, l)| l.n.is_empty())
            .map(|(k, l)| (k.clone(), l.clone()))
            .collect();
        for (gr, b) in bound.get(cluster).into_iter().flatten() {
            desired.entry(gr.clone()).or_insert_with(|| BindingLock {
                n: b.clone(),
                ..BindingLock::default()
            });
        }
        if desired == current {
            continue;
        }
        let mut new = lc.clone();
        let encoded = serde_json::to_string(&desired).unwrap_or_else(|_| "{}".into());
        if let Some(md) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            let ann = md.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = ann.as_object_mut() {
                if desired.is_empty() {
                    a.remove(ANN_RESOURCE_BINDINGS);
                } else {
                    a.insert(ANN_RESOURCE_BINDINGS.into(), json!(encoded));
                }
            }
        }
        match c
            .ws
            .update(&lc_kind, cluster, "", "cluster", new, Part::Main)
            .await
        {
            Ok(_) | Err(WsError::Conflict { .. }) => pass.wrote(),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// CachedResourceEndpointSlice conditions (§3.2) and this server's endpoint URL (§3.4).
pub async fn endpoint_slices(c: &Controllers, pass: &mut Pass) -> Result<(), ControllerError> {
    let slice_kind = c.kind("cache.kcp.io", "cachedresourceendpointslices")?;
    let cr_kind = c.kind("cache.kcp.io", "cachedresources")?;
    let export_kind = c.kind("apis.kcp.io", "apiexports")?;
    let crs: BTreeMap<(String, String), Value> =
        c.ws.list_values(&cr_kind, None)
            .await?
            .into_iter()
            .map(|(v, k, _)| ((k.cluster.to_string(), k.name.to_string()), v))
            .collect();
    let exports: Vec<(String, Value)> =
        c.ws.list_values(&export_kind, None)
            .await?
            .into_iter()
            .map(|(v, k, _)| (k.cluster.to_string(), v))
            .collect();
    let mut global = Global::new(c);
    let mut hosts = Hosts::load(c, &mut global).await?;
    for (slice, key, _) in c.ws.list_values(&slice_kind, None).await? {
        // A slice with spec.export is keyed by itself (v0.32): slices.rs.
        if slice.pointer("/spec/export").is_some() {
            continue;
        }
        let cluster = key.cluster.as_str();
        let mut status = slice.get("status").cloned().unwrap_or_else(|| json!({}));
        let mut conditions = conditions_of(&slice);
        let path = str_at(&slice, "/spec/cachedResource/path");
        let cr_name = str_at(&slice, "/spec/cachedResource/name");
        let cr_cluster = if path.is_empty() {
            Some(cluster.to_string())
        } else {
            c.ws.resolve(path).await.ok()
        };
        let cr = cr_cluster.as_ref().and_then(|cc| {
            crs.get(&(cc.clone(), cr_name.to_string()))
                .map(|v| (cc.clone(), v))
        });
        let mut endpoints: Vec<String> = slice
            .pointer("/status/endpoints")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|e| str_at(e, "/url").to_string()).collect())
            .unwrap_or_default();
        match &cr {
            None => {
                set_condition(
                    &mut conditions,
                    "ResourceValid",
                    false,
                    "CachedResourceNotFound",
                    &format!(
                        "Error getting CachedResource {}|{cr_name}",
                        if path.is_empty() { cluster } else { path }
                    ),
                );
                endpoints.clear();
            }
            Some(_) => set_condition(&mut conditions, "ResourceValid", true, "", ""),
        }
        if !partition_valid(&slice, &mut conditions) {
            endpoints.clear();
        }
        let all_true = conditions.iter().all(|c| str_at(c, "/status") == "True");
        if let (true, Some((cc, cr))) = (all_true, &cr) {
            let hash = str_at(cr, "/status/identityHash");
            let group = str_at(cr, "/spec/group");
            let resource = str_at(cr, "/spec/resource");
            let serving: Vec<&(String, Value)> = exports
                .iter()
                .filter(|(_, e)| {
                    !hash.is_empty()
                        && e.pointer("/spec/resources")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .any(|r| {
                                str_at(r, "/storage/virtual/identityHash") == hash
                                    && str_at(r, "/group") == group
                                    && str_at(r, "/name") == resource
                            })
                })
                .collect();
            let serving: BTreeSet<(String, String)> = serving
                .iter()
                .map(|(ec, e)| (ec.clone(), str_at(e, "/metadata/name").to_string()))
                .collect();
            let urls = hosts.urls(c, &mut global, &serving).await?;
            set_urls(&mut endpoints, &urls, cc, cr_name);
        }
        status["conditions"] = json!(conditions);
        if endpoints.is_empty() {
            if let Some(o) = status.as_object_mut() {
                o.remove("endpoints");
            }
        } else {
            status["endpoints"] = endpoints.iter().map(|u| json!({"url": u})).collect();
        }
        c.write_status(&slice_kind, cluster, &slice, status, pass)
            .await?;
    }
    Ok(())
}

/// Which shards host APIBindings of which exports: this shard's bindings, and (read from the
/// cache once, when first needed) every other shard's.
pub(super) struct Hosts {
    local: BTreeSet<(String, String)>,
    foreign: Option<BTreeMap<String, BTreeSet<(String, String)>>>,
}

impl Hosts {
    /// The exports this shard's bindings reference.
    pub(super) async fn load(
        c: &Controllers,
        global: &mut Global<'_>,
    ) -> Result<Self, ControllerError> {
        let binding_kind = c.kind("apis.kcp.io", "apibindings")?;
        let mut local = BTreeSet::new();
        for (b, key, _) in c.ws.list_values(&binding_kind, None).await? {
            if let Some(k) = resolve_ref(
                c,
                global,
                &key.cluster,
                str_at(&b, "/spec/reference/export/path"),
                str_at(&b, "/spec/reference/export/name"),
            )
            .await?
            {
                local.insert(k);
            }
        }
        Ok(Hosts {
            local,
            foreign: None,
        })
    }

    /// Each shard's virtual workspace URL and whether that shard hosts a binding of one of
    /// `serving` (`kcp-reference.md` §3.4: a shard publishes its URL while it does).
    pub(super) async fn urls(
        &mut self,
        c: &Controllers,
        global: &mut Global<'_>,
        serving: &BTreeSet<(String, String)>,
    ) -> Result<Vec<(String, bool)>, ControllerError> {
        let binds =
            |bound: &BTreeSet<(String, String)>| bound.intersection(serving).next().is_some();
        let mut urls = vec![(c.vw_url.clone(), binds(&self.local))];
        if serving.is_empty() {
            return Ok(urls);
        }
        if self.foreign.is_none() {
            let mut by_shard: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
            let bindings = global.foreign_bindings().await?.to_vec();
            for (shard, bcluster, b) in bindings {
                if let Some(k) = resolve_ref(
                    c,
                    global,
                    &bcluster,
                    str_at(&b, "/spec/reference/export/path"),
                    str_at(&b, "/spec/reference/export/name"),
                )
                .await?
                {
                    by_shard.entry(shard).or_default().insert(k);
                }
            }
            self.foreign = Some(by_shard);
        }
        let shard_urls = global.shard_urls().await?.clone();
        for (shard, url) in shard_urls {
            if shard == c.shard || url == c.vw_url {
                continue;
            }
            let hosts = self
                .foreign
                .as_ref()
                .and_then(|f| f.get(&shard))
                .is_some_and(binds);
            urls.push((url, hosts));
        }
        Ok(urls)
    }
}

/// Add `<base>/services/replication/<cluster>/<name>` for each base that hosts, remove it for
/// each that does not.
pub(super) fn set_urls(
    endpoints: &mut Vec<String>,
    urls: &[(String, bool)],
    cluster: &str,
    name: &str,
) {
    for (base, hosts) in urls {
        let url = endpoint_url(base, cluster, name);
        if *hosts {
            if !endpoints.contains(&url) {
                endpoints.push(url);
            }
        } else {
            endpoints.retain(|u| *u != url);
        }
    }
}

/// A slice's `PartitionValid`: partitions are not supported, so only a slice without
/// `spec.partition` is valid. Returns whether it is.
pub(super) fn partition_valid(slice: &Value, conditions: &mut Vec<Value>) -> bool {
    let partition = str_at(slice, "/spec/partition");
    if partition.is_empty() {
        set_condition(conditions, "PartitionValid", true, "", "");
        return true;
    }
    set_condition(
        conditions,
        "PartitionValid",
        false,
        "PartitionInvalidReference",
        &format!("partitions.topology.kcp.io \"{partition}\" not found"),
    );
    false
}

/// Endpoint slices whose owning CachedResource is gone are deleted (owner-reference GC).
pub async fn collect_garbage(c: &Controllers, pass: &mut Pass) -> Result<(), ControllerError> {
    let slice_kind = c.kind("cache.kcp.io", "cachedresourceendpointslices")?;
    let cr_kind = c.kind("cache.kcp.io", "cachedresources")?;
    let uids: BTreeSet<(String, String)> =
        c.ws.list_values(&cr_kind, None)
            .await?
            .into_iter()
            .map(|(v, k, _)| {
                (
                    k.cluster.to_string(),
                    str_at(&v, "/metadata/uid").to_string(),
                )
            })
            .collect();
    for (slice, key, _) in c.ws.list_values(&slice_kind, None).await? {
        let owners: Vec<&str> = slice
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|o| str_at(o, "/kind") == "CachedResource")
                    .map(|o| str_at(o, "/uid"))
                    .collect()
            })
            .unwrap_or_default();
        if !owners.is_empty()
            && owners
                .iter()
                .all(|u| !uids.contains(&(key.cluster.to_string(), u.to_string())))
        {
            match c
                .ws
                .delete(&slice_kind, &key.cluster, "", &key.name, (None, None))
                .await
            {
                Ok(_) => pass.wrote(),
                Err(WsError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
