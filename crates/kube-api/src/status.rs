//! `metav1.Status`: the one error shape every handler answers with.
//!
//! Every failure that leaves the server is a [`Status`] with the HTTP code, the machine-readable
//! `reason` clients branch on (`NotFound`, `Forbidden`, `Expired`, ...) and a message worded as
//! kube-apiserver words it. Module errors convert into a `Status` at the HTTP edge.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// `details` of a Status: which object the failure is about.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StatusDetails {
    /// Object name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// API group.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Kubernetes puts the resource (plural) here.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Field-level causes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

/// One cause of a failure.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusCause {
    /// Cause type, e.g. `FieldValueInvalid`.
    pub reason: String,
    /// Human message.
    pub message: String,
    /// Field path.
    pub field: String,
}

/// A `metav1.Status` failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// HTTP code, also written as `code`.
    pub code: u16,
    /// `reason`; empty for bare Status objects (kcp's namespace errors).
    pub reason: &'static str,
    /// `message`.
    pub message: String,
    /// `details`, omitted when empty.
    pub details: Option<Box<StatusDetails>>,
}

#[derive(Serialize)]
struct Wire<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a StatusDetails>,
    code: u16,
}

#[derive(Serialize)]
struct Empty {}

impl Status {
    /// A Status with the given code, reason and message.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Status {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// Attach details naming the object.
    pub fn with_details(mut self, name: &str, group: &str, resource: &str) -> Self {
        self.details = Some(Box::new(StatusDetails {
            name: name.to_string(),
            group: group.to_string(),
            kind: resource.to_string(),
            causes: Vec::new(),
        }));
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Status::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Status::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden with a preformatted message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Status::new(403, "Forbidden", message)
    }

    /// 404 NotFound for a named object: `<resource>.<group> "<name>" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Status::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", qualified(group, resource), name),
        )
        .with_details(name, group, resource)
    }

    /// 404 for a path nothing serves: `the server could not find the requested resource`.
    pub fn path_not_found() -> Self {
        Status::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 405 MethodNotAllowed: `<verb> is not supported on resources of kind "<res>.<group>"`.
    pub fn method_not_allowed(verb: &str, group: &str, resource: &str) -> Self {
        Status::new(
            405,
            "MethodNotAllowed",
            format!(
                "{verb} is not supported on resources of kind \"{}\"",
                qualified(group, resource)
            ),
        )
        .with_details("", group, resource)
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Status::new(406, "NotAcceptable", message)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Status::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", qualified(group, resource), name),
        )
        .with_details(name, group, resource)
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(group: &str, resource: &str, name: &str) -> Self {
        Status::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(group, resource),
                name
            ),
        )
        .with_details(name, group, resource)
    }

    /// 410 Expired: the resourceVersion is older than the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Status::new(410, "Expired", message)
    }

    /// 422 Invalid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Status::new(422, "Invalid", message)
    }

    /// 413 RequestEntityTooLarge, worded as kube-apiserver words it:
    /// `Request entity too large: limit is <bytes>`.
    pub fn request_entity_too_large(limit: u64) -> Self {
        Status::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// A Status for an HTTP error code that no handler worded (an error answered by a tower
    /// layer): the reason clients branch on for that code, and `message`, or when it is empty
    /// the message kube's clients show for such a code.
    pub fn for_code(code: u16, message: &str) -> Self {
        let message = message.trim();
        let message = if message.is_empty() {
            default_message(code)
        } else {
            message.to_string()
        };
        Status::new(code, reason_for_code(code), message)
    }

    /// 500 InternalError: `Internal error occurred: <err>`.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        Status::new(
            500,
            "InternalError",
            format!("Internal error occurred: {err}"),
        )
    }

    /// The Status as JSON bytes (used as a response body and inside ERROR watch events).
    pub fn to_json(&self) -> Vec<u8> {
        let wire = Wire {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message: &self.message,
            reason: self.reason,
            details: self.details.as_deref(),
            code: self.code,
        };
        // invariant: a struct of strings and integers always serializes.
        serde_json::to_vec(&wire).expect("invariant: Status serializes")
    }
}

/// The `reason` kube-apiserver gives an error with this HTTP code; empty (`Unknown`) for codes
/// without one.
pub fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        408 | 504 => "Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "",
    }
}

/// What client-go says about an error code when the server gave no words of its own.
fn default_message(code: u16) -> String {
    match code {
        404 => "the server could not find the requested resource".into(),
        408 | 504 => "the server was unable to return a response in the time allotted, but may still be processing the request".into(),
        413 => "Request entity too large".into(),
        429 => "Too many requests, please try again later.".into(),
        500 => "an error on the server has prevented the request from succeeding".into(),
        503 => "the server is currently unable to handle the request".into(),
        other => StatusCode::from_u16(other)
            .ok()
            .and_then(|c| c.canonical_reason())
            .map_or_else(|| format!("the server answered {other}"), str::to_string),
    }
}

/// `<resource>.<group>`, or just `<resource>` for the core group.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl IntoResponse for Status {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (code, self.to_json()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // A client may retry a 503 or 429 after a second (kube sends the same header).
        if matches!(self.code, 429 | 503) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_status_reads_like_kube_apiserver() {
        let s = Status::not_found("cloud.example.com", "cpuflavors", "nope");
        let v: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NotFound");
        assert_eq!(v["code"], 404);
        assert_eq!(
            v["message"],
            "cpuflavors.cloud.example.com \"nope\" not found"
        );
        assert_eq!(v["details"]["kind"], "cpuflavors");
    }

    #[test]
    fn a_layers_error_code_gets_kubes_reason_and_a_message() {
        let s = Status::for_code(504, "");
        assert_eq!((s.code, s.reason), (504, "Timeout"));
        assert!(
            s.message
                .starts_with("the server was unable to return a response")
        );
        let s = Status::for_code(503, "  overloaded\n");
        assert_eq!(
            (s.reason, s.message.as_str()),
            ("ServiceUnavailable", "overloaded")
        );
        assert_eq!(
            Status::request_entity_too_large(3 << 20).message,
            "Request entity too large: limit is 3145728"
        );
    }

    #[test]
    fn bare_status_without_reason_omits_the_reason_field() {
        let s = Status::new(400, "", "there should be a Namespace context");
        let v: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
        assert!(v.get("reason").is_none());
        assert_eq!(v["code"], 400);
    }
}
