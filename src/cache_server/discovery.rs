//! Discovery for the cache server API, so that kubectl pointed at
//! `/services/cache/shards/<s>/clusters/<c>` finds the stored resources: legacy documents and
//! aggregated discovery (which kubectl caches), built from the served-resource table.

use super::resources::RESOURCES;
use crate::api::Status;
use crate::api::negotiate::{Format, Offer, negotiate};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const VERBS: [&str; 7] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "update",
    "watch",
];

/// Group name → versions (preferred first) in table order.
fn groups() -> BTreeMap<&'static str, Vec<&'static str>> {
    let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in RESOURCES {
        let versions = out.entry(r.group).or_default();
        for v in r.versions {
            if !versions.contains(v) {
                versions.push(v);
            }
        }
    }
    for versions in out.values_mut() {
        versions.sort_by_key(|v| std::cmp::Reverse(priority(v)));
    }
    out
}

/// Kubernetes version priority: GA over beta over alpha, then the higher numbers.
fn priority(v: &str) -> (u8, u32, u32) {
    let rest = v.strip_prefix('v').unwrap_or(v);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (stage, minor) = if let Some(n) = tail.strip_prefix("beta") {
        (1, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (0, n.parse().unwrap_or(0))
    } else {
        (2, 0)
    };
    (stage, major, minor)
}

fn resources_of(group: &str, version: &str) -> Vec<&'static super::resources::ServedResource> {
    RESOURCES
        .iter()
        .filter(|r| r.group == group && r.versions.contains(&version))
        .collect()
}

fn group_doc(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0]})
}

fn aggregated() -> Value {
    let items: Vec<Value> = groups()
        .iter()
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let res: Vec<Value> = resources_of(g, v)
                        .iter()
                        .map(|r| {
                            json!({
                                "resource": r.resource,
                                "responseKind": {"group": g, "version": v, "kind": r.kind},
                                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": r.kind.to_ascii_lowercase(),
                                "verbs": VERBS,
                            })
                        })
                        .collect();
                    json!({"version": v, "resources": res, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g}, "versions": vs})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn respond(doc: &Value, content_type: &'static str) -> Result<Response, Status> {
    let body = serde_json::to_vec(doc).map_err(Status::internal)?;
    let mut r = crate::api::json_response(200, body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(r)
}

/// Answer one discovery request (`tail` is `api`, `apis`, `apis/<g>` or `apis/<g>/<v>`).
pub fn serve(tail: &[String], accept: Option<&str>) -> Result<Response, Status> {
    const AGG: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    let shape: Vec<&str> = tail.iter().map(String::as_str).collect();
    match shape.as_slice() {
        ["api"] => match negotiate(accept, Offer::DiscoveryRoot)? {
            Format::AggregatedDiscovery => respond(
                &json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": []}),
                AGG,
            ),
            _ => respond(
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
                "application/json",
            ),
        },
        ["api", "v1"] => respond(
            &json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": []}),
            "application/json",
        ),
        ["apis"] => match negotiate(accept, Offer::DiscoveryRoot)? {
            Format::AggregatedDiscovery => respond(&aggregated(), AGG),
            _ => {
                let gs: Vec<Value> = groups().iter().map(|(g, v)| group_doc(g, v)).collect();
                respond(
                    &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs}),
                    "application/json",
                )
            }
        },
        ["apis", g] => match groups().get(g) {
            Some(v) => {
                let mut doc = group_doc(g, v);
                doc["kind"] = json!("APIGroup");
                doc["apiVersion"] = json!("v1");
                respond(&doc, "application/json")
            }
            None => Err(Status::path_not_found()),
        },
        ["apis", g, v] => {
            let res = resources_of(g, v);
            if res.is_empty() {
                return Err(Status::path_not_found());
            }
            let list: Vec<Value> = res
                .iter()
                .map(|r| json!({"name": r.resource, "singularName": r.kind.to_ascii_lowercase(), "namespaced": r.namespaced, "kind": r.kind, "verbs": VERBS}))
                .collect();
            respond(
                &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{g}/{v}"), "resources": list}),
                "application/json",
            )
        }
        _ => Err(Status::path_not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apiexports_prefer_their_storage_version() {
        assert_eq!(groups()["apis.kcp.io"][0], "v1alpha2");
    }

    #[test]
    fn every_stored_resource_appears_in_aggregated_discovery() {
        let doc = aggregated();
        let count: usize = doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["versions"].as_array().unwrap().iter())
            .map(|v| v["resources"].as_array().unwrap().len())
            .sum();
        let expected: usize = RESOURCES.iter().map(|r| r.versions.len()).sum();
        assert_eq!(count, expected);
    }
}
