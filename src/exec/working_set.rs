//! What a partition of the keyed-state operator holds: its keys and their states.
//!
//! The layout is columnar, so that a million keys cost a few allocations, not several
//! million: the keys one after another in one buffer, an index from a key to its slot number
//! ([`KeyIndex`]), and per kernel call one dense column of states, entry `s` belonging to slot
//! `s` ([`StateColumn`]). A batch is folded kernel by kernel, each a tight loop over its rows
//! and its own column; encoding the states for a commit walks the slots in order.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::error::Result;

use super::keys::KeyIndex;
use crate::kernels::{BoundKernel, StateColumn};
use crate::state::DecodedStates;
use crate::state::codec::{EncodedKeys, KeyType};

/// The keys of a partition and, per key (a slot), the states of every kernel call.
#[derive(Debug)]
pub struct WorkingSet {
    index: KeyIndex,
    /// The key of each slot, encoded as the stores keep it.
    keys: EncodedKeys,
    /// One column of states per kernel call.
    columns: Vec<Box<dyn StateColumn>>,
    /// Per slot: whether a row updated its states since they were last written.
    dirty: Vec<bool>,
    /// Estimated memory, as the operator counts it.
    pub bytes: usize,
}

impl WorkingSet {
    /// An empty set for keys of `key_types` and the states of `kernels`.
    pub fn new(key_types: &[KeyType], kernels: &[BoundKernel]) -> Self {
        Self {
            index: KeyIndex::new(key_types),
            keys: EncodedKeys::default(),
            columns: kernels.iter().map(|k| k.new_column()).collect(),
            dirty: Vec::new(),
            bytes: 0,
        }
    }

    /// Slots (keys) held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Maps every row to its key's slot in `slots`; keys not held get new slots, numbered
    /// from the returned first new slot on. New slots have no states until
    /// [`WorkingSet::push_states`] gives them.
    pub fn assign(
        &mut self,
        key_columns: &[ArrayRef],
        rows: usize,
        slots: &mut Vec<u32>,
    ) -> Result<usize> {
        let assigned = self
            .index
            .assign(key_columns, rows, &mut self.keys, slots)?;
        self.dirty.resize(self.keys.len(), false);
        Ok(assigned.first_new)
    }

    /// The encoded key of `slot`.
    pub fn key(&self, slot: usize) -> &[u8] {
        self.keys.row(slot)
    }

    pub fn column(&self, call: usize) -> &dyn StateColumn {
        self.columns[call].as_ref()
    }

    /// The keys, the columns of states and the dirty flags, to fold a batch into.
    pub fn parts_mut(&mut self) -> (&EncodedKeys, &mut [Box<dyn StateColumn>], &mut [bool]) {
        (&self.keys, &mut self.columns, &mut self.dirty)
    }

    pub fn is_dirty(&self, slot: usize) -> bool {
        self.dirty[slot]
    }

    /// Gives every slot without states (the new ones) fresh states.
    pub fn push_states(&mut self) {
        for c in &mut self.columns {
            while c.len() < self.keys.len() {
                c.push_new();
            }
        }
    }

    /// The dirty states, decoded, one entry per kernel call (`state_ids` in call order): what
    /// a store that keeps states decoded commits. Consumes the set.
    pub fn into_decoded(self, state_ids: &[Arc<str>]) -> Vec<DecodedStates> {
        let keys = Arc::new(self.keys);
        let slots: Arc<Vec<u32>> = Arc::new(
            (0..self.dirty.len() as u32)
                .filter(|&s| self.dirty[s as usize])
                .collect(),
        );
        self.columns
            .into_iter()
            .zip(state_ids)
            .map(|(column, id)| DecodedStates {
                state_id: Arc::clone(id),
                keys: Arc::clone(&keys),
                slots: Arc::clone(&slots),
                column,
            })
            .collect()
    }

    /// Forgets every key.
    pub fn clear(&mut self) {
        self.index.clear();
        self.keys = EncodedKeys::default();
        for c in &mut self.columns {
            c.clear();
        }
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
        let mut keys = EncodedKeys::default();
        for s in (0..self.len()).filter(|&s| self.dirty[s]) {
            keys.push(self.keys.row(s));
        }
        for c in &mut self.columns {
            c.retain(&self.dirty);
        }
        self.keys = keys;
        self.index.rebuild(&self.keys);
        self.dirty.clear();
        self.dirty.resize(self.keys.len(), false);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::StringArray;

    use super::*;
    use crate::kernels::{self, FoldInput, FoldOutput, LateRows};

    #[test]
    fn slots_are_found_by_key_and_survive_retain_dirty() {
        let kernels = vec![
            kernels::bind("ewma", &[0.5]).unwrap(),
            kernels::bind("rolling_mean", &[2.0]).unwrap(),
        ];
        let mut set = WorkingSet::new(&[KeyType::Utf8], &kernels);
        let names: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
        let col: ArrayRef = Arc::new(StringArray::from(names.clone()));
        let mut slots = Vec::new();
        assert_eq!(
            set.assign(&[Arc::clone(&col)], names.len(), &mut slots)
                .unwrap(),
            0
        );
        assert_eq!(slots, (0..10_000).collect::<Vec<u32>>());
        set.push_states();
        // Every third key gets a row.
        let rows: Vec<usize> = (0..names.len()).step_by(3).collect();
        let picked: ArrayRef = Arc::new(StringArray::from(
            rows.iter().map(|&i| names[i].clone()).collect::<Vec<_>>(),
        ));
        assert_eq!(
            set.assign(&[picked], rows.len(), &mut slots).unwrap(),
            10_000
        );
        let xs: Vec<f64> = rows.iter().map(|&i| i as f64).collect();
        let order = vec![1i64; rows.len()];
        let (_, columns, dirty) = set.parts_mut();
        for c in columns.iter_mut() {
            let input = FoldInput {
                columns: &[&xs],
                valid: None,
                order: Some(&order),
                late_rows: LateRows::Skip,
            };
            c.fold(&input, &slots, dirty, &mut FoldOutput::new(rows.len()))
                .unwrap();
        }
        set.retain_dirty();
        assert_eq!(set.len(), rows.len());
        for (s, &i) in rows.iter().enumerate() {
            assert_eq!(
                set.key(s),
                &[
                    &[1u8][..],
                    &(names[i].len() as u32).to_le_bytes(),
                    names[i].as_bytes()
                ]
                .concat()[..]
            );
            assert!(!set.is_dirty(s));
            assert_eq!((set.column(0).rows(s), set.column(1).rows(s)), (1, 1));
        }
        // A key left out is new again, in the next slot; a kept one is found.
        let again: ArrayRef = Arc::new(StringArray::from(vec![names[1].clone(), names[3].clone()]));
        assert_eq!(set.assign(&[again], 2, &mut slots).unwrap(), rows.len());
        assert_eq!(slots, vec![rows.len() as u32, 1]);
        set.clear();
        assert!(set.is_empty());
    }
}
