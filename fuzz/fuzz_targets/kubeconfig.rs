//! Fuzz target of the kubeconfig reader (`--cache-kubeconfig`, `--shard-kubeconfig`): any text
//! gives the current context's server and credentials or a configuration error, never a panic.
//! File references are answered from memory (`ca.crt` exists, every other file is missing), so
//! the target touches no disk.

#![no_main]
#![forbid(unsafe_code)]

#[path = "../checks/kubeconfig.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
