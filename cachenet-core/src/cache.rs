//! The device's LRU cache of submodels (paper section 5.2).

use std::num::NonZeroUsize;

use lru::LruCache;

/// Submodels keyed by id, least recently used evicted first.
#[derive(Debug)]
pub struct SubmodelCache<T> {
    inner: LruCache<u32, T>,
}

impl<T> SubmodelCache<T> {
    /// A cache holding at most `capacity` submodels (at least 1).
    pub fn new(capacity: usize) -> Self {
        SubmodelCache {
            inner: LruCache::new(NonZeroUsize::new(capacity.max(1)).expect("max(1)")),
        }
    }

    pub fn capacity(&self) -> usize {
        self.inner.cap().get()
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    pub fn contains(&self, id: u32) -> bool {
        self.inner.contains(&id)
    }

    /// Use submodel `id`: marks it most recently used.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.inner.get_mut(&id)
    }

    /// Look without changing the order.
    pub fn peek(&self, id: u32) -> Option<&T> {
        self.inner.peek(&id)
    }

    /// Insert (or replace) `id` as most recently used; returns the evicted id, if any.
    pub fn insert(&mut self, id: u32, value: T) -> Option<u32> {
        match self.inner.push(id, value) {
            Some((old, _)) if old != id => Some(old),
            _ => None,
        }
    }

    /// Ids from most to least recently used.
    pub fn ids_mru(&self) -> Vec<u32> {
        self.inner.iter().map(|(k, _)| *k).collect()
    }
}

/// Count the misses of an id sequence under LRU with `capacity` slots, where a request is a
/// hit iff its id is cached. Used to check the absence of Bélády's anomaly (appendix A.2).
pub fn lru_misses(requests: &[u32], capacity: usize) -> usize {
    let mut cache = SubmodelCache::new(capacity);
    let mut misses = 0;
    for &id in requests {
        if cache.get_mut(id).is_none() {
            misses += 1;
            cache.insert(id, ());
        }
    }
    misses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut c = SubmodelCache::new(2);
        assert_eq!(c.insert(1, "a"), None);
        assert_eq!(c.insert(2, "b"), None);
        c.get_mut(1); // 1 is now most recent
        assert_eq!(c.insert(3, "c"), Some(2));
        assert_eq!(c.ids_mru(), vec![3, 1]);
        assert!(!c.contains(2));
    }

    #[test]
    fn reinsert_is_not_an_eviction() {
        let mut c = SubmodelCache::new(1);
        c.insert(1, 0);
        assert_eq!(c.insert(1, 1), None);
        assert_eq!(c.peek(1), Some(&1));
        assert_eq!(c.insert(2, 2), Some(1));
    }

    #[test]
    fn no_belady_anomaly_on_pseudo_random_sequences() {
        let mut x: u64 = 0x2545F4914F6CDD1D;
        for _ in 0..200 {
            let seq: Vec<u32> = (0..300)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 6) as u32
                })
                .collect();
            let misses: Vec<usize> = (1..=6).map(|k| lru_misses(&seq, k)).collect();
            assert!(misses.windows(2).all(|w| w[0] >= w[1]), "{misses:?}");
        }
    }
}
