//! replication-vw: kcp's CachedResource read path in Rust — the binary's library, which
//! re-exports the workspace's crates under their module names.
//!
//! The work lives in the workspace's crates, in the one-way order the compiler enforces:
//! `kube-api` (Kubernetes API machinery) → `kcp-model` → `store` → `schema` → `rest` (generic
//! REST over a store) and `cache-client` (the read and write seams to the cache server, in
//! process or over HTTPS) → `cache-server`, `virtual-workspace` and `shard` (workspaces API,
//! controllers, seed) → `server` (TLS, authentication, tower layers, metrics and the three
//! roles) → the binary (`src/main.rs`). They are re-exported here under their module names ([`api`],
//! [`model`], [`store`], [`schema`], [`rest`], [`cache_client`], [`cache_server`],
//! [`replication`], [`workspaces`], [`controllers`], [`seed`]).

#![forbid(unsafe_code)]

pub use cache_client;
pub use cache_server;
pub use kcp_model as model;
pub use kube_api as api;
pub use rest;
pub use schema;
pub use shard::controllers;
pub use virtual_workspace as replication;
pub mod seed;
pub use server;
pub use shard::workspaces;
pub use store;
