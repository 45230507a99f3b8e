//! The floor of a commit on this machine, measured in the same run as the
//! load: a durable 4 KiB write with three writers at once (three replicas
//! share the disk here), and a loopback TCP round trip. A command cannot be
//! acknowledged faster than one of each; latency read as a multiple of
//! their sum says how much the software adds.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// Writers at once, as replicas sharing one disk.
const WRITERS: usize = 3;
/// Bytes per durable write.
const WRITE_BYTES: usize = 4096;
/// Bytes per round trip.
const PING_BYTES: usize = 64;

/// What the machine allows.
#[derive(Clone, Copy, Debug)]
pub struct Floor {
    /// Median of a 4 KiB O_DSYNC write, three writers at once, in µs.
    pub durable_write_us: f64,
    /// Median loopback TCP round trip of 64 bytes, in µs.
    pub loopback_rtt_us: f64,
}

impl Floor {
    /// One durable write and one round trip: what a commit needs at least.
    pub fn commit_us(&self) -> f64 {
        self.durable_write_us + self.loopback_rtt_us
    }
}

/// Measures the floor for about `time` per part, with files in `dir`
/// (removed after).
pub fn measure_floor(dir: &Path, time: Duration) -> std::io::Result<Floor> {
    std::fs::create_dir_all(dir)?;
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let path = dir.join(format!("floor-{i}.tmp"));
            std::thread::spawn(move || durable_writes(&path, time))
        })
        .collect();
    let mut latencies = Vec::new();
    for writer in writers {
        let joined = writer
            .join()
            .map_err(|_| std::io::Error::other("a writer panicked"))?;
        latencies.extend(joined?);
    }
    Ok(Floor {
        durable_write_us: median(&mut latencies),
        loopback_rtt_us: median(&mut round_trips(time)?),
    })
}

fn durable_writes(path: &Path, time: Duration) -> std::io::Result<Vec<f64>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(path)?;
    let block = [0x5au8; WRITE_BYTES];
    let mut took = Vec::new();
    let start = Instant::now();
    while start.elapsed() < time {
        let at = Instant::now();
        file.write_all_at(&block, 0)?;
        took.push(at.elapsed().as_secs_f64() * 1e6);
    }
    drop(file);
    std::fs::remove_file(path)?;
    Ok(took)
}

fn round_trips(time: Duration) -> std::io::Result<Vec<f64>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buf = [0u8; PING_BYTES];
        loop {
            if stream.read_exact(&mut buf).is_err() {
                return Ok(());
            }
            stream.write_all(&buf)?;
        }
    });
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut buf = [7u8; PING_BYTES];
    let mut took = Vec::new();
    let start = Instant::now();
    while start.elapsed() < time {
        let at = Instant::now();
        stream.write_all(&buf)?;
        stream.read_exact(&mut buf)?;
        took.push(at.elapsed().as_secs_f64() * 1e6);
    }
    drop(stream);
    let _ = echo.join();
    Ok(took)
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_measured_and_positive() {
        let dir = tempfile::tempdir().unwrap();
        let floor = measure_floor(dir.path(), Duration::from_millis(50)).unwrap();
        assert!(floor.durable_write_us > 0.0, "{floor:?}");
        assert!(floor.loopback_rtt_us > 0.0, "{floor:?}");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "files removed"
        );
    }
}
