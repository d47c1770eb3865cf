//! Where the virtual workspace looks consumers up: the LogicalClusters and APIBindings read from
//! kcp shards (`virtual-workspace --shard-kubeconfig`, `kcp-head.md` §4.3 step 5: kcp does not
//! replicate APIBindings to the cache, and LogicalClusters only when marked), then those in the
//! cache (which our own shards replicate).
//!
//! Each shard source is list-watched by [`Index::run_shard`] with the same reader as the cache
//! (`HttpsRead::shard`); its entries are tagged with the source, so a relist of one shard
//! replaces only what that shard said.

use super::index::{Index, ObjKey, State};
use cache_client::CacheRead;
use futures_util::StreamExt;
use kcp_model::types::{ApiBinding, LogicalCluster};
use std::sync::Arc;
use store::{Event, EventKind, Key, Listing, StoreError};

impl State {
    /// The LogicalCluster of a consumer: from a kcp shard first, then from the cache.
    pub fn logical_cluster(&self, cluster: &str) -> Option<&Arc<LogicalCluster>> {
        self.shard_logical_clusters
            .get(cluster)
            .map(|(_, lc)| lc)
            .or_else(|| self.logical_clusters.get(cluster))
    }

    /// An APIBinding of a consumer: from a kcp shard first, then from the cache.
    pub fn binding(&self, key: &ObjKey) -> Option<&Arc<ApiBinding>> {
        self.shard_bindings
            .get(key)
            .map(|(_, b)| b)
            .or_else(|| self.bindings.get(key))
    }

    /// Every APIBinding known, each key once (a shard's copy wins over the cache's).
    pub fn all_bindings(&self) -> impl Iterator<Item = (&ObjKey, &Arc<ApiBinding>)> {
        self.shard_bindings.iter().map(|(k, (_, b))| (k, b)).chain(
            self.bindings
                .iter()
                .filter(|(k, _)| !self.shard_bindings.contains_key(*k)),
        )
    }

    /// Apply one LogicalCluster or APIBinding a kcp shard reported; whether anything changed.
    fn apply_shard_record(
        &mut self,
        source: usize,
        kind: EventKind,
        key: &Key,
        value: &[u8],
    ) -> bool {
        let deleted = kind == EventKind::Deleted;
        match (key.group.as_str(), key.resource.as_str()) {
            ("core.kcp.io", "logicalclusters") if key.name == "cluster" => {
                if deleted {
                    self.shard_logical_clusters.remove(key.cluster.as_str());
                } else if let Ok(lc) = serde_json::from_slice::<LogicalCluster>(value) {
                    self.shard_logical_clusters
                        .insert(key.cluster.to_string(), (source, Arc::new(lc)));
                }
                true
            }
            ("apis.kcp.io", "apibindings") => {
                let k = (key.cluster.to_string(), key.name.to_string());
                if deleted {
                    self.shard_bindings.remove(&k);
                } else if let Ok(b) = serde_json::from_slice::<ApiBinding>(value) {
                    self.shard_bindings.insert(k, (source, Arc::new(b)));
                }
                true
            }
            _ => false,
        }
    }
}

impl Index {
    /// Replace what shard `source` said with a fresh listing of it.
    pub fn reset_shard(&self, source: usize, listing: &Listing) {
        let mut st = self.write();
        st.shard_logical_clusters.retain(|_, (s, _)| *s != source);
        st.shard_bindings.retain(|_, (s, _)| *s != source);
        for r in &listing.records {
            st.apply_shard_record(source, EventKind::Created, &r.key, &r.value);
        }
        let revision = st.revision;
        st.reconcile(revision, &self.counters, false);
    }

    /// Apply one event of shard `source`.
    pub fn apply_shard(&self, source: usize, event: &Event) {
        let mut st = self.write();
        if st.apply_shard_record(source, event.kind, &event.key, &event.value) {
            let revision = st.revision;
            st.reconcile(revision, &self.counters, false);
        }
    }

    /// Keep what kcp shard `source` says about consumers in sync forever: list, then watch;
    /// relist when the watch expires; retry failures with capped back-off.
    pub async fn run_shard(self: Arc<Self>, source: usize, shard: Arc<dyn CacheRead>) {
        let mut backoff = cache_client::Backoff::new(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(10),
        );
        let name = shard.health().source;
        self.shard_sources.lock().insert(source, shard.clone());
        loop {
            let listing = match shard.list().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(shard = %name, error = %e, "Listing consumers on a kcp shard failed; retrying.");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            self.reset_shard(source, &listing);
            tracing::info!(shard = %name, objects = listing.records.len(), "Consumers of a kcp shard synced.");
            let mut stream = match shard.watch(listing.revision).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(shard = %name, error = %e, "Watching a kcp shard failed; relisting.");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            backoff.reset();
            while let Some(next) = stream.next().await {
                match next {
                    Ok(event) => self.apply_shard(source, &event),
                    Err(StoreError::Expired { .. }) => break,
                    Err(e) => {
                        tracing::warn!(shard = %name, error = %e, "The kcp shard watch failed; relisting.");
                        break;
                    }
                }
            }
        }
    }
}
