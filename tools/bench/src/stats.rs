//! Latency percentiles and server CPU accounting.

use std::time::Duration;

/// The `q` quantile (0..=1) of `samples` (sorted in place), in the samples' unit.
pub(crate) fn quantile(samples: &mut [u32], q: f64) -> u32 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// CPU time a process has used so far, summed over its threads, from the kernel's own
/// accounting (`/proc/PID/task/*/schedstat`, nanoseconds; falls back to the coarser
/// `/proc/PID/stat` ticks, assuming USER_HZ = 100).
pub(crate) fn process_cpu(pid: u32) -> Duration {
    let mut total_ns: u64 = 0;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat"))
                && let Some(ns) = text
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
            {
                total_ns += ns;
                any = true;
            }
        }
    }
    if any {
        return Duration::from_nanos(total_ns);
    }
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The machine's CPU time so far, from the first line of `/proc/stat`: all of it, and
/// the part the hypervisor gave to other guests while this one wanted to run (steal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MachineTicks {
    total: u64,
    steal: u64,
}

impl MachineTicks {
    /// Reads them now (zero where `/proc/stat` cannot be read).
    pub(crate) fn now() -> MachineTicks {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| MachineTicks::parse(&text))
            .unwrap_or_default()
    }

    /// Parses the aggregate `cpu` line: user nice system idle iowait irq softirq steal …
    fn parse(stat: &str) -> Option<MachineTicks> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // Guest time (fields 9 and 10) is already counted in user and nice.
        let total = fields.iter().take(8).sum();
        Some(MachineTicks {
            total,
            steal: *fields.get(7)?,
        })
    }

    /// The share of the machine's CPU time stolen since `earlier` (0 when none passed).
    pub(crate) fn steal_since(&self, earlier: MachineTicks) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.steal.saturating_sub(earlier.steal) as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_read_from_the_aggregate_line() {
        let before =
            MachineTicks::parse("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 50 0 25 400 5 0 2 18 0 0\n")
                .expect("parses");
        let after = MachineTicks::parse("cpu  200 0 100 1500 10 0 10 85 7 0\n").expect("parses");
        // 905 ticks passed (guest time is already in user), 50 of them stolen.
        assert!((after.steal_since(before) - 50.0 / 905.0).abs() < 1e-9);
        assert_eq!(before.steal_since(before), 0.0);
        assert_eq!(MachineTicks::parse("intr 1 2 3\n"), None);
        assert_eq!(MachineTicks::parse("cpu  1 2 x\n"), None);
    }

    #[test]
    fn quantiles_pick_the_right_rank() {
        let mut v: Vec<u32> = (1..=100).rev().collect();
        assert_eq!(quantile(&mut v, 0.99), 99);
        assert_eq!(quantile(&mut v, 0.5), 50);
        assert_eq!(quantile(&mut v, 1.0), 100);
        assert_eq!(quantile(&mut [], 0.99), 0);
    }

    #[test]
    fn own_cpu_time_is_readable_and_grows() {
        let pid = std::process::id();
        let before = process_cpu(pid);
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu(pid) > before);
    }
}
