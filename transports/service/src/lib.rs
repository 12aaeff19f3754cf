//! The scepd HTTP service, shared by every runtime.
#![forbid(unsafe_code)]
