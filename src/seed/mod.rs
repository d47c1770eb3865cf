//! The seed loader: applies a directory of manifests as the local kcp shard (`root`) would,
//! writing the results into the cache through the cache server's object semantics.
//!
//! kcp API objects are written as they are, completed with what the shard's controllers would
//! fill in ([`controllers`]): identity hashes, CachedResource status and default endpoint slices,
//! APIBinding status, the consumers' resource-bindings annotations. Every other document is a
//! source object, wrapped into a CachedObject for each CachedResource that selects it.

pub mod controllers;

use crate::cache_server::objects::{self, Location, ObjectError};
use crate::cache_server::resources;
use crate::model::ANN_CLUSTER;
use crate::store::Store;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The shard name the embedded server acts as.
pub const LOCAL_SHARD: &str = "root";

/// Errors of seed loading.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// A file or directory could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid YAML.
    #[error("parsing {path}: {message}")]
    Parse {
        /// Path.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A document lacks what the loader needs.
    #[error("{path} document {index}: {message}")]
    Document {
        /// Path.
        path: PathBuf,
        /// Document index (0-based).
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// Writing to the cache failed.
    #[error("writing {what}: {source}")]
    Write {
        /// The object.
        what: String,
        /// Cause.
        #[source]
        source: ObjectError,
    },
}

/// One parsed manifest with where it came from.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Logical cluster (`kcp.io/cluster`).
    pub cluster: String,
    /// The object.
    pub object: Value,
}

/// Read every `*.yaml`/`*.yml` file of the directories (sorted by file name), multi-document.
pub fn read_dirs(dirs: &[PathBuf]) -> Result<Vec<Manifest>, SeedError> {
    let mut out = Vec::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|source| SeedError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        for file in files {
            out.extend(read_file(&file)?);
        }
    }
    Ok(out)
}

fn read_file(path: &Path) -> Result<Vec<Manifest>, SeedError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeedError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).map_err(|e| SeedError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (index, object) in docs.into_iter().enumerate() {
        if object.is_null() {
            continue;
        }
        let err = |message: &str| SeedError::Document {
            path: path.to_path_buf(),
            index,
            message: message.to_string(),
        };
        if !object.is_object() {
            return Err(err("not a mapping"));
        }
        if object
            .get("kind")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(err("missing kind"));
        }
        if object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(err("missing metadata.name"));
        }
        let cluster = object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(ANN_CLUSTER))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !crate::model::is_cluster_name(&cluster) {
            return Err(err(
                "missing or invalid kcp.io/cluster annotation (a logical cluster name)",
            ));
        }
        out.push(Manifest { cluster, object });
    }
    Ok(out)
}

/// What the loader wrote, for start-up logging.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Objects written to the cache.
    pub written: usize,
    /// Source objects wrapped into CachedObjects (one per matching CachedResource).
    pub wrapped: usize,
}

/// Apply manifests to the cache as the local shard, with `external_url` as this server's
/// virtual workspace URL.
pub async fn apply(
    store: &dyn Store,
    manifests: Vec<Manifest>,
    external_url: &str,
) -> Result<Summary, SeedError> {
    let plan = controllers::plan(manifests, LOCAL_SHARD, external_url);
    let mut summary = Summary::default();
    for (cluster, object) in plan.objects {
        write(store, &cluster, object).await?;
        summary.written += 1;
    }
    summary.wrapped = plan.wrapped;
    Ok(summary)
}

/// Create an object in the cache, or replace it when it exists already.
pub async fn write(store: &dyn Store, cluster: &str, object: Value) -> Result<(), SeedError> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let what = format!("{kind} {cluster}|{name}");
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or(("", api_version.as_str()));
    let res = resources::by_kind(group, &kind).ok_or_else(|| SeedError::Write {
        what: what.clone(),
        source: ObjectError::BadRequest(format!("{group} {kind} is not stored in the cache")),
    })?;
    let loc = Location {
        res,
        version,
        shard: LOCAL_SHARD,
        cluster,
        namespace: "",
    };
    match objects::create(store, &loc, object.clone()).await {
        Ok(_) => Ok(()),
        Err(ObjectError::AlreadyExists) => objects::update(store, &loc, &name, object)
            .await
            .map(|_| ())
            .map_err(|source| SeedError::Write { what, source }),
        Err(source) => Err(SeedError::Write { what, source }),
    }
}
