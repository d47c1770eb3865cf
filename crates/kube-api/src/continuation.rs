//! Paged lists as kube-apiserver pages them: the `continue` token (base64url of
//! `{"v":"meta.k8s.io/v1","rv":<snapshot revision>,"start":<key after which to go on>}`) and
//! the `410 Expired` Statuses a list or watch answers when its revision left the history.
//! Every surface encodes and decodes tokens here, so a token of one is read alike by all.

use crate::Status;
use base64::Engine;

const TOKEN_VERSION: &str = "meta.k8s.io/v1";

#[derive(serde::Serialize, serde::Deserialize)]
struct Token {
    v: String,
    rv: u64,
    start: String,
}

/// A token that resumes a list at snapshot `rv` after the key whose parts are `start`.
pub fn encode(rv: u64, start: &[&str]) -> String {
    let t = Token {
        v: TOKEN_VERSION.into(),
        rv,
        start: start.join("\u{0}"),
    };
    // invariant: a struct of strings and integers serializes.
    let json = serde_json::to_vec(&t).expect("invariant: token serializes");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// The snapshot revision and the `n` key parts of a token; 400 when it is not one of ours.
pub fn decode(token: &str, n: usize) -> Result<(u64, Vec<String>), Status> {
    let bad =
        |e: &dyn std::fmt::Display| Status::bad_request(format!("continue key is not valid: {e}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|e| bad(&e))?;
    let t: Token = serde_json::from_slice(&raw).map_err(|e| bad(&e))?;
    let parts: Vec<String> = t.start.split('\u{0}').map(str::to_string).collect();
    if parts.len() != n {
        return Err(bad(&"malformed start key"));
    }
    Ok((t.rv, parts))
}

/// 410: a `continue` token whose snapshot left the history.
pub fn expired_continue() -> Status {
    Status::expired(
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
    )
}

/// 410: a list at an exact resourceVersion that left the history.
pub fn expired_list() -> Status {
    Status::expired("The resourceVersion for the provided list is too old.")
}

/// 410: a watch from a resourceVersion older than the history (`oldest` is the oldest revision
/// still retained minus one).
pub fn too_old(requested: u64, oldest: u64) -> Status {
    Status::expired(format!("too old resource version: {requested} ({oldest})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_comes_back_as_its_revision_and_key() {
        let t = encode(42, &["ns", "name", "cluster"]);
        assert_eq!(
            decode(&t, 3).expect("valid"),
            (42, vec!["ns".into(), "name".into(), "cluster".into()])
        );
    }

    #[test]
    fn a_foreign_or_mangled_token_is_a_bad_request() {
        assert_eq!(decode("%%%", 3).expect_err("invalid").code, 400);
        let t = encode(1, &["a", "b"]);
        assert_eq!(decode(&t, 3).expect_err("wrong shape").code, 400);
    }
}
