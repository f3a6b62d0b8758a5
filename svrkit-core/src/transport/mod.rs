//! Socket plumbing shared by client and server connections.
//!
//! Each connection is driven by one task that owns the socket and does both directions:
//! it reads whatever is available, handles every complete frame, and writes everything
//! queued since the last write in one syscall. Producers on other tasks (callers, handlers
//! that finished later) append encoded frames to an [`Outbox`] and wake the driver. With
//! many requests in flight this coalesces frames into few `write`s, and a request that is
//! answered inline costs no cross-task wake-up at all.

mod io;
mod link;
mod outbox;

pub(crate) use io::ReadOutcome;
pub(crate) use link::Link;
pub(crate) use outbox::Outbox;
