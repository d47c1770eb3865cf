//! Fuzz target of the Go-duration flag parser (`--shutdown-delay-duration`,
//! `--shutdown-timeout`): any text is a duration or an error message, never a panic.

#![no_main]
#![forbid(unsafe_code)]

#[path = "../checks/duration_flag.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
