//! scepd on tokio.
fn main() {}
