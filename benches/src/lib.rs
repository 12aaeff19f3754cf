//! Benchmark support: the `scep-load` fleet load generator ([`load`]).
#![forbid(unsafe_code)]

pub mod load;
