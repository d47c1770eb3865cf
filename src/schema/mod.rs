//! APIResourceSchema handling: compiling a version's structural schema into a validator.

pub mod structural;
pub mod validate;
