//! synod-bench: the load generator behind `synod bench` (to come) and the
//! harnesses of the criterion benches in `benches/`.
#![deny(missing_docs)]

pub mod inmem;
