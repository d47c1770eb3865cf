//! Fuzz target of the `labelSelector` and `fieldSelector` parsers: any string parses or is
//! refused without a panic, an accepted selector can be matched against labels and fields, and
//! its rendered form parses back to the same selector (for field selectors: the same terms,
//! possibly in another order, and the rendering of that is a fixed point).

#![no_main]
#![forbid(unsafe_code)]

#[path = "../checks/selectors.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
