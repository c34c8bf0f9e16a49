//! The bounded queues of a connection: many producers, one consumer at a time.
//!
//! A [`Queue`] is a `VecDeque` behind a lock with two notifications, instead of a tokio
//! channel, for memory: a tokio channel allocates a block of 32 slots when it is created and
//! keeps it for its life, where this queue holds nothing while empty, which an idle connection
//! almost always is (its storage is released once drained). The lock is held for a push or a
//! pop only, never across an `.await`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

/// Storage kept after draining, in items: enough for the usual trickle without reallocating,
/// small enough not to matter while idle.
const KEPT_CAPACITY: usize = 4;

/// A bounded FIFO queue.
#[derive(Debug)]
pub struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    /// The consumer waits here for an item (a permit is kept when it is not waiting).
    filled: Notify,
    /// Producers waiting for room wait here.
    drained: Notify,
    /// Producers in [`Queue::push`]: a pop wakes `drained` only when there are some, since
    /// `Notify::notify_waiters` takes a lock every time and most queues never have a waiting
    /// producer (fan-out only uses `try_push`).
    pushing: AtomicUsize,
}

impl<T> Queue<T> {
    /// A queue of at most `capacity` items (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            filled: Notify::new(),
            drained: Notify::new(),
            pushing: AtomicUsize::new(0),
        }
    }

    fn items(&self) -> MutexGuard<'_, VecDeque<T>> {
        match self.items.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Adds `item` if there is room; gives it back if the queue is full.
    pub fn try_push(&self, item: T) -> Result<(), T> {
        let mut items = self.items();
        if items.len() >= self.capacity {
            return Err(item);
        }
        items.push_back(item);
        drop(items);
        self.filled.notify_one();
        Ok(())
    }

    /// Adds `item`, waiting for room. Dropping the future drops the item.
    pub async fn push(&self, item: T) {
        let Err(mut item) = self.try_push(item) else {
            return;
        };
        // Counted before the attempts below: a pop that makes room after a failed attempt
        // takes the lock after it, so it sees the count (the lock orders the two) and wakes
        // this producer.
        self.pushing.fetch_add(1, Ordering::SeqCst);
        let _counted = Pushing(&self.pushing);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the attempt, so room made in between is not missed.
            drained.as_mut().enable();
            match self.try_push(item) {
                Ok(()) => return,
                Err(back) => item = back,
            }
            drained.await;
        }
    }

    /// The oldest item, if any.
    pub fn try_pop(&self) -> Option<T> {
        let mut items = self.items();
        let item = items.pop_front()?;
        if items.is_empty() && items.capacity() > KEPT_CAPACITY {
            *items = VecDeque::new();
        }
        drop(items);
        if self.pushing.load(Ordering::SeqCst) > 0 {
            self.drained.notify_waiters();
        }
        Some(item)
    }

    /// The oldest item, waiting for one. Cancel-safe; meant for one consumer at a time.
    pub async fn pop(&self) -> T {
        loop {
            if let Some(item) = self.try_pop() {
                return item;
            }
            // A push after the attempt above leaves a permit, so this cannot miss it.
            self.filled.notified().await;
        }
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.items().len()
    }
}

/// Uncounts a producer of [`Queue::push`] when it is done or dropped.
struct Pushing<'a>(&'a AtomicUsize);

impl Drop for Pushing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn items_come_out_in_order_and_a_full_queue_gives_the_item_back() {
        let queue = Queue::new(2);
        assert_eq!(queue.try_push(1), Ok(()));
        assert_eq!(queue.try_push(2), Ok(()));
        assert_eq!(queue.try_push(3), Err(3));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.try_pop(), Some(1));
        assert_eq!(queue.try_push(3), Ok(()));
        assert_eq!(queue.try_pop(), Some(2));
        assert_eq!(queue.try_pop(), Some(3));
        assert_eq!(queue.try_pop(), None);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn a_drained_queue_lets_go_of_its_storage() {
        let queue = Queue::new(1000);
        for n in 0..100 {
            queue.try_push(n).unwrap();
        }
        while queue.try_pop().is_some() {}
        assert_eq!(queue.items().capacity(), 0);
    }

    #[tokio::test]
    async fn the_consumer_wakes_for_an_item_pushed_while_it_waits() {
        let queue = Arc::new(Queue::new(4));
        let consumer = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await }
        });
        tokio::task::yield_now().await;
        queue.try_push("hello").unwrap();
        let popped = tokio::time::timeout(Duration::from_secs(5), consumer)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(popped, "hello");
    }

    #[tokio::test]
    async fn a_producer_waits_for_room() {
        let queue = Arc::new(Queue::new(1));
        queue.try_push(1).unwrap();
        let producer = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(2).await }
        });
        tokio::task::yield_now().await;
        assert!(!producer.is_finished());
        assert_eq!(queue.try_pop(), Some(1));
        tokio::time::timeout(Duration::from_secs(5), producer)
            .await
            .expect("room made")
            .unwrap();
        assert_eq!(queue.try_pop(), Some(2));
    }

    #[tokio::test]
    async fn a_producer_that_gives_up_waiting_is_no_longer_counted() {
        let queue = Queue::new(1);
        queue.try_push(1).unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(10), queue.push(2)).await;
        assert!(gave_up.is_err(), "no room was made");
        assert_eq!(queue.pushing.load(Ordering::SeqCst), 0);
        assert_eq!(queue.try_pop(), Some(1));
        queue.push(3).await;
        assert_eq!(queue.pushing.load(Ordering::SeqCst), 0);
        assert_eq!(queue.try_pop(), Some(3));
    }

    #[tokio::test]
    async fn every_waiting_producer_is_woken_as_room_is_made() {
        let queue = Arc::new(Queue::new(1));
        queue.try_push(0).unwrap();
        let producers: Vec<_> = (1..=2)
            .map(|n| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.push(n).await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(queue.pushing.load(Ordering::SeqCst), 2);
        let mut popped = Vec::new();
        while popped.len() < 3 {
            match queue.try_pop() {
                Some(item) => popped.push(item),
                None => tokio::task::yield_now().await,
            }
        }
        for producer in producers {
            tokio::time::timeout(Duration::from_secs(5), producer)
                .await
                .expect("room made")
                .unwrap();
        }
        popped.sort_unstable();
        assert_eq!(popped, [0, 1, 2]);
        assert_eq!(queue.pushing.load(Ordering::SeqCst), 0);
    }
}
