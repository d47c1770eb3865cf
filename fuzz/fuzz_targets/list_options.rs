//! Fuzz target of list and watch query options (`?labelSelector=…&limit=…&continue=…`): any
//! query string gives options or a client error (4xx Status), never a panic or a 5xx.

#![no_main]
#![forbid(unsafe_code)]

#[path = "../checks/list_options.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
