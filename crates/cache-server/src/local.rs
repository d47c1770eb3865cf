//! The in-process side of the write seam: a shard in the same process as the cache server
//! writes through the cache server's own object semantics ([`super::objects`]) straight into its
//! store, exactly as the HTTPS API would store the same request.

use super::objects::{self, Location, ObjectError};
use super::resources;
use async_trait::async_trait;
use cache_client::{CacheError, CacheWrite, Collection};
use serde_json::Value;
use std::sync::Arc;
use store::{GroupResource, Record, Scope, Store, StoreError};

/// The cache server's store, written in process.
#[derive(Clone)]
pub struct LocalWrite(pub Arc<dyn Store>);

/// Where a write goes: a resource of the table, or an identity-based one (`<plural>:<hash>`)
/// the cache can resolve from its publishers (NotFound until it can, as over HTTPS).
async fn location<'a>(store: &dyn Store, at: &Collection<'a>) -> Result<Location<'a>, CacheError> {
    let res = match resources::find(at.group, at.version, at.resource) {
        Some(res) => res,
        None if at.resource.contains(':') => {
            super::identity_resource(store, at.group, at.version, at.resource, at.cluster, false)
                .await
                .map_err(|status| match status.code {
                    404 => CacheError::NotFound,
                    _ => CacheError::Rejected(status.message),
                })?
        }
        None => {
            return Err(CacheError::Rejected(format!(
                "the cache server does not serve {}/{} {}",
                at.group, at.version, at.resource
            )));
        }
    };
    match (at.shard, at.cluster) {
        (Some(shard), Some(cluster)) => Ok(Location {
            res,
            version: at.version,
            shard,
            cluster,
            namespace: "",
        }),
        _ => Err(CacheError::Rejected(
            "writes need a concrete shard and cluster".into(),
        )),
    }
}

fn cache_error(e: ObjectError) -> CacheError {
    match e {
        ObjectError::NotFound => CacheError::NotFound,
        ObjectError::AlreadyExists => CacheError::AlreadyExists,
        ObjectError::Conflict => CacheError::Conflict,
        ObjectError::BadRequest(m) => CacheError::Rejected(m),
        ObjectError::Store(e) => CacheError::Unavailable(e.to_string()),
    }
}

#[async_trait]
impl CacheWrite for LocalWrite {
    async fn list(&self, at: Collection<'_>) -> Result<Vec<Record>, CacheError> {
        let scope = Scope {
            resource: Some(GroupResource::new(at.group, at.resource)),
            shard: at.shard.map(str::to_string),
            cluster: at.cluster.map(str::to_string),
            namespace: None,
        };
        self.0
            .list(&scope)
            .await
            .map(|l| l.records)
            .map_err(|e| CacheError::Unavailable(e.to_string()))
    }

    async fn create(&self, at: Collection<'_>, object: Value) -> Result<(), CacheError> {
        let loc = location(self.0.as_ref(), &at).await?;
        objects::create(self.0.as_ref(), &loc, object)
            .await
            .map(|_| ())
            .map_err(cache_error)
    }

    async fn update(
        &self,
        at: Collection<'_>,
        name: &str,
        object: Value,
    ) -> Result<(), CacheError> {
        let loc = location(self.0.as_ref(), &at).await?;
        objects::update(self.0.as_ref(), &loc, name, object)
            .await
            .map(|_| ())
            .map_err(cache_error)
    }

    async fn delete(&self, at: Collection<'_>, name: &str) -> Result<(), CacheError> {
        let loc = location(self.0.as_ref(), &at).await?;
        match self.0.delete(&loc.key(name), None).await {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound) => Err(CacheError::NotFound),
            Err(e) => Err(CacheError::Unavailable(e.to_string())),
        }
    }
}
