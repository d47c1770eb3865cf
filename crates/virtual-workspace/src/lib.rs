//! The Replication virtual workspace: a read-only Kubernetes API over the cache, one
//! CachedResource per URL (`kcp-reference.md` §5, §6) or, for kcp v0.32 and main, one slice per
//! URL (`kcp-head.md` §4).
//!
//! [`url`] digests the URL, [`index`] keeps the catalog and the served objects in memory
//! ([`memo`] remembers across restarts which objects it already validated),
//! [`slices`] resolves the slice-keyed URLs,
//! [`authz`] (with `kube_api::rbac`) decides who may read, and [`handlers`] serves discovery, get, list
//! and watch.

#![forbid(unsafe_code)]

pub mod authz;
pub mod body;
pub mod consumers;
pub mod handlers;
pub mod index;
pub mod memo;
pub mod openapi;
mod pieces;
pub mod resolved;
pub mod slices;
pub mod url;

pub use handlers::{router, serve_request};
pub use index::Index;
