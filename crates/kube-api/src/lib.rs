//! Kubernetes API machinery shared by every server surface: Status errors, selectors, list and
//! watch options, content negotiation, watch framing and small JSON helpers.

#![forbid(unsafe_code)]

pub mod continuation;
pub mod negotiate;
pub mod params;
pub mod patch;
pub mod protobuf;
pub mod rbac;
pub mod request;
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

/// An object's `metadata` map, created when absent or malformed.
pub fn metadata_mut(
    obj: &mut serde_json::Map<String, serde_json::Value>,
) -> &mut serde_json::Map<String, serde_json::Value> {
    child_map(obj, "metadata")
}

/// The map under `key`, created (or replaced) when absent or not an object.
pub fn child_map<'a>(
    obj: &'a mut serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> &'a mut serde_json::Map<String, serde_json::Value> {
    let v = obj
        .entry(key)
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    if !v.is_object() {
        *v = serde_json::Value::Object(serde_json::Map::new());
    }
    match v {
        serde_json::Value::Object(m) => m,
        // invariant: replaced by an object just above.
        _ => unreachable!("invariant: the child is an object"),
    }
}

/// The name of an object being created: `metadata.name`, or `generateName` plus a random
/// suffix (written back into `metadata.name`); `None` when there is neither.
pub fn name_or_generate(md: &mut serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let name = md
        .get("name")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    if !name.is_empty() {
        return Some(name.to_string());
    }
    let prefix = md
        .get("generateName")
        .and_then(serde_json::Value::as_str)
        .filter(|p| !p.is_empty())?;
    let name = format!("{prefix}{}", random_suffix());
    md.insert("name".into(), serde_json::Value::String(name.clone()));
    Some(name)
}

/// A `generateName` suffix: five characters of kube's alphabet (no vowels, no look-alikes).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| char::from(ALPHABET[rand::random::<u32>() as usize % ALPHABET.len()]))
        .collect()
}

/// The `/version` document every surface answers (kube 1.34 compatible).
pub fn version_document() -> bytes::Bytes {
    let doc = serde_json::json!({
        "major": "1", "minor": "34",
        "gitVersion": format!("v1.34.0-replication-vw.{}", env!("CARGO_PKG_VERSION").replace('.', "-")),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a", "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    });
    bytes::Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
}
