//! Admission at the edge: the gateway bounds the requests it has running at once, and
//! keeps the last part of that bound for the more important ones, so that under
//! overload the least important requests (by business priority, then DAGOR's user
//! priority) are refused first, at the cost of reading their frame and nothing more.
//!
//! The services below shed by DAGOR, but a refusal there comes after the gateway has
//! parsed and forwarded the request, and a queue there (a worker queue, a store's group
//! commit, a core shared with other processes) is seen by them late or not at all. What
//! the gateway has running shows every such queue: by Little's law, requests in flight
//! are throughput times response time, so when anything below slows down, the count
//! rises and the edge refuses before the queue grows further. A request is admitted at
//! once or refused `overloaded` (reason `edge_shed`), but for the short, bounded wait of
//! the most important ones described below.
//!
//! Requests are ranked by business priority, then by user priority: `rank = b * 128 +
//! (user - 1)`, where `b` counts the distinct business priorities of the action table
//! from the most important (0) to unknown actions (last). A request of rank `r` is
//! admitted while fewer than `limit * (1 - s / (2 * S))` requests are running, where `s`
//! is the rank's place among the `S` places of the bands and the reserve below (the
//! rank itself above it): the least important has half the limit, the most important
//! all of it, and each business priority a band of the other half in which its users are
//! ordered too. (Ranking over DAGOR's 255 business levels instead would leave the six in
//! use a few places each, and user priority none.)
//!
//! The two most important business priorities (sign-in and messaging) that find no room
//! wait for one, up to [`EDGE_WAIT`] and at most a [`WAITING_SHARE`] of the limit of them
//! at once; every other request is refused at once. Under a load the backend cannot
//! serve, the count sits where the bands meet, and a stall below (a store's commit, a
//! descheduled process) lifts it into the important bands for a few tens of
//! milliseconds: refusing then would lose a message to a moment's peak, while a place
//! frees within the wait. A freed place goes to the most important waiter first
//! ([`places`]). Waiters are not running: they cost the services nothing. Under four
//! times the capacity the wait raised messaging's success (`svrkit-bench
//! backend-overload`; figures in `docs/MEASUREMENTS.md`).
//!
//! Between those two and the rest lies a reserve: one band's places ([`RESERVE_BANDS`])
//! in which no request ranks. Without it the bands touch, so the count that sheds
//! contact changes sits just under the room of the least important user's messages: a
//! stall of a few milliseconds made those messages wait, and the hint, which keeps a
//! margin above the averaged count, told their clients to hold them back. With it, the
//! count where anything below messaging is shed stays a band (128 of 2,048 places) under
//! every message's room; reads give up the reserve's places (figures in
//! `docs/MEASUREMENTS.md`).
//!
//! Clients are told what is admitted, so that well-behaved ones hold back what would be
//! refused instead of sending it (see [`EdgeAdmission::ceiling`]): DAGOR's collaborative
//! admission, as between services, carried to the last hop.
//!
//! The hint is taken from the count averaged over the last [`HINT_SMOOTHING`], not from
//! the count of the moment. Clients act on a hint for as long as it is fresh and all at
//! once: from the bare count, a peak held back everything but sign-in from many users
//! for a hint's lifetime, and a dip let every held-back read in together. Under
//! overload the count then swung widely a few times a second, and messages, the class
//! just above the one being shed, lost requests to the swings (`docs/MEASUREMENTS.md`). Admission itself still compares
//! the count of the moment: it is what bounds the work running.

mod bands;
mod places;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use svrkit::Code;
use svrkit::overload::{BUSINESS_LEVELS, Priority, USER_LEVELS};

use crate::actions::find_action;
use crate::error::ApiError;

/// The largest limit [`EdgeAdmission::new`] takes (a million requests running at once).
pub const MAX_LIMIT: usize = 1_000_000;

/// The hint's margin, as a divisor of the limit: a 32nd (64 places of 2,048, about half
/// a business priority's band).
pub const HINT_MARGIN: usize = 32;

/// The time over which the hint averages the running count.
pub const HINT_SMOOTHING: Duration = Duration::from_millis(250);

/// How long a request of the [`WAITING_BUSINESS`] most important business priorities may
/// wait for a place before it is refused.
pub const EDGE_WAIT: Duration = Duration::from_millis(250);

/// Requests waiting at once, as a divisor of the limit (128 of 2,048).
pub const WAITING_SHARE: usize = 16;

pub use bands::{RESERVE_BANDS, WAITING_BUSINESS};
pub use places::Admitted;

use bands::{ceiling_of, level_of, rank_of, room_of, user_of};

/// What the gateway admits; one per gateway process.
#[derive(Debug)]
pub struct EdgeAdmission {
    limit: usize,
    places: Arc<places::Places>,
    wait: Duration,
    /// The running count averaged over [`HINT_SMOOTHING`] (an `f64`'s bits), and when it
    /// was last moved, in microseconds since `epoch`. Updated without a lock: of two
    /// racing updates one is lost, which is one sample fewer.
    smoothed: AtomicU64,
    smoothed_at_us: AtomicU64,
    epoch: Instant,
}

/// A request admitted now, or waiting for a place ([`EdgeAdmission::admit_or_wait`]).
#[derive(Debug)]
#[must_use = "a request admitted or waiting holds or awaits a place"]
pub enum Entry {
    /// Admitted: running from now.
    Now(Admitted),
    /// Waiting for a place.
    Waiting(Waiting),
}

/// A request of an important business priority waiting for a place at the edge.
#[derive(Debug)]
pub struct Waiting {
    waiting: places::Waiting,
    wait: Duration,
}

impl Entry {
    /// The request's place: at once, or when one is handed over within the wait; an
    /// `overloaded` refusal (reason `edge_shed`) when none is.
    pub async fn ready(self) -> Result<Admitted, ApiError> {
        match self {
            Entry::Now(admitted) => Ok(admitted),
            Entry::Waiting(Waiting { mut waiting, wait }) => match waiting.place(wait).await {
                Some(admitted) => Ok(admitted),
                None => Err(refuse(waiting.places())),
            },
        }
    }
}

/// Counts a refusal, and the answer to give.
fn refuse(places: &places::Places) -> ApiError {
    places.shed.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("wx_access_shed_total").increment(1);
    ApiError::new(
        Code::Overloaded,
        "the service is busy; this request was not run, retry later",
    )
    .reason("edge_shed")
}

impl EdgeAdmission {
    /// A gateway that runs at most `limit` requests at once (kept within 2 and
    /// [`MAX_LIMIT`]).
    pub fn new(limit: usize) -> EdgeAdmission {
        EdgeAdmission::with_wait(limit, EDGE_WAIT)
    }

    /// [`EdgeAdmission::new`] whose important requests wait up to `wait` for a place
    /// (none: `Duration::ZERO`).
    pub fn with_wait(limit: usize, wait: Duration) -> EdgeAdmission {
        let limit = limit.clamp(2, MAX_LIMIT);
        EdgeAdmission {
            limit,
            places: Arc::new(places::Places::new(limit / WAITING_SHARE)),
            wait,
            smoothed: AtomicU64::new(0f64.to_bits()),
            smoothed_at_us: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Moves the averaged count towards `running` by the time since it last moved, and
    /// returns it: an exponential average over [`HINT_SMOOTHING`], which becomes the
    /// count of the moment after a quiet spell of that long.
    fn smooth(&self, running: usize, now: Instant) -> f64 {
        let now_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
        let before = f64::from_bits(self.smoothed.load(Ordering::Relaxed));
        // A sample no newer than the last (a racing thread's) moves nothing.
        let last_us = self.smoothed_at_us.fetch_max(now_us, Ordering::Relaxed);
        if now_us <= last_us {
            return before;
        }
        let weight = ((now_us - last_us) as f64 / HINT_SMOOTHING.as_micros() as f64).min(1.0);
        let after = before + (running as f64 - before) * weight;
        self.smoothed.store(after.to_bits(), Ordering::Relaxed);
        after
    }

    /// The DAGOR priority of `action` for user `uid` (0: nobody signed in, the least
    /// important user). An unknown action is admitted as the least important business;
    /// the gateway then answers it `not_found`.
    pub fn priority(action: &str, uid: u64) -> Priority {
        let business = find_action(action).map_or(BUSINESS_LEVELS, |a| a.priority);
        Priority::new(business, user_of(uid))
    }

    /// Admits a request of `action` by `uid` while it runs, or refuses it: `Err` is the
    /// `overloaded` answer to give.
    /// Nothing waits: see [`EdgeAdmission::admit_or_wait`].
    pub fn admit(&self, action: &str, uid: u64) -> Result<Admitted, ApiError> {
        let room = room_of(self.limit, rank_of(Self::priority(action, uid)));
        self.places
            .try_take(room)
            .ok_or_else(|| refuse(&self.places))
    }

    /// Admits a request of `action` by `uid` as [`EdgeAdmission::admit`] does, except
    /// that one of the [`WAITING_BUSINESS`] most important business priorities that finds
    /// no room waits for one ([`Entry::ready`]), unless a [`WAITING_SHARE`] of the limit
    /// already wait.
    pub fn admit_or_wait(&self, action: &str, uid: u64) -> Result<Entry, ApiError> {
        let rank = rank_of(Self::priority(action, uid));
        let room = room_of(self.limit, rank);
        if let Some(admitted) = self.places.try_take(room) {
            return Ok(Entry::Now(admitted));
        }
        if self.wait.is_zero() || rank >= WAITING_BUSINESS * USER_LEVELS {
            return Err(refuse(&self.places));
        }
        match self.places.enqueue(rank, room) {
            Some(waiting) => {
                metrics::counter!("wx_access_edge_waited_total").increment(1);
                Ok(Entry::Waiting(Waiting {
                    waiting,
                    wait: self.wait,
                }))
            }
            None => Err(refuse(&self.places)),
        }
    }

    /// The least important business priority (the largest number) that user `uid` may
    /// send now, or `None` while everything is admitted. A request whose action has a
    /// larger priority number would be refused `overloaded`. `Some(0)`: nothing is.
    ///
    /// The hint keeps a margin of [`HINT_MARGIN`] of the limit: it names what would still
    /// be admitted with that many more requests running. It reaches the client an answer
    /// later, and the client's next request later still, when others may have started;
    /// a hint that named the bare level let the class at the edge through only to be
    /// refused, which costs the gateway a frame each way.
    ///
    /// The count it starts from is averaged over [`HINT_SMOOTHING`] (see the module's
    /// notes). A refusal's hint may therefore still admit the refused priority: it was
    /// refused at a peak, and the product's clients pause it only briefly
    /// (`wx_client::PEAK_BACKOFF`).
    pub fn ceiling(&self, uid: u64) -> Option<u32> {
        self.ceiling_at(uid, Instant::now())
    }

    /// [`EdgeAdmission::ceiling`] at `now`. While the average admits everything, the
    /// count of the moment is heard: the hint is gone only when both agree.
    fn ceiling_at(&self, uid: u64, now: Instant) -> Option<u32> {
        let running = self.places.running();
        let averaged = self.smooth(running, now).round() as usize;
        let level = self
            .hinted_level(averaged)
            .or_else(|| self.hinted_level(running))?;
        Some(ceiling_of(level, user_of(uid)))
    }

    /// The level a hint names when `count` requests are running: what would still be
    /// admitted with [`HINT_MARGIN`] of the limit more.
    fn hinted_level(&self, count: usize) -> Option<u32> {
        level_of(self.limit, count + self.limit / HINT_MARGIN)
    }

    /// Requests running now.
    pub fn running(&self) -> usize {
        self.places.running()
    }

    /// Requests waiting for a place now.
    pub fn waiting(&self) -> usize {
        self.places.waiting()
    }

    /// Requests refused so far.
    pub fn shed(&self) -> u64 {
        self.places.shed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::bands::{FIRST_NOT_WAITING, RESERVE_RANKS, ranks, spaced_ranks};
    use super::*;
    use crate::actions::ACTIONS;
    use svrkit::overload::user_priority;

    /// A time [`HINT_SMOOTHING`] after the hint's average last moved.
    fn later(edge: &EdgeAdmission) -> Instant {
        let last = Duration::from_micros(edge.smoothed_at_us.load(Ordering::Relaxed));
        edge.epoch + last + HINT_SMOOTHING
    }

    /// The hint once the count has stayed where it is for a while.
    fn settled(edge: &EdgeAdmission, uid: u64) -> Option<u32> {
        edge.ceiling_at(uid, later(edge))
    }

    /// The hint the count of the moment would give.
    fn bare(edge: &EdgeAdmission, uid: u64) -> Option<u32> {
        let level = edge.hinted_level(edge.running())?;
        Some(ceiling_of(level, user_of(uid)))
    }

    #[test]
    fn the_least_important_get_half_the_limit_and_each_priority_its_band() {
        let last = ranks() - 1;
        assert_eq!(room_of(2048, 0), 2048);
        // Half, and a band's rounding at most.
        let least = room_of(2048, last);
        assert!(
            (1024..1024 + 2048 / spaced_ranks() as usize).contains(&least),
            "{least}"
        );
        let rank = |b, u| rank_of(Priority::new(b, u));
        // Business first, then the user, each with places of its own.
        assert!(room_of(2048, rank(20, 128)) > room_of(2048, rank(30, 1)));
        assert!(room_of(2048, rank(20, 1)) > room_of(2048, rank(20, 64)));
        assert!(room_of(2048, rank(20, 64)) > room_of(2048, rank(20, 128)));
        assert!(room_of(2048, rank(80, 128)) > room_of(2048, rank(255, 1)));
        // A priority the table does not use ranks with the next one it does.
        assert_eq!(rank(15, 3), rank(20, 3));
        assert_eq!(rank(200, 3), rank(255, 3));
    }

    #[test]
    fn a_reserve_band_lies_between_messaging_and_everything_below_it() {
        let rank = |b, u| rank_of(Priority::new(b, u));
        let band = 2048 / (2 * (spaced_ranks() / USER_LEVELS) as usize);
        // The least important message has a band's places more than the most important
        // contact write, and nothing ranks in between.
        let top_below = room_of(2048, rank(30, 1));
        let gap = room_of(2048, rank(20, USER_LEVELS)) - top_below;
        assert!(gap >= band, "gap {gap}, band {band}");
        // Contact writes shed for every user: messages still have room, and the hint,
        // margin included, still names messaging to every user.
        let edge = EdgeAdmission::new(2048);
        let _running: Vec<_> = (0..top_below)
            .map(|_| edge.admit("login", 1).expect("sign-in has room"))
            .collect();
        for uid in 1..=500 {
            assert!(edge.admit("profile.update", uid).is_err(), "uid {uid}");
            assert!(
                settled(&edge, uid).is_some_and(|c| c >= 20),
                "uid {uid}: messaging is hinted"
            );
            drop(edge.admit("message.send", uid).expect("messaging has room"));
        }
    }

    #[test]
    fn the_level_is_exactly_what_admission_admits() {
        let last = ranks() - 1;
        for limit in [2, 3, 64, 512, 2048] {
            for running in 0..=limit + 1 {
                let level = level_of(limit, running);
                for rank in [
                    0,
                    1,
                    127,
                    128,
                    FIRST_NOT_WAITING - 1,
                    FIRST_NOT_WAITING,
                    FIRST_NOT_WAITING + 1,
                    FIRST_NOT_WAITING + RESERVE_RANKS,
                    last - 1,
                    last,
                ] {
                    let admitted = running < room_of(limit, rank);
                    let by_level = match level {
                        None => true,
                        Some(u32::MAX) => false,
                        Some(level) => rank <= level,
                    };
                    assert_eq!(
                        admitted, by_level,
                        "limit {limit} running {running} rank {rank}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_ceiling_is_the_last_business_priority_the_level_admits_for_that_user() {
        let rank = |b, u| rank_of(Priority::new(b, u));
        // Level (b 20, u 64): b 20 for users 1..=64, b 10 for the others.
        let level = rank(20, 64);
        assert_eq!(ceiling_of(level, 1), 20);
        assert_eq!(ceiling_of(level, 64), 20);
        assert_eq!(ceiling_of(level, 65), 10);
        assert_eq!(ceiling_of(0, 1), 10);
        assert_eq!(ceiling_of(0, 2), 0);
        assert_eq!(ceiling_of(u32::MAX, 1), 0);
        for level in [0, 5, 127, 128, 300, ranks() - 2] {
            for user in [1, 2, 64, 127, 128] {
                let c = ceiling_of(level, user);
                for action in ACTIONS {
                    let admitted = rank(action.priority, user) <= level;
                    assert_eq!(
                        admitted,
                        action.priority <= c,
                        "level {level} {} u {user}",
                        action.name
                    );
                }
            }
        }
    }

    #[test]
    fn a_full_edge_refuses_the_least_important_first_and_frees_places_on_drop() {
        let edge = EdgeAdmission::new(8);
        assert_eq!(settled(&edge, 7), None);
        // Half the limit is open to everything; browsing (the sixth of seven ranks) gets
        // half of the rest or less, depending on the user's priority.
        let mut held = Vec::new();
        let refused = loop {
            match edge.admit("moments.timeline", 7) {
                Ok(admitted) => held.push(admitted),
                Err(e) => break e,
            }
            assert!(held.len() <= 8, "never refused");
        };
        assert!((4..=5).contains(&held.len()), "{} held", held.len());
        assert_eq!(refused.code, Code::Overloaded);
        assert_eq!(refused.body()["error"]["reason"], "edge_shed");
        let ceiling = settled(&edge, 7).expect("a ceiling while shedding");
        assert!((20..80).contains(&ceiling), "ceiling {ceiling}");
        let message = edge.admit("message.send", 7).expect("messaging admitted");
        assert_eq!(edge.running(), held.len() + 1);
        assert_eq!(edge.shed(), 1);
        drop(held);
        drop(message);
        assert_eq!(edge.running(), 0);
        assert_eq!(settled(&edge, 7), None);
        let _again = edge.admit("moments.timeline", 7).expect("room again");
    }

    /// Sign-ins of `uid` admitted until the next is refused: the edge full to the top.
    fn sign_ins_until_refused(edge: &EdgeAdmission, uid: u64) -> Vec<Admitted> {
        std::iter::from_fn(|| edge.admit("login", uid).ok()).collect()
    }

    #[tokio::test]
    async fn sign_in_and_messaging_wait_for_a_place_and_the_rest_are_refused_at_once() {
        let edge = EdgeAdmission::with_wait(32, Duration::from_secs(3600));
        let mut held = sign_ins_until_refused(&edge, 7);
        let shed = edge.shed();
        // Contact writes and browsing are refused without waiting.
        for action in [
            "profile.update",
            "friends.list",
            "moments.timeline",
            "no.such",
        ] {
            let refused = edge.admit_or_wait(action, 7).expect_err(action);
            assert_eq!(refused.body()["error"]["reason"], "edge_shed", "{action}");
        }
        assert_eq!(edge.shed(), shed + 4);
        // A message and a sign-in wait; the sign-in is the more important.
        let message = edge.admit_or_wait("message.send", 7).expect("waits");
        let login = edge.admit_or_wait("login", 7).expect("waits");
        assert!(matches!(login, Entry::Waiting(_)));
        assert_eq!((edge.waiting(), edge.running()), (2, held.len()));
        drop(held.pop());
        assert_eq!(edge.waiting(), 1, "the sign-in took the freed place");
        let login = login.ready().await.expect("admitted");
        // Places free until one is the message's.
        while edge.waiting() > 0 {
            drop(held.pop().expect("a place to free"));
        }
        let message = message.ready().await.expect("admitted");
        assert_eq!(edge.running(), held.len() + 2);
        drop((login, message, held));
        assert_eq!(edge.running(), 0);
        assert_eq!(edge.shed(), shed + 4, "nothing more refused");
    }

    #[tokio::test]
    async fn a_wait_that_finds_no_place_is_refused_and_a_full_queue_refuses_at_once() {
        let edge = EdgeAdmission::with_wait(32, Duration::from_millis(1));
        let held = sign_ins_until_refused(&edge, 1);
        let shed = edge.shed();
        let waiting = edge.admit_or_wait("message.send", 1).expect("waits");
        let refused = waiting.ready().await.expect_err("no place within the wait");
        assert_eq!(refused.code, Code::Overloaded);
        assert_eq!(refused.body()["error"]["reason"], "edge_shed");
        assert_eq!((edge.shed(), edge.waiting()), (shed + 1, 0));
        // At most a WAITING_SHARE of the limit wait: two of 32.
        let queued: Vec<_> = (0..32 / WAITING_SHARE)
            .map(|_| edge.admit_or_wait("message.send", 1).expect("waits"))
            .collect();
        assert_eq!(edge.waiting(), 2);
        let refused = edge
            .admit_or_wait("message.send", 1)
            .expect_err("the queue is full");
        assert_eq!(refused.body()["error"]["reason"], "edge_shed");
        drop(queued);
        assert_eq!(edge.waiting(), 0);
        drop(held);
        assert_eq!(edge.running(), 0);
        // Without a wait, nothing waits.
        let edge = EdgeAdmission::with_wait(8, Duration::ZERO);
        let _held = sign_ins_until_refused(&edge, 1);
        assert!(edge.admit_or_wait("login", 1).is_err());
    }

    #[test]
    fn the_hint_keeps_a_margin() {
        let edge = EdgeAdmission::new(2048);
        let margin = 2048 / HINT_MARGIN;
        let mut held = Vec::new();
        // Fill to just below the point where browsing is refused for user 7.
        while edge
            .admit("moments.timeline", 7)
            .map(|a| held.push(a))
            .is_ok()
        {}
        let refused_from = held.len();
        drop(held.drain(refused_from - margin..));
        // Browsing would still be admitted now, but not after `margin` more requests
        // start: the hint already holds it back.
        let ceiling = settled(&edge, 7).expect("a hint");
        assert!(ceiling < 80, "ceiling {ceiling}");
        let one = edge
            .admit("moments.timeline", 7)
            .expect("admitted without the margin");
        drop(one);
        // With the margin's room, the hint lets it through again.
        drop(held.drain(held.len() - 1..));
        assert!(settled(&edge, 7).is_none_or(|c| c >= 80));
    }

    #[test]
    fn the_hint_follows_the_count_averaged_not_its_peaks() {
        let edge = EdgeAdmission::new(2048);
        let mut held = Vec::new();
        while let Ok(admitted) = edge.admit("profile.update", 7) {
            held.push(admitted);
        }
        // Shedding contact writes for a while: user 7 may do what is more important
        // (red envelopes, messages).
        let t = later(&edge);
        let above_contact_writes = crate::actions::priority::ENVELOPE_GET;
        assert_eq!(edge.ceiling_at(7, t), Some(above_contact_writes));
        // A peak that the bare count would answer with sign-in only…
        while bare(&edge, 7) != Some(10) {
            held.push(edge.admit("login", 7).expect("sign-in is admitted"));
        }
        let ms = Duration::from_millis(1);
        // …moves the hint a little at a time…
        for after in [10 * ms, 20 * ms] {
            let ceiling = edge.ceiling_at(7, t + after);
            assert!(
                ceiling.is_some_and(|c| c >= 20),
                "{ceiling:?} after {after:?}"
            );
        }
        // …and all the way once it has lasted.
        assert_eq!(edge.ceiling_at(7, t + 20 * ms + HINT_SMOOTHING), Some(10));
        // A dip likewise: the hint comes back up over the same time.
        drop(held);
        let t = t + 20 * ms + HINT_SMOOTHING;
        assert!(
            edge.ceiling_at(7, t + 10 * ms)
                .is_some_and(|c| c <= above_contact_writes)
        );
        assert_eq!(edge.ceiling_at(7, t + 10 * ms + HINT_SMOOTHING), None);
    }

    #[test]
    fn any_configured_limit_is_kept_in_range() {
        for limit in [0, 1, usize::MAX] {
            let edge = EdgeAdmission::new(limit);
            assert!((2..=MAX_LIMIT).contains(&edge.limit));
            assert_eq!(settled(&edge, 1), None);
            let admitted = edge.admit("login", 1).expect("an empty edge admits");
            assert_eq!(edge.running(), 1);
            drop(admitted);
            assert_eq!(edge.running(), 0);
        }
    }

    #[test]
    fn known_actions_carry_their_business_priority_and_strangers_the_least() {
        let signed_in = EdgeAdmission::priority("message.send", 42);
        assert_eq!(signed_in.business, crate::actions::priority::MESSAGING);
        assert_eq!(signed_in.user, user_priority(42));
        let anonymous = EdgeAdmission::priority("login", 0);
        assert_eq!(anonymous.user, USER_LEVELS);
        assert_eq!(
            EdgeAdmission::priority("no.such.action", 42).business,
            BUSINESS_LEVELS
        );
    }
}
