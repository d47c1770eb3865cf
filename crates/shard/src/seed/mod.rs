//! The seed loader: applies directories of manifests through the workspaces API, as
//! `kubectl apply` would, in dependency order (workspaces, namespaces, CRDs, schemas, secrets and
//! RBAC, custom resources, CachedResources, endpoint slices, APIExports, APIBindings). The
//! controllers then do the rest, as the shard does in kcp.
//!
//! Each manifest names its workspace with the `kcp.io/cluster` annotation (a logical cluster
//! name) or `kcp.io/path` (a workspace path such as `root:cloudco`).

use crate::controllers::Controllers;
use crate::workspaces::objects::{Part, Workspaces, WsError};
use kcp_model::{ANN_CLUSTER, ANN_PATH};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The shard name the embedded server acts as.
pub const LOCAL_SHARD: &str = crate::workspaces::objects::SHARD;

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
    /// Writing an object failed.
    #[error("applying {what}: {source}")]
    Write {
        /// The object.
        what: String,
        /// Cause.
        #[source]
        source: Box<WsError>,
    },
    /// The controllers failed.
    #[error("controllers: {0}")]
    Controllers(String),
}

/// One parsed manifest with where it came from.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Workspace: a logical cluster name (`kcp.io/cluster`) or a path (`kcp.io/path`).
    pub cluster: String,
    /// The object.
    pub object: Value,
}

/// Read every `*.yaml`/`*.yml` file of the directories (sorted by file name), multi-document.
pub fn read_dirs(dirs: &[PathBuf]) -> Result<Vec<Manifest>, SeedError> {
    let mut out = Vec::new();
    for dir in dirs {
        // A single manifest file is a seed too.
        if dir.is_file() {
            out.extend(read_file(dir)?);
            continue;
        }
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
    parse_manifests(path, &text)
}

/// The manifests of one seed file's text (multi-document YAML); `path` only names the file in
/// errors.
pub fn parse_manifests(path: &Path, text: &str) -> Result<Vec<Manifest>, SeedError> {
    // Seeds are the operator's own files and may hold many objects: the parser's default
    // budget (1,024 documents, a million events) is sized for configuration files.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 10_000_000,
            max_events: 1_000_000_000,
            max_nodes: 500_000_000,
        },
    };
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| SeedError::Parse {
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
        let annotation = |k: &str| {
            object
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let cluster = match (annotation(ANN_CLUSTER), annotation(ANN_PATH)) {
            (c, _) if kcp_model::is_cluster_name(&c) => c,
            (c, p) if c.is_empty() && !p.is_empty() => p,
            _ => {
                return Err(err(
                    "missing or invalid kcp.io/cluster annotation (a logical cluster name) and no kcp.io/path",
                ));
            }
        };
        out.push(Manifest { cluster, object });
    }
    Ok(out)
}

/// What the loader applied, for start-up logging.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Objects created or updated.
    pub written: usize,
    /// Workspaces (LogicalClusters) among them: (logical cluster, path).
    pub workspaces: Vec<(String, String)>,
}

/// Dependency order of a manifest's kind (lower first).
fn rank(object: &Value) -> u8 {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    match kind {
        "LogicalCluster" => 0,
        "Namespace" => 1,
        "CustomResourceDefinition" => 2,
        "APIResourceSchema" | "Secret" | "ConfigMap" | "ClusterRole" | "Role" => 3,
        "ClusterRoleBinding" | "RoleBinding" => 4,
        "CachedResource" | "ClusterCachedResource" => 6,
        "CachedResourceEndpointSlice" | "ClusterCachedResourceEndpointSlice" => 7,
        "APIExport" => 8,
        "APIBinding" => 9,
        _ => 5,
    }
}

/// Apply manifests through the workspaces API (create, or update what exists).
pub async fn apply(ws: &Workspaces, mut manifests: Vec<Manifest>) -> Result<Summary, SeedError> {
    manifests.sort_by_key(|m| rank(&m.object));
    let mut summary = Summary::default();
    for Manifest { cluster, object } in manifests {
        let s = |p: &str| {
            object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (api_version, kind_name, name, namespace) = (
            s("/apiVersion"),
            s("/kind"),
            s("/metadata/name"),
            s("/metadata/namespace"),
        );
        let what = format!("{kind_name} {cluster}|{name}");
        let lc_path = s("/metadata/annotations/kcp.io~1path");
        let wrap = |source: WsError| SeedError::Write {
            what: what.clone(),
            source: Box::new(source),
        };
        let cluster = if kind_name == "LogicalCluster" {
            cluster
        } else {
            ws.resolve(&cluster).await.map_err(wrap)?
        };
        let kind = ws
            .find_kind(&cluster, &api_version, &kind_name)
            .await
            .map_err(wrap)?;
        let namespace = if kind.namespaced && namespace.is_empty() {
            "default".to_string()
        } else {
            namespace
        };
        match ws.create(&kind, &cluster, &namespace, object.clone()).await {
            Ok(_) => {}
            Err(WsError::AlreadyExists { .. }) => {
                let mut body = object;
                if let Some(md) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                    md.remove("resourceVersion");
                }
                ws.update(&kind, &cluster, &namespace, &name, body, Part::Main)
                    .await
                    .map_err(wrap)?;
            }
            Err(e) => return Err(wrap(e)),
        }
        if kind_name == "LogicalCluster" {
            summary.workspaces.push((cluster.clone(), lc_path));
        }
        summary.written += 1;
    }
    Ok(summary)
}

/// Load manifests into `cache` without a server: a transient local shard applies them and its
/// controllers run until they settle, replicating into `cache` as shard `root` with `vw_url`
/// as this server's URL. For tests and benchmarks that need a filled cache.
pub async fn load(
    cache: Arc<dyn cache_client::CacheWrite>,
    manifests: Vec<Manifest>,
    vw_url: &str,
) -> Result<Summary, SeedError> {
    let ws = Arc::new(Workspaces::new(Arc::new(
        store::memory::MemoryStore::default(),
    )));
    let summary = apply(&ws, manifests).await?;
    let controllers = Controllers::new(ws, cache, LOCAL_SHARD, vw_url);
    controllers
        .settle(50)
        .await
        .map_err(|e| SeedError::Controllers(e.to_string()))?;
    Ok(summary)
}
