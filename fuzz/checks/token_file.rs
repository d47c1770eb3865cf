//! The check of the `token_file` fuzz target, shared with the cargo test `tests/fuzz_inputs.rs`:
//! any static token file text (`--token-auth-file`, CSV lines `token,user,uid[,"group1,group2"]`)
//! gives a token table or an error naming a line, never a panic; a table that parses finds the
//! users of its tokens.

use std::collections::HashSet;

use server::authn::TokenFile;

/// Checks one input; panics on a violation.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tokens) = TokenFile::parse(text) else {
        return;
    };
    // A plain first column (unquoted, without leading blanks) is the token of its line.
    let mut plain = HashSet::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some((token, _)) = line.split_once(',')
            && !token.is_empty()
            && !token.contains('"')
            && token.trim() == token
        {
            assert!(
                tokens.lookup(token).is_some(),
                "token {token:?} of {line:?} not found"
            );
            plain.insert(token);
        }
    }
    assert!(tokens.len() >= plain.len());
}
