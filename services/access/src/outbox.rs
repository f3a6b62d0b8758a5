//! A long connection's outgoing frames: a bounded queue that holds no memory while it is
//! empty.
//!
//! Most of a gateway's connections are idle, so what each holds while idle is most of
//! the gateway's memory. tokio's bounded channel allocates its first block of 32 slots
//! when it is made (about 800 bytes for `String` frames, a tenth of an idle
//! connection); this queue allocates when a frame is queued and gives the room back once
//! it has drained.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// Room kept by a drained queue: a queue that grew past it shrinks back.
const KEEP: usize = 4;

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The queue holds as many frames as it may (a client that is not reading).
    #[error("the connection's queue is full")]
    Full,
    /// The connection is gone.
    #[error("the connection is closed")]
    Closed,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<VecDeque<String>>,
    capacity: usize,
    /// Wakes the receiver when a frame is queued or the last sender leaves.
    queued: Notify,
    /// Wakes a sender waiting for room.
    room: Notify,
    senders: AtomicUsize,
    closed: AtomicBool,
}

/// The sending side (cloned for every task that answers on the connection).
#[derive(Debug)]
pub struct Outbox(Arc<Shared>);

/// The receiving side: the connection's writer.
#[derive(Debug)]
pub struct Outgoing(Arc<Shared>);

/// A queue of at most `capacity` frames.
pub fn outbox(capacity: usize) -> (Outbox, Outgoing) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        capacity: capacity.max(1),
        queued: Notify::new(),
        room: Notify::new(),
        senders: AtomicUsize::new(1),
        closed: AtomicBool::new(false),
    });
    (Outbox(Arc::clone(&shared)), Outgoing(shared))
}

impl Outbox {
    /// Queues `frame` unless the queue is full or the connection gone.
    pub fn try_send(&self, frame: String) -> Result<(), SendError> {
        self.push(frame).map_err(|(e, _)| e)
    }

    /// Queues `frame`, waiting for room while the queue is full.
    pub async fn send(&self, mut frame: String) -> Result<(), SendError> {
        loop {
            // Registered before trying, so room made in between is not missed.
            let room = self.0.room.notified();
            match self.push(frame) {
                Err((SendError::Full, back)) => frame = back,
                done => return done.map_err(|(e, _)| e),
            }
            room.await;
        }
    }

    fn push(&self, frame: String) -> Result<(), (SendError, String)> {
        if self.0.closed.load(Ordering::Acquire) {
            return Err((SendError::Closed, frame));
        }
        {
            let mut queue = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.len() >= self.0.capacity {
                return Err((SendError::Full, frame));
            }
            queue.push_back(frame);
        }
        self.0.queued.notify_one();
        Ok(())
    }
}

impl Clone for Outbox {
    fn clone(&self) -> Outbox {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Outbox(Arc::clone(&self.0))
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.queued.notify_one();
        }
    }
}

impl Outgoing {
    /// The next frame, waiting for one; `None` once every sender is gone and the queue
    /// drained.
    pub async fn recv(&mut self) -> Option<String> {
        loop {
            // `notify_one` keeps a permit when nobody waits, so a frame queued between
            // this check and the wait still wakes it.
            if let Some(frame) = self.try_recv() {
                return Some(frame);
            }
            if self.0.senders.load(Ordering::Acquire) == 0 {
                return self.try_recv();
            }
            self.0.queued.notified().await;
        }
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<String> {
        let frame = {
            let mut queue = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let frame = queue.pop_front()?;
            if queue.is_empty() && queue.capacity() > KEEP {
                queue.shrink_to(KEEP);
            }
            frame
        };
        self.0.room.notify_one();
        Some(frame)
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.room.notify_waiters();
        // What was queued is dropped with the connection.
        let drained =
            std::mem::take(&mut *self.0.queue.lock().unwrap_or_else(PoisonError::into_inner));
        drop(drained);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn frames_come_out_in_order_and_a_full_queue_refuses() {
        let (tx, mut rx) = outbox(2);
        tx.try_send("a".into()).expect("test setup");
        tx.clone().try_send("b".into()).expect("test setup");
        assert_eq!(tx.try_send("c".into()), Err(SendError::Full));
        assert_eq!(rx.recv().await.as_deref(), Some("a"));
        assert_eq!(rx.try_recv().as_deref(), Some("b"));
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn an_idle_queue_holds_no_room_and_a_drained_one_gives_it_back() {
        let (tx, mut rx) = outbox(256);
        assert_eq!(tx.0.queue.lock().expect("not poisoned").capacity(), 0);
        for i in 0..100 {
            tx.try_send(i.to_string()).expect("test setup");
        }
        while rx.try_recv().is_some() {}
        assert!(tx.0.queue.lock().expect("not poisoned").capacity() <= KEEP);
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_room_and_the_receiver_wakes() {
        let (tx, mut rx) = outbox(1);
        tx.try_send("first".into()).expect("test setup");
        let sender = tx.clone();
        let waiting = tokio::spawn(async move { sender.send("second".into()).await });
        assert_eq!(rx.recv().await.as_deref(), Some("first"));
        // The receiver waits for the frame the sender queues once there is room.
        let second = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert_eq!(second.expect("test setup").as_deref(), Some("second"));
        assert_eq!(waiting.await.expect("test setup"), Ok(()));
    }

    #[tokio::test]
    async fn the_receiver_ends_with_the_last_sender_and_senders_with_the_receiver() {
        let (tx, mut rx) = outbox(4);
        let other = tx.clone();
        tx.try_send("last".into()).expect("test setup");
        drop(tx);
        drop(other);
        assert_eq!(
            rx.recv().await.as_deref(),
            Some("last"),
            "queued frames drain first"
        );
        assert_eq!(rx.recv().await, None);

        let (tx, rx) = outbox(1);
        tx.try_send("fills it".into()).expect("test setup");
        let sender = tx.clone();
        let blocked = tokio::spawn(async move { sender.send("waits".into()).await });
        drop(rx);
        let ended = tokio::time::timeout(Duration::from_secs(10), blocked).await;
        assert_eq!(
            ended.expect("test setup").expect("test setup"),
            Err(SendError::Closed)
        );
        assert_eq!(tx.try_send("late".into()), Err(SendError::Closed));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_in_a_busy_select_loop_misses_no_frame() {
        // As a session does: the queue's branch loses races to another busy branch, so
        // its wait is dropped again and again; every frame must still come out.
        const FRAMES: usize = 20_000;
        let (tx, mut rx) = outbox(256);
        let (noise_tx, mut noise) = tokio::sync::mpsc::unbounded_channel::<()>();
        let writer = tokio::spawn(async move {
            let mut got = 0;
            while got < FRAMES {
                tokio::select! {
                    Some(()) = noise.recv() => {}
                    Some(_) = rx.recv() => got += 1,
                }
            }
            got
        });
        let producers: Vec<_> = (0..4)
            .map(|_| {
                let (tx, noise_tx) = (tx.clone(), noise_tx.clone());
                tokio::spawn(async move {
                    for i in 0..FRAMES / 4 {
                        tx.send(i.to_string()).await.expect("the writer is there");
                        let _ = noise_tx.send(());
                        if i % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for p in producers {
            p.await.expect("a producer");
        }
        let got = tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .expect("every frame came out")
            .expect("the writer");
        assert_eq!(got, FRAMES);
    }
}
