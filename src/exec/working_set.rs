//! What a partition of the keyed-state operator holds: its keys and their states.
//!
//! The layout is flat, so that a million keys cost a few allocations, not several million:
//! the keys one after another in one buffer, the states of every key in chunks of a few
//! thousand keys (one state per kernel call, key after key), and an index from a key's hash to
//! its slot number. Encoding the states for a commit walks the slots in order, and dropping a
//! working set frees a few hundred buffers. The states grow by chunks, not by doubling one
//! vector: a doubling copied up to ~100 MB at a time (18% of the load time in a profile of a
//! million keys loaded, though the gain was within the noise of rows/s).

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::kernels::KernelState;
use crate::state::codec::{EncodedKeys, RecordHeader};

/// Slots per chunk of states.
const CHUNK_SLOTS: usize = 4096;

/// A kernel's state for one key.
#[derive(Debug)]
pub struct Held {
    pub header: RecordHeader,
    pub state: KernelState,
    /// Length of the record the store held when the state was loaded (`None`: nothing), so
    /// that the store keeps its counts without reading the key again before writing it.
    pub stored_len: Option<usize>,
}

/// The keys of a partition and, per key (a slot), the states of every kernel call.
#[derive(Debug)]
pub struct WorkingSet {
    /// Kernel calls: states per slot.
    calls: usize,
    /// Slot numbers, found by the hash of their key.
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// The key of each slot.
    keys: EncodedKeys,
    /// Slot `s` holds `held[s / CHUNK_SLOTS][(s % CHUNK_SLOTS) * calls..][..calls]`.
    held: Vec<Vec<Held>>,
    /// Per slot: whether a row updated its states since they were last written.
    dirty: Vec<bool>,
    /// Estimated memory, as the operator counts it.
    pub bytes: usize,
}

impl WorkingSet {
    /// An empty set for `calls` kernel calls.
    pub fn new(calls: usize) -> Self {
        Self {
            calls,
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            keys: EncodedKeys::default(),
            held: Vec::new(),
            dirty: Vec::new(),
            bytes: 0,
        }
    }

    /// Slots (keys) held.
    pub fn len(&self) -> usize {
        self.dirty.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slot of `key`, and whether it is new. A new slot has no states until
    /// [`WorkingSet::push_states`] gives them, in slot order.
    pub fn slot(&mut self, key: &[u8]) -> (u32, bool) {
        let Self {
            index,
            hasher,
            keys,
            dirty,
            ..
        } = self;
        let hash = hasher.hash_one(key);
        if let Some(&s) = index.find(hash, |&s| keys.row(s as usize) == key) {
            return (s, false);
        }
        let s = dirty.len() as u32;
        keys.push(key);
        dirty.push(false);
        index.insert_unique(hash, s, |&s| hasher.hash_one(keys.row(s as usize)));
        (s, true)
    }

    /// Appends the states of the next slot without them (one per kernel call).
    pub fn push_states(&mut self, states: impl IntoIterator<Item = Held>) {
        let room = CHUNK_SLOTS * self.calls;
        if self.held.last().is_none_or(|c| c.len() == room) {
            self.held.push(Vec::with_capacity(room));
        }
        if let Some(chunk) = self.held.last_mut() {
            chunk.extend(states);
        }
    }

    /// The key of `slot`, its states, and whether it is dirty.
    pub fn slot_mut(&mut self, slot: usize) -> (&[u8], &mut [Held], &mut bool) {
        let at = slot % CHUNK_SLOTS * self.calls;
        (
            self.keys.row(slot),
            &mut self.held[slot / CHUNK_SLOTS][at..at + self.calls],
            &mut self.dirty[slot],
        )
    }

    /// Forgets every key.
    pub fn clear(&mut self) {
        self.index.clear();
        self.keys = EncodedKeys::default();
        self.held.clear();
        self.dirty.clear();
        self.bytes = 0;
    }

    /// Forgets the keys that are not dirty, and marks the others clean; the slots left keep
    /// their order.
    pub fn retain_dirty(&mut self) {
        if self.dirty.iter().all(|d| *d) {
            self.dirty.fill(false);
            return;
        }
        let mut number = Vec::with_capacity(self.len());
        let mut next = 0u32;
        for &d in &self.dirty {
            number.push(if d { next } else { u32::MAX });
            next += d as u32;
        }
        self.index.retain(|s| {
            *s = number[*s as usize];
            *s != u32::MAX
        });
        let mut keys = EncodedKeys::default();
        for (s, _) in self.dirty.iter().enumerate().filter(|(_, d)| **d) {
            keys.push(self.keys.row(s));
        }
        self.keys = keys;
        let chunks = std::mem::take(&mut self.held);
        let calls = self.calls.max(1);
        let mut s = 0;
        for chunk in chunks {
            let mut states = chunk.into_iter();
            while states.len() > 0 {
                let slot = states.by_ref().take(calls);
                if self.dirty[s] {
                    self.push_states(slot);
                } else {
                    slot.for_each(drop);
                }
                s += 1;
            }
        }
        self.dirty.clear();
        self.dirty.resize(next as usize, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Kernel;

    fn held(kernel: &Kernel, rows: u64) -> Held {
        Held {
            header: RecordHeader {
                rows,
                ..Default::default()
            },
            state: kernel.new_state(),
            stored_len: None,
        }
    }

    #[test]
    fn slots_are_found_by_key_and_survive_retain_dirty() {
        let kernel = Kernel::Ewma { alpha: 0.5 };
        let mut set = WorkingSet::new(2);
        // Over two chunks of states.
        let keys: Vec<Vec<u8>> = (0..10_000u32)
            .map(|i| format!("k{i}").into_bytes())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(set.slot(k), (i as u32, true));
            set.push_states([held(&kernel, i as u64), held(&kernel, i as u64 + 1)]);
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(set.slot(k), (i as u32, false));
            let (key, states, dirty) = set.slot_mut(i);
            assert_eq!(key, &k[..]);
            assert_eq!(states[1].header.rows, i as u64 + 1);
            *dirty = i % 3 == 0;
        }
        set.retain_dirty();
        let kept: Vec<usize> = (0..keys.len()).step_by(3).collect();
        assert_eq!(set.len(), kept.len());
        for (s, &i) in kept.iter().enumerate() {
            let (key, states, dirty) = set.slot_mut(s);
            assert_eq!(key, &keys[i][..]);
            assert_eq!((states[0].header.rows, *dirty), (i as u64, false));
            assert_eq!(set.slot(&keys[i]), (s as u32, false));
        }
        // A key left out is new again, in the next slot.
        assert_eq!(set.slot(&keys[1]), (kept.len() as u32, true));
        set.clear();
        assert!(set.is_empty());
        assert_eq!(set.slot(&keys[0]), (0, true));
    }
}
