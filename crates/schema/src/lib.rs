//! APIResourceSchema handling: compiling a version's structural schema into a validator.

#![forbid(unsafe_code)]

pub mod fast;
pub mod structural;
pub mod validate;
