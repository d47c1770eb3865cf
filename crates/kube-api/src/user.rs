//! Who is asking: the authenticated user a request carries as an extension.
//!
//! The server's authentication layer resolves the user once (a front proxy's request headers,
//! then a client certificate, then a bearer token) and attaches a [`RequestUser`]; handlers read
//! it to authorize.

use std::collections::BTreeMap;

/// An authenticated user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Uid (may be empty).
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes (as kube's `user.Info` extra), e.g. from a front proxy's
    /// `X-Remote-Extra-<key>` headers; empty for client certificates and bearer tokens.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// Members of `system:masters` bypass authorization.
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// The request's user, `None` when anonymous.
#[derive(Debug, Clone, Default)]
pub struct RequestUser(pub Option<UserInfo>);

impl RequestUser {
    /// The authenticated user of a request, or `401 Unauthorized` for anonymous callers.
    pub fn require(extensions: &axum::http::Extensions) -> Result<UserInfo, super::Status> {
        extensions
            .get::<RequestUser>()
            .and_then(|u| u.0.clone())
            .ok_or_else(super::Status::unauthorized)
    }

    /// [`RequestUser::require`], taking the user out of the request instead of cloning it (for
    /// a handler that is the request's last reader).
    pub fn take(extensions: &mut axum::http::Extensions) -> Result<UserInfo, super::Status> {
        extensions
            .remove::<RequestUser>()
            .and_then(|u| u.0)
            .ok_or_else(super::Status::unauthorized)
    }
}
