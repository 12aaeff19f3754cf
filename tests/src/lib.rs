//! Test support for scepd.
