//! Fuzz target of `continue` tokens: any token decodes or is refused with a client error (4xx
//! Status), and a decoded token encodes back to a token that decodes to the same revision and
//! key.

#![no_main]
#![forbid(unsafe_code)]

#[path = "../checks/continue_token.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
