//! What the machine costs and allows, measured beside a run: the CPU time
//! of processes (from /proc) and the floor a commit cannot go below here
//! (a durable write, a loopback round trip).

mod cpu;
mod floor;

pub use cpu::{cpu_seconds, CpuSample};
pub use floor::{measure_floor, Floor};
