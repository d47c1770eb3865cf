//! The Replication virtual workspace URL digest (`kcp-reference.md` §5.1).
//!
//! `/services/replication/<crCluster>/<crName>/clusters/<target>/<kube path>`: the first two
//! segments name the CachedResource (the API domain key), the target is a consumer logical
//! cluster name or `*`, and the remainder is served as if it were a server root. Both cluster
//! segments must be logical cluster names (kcp's rules: one lower-case DNS label, optionally
//! prefixed `system:`); anything else — a workspace path such as `root:org`, `..`, upper case —
//! is refused before anything is looked up.

/// Why a path is not a servable Replication VW URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not a Replication VW URL at all (the generic 404).
    #[error("the server could not find the requested resource")]
    NotHandled,
    /// A cluster segment that is a workspace path, not a logical cluster name.
    #[error("invalid cluster: \"{0}\" is not a logical cluster name")]
    PathNotName(String),
    /// A cluster segment that does not match the logical cluster name rules.
    #[error("invalid cluster: \"{0}\" does not match the regex")]
    Malformed(String),
}

/// The consumer cluster a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `clusters/*`.
    Wildcard,
    /// One logical cluster.
    Cluster(String),
}

/// A digested Replication VW URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Logical cluster of the CachedResource.
    pub cr_cluster: String,
    /// CachedResource name.
    pub cr_name: String,
    /// Target consumer.
    pub target: Target,
    /// The path served under the virtual root (`/` for the root itself).
    pub kube_path: String,
}

/// Prefix of every Replication VW URL.
pub const PREFIX: &str = "/services/replication/";

/// Whether `s` is a logical cluster name: a DNS label (lower-case letters, digits and `-`, at
/// most 63 characters, starting and ending with a letter or digit), optionally after
/// `system:`.
pub fn is_logical_cluster_name(s: &str) -> bool {
    let label = s.strip_prefix("system:").unwrap_or(s);
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = label.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            bytes.len() <= 63
                && alnum(first)
                && alnum(last)
                && bytes.iter().all(|&b| alnum(b) || b == b'-')
        }
        _ => false,
    }
}

/// Check one cluster segment of the URL.
fn cluster_segment(s: &str) -> Result<String, DigestError> {
    if is_logical_cluster_name(s) {
        Ok(s.to_string())
    } else if s.contains(':') && !s.starts_with("system:") {
        Err(DigestError::PathNotName(s.to_string()))
    } else {
        Err(DigestError::Malformed(s.to_string()))
    }
}

/// Digest a (percent-decoded) request path; `None` when it is not a servable VW URL (see
/// [`parse`] for why).
pub fn digest(path: &str) -> Option<Digest> {
    parse(path).ok()
}

/// Digest a (percent-decoded) request path, or say why it cannot be served.
pub fn parse(path: &str) -> Result<Digest, DigestError> {
    let rest = path.strip_prefix(PREFIX).ok_or(DigestError::NotHandled)?;
    let mut parts = rest.splitn(3, '/');
    let (Some(cr_cluster), Some(cr_name), Some(remainder)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(DigestError::NotHandled);
    };
    if cr_cluster.is_empty() || cr_name.is_empty() {
        return Err(DigestError::NotHandled);
    }
    let after = remainder
        .strip_prefix("clusters/")
        .ok_or(DigestError::NotHandled)?;
    let (target, kube_path) = match after.split_once('/') {
        Some((t, p)) => {
            let mut path = String::with_capacity(p.len() + 1);
            path.push('/');
            path.push_str(p);
            (t, path)
        }
        None => (after, "/".to_string()),
    };
    let cr_cluster = cluster_segment(cr_cluster)?;
    let target = match target {
        "*" => Target::Wildcard,
        t => Target::Cluster(cluster_segment(t)?),
    };
    Ok(Digest {
        cr_cluster,
        cr_name: cr_name.to_string(),
        target,
        kube_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_digested_as_kcps_table_says() {
        let d =
            parse("/services/replication/my-cluster/my-cachedresource/clusters/my-cluster/apis")
                .unwrap();
        assert_eq!(
            (d.cr_cluster.as_str(), d.cr_name.as_str()),
            ("my-cluster", "my-cachedresource")
        );
        assert_eq!(d.target, Target::Cluster("my-cluster".into()));
        assert_eq!(d.kube_path, "/apis");
        let d = parse("/services/replication/my-cluster/my-cachedresource/clusters/my-cluster")
            .unwrap();
        assert_eq!(d.kube_path, "/");
        let d = parse("/services/replication/my-cluster/my-cachedresource/clusters/other-cluster")
            .unwrap();
        assert_eq!(d.target, Target::Cluster("other-cluster".into()));
        assert_eq!(
            parse("/services/replication/my-cluster/my-cachedresource/clusters"),
            Err(DigestError::NotHandled)
        );
        let d = parse("/services/replication/c1/cr/clusters/*/apis/g/v1/things").unwrap();
        assert_eq!(d.target, Target::Wildcard);
        assert_eq!(d.kube_path, "/apis/g/v1/things");
        assert_eq!(
            parse("/services/replication/c1/cr/clusters/root:org:ws/apis"),
            Err(DigestError::PathNotName("root:org:ws".into()))
        );
        assert_eq!(
            parse("/services/replication/c1/cr/notclusters/x/apis"),
            Err(DigestError::NotHandled)
        );
    }

    #[test]
    fn system_clusters_are_names_and_empty_segments_are_rejected() {
        assert!(parse("/services/replication/c1/cr/clusters/system:admin/apis").is_ok());
        assert_eq!(
            parse("/services/replication//cr/clusters/x/apis"),
            Err(DigestError::NotHandled)
        );
    }

    #[test]
    fn cluster_segments_that_are_not_logical_cluster_names_are_refused() {
        for bad in [
            "..", ".", "root:foo", "Team-A", "-a", "a-", "a_b", "a.b", "system:",
        ] {
            let cr = parse(&format!("/services/replication/{bad}/cr/clusters/c1/apis"));
            let target = parse(&format!("/services/replication/c1/cr/clusters/{bad}/apis"));
            assert!(
                matches!(
                    cr,
                    Err(DigestError::PathNotName(_) | DigestError::Malformed(_))
                ),
                "{bad}: {cr:?}"
            );
            assert_eq!(cr, target, "{bad}");
        }
        assert!(is_logical_cluster_name("1p5f2x8rkq0vd7wz"));
        assert!(is_logical_cluster_name("root"));
        assert!(!is_logical_cluster_name(&"a".repeat(64)));
        assert!(parse("/services/replication/c1/cr/clusters/*/apis").is_ok());
        assert!(matches!(
            parse("/services/replication/*/cr/clusters/c1/apis"),
            Err(DigestError::Malformed(_))
        ));
    }
}
