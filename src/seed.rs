//! The shard's seed loader ([`shard::seed`]), and [`load`]: a cache store filled without a
//! server, as the embedded shard would fill it (tests and benchmarks).

pub use shard::seed::*;

use std::sync::Arc;

/// Apply `manifests` with a transient local shard whose controllers replicate into `cache` (a
/// cache server's store, written in process) as shard `root`, publishing `vw_url`.
pub async fn load(
    cache: Arc<dyn store::Store>,
    manifests: Vec<Manifest>,
    vw_url: &str,
) -> Result<Summary, SeedError> {
    shard::seed::load(
        Arc::new(cache_server::local::LocalWrite(cache)),
        manifests,
        vw_url,
    )
    .await
}
