//! The local kcp shard: the workspaces API ([`workspaces`]: built-ins, kcp types and custom
//! resources per logical cluster), the controllers a kcp shard runs ([`controllers`]), and the
//! seed loader that applies manifests like `kubectl apply` ([`seed`]). It reaches the cache
//! server only through `cache_client::CacheWrite`.

#![forbid(unsafe_code)]

pub mod controllers;
pub mod seed;
pub mod workspaces;
