//! Fuzz target of the static token file (`--token-auth-file`, CSV lines
//! `token,user,uid[,"group1,group2"]`): any text gives a token table or an error naming a
//! line, never a panic; a table that parses finds the users of its tokens.

#![no_main]
#![forbid(unsafe_code)]

#[path = "../checks/token_file.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
