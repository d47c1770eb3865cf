//! Request authentication: who is calling. Owns the user record handed to authorization, the
//! kube-apiserver-style static token file (`--token-auth-file` CSV), the front proxy's request
//! headers (`X-Remote-User`, `X-Remote-Group`, `X-Remote-Extra-<key>`, as kube-apiserver's
//! request-header authenticator), and the resolution order for a request: a front proxy's headers
//! first (only on a connection whose client certificate [`crate::tls`] recognised as an
//! allowed front proxy), then a verified client certificate, then a bearer token, otherwise
//! anonymous.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// Group every authenticated user belongs to (as in Kubernetes).
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// Superuser group: members bypass authorization (as in Kubernetes).
pub const MASTERS_GROUP: &str = "system:masters";
/// Default front-proxy header naming the user.
pub const DEFAULT_USERNAME_HEADER: &str = "X-Remote-User";
/// Default front-proxy header naming a group (repeatable).
pub const DEFAULT_GROUP_HEADER: &str = "X-Remote-Group";
/// Default prefix of front-proxy headers carrying extra attributes.
pub const DEFAULT_EXTRA_HEADERS_PREFIX: &str = "X-Remote-Extra-";

/// An authenticated caller.
pub use kube_api::user::UserInfo;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// The token file could not be read.
    #[error("reading token file {path}: {source}")]
    Io {
        /// The file that was read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the token file is not valid.
    #[error("token file line {line}: {message}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A bearer token was presented but is not in the token file.
    #[error("invalid bearer token")]
    InvalidBearerToken,
    /// A front-proxy header name (or extra-headers prefix) is not a valid HTTP header name, or
    /// no username header is configured.
    #[error("request header {name:?}: {message}")]
    InvalidHeaderName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Static bearer tokens in kube-apiserver's `--token-auth-file` format: CSV lines
/// `token,user,uid[,"group1,group2"]`. Columns after the fourth are ignored; blank lines and
/// lines whose token is empty are skipped; when a token appears twice the later line wins.
#[derive(Debug, Clone, Default)]
pub struct TokenFile {
    tokens: HashMap<String, UserInfo>,
}

impl TokenFile {
    /// Reads and parses a token file.
    pub fn load(path: &Path) -> Result<Self, AuthnError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthnError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses token file text; a malformed line is an error naming its line number.
    pub fn parse(text: &str) -> Result<Self, AuthnError> {
        let mut tokens = HashMap::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.trim().is_empty() {
                continue;
            }
            let fields =
                split_csv_line(raw).map_err(|message| AuthnError::Malformed { line, message })?;
            if fields.len() < 3 {
                return Err(AuthnError::Malformed {
                    line,
                    message: format!(
                        "must have at least 3 columns (token, user name, user uid), found {}",
                        fields.len()
                    ),
                });
            }
            let mut fields = fields.into_iter();
            let (Some(token), Some(name), Some(uid)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue; // unreachable: length checked above
            };
            if token.is_empty() {
                tracing::warn!(line, "token file: skipping a line with an empty token");
                continue;
            }
            let groups = fields
                .next()
                .map(|g| {
                    g.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let user = UserInfo {
                name,
                uid,
                groups,
                ..UserInfo::default()
            };
            if tokens.insert(token, user).is_some() {
                tracing::warn!(line, "token file: duplicate token, the later line wins");
            }
        }
        Ok(Self { tokens })
    }

    /// The user a token belongs to.
    pub fn lookup(&self, token: &str) -> Option<&UserInfo> {
        self.tokens.get(token)
    }

    /// Number of tokens loaded.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token was loaded.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Splits one CSV record the way Go's `encoding/csv` does with `TrimLeadingSpace`: fields are
/// separated by commas, leading blanks of a field are dropped, a field starting with `"` is quoted
/// (`""` inside is a literal quote) and may contain commas. Records spanning lines are not supported.
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        let mut field = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') if chars.next_if_eq(&'"').is_some() => field.push('"'),
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field".to_owned()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("unexpected {c:?} after a closing quote")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some('"') => return Err("bare \" in an unquoted field".to_owned()),
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

/// The front proxy's request headers, as kube-apiserver's `--requestheader-username-headers`,
/// `--requestheader-group-headers` and `--requestheader-extra-headers-prefix`: the user is the
/// first non-empty value among the username headers (in the order given); the groups are every
/// non-empty value of every group header; each header starting with an extra prefix gives the
/// extra key (the rest of its name, lowercased, then percent-decoded; kept as sent when that
/// fails) all of its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeaders {
    username: Vec<HeaderName>,
    group: Vec<HeaderName>,
    /// Lowercase, as header names are compared.
    extra_prefixes: Vec<String>,
}

impl Default for RequestHeaders {
    /// `X-Remote-User`, `X-Remote-Group`, `X-Remote-Extra-`.
    fn default() -> Self {
        Self {
            username: vec![HeaderName::from_static("x-remote-user")],
            group: vec![HeaderName::from_static("x-remote-group")],
            extra_prefixes: vec!["x-remote-extra-".to_owned()],
        }
    }
}

impl RequestHeaders {
    /// Header names as given on the command line (case-insensitive; blank entries are skipped,
    /// repeats are kept once). At least one username header is required; every name and prefix
    /// must be a valid HTTP header name.
    pub fn new(
        username: &[String],
        group: &[String],
        extra_prefixes: &[String],
    ) -> Result<Self, AuthnError> {
        let username = header_names(username)?;
        if username.is_empty() {
            return Err(AuthnError::InvalidHeaderName {
                name: String::new(),
                message: "at least one username header is required".to_owned(),
            });
        }
        let extra_prefixes = header_names(extra_prefixes)?
            .into_iter()
            .map(|n| n.as_str().to_owned())
            .collect();
        Ok(Self {
            username,
            group: header_names(group)?,
            extra_prefixes,
        })
    }

    /// The user the headers name, `None` when no username header has a non-empty value. The
    /// uid is empty; `system:authenticated` is not added here.
    pub fn user(&self, headers: &HeaderMap) -> Option<UserInfo> {
        let name = self.username.iter().find_map(|h| {
            headers
                .get(h)
                .and_then(header_text)
                .filter(|v| !v.is_empty())
        })?;
        let groups = self
            .group
            .iter()
            .flat_map(|h| headers.get_all(h))
            .filter_map(header_text)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for prefix in &self.extra_prefixes {
            for header in headers.keys() {
                let Some(rest) = header.as_str().strip_prefix(prefix.as_str()) else {
                    continue;
                };
                if rest.is_empty() {
                    continue;
                }
                extra.entry(unescape_extra_key(rest)).or_default().extend(
                    headers
                        .get_all(header)
                        .iter()
                        .filter_map(header_text)
                        .map(str::to_owned),
                );
            }
        }
        Some(UserInfo {
            name: name.to_owned(),
            uid: String::new(),
            groups,
            extra,
        })
    }
}

fn header_names(names: &[String]) -> Result<Vec<HeaderName>, AuthnError> {
    let mut out: Vec<HeaderName> = Vec::new();
    for raw in names {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let name = HeaderName::from_bytes(trimmed.as_bytes()).map_err(|e| {
            AuthnError::InvalidHeaderName {
                name: raw.clone(),
                message: e.to_string(),
            }
        })?;
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// A header value as text; values that are not valid UTF-8 are skipped rather than guessed at.
fn header_text(value: &HeaderValue) -> Option<&str> {
    std::str::from_utf8(value.as_bytes()).ok()
}

/// Percent-decodes an extra key (already lowercase). A malformed escape, or bytes that are not
/// UTF-8 once decoded, keep the key as sent.
fn unescape_extra_key(key: &str) -> String {
    let bytes = key.as_bytes();
    if !bytes.contains(&b'%') {
        return key.to_owned();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = hex else {
                return key.to_owned();
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| key.to_owned())
}

/// Resolves the user of a request.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: Option<TokenFile>,
    /// Set when front proxies are configured; without it the request headers are never read.
    request_headers: Option<RequestHeaders>,
}

impl Authenticator {
    /// An authenticator accepting client certificates and, when given, the file's bearer tokens.
    /// Front-proxy headers are ignored until [`Authenticator::with_front_proxy_headers`] (or
    /// [`Authenticator::with_request_headers`]) configures them.
    pub fn new(tokens: Option<TokenFile>) -> Self {
        Self {
            tokens,
            request_headers: None,
        }
    }

    /// Honours these request headers from front-proxy connections (those the TLS layer marked
    /// in [`PeerIdentity::front_proxy`]); `None` (no request-header CA) changes nothing.
    pub fn with_front_proxy_headers(mut self, headers: Option<RequestHeaders>) -> Self {
        if headers.is_some() {
            self.request_headers = headers;
        }
        self
    }

    /// Honours these request headers on connections whose [`PeerIdentity::front_proxy`] is set.
    pub fn with_request_headers(mut self, headers: RequestHeaders) -> Self {
        self.request_headers = Some(headers);
        self
    }

    /// The request's user, in kube-apiserver's order: on a front-proxy connection the user its
    /// request headers name (when a username header is present and non-empty); then the verified
    /// client certificate; then `Authorization: Bearer <token>` against the token file. `None`
    /// means anonymous (also for an unknown token — use
    /// [`Authenticator::authenticate_or_reject`] to tell those apart). Request headers from any
    /// other caller are ignored. Authenticated users get the group `system:authenticated`
    /// appended once.
    pub fn authenticate(&self, peer: &PeerIdentity, headers: &HeaderMap) -> Option<UserInfo> {
        self.authenticate_or_reject(peer, headers).ok().flatten()
    }

    /// Like [`Authenticator::authenticate`], but a bearer token that was presented and is not
    /// known (or no token file is configured) is [`AuthnError::InvalidBearerToken`], which
    /// kube-apiserver answers with 401 rather than treating the caller as anonymous.
    pub fn authenticate_or_reject(
        &self,
        peer: &PeerIdentity,
        headers: &HeaderMap,
    ) -> Result<Option<UserInfo>, AuthnError> {
        if peer.front_proxy.is_some()
            && let Some(user) = self.request_headers.as_ref().and_then(|h| h.user(headers))
        {
            return Ok(Some(with_authenticated_group(user)));
        }
        if let Some(user) = &peer.user {
            return Ok(Some(with_authenticated_group(user.clone())));
        }
        let Some(token) = bearer_token(headers) else {
            return Ok(None);
        };
        self.tokens
            .as_ref()
            .and_then(|t| t.lookup(token))
            .map(|user| Some(with_authenticated_group(user.clone())))
            .ok_or(AuthnError::InvalidBearerToken)
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme matched case-insensitively);
/// `None` when the header is absent, not valid text, of another scheme, or has an empty token.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let mut parts = value.trim().splitn(2, ' ');
    let scheme = parts.next()?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = parts.next()?.trim();
    (!token.is_empty()).then_some(token)
}

fn with_authenticated_group(mut user: UserInfo) -> UserInfo {
    if !user.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        user.groups.push(AUTHENTICATED_GROUP.to_owned());
    }
    user
}

/// Who the connection's client certificate says the caller is, as a request extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The user of a certificate the client CA accepted: CN = name, all O = groups (in order).
    /// `None` without such a certificate or when its CN is empty.
    pub user: Option<UserInfo>,
    /// The CN of a certificate the request-header CA accepted and whose CN is an allowed
    /// front-proxy name: the request's `X-Remote-*` headers name the user.
    pub front_proxy: Option<String>,
}

impl PeerIdentity {
    /// A caller authenticated as `user` by a client certificate.
    pub fn from_user(user: UserInfo) -> Self {
        Self {
            user: Some(user),
            front_proxy: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers_with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(value).expect("test header"),
        );
        h
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ..UserInfo::default()
        }
    }

    #[test]
    fn quoted_fourth_column_is_split_into_groups() {
        let tf = TokenFile::parse("s3cr3t,alice,u-1,\"team-a,viewers\"\n").expect("parse");
        let alice = tf.lookup("s3cr3t").expect("alice");
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, "u-1");
        assert_eq!(alice.groups, vec!["team-a", "viewers"]);
    }

    #[test]
    fn three_columns_give_a_user_without_groups_and_extra_columns_are_ignored() {
        let tf = TokenFile::parse("t1,bob,u-2\nt2,carol,u-3,admins,ignored\n").expect("parse");
        assert_eq!(tf.lookup("t1").expect("bob").groups, Vec::<String>::new());
        assert_eq!(tf.lookup("t2").expect("carol").groups, vec!["admins"]);
        assert_eq!(tf.len(), 2);
    }

    #[test]
    fn blank_lines_crlf_and_empty_tokens_are_skipped() {
        let tf = TokenFile::parse("\r\n  \nt1,bob,u-2\r\n,nobody,u-0\n\n").expect("parse");
        assert_eq!(tf.len(), 1);
        assert_eq!(tf.lookup("t1").expect("bob").name, "bob");
        assert!(tf.lookup("").is_none());
    }

    #[test]
    fn leading_spaces_are_trimmed_and_doubled_quotes_are_literal() {
        let tf = TokenFile::parse("tok, dave, u-4, \"a\"\"b,c\"").expect("parse");
        let dave = tf.lookup("tok").expect("dave");
        assert_eq!(dave.name, "dave");
        assert_eq!(dave.uid, "u-4");
        assert_eq!(dave.groups, vec!["a\"b", "c"]);
    }

    #[test]
    fn a_line_with_too_few_columns_is_an_error_naming_the_line() {
        let err = TokenFile::parse("t1,bob,u-2\n\nt2,carol\n").expect_err("must fail");
        match err {
            AuthnError::Malformed { line, ref message } => {
                assert_eq!(line, 3);
                assert!(message.contains("found 2"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().starts_with("token file line 3:"));
    }

    #[test]
    fn an_unterminated_quote_is_an_error_naming_the_line() {
        let err = TokenFile::parse("t1,bob,u-2,\"g1,g2\n").expect_err("must fail");
        assert!(
            matches!(err, AuthnError::Malformed { line: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_later_duplicate_token_wins() {
        let tf = TokenFile::parse("t,first,u-1\nt,second,u-2\n").expect("parse");
        assert_eq!(tf.lookup("t").expect("user").name, "second");
    }

    #[test]
    fn loading_a_missing_file_names_the_path() {
        let err = TokenFile::load(Path::new("/nonexistent/tokens.csv")).expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent/tokens.csv"), "{err}");
    }

    #[test]
    fn client_certificate_wins_over_bearer_token_and_gets_authenticated_group() {
        let tf = TokenFile::parse("tok,alice,u-1,viewers").expect("parse");
        let authn = Authenticator::new(Some(tf));
        let peer = PeerIdentity::from_user(user("admin", &["system:masters"]));
        let got = authn
            .authenticate(&peer, &headers_with_auth("Bearer tok"))
            .expect("user");
        assert_eq!(got.name, "admin");
        assert_eq!(got.groups, vec!["system:masters", "system:authenticated"]);
        assert!(got.is_master());
    }

    #[test]
    fn bearer_token_resolves_to_the_token_file_user() {
        let tf = TokenFile::parse("tok,alice,u-1,\"team-a,system:authenticated\"").expect("parse");
        let authn = Authenticator::new(Some(tf));
        let got = authn
            .authenticate(&PeerIdentity::default(), &headers_with_auth("bearer  tok"))
            .expect("user");
        assert_eq!(got.name, "alice");
        assert_eq!(got.uid, "u-1");
        // already present: not appended a second time
        assert_eq!(got.groups, vec!["team-a", "system:authenticated"]);
        assert!(!got.is_master());
    }

    #[test]
    fn no_credentials_is_anonymous() {
        let authn = Authenticator::new(None);
        assert_eq!(
            authn.authenticate(&PeerIdentity::default(), &HeaderMap::new()),
            None
        );
        assert_eq!(
            authn
                .authenticate_or_reject(&PeerIdentity::default(), &headers_with_auth("Basic eA=="))
                .expect("not rejected"),
            None
        );
    }

    #[test]
    fn unknown_bearer_token_is_rejected_not_a_user() {
        let tf = TokenFile::parse("tok,alice,u-1").expect("parse");
        let authn = Authenticator::new(Some(tf));
        let peer = PeerIdentity::default();
        let headers = headers_with_auth("Bearer wrong");
        assert_eq!(authn.authenticate(&peer, &headers), None);
        assert!(matches!(
            authn.authenticate_or_reject(&peer, &headers),
            Err(AuthnError::InvalidBearerToken)
        ));
        let no_file = Authenticator::new(None);
        assert!(matches!(
            no_file.authenticate_or_reject(&peer, &headers_with_auth("Bearer tok")),
            Err(AuthnError::InvalidBearerToken)
        ));
    }

    fn front_proxy_headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
                HeaderValue::from_str(value).expect("test header value"),
            );
        }
        h
    }

    fn front_proxy() -> PeerIdentity {
        PeerIdentity {
            user: None,
            front_proxy: Some("front-proxy".to_owned()),
        }
    }

    fn with_front_proxies(tokens: Option<TokenFile>) -> Authenticator {
        Authenticator::new(tokens).with_request_headers(RequestHeaders::default())
    }

    #[test]
    fn a_front_proxy_certificate_with_x_remote_user_acts_as_that_user() {
        let authn = with_front_proxies(None);
        let headers = front_proxy_headers(&[
            ("X-Remote-User", "alice"),
            ("X-Remote-Group", "team-a"),
            ("X-Remote-Extra-Scopes", "read"),
        ]);
        let got = authn.authenticate(&front_proxy(), &headers).expect("user");
        assert_eq!(got.name, "alice");
        assert_eq!(got.uid, "");
        assert_eq!(got.groups, vec!["team-a", "system:authenticated"]);
        assert_eq!(got.extra["scopes"], vec!["read"]);
    }

    #[test]
    fn x_remote_user_from_a_plain_client_certificate_is_ignored() {
        let authn = with_front_proxies(None);
        let peer = PeerIdentity::from_user(user("bob", &["team-b"]));
        let headers = front_proxy_headers(&[
            ("X-Remote-User", "alice"),
            ("X-Remote-Group", "system:masters"),
        ]);
        let got = authn.authenticate(&peer, &headers).expect("user");
        assert_eq!(got.name, "bob");
        assert_eq!(got.groups, vec!["team-b", "system:authenticated"]);
        assert!(got.extra.is_empty());
    }

    #[test]
    fn x_remote_user_with_a_bearer_token_is_ignored() {
        let authn = with_front_proxies(Some(TokenFile::parse("tok,carol,u-3").expect("parse")));
        let mut headers = front_proxy_headers(&[
            ("X-Remote-User", "alice"),
            ("X-Remote-Group", "system:masters"),
        ]);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer tok"));
        let got = authn
            .authenticate(&PeerIdentity::default(), &headers)
            .expect("user");
        assert_eq!(got.name, "carol");
        assert_eq!(got.groups, vec!["system:authenticated"]);
    }

    #[test]
    fn x_remote_user_from_an_anonymous_caller_is_ignored() {
        let authn = with_front_proxies(None);
        let headers = front_proxy_headers(&[
            ("X-Remote-User", "alice"),
            ("X-Remote-Group", "system:masters"),
        ]);
        assert_eq!(
            authn
                .authenticate_or_reject(&PeerIdentity::default(), &headers)
                .expect("not rejected"),
            None
        );
    }

    #[test]
    fn an_authenticator_without_front_proxies_ignores_the_headers_even_from_a_front_proxy() {
        let authn = Authenticator::new(None);
        let headers = front_proxy_headers(&[("X-Remote-User", "alice")]);
        assert_eq!(authn.authenticate(&front_proxy(), &headers), None);
        let no_proxy = Authenticator::new(None).with_front_proxy_headers(None);
        assert_eq!(no_proxy.authenticate(&front_proxy(), &headers), None);
    }

    #[test]
    fn a_front_proxy_without_a_username_header_falls_back_to_its_certificate_user_then_the_token() {
        let authn = with_front_proxies(Some(TokenFile::parse("tok,carol,u-3").expect("parse")));
        let groups_only = front_proxy_headers(&[("X-Remote-User", ""), ("X-Remote-Group", "g")]);
        assert_eq!(authn.authenticate(&front_proxy(), &groups_only), None);

        let both = PeerIdentity {
            user: Some(user("front-proxy", &["proxies"])),
            front_proxy: Some("front-proxy".to_owned()),
        };
        let got = authn.authenticate(&both, &groups_only).expect("user");
        assert_eq!(got.name, "front-proxy");
        assert_eq!(got.groups, vec!["proxies", "system:authenticated"]);

        let got = authn
            .authenticate(&front_proxy(), &headers_with_auth("Bearer tok"))
            .expect("user");
        assert_eq!(got.name, "carol");

        let mut named = headers_with_auth("Bearer tok");
        named.insert("x-remote-user", HeaderValue::from_static("alice"));
        let got = authn.authenticate(&both, &named).expect("user");
        assert_eq!(got.name, "alice", "the request headers come first");
    }

    #[test]
    fn groups_from_every_group_header_and_repeated_values_are_all_kept() {
        let headers = RequestHeaders::new(
            &["X-Remote-User".to_owned()],
            &["X-Remote-Group".to_owned(), "X-Forwarded-Groups".to_owned()],
            &[],
        )
        .expect("valid");
        let authn = Authenticator::new(None).with_request_headers(headers);
        let got = authn
            .authenticate(
                &front_proxy(),
                &front_proxy_headers(&[
                    ("X-Forwarded-Groups", "c"),
                    ("X-Remote-User", "alice"),
                    ("X-Remote-Group", "a"),
                    ("X-Remote-Group", ""),
                    ("X-Remote-Group", "b,with-comma"),
                    (
                        "X-Remote-Extra-Scopes",
                        "ignored: no extra prefix configured",
                    ),
                ]),
            )
            .expect("user");
        assert_eq!(
            got.groups,
            vec!["a", "b,with-comma", "c", "system:authenticated"]
        );
        assert!(got.extra.is_empty());
    }

    #[test]
    fn the_first_non_empty_username_header_in_flag_order_wins() {
        let headers = RequestHeaders::new(
            &[
                " X-Remote-User".to_owned(),
                "".to_owned(),
                "X-Forwarded-User".to_owned(),
            ],
            &[],
            &[],
        )
        .expect("valid");
        let authn = Authenticator::new(None).with_request_headers(headers);
        let pick = |pairs: &[(&str, &str)]| {
            authn
                .authenticate(&front_proxy(), &front_proxy_headers(pairs))
                .map(|u| u.name)
        };
        assert_eq!(
            pick(&[("X-Forwarded-User", "bob"), ("X-Remote-User", "alice")]),
            Some("alice".to_owned())
        );
        assert_eq!(
            pick(&[("X-Remote-User", ""), ("X-Forwarded-User", "bob")]),
            Some("bob".to_owned())
        );
        assert_eq!(
            pick(&[("x-remote-user", "carol"), ("X-Remote-User", "dave")]),
            Some("carol".to_owned()),
            "the first value of a repeated header"
        );
    }

    #[test]
    fn extra_headers_become_lowercased_percent_decoded_keys() {
        let headers = RequestHeaders::new(
            &["X-Remote-User".to_owned()],
            &[],
            &[
                "X-Remote-Extra-".to_owned(),
                "X-Forwarded-Extra-".to_owned(),
            ],
        )
        .expect("valid");
        let authn = Authenticator::new(None).with_request_headers(headers);
        let got = authn
            .authenticate(
                &front_proxy(),
                &front_proxy_headers(&[
                    ("X-Remote-User", "alice"),
                    ("X-Remote-Extra-Scopes", "read"),
                    ("X-Remote-Extra-Scopes", "write"),
                    ("X-Forwarded-Extra-Scopes", "admin"),
                    ("X-Remote-Extra-Example.com%2fTeam", "a-Team"),
                    ("X-Remote-Extra-Bad%zzKey", "kept as sent"),
                    ("X-Remote-Extra-", "no key"),
                ]),
            )
            .expect("user");
        let want: BTreeMap<String, Vec<String>> = [
            ("scopes", vec!["read", "write", "admin"]),
            ("example.com/team", vec!["a-Team"]),
            ("bad%zzkey", vec!["kept as sent"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(got.extra, want);
    }

    #[test]
    fn header_names_must_be_valid_and_a_username_header_is_required() {
        let err = RequestHeaders::new(&["X Remote User".to_owned()], &[], &[])
            .expect_err("a space is not allowed");
        assert!(err.to_string().contains("X Remote User"), "{err}");
        let err = RequestHeaders::new(&[" ".to_owned()], &[], &[]).expect_err("none left");
        assert!(err.to_string().contains("username header"), "{err}");
        assert_eq!(
            RequestHeaders::new(
                &[DEFAULT_USERNAME_HEADER.to_owned()],
                &[DEFAULT_GROUP_HEADER.to_owned()],
                &[DEFAULT_EXTRA_HEADERS_PREFIX.to_owned()],
            )
            .expect("valid"),
            RequestHeaders::default()
        );
    }
}
