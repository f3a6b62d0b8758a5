//! Overload protection: DAGOR admission control on servers, collaborative shedding and
//! adaptive throttling on clients.
//!
//! DAGOR (WeChat, "Overload Control for Scaling WeChat Microservices", SoCC 2018) detects
//! overload from the mean **queuing time** of requests — the time between arriving at the
//! server and the handler starting, which rises when the server itself is short of
//! capacity, unlike response time, which also rises when a downstream is slow. It sheds by
//! **priority** rather than at random: every request carries a business priority B, set at
//! the entry service and inherited downstream, and a user priority U, a keyed hash of the
//! uid that rotates hourly. Because all hops shed the same (B, U) levels, a task that calls
//! an overloaded service k times is either admitted at every hop or refused at the first,
//! so work is not wasted on tasks that fail later: success stays near the optimum for any
//! k, where random shedding decays as p^k.
//!
//! - [`Admission`]: the per-server controller (windows, histogram, level).
//! - [`RuntimeLag`]: how late the async runtime runs what is ready, added to queuing time.
//! - [`next_level`]: the adjustment rule, a pure function.
//! - [`Priority`], [`user_priority`]: the priorities.
//! - Collaborative shedding lives in the client (`Channel` caches each instance's level
//!   from its responses and refuses locally what the instance would refuse).
//! - [`AdaptiveThrottle`]: Google SRE's client-side throttling, as a tower layer.

mod admission;
mod lag;
mod level;
pub(crate) mod metrics;
mod priority;
mod throttle;

pub use admission::{Admission, AdmissionSnapshot, DagorConfig};
pub use lag::RuntimeLag;
pub use level::next_level;
pub use priority::{
    ADMIT_ALL, BUSINESS_LEVELS, DEFAULT_BUSINESS_PRIORITY, DEFAULT_USER_PRIORITY_KEY, LEVELS,
    Priority, USER_LEVELS, USER_PRIORITY_ROTATION_SECS, level_from_wire, level_to_wire,
    user_priority, user_priority_at,
};
pub use throttle::{AdaptiveThrottle, AdaptiveThrottleLayer, ThrottleConfig};
