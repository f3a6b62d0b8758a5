//! What a phase counted (by kind, by user band, by why it failed), weighed by each
//! kind's cost, and the table rows and JSON lines of a load.

use std::collections::HashMap;
use std::time::Duration;

use crate::stats::quantile;

use super::mix::{BANDS, MIX};

/// Outcomes of one phase, by mix kind and by user band.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) sent: [u64; MIX.len()],
    pub(super) ok: [u64; MIX.len()],
    pub(super) latencies_us: [Vec<u32>; MIX.len()],
    pub(super) band_sent: [u64; BANDS],
    pub(super) band_ok: [u64; BANDS],
    /// Failures by the request's kind and why (`code/reason`, `late`, `held_back`).
    pub(super) refusals: HashMap<(usize, String), u64>,
    /// CPU the backend's processes used in the measured seconds.
    pub(super) backend_cpu: Duration,
}

impl Tally {
    /// Successes and requests sent, of every kind.
    pub(super) fn totals(&self) -> (u64, u64) {
        (self.ok.iter().sum(), self.sent.iter().sum())
    }

    /// The work its successes did against the work of the capacity, each kind's
    /// success counting 1 / that kind's capacity alone (`None` without weights).
    pub(super) fn weighed(&self, seconds: f64, weighing: Option<&Weighing>) -> Option<f64> {
        let weighing = weighing?;
        let share = weighed_share(
            self.ok.map(|ok| ok as f64 / seconds.max(1e-9)),
            &weighing.kinds,
        )?;
        Some(share / weighing.capacity_share.max(1e-9))
    }
}

/// Each kind's capacity when offered alone, in successful requests/s (`0` for a kind
/// not in the mix).
pub(super) type KindCapacity = [f64; MIX.len()];

/// What a success of each kind weighs.
pub(super) struct Weighing {
    pub(super) kinds: KindCapacity,
    /// The share of the kinds' capacities that the mix's capacity adds up to. Below 1
    /// when the kinds cost more together than alone (each service sees fewer of each
    /// at a time); a load's weighed goodput is against it.
    pub(super) capacity_share: f64,
}

/// The share of the capacity used by `rates` (requests/s of each kind): the sum of
/// each kind's rate over its capacity alone.
pub(super) fn weighed_share(rates: [f64; MIX.len()], kinds: &KindCapacity) -> Option<f64> {
    let mut share = 0.0;
    for (rate, capacity) in rates.iter().zip(kinds) {
        if *rate > 0.0 {
            if *capacity <= 0.0 {
                return None;
            }
            share += rate / capacity;
        }
    }
    Some(share)
}

/// `,"weighed_goodput_vs_capacity":…` when there is one.
pub(super) fn weighed_json(weighed: Option<f64>) -> String {
    weighed.map_or_else(String::new, |w| {
        format!(",\"weighed_goodput_vs_capacity\":{w:.2}")
    })
}

/// The failures of kind `kind` (of every kind: `None`) as JSON members, `"why":count`,
/// sorted by why.
pub(super) fn refusals_json(tally: &Tally, kind: Option<usize>) -> String {
    let mut by_why: std::collections::BTreeMap<&str, u64> = Default::default();
    for ((k, why), n) in &tally.refusals {
        if kind.is_none_or(|kind| kind == *k) {
            *by_why.entry(why.as_str()).or_default() += n;
        }
    }
    by_why
        .iter()
        .map(|(why, n)| format!("\"{why}\":{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The table rows and JSON lines of one load.
pub(super) fn report(
    load: f64,
    capacity: f64,
    tally: &Tally,
    seconds: f64,
    system_cpus: usize,
    weighing: Option<&Weighing>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let ratio = |ok: u64, sent: u64| {
        if sent == 0 {
            0.0
        } else {
            ok as f64 / sent as f64
        }
    };
    let mut latencies = tally.latencies_us.clone();
    for (k, kind) in MIX.iter().enumerate() {
        let p99 = quantile(&mut latencies[k], 0.99) as f64 / 1e3;
        let success = ratio(tally.ok[k], tally.sent[k]);
        let goodput = tally.ok[k] as f64 / seconds;
        println!(
            "{:>5} {:>24} {:>9} {:>9.3} {:>10.0} {:>8.1}",
            format!("{load}x"),
            format!("{} ({})", kind.action, kind.priority),
            tally.sent[k],
            success,
            goodput,
            p99
        );
        lines.push(format!(
            "{{\"bench\":\"backend-overload\",\"load\":{load},\"business_priority\":{},\"action\":\"{}\",\"sent\":{},\"success\":{success:.3},\"goodput\":{goodput:.0},\"p99_ms\":{p99:.1},\"refused\":{{{}}}}}",
            kind.priority,
            kind.action,
            tally.sent[k],
            refusals_json(tally, Some(k))
        ));
    }
    for band in 0..BANDS {
        let (low, high) = (band * 128 / BANDS + 1, (band + 1) * 128 / BANDS);
        let success = ratio(tally.band_ok[band], tally.band_sent[band]);
        println!(
            "{:>5} {:>24} {:>9} {:>9.3} {:>10.0} {:>8}",
            format!("{load}x"),
            format!("users {low}-{high}"),
            tally.band_sent[band],
            success,
            tally.band_ok[band] as f64 / seconds,
            "",
        );
        lines.push(format!(
            "{{\"bench\":\"backend-overload\",\"load\":{load},\"user_priorities\":\"{low}-{high}\",\"sent\":{},\"success\":{success:.3},\"goodput\":{:.0}}}",
            tally.band_sent[band],
            tally.band_ok[band] as f64 / seconds
        ));
    }
    let (ok, sent) = tally.totals();
    let goodput = ok as f64 / seconds;
    let refusals = refusals_json(tally, None);
    // How busy the backend's CPUs were.
    let busy = tally.backend_cpu.as_secs_f64() / (seconds * system_cpus.max(1) as f64);
    let weighed = tally.weighed(seconds, weighing);
    println!(
        "{:>5} {:>24} {:>9} {:>9.3} {:>10.0} {:>8}   goodput/capacity {:.2}{}, backend CPU busy {busy:.2}",
        format!("{load}x"),
        "all",
        sent,
        ratio(ok, sent),
        goodput,
        "",
        goodput / capacity.max(1e-9),
        weighed.map_or_else(String::new, |w| format!(" (weighed by kind {w:.2})")),
    );
    lines.push(format!(
        "{{\"bench\":\"backend-overload\",\"load\":{load},\"capacity\":{capacity:.0},\"sent\":{sent},\"success\":{:.3},\"goodput\":{goodput:.0},\"goodput_vs_capacity\":{:.2}{},\"backend_cpu_busy\":{busy:.2},\"refused\":{{{refusals}}}}}",
        ratio(ok, sent),
        goodput / capacity.max(1e-9),
        weighed_json(weighed),
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighing_counts_each_success_by_its_kind_capacity() {
        let kinds: KindCapacity = [50.0, 2_000.0, 0.0, 5_000.0, 10_000.0];
        // Half of the messages' capacity and a fifth of the reads': 0.7 of the backend.
        let share = weighed_share([0.0, 1_000.0, 0.0, 0.0, 2_000.0], &kinds).expect("weighed");
        assert!((share - 0.7).abs() < 1e-9, "{share}");
        // A kind that succeeded without a capacity of its own cannot be weighed.
        assert_eq!(weighed_share([0.0, 0.0, 10.0, 0.0, 0.0], &kinds), None);
        let mut tally = Tally::default();
        tally.ok[0] = 50;
        tally.ok[3] = 25_000;
        let weighing = Weighing {
            kinds,
            capacity_share: 0.5,
        };
        // 0.6 of the kinds' capacities, against a capacity that was worth 0.5 of them.
        let weighed = tally.weighed(10.0, Some(&weighing)).expect("weighed");
        assert!((weighed - (5.0 / 50.0 + 2_500.0 / 5_000.0) / 0.5).abs() < 1e-9);
        assert_eq!(tally.weighed(10.0, None), None);
    }
}
