//! Discovery documents built from a list of served resources: legacy (`/api`, `/api/v1`,
//! `/apis`, `/apis/<g>`, `/apis/<g>/<v>`) and aggregated `apidiscovery.k8s.io/v2`, which
//! kubectl asks for first and caches.

use axum::http::{HeaderValue, header};
use axum::response::Response;
use kube_api::Status;
use kube_api::negotiate::{Format, Offer, negotiate};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Content type of aggregated discovery.
pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// One served resource as discovery shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResource {
    /// API group ("" = core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource.
    pub resource: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Namespaced?
    pub namespaced: bool,
    /// Verbs.
    pub verbs: Vec<String>,
    /// Short names.
    pub short_names: Vec<String>,
    /// Categories.
    pub categories: Vec<String>,
    /// Subresources (`status`) with their verbs.
    pub subresources: Vec<(String, Vec<String>)>,
    /// `storageVersionHash` of the legacy resource list (kube's hash of the storage version),
    /// when the surface has one.
    pub storage_version_hash: Option<String>,
}

/// Kubernetes version priority: GA over beta over alpha, then the higher numbers.
pub fn priority(v: &str) -> (u8, u32, u32) {
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

/// Group name → versions, preferred first.
pub fn groups(resources: &[ApiResource]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in resources {
        let versions = out.entry(r.group.clone()).or_default();
        if !versions.contains(&r.version) {
            versions.push(r.version.clone());
        }
    }
    for versions in out.values_mut() {
        versions.sort_by_key(|v| std::cmp::Reverse(priority(v)));
    }
    out
}

fn of<'a>(resources: &'a [ApiResource], group: &str, version: &str) -> Vec<&'a ApiResource> {
    resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

fn aggregated_items(resources: &[ApiResource], core: bool) -> Vec<Value> {
    groups(resources)
        .iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let res: Vec<Value> = of(resources, g, v)
                        .iter()
                        .map(|r| {
                            let mut d = json!({
                                "resource": r.resource,
                                "responseKind": {"group": g, "version": v, "kind": r.kind},
                                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": r.singular,
                                "verbs": r.verbs,
                            });
                            if !r.short_names.is_empty() {
                                d["shortNames"] = json!(r.short_names);
                            }
                            if !r.categories.is_empty() {
                                d["categories"] = json!(r.categories);
                            }
                            if !r.subresources.is_empty() {
                                d["subresources"] = r
                                    .subresources
                                    .iter()
                                    .map(|(s, verbs)| json!({"subresource": s, "responseKind": {"group": g, "version": v, "kind": r.kind}, "verbs": verbs}))
                                    .collect();
                            }
                            d
                        })
                        .collect();
                    json!({"version": v, "resources": res, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g}, "versions": vs})
        })
        .collect()
}

fn aggregated(resources: &[ApiResource], core: bool) -> Value {
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": aggregated_items(resources, core)})
}

fn resource_list(resources: &[ApiResource], group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    for r in of(resources, group, version) {
        let mut d = json!({"name": r.resource, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": r.verbs});
        if let Some(h) = &r.storage_version_hash {
            d["storageVersionHash"] = json!(h);
        }
        if !r.short_names.is_empty() {
            d["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            d["categories"] = json!(r.categories);
        }
        list.push(d);
        for (s, verbs) in &r.subresources {
            list.push(json!({"name": format!("{}/{s}", r.resource), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
}

fn respond(doc: &Value, content_type: &'static str) -> Result<Response, Status> {
    let body = serde_json::to_vec(doc).map_err(Status::internal)?;
    let mut r = kube_api::json_response(200, body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(r)
}

/// Aggregated discovery with an ETag (a hash of the document), answered `304 Not Modified`
/// when the client's `If-None-Match` names it: kubectl keeps it in its discovery cache.
fn respond_aggregated(doc: &Value, if_none_match: Option<&str>) -> Result<Response, Status> {
    use sha2::Digest as _;
    let body = serde_json::to_vec(doc).map_err(Status::internal)?;
    let etag = format!("\"{}\"", hex::encode(&sha2::Sha256::digest(&body)[..16]));
    let mut r = if if_none_match == Some(etag.as_str()) {
        let mut r = Response::new(axum::body::Body::empty());
        *r.status_mut() = axum::http::StatusCode::NOT_MODIFIED;
        r
    } else {
        kube_api::json_response(200, body)
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(AGGREGATED));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    Ok(r)
}

/// Answer one discovery request (`tail` is `api`, `api/v1`, `apis`, `apis/<g>` or
/// `apis/<g>/<v>`) from `resources`; `if_none_match` is the request's `If-None-Match`.
pub fn serve(
    resources: &[ApiResource],
    tail: &[String],
    accept: Option<&str>,
    if_none_match: Option<&str>,
) -> Result<Response, Status> {
    let shape: Vec<&str> = tail.iter().map(String::as_str).collect();
    let all = groups(resources);
    match shape.as_slice() {
        ["api"] => match negotiate(accept, Offer::DiscoveryRoot)? {
            Format::AggregatedDiscovery => {
                respond_aggregated(&aggregated(resources, true), if_none_match)
            }
            _ => respond(
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
                "application/json",
            ),
        },
        ["api", "v1"] => respond(&resource_list(resources, "", "v1"), "application/json"),
        ["apis"] => match negotiate(accept, Offer::DiscoveryRoot)? {
            Format::AggregatedDiscovery => {
                respond_aggregated(&aggregated(resources, false), if_none_match)
            }
            _ => {
                let gs: Vec<Value> = all
                    .iter()
                    .filter(|(g, _)| !g.is_empty())
                    .map(|(g, v)| group_doc(g, v))
                    .collect();
                respond(
                    &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs}),
                    "application/json",
                )
            }
        },
        ["apis", g] => match all.get(*g).filter(|_| !g.is_empty()) {
            Some(v) => {
                let mut doc = group_doc(g, v);
                doc["kind"] = json!("APIGroup");
                doc["apiVersion"] = json!("v1");
                respond(&doc, "application/json")
            }
            None => Err(Status::path_not_found()),
        },
        ["apis", g, v] => {
            if g.is_empty() || of(resources, g, v).is_empty() {
                return Err(Status::path_not_found());
            }
            respond(&resource_list(resources, g, v), "application/json")
        }
        _ => Err(Status::path_not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(group: &str, version: &str, resource: &str) -> ApiResource {
        ApiResource {
            group: group.into(),
            version: version.into(),
            resource: resource.into(),
            singular: resource.trim_end_matches('s').into(),
            kind: "Thing".into(),
            namespaced: false,
            verbs: vec!["get".into(), "list".into()],
            short_names: vec![],
            categories: vec![],
            subresources: vec![("status".into(), vec!["get".into()])],
            storage_version_hash: None,
        }
    }

    #[test]
    fn aggregated_discovery_is_not_sent_again_to_a_client_holding_its_etag() {
        let rs = [res("g", "v1", "things")];
        let tail = ["apis".to_string()];
        let first = serve(&rs, &tail, Some(AGGREGATED), None).expect("served");
        assert_eq!(first.status(), 200);
        let etag = first.headers()[header::ETAG]
            .to_str()
            .expect("ascii")
            .to_string();
        let again = serve(&rs, &tail, Some(AGGREGATED), Some(&etag)).expect("served");
        assert_eq!(again.status(), 304);
        let changed = [res("g", "v1", "others")];
        let fresh = serve(&changed, &tail, Some(AGGREGATED), Some(&etag)).expect("served");
        assert_eq!(fresh.status(), 200, "another document has another ETag");
    }

    #[test]
    fn preferred_versions_are_ga_then_beta_then_alpha() {
        let rs = [
            res("g", "v1alpha1", "things"),
            res("g", "v1", "things"),
            res("g", "v2beta1", "things"),
        ];
        assert_eq!(groups(&rs)["g"], ["v1", "v2beta1", "v1alpha1"]);
    }

    #[test]
    fn resource_lists_name_status_subresources_after_their_parent() {
        let doc = resource_list(&[res("g", "v1", "things")], "g", "v1");
        let names: Vec<&str> = doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["things", "things/status"]);
    }

    #[test]
    fn aggregated_discovery_splits_the_core_group_from_named_groups() {
        let rs = [res("", "v1", "secrets"), res("g", "v1", "things")];
        assert_eq!(aggregated_items(&rs, true)[0]["metadata"]["name"], "");
        assert_eq!(aggregated_items(&rs, false).len(), 1);
    }
}
