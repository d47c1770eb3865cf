//! Request authentication: who is calling. Owns the user record handed to authorization, the
//! kube-apiserver-style static token file (`--token-auth-file` CSV), and the resolution order
//! for a request: verified client certificate first, then a bearer token, otherwise anonymous.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use crate::server::tls::PeerIdentity;

/// Group every authenticated user belongs to (as in Kubernetes).
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// Superuser group: members bypass authorization (as in Kubernetes).
pub const MASTERS_GROUP: &str = "system:masters";

/// An authenticated caller.
pub use crate::api::user::UserInfo;

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
            let user = UserInfo { name, uid, groups };
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

/// Resolves the user of a request.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: Option<TokenFile>,
}

impl Authenticator {
    /// An authenticator accepting client certificates and, when given, the file's bearer tokens.
    pub fn new(tokens: Option<TokenFile>) -> Self {
        Self { tokens }
    }

    /// The request's user: the verified client certificate first, then
    /// `Authorization: Bearer <token>` against the token file; `None` means anonymous (also for
    /// an unknown token — use [`Authenticator::authenticate_or_reject`] to tell those apart).
    /// Authenticated users get the group `system:authenticated` appended once.
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
        if let Some(user) = &peer.0 {
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
            uid: String::new(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
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
        let peer = PeerIdentity(Some(user("admin", &["system:masters"])));
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
}
