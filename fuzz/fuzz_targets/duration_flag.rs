//! Fuzz target of the Go-duration flag parser (`--shutdown-delay-duration`,
//! `--shutdown-timeout`): any text is a duration or an error message, never a panic.

#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = server::flags::parse_duration(text);
});
