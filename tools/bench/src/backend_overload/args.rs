//! The benchmark's arguments.

use super::mix::DEFAULT_MIX;

/// Options of `svrkit-bench backend-overload`.
#[derive(Debug, clap::Args)]
pub(crate) struct BackendOverloadArgs {
    /// Users (in befriended pairs), each with a WebSocket. Many: a connection may have
    /// 64 requests in flight, and each user's share of 4x the load must fit.
    #[arg(long, default_value_t = 2000)]
    pub(super) users: usize,
    /// Measured seconds of the capacity run and of each load.
    #[arg(long, default_value_t = 8.0)]
    pub(super) seconds: f64,
    /// Load factors, times the measured capacity (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1.0, 2.0, 4.0])]
    pub(super) loads: Vec<f64>,
    /// The capacity in successful requests/s, when known from an earlier run (skips
    /// finding it).
    #[arg(long)]
    pub(super) capacity: Option<f64>,
    /// The mix: requests per 10,000 of `login`, `message.send`, `profile.update`,
    /// `friends.list` and `moments.timeline`, in that order.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_MIX)]
    pub(super) mix: Vec<u32>,
    /// Run the load generator on the same CPUs as the backend (by default, with two CPUs
    /// or more, it has the last one to itself, as if on a machine of its own).
    #[arg(long)]
    pub(super) no_pin: bool,
    /// Clients that ignore the gateway's `admit` hint and send everything (by default
    /// they hold back what it says it would shed, as the product's clients do).
    #[arg(long)]
    pub(super) ignore_admit: bool,
    /// First find each kind's capacity alone (a ramp per kind of the mix), and report
    /// every load's goodput weighed by it as well: the share of the backend's capacity
    /// that successes used, whatever kinds they were (a load that sheds cheap reads to
    /// serve dear messages has fewer successes, not less useful work).
    #[arg(long)]
    pub(super) weigh: bool,
}

impl BackendOverloadArgs {
    /// Whether the generator gets a CPU of its own (see [`crate::cpus`]).
    pub(crate) fn pins(&self) -> bool {
        !self.no_pin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_given_comma_separated() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: BackendOverloadArgs,
        }
        let mix = |argv: &[&str]| {
            <Cli as clap::Parser>::try_parse_from(argv)
                .map(|cli| cli.args.mix)
                .map_err(|e| e.to_string())
        };
        assert_eq!(mix(&["b", "--mix", "1,0,0,0,0"]), Ok(vec![1, 0, 0, 0, 0]));
        assert_eq!(mix(&["b"]), Ok(DEFAULT_MIX.to_vec()));
        // Any other count parses, and is refused by `run` with the count it takes.
        assert_eq!(mix(&["b", "--mix", "1,2"]), Ok(vec![1, 2]));
        assert!(mix(&["b", "--mix", "x"]).is_err());
    }
}
