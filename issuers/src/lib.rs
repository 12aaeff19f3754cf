//! Certificate issuers for scepd.
#![forbid(unsafe_code)]
