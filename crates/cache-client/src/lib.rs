//! The two seams between the roles and the cache server, each with an in-process and an HTTPS
//! implementation, so a virtual workspace or a shard runs next to the cache server or apart
//! from it without knowing which.
//!
//! - [`CacheRead`] ([`reader`]): what readers (the virtual workspace's index) take from the
//!   cache — every resource they need listed at one revision, then watched from it.
//!   [`reader::StoreRead`] reads a [`Store`](store::Store) in process;
//!   [`reader::HttpsRead`] lists and watches a remote cache server over its HTTP API, resumes
//!   after outages, and reports a cache that restarted empty as an expired watch so readers
//!   relist.
//! - [`CacheWrite`] (here): what a shard writes to and lists from the cache (the §8.6
//!   replication protocol and §1.7 CachedObjects). [`HttpsWrite`] speaks the cache server's HTTP
//!   API; the in-process implementation lives with the cache server's object semantics.
//!
//! [`Connection`] is the HTTPS client both remote implementations share, built from a
//! kubeconfig (`--cache-kubeconfig`) whose current context names the cache server, its CA and a
//! client certificate.

#![forbid(unsafe_code)]

pub mod reader;

use async_trait::async_trait;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use store::{Key, Record};

pub use reader::{CacheRead, HttpsRead, StoreRead};

/// Errors talking to the cache, whatever the transport.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CacheError {
    /// The object does not exist.
    #[error("not found")]
    NotFound,
    /// The object exists already.
    #[error("already exists")]
    AlreadyExists,
    /// The object changed since it was read.
    #[error("conflict")]
    Conflict,
    /// The cache refused the request (a 4xx other than the above).
    #[error("refused by the cache server: {0}")]
    Rejected(String),
    /// The cache could not be reached or failed (transport errors, 5xx).
    #[error("cache server unavailable: {0}")]
    Unavailable(String),
}

/// Errors reading a kubeconfig or building the client.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig lacks something or is malformed.
    #[error("kubeconfig {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The HTTPS client could not be built.
    #[error("building the cache client: {0}")]
    Client(String),
}

/// A collection in the cache server: `shards/<shard|*>/clusters/<cluster|*>/apis/<g>/<v>/<r>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collection<'a> {
    /// API group.
    pub group: &'a str,
    /// Version.
    pub version: &'a str,
    /// Plural resource.
    pub resource: &'a str,
    /// Shard (`None` = every shard).
    pub shard: Option<&'a str>,
    /// Logical cluster (`None` = every cluster).
    pub cluster: Option<&'a str>,
}

impl Collection<'_> {
    /// The path of this collection under the cache server's root (no leading prefix).
    pub fn path(&self) -> String {
        let api = if self.group.is_empty() {
            format!("api/{}", self.version)
        } else {
            format!("apis/{}/{}", self.group, self.version)
        };
        format!(
            "/services/cache/shards/{}/clusters/{}/{api}/{}",
            self.shard.unwrap_or("*"),
            self.cluster.unwrap_or("*"),
            self.resource
        )
    }
}

/// What a shard writes to and lists from the cache.
#[async_trait]
pub trait CacheWrite: Send + Sync + 'static {
    /// Every object of the collection, as the cache stores them (keys carry shard and cluster).
    async fn list(&self, at: Collection<'_>) -> Result<Vec<Record>, CacheError>;
    /// Create an object in a concrete shard and cluster.
    async fn create(&self, at: Collection<'_>, object: Value) -> Result<(), CacheError>;
    /// Replace an object (a `metadata.resourceVersion` in it must be current).
    async fn update(&self, at: Collection<'_>, name: &str, object: Value)
    -> Result<(), CacheError>;
    /// Delete an object.
    async fn delete(&self, at: Collection<'_>, name: &str) -> Result<(), CacheError>;
}

/// Client certificate, CA and URL of a remote cache server, as a kubeconfig names them.
#[derive(Clone)]
pub struct Connection {
    /// `https://host:port` without a trailing slash.
    pub base: String,
    clients: Arc<Clients>,
    /// A kcp shard's API (`/clusters/*/apis/…`) rather than a cache server's.
    shard_paths: bool,
}

/// The HTTP clients of a connection, built again when the kubeconfig or the files it names
/// change on disk (a renewed client certificate), checked at most every [`RELOAD_CHECK`].
struct Clients {
    /// The client for ordinary requests (30 s limit) and the one for watches (no limit).
    current: parking_lot::RwLock<(reqwest::Client, reqwest::Client)>,
    /// Where the connection came from: the kubeconfig and the server override.
    source: (PathBuf, Option<String>),
    /// The bytes the current clients were built from.
    fingerprint: parking_lot::Mutex<Vec<u8>>,
    /// When the files were last compared.
    checked: parking_lot::Mutex<std::time::Instant>,
}

/// How often a connection's kubeconfig and certificate files are compared with what its
/// clients were built from.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

impl Clients {
    /// The current client for ordinary requests or for watches, after building new ones if
    /// the files changed since.
    fn get(&self, stream: bool) -> reqwest::Client {
        self.reload_if_changed();
        let current = self.current.read();
        if stream {
            current.1.clone()
        } else {
            current.0.clone()
        }
    }

    fn reload_if_changed(&self) {
        {
            let mut checked = self.checked.lock();
            if checked.elapsed() < RELOAD_CHECK {
                return;
            }
            *checked = std::time::Instant::now();
        }
        let (path, server) = &self.source;
        match Connection::load(path, server.as_deref()) {
            Ok(loaded) => {
                let mut fp = self.fingerprint.lock();
                if *fp != loaded.fingerprint {
                    *fp = loaded.fingerprint;
                    *self.current.write() = (loaded.client, loaded.stream_client);
                    tracing::info!(kubeconfig = %path.display(), "Client credentials reloaded (the kubeconfig or a file it names changed).");
                }
            }
            Err(e) => {
                tracing::debug!(kubeconfig = %path.display(), error = %e, "The kubeconfig does not load (yet); keeping the current credentials.");
            }
        }
    }
}

/// What a kubeconfig gives a connection.
struct Loaded {
    base: String,
    fingerprint: Vec<u8>,
    client: reqwest::Client,
    stream_client: reqwest::Client,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Time for one non-watch request to the cache.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time to establish a connection to the cache.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a kubeconfig's current context names: the cache server's base URL and the material to
/// reach it, with `<field>-data` decoded and file references read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeconfigTarget {
    /// `https://host[:port]` (the `server` override if one was given).
    pub base: String,
    /// `certificate-authority(-data)` of the cluster.
    pub ca: Option<Vec<u8>>,
    /// `client-certificate(-data)` of the user.
    pub cert: Option<Vec<u8>>,
    /// `client-key(-data)` of the user.
    pub key: Option<Vec<u8>>,
    /// The user's bearer `token`.
    pub token: Option<String>,
}

/// Parse kubeconfig `text` (the file at `path`): its current context's server and credentials;
/// `server` overrides the server URL. File references are resolved relative to `path`'s
/// directory and read with `read`, in the order server, CA, client certificate, client key.
pub fn parse_kubeconfig(
    path: &Path,
    text: &str,
    server: Option<&str>,
    read: impl Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<KubeconfigTarget, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let named = |list: &str, name: &str, field: &str| -> Option<Value> {
        doc.get(list)?
            .as_array()?
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
            .get(field)
            .cloned()
    };
    let current = doc
        .get("current-context")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("no current-context".into()))?;
    let context = named("contexts", current, "context")
        .ok_or_else(|| invalid(format!("context {current:?} not found")))?;
    let cluster_name = context.get("cluster").and_then(Value::as_str).unwrap_or("");
    let user_name = context.get("user").and_then(Value::as_str).unwrap_or("");
    let cluster = named("clusters", cluster_name, "cluster")
        .ok_or_else(|| invalid(format!("cluster {cluster_name:?} not found")))?;
    let user = named("users", user_name, "user").unwrap_or(Value::Null);
    // Inline `<field>-data` (base64) or a file path relative to the kubeconfig.
    let material = |obj: &Value, field: &str| -> Result<Option<Vec<u8>>, ConfigError> {
        use base64::Engine;
        if let Some(data) = obj
            .get(format!("{field}-data"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            return base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map(Some)
                .map_err(|e| invalid(format!("{field}-data: {e}")));
        }
        match obj
            .get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            Some(file) => {
                let p = dir.join(file);
                read(&p)
                    .map(Some)
                    .map_err(|source| ConfigError::Io { path: p, source })
            }
            None => Ok(None),
        }
    };
    let base = server
        .map(str::to_string)
        .or_else(|| {
            cluster
                .get("server")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .ok_or_else(|| invalid("the cluster has no server".into()))?;
    let base = base_url(&base).ok_or_else(|| {
        invalid(format!(
            "the cache server URL {base:?} is not https://host:port"
        ))
    })?;
    Ok(KubeconfigTarget {
        base,
        ca: material(&cluster, "certificate-authority")?,
        cert: material(&user, "client-certificate")?,
        key: material(&user, "client-key")?,
        token: user
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

impl Connection {
    /// A connection from a kubeconfig's current context; `server` overrides its server URL.
    /// The ring crypto provider must be installed first.
    pub fn from_kubeconfig(path: &Path, server: Option<&str>) -> Result<Self, ConfigError> {
        let loaded = Self::load(path, server)?;
        Ok(Connection {
            base: loaded.base,
            clients: Arc::new(Clients {
                current: parking_lot::RwLock::new((loaded.client, loaded.stream_client)),
                source: (path.to_path_buf(), server.map(str::to_string)),
                fingerprint: parking_lot::Mutex::new(loaded.fingerprint),
                checked: parking_lot::Mutex::new(std::time::Instant::now()),
            }),
            shard_paths: false,
        })
    }

    /// Read a kubeconfig and the files it names; build the clients.
    fn load(path: &Path, server: Option<&str>) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let KubeconfigTarget {
            base,
            ca,
            cert,
            key,
            token,
        } = parse_kubeconfig(path, &text, server, |p| std::fs::read(p))?;
        let build = |total: Option<Duration>| -> Result<reqwest::Client, ConfigError> {
            let mut b = reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(Duration::from_secs(15))
                .http2_keep_alive_timeout(Duration::from_secs(10))
                .tcp_keepalive(Duration::from_secs(30));
            if let Some(t) = total {
                b = b.timeout(t);
            }
            if let Some(ca) = &ca {
                let ca = reqwest::Certificate::from_pem(ca)
                    .map_err(|e| ConfigError::Client(format!("certificate-authority: {e}")))?;
                b = b.tls_certs_only([ca]);
            }
            if let (Some(cert), Some(key)) = (&cert, &key) {
                matching_pair(cert, key)?;
                let mut pem = cert.clone();
                pem.push(b'\n');
                pem.extend_from_slice(key);
                let id = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| ConfigError::Client(format!("client certificate: {e}")))?;
                b = b.identity(id);
            }
            if let Some(t) = &token {
                let mut headers = reqwest::header::HeaderMap::new();
                let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|e| ConfigError::Client(format!("token: {e}")))?;
                headers.insert(reqwest::header::AUTHORIZATION, value);
                b = b.default_headers(headers);
            }
            b.build().map_err(|e| ConfigError::Client(e.to_string()))
        };
        let mut fingerprint = text.into_bytes();
        for m in [&ca, &cert, &key].into_iter().flatten() {
            fingerprint.push(0);
            fingerprint.extend_from_slice(m);
        }
        Ok(Loaded {
            base,
            fingerprint,
            client: build(Some(REQUEST_TIMEOUT))?,
            stream_client: build(None)?,
        })
    }

    /// The same connection addressing a kcp shard's own API: collections are read across
    /// every logical cluster at `/clusters/*/apis/<group>/<version>/<resource>`.
    pub fn into_shard(mut self) -> Self {
        self.shard_paths = true;
        self
    }

    /// The URL of a collection: on the cache server, or on a kcp shard's wildcard endpoint.
    pub fn collection_url(&self, at: &Collection<'_>) -> String {
        if !self.shard_paths {
            return self.url(&at.path());
        }
        let api = if at.group.is_empty() {
            format!("api/{}", at.version)
        } else {
            format!("apis/{}/{}", at.group, at.version)
        };
        self.url(&format!(
            "/clusters/{}/{api}/{}",
            at.cluster.unwrap_or("*"),
            at.resource
        ))
    }

    /// The client for ordinary requests (30 s limit), with the credentials the kubeconfig has
    /// now.
    pub fn client(&self) -> reqwest::Client {
        self.clients.get(false)
    }

    /// The client for watches (no total time limit), with the credentials the kubeconfig has
    /// now.
    pub fn stream_client(&self) -> reqwest::Client {
        self.clients.get(true)
    }

    /// The full URL of a path on the cache server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A client certificate and key that belong together (a renewal replaces the two files one
/// after the other: a half-renewed pair is an error, so the last whole pair stays in use).
fn matching_pair(cert: &[u8], key: &[u8]) -> Result<(), ConfigError> {
    use rustls_pki_types::pem::PemObject;
    let bad = |e: String| ConfigError::Client(format!("client certificate: {e}"));
    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let key =
        rustls_pki_types::PrivateKeyDer::from_pem_slice(key).map_err(|e| bad(e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key, &provider)
        .and_then(|c| c.keys_match())
        .map_err(|e| bad(e.to_string()))
}

/// `https://host[:port]` of a URL (path dropped); `None` when it is not https.
fn base_url(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
    Some(format!("https://{authority}"))
}

/// The error of a failed request: the Status's message when the body is one.
async fn error_of(resp: reqwest::Response) -> CacheError {
    let code = resp.status().as_u16();
    let body = resp.bytes().await.unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    match code {
        404 => CacheError::NotFound,
        409 if message.contains("already exists") => CacheError::AlreadyExists,
        409 => CacheError::Conflict,
        c if c >= 500 || c == 429 => CacheError::Unavailable(format!("{code}: {message}")),
        _ => CacheError::Rejected(format!("{code}: {message}")),
    }
}

fn transport(e: reqwest::Error) -> CacheError {
    CacheError::Unavailable(e.to_string())
}

/// The part of an object's metadata that places it in the cache.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ItemHead {
    metadata: ItemMeta,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ItemMeta {
    name: String,
    namespace: String,
    #[serde(rename = "resourceVersion")]
    resource_version: String,
    annotations: std::collections::BTreeMap<String, String>,
}

/// A record from an object as the cache server's API shows it (`kcp.io/cluster` and
/// `kcp.io/shard` name where it lives, `resourceVersion` its revision); `None` when the object
/// does not say where it lives.
fn record_of(group: &str, resource: &str, raw: &[u8]) -> Option<Record> {
    let head: ItemHead = serde_json::from_slice(raw).ok()?;
    let md = head.metadata;
    let cluster = md.annotations.get(kcp_model::ANN_CLUSTER)?.clone();
    let shard = md
        .annotations
        .get(kcp_model::ANN_SHARD)
        .cloned()
        .unwrap_or_default();
    if md.name.is_empty() || cluster.is_empty() {
        return None;
    }
    Some(Record {
        key: Arc::new(Key {
            group: group.into(),
            resource: resource.into(),
            shard: shard.into(),
            cluster: cluster.into(),
            namespace: md.namespace.into(),
            name: md.name.into(),
        }),
        revision: md.resource_version.parse().unwrap_or(0),
        value: store::exact_copy(raw),
    })
}

/// One page of a list response, items kept as raw JSON.
#[derive(serde::Deserialize)]
struct ListPage<'a> {
    #[serde(default)]
    metadata: ListMetaView,
    #[serde(borrow, default)]
    items: Vec<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ListMetaView {
    #[serde(rename = "resourceVersion")]
    resource_version: String,
    #[serde(rename = "continue")]
    continue_token: String,
}

/// Objects per list page.
const PAGE: usize = 500;

/// List a collection completely (paged); `at_revision` pins the first page to an exact
/// revision. Returns the records and the list's revision.
pub(crate) async fn list_collection(
    conn: &Connection,
    at: Collection<'_>,
    at_revision: Option<u64>,
) -> Result<(Vec<Record>, u64), ListError> {
    let url = conn.collection_url(&at);
    let mut records = Vec::new();
    let mut token = String::new();
    let mut revision = 0;
    loop {
        let mut query: Vec<(&str, String)> = vec![("limit", PAGE.to_string())];
        if !token.is_empty() {
            query.push(("continue", token.clone()));
        } else if let Some(rv) = at_revision {
            query.push(("resourceVersion", rv.to_string()));
            query.push(("resourceVersionMatch", "Exact".into()));
        }
        let resp = conn
            .client()
            .get(&url)
            .query(&query)
            .send()
            .await
            .map_err(|e| ListError::Cache(transport(e)))?;
        if resp.status().as_u16() == 410 {
            return Err(ListError::Expired);
        }
        if !resp.status().is_success() {
            return Err(ListError::Cache(error_of(resp).await));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| ListError::Cache(transport(e)))?;
        let page: ListPage<'_> = serde_json::from_slice(&body).map_err(|e| {
            ListError::Cache(CacheError::Unavailable(format!(
                "decoding a list of {}: {e}",
                at.resource
            )))
        })?;
        for item in &page.items {
            match record_of(at.group, at.resource, item.get().as_bytes()) {
                Some(r) => records.push(r),
                None => tracing::warn!(
                    resource = at.resource,
                    "The cache listed an object without name or kcp.io/cluster; skipped."
                ),
            }
        }
        if revision == 0 {
            revision = page.metadata.resource_version.parse().unwrap_or(0);
        }
        if page.metadata.continue_token.is_empty() {
            break;
        }
        token = page.metadata.continue_token;
    }
    Ok((records, revision))
}

/// Why a remote list failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ListError {
    /// The revision asked for is gone (410).
    Expired,
    /// Anything else.
    Cache(CacheError),
}

/// The cache server's API over HTTPS, as a shard writes to it.
#[derive(Debug, Clone)]
pub struct HttpsWrite {
    conn: Connection,
}

impl HttpsWrite {
    /// A writer over a connection.
    pub fn new(conn: Connection) -> Self {
        HttpsWrite { conn }
    }
}

#[async_trait]
impl CacheWrite for HttpsWrite {
    async fn list(&self, at: Collection<'_>) -> Result<Vec<Record>, CacheError> {
        match list_collection(&self.conn, at, None).await {
            Ok((records, _)) => Ok(records),
            Err(ListError::Expired) => Err(CacheError::Unavailable("list expired".into())),
            Err(ListError::Cache(e)) => Err(e),
        }
    }

    async fn create(&self, at: Collection<'_>, object: Value) -> Result<(), CacheError> {
        let resp = self
            .conn
            .client()
            .post(self.conn.url(&at.path()))
            .json(&object)
            .send()
            .await
            .map_err(transport)?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(error_of(resp).await)
    }

    async fn update(
        &self,
        at: Collection<'_>,
        name: &str,
        object: Value,
    ) -> Result<(), CacheError> {
        let resp = self
            .conn
            .client()
            .put(self.conn.url(&format!("{}/{name}", at.path())))
            .json(&object)
            .send()
            .await
            .map_err(transport)?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(error_of(resp).await)
    }

    async fn delete(&self, at: Collection<'_>, name: &str) -> Result<(), CacheError> {
        let resp = self
            .conn
            .client()
            .delete(self.conn.url(&format!("{}/{name}", at.path())))
            .send()
            .await
            .map_err(transport)?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(error_of(resp).await)
    }
}

/// Capped exponential back-off with jitter: the n-th retry waits about `base · 2ⁿ`, at most
/// `cap`, randomly between half of that and all of it.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A back-off starting at `base`, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = exp / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Start over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_paths_follow_the_cache_server_url_shape() {
        let c = Collection {
            group: "apis.kcp.io",
            version: "v1alpha2",
            resource: "apiexports",
            shard: Some("shard-1"),
            cluster: None,
        };
        assert_eq!(
            c.path(),
            "/services/cache/shards/shard-1/clusters/*/apis/apis.kcp.io/v1alpha2/apiexports"
        );
    }

    #[test]
    fn back_off_grows_to_its_cap_and_never_beyond() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[9] >= Duration::from_secs(1), "{delays:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn an_object_from_the_api_becomes_a_record_under_its_shard_and_cluster() {
        let raw = br#"{"metadata":{"name":"x","resourceVersion":"42","annotations":{"kcp.io/cluster":"c1","kcp.io/shard":"s1"}}}"#;
        let r = record_of("apis.kcp.io", "apiexports", raw).expect("a record");
        assert_eq!(r.key.to_string(), "/apis.kcp.io/apiexports/s1/c1/x");
        assert_eq!(r.revision, 42);
        assert!(record_of("apis.kcp.io", "apiexports", br#"{"metadata":{"name":"x"}}"#).is_none());
    }

    #[test]
    fn only_https_cache_urls_are_accepted() {
        assert_eq!(
            base_url("https://127.0.0.1:6443/x").as_deref(),
            Some("https://127.0.0.1:6443")
        );
        assert_eq!(base_url("http://127.0.0.1:6443"), None);
    }
}
