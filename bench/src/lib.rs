//! synod-bench: the load generator behind `synod bench`, the local cluster
//! launcher it shares with `synod cluster`, and the harnesses of the
//! criterion benches in `benches/`.
#![deny(missing_docs)]

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod inmem;
pub mod loadgen;
pub mod local;
pub mod machine;
