//! The check of the `duration_flag` fuzz target, shared with the cargo test
//! `tests/fuzz_inputs.rs`: any text given to the Go-duration flag parser
//! (`--shutdown-delay-duration`, `--shutdown-timeout`) is a duration or an error message, never
//! a panic.

/// Checks one input; panics on a violation.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = server::flags::parse_duration(text);
}
