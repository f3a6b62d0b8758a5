//! What a client holds back while the gateway sheds.
//!
//! While access-long or access-short refuses requests at the edge, its answers carry a
//! hint, `"admit": N` (HTTP: `x-wx-admit: N`): the least important business priority it
//! still admits from this user. A request it would refuse costs the gateway a frame each
//! way all the same, as much as serving a small request, so a well-behaved client does not
//! send it. [`AdmitHint`] keeps what the answers said and decides, per request, whether
//! to hold it back:
//!
//! - **The last hint.** A request above its ceiling is held back while the hint is fresh
//!   ([`HINT_TTL`]); every answer carrying one renews it, and an answer without one (the
//!   gateway admitted everything when it answered) lifts it.
//! - **One probe when it goes stale.** A hint that no answer has renewed for [`HINT_TTL`]
//!   (the user sent nothing it admitted) lets one request above its ceiling through, and
//!   holds the rest back until that one's answer says what the gateway admits now (or
//!   another [`HINT_TTL`] passes without it). Letting everything through instead made
//!   every user who had been held back at the same moment send everything at the same
//!   moment: a flood at the gateway a hint's lifetime after each peak, which lifted its
//!   count into the band of the class above and made the next peak.
//! - **Refusals at a peak.** A refusal whose answer's hint still admits its priority
//!   (the gateway's hint follows its load averaged over a quarter second; the refusal
//!   met a peak above that) pauses that priority and the less important ones for
//!   [`PEAK_BACKOFF`] only, and is not doubled. Backing such refusals off like the others
//!   held a user's messages back for half a second at every peak: at four times the
//!   capacity that was most of what messages lost.
//! - **Refusals, per business priority.** The gateway's load swings between two answers, so
//!   a hint may let through what is refused a moment later. After a refusal (`edge_shed`)
//!   of priority `p`, requests of `p` and anything less important are held back for
//!   [`HINT_TTL`], doubled by each further refusal up to [`HINT_TTL_MAX`], whatever the
//!   hints in between say. A request of `p` that is run ends the backoff for `p` and
//!   everything more important; one that is run says nothing of less important ones, so
//!   theirs goes on. Without this split, every message sent reset the backoff, and a user
//!   who chats while browsing probed the gateway with a timeline twice a second.

use std::time::{Duration, Instant};

/// How long a hint holds when no answer renews it, and the first backoff after a refusal.
pub const HINT_TTL: Duration = Duration::from_millis(500);
/// The longest backoff: [`HINT_TTL`] doubled by each refusal up to this.
pub const HINT_TTL_MAX: Duration = Duration::from_secs(8);

/// The pause after a refusal whose answer's hint still admits the refused priority.
pub const PEAK_BACKOFF: Duration = Duration::from_millis(50);

/// The most backoffs kept: one per business priority in use is a handful.
const MAX_BACKOFFS: usize = 32;

/// A backoff after refusals of one business priority.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    /// Held back: this priority and the less important ones…
    priority: u64,
    /// …until then.
    until: Instant,
    /// How long the last refusal held it.
    held: Duration,
}

/// What the gateway's answers said about admission, for one connection or client.
#[derive(Debug, Clone, Default)]
pub struct AdmitHint {
    /// The last hint's ceiling and when it came.
    hint: Option<(u64, Instant)>,
    /// When the request that probes a stale hint was let through, until its answer.
    probe: Option<Instant>,
    /// Backoffs after refusals, sorted by priority.
    backoffs: Vec<Backoff>,
}

impl AdmitHint {
    /// Nothing heard yet: everything is sent.
    pub fn new() -> AdmitHint {
        AdmitHint::default()
    }

    /// Whether a request of business priority `priority` should be held back at `now`
    /// (answered by the client as refused, without being sent). A request it lets through
    /// above a stale hint's ceiling is that hint's probe.
    pub fn holds_back(&mut self, priority: u64, now: Instant) -> bool {
        let backed_off = self
            .backoffs
            .iter()
            .any(|b| b.priority <= priority && now < b.until);
        if backed_off {
            return true;
        }
        let Some((ceiling, at)) = self.hint else {
            return false;
        };
        if priority <= ceiling {
            return false;
        }
        let fresh = |since: Instant| now.saturating_duration_since(since) < HINT_TTL;
        if fresh(at) || self.probe.is_some_and(fresh) {
            return true;
        }
        self.probe = Some(now);
        false
    }

    /// Notes the answer to a request of business priority `priority` that was sent: the
    /// hint it carried (`None`: it had none) and whether the gateway refused it at the
    /// edge (error reason `edge_shed`).
    pub fn observe(&mut self, priority: u64, hint: Option<u64>, refused: bool, now: Instant) {
        // Whatever answered, the gateway has said what it admits now.
        self.probe = None;
        match hint {
            Some(ceiling) => self.hint = Some((ceiling, now)),
            None => {
                // The gateway admitted everything when it answered.
                self.hint = None;
                self.backoffs.clear();
                return;
            }
        }
        if refused && hint.is_some_and(|ceiling| ceiling != 0 && ceiling >= priority) {
            // Refused at a peak that the gateway's hint does not hold against this
            // priority: a short pause, not doubled.
            self.back_off(Backoff {
                priority,
                until: now + PEAK_BACKOFF,
                held: Duration::ZERO,
            });
        } else if refused {
            // Twice the longest backoff that covered this priority, or the first one.
            let held = self
                .backoffs
                .iter()
                .filter(|b| b.priority <= priority && !b.held.is_zero())
                .map(|b| b.held * 2)
                .max()
                .unwrap_or(HINT_TTL)
                .min(HINT_TTL_MAX);
            self.back_off(Backoff {
                priority,
                until: now + held,
                held,
            });
        } else {
            // Run: this priority and the more important ones are admitted again.
            self.backoffs.retain(|b| b.priority > priority);
        }
    }

    /// Holds `backoff.priority` back until `backoff.until`, unless a backoff of that
    /// priority already holds it longer. Full (priorities in use are far fewer): the
    /// least important goes.
    fn back_off(&mut self, backoff: Backoff) {
        match self
            .backoffs
            .binary_search_by_key(&backoff.priority, |b| b.priority)
        {
            Ok(i) if self.backoffs[i].until >= backoff.until => {}
            Ok(i) => self.backoffs[i] = backoff,
            Err(i) => {
                self.backoffs.insert(i, backoff);
                self.backoffs.truncate(MAX_BACKOFFS);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn nothing_heard_nothing_held() {
        let mut hint = AdmitHint::new();
        assert!(!hint.holds_back(80, Instant::now()));
    }

    #[test]
    fn a_hint_holds_what_is_above_it_while_fresh() {
        let t = Instant::now();
        let mut hint = AdmitHint::new();
        hint.observe(20, Some(40), false, t);
        assert!(!hint.holds_back(20, t));
        assert!(!hint.holds_back(40, t));
        assert!(hint.holds_back(60, t + 499 * MS));
        // Stale: it no longer holds (this one goes, as the probe).
        assert!(!hint.holds_back(60, t + HINT_TTL));
        // A newer answer renews it, and may lower it.
        hint.observe(20, Some(20), false, t + 400 * MS);
        assert!(hint.holds_back(30, t + 800 * MS));
    }

    #[test]
    fn a_stale_hint_lets_one_probe_through_until_its_answer() {
        let t = Instant::now();
        let mut hint = AdmitHint::new();
        hint.observe(20, Some(20), false, t);
        let stale = t + HINT_TTL;
        // One request above the ceiling goes; the rest wait for its answer…
        assert!(!hint.holds_back(80, stale), "the probe");
        assert!(hint.holds_back(40, stale + MS));
        assert!(hint.holds_back(80, stale + 100 * MS));
        // …but what the hint admits goes as ever.
        assert!(!hint.holds_back(20, stale + MS));
        // The answer comes with a hint: it is fresh again and says what goes.
        hint.observe(80, Some(40), false, stale + 150 * MS);
        assert!(!hint.holds_back(40, stale + 151 * MS));
        assert!(hint.holds_back(80, stale + 151 * MS));
        // A probe whose answer never comes is replaced after another HINT_TTL.
        let stale = stale + 150 * MS + HINT_TTL;
        assert!(!hint.holds_back(80, stale), "the second probe");
        assert!(hint.holds_back(80, stale + HINT_TTL - MS));
        assert!(!hint.holds_back(80, stale + HINT_TTL), "the third");
        // An answer without a hint lifts it all.
        hint.observe(80, None, false, stale + HINT_TTL + MS);
        assert!(!hint.holds_back(80, stale + HINT_TTL + 2 * MS));
        assert!(!hint.holds_back(80, stale + HINT_TTL + 3 * MS));
    }

    #[test]
    fn an_answer_without_a_hint_lifts_everything() {
        let t = Instant::now();
        let mut hint = AdmitHint::new();
        hint.observe(80, Some(20), true, t);
        assert!(hint.holds_back(80, t));
        hint.observe(10, None, false, t + MS);
        assert!(!hint.holds_back(80, t + MS));
    }

    #[test]
    fn refusals_back_off_per_priority_and_double() {
        let t = Instant::now();
        let mut hint = AdmitHint::new();
        // Refused at 80 under a hint that does not admit it.
        hint.observe(80, Some(40), true, t);
        assert!(hint.holds_back(80, t + 499 * MS));
        assert!(!hint.holds_back(40, t + 100 * MS), "more important ones go");
        assert!(!hint.holds_back(80, t + HINT_TTL));
        // Each further refusal doubles the backoff, up to the max.
        let mut at = t + HINT_TTL;
        let mut held = HINT_TTL;
        for _ in 0..8 {
            hint.observe(80, Some(40), true, at);
            held = (held * 2).min(HINT_TTL_MAX);
            assert!(hint.holds_back(80, at + held - MS));
            assert!(!hint.holds_back(80, at + held));
            at += held;
        }
        assert_eq!(held, HINT_TTL_MAX);
    }

    #[test]
    fn a_refusal_at_a_peak_pauses_briefly_and_does_not_double() {
        let t = Instant::now();
        let mut hint = AdmitHint::new();
        // Refused, but the answer's hint admits messages (20): a peak.
        hint.observe(20, Some(30), true, t);
        assert!(hint.holds_back(20, t + PEAK_BACKOFF - MS));
        assert!(hint.holds_back(30, t + MS), "less important ones too");
        assert!(!hint.holds_back(10, t + MS), "more important ones go");
        assert!(!hint.holds_back(20, t + PEAK_BACKOFF));
        // Again: still a short pause, not doubled.
        let again = t + PEAK_BACKOFF;
        hint.observe(20, Some(30), true, again);
        assert!(!hint.holds_back(20, again + PEAK_BACKOFF));
        // A refusal whose hint does not admit it backs off as ever, from HINT_TTL.
        let later = again + PEAK_BACKOFF;
        hint.observe(20, Some(10), true, later);
        assert!(hint.holds_back(20, later + HINT_TTL - MS));
        assert!(!hint.holds_back(20, later + HINT_TTL));
        // A peak's pause does not shorten a longer backoff already running.
        let t = later + HINT_TTL;
        hint.observe(20, Some(10), true, t);
        hint.observe(20, Some(30), true, t + MS);
        assert!(hint.holds_back(20, t + 2 * HINT_TTL - 2 * MS));
    }

    #[test]
    fn a_refusal_holds_less_important_ones_too() {
        let t = Instant::now();
        let mut hint = AdmitHint::new();
        hint.observe(40, Some(80), true, t);
        assert!(hint.holds_back(80, t + MS));
        assert!(hint.holds_back(40, t + MS));
        assert!(!hint.holds_back(30, t + MS));
    }

    #[test]
    fn a_run_request_ends_its_own_backoff_not_a_less_important_one() {
        let t = Instant::now();
        let mut hint = AdmitHint::new();
        hint.observe(80, Some(80), true, t);
        hint.observe(40, Some(80), true, t);
        // A message (20) runs: says nothing of browsing (80) or reads (40).
        hint.observe(20, Some(80), false, t + MS);
        assert!(hint.holds_back(40, t + 2 * MS));
        assert!(hint.holds_back(80, t + 2 * MS));
        // A read runs: reads go again; browsing stays backed off.
        hint.observe(40, Some(80), false, t + 2 * MS);
        assert!(!hint.holds_back(40, t + 3 * MS));
        assert!(hint.holds_back(80, t + 3 * MS));
    }

    #[test]
    fn backoffs_stay_bounded() {
        let t = Instant::now();
        let mut hint = AdmitHint::new();
        for p in (0..1000).rev() {
            hint.observe(p, Some(0), true, t);
        }
        assert_eq!(hint.backoffs.len(), MAX_BACKOFFS);
        assert!(hint.holds_back(0, t + MS));
        assert!(
            hint.backoffs
                .windows(2)
                .all(|w| w[0].priority < w[1].priority)
        );
    }
}
