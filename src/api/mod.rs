//! Kubernetes API machinery shared by every server surface: Status errors, selectors, list and
//! watch options, content negotiation, watch framing and small JSON helpers.

pub mod encoding;
pub mod negotiate;
pub mod params;
pub mod patch;
pub mod protobuf;
pub mod selector;
pub mod status;
pub mod user;
pub mod watch;

pub use status::Status;

/// A JSON response with the given status code.
pub fn json_response(code: u16, body: impl Into<axum::body::Body>) -> axum::response::Response {
    let mut r = axum::response::Response::new(body.into());
    *r.status_mut() = axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::OK);
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Current time as an RFC 3339 UTC timestamp with second precision (`2026-03-02T10:00:05Z`).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    now.format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// A JSON object's `metadata.labels` as a map (empty when absent or malformed).
pub fn labels_of(obj: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(|l| l.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}
