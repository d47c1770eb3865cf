//! Discovery for the cache server API, so that kubectl pointed at
//! `/services/cache/shards/<s>/clusters/<c>` finds the stored resources: the served-resource
//! table shown through [`rest::discovery`] (legacy and aggregated documents).

use super::resources::RESOURCES;
use axum::response::Response;
use kube_api::Status;
use rest::discovery::ApiResource;

const VERBS: [&str; 7] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "update",
    "watch",
];

/// Every (resource, version) the cache server stores.
fn resources() -> Vec<ApiResource> {
    RESOURCES
        .iter()
        .flat_map(|r| {
            r.versions.iter().map(move |v| ApiResource {
                group: r.group.to_string(),
                version: v.to_string(),
                resource: r.resource.to_string(),
                singular: r.kind.to_ascii_lowercase(),
                kind: r.kind.to_string(),
                namespaced: r.namespaced,
                verbs: VERBS.iter().map(|s| s.to_string()).collect(),
                short_names: Vec::new(),
                categories: Vec::new(),
                subresources: Vec::new(),
                storage_version_hash: None,
            })
        })
        .collect()
}

/// Answer one discovery request (`tail` is `api`, `apis`, `apis/<g>` or `apis/<g>/<v>`).
pub fn serve(tail: &[String], accept: Option<&str>) -> Result<Response, Status> {
    rest::discovery::serve(&resources(), tail, accept, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rest::discovery::groups;

    #[test]
    fn apiexports_prefer_their_storage_version() {
        assert_eq!(groups(&resources())["apis.kcp.io"][0], "v1alpha2");
    }

    #[test]
    fn every_stored_resource_version_is_discoverable() {
        let expected: usize = RESOURCES.iter().map(|r| r.versions.len()).sum();
        assert_eq!(resources().len(), expected);
    }
}
