//! Conditions of the slices the v0.32 and main generations key their virtual workspace URLs by
//! (`kcp-head.md` §3.3): kcp main's ClusterCachedResourceEndpointSlices, and v0.32
//! CachedResourceEndpointSlices, which carry `spec.export`.
//!
//! Per slice: `ResourceValid` (the referenced (Cluster)CachedResource exists, and for a v0.32
//! slice it follows v0.32, not v0.30), `APIExportValid` (the export exists and has a virtual
//! resource referencing this slice by kind and name), `PartitionValid` (as v0.30). Any False
//! clears the endpoints. Then the URL controller's part (§3.4): while every condition holds,
//! each shard hosting an APIBinding of the slice's export publishes
//! `<its VW URL>/services/replication/<slice cluster>/<slice name>`; one that hosts none is
//! removed.

use super::apis::{Hosts, set_urls};
use super::global::Global;
use super::*;
use std::collections::BTreeSet;

/// Reconcile every slice of the v0.32 and main generations.
pub async fn reconcile_all(c: &Controllers, pass: &mut Pass) -> Result<(), ControllerError> {
    let mut global = Global::new(c);
    let mut hosts = Hosts::load(c, &mut global).await?;
    for (slice_resource, resource_resource) in [
        (
            "clustercachedresourceendpointslices",
            "clustercachedresources",
        ),
        ("cachedresourceendpointslices", "cachedresources"),
    ] {
        let slice_kind = c.kind("cache.kcp.io", slice_resource)?;
        let resource_kind = c.kind("cache.kcp.io", resource_resource)?;
        for (slice, key, _) in c.ws.list_values(&slice_kind, None).await? {
            // A CachedResourceEndpointSlice without spec.export is v0.30's (apis.rs).
            if slice_resource == "cachedresourceendpointslices"
                && slice.pointer("/spec/export").is_none()
            {
                continue;
            }
            let kinds = (&slice_kind, &resource_kind);
            let publish = (&mut global, &mut hosts);
            if let Err(e) = reconcile(c, kinds, publish, &key.cluster, &slice, pass).await {
                tracing::warn!(cluster = %key.cluster, name = %key.name, error = %e, "Slice reconcile failed.");
            }
        }
    }
    Ok(())
}

/// The cluster a `{path, name}` reference of an object in `cluster` points into.
async fn referenced_cluster(c: &Controllers, cluster: &str, path: &str) -> Option<String> {
    if path.is_empty() {
        Some(cluster.to_string())
    } else {
        c.ws.resolve(path).await.ok()
    }
}

async fn reconcile(
    c: &Controllers,
    (slice_kind, resource_kind): (&Kind, &Kind),
    (global, hosts): (&mut Global<'_>, &mut Hosts),
    cluster: &str,
    slice: &Value,
    pass: &mut Pass,
) -> Result<(), ControllerError> {
    let name = str_at(slice, "/metadata/name");
    let reference = if slice_kind.resource == "clustercachedresourceendpointslices" {
        "clusterCachedResource"
    } else {
        "cachedResource"
    };
    let mut status = slice.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut conditions = conditions_of(slice);
    let mut valid = true;

    // 1. The (Cluster)CachedResource.
    let path = str_at(slice, &format!("/spec/{reference}/path"));
    let resource_name = str_at(slice, &format!("/spec/{reference}/name"));
    let shown = if path.is_empty() { cluster } else { path };
    let found = match referenced_cluster(c, cluster, path).await {
        Some(rc) => {
            c.ws.get_value(resource_kind, &rc, "", resource_name)
                .await?
        }
        None => None,
    };
    let kind = &resource_kind.kind;
    match found {
        None => {
            valid = false;
            set_condition(
                &mut conditions,
                "ResourceValid",
                false,
                &format!("{kind}NotFound"),
                &format!("Error getting {kind} {shown}|{resource_name}"),
            );
        }
        Some((r, _))
            if resource_kind.resource == "cachedresources"
                && kcp_model::types::annotation(&r, kcp_model::types::ANN_GENERATION)
                    != "v0.32" =>
        {
            valid = false;
            set_condition(
                &mut conditions,
                "ResourceValid",
                false,
                &format!("{kind}InvalidReference"),
                &format!(
                    "CachedResource {shown}|{resource_name} follows kcp v0.30 (objects wrapped in CachedObjects, URLs keyed by the CachedResource); a slice with spec.export needs one created with the annotation replication-vw.dev/generation: v0.32"
                ),
            );
        }
        Some(_) => set_condition(&mut conditions, "ResourceValid", true, "", ""),
    }

    // 2. The APIExport must reference this slice.
    let export_path = str_at(slice, "/spec/export/path");
    let export_name = str_at(slice, "/spec/export/name");
    let export_shown = if export_path.is_empty() {
        cluster
    } else {
        export_path
    };
    let export_kind = c.kind("apis.kcp.io", "apiexports")?;
    let export_cluster = referenced_cluster(c, cluster, export_path).await;
    let export = match &export_cluster {
        Some(ec) => c.ws.get_value(&export_kind, ec, "", export_name).await?,
        None => None,
    };
    let references_me = |e: &Value| {
        e.pointer("/spec/resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|r| {
                str_at(r, "/storage/virtual/reference/apiGroup") == "cache.kcp.io"
                    && str_at(r, "/storage/virtual/reference/kind") == slice_kind.kind
                    && str_at(r, "/storage/virtual/reference/name") == name
            })
    };
    match export {
        None => {
            valid = false;
            set_condition(
                &mut conditions,
                "APIExportValid",
                false,
                "APIExportInvalidReference",
                &format!("APIExport {export_shown}|{export_name} not found"),
            );
        }
        Some((e, _)) if !references_me(&e) => {
            valid = false;
            set_condition(
                &mut conditions,
                "APIExportValid",
                false,
                "APIExportInvalidReference",
                &format!(
                    "APIExport {export_shown}|{export_name} does not reference this {}",
                    slice_kind.kind
                ),
            );
        }
        Some(_) => set_condition(&mut conditions, "APIExportValid", true, "", ""),
    }

    // 3. Partitions are not supported here (as for v0.30 slices).
    valid &= super::apis::partition_valid(slice, &mut conditions);

    status["conditions"] = json!(conditions);
    let mut endpoints: Vec<String> = slice
        .pointer("/status/endpoints")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|e| str_at(e, "/url").to_string()).collect())
        .unwrap_or_default();
    match (valid, export_cluster) {
        (true, Some(ec)) => {
            let serving = BTreeSet::from([(ec, export_name.to_string())]);
            let urls = hosts.urls(c, global, &serving).await?;
            set_urls(&mut endpoints, &urls, cluster, name);
        }
        _ => endpoints.clear(),
    }
    if endpoints.is_empty() {
        if let Some(o) = status.as_object_mut() {
            o.remove("endpoints");
        }
    } else {
        status["endpoints"] = endpoints.iter().map(|u| json!({"url": u})).collect();
    }
    c.write_status(slice_kind, cluster, slice, status, pass)
        .await
}
