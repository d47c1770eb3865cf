//! Endpoints of APIExport and cached-resource endpoint slices, and which URL a shard uses
//! (`kcp-head.md` §3.1–3.2).
//!
//! On kcp main, `APIExportEndpoint` and `ClusterCachedResourceEndpoint` are one `Endpoint` type:
//! a `url` and an optional `shards` selector (`matchAll`, or a label `selector` over Shard
//! labels; not both). [`endpoints_of`] reads `status.endpoints` from any slice's JSON and
//! [`pick_url`] chooses the URL for one shard: among the endpoints that state `shards`, the one
//! most specific match; when none states it, v0.30's rule (the one URL under the shard's own
//! virtual workspace URL).

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Why no URL could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The object has no `status.endpoints`.
    #[error("no endpoints")]
    NoEndpoints,
    /// An entry of `status.endpoints` is not an endpoint.
    #[error("bad object: {0}")]
    BadObject(String),
    /// An endpoint sets both `shards.matchAll` and `shards.selector`.
    #[error("endpoint {0}: matchAll and selector are mutually exclusive")]
    BothSet(String),
    /// Endpoints state `shards`, but none selects this shard.
    #[error("none of the endpoints {urls} select a shard labelled {labels}")]
    NoneSelects {
        /// The candidate URLs, as `[u1 u2]`.
        urls: String,
        /// The shard's labels, as `map[k:v]`.
        labels: String,
    },
    /// Several endpoints select this shard equally well.
    #[error("{count} endpoints select a shard labelled {labels} equally well, out of {urls}")]
    Tie {
        /// How many tie.
        count: usize,
        /// The shard's labels.
        labels: String,
        /// The candidate URLs.
        urls: String,
    },
    /// No endpoint states `shards`, and not exactly one URL is under the shard's VW URL.
    #[error(
        "{count} of the endpoints {urls} are under this shard's virtual workspace URL {shard_url:?}, want exactly one (or set shards.matchAll or shards.selector on the endpoints)"
    )]
    NotOneOfThisShard {
        /// How many are.
        count: usize,
        /// Every URL.
        urls: String,
        /// The shard's virtual workspace URL.
        shard_url: String,
    },
}

/// One endpoint (`core.kcp.io` `Endpoint` on main; `url` alone before).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Endpoint {
    /// The URL.
    pub url: String,
    /// Which shards use it (absent or zero: not stated).
    pub shards: Option<EndpointSelector>,
}

/// `Endpoint.shards`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointSelector {
    /// This URL serves every shard.
    pub match_all: bool,
    /// A selector over Shard labels.
    pub selector: Option<ShardSelector>,
}

impl EndpointSelector {
    fn is_stated(&self) -> bool {
        self.match_all || self.selector.is_some()
    }
}

/// A `metav1.LabelSelector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ShardSelector {
    /// `matchLabels`.
    pub match_labels: BTreeMap<String, String>,
    /// `matchExpressions`.
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values of `In` and `NotIn`.
    pub values: Vec<String>,
}

impl ShardSelector {
    /// Whether `labels` satisfy every term (an unknown operator matches nothing).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => value.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }

    fn specificity(&self) -> usize {
        self.match_labels.len() + self.match_expressions.len()
    }
}

/// `status.endpoints` of an APIExportEndpointSlice or a (Cluster)CachedResourceEndpointSlice.
pub fn endpoints_of(object: &Value) -> Result<Vec<Endpoint>, EndpointError> {
    let Some(list) = object.pointer("/status/endpoints") else {
        return Err(EndpointError::NoEndpoints);
    };
    let Some(items) = list.as_array() else {
        return Err(EndpointError::BadObject(
            "status.endpoints is not a list".into(),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            Endpoint::deserialize(item)
                .map_err(|e| EndpointError::BadObject(format!("status.endpoints[{i}]: {e}")))
        })
        .collect()
}

/// The first endpoint that violates the CEL rule on `shards` (`matchAll` and `selector` are
/// mutually exclusive): its index and URL.
pub fn both_set(endpoints: &[Endpoint]) -> Option<(usize, &str)> {
    endpoints.iter().enumerate().find_map(|(i, e)| {
        e.shards
            .as_ref()
            .filter(|s| s.match_all && s.selector.is_some())
            .map(|_| (i, e.url.as_str()))
    })
}

/// The URL a shard labelled `shard_labels`, whose virtual workspace URL is `shard_vw_url`, uses
/// (§3.2 `PickURL`).
pub fn pick_url(
    endpoints: &[Endpoint],
    shard_labels: &BTreeMap<String, String>,
    shard_vw_url: &str,
) -> Result<String, EndpointError> {
    let stated: Vec<(&Endpoint, &EndpointSelector)> = endpoints
        .iter()
        .filter_map(|e| e.shards.as_ref().filter(|s| s.is_stated()).map(|s| (e, s)))
        .collect();
    if stated.is_empty() {
        let mine: Vec<&Endpoint> = endpoints
            .iter()
            .filter(|e| e.url.starts_with(shard_vw_url))
            .collect();
        return match mine.as_slice() {
            [one] => Ok(one.url.clone()),
            _ => Err(EndpointError::NotOneOfThisShard {
                count: mine.len(),
                urls: go_list(endpoints.iter().map(|e| e.url.as_str())),
                shard_url: shard_vw_url.to_string(),
            }),
        };
    }
    let mut best: Option<usize> = None;
    let mut winners: Vec<&Endpoint> = Vec::new();
    for (endpoint, shards) in &stated {
        let specificity = match (&shards.selector, shards.match_all) {
            (Some(_), true) => return Err(EndpointError::BothSet(endpoint.url.clone())),
            (None, true) => 0,
            (Some(selector), false) if selector.matches(shard_labels) => selector.specificity(),
            _ => continue,
        };
        match best {
            Some(b) if b > specificity => {}
            Some(b) if b == specificity => winners.push(endpoint),
            _ => {
                best = Some(specificity);
                winners = vec![endpoint];
            }
        }
    }
    let urls = || go_list(stated.iter().map(|(e, _)| e.url.as_str()));
    let labels = || {
        let pairs: Vec<String> = shard_labels
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        format!("map[{}]", pairs.join(" "))
    };
    match winners.as_slice() {
        [one] => Ok(one.url.clone()),
        [] => Err(EndpointError::NoneSelects {
            urls: urls(),
            labels: labels(),
        }),
        several => Err(EndpointError::Tie {
            count: several.len(),
            labels: labels(),
            urls: urls(),
        }),
    }
}

fn go_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn endpoints(status: Value) -> Vec<Endpoint> {
        endpoints_of(&json!({ "status": status })).unwrap()
    }

    #[test]
    fn without_shards_the_one_url_under_the_shards_own_vw_url_is_chosen() {
        let e = endpoints(json!({"endpoints": [
            {"url": "https://a:6443/services/replication/c/s"},
            {"url": "https://b:6443/services/replication/c/s"}
        ]}));
        assert_eq!(
            pick_url(&e, &labels(&[]), "https://b:6443").unwrap(),
            "https://b:6443/services/replication/c/s"
        );
        let err = pick_url(&e, &labels(&[]), "https://c:6443").unwrap_err();
        assert!(err.to_string().contains("shards.matchAll"), "{err}");
        let twice = endpoints(json!({"endpoints": [
            {"url": "https://a:6443/x"}, {"url": "https://a:6443/y"}
        ]}));
        assert!(matches!(
            pick_url(&twice, &labels(&[]), "https://a:6443"),
            Err(EndpointError::NotOneOfThisShard { count: 2, .. })
        ));
    }

    #[test]
    fn the_most_specific_selecting_endpoint_wins_over_match_all() {
        let e = endpoints(json!({"endpoints": [
            {"url": "https://all", "shards": {"matchAll": true}},
            {"url": "https://region", "shards": {"selector": {"matchLabels": {"region": "eu"}}}},
            {"url": "https://exact", "shards": {"selector": {
                "matchLabels": {"region": "eu"},
                "matchExpressions": [{"key": "name", "operator": "In", "values": ["shard-a"]}]}}},
            {"url": "https://legacy"}
        ]}));
        let pick = |l: &[(&str, &str)]| pick_url(&e, &labels(l), "https://legacy").unwrap();
        assert_eq!(
            pick(&[("name", "shard-a"), ("region", "eu")]),
            "https://exact"
        );
        assert_eq!(
            pick(&[("name", "shard-b"), ("region", "eu")]),
            "https://region"
        );
        // Endpoints without `shards` are not candidates once any endpoint states it.
        assert_eq!(pick(&[("name", "shard-c")]), "https://all");
    }

    #[test]
    fn no_selecting_endpoint_or_a_tie_is_an_error_naming_urls_and_labels() {
        let none = endpoints(json!({"endpoints": [
            {"url": "https://eu", "shards": {"selector": {"matchLabels": {"region": "eu"}}}}
        ]}));
        assert_eq!(
            pick_url(&none, &labels(&[("name", "s")]), "")
                .unwrap_err()
                .to_string(),
            "none of the endpoints [https://eu] select a shard labelled map[name:s]"
        );
        let tie = endpoints(json!({"endpoints": [
            {"url": "https://x", "shards": {"matchAll": true}},
            {"url": "https://y", "shards": {"matchAll": true}}
        ]}));
        assert_eq!(
            pick_url(&tie, &labels(&[("name", "s")]), "")
                .unwrap_err()
                .to_string(),
            "2 endpoints select a shard labelled map[name:s] equally well, out of [https://x https://y]"
        );
    }

    #[test]
    fn match_all_together_with_a_selector_is_refused() {
        let both = endpoints(json!({"endpoints": [
            {"url": "https://x", "shards": {"matchAll": true, "selector": {}}}
        ]}));
        assert_eq!(
            pick_url(&both, &labels(&[]), ""),
            Err(EndpointError::BothSet("https://x".into()))
        );
    }

    #[test]
    fn a_zero_shards_value_counts_as_not_stated() {
        let e = endpoints(json!({"endpoints": [
            {"url": "https://a/x", "shards": {}},
            {"url": "https://b/x", "shards": {"matchAll": false}}
        ]}));
        assert_eq!(
            pick_url(&e, &labels(&[]), "https://b").unwrap(),
            "https://b/x"
        );
    }

    #[test]
    fn missing_or_misshapen_endpoints_are_errors() {
        assert_eq!(endpoints_of(&json!({})), Err(EndpointError::NoEndpoints));
        assert_eq!(
            endpoints_of(&json!({"status": {}})),
            Err(EndpointError::NoEndpoints)
        );
        assert!(matches!(
            endpoints_of(&json!({"status": {"endpoints": [{"url": 3}]}})),
            Err(EndpointError::BadObject(_))
        ));
    }

    #[test]
    fn selector_operators_follow_kubernetes() {
        let sel = |op: &str, values: &[&str]| ShardSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![SelectorRequirement {
                key: "tier".into(),
                operator: op.into(),
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        };
        let gold = labels(&[("tier", "gold")]);
        let none = labels(&[]);
        assert!(sel("In", &["gold", "x"]).matches(&gold));
        assert!(!sel("In", &["gold"]).matches(&none));
        assert!(!sel("NotIn", &["gold"]).matches(&gold));
        assert!(sel("NotIn", &["gold"]).matches(&none));
        assert!(sel("Exists", &[]).matches(&gold) && !sel("Exists", &[]).matches(&none));
        assert!(
            !sel("DoesNotExist", &[]).matches(&gold) && sel("DoesNotExist", &[]).matches(&none)
        );
        assert!(!sel("Gt", &["1"]).matches(&gold));
    }
}
