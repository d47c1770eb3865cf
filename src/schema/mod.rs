//! APIResourceSchema handling: compiling a version's structural schema into a validator.

pub mod validate;
