//! The gateway's places: how many requests run, and the short queue of the most important
//! ones waiting for a place.
//!
//! A place freed goes to the most important waiter whose room it fits (by rank, then
//! first come), handed over directly: the waiter is woken already holding it, so a
//! request arriving at the same moment cannot take it first. Waiters that gave up are
//! skipped. Nothing here is touched on a request's way in or out while nobody waits,
//! beyond the running count itself and one load of the waiting count.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

/// The running count, the waiters and what was refused; shared with every [`Admitted`].
#[derive(Debug)]
pub(super) struct Places {
    running: AtomicUsize,
    /// `queue.len()`, readable without the lock (updated under it).
    waiting: AtomicUsize,
    queue: Mutex<Queue>,
    /// Waiters at most at once.
    capacity: usize,
    pub(super) shed: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    heap: BinaryHeap<Waiter>,
    next_seq: u64,
}

/// One request waiting for a place.
#[derive(Debug)]
struct Waiter {
    rank: u32,
    room: usize,
    seq: u64,
    /// Sent `()` once the place is taken for it.
    given: oneshot::Sender<()>,
}

impl Ord for Waiter {
    /// The greatest is the most important (the lowest rank), then the first to come.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.rank, other.seq).cmp(&(self.rank, self.seq))
    }
}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Waiter {}

/// An admitted request's place among those running; dropping it frees the place (to the
/// most important waiter it fits, if any).
#[derive(Debug)]
#[must_use = "the request counts as running while this is held"]
pub struct Admitted {
    places: Arc<Places>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.places.release();
    }
}

/// A request waiting for a place (see [`Places::enqueue`]); dropped, it gives up, and a
/// place handed to it in the meantime is passed on.
#[derive(Debug)]
pub(super) struct Waiting {
    places: Arc<Places>,
    seq: u64,
    given: Option<oneshot::Receiver<()>>,
}

impl Waiting {
    /// The places it waits among.
    pub(super) fn places(&self) -> &Places {
        &self.places
    }

    /// The place, once one is handed over within `wait`; `None` when none was (and none
    /// will be: it has given up).
    pub(super) async fn place(&mut self, wait: Duration) -> Option<Admitted> {
        let given = self.given.as_mut()?;
        if let Ok(Ok(())) = tokio::time::timeout(wait, given).await {
            self.given = None;
            return Some(Admitted {
                places: Arc::clone(&self.places),
            });
        }
        self.give_up();
        None
    }

    /// Stops waiting; a place handed over just before is this request's to free.
    fn give_up(&mut self) {
        if let Some(mut given) = self.given.take() {
            // Closed first, so that no place is handed over from here on.
            given.close();
            if given.try_recv().is_ok() {
                self.places.release();
            } else {
                self.places.forget(self.seq);
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.give_up();
    }
}

impl Places {
    /// No request running, and room for `capacity` waiters (at least one).
    pub(super) fn new(capacity: usize) -> Places {
        Places {
            running: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            queue: Mutex::default(),
            capacity: capacity.max(1),
            shed: AtomicU64::new(0),
        }
    }

    /// Requests running now.
    pub(super) fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Requests waiting now.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A place, if fewer than `room` requests are running.
    pub(super) fn try_take(self: &Arc<Self>, room: usize) -> Option<Admitted> {
        self.take_below(room).then(|| Admitted {
            places: Arc::clone(self),
        })
    }

    /// Counts one more running request if fewer than `room` are.
    fn take_below(&self, room: usize) -> bool {
        let mut running = self.running.load(Ordering::SeqCst);
        loop {
            if running >= room {
                return false;
            }
            match self.running.compare_exchange_weak(
                running,
                running + 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => running = now,
            }
        }
    }

    /// Queues a request of `rank` that fits below `room` running, or `None` when the
    /// queue is full of live waiters.
    pub(super) fn enqueue(self: &Arc<Self>, rank: u32, room: usize) -> Option<Waiting> {
        let (given, receiver) = oneshot::channel();
        let seq = {
            let mut queue = self.lock();
            if queue.heap.len() >= self.capacity {
                return None;
            }
            let seq = queue.next_seq;
            queue.next_seq += 1;
            queue.heap.push(Waiter {
                rank,
                room,
                seq,
                given,
            });
            // A place freed between the caller's refusal and this push saw nobody
            // waiting: look again now that somebody is.
            self.hand_over(&mut queue);
            seq
        };
        Some(Waiting {
            places: Arc::clone(self),
            seq,
            given: Some(receiver),
        })
    }

    /// Takes the waiter `seq`, which gave up, out of the queue (if it is still there).
    fn forget(&self, seq: u64) {
        let mut queue = self.lock();
        queue.heap.retain(|w| w.seq != seq);
        self.waiting.store(queue.heap.len(), Ordering::SeqCst);
    }

    /// Frees a place, and hands what is free to the waiters.
    fn release(&self) {
        // SeqCst with the waiting count's store in `enqueue`: either this sees the
        // waiter, or the waiter's own hand-over sees this place free.
        self.running.fetch_sub(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let mut queue = self.lock();
            self.hand_over(&mut queue);
        }
    }

    /// Gives free places to the most important waiters they fit, in order, until the
    /// first that does not fit (nobody after it fits either: rooms fall with rank).
    fn hand_over(&self, queue: &mut Queue) {
        while let Some(first) = queue.heap.peek() {
            if first.given.is_closed() {
                queue.heap.pop();
                continue;
            }
            if !self.take_below(first.room) {
                break;
            }
            if let Some(waiter) = queue.heap.pop()
                && waiter.given.send(()).is_err()
            {
                // It gave up between the look and the send: the place is free again.
                self.running.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.store(queue.heap.len(), Ordering::SeqCst);
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_freed_place_goes_to_the_most_important_waiter_it_fits() {
        let places = Arc::new(Places::new(8));
        let held: Vec<_> = (0..4).map(|_| places.try_take(4).expect("room")).collect();
        assert!(places.try_take(4).is_none());
        // Ranks 3 and 5 fit below 4 running, rank 9 below 3 (never, here).
        let mut late = places.enqueue(5, 4).expect("queued");
        let mut first = places.enqueue(3, 4).expect("queued");
        let mut too_low = places.enqueue(9, 3).expect("queued");
        assert_eq!(places.waiting(), 3);
        let mut held = held.into_iter();
        drop(held.next());
        let first = first.place(Duration::ZERO).await.expect("handed the place");
        assert_eq!((places.running(), places.waiting()), (4, 2));
        drop(held.next());
        let late = late
            .place(Duration::ZERO)
            .await
            .expect("the next that fits");
        assert_eq!(places.waiting(), 1);
        // Rank 9's room stays full: it gives up, and nothing leaks.
        assert!(too_low.place(Duration::from_millis(1)).await.is_none());
        drop((first, late, held));
        assert_eq!(places.running(), 0);
        let mut again = places.enqueue(1, 4).expect("queued");
        assert!(again.place(Duration::ZERO).await.is_some(), "free at once");
        assert_eq!((places.running(), places.waiting()), (0, 0));
    }

    #[tokio::test]
    async fn a_place_handed_to_a_waiter_that_gave_up_is_freed() {
        let places = Arc::new(Places::new(4));
        let held = places.try_take(1).expect("room");
        let waiting = places.enqueue(0, 1).expect("queued");
        drop(held);
        // Handed over already; dropped unread, the place comes back.
        assert_eq!(places.running(), 1);
        drop(waiting);
        assert_eq!(places.running(), 0);
        // A waiter that left before a place was freed is skipped.
        let held = places.try_take(1).expect("room");
        drop(places.enqueue(0, 1).expect("queued"));
        let mut next = places.enqueue(1, 1).expect("queued");
        drop(held);
        assert!(next.place(Duration::ZERO).await.is_some());
        assert_eq!((places.running(), places.waiting()), (0, 0));
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_queue() {
        let places = Arc::new(Places::new(4));
        let held: Vec<_> = (0..2).map(|_| places.try_take(2).expect("room")).collect();
        let mut first = places.enqueue(0, 2).expect("queued");
        let mut second = places.enqueue(1, 1).expect("queued");
        assert_eq!((places.running(), places.waiting()), (2, 2));
        assert!(first.place(Duration::from_millis(1)).await.is_none());
        assert_eq!((places.running(), places.waiting()), (2, 1));
        // A place freed now is not handed to the one that left; the next does not fit.
        let mut held = held.into_iter();
        drop(held.next());
        assert_eq!((places.running(), places.waiting()), (1, 1));
        drop(held);
        assert!(second.place(Duration::ZERO).await.is_some());
        assert_eq!((places.running(), places.waiting()), (0, 0));
    }

    #[test]
    fn the_queue_is_bounded_by_live_waiters() {
        let places = Arc::new(Places::new(2));
        let _held = places.try_take(1).expect("room");
        let a = places.enqueue(0, 1).expect("queued");
        let _b = places.enqueue(0, 1).expect("queued");
        assert!(places.enqueue(0, 1).is_none(), "full");
        drop(a);
        // The one that left makes room.
        assert!(places.enqueue(0, 1).is_some());
    }
}
