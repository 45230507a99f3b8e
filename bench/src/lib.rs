//! synod-bench: the load generator behind `synod bench`, and the criterion
//! benches in `benches/`.
//!
//! Will hold: closed- and open-loop load against a local or running cluster,
//! latency into HdrHistograms measured from the intended send time, and the
//! results table.
#![deny(missing_docs)]
