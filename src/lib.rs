//! replication-vw: kcp's CachedResource read path in Rust.
//!
//! The **cache server** ([`cache_server`]) stores what kcp shards replicate, over a [`store`]
//! with one global revision; the **Replication virtual workspace** ([`replication`]) serves the
//! cached objects of each CachedResource read-only to bound consumer workspaces, validated
//! against their APIResourceSchema ([`schema`]). [`seed`] applies manifests as a local shard
//! would, and [`server`] wires TLS, authentication and the routes into one binary.
//! Layering is one-way: api/model → store → schema → cache_server/replication → seed → server.

#![forbid(unsafe_code)]

pub use cache_client;
pub use kube_api as api;
pub mod cache_server;
pub mod controllers;
pub use kcp_model as model;
pub mod replication;
pub use rest;
pub use schema;
pub mod seed;
pub mod server;
pub use store;
pub mod workspaces;
