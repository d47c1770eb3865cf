//! kcp's data model as the read path sees it: typed read views of the API objects, the
//! annotation and label keys, and the names and hashes kcp derives from content.

#![forbid(unsafe_code)]

pub mod endpoints;
pub mod naming;
pub mod types;

pub use types::*;
