//! What a request addresses, read once from its method, path and query at the edge (as
//! kube-apiserver's RequestInfo): the surface (cache server, virtual workspace, workspaces) and
//! its cluster segments, and the Kubernetes part — verb, group, version, namespace, resource,
//! name, subresource. Layers (metrics, logs) read it from the request's extensions.

use axum::http::Method;

/// Which API a path belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Surface {
    /// `[/services/cache]/shards/<shard>/clusters/<cluster>/…`
    Cache {
        /// Shard segment (`*` = every shard).
        shard: String,
        /// Cluster segment.
        cluster: String,
    },
    /// `/services/replication/<crCluster>/<crName>/clusters/<cluster>/…`
    Replication {
        /// The CachedResource's logical cluster.
        cr_cluster: String,
        /// The CachedResource's name.
        cr_name: String,
        /// The consumer cluster segment.
        cluster: String,
    },
    /// `/clusters/<cluster>/…` (the shard's workspaces API).
    Workspaces {
        /// Cluster or workspace path.
        cluster: String,
    },
    /// Anything else (health, metrics, `/version`, unknown paths).
    Other,
}

impl Surface {
    /// The role serving this surface, as a metrics label.
    pub fn role(&self) -> &'static str {
        match self {
            Surface::Cache { .. } => "cache-server",
            Surface::Replication { .. } => "virtual-workspace",
            Surface::Workspaces { .. } => "shard",
            Surface::Other => "none",
        }
    }
}

/// A request as kube-apiserver's RequestInfo sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The surface and its cluster segments.
    pub surface: Surface,
    /// Whether the path names a resource (`/api/v1/…`, `/apis/<g>/<v>/…` with a resource).
    pub is_resource_request: bool,
    /// get, list, watch, create, update, patch, delete, deletecollection; for other requests
    /// the lowercase HTTP method.
    pub verb: String,
    /// API group ("" = core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace ("" = none).
    pub namespace: String,
    /// Plural resource.
    pub resource: String,
    /// Object name ("" = collection).
    pub name: String,
    /// Subresource ("" = none).
    pub subresource: String,
    /// Whether the path used the legacy `/watch/` form.
    pub watch_path: bool,
    /// The query, decoded once into pairs in order.
    pub query: Vec<(String, String)>,
}

/// The Kubernetes verb of a request method on a collection or (`named`) an object.
pub fn verb(method: &Method, named: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "",
    }
}

/// The lowercase HTTP method (the verb of requests that name no resource).
fn method_verb(method: &Method) -> String {
    match *method {
        Method::GET => "get".to_string(),
        Method::POST => "post".to_string(),
        Method::PUT => "put".to_string(),
        Method::PATCH => "patch".to_string(),
        Method::DELETE => "delete".to_string(),
        _ => method.as_str().to_ascii_lowercase(),
    }
}

/// The non-empty `/`-separated segments of a path.
pub fn segments(path: &str) -> Vec<&str> {
    // Room for the longest paths (a VW resource: 13 segments) without growing; the slashes
    // found with SIMD (`memchr`): a byte-by-byte loop cost about 8 instructions a byte.
    let mut out = Vec::with_capacity(16);
    let mut start = 0;
    for i in memchr::memchr_iter(b'/', path.as_bytes()) {
        if i > start {
            out.push(&path[start..i]);
        }
        start = i + 1;
    }
    if start < path.len() {
        out.push(&path[start..]);
    }
    out
}

impl RequestInfo {
    /// The request's info as the edge read it (a request extension), or read now for a request
    /// that did not pass the edge (a router driven on its own).
    pub fn of<B>(req: &axum::http::Request<B>) -> RequestInfo {
        req.extensions()
            .get::<RequestInfo>()
            .cloned()
            .unwrap_or_else(|| {
                RequestInfo::parse(req.method(), req.uri().path(), req.uri().query())
            })
    }

    /// [`RequestInfo::of`], taking the edge's copy out of the request instead of cloning it.
    pub fn take<B>(req: &mut axum::http::Request<B>) -> RequestInfo {
        match req.extensions_mut().remove::<RequestInfo>() {
            Some(info) => info,
            None => RequestInfo::parse(req.method(), req.uri().path(), req.uri().query()),
        }
    }

    /// The value of the first query parameter named `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Read a request's method, raw (percent-encoded) path and query.
    pub fn parse(method: &Method, path: &str, query: Option<&str>) -> RequestInfo {
        let decoded = super::params::decoded_path(path);
        let segs = segments(&decoded);
        let (surface, rest): (Surface, &[&str]) = match segs.as_slice() {
            [
                "services",
                "cache",
                "shards",
                shard,
                "clusters",
                cluster,
                rest @ ..,
            ]
            | ["shards", shard, "clusters", cluster, rest @ ..] => (
                Surface::Cache {
                    shard: shard.to_string(),
                    cluster: cluster.to_string(),
                },
                rest,
            ),
            [
                "services",
                "replication",
                crc,
                crn,
                "clusters",
                cluster,
                rest @ ..,
            ] => (
                Surface::Replication {
                    cr_cluster: crc.to_string(),
                    cr_name: crn.to_string(),
                    cluster: cluster.to_string(),
                },
                rest,
            ),
            ["clusters", cluster, rest @ ..] => (
                Surface::Workspaces {
                    cluster: cluster.to_string(),
                },
                rest,
            ),
            _ => (Surface::Other, &[][..]),
        };
        let mut info = RequestInfo {
            surface,
            is_resource_request: false,
            verb: method_verb(method),
            group: String::new(),
            version: String::new(),
            namespace: String::new(),
            resource: String::new(),
            name: String::new(),
            subresource: String::new(),
            watch_path: false,
            query: super::params::parse_query(query),
        };
        let mut parts: &[&str] = match rest {
            ["api", version, more @ ..] => {
                info.version = version.to_string();
                more
            }
            ["apis", group, version, more @ ..] => {
                info.group = group.to_string();
                info.version = version.to_string();
                more
            }
            _ => return info,
        };
        if let ["watch", more @ ..] = parts {
            info.watch_path = true;
            parts = more;
        }
        if let ["namespaces", ns, more @ ..] = parts
            && !more.is_empty()
        {
            info.namespace = ns.to_string();
            parts = more;
        }
        match parts {
            [] => return info,
            [resource] => info.resource = resource.to_string(),
            [resource, name] => {
                info.resource = resource.to_string();
                info.name = name.to_string();
            }
            [resource, name, sub, ..] => {
                info.resource = resource.to_string();
                info.name = name.to_string();
                info.subresource = sub.to_string();
            }
        }
        // `/api/v1/namespaces/<ns>` is a namespace.
        if info.resource == "namespaces" && info.namespace.is_empty() && !info.name.is_empty() {
            info.namespace = info.name.clone();
        }
        info.is_resource_request = true;
        let watch = info.watch_path
            || info
                .query
                .iter()
                .any(|(k, v)| k == "watch" && super::params::truthy(v));
        let v = verb(method, !info.name.is_empty(), watch);
        if !v.is_empty() && info.verb != v {
            info.verb = v.to_string();
        }
        info
    }
}

/// The bounded label of a group and resource, as metrics and logs name it: `<group>/<resource>`,
/// `core` for the empty group, and without the `:<identityHash>` of identity-based resources (so
/// one resource is one value whatever its publishers' identities).
pub fn resource_label(group: &str, resource: &str) -> String {
    let plural = resource.split_once(':').map_or(resource, |(p, _)| p);
    let group = if group.is_empty() { "core" } else { group };
    // Pushed, not `format!`ed: this runs for every request's metrics.
    let mut label = String::with_capacity(group.len() + 1 + plural.len());
    label.push_str(group);
    label.push('/');
    label.push_str(plural);
    label
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virtual_workspace_watch_is_read_with_its_clusters_and_resource() {
        let i = RequestInfo::parse(
            &Method::GET,
            "/services/replication/p1/cpuflavors-v1/clusters/*/apis/cloud.example.com/v1/cpuflavors",
            Some("watch=1&resourceVersion=5"),
        );
        assert_eq!(i.surface.role(), "virtual-workspace");
        assert_eq!(
            (i.verb.as_str(), i.group.as_str(), i.resource.as_str()),
            ("watch", "cloud.example.com", "cpuflavors")
        );
    }

    #[test]
    fn cache_server_paths_with_and_without_the_prefix_are_the_same_request() {
        let a = RequestInfo::parse(
            &Method::PUT,
            "/services/cache/shards/s1/clusters/c1/apis/cache.kcp.io/v1alpha1/cachedobjects/x",
            None,
        );
        let b = RequestInfo::parse(
            &Method::PUT,
            "/shards/s1/clusters/c1/apis/cache.kcp.io/v1alpha1/cachedobjects/x",
            None,
        );
        assert_eq!(a, b);
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("update", "x"));
    }

    #[test]
    fn namespaced_names_subresources_and_legacy_watch_paths_are_recognised() {
        let i = RequestInfo::parse(
            &Method::GET,
            "/clusters/root:cloudco/api/v1/watch/namespaces/kcp-system/secrets",
            None,
        );
        assert_eq!(
            (i.verb.as_str(), i.namespace.as_str(), i.resource.as_str()),
            ("watch", "kcp-system", "secrets")
        );
        let s = RequestInfo::parse(
            &Method::PUT,
            "/clusters/c/apis/cache.kcp.io/v1alpha1/cachedresources/x/status",
            None,
        );
        assert_eq!(s.subresource, "status");
        let ns = RequestInfo::parse(&Method::DELETE, "/clusters/c/api/v1/namespaces/team", None);
        assert_eq!(
            (ns.verb.as_str(), ns.namespace.as_str()),
            ("delete", "team")
        );
    }

    #[test]
    fn discovery_and_health_are_not_resource_requests() {
        let d = RequestInfo::parse(&Method::GET, "/clusters/c/apis/cloud.example.com/v1", None);
        assert!(!d.is_resource_request);
        assert_eq!(d.verb, "get");
        let h = RequestInfo::parse(&Method::GET, "/readyz", None);
        assert_eq!(h.surface, Surface::Other);
    }
}
