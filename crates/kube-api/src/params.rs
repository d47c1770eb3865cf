//! Query parameters of list, get and watch requests, parsed and validated as kube-apiserver does.
//!
//! Owns the tolerant query-string parsing every client needs (`?&` from kube-rs, `+` as space,
//! `watch=1|true|` as true) and the `ListOptions` validation rules that answer 422 `Invalid`.

use super::selector::{FieldSelector, LabelSelector};
use super::status::Status;
use std::borrow::Cow;

/// `resourceVersionMatch` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RvMatch {
    /// `NotOlderThan`.
    NotOlderThan,
    /// `Exact`.
    Exact,
}

/// Parsed list/watch options of one request.
#[derive(Debug, Clone)]
pub struct ListOptions {
    /// `labelSelector`.
    pub label_selector: LabelSelector,
    /// `fieldSelector`.
    pub field_selector: FieldSelector,
    /// `resourceVersion` (absent and empty are the same).
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<RvMatch>,
    /// `limit` (0 or absent = no limit).
    pub limit: Option<u64>,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `watch`.
    pub watch: bool,
    /// `allowWatchBookmarks`.
    pub allow_watch_bookmarks: bool,
    /// `sendInitialEvents` (None when absent).
    pub send_initial_events: Option<bool>,
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<u64>,
}

/// Split a raw query string into decoded `(key, value)` pairs, skipping empty pairs.
pub fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    let Some(raw) = raw else { return Vec::new() };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    if !s.contains(['+', '%']) {
        return s.to_string();
    }
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// A request path with percent-escapes decoded, as Go's HTTP server hands it to handlers
/// (clients send `clusters/%2A` for `clusters/*`). Borrowed when there is nothing to decode.
pub fn decoded_path(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    percent_encoding::percent_decode_str(path).decode_utf8_lossy()
}

/// Kubernetes boolean query semantics: true unless the value is `0` or `false`.
pub fn truthy(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false"))
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn invalid(errors: Vec<String>) -> Status {
    let body = if errors.len() == 1 {
        errors[0].clone()
    } else {
        format!("[{}]", errors.join(", "))
    };
    Status::invalid(format!("ListOptions.meta.k8s.io \"\" is invalid: {body}"))
}

impl ListOptions {
    /// Parse and validate the options of a request whose path is a collection or (for a
    /// named watch) an object; `watch_path` is true for the legacy `/watch/` path form.
    pub fn from_query(raw: Option<&str>, watch_path: bool) -> Result<Self, Status> {
        Self::from_pairs(&parse_query(raw), watch_path)
    }

    /// [`ListOptions::from_query`] over a query already decoded into pairs (a
    /// [`crate::request::RequestInfo`]'s).
    pub fn from_pairs(pairs: &[(String, String)], watch_path: bool) -> Result<Self, Status> {
        let get = |k: &str| first(pairs, k);
        let label_selector = match get("labelSelector") {
            Some(s) => LabelSelector::parse(s).map_err(|e| Status::bad_request(e.to_string()))?,
            None => LabelSelector::everything(),
        };
        let field_selector = match get("fieldSelector") {
            Some(s) => FieldSelector::parse(s).map_err(|e| Status::bad_request(e.to_string()))?,
            None => FieldSelector::everything(),
        };
        let resource_version = get("resourceVersion")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let mut errors = Vec::new();
        let resource_version_match = match get("resourceVersionMatch").filter(|s| !s.is_empty()) {
            None => None,
            Some("NotOlderThan") => Some(RvMatch::NotOlderThan),
            Some("Exact") => Some(RvMatch::Exact),
            Some(other) => {
                errors.push(format!(
                    "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
                ));
                None
            }
        };
        let limit = match get("limit").filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if n > 0 => Some(n as u64),
                Ok(_) => None,
                Err(_) => {
                    return Err(Status::bad_request(format!(
                        "invalid value for limit: \"{s}\""
                    )));
                }
            },
        };
        let continue_token = get("continue")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let watch = watch_path || get("watch").is_some_and(truthy);
        let allow_watch_bookmarks = get("allowWatchBookmarks").is_some_and(truthy);
        let send_initial_events = get("sendInitialEvents").map(truthy);
        let timeout_seconds = match get("timeoutSeconds").filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(s.parse::<u64>().map_err(|_| {
                Status::bad_request(format!("invalid value for timeoutSeconds: \"{s}\""))
            })?),
        };
        let opts = ListOptions {
            label_selector,
            field_selector,
            resource_version,
            resource_version_match,
            limit,
            continue_token,
            watch,
            allow_watch_bookmarks,
            send_initial_events,
            timeout_seconds,
        };
        opts.validate(errors)
    }

    fn validate(self, mut errors: Vec<String>) -> Result<Self, Status> {
        let rv = self.resource_version.as_deref();
        if self.watch {
            if self.send_initial_events.is_some()
                && self.resource_version_match != Some(RvMatch::NotOlderThan)
            {
                errors.push(
                    "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
                        .to_string(),
                );
            }
            if let Some(m) = self.resource_version_match {
                if self.send_initial_events.is_none() {
                    errors.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided".to_string());
                }
                if m != RvMatch::NotOlderThan {
                    errors.push("resourceVersionMatch: Unsupported value: \"Exact\": supported values: \"NotOlderThan\"".to_string());
                }
                if self.continue_token.is_some() {
                    errors.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided".to_string());
                }
            }
        } else {
            if let Some(m) = self.resource_version_match {
                if rv.is_none() {
                    errors.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided".to_string());
                }
                if self.continue_token.is_some() {
                    errors.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided".to_string());
                }
                if m == RvMatch::Exact && rv == Some("0") {
                    errors.push("resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"".to_string());
                }
            }
            if self.send_initial_events.is_some() {
                errors.push(
                    "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"
                        .to_string(),
                );
            }
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(invalid(errors))
        }
    }

    /// The request's resourceVersion as a store revision: `None` for unset or `0`.
    pub fn revision(&self) -> Result<Option<u64>, Status> {
        parse_revision(self.resource_version.as_deref())
    }
}

/// Field selectors a resource supports: `metadata.name`, and `metadata.namespace` when
/// namespaced; anything else is kube's 400 `field label not supported`.
pub fn check_fields(fs: &FieldSelector, namespaced: bool) -> Result<(), Status> {
    check_fields_with(fs, namespaced, &[])
}

/// [`check_fields`] that also accepts a schema's selectable fields.
pub fn check_fields_with(
    fs: &FieldSelector,
    namespaced: bool,
    selectable: &[String],
) -> Result<(), Status> {
    for f in fs.fields() {
        if !(f == "metadata.name"
            || (f == "metadata.namespace" && namespaced)
            || selectable.iter().any(|s| s == f))
        {
            return Err(Status::bad_request(format!(
                "field label not supported: {f}"
            )));
        }
    }
    Ok(())
}

/// A named watch (`/<resource>/<name>?watch`) as kube treats it: the name becomes a
/// `metadata.name` field requirement, and a conflicting one is a 400.
pub fn name_selector(fs: &FieldSelector, name: &str) -> Result<FieldSelector, Status> {
    if let Some(n) = fs.exact_value("metadata.name")
        && n != name
    {
        return Err(Status::bad_request(
            "fieldSelector metadata.name doesn't match requested name",
        ));
    }
    let escaped = name
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=");
    let s = if fs.is_everything() {
        format!("metadata.name={escaped}")
    } else {
        format!("metadata.name={escaped},{fs}")
    };
    FieldSelector::parse(&s).map_err(|e| Status::bad_request(e.to_string()))
}

/// Parse a resourceVersion string into a revision (`None` for unset, empty or `0`).
pub fn parse_revision(rv: Option<&str>) -> Result<Option<u64>, Status> {
    match rv {
        None | Some("") | Some("0") => Ok(None),
        Some(s) => s
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Status::bad_request(format!("invalid resource version \"{s}\""))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_rs_leading_ampersand_and_plus_spaces_are_understood() {
        let o = ListOptions::from_query(
            Some("&labelSelector=tier+in+%28small%2Clarge%29&limit=500"),
            false,
        )
        .unwrap();
        assert_eq!(o.limit, Some(500));
        assert!(!o.label_selector.is_everything());
    }

    #[test]
    fn watch_flag_is_true_for_one_true_and_empty_values() {
        for q in ["watch=1", "watch=true", "watch="] {
            assert!(
                ListOptions::from_query(Some(q), false).unwrap().watch,
                "{q}"
            );
        }
        for q in ["watch=0", "watch=false"] {
            assert!(
                !ListOptions::from_query(Some(q), false).unwrap().watch,
                "{q}"
            );
        }
    }

    #[test]
    fn send_initial_events_without_not_older_than_is_invalid() {
        let e =
            ListOptions::from_query(Some("watch=true&sendInitialEvents=true"), false).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message
                .contains("sendInitialEvents requires setting resourceVersionMatch")
        );
    }

    #[test]
    fn client_go_watch_list_request_is_accepted() {
        let o = ListOptions::from_query(
            Some("allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeoutSeconds=300&watch=true"),
            false,
        )
        .unwrap();
        assert_eq!(o.send_initial_events, Some(true));
        assert_eq!(o.timeout_seconds, Some(300));
    }

    #[test]
    fn send_initial_events_on_a_list_is_invalid() {
        let e = ListOptions::from_query(Some("sendInitialEvents=true"), false).unwrap_err();
        assert!(
            e.message
                .contains("sendInitialEvents is forbidden for list")
        );
    }

    #[test]
    fn a_bad_label_selector_is_a_bad_request() {
        let e = ListOptions::from_query(Some("labelSelector=a+b"), false).unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn a_named_watch_adds_a_name_requirement_and_rejects_a_conflicting_one() {
        let fs = name_selector(&FieldSelector::everything(), "a,b").unwrap();
        assert_eq!(fs.exact_value("metadata.name"), Some("a,b"));
        let other = FieldSelector::parse("metadata.name=c").unwrap();
        assert_eq!(name_selector(&other, "a").unwrap_err().code, 400);
    }

    #[test]
    fn unsupported_field_selectors_are_refused_like_kube() {
        let fs = FieldSelector::parse("spec.cores=2").unwrap();
        assert_eq!(
            check_fields(&fs, false).unwrap_err().message,
            "field label not supported: spec.cores"
        );
        let ns = FieldSelector::parse("metadata.namespace=x").unwrap();
        assert!(check_fields(&ns, false).is_err());
        assert!(check_fields(&ns, true).is_ok());
    }

    #[test]
    fn a_non_numeric_resource_version_is_a_bad_request() {
        assert_eq!(parse_revision(Some("abc")).unwrap_err().code, 400);
        assert_eq!(parse_revision(Some("0")).unwrap(), None);
        assert_eq!(parse_revision(Some("42")).unwrap(), Some(42));
    }
}
