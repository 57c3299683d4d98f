//! Per-thread shards: state that each worker thread updates under a lock
//! no other worker takes (only an occasional reader of all of them does),
//! so that recording costs no cross-core contention. The live view and the
//! log writer keep their per-worker state this way.

use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The shards of one `T`, one per thread that has used it.
pub struct Sharded<T> {
    /// Tells this instance's shards from another's (tests run several).
    id: u64,
    all: Mutex<Vec<Arc<Mutex<T>>>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's shard of each `Sharded` it used (usually one or two).
    static MINE: RefCell<Vec<(u64, Arc<dyn Any + Send + Sync>)>> = const { RefCell::new(Vec::new()) };
}

/// A poisoned lock still holds consistent data here: every update is a
/// few plain field writes.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: Default + Send + 'static> Default for Sharded<T> {
    fn default() -> Self {
        Sharded {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            all: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Default + Send + 'static> Sharded<T> {
    /// Runs `f` on this thread's shard, made and registered on first use
    /// (no reference count is touched on the way).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        MINE.with(|cell| {
            let mut mine = cell.borrow_mut();
            if let Some((_, s)) = mine.iter().find(|(id, _)| *id == self.id) {
                if let Some(s) = s.downcast_ref::<Mutex<T>>() {
                    return f(&mut lock(s));
                }
            }
            let s = Arc::new(Mutex::new(T::default()));
            lock(&self.all).push(s.clone());
            // A thread outliving many instances (tests) keeps few.
            mine.retain(|(_, s)| Arc::strong_count(s) > 1);
            let r = f(&mut lock(&s));
            mine.push((self.id, s));
            r
        })
    }

    /// Every thread's shard, for a reader to lock one at a time.
    pub fn shards(&self) -> Vec<Arc<Mutex<T>>> {
        lock(&self.all).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_per_thread_and_instance() {
        let a: Arc<Sharded<u64>> = Arc::default();
        let b: Sharded<Vec<u8>> = Sharded::default();
        a.with(|n| *n += 1);
        a.with(|n| *n += 1);
        b.with(|v| v.push(1));
        let a2 = a.clone();
        std::thread::spawn(move || a2.with(|n| *n += 5)).join().unwrap();
        let mut counts: Vec<u64> = a.shards().iter().map(|s| *lock(s)).collect();
        counts.sort();
        assert_eq!(counts, vec![2, 5]);
        assert_eq!(b.shards().len(), 1);
    }
}
