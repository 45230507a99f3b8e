//! CPU time of processes, from /proc/PID/stat (user + system).

/// CPU seconds `pid` (or this process, for `None`) has used, user and
/// system; `None` if it cannot be read (gone, or not Linux).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and ends at the last ')'; utime and
    // stime are fields 14 and 15, the 12th and 13th after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
}

/// The CPU seconds of some processes and of this one, at one moment.
#[derive(Clone, Debug, Default)]
pub struct CpuSample {
    /// Summed over the processes asked for; `None` if one could not be read.
    pub others: Option<f64>,
    /// This process.
    pub this: Option<f64>,
}

impl CpuSample {
    /// Reads `pids` and this process now.
    pub fn now(pids: &[u32]) -> CpuSample {
        let others = pids.iter().map(|pid| cpu_seconds(Some(*pid))).sum();
        CpuSample {
            others,
            this: cpu_seconds(None),
        }
    }

    /// What was spent from `earlier` to this sample: (others, this).
    pub fn since(&self, earlier: &CpuSample) -> (Option<f64>, Option<f64>) {
        let delta = |now: Option<f64>, then: Option<f64>| Some(now? - then?);
        (
            delta(self.others, earlier.others),
            delta(self.this, earlier.this),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_spends_cpu_as_it_works_and_a_missing_one_reads_as_none() {
        let before = cpu_seconds(None).expect("readable on Linux");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        // Busy until the clock ticks over (10 ms a tick), 5 s at most.
        while cpu_seconds(None).unwrap() <= before {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "no CPU counted"
            );
        }
        assert_eq!(cpu_seconds(Some(u32::MAX)), None, "no such process");
    }
}
