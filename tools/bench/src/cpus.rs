//! Keeping a load generator off the CPUs of the system it measures.
//!
//! A benchmark that drives a backend past its capacity must not take that capacity
//! itself: on a shared machine "4x the load" would otherwise mean "4x the generator's own
//! CPU", and the measured system would collapse for want of a core rather than for what
//! it was asked. [`Split`] gives the generator the last allowed CPU and the system the
//! others, the way a load generator runs on a machine of its own.

use std::fmt;

use anyhow::{Context as _, bail};
use rustix::process::Pid;
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

/// The CPUs of the measured system and of the load generator.
#[derive(Clone)]
pub(crate) struct Split {
    /// Where the measured processes run.
    pub(crate) system: CpuSet,
    /// Where the generator runs.
    pub(crate) generator: CpuSet,
    system_cpus: Vec<usize>,
    generator_cpu: usize,
}

impl fmt::Debug for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "system on CPUs {:?}, generator on CPU {}",
            self.system_cpus, self.generator_cpu
        )
    }
}

impl Split {
    /// How many CPUs the measured system has.
    pub(crate) fn system_cpu_count(&self) -> usize {
        self.system_cpus.len()
    }

    /// The CPUs this process may use, split: the last for the generator, the rest for the
    /// system. `None` when there is only one.
    pub(crate) fn of_this_process() -> anyhow::Result<Option<Split>> {
        let allowed = sched_getaffinity(None).context("reading this process's CPU affinity")?;
        let cpus: Vec<usize> = (0..CpuSet::MAX_CPU)
            .filter(|&c| allowed.is_set(c))
            .collect();
        let Some((&generator_cpu, system_cpus)) = cpus.split_last() else {
            bail!("this process may run on no CPU");
        };
        if system_cpus.is_empty() {
            return Ok(None);
        }
        let mut system = CpuSet::new();
        for &c in system_cpus {
            system.set(c);
        }
        let mut generator = CpuSet::new();
        generator.set(generator_cpu);
        Ok(Some(Split {
            system,
            generator,
            system_cpus: system_cpus.to_vec(),
            generator_cpu,
        }))
    }
}

/// Moves every thread of this process onto `cpus` (threads started later inherit it from
/// the thread that starts them).
pub(crate) fn pin_process(cpus: &CpuSet) -> anyhow::Result<()> {
    for entry in std::fs::read_dir("/proc/self/task").context("listing this process's threads")? {
        let Some(tid) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
            .and_then(Pid::from_raw)
        else {
            continue;
        };
        // A thread may end while we go; that is no failure.
        match sched_setaffinity(Some(tid), cpus) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => return Err(e).context("setting a thread's CPU affinity"),
        }
    }
    Ok(())
}

/// Runs `f` with the calling thread on `cpus`, then puts it back where it was: processes
/// `f` starts inherit `cpus`.
pub(crate) fn on_cpus<T>(cpus: &CpuSet, f: impl FnOnce() -> T) -> anyhow::Result<T> {
    let before = sched_getaffinity(None).context("reading the thread's CPU affinity")?;
    sched_setaffinity(None, cpus).context("setting the thread's CPU affinity")?;
    let out = f();
    sched_setaffinity(None, &before).context("restoring the thread's CPU affinity")?;
    Ok(out)
}
