//! Fuzz target of the static token file (`--token-auth-file`, CSV lines
//! `token,user,uid[,"group1,group2"]`): any text gives a token table or an error naming a
//! line, never a panic; a table that parses finds the users of its tokens.

#![no_main]
#![forbid(unsafe_code)]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use server::authn::TokenFile;

fuzz_target!(|data: &[u8]| {
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
});
