//! One rule's keys and their windows, at most `cap`, the least recently seen evicted
//! first.
//!
//! Written here rather than taken from `lru`: there every key is its own heap node and
//! the table compares keys through pointers into those nodes, so one lookup and its
//! move to the front cost four cache misses (the node, then its two neighbours), which
//! profiles put at most of a windowed rule's time with 100,000 keys. Here the windows
//! sit in one dense array, the recency links in another (8 bytes a key: a table of
//! 100,000 keys' links stays in cache), and the hash table holds only 4-byte slot
//! numbers: a lookup touches its table group, the key's id and the window.

use super::KeyHasher;
use crate::rules::field::KeyId;
use crate::rules::window::KeyWindow;
use hashbrown::HashTable;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;

const NIL: u32 = u32::MAX;

/// Tables of up to this many keys reserve their arrays whole at their first key: address space,
/// not memory (pages are resident once a key uses them), so growing never copies the
/// windows nor leaves a freed array behind (measured: 50 B of RSS per live key less
/// than doubling). Larger tables grow by doubling, so a `max_keys` in the millions does
/// not ask the kernel for gigabytes up front. (Chunked arrays, tried instead, cost a
/// dependent load per lookup: 20 % slower through the pack.)
const RESERVE_UP_TO: usize = 1 << 20;

/// Neighbours in recency order.
#[derive(Debug, Clone, Copy)]
struct Link {
    /// Seen just after this one (towards the most recent); NIL for the most recent.
    newer: u32,
    /// Seen just before; NIL for the least recent.
    older: u32,
}

/// Keys with their windows, in recency order.
pub struct KeyTable {
    cap: NonZeroUsize,
    hasher: KeyHasher,
    /// Slot numbers, found by their key's hash.
    index: HashTable<u32>,
    /// Per slot: the key, its recency links and its window.
    ids: Vec<KeyId>,
    links: Vec<Link>,
    windows: Vec<KeyWindow>,
    newest: u32,
    oldest: u32,
}

impl KeyTable {
    /// An empty table holding at most `cap` keys.
    pub fn new(cap: NonZeroUsize) -> Self {
        KeyTable {
            cap,
            hasher: KeyHasher::default(),
            index: HashTable::new(),
            ids: Vec::new(),
            links: Vec::new(),
            windows: Vec::new(),
            newest: NIL,
            oldest: NIL,
        }
    }

    pub fn cap(&self) -> NonZeroUsize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn clear(&mut self) {
        *self = KeyTable::new(self.cap);
    }

    fn find(&self, key: &KeyId) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.index.find(hash, |&s| self.ids[s as usize] == *key).copied()
    }

    /// Takes `slot` out of the recency order.
    fn unlink(&mut self, slot: u32) {
        let Link { newer, older } = self.links[slot as usize];
        match newer {
            NIL => self.newest = older,
            n => self.links[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.links[o as usize].newer = newer,
        }
    }

    /// Puts `slot` at the most recent end.
    fn link_newest(&mut self, slot: u32) {
        self.links[slot as usize] = Link {
            newer: NIL,
            older: self.newest,
        };
        match self.newest {
            NIL => self.oldest = slot,
            n => self.links[n as usize].newer = slot,
        }
        self.newest = slot;
    }

    /// The window of `key`, which becomes the most recently seen.
    pub fn get_mut(&mut self, key: &KeyId) -> Option<&mut KeyWindow> {
        let slot = self.find(key)?;
        if slot != self.newest {
            self.unlink(slot);
            self.link_newest(slot);
        }
        Some(&mut self.windows[slot as usize])
    }

    /// Adds `key` (not held yet) as the most recently seen; when the table is full the
    /// least recently seen key leaves and is returned with its window.
    pub fn push(&mut self, key: KeyId, window: KeyWindow) -> Option<(KeyId, KeyWindow)> {
        debug_assert!(self.find(&key).is_none(), "push is for new keys");
        let hash = self.hasher.hash_one(key);
        if self.len() >= self.cap.get() {
            let slot = self.oldest;
            let old_key = self.ids[slot as usize];
            let old_hash = self.hasher.hash_one(old_key);
            if let Ok(entry) = self.index.find_entry(old_hash, |&s| s == slot) {
                entry.remove();
            }
            self.unlink(slot);
            self.ids[slot as usize] = key;
            let old_window = std::mem::replace(&mut self.windows[slot as usize], window);
            self.insert_slot(hash, slot);
            return Some((old_key, old_window));
        }
        if self.windows.capacity() == 0 && self.cap.get() <= RESERVE_UP_TO {
            // The first key: a rule that never keys a transaction reserves nothing.
            let cap = self.cap.get();
            self.ids.reserve_exact(cap);
            self.links.reserve_exact(cap);
            self.windows.reserve_exact(cap);
        }
        let slot = u32::try_from(self.len()).expect("at most u32::MAX - 1 keys (validated)");
        self.ids.push(key);
        self.links.push(Link { newer: NIL, older: NIL });
        self.windows.push(window);
        self.insert_slot(hash, slot);
        None
    }

    fn insert_slot(&mut self, hash: u64, slot: u32) {
        let (ids, hasher) = (&self.ids, &self.hasher);
        self.index
            .insert_unique(hash, slot, |&s| hasher.hash_one(ids[s as usize]));
        self.link_newest(slot);
    }

    /// Every window, in no particular order.
    pub fn windows(&self) -> impl Iterator<Item = &KeyWindow> {
        self.windows.iter()
    }

    /// Keys and windows, the least recently seen first (pushing them in this order into
    /// an empty table gives the same table).
    pub fn oldest_first(&self) -> impl Iterator<Item = (&KeyId, &KeyWindow)> {
        let mut slot = self.oldest;
        std::iter::from_fn(move || {
            if slot == NIL {
                return None;
            }
            let s = slot as usize;
            slot = self.links[s].newer;
            Some((&self.ids[s], &self.windows[s]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::window::AggSpec;
    use proptest::prelude::*;

    fn window() -> KeyWindow {
        KeyWindow::new(&[] as &[AggSpec], 0)
    }

    fn order(t: &KeyTable) -> Vec<KeyId> {
        t.oldest_first().map(|(k, _)| *k).collect()
    }

    proptest! {
        /// The `lru` crate as the model: same hits, same evictions, same order.
        #[test]
        fn keeps_the_order_and_evicts_as_an_lru_cache_does(cap in 1usize..8, keys in prop::collection::vec(0u128..12, 0..200)) {
            let cap = NonZeroUsize::new(cap).unwrap();
            let mut table = KeyTable::new(cap);
            let mut model: lru::LruCache<KeyId, ()> = lru::LruCache::new(cap);
            for k in keys {
                let hit = table.get_mut(&k).is_some();
                prop_assert_eq!(hit, model.get(&k).is_some());
                if !hit {
                    let evicted = table.push(k, window()).map(|(k, _)| k);
                    prop_assert_eq!(evicted, model.push(k, ()).map(|(k, _)| k));
                }
                prop_assert_eq!(table.len(), model.len());
                prop_assert_eq!(order(&table), model.iter().rev().map(|(k, _)| *k).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn tables_reserve_their_arrays_up_to_a_bound_and_grow_past_it() {
        let mut small = KeyTable::new(NonZeroUsize::new(1000).unwrap());
        assert_eq!(small.windows.capacity(), 0, "nothing before the first key");
        small.push(1, window());
        assert!(small.windows.capacity() >= 1000);
        let mut large = KeyTable::new(NonZeroUsize::new(RESERVE_UP_TO + 1).unwrap());
        assert_eq!(large.windows.capacity(), 0, "nothing asked for up front");
        for k in 0..10_000u128 {
            assert!(large.push(k, window()).is_none());
        }
        assert!(large.get_mut(&0).is_some());
        assert_eq!(order(&large)[..2], [1, 2]);
        assert_eq!(*order(&large).last().unwrap(), 0);
    }

    #[test]
    fn a_cleared_table_is_empty_and_usable() {
        let mut t = KeyTable::new(NonZeroUsize::new(2).unwrap());
        t.push(1, window());
        t.push(2, window());
        t.clear();
        assert_eq!(t.len(), 0);
        assert!(t.get_mut(&1).is_none());
        assert!(t.push(3, window()).is_none());
        assert_eq!(order(&t), vec![3]);
    }
}
