//! What a shard reads of the other shards, through the cache (the write seam's lists): logical
//! cluster paths, APIExports and APIResourceSchemas of providers on other shards, the
//! APIBindings other shards host, and their Shard objects with their virtual-workspace URLs.
//! Local objects always win; this is asked only for what the shard does not have itself, and
//! each collection is read at most once per controller pass.

use super::*;
use cache_client::Collection;
use std::collections::BTreeMap;

/// The kcp Shard object's resource, in logical cluster `root` of the cache.
pub const SHARDS: Collection<'static> = Collection {
    group: "core.kcp.io",
    version: "v1alpha1",
    resource: "shards",
    shard: None,
    cluster: Some("root"),
};

/// Per-pass reads of the cache.
pub struct Global<'a> {
    c: &'a Controllers,
    paths: Option<BTreeMap<String, String>>,
    objects: BTreeMap<(&'static str, String), BTreeMap<String, Value>>,
    bindings: Option<Vec<(String, String, Value)>>,
    shard_urls: Option<BTreeMap<String, String>>,
}

impl<'a> Global<'a> {
    /// Nothing read yet.
    pub fn new(c: &'a Controllers) -> Self {
        Global {
            c,
            paths: None,
            objects: BTreeMap::new(),
            bindings: None,
            shard_urls: None,
        }
    }

    /// The logical cluster of a workspace path (`root:cloudco`), on any shard.
    pub async fn cluster_of_path(&mut self, path: &str) -> Result<Option<String>, ControllerError> {
        if self.paths.is_none() {
            let records = self
                .c
                .cache
                .list(Collection {
                    group: "core.kcp.io",
                    version: "v1alpha1",
                    resource: "logicalclusters",
                    shard: None,
                    cluster: None,
                })
                .await?;
            let mut paths = BTreeMap::new();
            for r in records {
                if let Ok(v) = serde_json::from_slice::<Value>(&r.value) {
                    let p = str_at(
                        &v,
                        &format!("/metadata/annotations/{}", ANN_PATH.replace('/', "~1")),
                    );
                    if !p.is_empty() {
                        paths.insert(p.to_string(), r.key.cluster.to_string());
                    }
                }
            }
            self.paths = Some(paths);
        }
        Ok(self.paths.as_ref().and_then(|p| p.get(path).cloned()))
    }

    /// A cluster-scoped kcp object of another shard (`apiexports` or `apiresourceschemas`).
    pub async fn object(
        &mut self,
        resource: &'static str,
        cluster: &str,
        name: &str,
    ) -> Result<Option<Value>, ControllerError> {
        let version = match resource {
            "apiexports" => "v1alpha2",
            _ => "v1alpha1",
        };
        let slot = (resource, cluster.to_string());
        if !self.objects.contains_key(&slot) {
            let records = self
                .c
                .cache
                .list(Collection {
                    group: "apis.kcp.io",
                    version,
                    resource,
                    shard: None,
                    cluster: Some(cluster),
                })
                .await?;
            let objects = records
                .into_iter()
                .filter_map(|r| {
                    serde_json::from_slice::<Value>(&r.value)
                        .ok()
                        .map(|v| (r.key.name.to_string(), v))
                })
                .collect();
            self.objects.insert(slot.clone(), objects);
        }
        Ok(self.objects.get(&slot).and_then(|m| m.get(name).cloned()))
    }

    /// The APIBindings other shards host: (shard, cluster, binding).
    pub async fn foreign_bindings(
        &mut self,
    ) -> Result<&[(String, String, Value)], ControllerError> {
        if self.bindings.is_none() {
            let records = self
                .c
                .cache
                .list(Collection {
                    group: "apis.kcp.io",
                    version: "v1alpha2",
                    resource: "apibindings",
                    shard: None,
                    cluster: None,
                })
                .await?;
            let own = self.c.shard.as_str();
            self.bindings = Some(
                records
                    .into_iter()
                    .filter(|r| r.key.shard != own)
                    .filter_map(|r| {
                        serde_json::from_slice::<Value>(&r.value)
                            .ok()
                            .map(|v| (r.key.shard.to_string(), r.key.cluster.to_string(), v))
                    })
                    .collect(),
            );
        }
        Ok(self.bindings.as_deref().unwrap_or_default())
    }

    /// Every shard's virtual workspace URL, by shard name (from the Shard objects).
    pub async fn shard_urls(&mut self) -> Result<&BTreeMap<String, String>, ControllerError> {
        if self.shard_urls.is_none() {
            let mut urls = BTreeMap::new();
            for r in self.c.cache.list(SHARDS).await? {
                if let Ok(v) = serde_json::from_slice::<Value>(&r.value) {
                    let url = str_at(&v, "/spec/virtualWorkspaceURL");
                    if !url.is_empty() {
                        urls.insert(r.key.name.to_string(), url.to_string());
                    }
                }
            }
            self.shard_urls = Some(urls);
        }
        Ok(self.shard_urls.get_or_insert_default())
    }
}

/// This shard's own Shard object in the cache (`root` cluster, named after the shard), which
/// tells the other shards where its virtual workspace is.
pub async fn publish_shard(c: &Controllers, pass: &mut Pass) -> Result<(), ControllerError> {
    let at = Collection {
        shard: Some(&c.shard),
        ..SHARDS
    };
    let desired = json!({
        "apiVersion": "core.kcp.io/v1alpha1",
        "kind": "Shard",
        "metadata": {"name": c.shard, "annotations": {ANN_SHARD: c.shard}},
        "spec": {"baseURL": c.vw_url, "externalURL": c.vw_url, "virtualWorkspaceURL": c.vw_url},
    });
    let existing = c
        .cache
        .list(at)
        .await?
        .into_iter()
        .find(|r| r.key.name == c.shard);
    match existing {
        None => match c.cache.create(at, desired).await {
            Ok(()) | Err(cache_client::CacheError::AlreadyExists) => pass.wrote(),
            Err(e) => return Err(e.into()),
        },
        Some(r) => {
            let stored: Value = serde_json::from_slice(&r.value).unwrap_or(Value::Null);
            if stored.get("spec") != desired.get("spec") {
                match c.cache.update(at, &c.shard, desired).await {
                    Ok(()) | Err(cache_client::CacheError::Conflict) => pass.wrote(),
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}
